/**
 * The ConcordKV client library.
 *
 * A {@linkcode KVClient} talks to a cluster through a list of endpoints. It finds the leader (from
 * the `Status` RPC or the `concordkv-leader` hint a node sends with `UNAVAILABLE`), caches it, sends
 * requests there, and retries with exponential backoff when a node is unavailable, until the
 * operation's deadline. Writes carry an exactly-once id: a client id and a sequence number, reused
 * when a request is retried, so the cluster applies a retried write once. Each in-flight write uses
 * its own client id (a "session" from a small pool), so a server that remembers only the latest
 * sequence number per client never mistakes a concurrent write for a duplicate.
 *
 * Failures are {@linkcode KVError}s with a {@linkcode KVErrorKind} callers can act on.
 *
 * @example
 * ```ts
 * const kv = new KVClient({ endpoints: ["127.0.0.1:50051", "127.0.0.1:50052"] });
 * try {
 *   await kv.put("greeting", "hello");
 *   const v = await kv.getString("greeting"); // "hello"
 * } finally {
 *   kv.close();
 * }
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { crc32 } from "node:zlib";
import {
  type BackupChunk,
  type CompareAndSwapResponse,
  type DefragmentResponse,
  type DeleteRangeResponse,
  type DeleteResponse,
  type GetResponse,
  kvstorePackage,
  type Member as WireMember,
  type MemberChangeResponse,
  type MemberListResponse,
  type PingResponse,
  type PutResponse,
  type ScanResponse,
  type StatusResponse as WireStatus,
  type TransferLeaderResponse,
} from "../server/proto.ts";

/** What went wrong, as a value a caller can switch on. */
export type KVErrorKind =
  /** No node answered, or none knows a leader, before the deadline (gRPC UNAVAILABLE). */
  | "unavailable"
  /** The deadline passed (gRPC DEADLINE_EXCEEDED). */
  | "deadline_exceeded"
  /** A bad key, value or request (gRPC INVALID_ARGUMENT). */
  | "invalid_argument"
  /** The request is over a size limit (gRPC RESOURCE_EXHAUSTED). */
  | "resource_exhausted"
  /** The cluster refused the operation in its current state (FAILED_PRECONDITION). */
  | "failed_precondition"
  /** A named thing (a member) does not exist (NOT_FOUND). */
  | "not_found"
  /** A named thing (a member) already exists (ALREADY_EXISTS). */
  | "already_exists"
  /** The operation was interrupted, e.g. by a leadership change (ABORTED). */
  | "aborted"
  /** The node does not implement the RPC (UNIMPLEMENTED). */
  | "unimplemented"
  /** The client was closed or the call cancelled. */
  | "cancelled"
  /** A bad endpoint or argument given to the client itself. */
  | "usage"
  /** Anything else (INTERNAL, UNKNOWN, DATA_LOSS, ...). */
  | "internal";

/** A failed operation. `kind` says what happened; `leaderHint` is the leader's address if known. */
export class KVError extends Error {
  override name = "KVError";
  readonly kind: KVErrorKind;
  /** The gRPC status code, when the failure came from a call. */
  readonly code: number | undefined;
  /** The leader's "host:port" (or id) as hinted by a node, when known. */
  readonly leaderHint: string | undefined;
  /** The endpoint of the last attempt. */
  readonly endpoint: string | undefined;

