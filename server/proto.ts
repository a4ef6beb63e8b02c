/**
 * The two gRPC services of a node, loaded once from protos/ at start-up, and the TypeScript shapes
 * of their decoded messages (the one place those shapes are written down).
 *
 * Loader options (server side): `keepCase: true` (field names exactly as in the .proto:
 * `client_id`, `leader_id`, ...), `longs: Number` (64-bit integers as JS numbers; indexes and terms
 * stay far below 2^53), `bytes` as Node `Buffer`s (a `Uint8Array` subclass), `defaults: true`
 * (absent scalars read as 0 / "" / empty bytes / false), `oneofs: true`. Messages we send may give
 * 64-bit fields as numbers and bytes as any `Uint8Array`.
 *
 * The requests that carry an exactly-once `client_id` (Put, Delete, CompareAndSwap, DeleteRange)
 * are decoded
 * by hand (below), not by protobufjs, and their `client_id` is exact over the whole uint64 range
 * (a `ClientId` of raft/command.ts: a number below 2^53, a bigint above); through `longs: Number`
 * two ids equal in their top 53 bits would have become one.
 *
 * @example
 * ```ts
 * import { kvstorePackage, raftPackage } from "./proto.ts";
 * const kv = kvstorePackage().KVStore.service; // a grpc.ServiceDefinition
 * const peer = raftPackage().Raft.service;
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Buffer } from "node:buffer";
import { putVarint, varintLength } from "../storage/coding.ts";
import { type ClientId, clientIdOf } from "../raft/command.ts";

/** Path of protos/kvstore.proto (client API). */
export const KVSTORE_PROTO: string = new URL("../protos/kvstore.proto", import.meta.url).pathname;
/** Path of protos/raft.proto (peer API). */
export const RAFT_PROTO: string = new URL("../protos/raft.proto", import.meta.url).pathname;

/** proto-loader options used by the server (see the module doc). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** gRPC max message size of a node, both directions (client API and peer API). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// kvstore.proto

/** `kvstore.PingRequest`. */
export interface PingRequest {
  message: string;
}
/** `kvstore.PingResponse`. */
export interface PingResponse {
  reply: string;
}
/** `kvstore.PutRequest`. */
export interface PutRequest {
  key: Uint8Array;
  value: Uint8Array;
  client_id: ClientId;
  seq: number;
}
/** `kvstore.PutResponse`. */
export interface PutResponse {
  success: boolean;
  index?: number;
}
/** `kvstore.GetRequest`. */
export interface GetRequest {
  key: Uint8Array;
  serializable: boolean;
}
/** `kvstore.GetResponse`. */
export interface GetResponse {
  value: Uint8Array;
  found: boolean;
}
/** `kvstore.DeleteRequest`. */
export interface DeleteRequest {
  key: Uint8Array;
  client_id: ClientId;
  seq: number;
}
/** `kvstore.DeleteResponse`. */
export interface DeleteResponse {
  success: boolean;
  existed?: boolean;
  index?: number;
}
/** `kvstore.ScanRequest`. */
export interface ScanRequest {
  prefix: Uint8Array;
  start: Uint8Array;
  end: Uint8Array;
  limit: number;
  serializable: boolean;
}
/** `kvstore.KeyValue`. */
export interface KeyValue {
  key: Uint8Array;
  value: Uint8Array;
}
/** `kvstore.ScanResponse`. */
export interface ScanResponse {
  pairs: KeyValue[];
  more?: boolean;
}
/** `kvstore.CompareAndSwapRequest`. */
export interface CompareAndSwapRequest {
  key: Uint8Array;
  expected: Uint8Array;
  expect_absent: boolean;
  value: Uint8Array;
  delete: boolean;
  client_id: ClientId;
  seq: number;
}
/** `kvstore.BackupChunk`. */
export interface BackupChunk {
  data: Uint8Array;
  crc: number;
  index: number;
  done: boolean;
  pairs: number;
}
/** `kvstore.CompareAndSwapResponse`. */
export interface CompareAndSwapResponse {
  success: boolean;
  current?: Uint8Array;
  found?: boolean;
  index?: number;
}
/** `kvstore.StatusRequest`. */
export type StatusRequest = Record<string, never>;
/** `kvstore.Member`. */
export interface Member {
  id: number;
  address: string;
  /** "voter" or "learner". */
  kind: string;
  role: string;
  match_index: number;
  healthy: boolean;
}
/** `kvstore.StatusResponse`. */
export interface StatusResponse {
  node_id: number;
  role: string;
  term: number;
  leader_id: number;
  commit_index: number;
  applied_index: number;
  first_index: number;
  last_index: number;
  members: Member[];
  cluster_id: string;
  version: string;
  snapshot_index: number;
  db_bytes: number;
  quota_bytes: number;
}
/** `kvstore.MemberListResponse`. */
export interface MemberListResponse {
  members: Member[];
  leader_id: number;
}
/** `kvstore.MemberAddRequest`. */
export interface MemberAddRequest {
  id: number;
  address: string;
  learner: boolean;
}
/** `kvstore.MemberPromoteRequest` / `kvstore.MemberRemoveRequest` / `kvstore.TransferLeaderRequest`. */
export interface MemberIdRequest {
  id: number;
}
/** `kvstore.MemberChangeResponse`. */
export interface MemberChangeResponse {
  members: Member[];
  index: number;
}
/** `kvstore.TransferLeaderResponse`. */
export interface TransferLeaderResponse {
  leader_id: number;
}

