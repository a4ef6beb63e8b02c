/**
 * The client API `kvstore.KVStore` of a node.
 *
 * Every node answers every request. Writes are proposed through the local {@linkcode RaftDriver}
 * (a follower forwards them to the leader inside its peer stream). Reads are linearizable through
 * ReadIndex unless the request asks for `serializable` (or the node runs with
 * `--unsafe-local-reads`, a self-test mode). Expected failures map to gRPC codes
 * (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE with the `concordkv-leader` trailing hint,
 * DEADLINE_EXCEEDED); nothing a client sends can crash the node or yield UNKNOWN.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import {
  type ClientId,
  clientIdOf,
  type CommandResult,
  DELETE_RANGE_DEFAULT_LIMIT,
} from "../raft/command.ts";
import { type CommandInput, DriverError, type RaftDriver } from "./raft_driver.ts";
import { type StateMachine, userPairs } from "./state_machine.ts";
import { type EngineView, snapshotChunks } from "./snapshot.ts";
import { crc32 } from "node:zlib";
import { compareBytes, prefixEnd } from "../storage/coding.ts";
import {
  decodeCompareAndSwapRequest,
  decodeDeleteRangeRequest,
  decodeDeleteRequest,
  decodeGetRequest,
  decodePutRequest,
  encodeDeleteResponse,
  encodeGetResponse,
  encodePutResponse,
} from "./proto.ts";
import type {
  BackupChunk,
  CompareAndSwapRequest,
  CompareAndSwapResponse,
  DefragmentResponse,
  DeleteRangeRequest,
  DeleteRangeResponse,
  DeleteRequest,
  DeleteResponse,
  GetRequest,
  GetResponse,
  KeyValue,
  Member,
  MemberAddRequest,
  MemberChangeResponse,
  MemberIdRequest,
  MemberListResponse,
  PingRequest,
  PingResponse,
  PutRequest,
  PutResponse,
  ScanRequest,
  ScanResponse,
  StatusResponse,
  TransferLeaderResponse,
} from "./proto.ts";

/** Largest key, in bytes. */
export const MAX_KEY_BYTES = 64 * 1024;
/** Largest value, in bytes. */
export const MAX_VALUE_BYTES = 4 * 1024 * 1024;
/** A scan answer stops (with `more`) after this many key+value bytes. */
export const MAX_SCAN_BYTES = 12 * 1024 * 1024;
/** Time a request waits for commit when the client set no deadline. */
export const DEFAULT_TIMEOUT_MS = 5000;

/** What the service needs of its node. */
export interface ServiceContext {
  readonly id: number;
  readonly driver: RaftDriver;
  readonly sm: StateMachine;
  /** Serve reads from local state with no leadership check (self-test mode). */
  readonly unsafeLocalReads: boolean;
  /** The most keys a DeleteRange proposed here may delete (default {@linkcode DELETE_RANGE_DEFAULT_LIMIT}). */
  readonly maxDeleteRangeKeys?: number;
  /** Client address of a member, if known. */
  addressOf(id: number): string | undefined;
  /**
   * Why writes that add data are refused now (the space quota is exceeded), or undefined. Puts and
   * writing compare-and-swaps get RESOURCE_EXHAUSTED with it; reads and deletes go on.
   */
  spaceRefusal?(): string | undefined;
  /**
   * For a backup: after a linearizable read barrier (`timeoutMs`), a pinned view of the engine
   * and the applied index it is at. The caller releases the view.
   */
  backupView?(timeoutMs: number): Promise<{ index: number; view: EngineView }>;
  /** Where answers are counted, by method and status code (`/metrics`). */
  requests?: RequestCounts;
  status(): StatusResponse;
  members(): Member[];
  /** Membership RPCs (may reject with a {@linkcode RpcError}). */
  memberAdd?(req: MemberAddRequest): Promise<MemberChangeResponse>;
  memberPromote?(req: MemberIdRequest): Promise<MemberChangeResponse>;
  memberRemove?(req: MemberIdRequest): Promise<MemberChangeResponse>;
  transferLeader?(req: MemberIdRequest): Promise<TransferLeaderResponse>;
  /** A full compaction of this node's engine (may reject with a {@linkcode RpcError}). */
  defragment?(): Promise<DefragmentResponse>;
}

/** Answers per method and gRPC status code (0–16), for `/metrics`. */
export class RequestCounts {
  readonly #by = new Map<string, number[]>();