  constructor(
    kind: KVErrorKind,
    message: string,
    opts: { code?: number; leaderHint?: string; endpoint?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.kind = kind;
    this.code = opts.code;
    this.leaderHint = opts.leaderHint;
    this.endpoint = opts.endpoint;
  }
}

/** Options of {@linkcode KVClient}. */
export interface KVClientOptions {
  /** "host:port" of one or more nodes. */
  endpoints: string[];
  /** Default deadline of one operation, retries included, in ms. Default 5000. */
  timeoutMs?: number;
  /** Deadline of one attempt in ms (a hung node is given up after this). Default 2000. */
  attemptTimeoutMs?: number;
  /** Retries after the first attempt (within the deadline). Default unlimited. */
  maxRetries?: number;
  /** First backoff between attempts in ms; doubles up to `maxBackoffMs`. Default 25. */
  initialBackoffMs?: number;
  /** Largest backoff in ms. Default 400. */
  maxBackoffMs?: number;
  /**
   * Send requests to the leader once known (default true). With false, requests go only to the
   * given endpoints, in order: useful to address one particular node.
   */
  followLeader?: boolean;
  /** gRPC channel options merged over the client's defaults. */
  channelOptions?: grpc.ChannelOptions;
}

/** Per-call options. */
export interface CallOptions {
  /** Deadline of this operation in ms (overrides the client's `timeoutMs`). */
  timeoutMs?: number;
  /** Abort the operation. */
  signal?: AbortSignal;
}

/** Options of a write. */
export interface WriteOptions extends CallOptions {
  /**
   * Use this client id instead of one from the session pool (tests of deduplication): any
   * uint64 but 0, as a safe integer or a bigint.
   */
  clientId?: number | bigint;
  /** Use this sequence number (with `clientId`). */
  seq?: number;
}

/** Options of a read. */
export interface ReadOptions extends CallOptions {
  /** Allow a stale read served from any node's local state (no leadership check). */
  serializable?: boolean;
}

/** Options of a scan. */
export interface ScanOptions extends ReadOptions {
  /** At most this many pairs (0: the server's default). */
  limit?: number;
}

/** Keys and values are bytes; strings are encoded as UTF-8. */
export type Bytes = Uint8Array | string;

/** A key and its value. */
export interface KeyValue {
  key: Uint8Array;
  value: Uint8Array;
}

/** The result of a scan. */
export interface ScanResult {
  pairs: KeyValue[];
  /** True when the limit cut the result. */
  more: boolean;
}

/** The result of a compare-and-swap. */
export interface CasResult {
  success: boolean;
  /** The value found when the comparison failed (if the key existed). */
  current: Uint8Array | undefined;
  index: number;
}

/** A cluster member as a node reports it. */
export interface MemberInfo {
  id: number;
  address: string;
  /** "voter" or "learner". */
  kind: string;
  role: string;
  matchIndex: number;
  healthy: boolean;
}

/** What a {@linkcode KVClient.defragment} did: the node's data size before and after. */
export interface DefragmentInfo {
  nodeId: number;
  dbBytesBefore: number;
  dbBytesAfter: number;
}

/** A node's view of itself and the cluster. */
export interface StatusInfo {
  nodeId: number;
  role: string;
  term: number;
  leaderId: number;
  commitIndex: number;
  appliedIndex: number;
  firstIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  /** Bytes of the node's data (its engine's tables and memtables). */
  dbBytes: number;
  /** The node's space quota in bytes (0: none). */
  quotaBytes: number;
  members: MemberInfo[];
  clusterId: string;
  version: string;
}

/** The membership and its leader. */
export interface MemberList {
  members: MemberInfo[];
  leaderId: number;
}

type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;

const _enc = new TextEncoder();
const _dec = new TextDecoder();

/** UTF-8 encodes a string; returns bytes unchanged. */
export function toBytes(b: Bytes): Uint8Array {
  return typeof b === "string" ? _enc.encode(b) : b;
}

/** Decodes UTF-8 bytes to a string. */
export function bytesToString(b: Uint8Array): string {
  return _dec.decode(b);
}

function _u8(b: Uint8Array | undefined | null): Uint8Array {
  if (!b) return new Uint8Array(0);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function _num(v: number | string | undefined | null): number {
  return v === undefined || v === null || v === "" ? 0 : Number(v);
}

/**
 * A random non-zero client id below 2^53: nodes decode 64-bit fields as JS numbers, so ids stay
 * in the range numbers hold exactly.
 */
function _randomClientId(): number {
  const b = new Uint32Array(2);
  crypto.getRandomValues(b);
  const id = (b[0]! & 0x1fffff) * 2 ** 32 + b[1]!;
  return id === 0 ? 1 : id;
}

const _KIND_BY_CODE: Record<number, KVErrorKind> = {
  [grpc.status.UNAVAILABLE]: "unavailable",
  [grpc.status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [grpc.status.INVALID_ARGUMENT]: "invalid_argument",
  [grpc.status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [grpc.status.FAILED_PRECONDITION]: "failed_precondition",
  [grpc.status.NOT_FOUND]: "not_found",
  [grpc.status.ALREADY_EXISTS]: "already_exists",
  [grpc.status.ABORTED]: "aborted",
  [grpc.status.UNIMPLEMENTED]: "unimplemented",
  [grpc.status.CANCELLED]: "cancelled",
};

/** Validates "host:port". */
function _checkEndpoint(e: string): string {
  const m = /^(.+):(\d+)$/.exec(e.trim());
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new KVError("usage", `bad endpoint "${e}" (expected host:port)`);
  }
  return e.trim();
}

/** A (client id, next seq) pair; one in-flight write at a time uses it. */
interface _Session {
  /** A uint64 (a bigint id as its decimal string: protobufjs encodes that exactly). */
  clientId: number | string;
  seq: number;
}

/** How an attempt may be retried. */
type _RetryClass = "idempotent" | "once";

/**
 * A ConcordKV client. See the module documentation.
 *
 * @example
 * ```ts
 * const kv = new KVClient({ endpoints: ["127.0.0.1:50051"] });
 * await kv.put("a", "1");
 * console.log(await kv.getString("a")); // "1"
 * kv.close();
 * ```
 */
export class KVClient {
  readonly endpoints: string[];
  #opts: Required<Omit<KVClientOptions, "endpoints" | "channelOptions">>;
  #channelOptions: grpc.ChannelOptions;
  #stubs = new Map<string, grpc.Client>();
  #leader: string | undefined;
  /** Member id → address, from the last Status/MemberList seen. */
  #addresses = new Map<number, string>();
  #next = 0;
  #sessions: _Session[] = [];
  #closed = false;
  #discovering: Promise<void> | undefined;
  /** When the leader was last looked up (0: never); a lookup that found none is retried later. */
  #discoveredAt = 0;

  constructor(opts: KVClientOptions) {
    if (opts.endpoints.length === 0) throw new KVError("usage", "no endpoints given");
    this.endpoints = opts.endpoints.map(_checkEndpoint);
    this.#opts = {
      timeoutMs: opts.timeoutMs ?? 5000,
      attemptTimeoutMs: opts.attemptTimeoutMs ?? 2000,
      maxRetries: opts.maxRetries ?? Number.POSITIVE_INFINITY,
      initialBackoffMs: opts.initialBackoffMs ?? 25,
      maxBackoffMs: opts.maxBackoffMs ?? 400,
      followLeader: opts.followLeader ?? true,
    };
    this.#channelOptions = {
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": -1,
      ...opts.channelOptions,
    };
  }

  /** The leader's address as currently cached (undefined when unknown). */
  get leader(): string | undefined {
    return this.#leader;
  }

  /** Stores `value` under `key`. Returns the log index of the write. */
  async put(key: Bytes, value: Bytes, opts: WriteOptions = {}): Promise<number> {
    const res = await this.#write("Put", opts, (s) => ({
      key: toBytes(key),
      value: toBytes(value),
      client_id: s.clientId,
      seq: s.seq,
    })) as PutResponse;
    return _num(res.index);
  }

  /** The value of `key`, or undefined when absent. Linearizable unless `serializable`. */
  async get(key: Bytes, opts: ReadOptions = {}): Promise<Uint8Array | undefined> {
    const res = await this.#call(
      "Get",
      { key: toBytes(key), serializable: opts.serializable ?? false },
      opts,
      "idempotent",
    ) as GetResponse;
    return res.found ? _u8(res.value) : undefined;
  }

  /** {@linkcode get} decoded as UTF-8. */
  async getString(key: Bytes, opts: ReadOptions = {}): Promise<string | undefined> {
    const v = await this.get(key, opts);
    return v === undefined ? undefined : bytesToString(v);
  }

  /** Deletes `key`. Returns whether it existed. */
  async delete(key: Bytes, opts: WriteOptions = {}): Promise<boolean> {
    const res = await this.#write("Delete", opts, (s) => ({
      key: toBytes(key),
      client_id: s.clientId,
      seq: s.seq,
    })) as DeleteResponse;
    return res.existed ?? false;
  }

  /** The pairs whose key starts with `prefix`, in key order. */
  async scan(prefix: Bytes, opts: ScanOptions = {}): Promise<ScanResult> {
    return await this.#scan({ prefix: toBytes(prefix) }, opts);
  }

  /** The pairs with `start <= key < end` (empty `end`: unbounded), in key order. */
  async range(start: Bytes, end: Bytes, opts: ScanOptions = {}): Promise<ScanResult> {
    return await this.#scan({ start: toBytes(start), end: toBytes(end) }, opts);
  }

  async #scan(req: Record<string, unknown>, opts: ScanOptions): Promise<ScanResult> {
    const res = await this.#call(
      "Scan",
      { ...req, limit: opts.limit ?? 0, serializable: opts.serializable ?? false },
      opts,
      "idempotent",
    ) as ScanResponse;
    return {
      pairs: (res.pairs ?? []).map((p) => ({ key: _u8(p.key), value: _u8(p.value) })),
      more: res.more ?? false,
    };
  }

  /**
   * Deletes every key with `start <= key < end` (empty `end`: no upper bound) in one atomic step;
   * returns how many there were. `start` must not be empty (see {@linkcode deleteAll}).
   */
  async deleteRange(start: Bytes, end: Bytes, opts: WriteOptions = {}): Promise<number> {
    return await this.#deleteRange({ start: toBytes(start), end: toBytes(end) }, opts);
  }

  /** Deletes every key that starts with `prefix` (not empty) atomically; returns how many. */
  async deletePrefix(prefix: Bytes, opts: WriteOptions = {}): Promise<number> {
    return await this.#deleteRange({ prefix: toBytes(prefix) }, opts);
  }

  /** Deletes every key atomically; returns how many there were. */
  async deleteAll(opts: WriteOptions = {}): Promise<number> {
    return await this.#deleteRange({ all: true }, opts);
  }

  async #deleteRange(req: Record<string, unknown>, opts: WriteOptions): Promise<number> {
    const res = await this.#write("DeleteRange", opts, (s) => ({
      ...req,
      client_id: s.clientId,
      seq: s.seq,
    })) as DeleteRangeResponse;
    return _num(res.deleted);
  }

  /**
   * Sets `key` to `value` (or deletes it, when `value` is null) only if its current value is
   * `expected` (or it is absent, when `expected` is null).
   */
  async cas(
    key: Bytes,
    expected: Bytes | null,
    value: Bytes | null,
    opts: WriteOptions = {},
  ): Promise<CasResult> {
    const res = await this.#write("CompareAndSwap", opts, (s) => ({
      key: toBytes(key),
      expected: expected === null ? new Uint8Array(0) : toBytes(expected),
      expect_absent: expected === null,
      value: value === null ? new Uint8Array(0) : toBytes(value),
      delete: value === null,
      client_id: s.clientId,
      seq: s.seq,
    })) as CompareAndSwapResponse;
    return {
      success: res.success,
      current: res.found ? _u8(res.current) : undefined,
      index: _num(res.index),
    };
  }

  /** Sends a Ping; returns the reply. */
  async ping(message = "ping", opts: CallOptions = {}): Promise<string> {
    const res = await this.#call("Ping", { message }, opts, "idempotent") as PingResponse;
    return res.reply;
  }

  /** The Status of the node the client reaches (the leader when known). */
  async status(opts: CallOptions = {}): Promise<StatusInfo> {
    const res = await this.#call("Status", {}, opts, "idempotent") as WireStatus;
    return this.#learn(res);
  }

  /** The Status of one particular node, without retries or leader following. */
  async statusOf(endpoint: string, opts: CallOptions = {}): Promise<StatusInfo> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.#opts.attemptTimeoutMs);
    const res = await this.#attempt(_checkEndpoint(endpoint), "Status", {}, deadline, opts.signal)
      .then((r) => r as WireStatus);
    return this.#learn(res);
  }

  /** The Status of every given endpoint (errors in place of nodes that did not answer). */
  async statusAll(opts: CallOptions = {}): Promise<(StatusInfo | KVError)[]> {
    return await Promise.all(
      this.endpoints.map((e) =>
        this.statusOf(e, opts).catch((err) =>
          err instanceof KVError ? err : new KVError("internal", String(err))
        )
      ),
    );
  }

  /**
   * Reclaims the disk space held by deleted and overwritten keys on the node at `endpoint` (a
   * full compaction of its engine; reads and writes go on), without retries or leader
   * following. Resolves when it is done, with the node's data size before and after.
   */
  async defragment(endpoint: string, opts: CallOptions = {}): Promise<DefragmentInfo> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.#opts.timeoutMs);
    const res = await this.#attempt(
      _checkEndpoint(endpoint),
      "Defragment",
      {},
      deadline,
      opts.signal,
    ) as DefragmentResponse;
    return {
      nodeId: _num(res.member_id),
      dbBytesBefore: _num(res.db_bytes_before),
      dbBytesAfter: _num(res.db_bytes_after),
    };
  }

  /** The cluster membership and its leader. */
  async memberList(opts: CallOptions = {}): Promise<MemberList> {
    const res = await this.#call("MemberList", {}, opts, "idempotent") as MemberListResponse;
    const members = (res.members ?? []).map(_member);
    for (const m of members) if (m.address) this.#addresses.set(m.id, m.address);
    return { members, leaderId: _num(res.leader_id) };
  }

  /** Adds member `id` at `address` (as a learner when `learner`). Returns the new membership. */
  async memberAdd(
    id: number,
    address: string,
    opts: CallOptions & { learner?: boolean } = {},
  ): Promise<MemberInfo[]> {
    _checkEndpoint(address);
    const res = await this.#call(
      "MemberAdd",
      { id, address, learner: opts.learner ?? false },
      opts,
      "once",
    ) as MemberChangeResponse;
    return (res.members ?? []).map(_member);
  }

  /** Promotes learner `id` to voter. Returns the new membership. */
  async memberPromote(id: number, opts: CallOptions = {}): Promise<MemberInfo[]> {
    const res = await this.#call("MemberPromote", { id }, opts, "once") as MemberChangeResponse;
    return (res.members ?? []).map(_member);
  }

  /** Removes member `id`. Returns the new membership. */
  async memberRemove(id: number, opts: CallOptions = {}): Promise<MemberInfo[]> {
    const res = await this.#call("MemberRemove", { id }, opts, "once") as MemberChangeResponse;
    return (res.members ?? []).map(_member);
  }

  /** Asks the leader to hand leadership to `id`. Returns the new leader's id. */
  async transferLeader(id: number, opts: CallOptions = {}): Promise<number> {
    const res = await this.#call("TransferLeader", { id }, opts, "once") as TransferLeaderResponse;
    this.#leader = undefined;
    this.#discoveredAt = 0;
    return _num(res.leader_id);
  }

  /**
   * A consistent copy of every key (the Backup RPC), from the leader when it is known: chunks of
   * records `keyLen:varint key valueLen:varint value` in key order, all as of one linearizable
   * point (at least log index `index`), with `pairs`, its number of records. Every chunk is
   * checked against its CRC-32, and the number
   * of records against the count the node sends last; a failure throws (kind "internal"), and so
   * does a stream that ends early. Not retried: a failed backup is started again.
   */
  async *backup(
    opts: CallOptions = {},
  ): AsyncGenerator<{ data: Uint8Array; index: number; pairs: number }> {
    if (this.#closed) throw new KVError("cancelled", "client is closed");
    const deadline = Date.now() + (opts.timeoutMs ?? this.#opts.timeoutMs);
    await this.#discover(deadline);
    const endpoint = this.#pick();
    const stub = this.#stub(endpoint) as unknown as {
      Backup(req: unknown, md: grpc.Metadata, o: grpc.CallOptions): grpc.ClientReadableStream<
        BackupChunk
      >;
    };
    const call = stub.Backup({}, new grpc.Metadata(), { deadline });
    const onAbort = () => call.cancel();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let pairs = 0;
    let n = 0;
    try {
      for await (const c of call as AsyncIterable<BackupChunk>) {
        const data = c.data ?? new Uint8Array(0);
        if (c.done) {
          if (_num(c.pairs) !== pairs) {
            throw new KVError(
              "internal",
              `backup: ${pairs} pairs arrived, the node sent ${c.pairs}`,
            );
          }
          return;
        }
        if ((crc32(data) >>> 0) !== c.crc) {
          throw new KVError("internal", `backup: chunk ${n} from ${endpoint} fails its checksum`);
        }
        const inChunk = countRecords(data);
        pairs += inChunk;
        n++;
        yield { data, index: _num(c.index), pairs: inChunk };
      }
    } catch (e) {
      if (e instanceof KVError) throw e;
      const se = e as grpc.ServiceError;
      throw typeof se?.code === "number" ? _toKVError(se, endpoint, "Backup") : e;
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
    throw new KVError(
      "internal",
      `backup: the stream from ${endpoint} ended before its last chunk`,
    );
  }

  /** Closes every channel. Calls in flight fail with kind "cancelled". Idempotent. */
  close(): void {
    this.#closed = true;
    for (const stub of this.#stubs.values()) stub.close();
    this.#stubs.clear();
  }

  // --- internals ----------------------------------------------------------------------------------

  #learn(s: WireStatus): StatusInfo {
    const info: StatusInfo = {
      nodeId: _num(s.node_id),
      role: s.role,
      term: _num(s.term),
      leaderId: _num(s.leader_id),
      commitIndex: _num(s.commit_index),
      appliedIndex: _num(s.applied_index),
      firstIndex: _num(s.first_index),
      lastIndex: _num(s.last_index),
      snapshotIndex: _num(s.snapshot_index),
      dbBytes: _num(s.db_bytes),
      quotaBytes: _num(s.quota_bytes),
      members: (s.members ?? []).map(_member),
      clusterId: s.cluster_id ?? "",
      version: s.version ?? "",
    };
    for (const m of info.members) if (m.address) this.#addresses.set(m.id, m.address);
    if (this.#opts.followLeader && info.leaderId !== 0) {
      const addr = this.#addresses.get(info.leaderId);
      if (addr !== undefined) this.#leader = addr;
    }
    return info;
  }

  async #write(
    method: string,
    opts: WriteOptions,
    build: (s: _Session) => Record<string, unknown>,
  ): Promise<unknown> {
    if (opts.clientId !== undefined || opts.seq !== undefined) {
      if (opts.clientId === undefined || opts.seq === undefined) {
        throw new KVError("usage", "clientId and seq go together");
      }
      const id = opts.clientId;
      const validId = typeof id === "bigint"
        ? id > 0n && id < 1n << 64n
        : Number.isSafeInteger(id) && id > 0;
      if (!validId) throw new KVError("usage", `clientId ${id} is not a uint64 above 0`);
      if (!Number.isSafeInteger(opts.seq) || opts.seq <= 0) {
        throw new KVError("usage", `seq ${opts.seq} is not a positive safe integer`);
      }
      return await this.#call(
        method,
        build({ clientId: typeof id === "bigint" ? id.toString() : id, seq: opts.seq }),
        opts,
        "idempotent",
      );
    }
    const session = this.#sessions.pop() ?? { clientId: _randomClientId(), seq: 0 };
    session.seq += 1;
    try {
      // The same (client id, seq) is sent on every retry: the cluster applies it once.
      return await this.#call(method, build(session), opts, "idempotent");
    } finally {
      this.#sessions.push(session);
    }
  }

  /**
   * Learns the leader (from the Status of the first endpoint that names one) when it is not
   * known: at the first call, and again at most once a second while it stays unknown.
   */
  async #discover(deadline: number): Promise<void> {
    if (!this.#opts.followLeader || this.#leader !== undefined) return;
    if (this.#discoveredAt !== 0 && Date.now() - this.#discoveredAt < 1000) return;
    this.#discovering ??= (async () => {
      for (const e of this.endpoints) {
        if (Date.now() >= deadline) break;
        try {
          const s = await this.#attempt(e, "Status", {}, Math.min(deadline, Date.now() + 500));
          this.#learn(s as WireStatus);
          if (this.#leader !== undefined) break;
        } catch {
          // Try the next endpoint; the call itself will retry.
        }
      }
      this.#discoveredAt = Date.now();
    })().finally(() => {
      this.#discovering = undefined;
    });
    await this.#discovering;
  }

  #pick(): string {
    if (this.#opts.followLeader && this.#leader !== undefined) return this.#leader;
    const e = this.endpoints[this.#next % this.endpoints.length]!;
    return e;
  }

  #onFailure(endpoint: string, err: KVError): void {
    if (this.#leader === endpoint) this.#leader = undefined;
    if (this.endpoints[this.#next % this.endpoints.length] === endpoint) this.#next++;
    if (this.#opts.followLeader && err.leaderHint !== undefined) {
      const hint = err.leaderHint;
      const id = /^\d+$/.test(hint) ? Number(hint) : undefined;
      const addr = id !== undefined ? this.#addresses.get(id) : hint.replace(/^\d+=/, "");
      if (addr !== undefined && /:\d+$/.test(addr) && addr !== endpoint) this.#leader = addr;
    }
  }

  async #call(
    method: string,
    req: unknown,
    opts: CallOptions,
    retry: _RetryClass,
  ): Promise<unknown> {
    if (this.#closed) throw new KVError("cancelled", "client is closed");
    const deadline = Date.now() + (opts.timeoutMs ?? this.#opts.timeoutMs);
    await this.#discover(deadline);
    let backoff = this.#opts.initialBackoffMs;
    /** The last "node unreachable / no leader" failure: the better explanation at the deadline. */
    let unavailable: KVError | undefined;
    const giveUp = (err: KVError, endpoint: string): KVError => {
      const why = unavailable ?? err;
      return new KVError(
        unavailable !== undefined ? "unavailable" : err.kind,
        `no answer within ${opts.timeoutMs ?? this.#opts.timeoutMs} ms (last: ${why.message})`,
        { code: why.code, leaderHint: why.leaderHint, endpoint, cause: err },
      );
    };
    for (let attempt = 0;; attempt++) {
      const endpoint = this.#pick();
      const attemptDeadline = Math.min(deadline, Date.now() + this.#opts.attemptTimeoutMs);
      try {
        return await this.#attempt(endpoint, method, req, attemptDeadline, opts.signal);
      } catch (e) {
        const err = e instanceof KVError ? e : new KVError("internal", String(e), { cause: e });
        if (err.kind === "unavailable") unavailable = err;
        const retriable = err.kind === "unavailable" ||
          (retry === "idempotent" && (err.kind === "aborted" || err.kind === "deadline_exceeded"));
        if (!retriable || this.#closed || opts.signal?.aborted) throw err;
        if (Date.now() >= deadline) throw giveUp(err, endpoint);
        this.#onFailure(endpoint, err);
        if (attempt >= this.#opts.maxRetries) throw err;
        const jittered = backoff / 2 + Math.random() * backoff / 2;
        // A hint to a new leader is worth trying at once.
        const hinted = err.leaderHint !== undefined && this.#leader !== undefined &&
          this.#leader !== endpoint;
        const wait = hinted ? 0 : jittered;
        if (Date.now() + wait >= deadline) throw giveUp(err, endpoint);
        if (wait > 0) await _sleep(wait, opts.signal);
        backoff = Math.min(backoff * 2, this.#opts.maxBackoffMs);
      }
    }
  }

  #stub(endpoint: string): grpc.Client {
    let stub = this.#stubs.get(endpoint);
    if (stub === undefined) {
      const Ctor = kvstorePackage().KVStore;
      stub = new Ctor(endpoint, grpc.credentials.createInsecure(), this.#channelOptions);
      this.#stubs.set(endpoint, stub);
    }
    return stub;
  }

  #attempt(
    endpoint: string,
    method: string,
    req: unknown,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(new KVError("cancelled", "client is closed"));
    const stub = this.#stub(endpoint) as unknown as Record<string, Unary>;
    const fn = stub[method];
    if (typeof fn !== "function") {
      return Promise.reject(new KVError("unimplemented", `no RPC ${method}`));
    }
    return new Promise((resolve, reject) => {
      let call: grpc.ClientUnaryCall | undefined = undefined;
      const onAbort = () => call?.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      call = fn.call(stub, req, new grpc.Metadata(), { deadline }, (err, res) => {
        signal?.removeEventListener("abort", onAbort);
        if (err) reject(_toKVError(err, endpoint, method));
        else resolve(res);
      });
    });
  }
}

/**
 * The records of a backup chunk (`keyLen:varint key valueLen:varint value`...), as views into
 * `data`. Throws on a malformed chunk.
 *
 * @example
 * ```ts
 * import { backupRecords } from "./client.ts";
 * const pairs = [...backupRecords(new Uint8Array([1, 107, 1, 118]))];
 * console.log(pairs.length, pairs[0]!.key[0]); // 1 107
 * ```
 */
export function* backupRecords(
  data: Uint8Array,
): Generator<{ key: Uint8Array; value: Uint8Array }> {
  let p = 0;
  const varint = (): number => {
    let n = 0;
    for (let mul = 1, i = 0; i < 8; i++, mul *= 128) {
      if (p >= data.length) throw new KVError("internal", "backup: truncated record");
      const b = data[p++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
    }
    throw new KVError("internal", "backup: bad record length");
  };
  const bytes = (): Uint8Array => {
    const len = varint();
    if (len > data.length - p) throw new KVError("internal", "backup: truncated record");
    p += len;
    return data.subarray(p - len, p);
  };
  while (p < data.length) {
    const key = bytes();
    yield { key, value: bytes() };
  }
}

function countRecords(data: Uint8Array): number {
  let n = 0;
  for (const _ of backupRecords(data)) n++;
  return n;
}

function _member(m: WireMember): MemberInfo {
  return {
    id: _num(m.id),
    address: m.address ?? "",
    kind: m.kind || "voter",
    role: m.role ?? "",
    matchIndex: _num(m.match_index),
    healthy: m.healthy ?? false,
  };
}

function _toKVError(err: grpc.ServiceError, endpoint: string, method: string): KVError {
  const kind = _KIND_BY_CODE[err.code] ?? "internal";
  const hint = err.metadata?.get("concordkv-leader")?.[0];
  const leaderHint = hint === undefined || hint === "" ? undefined : String(hint);
  let details = err.details || grpc.status[err.code] || "error";
  // grpc-js: "No connection established. Last error: Error: connect ECONNREFUSED h:p. Resolution note: "
  const conn = /Last error: (?:Error: )?(.*?)\.?\s*(?:Resolution note:.*)?$/s.exec(details);
  if (conn?.[1]) details = conn[1];
  return new KVError(kind, `${method} ${endpoint}: ${details}`, {
    code: err.code,
    leaderHint,
    endpoint,
    cause: err,
  });
}

function _sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
