import assert from "node:assert/strict";
import {
  decodeCompareAndSwapRequest,
  decodeDeleteRangeRequest,
  decodeDeleteRequest,
  decodeGetRequest,
  decodePutRequest,
  encodeDeleteResponse,
  encodeGetResponse,
  encodePutResponse,
  kvstorePackage,
  ProtoDecodeError,
} from "./proto.ts";
import { mulberry32 as _rng } from "../raft/testing.ts";

const svc = kvstorePackage().KVStore.service;

function _bytes(r: () => number, max: number): Uint8Array {
  const n = r() < 0.2 ? 0 : Math.floor(r() * max);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function _u64(r: () => number): number {
  const k = r();
  if (k < 0.3) return 0;
  if (k < 0.6) return Math.floor(r() * 300);
  return Math.floor(r() * 2 ** 53);
}

const _plain = (b: Uint8Array | undefined) => [...(b ?? [])];

Deno.test("proto: hand-written request decoders agree with protobufjs", () => {
  const r = _rng(7);
  for (let i = 0; i < 500; i++) {
    const put = { key: _bytes(r, 40), value: _bytes(r, 600), client_id: _u64(r), seq: _u64(r) };
    const wire = svc.Put!.requestSerialize(put);
    const want = svc.Put!.requestDeserialize(wire) as typeof put;
    const got = decodePutRequest(wire);
    assert.deepEqual(_plain(got.key), _plain(want.key));
    assert.deepEqual(_plain(got.value), _plain(want.value));
    assert.equal(got.client_id, want.client_id);
    assert.equal(got.seq, want.seq);

    const get = { key: _bytes(r, 40), serializable: r() < 0.5 };
    const gw = svc.Get!.requestSerialize(get);
    const gwant = svc.Get!.requestDeserialize(gw) as typeof get;
    const ggot = decodeGetRequest(gw);
    assert.deepEqual(_plain(ggot.key), _plain(gwant.key));
    assert.equal(ggot.serializable, gwant.serializable);

    const del = { key: _bytes(r, 40), client_id: _u64(r), seq: _u64(r) };
    const dw = svc.Delete!.requestSerialize(del);
    const dwant = svc.Delete!.requestDeserialize(dw) as typeof del;
    const dgot = decodeDeleteRequest(dw);
    assert.deepEqual(_plain(dgot.key), _plain(dwant.key));
    assert.equal(dgot.client_id, dwant.client_id);
    assert.equal(dgot.seq, dwant.seq);
  }
});

Deno.test("proto: client_id is decoded exactly over the whole uint64 range", () => {
  const ids = [0n, 1n, 2n ** 49n - 1n, 2n ** 49n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 60n + 1n];
  ids.push(2n ** 60n + 2n, 2n ** 64n - 1n);
  for (const id of ids) {
    const want = id < 2n ** 53n ? Number(id) : id;
    // protobufjs encodes a decimal string exactly (it has long.js).
    const client_id = id.toString();
    const put = svc.Put!.requestSerialize({ key: [1], value: [2], client_id, seq: 3 });
    assert.equal(decodePutRequest(put).client_id, want);
    const del = svc.Delete!.requestSerialize({ key: [1], client_id, seq: 3 });
    assert.equal(decodeDeleteRequest(del).client_id, want);
    const cas = svc.CompareAndSwap!.requestSerialize({ key: [1], value: [2], client_id, seq: 3 });
    assert.equal(decodeCompareAndSwapRequest(cas).client_id, want);
    const dr = svc.DeleteRange!.requestSerialize({ prefix: [1], client_id, seq: 3 });
    assert.equal(decodeDeleteRangeRequest(dr).client_id, want);
  }
  // Bits past 64 are dropped, as protobuf does for a uint64; 11 bytes are malformed.
  const over = new Uint8Array([0x10, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7e]);
  assert.equal(decodeDeleteRequest(over).client_id, 1);
  const tooLong = new Uint8Array([0x10, ...new Array(10).fill(0x80), 0x01]);
  assert.throws(() => decodeDeleteRequest(tooLong), ProtoDecodeError);
});

/**
 * 300 random requests of `method`, serialized by protobufjs: `decode` must read every field as
 * protobufjs does (bytes compared as plain arrays).
 */
function _agrees(
  method: string,
  seed: number,
  make: (r: () => number) => Record<string, unknown>,
  decode: (b: Uint8Array) => object,
): void {
  const r = _rng(seed);
  const plain = (o: object) =>
    Object.fromEntries(
      Object.entries(o).map(([k, v]) => [k, v instanceof Uint8Array ? _plain(v) : v]),
    );
  for (let i = 0; i < 300; i++) {
    const wire = svc[method]!.requestSerialize(make(r));
    const want = svc[method]!.requestDeserialize(wire) as object;
    assert.deepEqual(plain(decode(wire)), plain(want), method);
  }
}

Deno.test("proto: the CompareAndSwap decoder agrees with protobufjs", () => {
  _agrees("CompareAndSwap", 11, (r) => ({
    key: _bytes(r, 40),
    expected: _bytes(r, 100),
    expect_absent: r() < 0.5,
    value: _bytes(r, 300),
    delete: r() < 0.5,
    client_id: _u64(r),
    seq: _u64(r),
  }), decodeCompareAndSwapRequest);
});

Deno.test("proto: the DeleteRange decoder agrees with protobufjs", () => {
  _agrees("DeleteRange", 12, (r) => ({
    prefix: _bytes(r, 40),
    start: _bytes(r, 40),
    end: _bytes(r, 40),
    all: r() < 0.5,
    client_id: _u64(r),
    seq: _u64(r),
  }), decodeDeleteRangeRequest);
});

Deno.test("proto: hand-written response encoders produce protobufjs's bytes", () => {
  const r = _rng(11);
  for (let i = 0; i < 500; i++) {
    const put = { success: r() < 0.7, index: _u64(r) };
    assert.deepEqual(_plain(encodePutResponse(put)), _plain(svc.Put!.responseSerialize(put)));
    const del = { success: r() < 0.7, existed: r() < 0.5, index: _u64(r) };
    assert.deepEqual(
      _plain(encodeDeleteResponse(del)),
      _plain(svc.Delete!.responseSerialize(del)),
    );
    const get = { value: _bytes(r, 600), found: r() < 0.5 };
    assert.deepEqual(_plain(encodeGetResponse(get)), _plain(svc.Get!.responseSerialize(get)));
  }
});

Deno.test("proto: decoders skip unknown fields and keep the last occurrence", () => {
  // field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32, field 13 group, then
  // key twice (the second wins) and seq.
  const b = new Uint8Array([
    ...[0x48, 0x96, 0x01],
    ...[0x51, 1, 2, 3, 4, 5, 6, 7, 8],
    ...[0x5a, 2, 9, 9],
    ...[0x65, 1, 2, 3, 4],
    ...[0x6b, 0x08, 1, 0x6c],
    ...[0x0a, 1, 0x61, 0x0a, 2, 0x62, 0x63],
    ...[0x20, 0xac, 0x02],
  ]);
  const got = decodePutRequest(b);
  assert.deepEqual(_plain(got.key), [0x62, 0x63]);
  assert.equal(got.value.length, 0);
  assert.equal(got.client_id, 0);
  assert.equal(got.seq, 300);
});

Deno.test("proto: malformed requests are ProtoDecodeErrors", () => {
  const bad = [
    [0x0a, 5, 1, 2], // key runs past the end
    [0x20, 0x80], // truncated varint
    [0x20, ...new Array(10).fill(0xff), 1], // varint longer than 10 bytes
    [0x0a | 0, 0x80], // truncated length
    [0x08, 1], // key (field 1) as a varint
    [0x0f], // wire type 7
    [0x51, 1, 2], // truncated fixed64
  ];
  for (const b of bad) {
    assert.throws(() => decodePutRequest(new Uint8Array(b)), ProtoDecodeError, `${b}`);
  }
  assert.throws(() => decodeGetRequest(new Uint8Array([0x10])), ProtoDecodeError);
  assert.throws(() => decodeDeleteRequest(new Uint8Array([0x12, 1, 1])), ProtoDecodeError);
});

Deno.test("proto: decoded bytes are views of their own request, never of another", () => {
  const a = svc.Put!.requestSerialize({ key: new Uint8Array([1, 1]), value: new Uint8Array([2]) });
  const b = svc.Put!.requestSerialize({ key: new Uint8Array([3, 3]), value: new Uint8Array([4]) });
  const ra = decodePutRequest(a);
  const rb = decodePutRequest(b);
  assert.equal(ra.key.buffer, a.buffer);
  assert.equal(rb.key.buffer, b.buffer);
  assert.deepEqual(_plain(ra.key), [1, 1]);
  assert.deepEqual(_plain(rb.value), [4]);
});
