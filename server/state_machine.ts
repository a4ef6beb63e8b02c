/**
 * The replicated state machine: applies committed log entries to the `KVEngine`.
 *
 * Durability comes from the Raft log (the engine is opened with `wal: false`: no WAL of its own,
 * storage/wal_format.md): every apply batch is ONE atomic engine write that carries the user
 * operations, the exactly-once table updates (client id → last seq + result, Raft thesis §6.3)
 * and the new applied index. After a crash the engine holds a prefix of the applied batches, so a
 * restart re-applies exactly the committed entries after the persisted applied index (the log
 * keeps them: server/node.ts states the invariant).
 *
 * Key layout inside the engine (never change these values; they reach the disk):
 *
 * ```
 * 0x01 userKey                    user data
 * 0x00 "applied"                  version:u8 (=1) index:v term:v
 * 0x00 "members"                  version:u8 (=1) count:v (id:v kind:u8 address:bytes)*  kind 0 voter, 1 learner
 * 0x00 "d" clientId:f64le         seq:v result [index:v]  ids below 2^53 (result: raft/command.ts)
 * 0x00 "D" clientId:u64le         seq:v result index:v    ids from 2^53
 * ```
 *
 * An exactly-once record remembers a client's last applied write, and `index`, the log index that
 * wrote it (records written before it was added read as index 0). Records expire: when entry
 * `k * DEDUP_SWEEP_EVERY` is applied, before it, every record last written at or below that index
 * minus {@linkcode DEDUP_WINDOW} is deleted. The sweep depends only on the log, so every replica
 * deletes the same records at the same point of it, whatever batches it applies in. A retry is
 * therefore recognised if fewer than `DEDUP_WINDOW` entries were committed since its client's
 * last new write (a client gives up long before that); without expiry the table, and the memory
 * it takes, would grow with every client that ever wrote.
 *
 * Before the "D" records, every id was kept as a double, so two ids equal in their top 53 bits
 * shared one record (raft/command.ts `ClientId`); a "d" record above 2^53 from then is loaded as
 * the id its double holds.
 *
 * @example
 * ```ts ignore
 * import { KVEngine } from "../storage/mod.ts";
 * import { StateMachine } from "./state_machine.ts";
 * const sm = await StateMachine.open(await KVEngine.open("./data/x", { wal: false }));
 * console.log(sm.applied);
 * ```
 *
 * @module
 */
import {
  type ClientId,
  clientIdOf,
  clientIdOfDouble,
  CommandCodecError,
  type CommandResult,
  decodeBatch,
  decodeResult,
  encodeResult,
} from "../raft/command.ts";
import type { Command } from "../raft/command.ts";
import { compareBytes, keyString } from "../storage/coding.ts";
import { decodeConfChange } from "../raft/codec.ts";
import { type ConfChange, type Entry, EntryType } from "../raft/types.ts";

/** One operation of an atomic engine batch (storage/engine.ts `BatchOp`). */
export interface EngineOp {
  type: "put" | "delete";
  key: Uint8Array;
  value?: Uint8Array;
}

/** A key and a value. */
export interface EngineKeyValue {
  key: Uint8Array;
  value: Uint8Array;
}

/** Scan bounds (storage/engine.ts `ScanOptions`). */
export interface EngineScan {
  prefix?: Uint8Array;
  start?: Uint8Array;
  end?: Uint8Array;
  limit?: number;
  /** Keys only (values given as empty). */
  keysOnly?: boolean;
}

