/**
 * The compaction worker: runs large compactions on a second core (LevelDB's background
 * thread). The engine posts a {@link CompactionRequest}; the worker merges the input tables and
 * writes synced output tables under temporary names; the engine renames them to table numbers
 * and records them in the manifest (so a crash before that leaves only `*.tmp` files, deleted
 * on open). It also writes level-0 tables: a {@link FlushRequest} carries a copy of a sealed
 * memtable's arena (transferred, not cloned), which the worker walks as the engine would.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { BlockCache } from "./block_cache.ts";
import { ByteWriter } from "./coding.ts";
import { writeCompacted } from "./compaction.ts";
import { CorruptionError, StorageError } from "./errors.ts";
import { DenoFs, type FileSystem, MemFs } from "./fs.ts";
import { type InternalIterator, KIND_PUT, MergingIterator } from "./iterator.ts";
import { MemTable } from "./memtable.ts";
import { type Block, LevelIterator, Table, writeTableFile } from "./sstable.ts";
import type { LevelRanges } from "./compaction.ts";

/** A compaction job. */
export interface CompactionRequest {
  /** Job id, echoed in the reply. */
  id: number;
  /**
   * Input tables of the compacted level, newest data first (level-0 tables newest first), then,
   * unless `run` is given, those of the next level.
   */
  inputs: Array<{ path: string; number: number }>;
  /**
   * The overlapping tables of the next level, in key order (sorted, disjoint), with their key
   * ranges: merged as one input (fewer merge inputs than one per table).
   */
  run?: Array<{ path: string; number: number; smallest: Uint8Array; largest: Uint8Array }>;
  /** Oldest live snapshot. */
  smallestSnapshot: number;
  /** Key ranges of the levels below the output. */
  deeper: LevelRanges[];
  /** Output table target size. */
  splitBytes: number;
  /** Output paths are `${tmpPrefix}${i}.tmp`. */
  tmpPrefix: string;
}

/**
 * A memtable flush job: write the entries of a sealed memtable as one synced level-0 table at
 * `path` (a temporary name the engine renames once the reply arrives).
 */
export interface FlushRequest {
  /** Job kind. */
  kind: "flush";
  /** Job id, echoed in the reply. */
  id: number;
  /**
   * A copy of the memtable's arena ({@link MemTable.copyArena}), transferred to the worker and
   * transferred back in the reply (for the next flush's copy). It may be longer than the
   * arena's used part.
   */
  arena: ArrayBuffer;
  /** Output path (`*.tmp`). */
  path: string;
}

/**
 * A warm-up job: flush and compact synthetic tables in memory (no file is written), so that V8
 * compiles the table-writing and merging code before the first real job. Cold, a node's first
 * flush of a 3–5 MiB memtable came with 150–200 ms of CPU on V8's background threads (compiling,
 * collecting) on top of the job itself, 60–85 ms warmed up; on a loaded 2-core machine that
 * slowed every node's puts for ~200 ms (measured 2026-12-06, bench/PROFILE.md). The engine sends
 * one to every worker it keeps.
 */
export interface WarmUpRequest {
  /** Job kind. */
  kind: "warm";
  /** Job id, echoed in the reply. */
  id: number;
  /** Entries per synthetic table (default {@link WARM_UP_ENTRIES}). */
  entries?: number;
}

/** Entries per synthetic table of a {@link WarmUpRequest}. */
export const WARM_UP_ENTRIES = 6000;

/**
 * Sent by the engine when it closes (no reply): every compaction running on the worker, and any
 * started later, stops at its next pause (every 4,096 entries) or before its next output table,
 * removes the tables it wrote and replies `{ ok: false, kind: "Cancelled" }`. Flushes are not
 * affected. Nothing a compaction wrote is live before the engine installs it, so dropping one
 * loses nothing; it saves close() from waiting for a long merge to finish.
 */
export interface CancelRequest {
  /** Job kind. */
  kind: "cancel";
  /** Unused (no reply). */
  id: number;
}

/** Any job the worker accepts (a request without `kind` is a compaction). */
export type WorkerRequest =
  & (
    | (CompactionRequest & { kind?: "compact" })
    | FlushRequest
    | WarmUpRequest
    | CancelRequest
  )
  & {
    /**
     * When the worker's heap and external memory exceed this many bytes after the job, it runs a
     * full garbage collection before replying, if the process exposes `gc` (V8's `--expose-gc`).
     */
    collectAboveBytes?: number;
  };

/**
 * Table output buffers kept across jobs. Built in a fresh buffer that doubles as it fills, each
 * table would leave two to four times its size of dead ArrayBuffers, which only a full GC frees
 * (external memory does not count toward the heap limit that schedules GCs), so the worker's
 * RSS would grow by tens of MiB during a fill. A flush is sized from its arena (a table is smaller
 * than the arena it comes from), a compaction from its split size: one allocation, then reuse.
 * Jobs run interleaved, so up to {@link _POOL_KEEP} buffers are kept; an idle worker is
 * terminated, which frees them.
 */