  /** The counters of `method`, indexed by status code (made on first use). */
  of(method: string): number[] {
    let c = this.#by.get(method);
    if (c === undefined) {
      c = new Array<number>(17).fill(0);
      this.#by.set(method, c);
    }
    return c;
  }

  /** Every method's counters. */
  entries(): IterableIterator<[string, number[]]> {
    return this.#by.entries();
  }
}

/** A failure with a gRPC status, thrown by handlers. */
export class RpcError extends Error {
  override name = "RpcError";
  readonly code: grpc.status;
  readonly leaderHint: string | undefined;
  constructor(code: grpc.status, message: string, leaderHint?: string) {
    super(message);
    this.code = code;
    this.leaderHint = leaderHint;
  }
}

const EMPTY = new Uint8Array(0);

function _checkKey(key: Uint8Array | undefined | null, what = "key"): Uint8Array {
  if (key === undefined || key === null || key.length === 0) {
    throw new RpcError(grpc.status.INVALID_ARGUMENT, `${what} is empty`);
  }
  if (key.length > MAX_KEY_BYTES) {
    throw new RpcError(
      grpc.status.INVALID_ARGUMENT,
      `${what} is ${key.length} bytes; the limit is ${MAX_KEY_BYTES} (64 KiB)`,
    );
  }
  return key;
}

function _checkValue(v: Uint8Array | undefined | null, what = "value"): Uint8Array {
  const value = v ?? EMPTY;
  if (value.length > MAX_VALUE_BYTES) {
    throw new RpcError(
      grpc.status.INVALID_ARGUMENT,
      `${what} is ${value.length} bytes; the limit is ${MAX_VALUE_BYTES} (4 MiB)`,
    );
  }
  return value;
}

function _checkBound(b: Uint8Array | undefined | null, what: string): Uint8Array {
  const v = b ?? EMPTY;
  if (v.length > MAX_KEY_BYTES) {
    throw new RpcError(
      grpc.status.INVALID_ARGUMENT,
      `${what} is longer than ${MAX_KEY_BYTES} bytes`,
    );
  }
  return v;
}

/**
 * A client id (exact over the whole uint64 range: see raft/command.ts `ClientId`), or 0 (no
 * exactly-once) when the id or the seq is absent.
 */
function _clientId(n: unknown, seq: unknown): ClientId {
  if (_seq(seq) === 0) return 0;
  let id: ClientId | undefined;
  if (typeof n === "number" || typeof n === "bigint") id = clientIdOf(n);
  else if (n === undefined || n === null) id = 0;
  if (id === undefined) {
    throw new RpcError(grpc.status.INVALID_ARGUMENT, "client_id is not a uint64");
  }
  return id;
}

/** A request's seq; one past 2^53 − 1 cannot be told from its neighbours, so it is refused. */
function _seq(n: unknown): number {
  const v = Number(n ?? 0);
  if (v === 0) return 0;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new RpcError(
      grpc.status.INVALID_ARGUMENT,
      `seq must be below 2^53 (${Number.MAX_SAFE_INTEGER})`,
    );
  }
  return v;
}

// deno-lint-ignore no-explicit-any
type AnyCall = grpc.ServerUnaryCall<any, any>;

function _timeoutMs(call: AnyCall): number {
  // server/h2 calls give the deadline as a number (no Date per request); grpc-js ones as a Date.
  const fast = (call as { deadlineMs?: unknown }).deadlineMs;
  const d = typeof fast === "number" ? fast : call.getDeadline();
  let ms = DEFAULT_TIMEOUT_MS;
  if (d instanceof Date) ms = d.getTime() - Date.now();
  else if (typeof d === "number" && Number.isFinite(d)) ms = d - Date.now();
  return Math.max(1, Math.min(ms - 5, 30_000));
}

const _MALFORMED = Symbol("malformed request");

function _malformedReason(request: unknown): string | undefined {
  if (typeof request !== "object" || request === null) return undefined;
  return (request as { [_MALFORMED]?: string })[_MALFORMED];
}

/**
 * The hot methods' hand-written codecs (server/proto.ts): the same messages as protobufjs decodes
 * and encodes, without its intermediate objects and copies.
 */
const _FAST_CODECS: Record<
  string,
  { decode: (b: Uint8Array) => unknown; encode?: (m: never) => Uint8Array } | undefined