/** What the state machine needs of `KVEngine` (storage/mod.ts); a test may pass a fake. */
export interface SmEngine {
  write(batch: EngineOp[]): Promise<void>;
  getSync(key: Uint8Array): Uint8Array | undefined;
  scanSync(options?: EngineScan): EngineKeyValue[];
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** A member of the configuration as the state machine records it. */
export interface MemberRecord {
  id: number;
  address: string;
  learner: boolean;
}

/** The outcome of one applied command that the local node proposed. */
export interface Applied {
  cmd: Command;
  result: CommandResult;
  index: number;
}

/** A membership change applied at `index`. */
export interface AppliedConfChange {
  cc: ConfChange;
  index: number;
}

const USER = 0x01;
const META = 0x00;
const VERSION = 1;
const _enc = new TextEncoder();
const _dec = new TextDecoder();
const APPLIED_KEY = _meta("applied");
const MEMBERS_KEY = _meta("members");
const DEDUP_PREFIX = _meta("d");

/**
 * Log entries after which a client's exactly-once record expires (see the module doc). Part of
 * the replicated state machine: every replica must use the same value.
 */
export const DEDUP_WINDOW = 1_000_000;
/** Entries between two sweeps of expired exactly-once records. */
export const DEDUP_SWEEP_EVERY = 4096;
/** An exactly-once record: a client's last applied write and the log index that applied it. */
interface _Dedup {
  seq: number;
  result: CommandResult;
  index: number;
}
const DEDUP_U64_PREFIX = _meta("D");

function _meta(name: string): Uint8Array {
  const b = _enc.encode(name);
  const out = new Uint8Array(b.length + 1);
  out[0] = META;
  out.set(b, 1);
  return out;
}

/**
 * The user keys and values of a scan over the whole engine (as a snapshot view gives them), with
 * the namespace byte removed; internal keys are left out.
 */
export async function* userPairs(
  all: AsyncIterable<EngineKeyValue>,
): AsyncIterable<EngineKeyValue> {
  for await (const kv of all) {
    if (kv.key[0] === USER) yield { key: kv.key.subarray(1), value: kv.value };
  }
}

/** Prefixes a user key with the user namespace byte. */
export function userKey(key: Uint8Array): Uint8Array {
  const out = new Uint8Array(key.length + 1);
  out[0] = USER;
  out.set(key, 1);
  return out;
}

function _dedupKey(clientId: ClientId): Uint8Array {
  const out = new Uint8Array(DEDUP_PREFIX.length + 8);
  const view = new DataView(out.buffer);
  if (typeof clientId === "bigint") {
    out.set(DEDUP_U64_PREFIX, 0);
    view.setBigUint64(DEDUP_U64_PREFIX.length, clientId, true);
  } else {
    out.set(DEDUP_PREFIX, 0);
    view.setFloat64(DEDUP_PREFIX.length, clientId, true);
  }
  return out;
}

/**
 * The "d" key a node before the "D" records used for a large id, when the id is a double (a
 * record loaded from such a key always is): updating or expiring the id deletes it too, or a
 * restart would load it again.
 */
function _legacyDedupKey(clientId: ClientId): Uint8Array | undefined {
  if (typeof clientId !== "bigint") return undefined;
  const d = Number(clientId);
  if (BigInt(d) !== clientId) return undefined;
  const out = new Uint8Array(DEDUP_PREFIX.length + 8);
  out.set(DEDUP_PREFIX, 0);
  new DataView(out.buffer).setFloat64(DEDUP_PREFIX.length, d, true);
  return out;
}

function _varint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

function _readVarint(b: Uint8Array, pos: { p: number }): number {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    const x = b[pos.p++];
    if (x === undefined) throw new CommandCodecError("state machine: truncated varint");
    n += (x & 0x7f) * mul;
    if (x < 0x80) return n;
    mul *= 128;
  }
  throw new CommandCodecError("state machine: varint too long");
}

/** Encodes the member table (meta value). */
export function encodeMembers(members: readonly MemberRecord[]): Uint8Array {
  const out: number[] = [VERSION];
  _varint(out, members.length);
  for (const m of members) {
    _varint(out, m.id);
    out.push(m.learner ? 1 : 0);
    const a = _enc.encode(m.address);
    _varint(out, a.length);
    for (const x of a) out.push(x);
  }
  return new Uint8Array(out);
}

/** Decodes {@linkcode encodeMembers}. */
export function decodeMembers(b: Uint8Array): MemberRecord[] {
  if (b[0] !== VERSION) throw new CommandCodecError("members: bad version");
  const pos = { p: 1 };
  const n = _readVarint(b, pos);
  const out: MemberRecord[] = [];
  for (let i = 0; i < n; i++) {
    const id = _readVarint(b, pos);
    const learner = b[pos.p++] === 1;
    const len = _readVarint(b, pos);
    const address = _dec.decode(b.subarray(pos.p, pos.p + len));
    pos.p += len;
    out.push({ id, address, learner });
  }
  return out;
}

function _eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Options of a read scan over user keys. */
export interface UserScan {
  prefix?: Uint8Array;
  start?: Uint8Array;
  end?: Uint8Array;
  /** 0 or absent: no count limit. */
  limit?: number;
  /** Stop (with `more`) after this many key+value bytes. */
  maxBytes?: number;
}