/** `kvstore.DeleteRangeRequest`. */
export interface DeleteRangeRequest {
  prefix: Uint8Array;
  start: Uint8Array;
  end: Uint8Array;
  all: boolean;
  client_id: ClientId;
  seq: number;
}
/** `kvstore.DeleteRangeResponse`. */
export interface DeleteRangeResponse {
  deleted: number;
  index: number;
}

/** `kvstore.DefragmentResponse`. */
export interface DefragmentResponse {
  member_id: number;
  db_bytes_before: number;
  db_bytes_after: number;
}

// ---------------------------------------------------------------------------------------------
// raft.proto

/** `raft.PeerHeader`: every peer request says which cluster and member it comes from. */
export interface PeerHeader {
  cluster_id: string;
  from: number;
  to: number;
}
/** `raft.PeerFrame`: one frame of the peer stream. */
export interface PeerFrame {
  header: PeerHeader | null;
  payload: Uint8Array;
}
/** `raft.Entry`. */
export interface WireEntry {
  index: number;
  term: number;
  type: number;
  data: Uint8Array;
}
/** `raft.RequestVoteRequest`. */
export interface RequestVoteRequest {
  header: PeerHeader | null;
  term: number;
  candidate_id: number;
  last_log_index: number;
  last_log_term: number;
  pre_vote: boolean;
}
/** `raft.RequestVoteResponse`. */
export interface RequestVoteResponse {
  term: number;
  vote_granted: boolean;
}
/** `raft.AppendEntriesRequest`. */
export interface AppendEntriesRequest {
  header: PeerHeader | null;
  term: number;
  leader_id: number;
  prev_log_index: number;
  prev_log_term: number;
  entries: WireEntry[];
  leader_commit: number;
}
/** `raft.AppendEntriesResponse`. */
export interface AppendEntriesResponse {
  term: number;
  success: boolean;
  match_index: number;
  conflict_term: number;
  conflict_index: number;
}
/** `raft.SnapshotChunk`. */
export interface SnapshotChunk {
  header: PeerHeader | null;
  term: number;
  index: number;
  snapshot_term: number;
  offset: number;
  data: Uint8Array;
  crc: number;
  done: boolean;
  conf_state: Uint8Array;
  message: Uint8Array;
}
/** `raft.InstallSnapshotResponse`. */
export interface InstallSnapshotResponse {
  term: number;
  received: number;
  done: boolean;
}

// ---------------------------------------------------------------------------------------------
// Hand-written codecs of the hot client messages.
//
// Put, Get and Delete are most of what a node serves; protobufjs decodes them into a message
// object, then `toObject` copies every `bytes` field into a new Buffer and builds a second object
// (~0.8 KB of garbage per request, measured). These decode in one pass, with the same results as
// the loader (LOADER_OPTIONS: absent fields read as empty bytes / 0 / false, 64-bit integers as
// numbers, the last occurrence of a field wins, unknown fields are skipped), except that `bytes`
// fields are views into the request buffer (no copy: the request buffer is the caller's, one per
// message, and is never reused) and that a known field with the wrong wire type is an error
// rather than a misread. Responses are encoded byte for byte as protobufjs encodes them.

/** A request that is not valid protobuf for its message type. */
export class ProtoDecodeError extends Error {
  override name = "ProtoDecodeError";
}

const _EMPTY = new Uint8Array(0);

/** A cursor over one protobuf message. */
class _Reader {
  p = 0;
  constructor(readonly b: Uint8Array) {}

