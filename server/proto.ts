/**
 * The two gRPC services of a node, loaded once from protos/ at start-up, and the TypeScript shapes
 * of their decoded messages (the one place those shapes are written down).
 *
 * Loader options (server side): `keepCase: true` (field names exactly as in the .proto:
 * `client_id`, `leader_id`, ...), `longs: Number` (64-bit integers as JS numbers; indexes and terms
 * stay far below 2^53; a random 64-bit `client_id` may round, which only merges two ids that are
 * equal in their top 53 bits), `bytes` as Node `Buffer`s (a `Uint8Array` subclass), `defaults: true`
 * (absent scalars read as 0 / "" / empty bytes / false), `oneofs: true`. Messages we send may give
 * 64-bit fields as numbers and bytes as any `Uint8Array`.
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
  client_id: number;
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
  client_id: number;
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
  client_id: number;
  seq: number;
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