/** A committed entry this state machine cannot apply; the node must stop. */
export class StateMachineError extends Error {
  override name = "StateMachineError";
}

/** The key-value state machine over a {@linkcode SmEngine}. */
export class StateMachine {
  readonly #engine: SmEngine;
  #applied = 0;
  #appliedTerm = 0;
  #members: MemberRecord[] = [];
  /** Ordered by `index` (an update re-inserts), so a sweep stops at the first live record. */
  readonly #dedup = new Map<ClientId, _Dedup>();
  readonly #dedupWindow: number;
  readonly #dedupSweepEvery: number;
  /**
   * Awaited once per apply before the first DeleteRange in it, whose key enumeration holds the
   * event loop for up to a few hundred milliseconds: the node sends what it must send first (a
   * leader, the new commit index, so that followers apply alongside it rather than after it).
   */
  beforeLongApply: (() => Promise<void>) | undefined;
  readonly #onError: (msg: string) => void;

  private constructor(
    engine: SmEngine,
    onError: (msg: string) => void,
    window: number,
    every: number,
  ) {
    this.#engine = engine;
    this.#onError = onError;
    this.#dedupWindow = window;
    this.#dedupSweepEvery = every;
  }

  /**
   * Loads the applied index, members and exactly-once table from `engine`. `dedupWindow` and
   * `dedupSweepEvery` (default {@linkcode DEDUP_WINDOW}, {@linkcode DEDUP_SWEEP_EVERY}) are for
   * tests: replicas that differ in them diverge.
   */
  static open(
    engine: SmEngine,
    opts: {
      log?: (msg: string) => void;
      dedupWindow?: number;
      dedupSweepEvery?: number;
    } = {},
  ): StateMachine {
    const sm = new StateMachine(
      engine,
      opts.log ?? ((m) => console.error(m)),
      opts.dedupWindow ?? DEDUP_WINDOW,
      opts.dedupSweepEvery ?? DEDUP_SWEEP_EVERY,
    );
    sm.#load();
    return sm;
  }

  /** Re-reads everything from the engine (after its content was replaced by a snapshot). */
  reload(): void {
    this.#load();
  }