  varint(): number {
    const b = this.b;
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.p >= b.length) throw new ProtoDecodeError("truncated varint");
      const x = b[this.p++]!;
      n += (x & 0x7f) * mul;
      if (x < 0x80) return n;
      mul *= 128;
    }
    throw new ProtoDecodeError("varint longer than 10 bytes");
  }

  /**
   * The number of the next field of a message whose known fields have the wire types `wires`
   * (indexed by field number; -1 or past the end: unknown), or 0 at the end of the message.
   * Unknown fields are skipped; a known one with another wire type is an error.
   */
  field(wires: readonly number[]): number {
    while (this.p < this.b.length) {
      const tag = this.varint();
      const field = Math.floor(tag / 8);
      const wire = tag & 7;
      const want = field < wires.length ? wires[field]! : -1;
      if (want < 0) {
        this.skip(wire);
        continue;
      }
      if (wire !== want) throw new ProtoDecodeError(`field ${field} has wire type ${wire}`);
      return field;
    }
    return 0;
  }

  /** A uint64 varint, exact: a number below 2^53, a bigint from there (bits past 64 dropped). */
  uint64(): ClientId {
    const b = this.b;
    const start = this.p;
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 7; i++) {
      if (this.p >= b.length) throw new ProtoDecodeError("truncated varint");
      const x = b[this.p++]!;
      n += (x & 0x7f) * mul;
      if (x < 0x80) return n;
      mul *= 128;
    }
    this.p = start;
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.p >= b.length) throw new ProtoDecodeError("truncated varint");
      const x = b[this.p++]!;
      v |= BigInt(x & 0x7f) << BigInt(7 * i);
      if (x < 0x80) {
        return clientIdOf(BigInt.asUintN(64, v))!;
      }
    }
    throw new ProtoDecodeError("varint longer than 10 bytes");
  }

  bytes(): Uint8Array {
    const n = this.varint();
    const start = this.p;
    if (n > this.b.length - start) throw new ProtoDecodeError("truncated length-delimited field");
    this.p = start + n;
    // A plain Uint8Array view (a Buffer's own `subarray` is slower and builds a Buffer).
    return n === 0 ? _EMPTY : new Uint8Array(this.b.buffer, this.b.byteOffset + start, n);
  }

  /** Skips a field of wire type `wire` (groups included). */
  skip(wire: number, depth = 0): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.#advance(8);
    else if (wire === 2) this.#advance(this.varint());
    else if (wire === 5) this.#advance(4);
    else if (wire === 3 && depth < 32) {
      for (;;) {
        const tag = this.varint();
        if ((tag & 7) === 4) return;
        this.skip(tag & 7, depth + 1);
      }
    } else throw new ProtoDecodeError(`invalid wire type ${wire}`);
  }

  #advance(n: number): void {
    if (n > this.b.length - this.p) throw new ProtoDecodeError("truncated field");
    this.p += n;
  }
}

// Wire types of the known fields of each decoded request, by field number (0 varint, 2 bytes).
const _PUT_WIRES = [-1, 2, 2, 0, 0];
const _GET_WIRES = [-1, 2, 0];
const _DELETE_WIRES = [-1, 2, 0, 0];
const _CAS_WIRES = [-1, 2, 2, 0, 2, 0, 0, 0];
const _DELETE_RANGE_WIRES = [-1, 2, 2, 2, 0, 0, 0];

/**
 * Decodes a `kvstore.PutRequest` (key and value are views into `b`).
 *
 * @example
 * ```ts
 * const r = decodePutRequest(new Uint8Array([0x0a, 1, 0x6b, 0x12, 1, 0x76, 0x20, 7]));
 * console.log(r.key, r.value, r.seq); // Uint8Array(1) [ 107 ] Uint8Array(1) [ 118 ] 7
 * ```
 */
export function decodePutRequest(b: Uint8Array): PutRequest {
  const r = new _Reader(b);
  let key: Uint8Array = _EMPTY, value: Uint8Array = _EMPTY, client_id: ClientId = 0, seq = 0;
  for (let f = r.field(_PUT_WIRES); f !== 0; f = r.field(_PUT_WIRES)) {
    if (f === 1) key = r.bytes();
    else if (f === 2) value = r.bytes();
    else if (f === 3) client_id = r.uint64();
    else seq = r.varint();
  }
  return { key, value, client_id, seq };
}