> = {
  "/kvstore.KVStore/Put": { decode: decodePutRequest, encode: encodePutResponse },
  "/kvstore.KVStore/Get": { decode: decodeGetRequest, encode: encodeGetResponse },
  "/kvstore.KVStore/Delete": { decode: decodeDeleteRequest, encode: encodeDeleteResponse },
  // Decoded by hand for its exact uint64 client_id; answered by protobufjs.
  "/kvstore.KVStore/CompareAndSwap": { decode: decodeCompareAndSwapRequest },
  "/kvstore.KVStore/DeleteRange": { decode: decodeDeleteRangeRequest },
};

/**
 * Wraps a service definition so that a request whose bytes do not decode reaches the handler as
 * a marker (answered `INVALID_ARGUMENT` by {@linkcode kvstoreHandlers}) instead of grpc-js's
 * `INTERNAL` "Error deserializing request". Put, Get and Delete use the hand-written codecs of
 * server/proto.ts (their request's `bytes` fields are views into the request buffer).
 *
 * @example
 * ```ts
 * server.addService(tolerantService(kvstorePackage().KVStore.service), kvstoreHandlers(ctx));
 * ```
 */
export function tolerantService(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(def)) {
    const fast = _FAST_CODECS[method.path];
    const decode = fast?.decode ?? method.requestDeserialize;
    out[name] = {
      ...method,
      ...(fast?.encode === undefined
        ? {}
        : { responseSerialize: fast.encode as (v: unknown) => Buffer }),
      requestDeserialize: (buf: Buffer) => {
        try {
          return decode(buf);
        } catch (e) {
          return { [_MALFORMED]: e instanceof Error ? e.message : String(e) };
        }
      },
    };
  }
  return out;
}

function _putAnswer(r: { index: number }): PutResponse {
  return { success: true, index: r.index };
}

function _deleteAnswer(r: { result: CommandResult; index: number }): DeleteResponse {
  const existed = r.result.kind === "delete" ? r.result.existed : false;
  return { success: true, existed, index: r.index };
}

/**
 * The [start, end) of a DeleteRange request (empty end: no upper bound). Exactly one form must be
 * given, so that an empty or default request never deletes everything by accident.
 */
function _deleteRangeBounds(req: DeleteRangeRequest): { start: Uint8Array; end: Uint8Array } {
  const prefix = _checkBound(req.prefix, "prefix");
  const start = _checkBound(req.start, "start");
  const end = _checkBound(req.end, "end");
  const forms = (prefix.length > 0 ? 1 : 0) + (start.length > 0 ? 1 : 0) +
    (req.all === true ? 1 : 0);
  if (forms !== 1 || (end.length > 0 && start.length === 0)) {
    throw new RpcError(
      grpc.status.INVALID_ARGUMENT,
      "DeleteRange takes exactly one of: a non-empty prefix; a non-empty start (and an " +
        "optional end); all = true",
    );
  }
  if (prefix.length > 0) return { start: prefix, end: prefixEnd(prefix) ?? EMPTY };
  if (req.all === true) return { start: EMPTY, end: EMPTY };
  if (end.length > 0 && compareBytes(end, start) <= 0) {
    throw new RpcError(grpc.status.INVALID_ARGUMENT, "DeleteRange: end must be after start");
  }
  return { start, end };
}

function _getAnswer(v: Uint8Array | undefined): GetResponse {
  return v === undefined ? { value: EMPTY, found: false } : { value: v, found: true };
}