  #load(): void {
    const a = this.#engine.getSync(APPLIED_KEY);
    const m = this.#engine.getSync(MEMBERS_KEY);
    this.#members = m === undefined ? [] : decodeMembers(m);
    this.#dedup.clear();
    this.#applied = 0;
    this.#appliedTerm = 0;
    if (a !== undefined) {
      const pos = { p: 1 };
      this.#applied = _readVarint(a, pos);
      this.#appliedTerm = _readVarint(a, pos);
    }
    const loaded = new Map<ClientId, _Dedup>();
    for (const prefix of [DEDUP_PREFIX, DEDUP_U64_PREFIX]) {
      for (const kv of this.#engine.scanSync({ prefix })) {
        if (kv.key.length !== prefix.length + 8) continue;
        const view = new DataView(kv.key.buffer, kv.key.byteOffset, kv.key.byteLength);
        let clientId: ClientId;
        try {
          clientId = prefix === DEDUP_PREFIX
            ? clientIdOfDouble(view.getFloat64(prefix.length, true))
            : clientIdOf(view.getBigUint64(prefix.length, true))!;
        } catch (e) {
          this.#onError(`exactly-once record skipped: ${e instanceof Error ? e.message : e}`);
          continue;
        }
        const pos = { p: 0 };
        const seq = _readVarint(kv.value, pos);
        const result = decodeResult(kv.value.subarray(pos.p));
        pos.p += encodeResult(result).length;
        const index = pos.p < kv.value.length ? _readVarint(kv.value, pos) : 0;
        // A "d" record of a rounded id and a "D" record of the same id: the later seq wins.
        const have = loaded.get(clientId);
        if (have === undefined || have.seq < seq) loaded.set(clientId, { seq, result, index });
      }
    }
    const byIndex = [...loaded].sort((x, y) => x[1].index - y[1].index);
    for (const [id, d] of byIndex) this.#dedup.set(id, d);
  }

  /** Index of the last applied entry (persisted). */
  get applied(): number {
    return this.#applied;
  }

  /** Term of the last applied entry. */
  get appliedTerm(): number {
    return this.#appliedTerm;
  }

  /** The member table as of the applied index (empty until the first membership is recorded). */
  get members(): readonly MemberRecord[] {
    return this.#members;
  }

  /** Number of clients in the exactly-once table. */
  get dedupSize(): number {
    return this.#dedup.size;
  }

  /** The engine under this state machine. */
  get engine(): SmEngine {
    return this.#engine;
  }

  /** Records the initial membership (a fresh bootstrap member), persisted with the applied index. */
  async setMembers(members: readonly MemberRecord[]): Promise<void> {
    this.#members = members.map((m) => ({ ...m }));
    await this.#engine.write([{ type: "put", key: MEMBERS_KEY, value: encodeMembers(members) }]);
  }

  /** Reads a user key from local state. */
  get(key: Uint8Array): Uint8Array | undefined {
    return this.#engine.getSync(userKey(key));
  }

  /** Scans user keys from local state; `more` says a limit cut the result. */
  scan(opts: UserScan): { pairs: EngineKeyValue[]; more: boolean } {
    const prefix = userKey(opts.prefix ?? new Uint8Array(0));
    const scan: EngineScan = { prefix };
    if (opts.start !== undefined && opts.start.length > 0) scan.start = userKey(opts.start);
    if (opts.end !== undefined && opts.end.length > 0) scan.end = userKey(opts.end);
    const limit = opts.limit ?? 0;
    if (limit > 0) scan.limit = limit + 1;
    const raw = this.#engine.scanSync(scan);
    const pairs: EngineKeyValue[] = [];
    const maxBytes = opts.maxBytes ?? Infinity;
    let bytes = 0;
    let more = false;
    for (const kv of raw) {
      if ((limit > 0 && pairs.length >= limit) || bytes >= maxBytes) {
        more = true;
        break;
      }
      pairs.push({ key: kv.key.subarray(1), value: kv.value });
      bytes += kv.key.length + kv.value.length;
    }
    return { pairs, more };
  }

  /**
   * Applies committed entries (in order; those at or below the applied index are skipped) as one
   * atomic engine write. Returns the results of commands whose (origin, epoch) is `mine`, and the
   * membership changes to hand to the raft core.
   */
  async apply(
    entries: readonly Entry[],
    mine: { origin: number; epoch: number },
  ): Promise<{ results: Applied[]; confChanges: AppliedConfChange[] }> {
    const results: Applied[] = [];
    const confChanges: AppliedConfChange[] = [];
    const ops: EngineOp[] = [];
    const batch = new _Batch(ops, this.#engine);
    const dedupDirty = new Set<ClientId>();
    let membersDirty = false;
    let last: Entry | undefined;
    let announced = false;
    // Every entry is decoded before anything changes. One that does not decode stops the apply
    // (the node fails) rather than being skipped: a replica that skipped a committed entry would
    // hold other data than the rest from then on. Entries are checksummed, so this is a format
    // this node does not know, written by a newer one, or a bug.
    const decodedAll: (Command[] | ConfChange | undefined)[] = [];
    for (const e of entries) {
      if (e.index <= this.#applied) {
        decodedAll.push(undefined);
        continue;
      }
      try {
        decodedAll.push(
          e.type === EntryType.ConfChange ? decodeConfChange(e.data) : decodeBatch(e.data),
        );
      } catch (err) {
        const what = e.type === EntryType.ConfChange ? "membership change" : "commands";
        const why = err instanceof Error ? err.message : String(err);
        throw new StateMachineError(
          `entry ${e.index} (${what}) does not decode: ${why}. A node of a newer version may ` +
            `have written it: upgrade this node`,
        );
      }
    }
    let pos = 0;
    for (const e of entries) {
      pos++;
      if (e.index <= this.#applied) {
        // Applied before a restart whose persisted commit index lagged: the raft core still
        // needs the membership changes in it (the state machine already has them).
        if (e.type === EntryType.ConfChange) {
          try {
            confChanges.push({ cc: decodeConfChange(e.data), index: e.index });
          } catch {
            // skipped when it was first applied (by a version that skipped such entries)
          }
        }
        continue;
      }
      last = e;
      if (e.index % this.#dedupSweepEvery === 0) this.#sweepDedup(e.index, ops, dedupDirty);
      const decoded = decodedAll[pos - 1]!;
      if (e.type === EntryType.ConfChange) {
        const cc = decoded as ConfChange;
        confChanges.push({ cc, index: e.index });
        this.#applyMember(cc);
        membersDirty = true;
        continue;
      }
      for (const cmd of decoded as Command[]) {
        let result: CommandResult;
        const dedup = cmd.clientId !== 0 && cmd.seq > 0;
        const dup = dedup ? this.#dedup.get(cmd.clientId) : undefined;
        if (dup !== undefined && cmd.seq <= dup.seq) {
          // A retry of an applied request: answer what the first application answered.
          result = cmd.seq === dup.seq ? dup.result : _okFor(cmd);
        } else {
          if (cmd.op === "deleteRange" && !announced && this.beforeLongApply !== undefined) {
            announced = true;
            await this.beforeLongApply();
          }
          result = this.#applyOne(cmd, batch);
          if (dedup && cmd.op !== "barrier") {
            this.#dedup.delete(cmd.clientId); // re-inserted last: the map stays in index order
            this.#dedup.set(cmd.clientId, { seq: cmd.seq, result, index: e.index });
            dedupDirty.add(cmd.clientId);
          }
        }
        if (cmd.origin === mine.origin && cmd.epoch === mine.epoch) {
          results.push({ cmd, result, index: e.index });
        }
      }
    }
    if (last === undefined) return { results, confChanges };
    for (const id of dedupDirty) {
      const d = this.#dedup.get(id)!;
      const head: number[] = [];
      _varint(head, d.seq);
      const r = encodeResult(d.result);
      const tail: number[] = [];
      _varint(tail, d.index);
      const v = new Uint8Array(head.length + r.length + tail.length);
      v.set(head, 0);
      v.set(r, head.length);
      v.set(tail, head.length + r.length);
      ops.push({ type: "put", key: _dedupKey(id), value: v });
      const legacy = _legacyDedupKey(id);
      if (legacy !== undefined) ops.push({ type: "delete", key: legacy });
    }
    if (membersDirty) {
      ops.push({ type: "put", key: MEMBERS_KEY, value: encodeMembers(this.#members) });
    }
    const a: number[] = [VERSION];
    _varint(a, last.index);
    _varint(a, last.term);
    ops.push({ type: "put", key: APPLIED_KEY, value: new Uint8Array(a) });
    await this.#engine.write(ops);
    this.#applied = last.index;
    this.#appliedTerm = last.term;
    return { results, confChanges };
  }

  /**
   * Deletes the exactly-once records last written at or below `index - window` (before entry
   * `index` is applied; see the module doc). The table is in index order, so this stops at the
   * first record it keeps.
   */
  #sweepDedup(index: number, ops: EngineOp[], dirty: Set<ClientId>): void {
    const limit = index - this.#dedupWindow;
    for (const [id, d] of this.#dedup) {
      if (d.index > limit) break;
      this.#dedup.delete(id);
      dirty.delete(id);
      ops.push({ type: "delete", key: _dedupKey(id) });
      const legacy = _legacyDedupKey(id);
      if (legacy !== undefined) ops.push({ type: "delete", key: legacy });
    }
  }

  #applyMember(cc: ConfChange): void {
    const others = this.#members.filter((m) => m.id !== cc.nodeId);
    if (cc.type === "removeNode") {
      this.#members = others;
      return;
    }
    const prev = this.#members.find((m) => m.id === cc.nodeId);
    const address = cc.context.length > 0 ? _dec.decode(cc.context) : prev?.address ?? "";
    others.push({ id: cc.nodeId, address, learner: cc.type === "addLearner" });
    others.sort((x, y) => x.id - y.id);
    this.#members = others;
  }

  #applyOne(cmd: Command, batch: _Batch): CommandResult {
    switch (cmd.op) {
      case "put":
        // No copy of the value: the engine copies it into its memtable, and an entry's data (of
        // which `cmd.value` is a view) is never modified once appended (raft/log_store.ts).
        batch.put(userKey(cmd.key), cmd.value);
        return _OK;
      case "delete": {
        const k = userKey(cmd.key);
        const existed = batch.read(k) !== undefined;
        batch.del(k);
        return { kind: "delete", existed };
      }
      case "cas": {
        const k = userKey(cmd.key);
        const cur = batch.read(k);
        const ok = cmd.expectAbsent
          ? cur === undefined
          : cur !== undefined && _eq(cur, cmd.expected);
        if (!ok) {
          return {
            kind: "cas",
            success: false,
            found: cur !== undefined,
            current: cur ?? new Uint8Array(0),
          };
        }
        if (cmd.del) batch.del(k);
        else batch.put(k, cmd.value);
        return { kind: "cas", success: true, found: cur !== undefined, current: new Uint8Array(0) };
      }
      case "barrier":
        return _OK;
      case "deleteRange": {
        const limit = cmd.limit;
        const keys = batch.liveKeysIn(
          userKey(cmd.start),
          cmd.end.length > 0 ? userKey(cmd.end) : undefined,
          limit,
        );
        if (keys === undefined) return { kind: "deleteRange", deleted: 0, overLimit: true };
        for (const k of keys) batch.del(k);
        return { kind: "deleteRange", deleted: keys.length, overLimit: false };
      }
    }
  }
}

/** The result of every put and barrier (shared: results are never modified). */
const _OK: CommandResult = Object.freeze({ kind: "ok" as const });

/**
 * The engine operations of one apply batch, and what a command in it reads: its own earlier
 * writes first, then the engine. The key → value map for those reads is only built when a
 * command reads (a delete or a CAS); a batch of puts never makes it.
 */
class _Batch {
  readonly ops: EngineOp[];
  readonly #engine: SmEngine;
  #overlay: Map<string, Uint8Array | null> | undefined;

  constructor(ops: EngineOp[], engine: SmEngine) {
    this.ops = ops;
    this.#engine = engine;
  }

  put(key: Uint8Array, value: Uint8Array): void {
    this.ops.push({ type: "put", key, value });
    this.#overlay?.set(keyString(key), value);
  }

  del(key: Uint8Array): void {
    this.ops.push({ type: "delete", key });
    this.#overlay?.set(keyString(key), null);
  }

  /**
   * The user keys in [start, end) (engine keys; no `end`: to the last user key) that are live
   * after this batch's writes so far: the engine's keys this batch did not write, in key order,
   * then the keys it put, in the order of their last write; the same on every replica, which
   * applies the same entries to the same state. `undefined` when the engine or the result holds
   * more than `limit` of them (only `limit + 1` keys are read).
   */
  liveKeysIn(
    start: Uint8Array,
    end: Uint8Array | undefined,
    limit: number,
  ): Uint8Array[] | undefined {
    const scan = { prefix: _USER_PREFIX, start, end, limit: limit + 1, keysOnly: true };
    const keys: Uint8Array[] = [];
    for (const kv of this.#engine.scanSync(scan)) keys.push(kv.key);
    if (keys.length > limit) return undefined;
    // This batch's own earlier writes in the range, last one per key (usually none).
    let mine: Map<string, EngineOp> | undefined;
    for (const op of this.ops) {
      const k = op.key;
      if (k[0] !== USER || compareBytes(k, start) < 0) continue;
      if (end !== undefined && compareBytes(k, end) >= 0) continue;
      const id = keyString(k);
      mine ??= new Map();
      mine.delete(id); // re-inserted last: the map keeps the order of each key's last write
      mine.set(id, op);
    }
    if (mine === undefined) return keys;
    const written = mine;
    const live = keys.filter((k) => !written.has(keyString(k)));
    for (const op of written.values()) if (op.type === "put") live.push(op.key);
    return live.length > limit ? undefined : live;
  }

  read(key: Uint8Array): Uint8Array | undefined {
    let overlay = this.#overlay;
    if (overlay === undefined) {
      overlay = this.#overlay = new Map();
      for (const op of this.ops) {
        overlay.set(keyString(op.key), op.type === "put" ? op.value ?? null : null);
      }
    }
    const o = overlay.get(keyString(key));
    if (o !== undefined) return o === null ? undefined : o;
    return this.#engine.getSync(key);
  }
}

/** The first byte of every user key, as a scan prefix. */
const _USER_PREFIX = new Uint8Array([USER]);

function _okFor(cmd: Command): CommandResult {
  if (cmd.op === "delete") return { kind: "delete", existed: false };
  if (cmd.op === "deleteRange") return { kind: "deleteRange", deleted: 0, overLimit: false };
  if (cmd.op === "cas") {
    return { kind: "cas", success: true, found: true, current: new Uint8Array(0) };
  }
  return _OK;
}