const _pool: ByteWriter[] = [];
const _POOL_KEEP = 2;

/** A pooled buffer of at least `bytes` (the smallest that fits), or a new one. */
function _takeWriter(bytes: number): ByteWriter {
  let best = -1;
  for (let i = 0; i < _pool.length; i++) {
    const n = _pool[i]!.buf.length;
    if (n >= bytes && (best < 0 || n < _pool[best]!.buf.length)) best = i;
  }
  if (best < 0) return new ByteWriter(bytes);
  return _pool.splice(best, 1)[0]!;
}

/** Returns a buffer to the pool, dropping the smallest beyond {@link _POOL_KEEP}. */
function _giveWriter(w: ByteWriter): void {
  _pool.push(w);
  if (_pool.length > _POOL_KEEP) {
    _pool.sort((a, b) => b.buf.length - a.buf.length);
    _pool.length = _POOL_KEEP;
  }
}

/** Buffers kept by the pool (for tests): their sizes in bytes. */
export function pooledTableBuffers(): number[] {
  return _pool.map((w) => w.buf.length);
}

/** Runs one flush job (exported for tests; the worker calls it per message). */
export async function runFlush(
  req: FlushRequest,
  fs: FileSystem = new DenoFs(),
): Promise<CompactionReply> {
  const outputs: Extract<CompactionReply, { ok: true }>["outputs"] = [];
  const out = _takeWriter(req.arena.byteLength + (64 << 10));
  try {
    const it = MemTable.fromArena(req.arena).iterator();
    it.seekToFirst();
    await writeCompacted(it, {
      out,
      dropAll: false,
      smallestSnapshot: 0,
      deeper: [],
      splitBytes: Infinity,
      emit: async (bytes, info) => {
        await writeTableFile(fs, req.path, bytes);
        outputs.push({
          path: req.path,
          size: info.size,
          entries: info.entries,
          smallest: info.smallest,
          largest: info.largest,
        });
      },
    });
    return { id: req.id, ok: true, outputs, arena: req.arena };
  } catch (e) {
    for (const o of outputs) await fs.remove(o.path).catch(() => {});
    return {
      id: req.id,
      ok: false,
      message: String(e),
      kind: e instanceof StorageError ? e.kind : undefined,
      arena: req.arena,
    };
  } finally {
    _giveWriter(out);
  }
}

/** The worker's reply. A flush's reply hands its request's `arena` back (transferred). */
export type CompactionReply =
  | {
    id: number;
    ok: true;
    outputs: Array<
      { path: string; size: number; entries: number; smallest: Uint8Array; largest: Uint8Array }
    >;
    arena?: ArrayBuffer;
    /** The worker's heap and external memory after the job (bytes), set by the worker loop. */
    heapBytes?: number;
    /** Whether the worker collected garbage before replying (see `collectAboveBytes`). */
    collected?: boolean;
  }
  | {
    id: number;
    ok: false;
    message: string;
    kind?: string;
    file?: string;
    offset?: number;
    arena?: ArrayBuffer;
    heapBytes?: number;
    collected?: boolean;
  };

/** Whether a {@link CancelRequest} reached this worker. */
let _cancelled = false;

/** Thrown inside a cancelled compaction. */
class _Cancelled extends Error {}

/**
 * Runs one job (exported for tests; the worker calls it per message). `cancelled` is polled at
 * every pause and before every output table (default: whether a {@link CancelRequest} arrived).
 */
export async function runCompaction(
  req: CompactionRequest,
  fs: FileSystem = new DenoFs(),
  cancelled: () => boolean = () => _cancelled,
): Promise<CompactionReply> {
  const cache = new BlockCache<Block>(0);
  const tables: Table[] = [];
  const outputs: Extract<CompactionReply, { ok: true }>["outputs"] = [];
  const out = _takeWriter(
    Number.isFinite(req.splitBytes) ? req.splitBytes + (256 << 10) : 1 << 20,
  );
  try {
    for (const inp of req.inputs) {
      tables.push(await Table.open(fs, inp.path, { number: inp.number, cache }));
    }
    // One pass over each input: chunked reads, no cache.
    const children: InternalIterator[] = tables.map((t) => t.sequentialIterator());
    const run = req.run ?? [];
    if (run.length > 0) {
      const runTables: Table[] = [];
      for (const inp of run) {
        const t = await Table.open(fs, inp.path, { number: inp.number, cache });
        tables.push(t);
        runTables.push(t);
      }
      children.push(
        new LevelIterator(runTables, run.map((r) => r.smallest), run.map((r) => r.largest), true),
      );
    }
    const it = new MergingIterator(children);
    it.seekToFirst();
    await writeCompacted(it, {
      dropAll: true,
      smallestSnapshot: req.smallestSnapshot,
      deeper: req.deeper,
      splitBytes: req.splitBytes,
      // Every few thousand entries, let queued jobs run: a level-0 flush preempts a long
      // compaction (as in LevelDB), instead of waiting for it to end.
      pause: () => {
        if (cancelled()) throw new _Cancelled();
        return new Promise((r) => setImmediate(r));
      },
      out,
      emit: async (bytes, info) => {
        if (cancelled()) throw new _Cancelled();
        const path = `${req.tmpPrefix}${outputs.length}.tmp`;
        await writeTableFile(fs, path, bytes);
        outputs.push({
          path,
          size: info.size,
          entries: info.entries,
          smallest: info.smallest,
          largest: info.largest,
        });
      },
    });
    return { id: req.id, ok: true, outputs };
  } catch (e) {
    for (const o of outputs) await fs.remove(o.path);
    if (e instanceof _Cancelled) {
      return { id: req.id, ok: false, message: "compaction cancelled", kind: "Cancelled" };
    }
    if (e instanceof CorruptionError) {
      return {
        id: req.id,
        ok: false,
        message: e.message,
        kind: e.kind,
        file: e.file,
        offset: e.offset,
      };
    }
    return {
      id: req.id,
      ok: false,
      message: String(e),
      kind: e instanceof StorageError ? e.kind : undefined,
    };
  } finally {
    for (const t of tables) t.close();
    _giveWriter(out);
  }
}