/** Builds the `kvstore.KVStore` implementation over a node. */
export function kvstoreHandlers(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  const fail = (e: unknown): grpc.ServiceError => {
    let code = grpc.status.INTERNAL;
    let details = e instanceof Error ? e.message : String(e);
    let hint: string | undefined;
    if (e instanceof RpcError) {
      code = e.code;
      hint = e.leaderHint;
    } else if (e instanceof DriverError) {
      hint = e.leaderHint !== 0 ? ctx.addressOf(e.leaderHint) : undefined;
      code = e.kind === "too_large"
        ? grpc.status.RESOURCE_EXHAUSTED
        : e.kind === "failed_precondition"
        ? grpc.status.FAILED_PRECONDITION
        : e.kind === "timeout"
        ? grpc.status.DEADLINE_EXCEEDED
        : grpc.status.UNAVAILABLE;
    } else if (e instanceof Error && e.name === "InvalidArgumentError") {
      code = grpc.status.INVALID_ARGUMENT;
    } else {
      details = `internal error: ${details}`;
    }
    const md = new grpc.Metadata();
    if (hint !== undefined) md.set("concordkv-leader", hint);
    else if (code === grpc.status.UNAVAILABLE) {
      const l = ctx.driver.leader;
      const a = l !== 0 ? ctx.addressOf(l) : undefined;
      if (a !== undefined) md.set("concordkv-leader", a);
    }
    return Object.assign(new Error(details), { code, details, metadata: md }) as grpc.ServiceError;
  };

  const requests = ctx.requests ?? new RequestCounts();
  const unary = <Req, Res>(
    name: string,
    fn: (req: Req, call: AnyCall) => Promise<Res> | Res,
    // deno-lint-ignore no-explicit-any
  ): any => {
    const counts = requests.of(name);
    const failed = (cb: grpc.sendUnaryData<Res>, e: unknown) => {
      const err = fail(e);
      counts[err.code]! += 1;
      cb(err);
    };
    return (call: AnyCall, cb: grpc.sendUnaryData<Res>) => {
      const malformed = _malformedReason(call.request);
      if (malformed !== undefined) {
        failed(cb, new RpcError(grpc.status.INVALID_ARGUMENT, `malformed request: ${malformed}`));
        return;
      }
      let p: Promise<Res>;
      try {
        p = Promise.resolve(fn(call.request as Req, call));
      } catch (e) {
        failed(cb, e);
        return;
      }
      p.then((res) => {
        counts[0]! += 1;
        cb(null, res);
      }, (e) => failed(cb, e));
    };
  };

  const write = (
    input: CommandInput,
    call: AnyCall,
  ): Promise<{ result: CommandResult; index: number }> =>
    ctx.driver.propose(input, _timeoutMs(call));

  const backups = requests.of("Backup");
  /** Streams every user key as of a linearizable point, in CRC'd chunks, then a count. */
  const backup = async (call: grpc.ServerWritableStream<unknown, BackupChunk>): Promise<void> => {
    let cancelled = false;
    call.on("cancelled", () => cancelled = true);
    let snap: { index: number; view: EngineView };
    try {
      if (ctx.backupView === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "this node does not serve backups");
      }
      snap = await ctx.backupView(_timeoutMs(call as unknown as AnyCall));
    } catch (e) {
      const err = fail(e);
      backups[err.code]! += 1;
      call.emit("error", err);
      return;
    }
    try {
      let pairs = 0;
      const counted = async function* () {
        for await (const kv of userPairs(snap.view.scan())) {
          pairs++;
          yield kv;
        }
      };
      for await (const data of snapshotChunks(counted())) {
        if (cancelled) return;
        const chunk = { data, crc: crc32(data) >>> 0, index: snap.index, done: false, pairs: 0 };
        if (!call.write(chunk)) {
          await new Promise<void>((resolve) => {
            call.once("drain", resolve);
            call.once("cancelled", resolve);
          });
        }
      }
      if (cancelled) return;
      call.write({ data: EMPTY, crc: 0, index: snap.index, done: true, pairs });
      call.end();
      backups[0]! += 1;
    } catch (e) {
      const err = fail(e);
      backups[err.code]! += 1;
      call.emit("error", err);
    } finally {
      snap.view.release();
    }
  };

  const readBarrier = async (serializable: boolean, call: AnyCall): Promise<void> => {
    if (serializable || ctx.unsafeLocalReads) return;
    await ctx.driver.readBarrier(_timeoutMs(call));
  };

  return {
    Ping: unary<PingRequest, PingResponse>("Ping", (req) => ({
      reply: req.message ? req.message : "pong",
    })),

    // Put, Get and Delete are written without `async` (their promise chains are what every
    // request allocates: an async function adds its own promise and resume closures).
    Put: unary<PutRequest, PutResponse>("Put", (req, call) => {
      const key = _checkKey(req.key);
      const value = _checkValue(req.value);
      const full = ctx.spaceRefusal?.();
      if (full !== undefined) throw new RpcError(grpc.status.RESOURCE_EXHAUSTED, full);
      return write({
        op: "put",
        key,
        value,
        clientId: _clientId(req.client_id, req.seq),
        seq: _seq(req.seq),
      }, call).then(_putAnswer);
    }),

    Get: unary<GetRequest, GetResponse>("Get", (req, call) => {
      const key = _checkKey(req.key);
      if (req.serializable === true || ctx.unsafeLocalReads) return _getAnswer(ctx.sm.get(key));
      return ctx.driver.readBarrier(_timeoutMs(call)).then(() => _getAnswer(ctx.sm.get(key)));
    }),

    Delete: unary<DeleteRequest, DeleteResponse>("Delete", (req, call) => {
      const key = _checkKey(req.key);
      return write({
        op: "delete",
        key,
        clientId: _clientId(req.client_id, req.seq),
        seq: _seq(req.seq),
      }, call).then(_deleteAnswer);
    }),

    Scan: unary<ScanRequest, ScanResponse>("Scan", async (req, call) => {
      const prefix = _checkBound(req.prefix, "prefix");
      const start = _checkBound(req.start, "start");
      const end = _checkBound(req.end, "end");
      const limit = Number(req.limit ?? 0);
      await readBarrier(req.serializable === true, call);
      const { pairs, more } = ctx.sm.scan({
        prefix,
        start,
        end,
        limit: Number.isSafeInteger(limit) && limit > 0 ? limit : 0,
        maxBytes: MAX_SCAN_BYTES,
      });
      return { pairs: pairs as KeyValue[], more };
    }),

    DeleteRange: unary<DeleteRangeRequest, DeleteRangeResponse>(
      "DeleteRange",
      async (req, call) => {
        const { start, end } = _deleteRangeBounds(req);
        const limit = ctx.maxDeleteRangeKeys ?? DELETE_RANGE_DEFAULT_LIMIT;
        const { result, index } = await write({
          op: "deleteRange",
          start,
          end,
          limit,
          clientId: _clientId(req.client_id, req.seq),
          seq: _seq(req.seq),
        }, call);
        if (result.kind === "deleteRange" && result.overLimit) {
          throw new RpcError(
            grpc.status.RESOURCE_EXHAUSTED,
            `the range holds more than ${limit} keys, the most one DeleteRange ` +
              `deletes; nothing was deleted (delete it in smaller ranges)`,
          );
        }
        return { deleted: result.kind === "deleteRange" ? result.deleted : 0, index };
      },
    ),

    CompareAndSwap: unary<CompareAndSwapRequest, CompareAndSwapResponse>(
      "CompareAndSwap",
      async (req, call) => {
        const key = _checkKey(req.key);
        const expected = _checkValue(req.expected, "expected");
        const value = _checkValue(req.value);
        const full = req.delete === true ? undefined : ctx.spaceRefusal?.();
        if (full !== undefined) throw new RpcError(grpc.status.RESOURCE_EXHAUSTED, full);
        const { result, index } = await write({
          op: "cas",
          key,
          expected,
          expectAbsent: req.expect_absent === true,
          value,
          del: req.delete === true,
          clientId: _clientId(req.client_id, req.seq),
          seq: _seq(req.seq),
        }, call);
        if (result.kind !== "cas") return { success: true, found: true, current: EMPTY, index };
        return { success: result.success, found: result.found, current: result.current, index };
      },
    ),

    Status: unary<unknown, StatusResponse>("Status", () => ctx.status()),

    Backup: (call: grpc.ServerWritableStream<unknown, BackupChunk>) => {
      void backup(call);
    },

    MemberList: unary<unknown, MemberListResponse>("MemberList", () => ({
      members: ctx.members(),
      leader_id: ctx.driver.leader,
    })),

    MemberAdd: unary<MemberAddRequest, MemberChangeResponse>("MemberAdd", (req) => {
      if (ctx.memberAdd === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "not supported");
      }
      return ctx.memberAdd(req);
    }),
    MemberPromote: unary<MemberIdRequest, MemberChangeResponse>("MemberPromote", (req) => {
      if (ctx.memberPromote === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "not supported");
      }
      return ctx.memberPromote(req);
    }),
    MemberRemove: unary<MemberIdRequest, MemberChangeResponse>("MemberRemove", (req) => {
      if (ctx.memberRemove === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "not supported");
      }
      return ctx.memberRemove(req);
    }),
    TransferLeader: unary<MemberIdRequest, TransferLeaderResponse>("TransferLeader", (req) => {
      if (ctx.transferLeader === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "not supported");
      }
      return ctx.transferLeader(req);
    }),
    Defragment: unary<unknown, DefragmentResponse>("Defragment", () => {
      if (ctx.defragment === undefined) {
        throw new RpcError(grpc.status.UNIMPLEMENTED, "this node does not defragment");
      }
      return ctx.defragment();
    }),
  };
}