/**
 * Decodes a `kvstore.GetRequest` (key is a view into `b`).
 *
 * @example
 * ```ts
 * console.log(decodeGetRequest(new Uint8Array([0x0a, 1, 0x6b, 0x10, 1])).serializable); // true
 * ```
 */
export function decodeGetRequest(b: Uint8Array): GetRequest {
  const r = new _Reader(b);
  let key: Uint8Array = _EMPTY, serializable = false;
  for (let f = r.field(_GET_WIRES); f !== 0; f = r.field(_GET_WIRES)) {
    if (f === 1) key = r.bytes();
    else serializable = r.varint() !== 0;
  }
  return { key, serializable };
}

/**
 * Decodes a `kvstore.DeleteRequest` (key is a view into `b`).
 *
 * @example
 * ```ts
 * console.log(decodeDeleteRequest(new Uint8Array([0x0a, 1, 0x6b, 0x10, 3])).client_id); // 3
 * ```
 */
export function decodeDeleteRequest(b: Uint8Array): DeleteRequest {
  const r = new _Reader(b);
  let key: Uint8Array = _EMPTY, client_id: ClientId = 0, seq = 0;
  for (let f = r.field(_DELETE_WIRES); f !== 0; f = r.field(_DELETE_WIRES)) {
    if (f === 1) key = r.bytes();
    else if (f === 2) client_id = r.uint64();
    else seq = r.varint();
  }
  return { key, client_id, seq };
}

/**
 * Decodes a `kvstore.CompareAndSwapRequest` (byte fields are views into `b`).
 *
 * @example
 * ```ts
 * const r = decodeCompareAndSwapRequest(new Uint8Array([0x0a, 1, 0x6b, 0x18, 1, 0x30, 9, 0x38, 2]));
 * console.log(r.expect_absent, r.client_id, r.seq); // true 9 2
 * ```
 */
export function decodeCompareAndSwapRequest(b: Uint8Array): CompareAndSwapRequest {
  const r = new _Reader(b);
  let key: Uint8Array = _EMPTY, expected: Uint8Array = _EMPTY, value: Uint8Array = _EMPTY;
  let expect_absent = false, del = false, client_id: ClientId = 0, seq = 0;
  for (let f = r.field(_CAS_WIRES); f !== 0; f = r.field(_CAS_WIRES)) {
    switch (f) {
      case 1:
        key = r.bytes();
        break;
      case 2:
        expected = r.bytes();
        break;
      case 3:
        expect_absent = r.varint() !== 0;
        break;
      case 4:
        value = r.bytes();
        break;
      case 5:
        del = r.varint() !== 0;
        break;
      case 6:
        client_id = r.uint64();
        break;
      default:
        seq = r.varint();
    }
  }
  return { key, expected, expect_absent, value, delete: del, client_id, seq };
}

/**
 * Decodes a `kvstore.DeleteRangeRequest` (byte fields are views into `b`).
 *
 * @example
 * ```ts
 * const r = decodeDeleteRangeRequest(new Uint8Array([0x0a, 1, 0x6b, 0x28, 9, 0x30, 2]));
 * console.log(r.prefix.length, r.client_id, r.seq); // 1 9 2
 * ```
 */
export function decodeDeleteRangeRequest(b: Uint8Array): DeleteRangeRequest {
  const r = new _Reader(b);
  let prefix: Uint8Array = _EMPTY, start: Uint8Array = _EMPTY, end: Uint8Array = _EMPTY;
  let all = false, client_id: ClientId = 0, seq = 0;
  for (let f = r.field(_DELETE_RANGE_WIRES); f !== 0; f = r.field(_DELETE_RANGE_WIRES)) {
    if (f === 1) prefix = r.bytes();
    else if (f === 2) start = r.bytes();
    else if (f === 3) end = r.bytes();
    else if (f === 4) all = r.varint() !== 0;
    else if (f === 5) client_id = r.uint64();
    else seq = r.varint();
  }
  return { prefix, start, end, all, client_id, seq };
}

/**
 * A response buffer (every byte is written): node's pooled `Buffer.allocUnsafe`, several times
 * cheaper than `new Uint8Array(n)` in Deno for the few bytes of a Put or Delete answer.
 */
function _alloc(n: number): Uint8Array {
  return Buffer.allocUnsafe(n);
}

