import assert from "node:assert/strict";
import {
  ByteReader,
  ByteWriter,
  compareBytes,
  compareInternal,
  fromHex,
  prefixEnd,
  toHex,
} from "./coding.ts";
import { Rng } from "./test_util.ts";

Deno.test("compareBytes orders bytes lexicographically, shorter prefix first", () => {
  assert.ok(compareBytes(Uint8Array.of(1), Uint8Array.of(1, 0)) < 0);
  assert.ok(compareBytes(Uint8Array.of(2), Uint8Array.of(1, 9)) > 0);
  assert.equal(compareBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2)), 0);
  assert.ok(compareBytes(Uint8Array.of(0xff), Uint8Array.of(0x00, 0x01)) > 0);
});

Deno.test("compareInternal puts newer sequence numbers first", () => {
  const k = Uint8Array.of(5);
  assert.ok(compareInternal(k, 9, k, 3) < 0);
  assert.ok(compareInternal(k, 3, k, 9) > 0);
  assert.ok(compareInternal(Uint8Array.of(4), 1, k, 9) < 0);
});

Deno.test("varints and u64 round-trip through ByteWriter and ByteReader", () => {
  const rng = new Rng(1);
  const values = [0, 1, 127, 128, 16383, 16384, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
  for (let i = 0; i < 200; i++) values.push(rng.int(2 ** 31) * rng.int(2 ** 20));
  const w = new ByteWriter(4);
  for (const v of values) {
    w.varint(v);
    w.u64(v);
  }
  const r = new ByteReader(w.view());
  for (const v of values) {
    assert.equal(r.varint(), v);
    assert.equal(r.u64(), v);
  }
  assert.equal(r.pos, w.length);
  assert.throws(() => r.u8(), RangeError);
});

Deno.test("prefixEnd is the first key past every key with the prefix", () => {
  assert.deepEqual(prefixEnd(Uint8Array.of(1, 2)), Uint8Array.of(1, 3));
  assert.deepEqual(prefixEnd(Uint8Array.of(1, 0xff)), Uint8Array.of(2));
  assert.equal(prefixEnd(Uint8Array.of(0xff, 0xff)), undefined);
});

Deno.test("hex encoding round-trips and rejects garbage", () => {
  const x = Uint8Array.of(0, 1, 0xab, 0xff);
  assert.equal(toHex(x), "0001abff");
  assert.deepEqual(fromHex("0001abff"), x);
  assert.throws(() => fromHex("zz"), RangeError);
  assert.throws(() => fromHex("abc"), RangeError);
});
