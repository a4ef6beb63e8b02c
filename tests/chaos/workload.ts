/**
 * The chaos workload: concurrent clients running put / get / delete / compare-and-swap on a few
 * keys with unique values, every operation recorded in a {@linkcode History}.
 *
 * Each client runs one operation at a time, each a single RPC with a deadline (unless `retries`
 * asks to resend a failed one, unchanged, to another node), sent to the leader it believes in
 * (writes, mostly) or to a random node (reads, and some writes, so forwarding and follower reads
 * are exercised). Outcomes:
 * - a reply → `ok` (a compare-and-swap whose comparison failed is `ok` with `success: false`);
 * - errors only → reads: `fail` (a read has no effect either way); writes: `unknown` if any
 *   attempt may have been applied ({@linkcode classifyWriteError}), else `fail`.
 *
 * Keys rotate every `keyGenerationMs` (`k<generation>-<slot>`), keeping each key's history short
 * enough for the checker even in long runs.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { History, Op } from "../linearizability/history.ts";
import { classifyWriteError, type RawClient } from "./raw_client.ts";
import type { Rng } from "./rng.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Shared view of who leads, updated by replies, hints and the nemesis. */
export class LeaderGuess {
  id: number | undefined;
  /** Maps a hint (an id, a node address or a proxy address) to a member id. */
  resolve: (hint: string) => number | undefined;

  constructor(resolve: (hint: string) => number | undefined) {
    this.resolve = resolve;
  }

  /** Takes a leader hint from an error, if it names a member. */
  hint(h: string | undefined): void {
    if (h === undefined) return;
    const id = this.resolve(h);
    if (id !== undefined) this.id = id;
  }
}

/** Options of {@linkcode runWorkload}. */
export interface WorkloadOptions {
  client: RawClient;
  nodeIds: number[];
  history: History;
  /** Time origin (performance.now() at the start of the run). */
  t0: number;
  rng: Rng;
  leader: LeaderGuess;
  /** Number of concurrent clients (default 10). */
  clients?: number;
  /** Keys per generation (default 3). */
  keys?: number;
  /** Per-operation deadline (default 1500 ms). */
  opTimeoutMs?: number;
  /** New keys every this many ms (default 30 000). */
  keyGenerationMs?: number;
  /**
   * Retries of a failed operation, each to another node with the same request (default 0: one
   * attempt). Retried writes carry the same client id and sequence number.
   */
  retries?: number;
  /** Pause between a client's operations (default 0). */
  thinkMs?: number;
  /** Stops the clients (they finish their current operation). */
  signal: AbortSignal;
}

/** Every key the workload used (for the final reads). */
export function usedKeys(history: History): string[] {
  return [...new Set(history.ops.map((o) => o.key))].sort();
}

/** Runs the clients until `signal` aborts; ops are appended to `history.ops`. */
export async function runWorkload(opts: WorkloadOptions): Promise<void> {
  const n = opts.clients ?? 10;
  const workers: Promise<void>[] = [];
  let nextId = opts.history.ops.reduce((m, o) => Math.max(m, o.id + 1), 0);
  const newId = () => nextId++;
  for (let c = 0; c < n; c++) {
    workers.push(_clientLoop(c, opts, newId, opts.rng.fork(c + 1)));
  }
  await Promise.all(workers);
}

async function _clientLoop(
  client: number,
  opts: WorkloadOptions,
  newId: () => number,
  rng: Rng,
): Promise<void> {
  const keys = opts.keys ?? 3;
  const genMs = opts.keyGenerationMs ?? 30_000;
  const timeout = opts.opTimeoutMs ?? 1500;
  // This client's last known value per key, to make compare-and-swaps likely to succeed.
  const known = new Map<string, string | null>();
  let counter = 0;
  while (!opts.signal.aborted) {
    const now = performance.now() - opts.t0;
    const key = `k${Math.floor(now / genMs)}-${rng.int(keys)}`;
    const roll = rng.next();
    const f: Op["f"] = roll < 0.4 ? "get" : roll < 0.7 ? "put" : roll < 0.9 ? "cas" : "delete";
    const node = f === "get" || rng.next() < 0.3 || opts.leader.id === undefined
      ? rng.pick(opts.nodeIds)
      : opts.leader.id;
    const value = `c${client}-${counter++}`;
    const op: Op = {
      id: newId(),
      client,
      key,
      f,
      invoke: 0,
      complete: 0,
      outcome: "unknown",
      node,
    };
    if (f === "put") op.value = value;
    if (f === "cas") {
      op.expected = known.has(key) ? known.get(key)! : (rng.next() < 0.5 ? null : value);
      op.value = value;
    }
    await _execute(op, opts, timeout);
    opts.history.ops.push(op);
    if (op.outcome === "ok") {
      if (f === "get") known.set(key, op.read ?? null);
      if (f === "put") known.set(key, value);
      if (f === "delete") known.set(key, null);
      if (f === "cas") {
        if (op.success) known.set(key, value);
        else if (op.current !== undefined) known.set(key, op.current);
      }
    }
    // Back off a little after an error, so a client does not spin on a dead node.
    const pause = (opts.thinkMs ?? 0) + (op.outcome === "ok" ? 0 : 50);
    if (pause > 0) await new Promise((r) => setTimeout(r, pause));
  }
}

