import assert from "node:assert/strict";
import {
  decodeConfChange,
  decodeConfState,
  decodeEntry,
  decodeHardState,
  decodeMessages,
  encodeConfChange,
  encodeConfState,
  encodedMessagesSize,
  encodeEntry,
  encodeHardState,
  encodeMessages,
  encodeMessagesInto,
} from "./codec.ts";
import { CodecError } from "./errors.ts";
import { mulberry32 } from "./testing.ts";
import { EntryType, type Message, MessageType, newMessage } from "./types.ts";

const enc = new TextEncoder();

function sample(): Message[] {
  return [
    {
      type: MessageType.App,
      from: 1,
      to: 2,
      term: 2 ** 40 + 3,
      logTerm: 5,
      index: 1_000_000,
      entries: [
        { index: 1_000_001, term: 6, type: EntryType.Normal, data: enc.encode("put k v") },
        { index: 1_000_002, term: 6, type: EntryType.ConfChange, data: new Uint8Array(0) },
      ],
      commit: 999_999,
      reject: false,
      rejectHint: 0,
      hintTerm: 0,
      context: new Uint8Array(0),
    },
    {
      type: MessageType.AppResp,
      from: 2,
      to: 1,
      term: 7,
      logTerm: 0,
      index: 12,
      entries: [],
      commit: 0,
      reject: true,
      rejectHint: 9,
      hintTerm: 4,
      context: enc.encode("ctx"),
    },
    {
      type: MessageType.Snap,
      from: 1,
      to: 3,
      term: 7,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 50,
      reject: false,
      rejectHint: 0,
      hintTerm: 0,
      context: new Uint8Array(0),
      snapshot: {
        meta: { index: 50, term: 6, confState: { voters: [1, 2, 3], learners: [4] } },
        data: new Uint8Array([1, 2, 3]),
      },
    },
  ];
}

Deno.test("codec round-trips message batches, including large numbers and snapshots", () => {
  const msgs = sample();
  const back = decodeMessages(encodeMessages(msgs));
  assert.deepEqual(back, msgs);
});

Deno.test("codec: encodeMessagesInto writes encodeMessages' bytes at an offset, and only there", () => {
  const msgs = sample();
  const want = encodeMessages(msgs);
  assert.equal(encodedMessagesSize(msgs), want.length);
  const out = new Uint8Array(want.length + 10).fill(0xee);
  const end = encodeMessagesInto(out, 4, msgs);
  assert.equal(end, 4 + want.length);
  assert.deepEqual(out.subarray(4, end), want);
  assert.ok(
    out.subarray(0, 4).every((x) => x === 0xee) && out.subarray(end).every((x) => x === 0xee),
  );
  assert.throws(() => encodeMessagesInto(out, 11, msgs), RangeError);
});

Deno.test("codec round-trips entries, hard state, conf state and conf changes", () => {
  const e = { index: 2 ** 53 - 1, term: 1, type: EntryType.Normal, data: enc.encode("x") };
  assert.deepEqual(decodeEntry(encodeEntry(e)), e);
  const hs = { term: 9, vote: 3, commit: 123456789 };
  assert.deepEqual(decodeHardState(encodeHardState(hs)), hs);
  const cs = { voters: [1, 2, 300], learners: [] };
  assert.deepEqual(decodeConfState(encodeConfState(cs)), cs);
  const cc = { type: "removeNode" as const, nodeId: 5, context: enc.encode("h:1") };
  assert.deepEqual(decodeConfChange(encodeConfChange(cc)), cc);
});

Deno.test("codec rejects a wrong version and trailing bytes with CodecError", () => {
  const buf = encodeMessages(sample());
  const bad = buf.slice();
  bad[0] = 99;
  assert.throws(() => decodeMessages(bad), CodecError);
  const long = new Uint8Array(buf.length + 1);
  long.set(buf);
  assert.throws(() => decodeMessages(long), CodecError);
});

Deno.test("codec: every truncation and random corruption throws CodecError or decodes", () => {
  const buf = encodeMessages(sample());
  for (let n = 0; n < buf.length; n++) {
    assert.throws(() => decodeMessages(buf.subarray(0, n)), CodecError, `prefix ${n}`);
  }
  const rand = mulberry32(42);
  for (let i = 0; i < 5000; i++) {
    const b = buf.slice();
    const flips = 1 + Math.floor(rand() * 4);
    for (let f = 0; f < flips; f++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    try {
      decodeMessages(b);
    } catch (e) {
      assert.ok(e instanceof CodecError, `unexpected ${e}`);
    }
  }
  // Huge declared counts must not allocate or hang.
  const huge = new Uint8Array([1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
  assert.throws(() => decodeMessages(huge), CodecError);
});

Deno.test("codec decodes batches of minimal messages (12 bytes each)", () => {
  const hb = newMessage(MessageType.Heartbeat, { from: 1, to: 2, term: 1 });
  const msgs = Array.from({ length: 100 }, () => hb);
  const buf = encodeMessages(msgs);
  assert.equal(buf.length, 2 + 100 * 12);
  assert.deepEqual(decodeMessages(buf), msgs);
});
