import assert from "node:assert/strict";
import {
  clientIdOf,
  clientIdOfDouble,
  type Command,
  CommandCodecError,
  commandSize,
  decodeBatch,
  decodeResult,
  DELETE_RANGE_DEFAULT_LIMIT,
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
      clientId: 2n ** 63n + 2n ** 20n + 1n,
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
    {
      op: "deleteRange",
      ...h,
      start: enc.encode("a/"),
      end: enc.encode("a0"),
      limit: DELETE_RANGE_DEFAULT_LIMIT,
    },
    {
      op: "deleteRange",
      ...h,
      clientId: 9,
      seq: 3,
      start: new Uint8Array(0),
      end: new Uint8Array(0),
      limit: 5,
    },
  ];
  const buf = encodeBatch(cmds);
  let size = 2;
  for (const c of cmds) size += commandSize(c);
  assert.equal(buf.length, size);
  assert.deepEqual(decodeBatch(buf), cmds);
});

Deno.test("client ids keep all 64 bits; a batch without one past 2^53 is still version 1", () => {
  const put = (clientId: number | bigint): Command => ({
    op: "put",
    ...h,
    clientId,
    seq: 1,
    key: enc.encode("k"),
    value: enc.encode("v"),
  });
  // Two ids equal in their top 53 bits: a double cannot tell them apart.
  const a = 2n ** 60n + 1n, b = 2n ** 60n + 2n;
  assert.equal(Number(a), Number(b));
  const big = encodeBatch([put(a), put(b), put(7), put(2n ** 64n - 1n)]);
  assert.equal(big[0], 2);
  assert.deepEqual(decodeBatch(big).map((c) => c.clientId), [a, b, 7, 2n ** 64n - 1n]);

  // Ids below 2^53: version 1, the id as a little-endian double right after the flags byte.
  const small = encodeBatch([put(2 ** 53 - 1)]);
  assert.equal(small[0], 1);
  const at = 1 + 1 + 1 + 1 + 5 + 4 + 1; // version, count, op, origin, epoch, reqId, flags
  const view = new DataView(small.buffer, small.byteOffset + at, 8);
  assert.equal(view.getFloat64(0, true), 2 ** 53 - 1);
  assert.deepEqual(decodeBatch(small), [put(2 ** 53 - 1)]);

  // A version 1 record of a large id (written before version 2): the integer its double holds.
  view.setFloat64(0, 2 ** 60, true);
  assert.equal(decodeBatch(small)[0]!.clientId, 2n ** 60n);
  view.setFloat64(0, 1.5, true);
  assert.throws(() => decodeBatch(small), CommandCodecError);

  // One form per id, so that equal ids are equal map keys.
  assert.throws(() => encodeBatch([put(2 ** 60)]), RangeError);
  assert.throws(() => encodeBatch([put(7n)]), RangeError);
  assert.equal(clientIdOf(7n), 7);
  assert.equal(clientIdOf(2n ** 53n), 2n ** 53n);
  assert.equal(clientIdOf(2n ** 64n), undefined);
  assert.equal(clientIdOf(-1), undefined);
  assert.equal(clientIdOfDouble(2 ** 64), 2n ** 64n - 1n);
});

Deno.test("a range with the default limit is op 5, byte for byte as before; another limit is op 6", () => {
  const range = (limit: number): Command => ({
    op: "deleteRange",
    origin: 1,
    epoch: 2,
    reqId: 3,
    clientId: 0,
    seq: 0,
    start: enc.encode("a"),
    end: enc.encode("b"),
    limit,
  });
  // version 1, one command: op 5, origin 1, epoch 2, reqId 3, no client id, "a", "b".
  const op5 = [1, 1, 5, 1, 2, 3, 0, 1, 0x61, 1, 0x62];
  assert.deepEqual([...encodeBatch([range(DELETE_RANGE_DEFAULT_LIMIT)])], op5);
  // op 6: the same, then the limit (300 as a varint: 0xac 0x02).
  const op6 = [1, 1, 6, 1, 2, 3, 0, 1, 0x61, 1, 0x62, 0xac, 0x02];
  assert.deepEqual([...encodeBatch([range(300)])], op6);
  assert.equal((decodeBatch(new Uint8Array(op5))[0] as { limit: number }).limit, 100_000);
  assert.equal((decodeBatch(new Uint8Array(op6))[0] as { limit: number }).limit, 300);
  // A limit of 0 was never written: malformed.
  const zero = [1, 1, 6, 1, 2, 3, 0, 1, 0x61, 1, 0x62, 0];
  assert.throws(() => decodeBatch(new Uint8Array(zero)), CommandCodecError);
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
      { kind: "deleteRange" as const, deleted: 0, overLimit: false },
      { kind: "deleteRange" as const, deleted: 1_000_000, overLimit: false },
      { kind: "deleteRange" as const, deleted: 0, overLimit: true },
    ]
  ) {
    assert.deepEqual(decodeResult(encodeResult(r)), r);
  }
});