/** Runs `op` (fills invoke, complete, outcome and results). */
async function _execute(op: Op, opts: WorkloadOptions, timeoutMs: number): Promise<void> {
  const key = enc.encode(op.key);
  let method: string;
  let req: Record<string, unknown>;
  // Odd clients use ids past 2^53 that are all one number as doubles (exactly-once records kept
  // as doubles would merge them, and a write answered from another client's record would be lost:
  // the checker would see it); even clients small ones. A decimal string: protobufjs encodes it
  // exactly.
  const clientId = op.client % 2 === 1
    ? (2n ** 62n + BigInt(op.client)).toString()
    : 1_000_000 + op.client;
  switch (op.f) {
    case "get":
      method = "Get";
      req = { key, serializable: false };
      break;
    case "put":
      method = "Put";
      req = { key, value: enc.encode(op.value!), client_id: clientId, seq: op.id + 1 };
      break;
    case "delete":
      // Every other delete goes as a DeleteRange over exactly this key, [key, key + 0x00): the
      // same operation for the checker, through the range path (its apply and exactly-once).
      if (op.id % 2 === 0) {
        method = "Delete";
        req = { key, client_id: clientId, seq: op.id + 1 };
      } else {
        method = "DeleteRange";
        const end = new Uint8Array(key.length + 1);
        end.set(key);
        req = { start: key, end, client_id: clientId, seq: op.id + 1 };
      }
      break;
    case "cas":
      method = "CompareAndSwap";
      req = {
        key,
        expected: op.expected === null ? new Uint8Array(0) : enc.encode(op.expected!),
        expect_absent: op.expected === null,
        value: enc.encode(op.value!),
        delete: false,
        client_id: clientId,
        seq: op.id + 1,
      };
      break;
  }
  op.invoke = performance.now() - opts.t0;
  // Attempts: one, or with `retries`, more to other nodes with the same request (and so the
  // same client id and sequence number: the cluster must apply the write at most once).
  let r = await opts.client.call(op.node!, method, req, timeoutMs);
  let possiblySent = false;
  const errors: string[] = [];
  for (let attempt = 0; !r.ok; attempt++) {
    errors.push(`${grpc.status[r.code] ?? r.code}: ${r.details}`);
    if (op.f !== "get" && classifyWriteError(r.code, r.details) === "unknown") possiblySent = true;
    if (r.code === grpc.status.UNAVAILABLE) {
      if (r.leaderHint !== undefined) opts.leader.hint(r.leaderHint);
      else if (opts.leader.id === op.node) opts.leader.id = undefined;
    }
    if (attempt >= (opts.retries ?? 0) || opts.signal.aborted) break;
    await new Promise((res) => setTimeout(res, 50));
    const next = opts.leader.id !== undefined && opts.leader.id !== op.node
      ? opts.leader.id
      : opts.nodeIds[(opts.nodeIds.indexOf(op.node!) + 1) % opts.nodeIds.length]!;
    op.node = next;
    r = await opts.client.call(next, method, req, timeoutMs);
  }
  op.complete = performance.now() - opts.t0;
  if (errors.length > 0) op.error = errors.join(" | ");
  if (!r.ok) {
    op.outcome = op.f === "get" ? "fail" : possiblySent ? "unknown" : "fail";
    return;
  }
  const res = r.res;
  switch (op.f) {
    case "get":
      op.outcome = "ok";
      op.read = res.found ? dec.decode(res.value as Uint8Array) : null;
      break;
    case "put":
    case "delete":
      if (res.success === false && op.f === "put") {
        op.outcome = "unknown";
        op.error = "success=false";
      } else op.outcome = "ok";
      break;
    case "cas":
      op.outcome = "ok";
      op.success = res.success === true;
      if (!op.success) op.current = res.found ? dec.decode(res.current as Uint8Array) : null;
      break;
  }
  if (op.f !== "get") opts.leader.id ??= op.node;
}

/**
 * Reads every key through the leader (linearizable reads, retried until one succeeds or
 * `timeoutMs` passes) and records each successful read in the history. Returns the keys that
 * could not be read.
 */
export async function finalReads(
  opts: Pick<WorkloadOptions, "client" | "history" | "t0" | "leader" | "nodeIds">,
  timeoutMs: number,
): Promise<string[]> {
  const keys = usedKeys(opts.history);
  let nextId = opts.history.ops.reduce((m, o) => Math.max(m, o.id + 1), 0);
  const failed: string[] = [];
  const deadline = performance.now() + timeoutMs;
  let rr = 0;
  for (const key of keys) {
    let done = false;
    while (!done && performance.now() < deadline) {
      const node = opts.leader.id ?? opts.nodeIds[rr++ % opts.nodeIds.length]!;
      const invoke = performance.now() - opts.t0;
      const r = await opts.client.call(
        node,
        "Get",
        { key: enc.encode(key), serializable: false },
        2000,
      );
      const complete = performance.now() - opts.t0;
      if (r.ok) {
        opts.history.ops.push({
          id: nextId++,
          client: 1000,
          key,
          f: "get",
          invoke,
          complete,
          outcome: "ok",
          read: r.res.found ? dec.decode(r.res.value as Uint8Array) : null,
          node,
        });
        done = true;
      } else {
        if (r.leaderHint !== undefined) opts.leader.hint(r.leaderHint);
        else opts.leader.id = undefined;
        await new Promise((res) => setTimeout(res, 100));
        if (opts.leader.id === undefined) rr++;
      }
    }
    if (!done) failed.push(key);
  }
  return failed;
}
