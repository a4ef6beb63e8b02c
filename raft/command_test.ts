import assert from "node:assert/strict";
import {
  type Command,
  CommandCodecError,
  commandSize,
  decodeBatch,
  decodeResult,
  encodeBatch,
  encodeResult,
} from "./command.ts";

const enc = new TextEncoder();
const h = { origin: 3, epoch: 0xfffffffe, reqId: 123456789, clientId: 0, seq: 0 };

Deno.test("command batch round-trips every op", () => {
  const cmds: Command[] = [
    { op: "put", ...h, key: enc.encode("k"), value: enc.encode("v") },
    {
      op: "put",
      ...h,
      clientId: 2 ** 63 + 2 ** 20,
      seq: 42,
      key: enc.encode("x"),
      value: new Uint8Array(0),
    },
    { op: "delete", ...h, reqId: 1, key: enc.encode("gone") },
    {
      op: "cas",
      ...h,
      key: enc.encode("c"),
      expected: enc.encode("old"),
      expectAbsent: false,
      value: enc.encode("new"),
      del: true,
    },
    { op: "barrier", ...h },
  ];
  const buf = encodeBatch(cmds);
  let size = 2;
  for (const c of cmds) size += commandSize(c);
  assert.equal(buf.length, size);
  assert.deepEqual(decodeBatch(buf), cmds);
});

Deno.test("empty entry data decodes to no commands (the leader's no-op)", () => {
  assert.deepEqual(decodeBatch(new Uint8Array(0)), []);
});

Deno.test("command decoding of malformed bytes throws CommandCodecError only", () => {
  const good = encodeBatch([{
    op: "put",
    ...h,
    key: enc.encode("key"),
    value: enc.encode("value"),
  }]);
  for (let cut = 1; cut < good.length; cut++) {
    assert.throws(() => decodeBatch(good.subarray(0, cut)), CommandCodecError);
  }
  assert.throws(() => decodeBatch(new Uint8Array([9, 0])), CommandCodecError);
  assert.throws(() => decodeBatch(new Uint8Array([1, 1, 99, 0, 0, 0, 0])), CommandCodecError);
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  assert.throws(() => decodeBatch(trailing), CommandCodecError);
  // Random garbage never throws anything else.
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(1 + Math.floor(rnd() * 40));
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
    b[0] = 1;
    try {
      decodeBatch(b);
    } catch (e) {
      assert.ok(e instanceof CommandCodecError, String(e));
    }
  }
});

Deno.test("command results round-trip", () => {
  for (
    const r of [
      { kind: "ok" as const },
      { kind: "delete" as const, existed: true },
      { kind: "delete" as const, existed: false },
      { kind: "cas" as const, success: false, found: true, current: enc.encode("cur") },
    ]
  ) {
    assert.deepEqual(decodeResult(encodeResult(r)), r);
  }
});