/** A `uint64` given as a number, as the server ever sends one: a non-negative integer. */
function _u64(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

/** Bytes of a bool field (when present). */
function _boolLen(v: boolean | undefined | null): number {
  return v === undefined || v === null ? 0 : 2;
}

/** Bytes of a uint64 field (when present). */
function _u64Len(v: number | undefined | null): number {
  return v === undefined || v === null ? 0 : 1 + varintLength(_u64(v));
}

function _putBool(out: Uint8Array, p: number, tag: number, v: boolean | undefined | null): number {
  if (v === undefined || v === null) return p;
  out[p] = tag;
  out[p + 1] = v ? 1 : 0;
  return p + 2;
}

function _putU64(out: Uint8Array, p: number, tag: number, v: number | undefined | null): number {
  if (v === undefined || v === null) return p;
  out[p] = tag;
  return putVarint(out, p + 1, _u64(v));
}

/**
 * Encodes a `kvstore.PutResponse`. Like protobufjs, a field that is present is written even when
 * it holds its default (decoders read both the same).
 *
 * @example
 * ```ts
 * console.log(encodePutResponse({ success: true, index: 5 })); // Uint8Array(4) [ 8, 1, 16, 5 ]
 * ```
 */
export function encodePutResponse(m: PutResponse): Uint8Array {
  const out = _alloc(_boolLen(m.success) + _u64Len(m.index));
  _putU64(out, _putBool(out, 0, 0x08, m.success), 0x10, m.index);
  return out;
}

/**
 * Encodes a `kvstore.DeleteResponse` (present fields written, as protobufjs does).
 *
 * @example
 * ```ts
 * console.log(encodeDeleteResponse({ success: true, existed: true, index: 1 })); // Uint8Array(6) [ 8, 1, 16, 1, 24, 1 ]
 * ```
 */
export function encodeDeleteResponse(m: DeleteResponse): Uint8Array {
  const out = _alloc(_boolLen(m.success) + _boolLen(m.existed) + _u64Len(m.index));
  let p = _putBool(out, 0, 0x08, m.success);
  p = _putBool(out, p, 0x10, m.existed);
  _putU64(out, p, 0x18, m.index);
  return out;
}

/**
 * Encodes a `kvstore.GetResponse` (present fields written, as protobufjs does).
 *
 * @example
 * ```ts
 * console.log(encodeGetResponse({ value: new Uint8Array([7]), found: true })); // Uint8Array(5) [ 10, 1, 7, 16, 1 ]
 * ```
 */
export function encodeGetResponse(m: GetResponse): Uint8Array {
  const v = m.value as Uint8Array | undefined | null;
  const vl = v === undefined || v === null ? -1 : v.length;
  const out = _alloc((vl >= 0 ? 1 + varintLength(vl) + vl : 0) + _boolLen(m.found));
  let p = 0;
  if (vl >= 0) {
    out[p++] = 0x0a;
    p = putVarint(out, p, vl);
    out.set(v!, p);
    p += vl;
  }
  _putBool(out, p, 0x10, m.found);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading.

/** The `kvstore` package: `KVStore` is a client constructor with `.service`. */
export interface KvstorePackage {
  KVStore: grpc.ServiceClientConstructor;
}
/** The `raft` package: `Raft` is a client constructor with `.service`. */
export interface RaftPackage {
  Raft: grpc.ServiceClientConstructor;
}

let _kv: KvstorePackage | undefined;
let _raft: RaftPackage | undefined;

/**
 * The loaded `kvstore` package (loaded on first call, then cached).
 *
 * @example
 * ```ts
 * import * as grpc from "@grpc/grpc-js";
 * const stub = new (kvstorePackage().KVStore)("127.0.0.1:50051", grpc.credentials.createInsecure());
 * stub.close();
 * ```
 */
export function kvstorePackage(): KvstorePackage {
  if (_kv === undefined) {
    const def = protoLoader.loadSync(KVSTORE_PROTO, LOADER_OPTIONS);
    _kv = (grpc.loadPackageDefinition(def) as unknown as { kvstore: KvstorePackage }).kvstore;
  }
  return _kv;
}

/**
 * The loaded `raft` package (loaded on first call, then cached).
 *
 * @example
 * ```ts
 * const def = raftPackage().Raft.service;
 * console.log(Object.keys(def)); // RequestVote, AppendEntries, Stream, InstallSnapshot
 * ```
 */
export function raftPackage(): RaftPackage {
  if (_raft === undefined) {
    const def = protoLoader.loadSync(RAFT_PROTO, LOADER_OPTIONS);
    _raft = (grpc.loadPackageDefinition(def) as unknown as { raft: RaftPackage }).raft;
  }
  return _raft;
}