/**
 * Runs a {@link WarmUpRequest} (exported for tests): two synthetic memtables of `entries` keys
 * each (16 decimal digits; the second table's keys start at `entries / 2`, so it overwrites half
 * of the first's; a value is 256 bytes of `(key + table) & 0xff`), each flushed to a table, then
 * the two tables compacted, all on `fs` (a fresh {@link MemFs}: nothing touches the disk). The
 * reply lists the compaction's outputs (`/warm-out-<i>.tmp` on `fs`).
 */
export async function runWarmUp(
  req: WarmUpRequest,
  fs: FileSystem = new MemFs(),
): Promise<CompactionReply> {
  const n = req.entries ?? WARM_UP_ENTRIES;
  const key = new Uint8Array(16);
  const value = new Uint8Array(256);
  const inputs: Array<{ path: string; number: number }> = [];
  let seq = 0;
  for (let t = 0; t < 2; t++) {
    const mem = new MemTable(0, { arenaBytes: n * (key.length + value.length + 64) });
    for (let i = 0; i < n; i++) {
      const k = t * (n >> 1) + i;
      for (let j = key.length - 1, v = k; j >= 0; j--, v = Math.floor(v / 10)) key[j] = 48 + v % 10;
      value.fill((k + t) & 0xff);
      mem.add(key, ++seq, KIND_PUT, value);
    }
    const path = `/warm-${t}.tmp`;
    const flushed = await runFlush({ kind: "flush", id: req.id, arena: mem.copyArena(), path }, fs);
    if (!flushed.ok) return { ...flushed, arena: undefined };
    inputs.unshift({ path, number: t + 1 }); // newest first, as for level-0 inputs
  }
  return await runCompaction({
    id: req.id,
    inputs,
    smallestSnapshot: seq,
    deeper: [],
    splitBytes: 2 << 20,
    tmpPrefix: "/warm-out-",
  }, fs);
}

/**
 * Sets `reply.heapBytes` from `memory()` and, above `limit`, first runs `gc` (when there is one)
 * and marks the reply `collected`. A worker's V8 heap grows under sustained load and its garbage,
 * table buffers among it, is collected lazily; a full collection here (a few milliseconds, on the
 * worker's thread) usually brings it back under the limit, which spares the engine replacing the
 * worker: starting one blocks the engine's thread for tens of milliseconds.
 */
export function settleMemory(
  reply: CompactionReply,
  limit: number | undefined,
  gc: (() => void) | undefined,
  memory: () => { heapTotal: number; external: number },
): void {
  let m = memory();
  if (limit !== undefined && m.heapTotal + m.external > limit && gc !== undefined) {
    gc();
    m = memory();
    reply.collected = true;
  }
  reply.heapBytes = m.heapTotal + m.external;
}

interface _WorkerScope {
  onmessage: ((ev: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
}

// Only inside a worker (where WorkerGlobalScope exists) does this module serve requests.
if (typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  const scope = globalThis as unknown as _WorkerScope;
  scope.onmessage = (ev) => {
    const req = ev.data;
    if (req.kind === "cancel") {
      _cancelled = true;
      return;
    }
    const job = req.kind === "flush"
      ? runFlush(req)
      : req.kind === "warm"
      ? runWarmUp(req)
      : runCompaction(req);
    job.then((reply) => {
      const gc = (globalThis as { gc?: () => void }).gc;
      settleMemory(reply, req.collectAboveBytes, gc, Deno.memoryUsage);
      scope.postMessage(reply, reply.arena ? [reply.arena] : []);
    });
  };
}
