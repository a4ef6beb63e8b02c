/**
 * KVEngine: the LSM engine (WAL + MemTable + SSTables + manifest + leveled compaction).
 *
 * Concurrency model (one JS thread): writes go through one commit loop (group commit: every
 * batch queued while the previous group was being written joins the next group, which costs one
 * append and, unless `sync: "none"`, one fdatasync; with `wal: false`, no I/O at all: the caller's
 * own log is the write-ahead log and the engine's durable state is a prefix of the writes, see
 * {@link KVEngineOptions.wal}). Flushes and compactions run in one
 * background loop that yields to the event loop between blocks of work. Reads are synchronous
 * underneath (positional reads of 4 KiB blocks) and see an immutable {@link Version} plus the
 * memtables; snapshots and scans pin a version so its tables outlive compactions.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { BlockCache } from "./block_cache.ts";
import { compareBytes, copyOut, equalBytes, hasPrefix, prefixEnd } from "./coding.ts";
import {
  ClosedError,
  CorruptionError,
  InvalidArgumentError,
  LockedError,
  StorageError,
} from "./errors.ts";
import { DenoFs, type FileLock, type FileSystem, type StorageFile } from "./fs.ts";
import { type InternalIterator, KIND_DELETE, KIND_PUT, MergingIterator } from "./iterator.ts";
import {
  applyEdit,
  editRecord,
  emptyState,
  manifestName,
  type ManifestState,
  NUM_LEVELS,
  readManifest,
  snapshotEdit,
  type TableMeta,
  type VersionEdit,
} from "./manifest.ts";
import { MemTable, type MemTableOptions } from "./memtable.ts";
import { MAX_RECORD_PAYLOAD } from "./record.ts";
import {
  type Block,
  bloomHash,
  LevelIterator,
  recycleBlock,
  Table,
  TableBuilder,
  writeTableFile,
} from "./sstable.ts";
import { readWalSegment, WalEncoder } from "./wal.ts";
import { type LevelRanges, writeCompacted } from "./compaction.ts";
import type {
  CompactionReply,
  CompactionRequest,
  FlushRequest,
  WorkerRequest,
} from "./compaction_worker.ts";

/** Durability of acknowledged writes. */
export type SyncMode = "always" | "batch" | "none";

/** Options of {@link KVEngine.open}. */
export interface KVEngineOptions {
  /**
   * `"always"` (default): a write resolves after its WAL record is fdatasync'ed (concurrent
   * writes share one fdatasync). `"batch"`: the same guarantee, and the commit loop waits one
   * macrotask to gather more concurrent writers into each fdatasync. `"none"`: writes wait for no
   * fdatasync (one runs in the background after every 512 KiB of WAL, so a crash loses at most
   * about that much, always a suffix); call {@link KVEngine.flush} to make everything written so
   * far durable.
   */
  sync?: SyncMode;
  /**
   * `true` (default): writes go to the WAL first, with the guarantees of `sync`.
   *
   * `false`: the engine keeps no WAL, for a caller that has a write-ahead log of its own (a Raft
   * node: its Raft log plus an applied index written in the same batch as the data). Writes go
   * only to the memtable and resolve at once (`sync` is ignored); a full memtable is sealed
   * without any fdatasync and written to a level-0 table in the background. What survives a
   * crash is always a **prefix** of the writes at memtable granularity: memtables are flushed
   * in write order, each flush is one atomic manifest edit, and a batch never spans two
   * memtables, so the engine never holds a later write without every earlier one.
   * {@link KVEngine.flush} (and {@link KVEngine.close}) make everything written so far durable by
   * sealing the memtable and waiting for its level-0 table and manifest edit.
   * {@link KVEngine.replaceAll} is durable when it resolves, as with the WAL. Opening a directory
   * that still holds WAL segments (a run with the WAL on) replays them into level-0 tables and
   * deletes them. Keys and values are copied into the memtable when the write is applied; do
   * not modify them before the write resolves.
   */
  wal?: boolean;
  /**
   * With the WAL on, {@link KVEngine.close} writes the memtables to level-0 tables (after
   * syncing the WAL) so that the next open replays nothing: a clean restart then costs a manifest
   * read instead of rebuilding up to two memtables from the WAL (default true). Without a WAL,
   * close always does this. A flush that fails at close is logged and loses nothing: the synced
   * WAL is replayed by the next open.
   */
  flushOnClose?: boolean;
  /** MemTable size that triggers a flush (default 4 MiB). */
  memtableBytes?: number;
  /** Largest key in bytes (default 65536). */
  maxKeyBytes?: number;
  /** Largest value in bytes (default 4 MiB). */
  maxValueBytes?: number;
  /** Block cache size (default 8 MiB). */
  blockCacheBytes?: number;
  /** Target SSTable size for compaction output (default 2 MiB). */
  tableBytes?: number;
  /** Size limit of level 1; each deeper level is 10× larger (default 10 MiB). */
  level1Bytes?: number;
  /** Level-0 table count that triggers a compaction (default 4). */
  l0CompactionTrigger?: number;
  /**
   * Level-0 table count from which each write group is delayed by about 1 ms (LevelDB's soft
   * limit: it spreads the wait for compaction over many writes instead of one long stop;
   * default 8, at most `l0StopWrites`).
   */
  l0SlowdownWrites?: number;
  /** Level-0 table count at which writes wait for compaction (default 12). */
  l0StopWrites?: number;
  /**
   * Run compactions on a worker thread (a second core), as LevelDB does on its background
   * thread. Default: true on the real file system when the worker module is readable (grant
   * `--allow-read` on the `storage/` directory); otherwise compactions run in-thread.
   */
  compactionWorker?: boolean;
  /** Compactions with less input than this run in-thread even with a worker (default 0). */
  workerMinBytes?: number;
  /**
   * A worker whose heap (plus external memory) exceeds this many bytes after a job is terminated
   * once no job is outstanding, and the next job starts a fresh one (default 48 MiB): a V8 heap
   * grows under sustained load and never gives memory back on its own. In a process run with
   * V8's `--expose-gc` (a node is) the worker first collects its garbage, on its own thread, and is
   * replaced only if that leaves it above the limit.
   */
  workerRecycleBytes?: number;
  /**
   * Start the worker at open and keep it until close instead of terminating it after a second
   * without jobs (default false). Creating a Worker blocks the calling thread for 20–50 ms (Deno
   * 2.9 builds the new isolate there), so a server whose memtable fills every few seconds would
   * otherwise stall all its requests in flight at every flush. Replacing a worker that outgrew
   * {@link workerRecycleBytes} still happens.
   */
  keepWorker?: boolean;
  /** File system (default: the real one). Tests pass a {@link MemFs}. */
  fs?: FileSystem;
  /** Where recovery notes go (torn WAL tails…); default `console.warn`. */
  log?: (message: string) => void;
}

/** One operation of an atomic batch. */
export interface BatchOp {
  /** Put or delete. */
  type: "put" | "delete";
  /** The key (1 byte to `maxKeyBytes`). */
  key: Uint8Array;
  /** The value, required for puts. */
  value?: Uint8Array;
}

/** Options of a scan. Bounds combine (a prefix and a range give their intersection). */
export interface ScanOptions {
  /** Only keys starting with these bytes. */
  prefix?: Uint8Array;
  /** Smallest key (inclusive). */
  start?: Uint8Array;
  /** Key bound (exclusive). */
  end?: Uint8Array;
  /** At most this many pairs. */
  limit?: number;
  /** Keys only: every value is given as empty (and not copied). */
  keysOnly?: boolean;
}

/** A key and its value. */
export interface KeyValue {
  /** The key. */
  key: Uint8Array;
  /**
   * The value: the caller's own copy, but possibly a view into a shared buffer (`byteOffset`
   * may be non-zero; do not transfer its `buffer`). The same holds for values `get` returns.
   */
  value: Uint8Array;
}

const _EMPTY = new Uint8Array(0);

const _WORKER_URL = new URL("./compaction_worker.ts", import.meta.url);

/** The worker can start only if its module is readable (a node may run with narrow --allow-read). */
function _workerAllowed(): boolean {
  if (typeof Worker === "undefined") return false;
  if (_WORKER_URL.protocol !== "file:") return true;
  try {
    return Deno.permissions.querySync({ name: "read", path: _WORKER_URL }).state === "granted";
  } catch {
    return false;
  }
}

/** Lets pending I/O callbacks and timers run (setImmediate: ~20 µs; setTimeout(0) costs ms). */
function _yieldToEventLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
/** Resolves after about `ms` milliseconds. */
function _delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
/** A worker without a job for this long is terminated (ms). */
const _WORKER_IDLE_MS = 1000;
/** While background work runs, the commit loop yields to the event loop this often (ms). */
const _WRITER_YIELD_MS = 1;
const _MAX_SEQ = Number.MAX_SAFE_INTEGER;
/** Under sync "none", a background WAL fdatasync starts after this many appended bytes. */
const _WAL_BYTES_PER_SYNC = 512 * 1024;

function _logName(n: number): string {
  return `${String(n).padStart(6, "0")}.log`;
}
function _tableName(n: number): string {
  return `${String(n).padStart(6, "0")}.sst`;
}

/**
 * A live table: manifest metadata plus its reader, shared by the versions that hold it. Tables
 * found at open are read (footer, index, filter — all checked) on their first use, as LevelDB's
 * table cache does, so an open reads no table; a corrupt one fails that use with a
 * {@link CorruptionError} (and every later one: a failed open is retried, never cached).
 */
class _LiveTable implements TableMeta {
  number: number;
  level: number;
  size: number;
  entries: number;
  smallest: Uint8Array;
  largest: Uint8Array;
  refs = 0;
  #table: Table | undefined;
  #open: (() => Table) | undefined;

  constructor(meta: TableMeta, readonly path: string, table: Table | (() => Table)) {
    this.number = meta.number;
    this.level = meta.level;
    this.size = meta.size;
    this.entries = meta.entries;
    this.smallest = meta.smallest;
    this.largest = meta.largest;
    if (table instanceof Table) this.#table = table;
    else this.#open = table;
  }

  /** The reader, opened (and checked) on first use. */
  get table(): Table {
    return this.#table ??= this.#open!();
  }

  /** Closes the reader if it was opened. */
  close(): void {
    this.#table?.close();
  }
}

/** An immutable set of live tables per level. */
class _Version {
  refs = 0;
  constructor(readonly levels: _LiveTable[][]) {}
}

/** What a read sees: memtables, a version and a sequence number. */
interface _View {
  mem: MemTable;
  imm: MemTable | null;
  version: _Version;
  seq: number;
}

interface _Pending {
  entries: BatchOp[];
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface _Exclusive {
  fn: () => Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * A point-in-time read view. Writes after it was taken are invisible to it, and the tables it
 * reads stay on disk until {@link Snapshot.release}.
 *
 * @example
 * ```ts ignore
 * const snap = db.snapshot();
 * try {
 *   for await (const { key, value } of snap.scan()) send(key, value);
 * } finally {
 *   snap.release();
 * }
 * ```
 */
export class Snapshot {
  #engine: KVEngine;
  #view: _View | undefined;
  /** The sequence number the snapshot reads at. */
  readonly seq: number;
  /** @internal */
  constructor(engine: KVEngine, view: _View) {
    this.#engine = engine;
    this.#view = view;
    this.seq = view.seq;
  }
  #live(): _View {
    if (this.#view === undefined) throw new ClosedError("snapshot was released");
    return this.#view;
  }
  /** The value of `key` at the snapshot, or `undefined`. */
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    try {
      return Promise.resolve(this.#engine._getIn(this.#live(), key));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** The pairs in range at the snapshot, in key order. */
  scan(options: ScanOptions = {}): AsyncIterable<KeyValue> {
    const view = this.#live();
    return this.#engine._scanIn(view, options, () => this.#view !== undefined);
  }
  /** Releases the snapshot; its tables may then be deleted. Idempotent. */
  release(): void {
    const v = this.#view;
    if (v === undefined) return;
    this.#view = undefined;
    this.#engine._releaseView(v);
  }
}

/**
 * The ConcordKV storage engine: a crash-safe LSM tree on a directory.
 *
 * @example
 * ```ts ignore
 * const db = await KVEngine.open("./data/sm", { sync: "always" });
 * const enc = new TextEncoder();
 * await db.put(enc.encode("k"), enc.encode("v"));
 * await db.write([{ type: "put", key: enc.encode("a"), value: enc.encode("1") }, { type: "delete", key: enc.encode("k") }]);
 * console.log(await db.get(enc.encode("a")));
 * for await (const { key, value } of db.scan({ prefix: enc.encode("a") })) console.log(key, value);
 * await db.close();
 * ```
 */
export class KVEngine {
  readonly #fs: FileSystem;
  readonly #dir: string;
  readonly #sync: SyncMode;
  /** False: no WAL (see {@link KVEngineOptions.wal}). */
  readonly #walOn: boolean;
  readonly #memtableBytes: number;
  /** Arena size of new memtables: a full one plus one more write group fits without growing. */
  readonly #memOptions: MemTableOptions;
  readonly #maxKey: number;
  readonly #maxValue: number;
  readonly #tableBytes: number;
  readonly #level1Bytes: number;
  readonly #l0Trigger: number;
  readonly #l0Stop: number;
  readonly #l0Slowdown: number;
  readonly #log: (m: string) => void;
  readonly #cache: BlockCache<Block>;
  #lock: FileLock | undefined;

  #state: ManifestState = emptyState();
  #manifest: StorageFile | undefined;
  #manifestNumber = 0;
  #version: _Version = new _Version(Array.from({ length: NUM_LEVELS }, () => []));
  #live = new Map<number, _LiveTable>();
  #mem = new MemTable();
  #imm: MemTable | null = null;
  #wal: StorageFile | undefined;
  #oldWals: StorageFile[] = [];
  #lastSeq = 0;
  /**
   * `#lastSeq` when the memtable was last sealed (or the content replaced, or the engine
   * opened): every write up to it is in `#imm` or in tables, so once `#imm` is null it is
   * durable. Without a WAL, flush() waits on it.
   */
  #sealedSeq = 0;
  #encoder = new WalEncoder();
  /**
   * The arena the worker handed back after the last flush: the next flush copies the sealed
   * memtable into it instead of a new buffer (each dead copy would otherwise linger in the
   * worker until a full GC there).
   */
  #spareArena: ArrayBuffer | undefined;
  /** The arena of the last flushed memtable, when nothing reads it: the next memtable's. */
  #spareMemArena: ArrayBuffer | undefined;

  readonly #flushOnClose: boolean;
  /** Set when close's flush starts: no compaction starts after it (see #pickCompaction). */
  #closeFlush = false;
  #queue: Array<_Pending | _Exclusive> = [];
  #committing = false;
  /** The running commit loop, awaited by close(). */
  #commitRun: Promise<void> = Promise.resolve();
  #closed = false;
  /** Set when close() begins: later writes and exclusive operations are refused. */
  #closing: Promise<void> | undefined;
  /** Table deletions started by #unref, awaited by close(). */
  #removals = new Set<Promise<void>>();
  #failure: unknown = undefined;

  #bg: Promise<void> | undefined;
  #bgPaused = 0;
  #progressWaiters: Array<() => void> = [];
  #snapshots = new Map<number, number>();
  #compactPointer: Array<Uint8Array | undefined> = new Array(NUM_LEVELS).fill(undefined);
  /**
   * A manual compaction in progress ({@link KVEngine.compactInBackground}): the next level to
   * merge into the one below, down to `target` (the bottom-most populated level when it
   * started; -1 until then).
   */
  #manual: { level: number; target: number } | undefined;
  #manualCompactions = 0;
  #dirty = false;
  /** Bytes appended to the current WAL since a background sync last started (sync "none"). */
  #walUnsynced = 0;
  /** A running background fdatasync of the current WAL (sync "none"); see #commitGroup. */
  #walSyncing: Promise<void> | undefined;
  #manifestChain: Promise<void> = Promise.resolve();
  #inlineFlush = false;
  readonly #useWorker: boolean;
  readonly #keepWorker: boolean;
  /** Workers started (at open with keepWorker, on demand otherwise, and replacements). */
  #workerStarts = 0;
  /** Warm-up jobs the worker completed (one per worker started with keepWorker). */
  #workerWarmUps = 0;
  readonly #workerMinBytes: number;
  #worker: Worker | undefined;
  #jobId = 0;
  #workerJobs = 0;
  /** Memtable flushes done on the worker. */
  #workerFlushes = 0;
  /** Reads so far (every so many, {@link KVEngine.#reapIdleWorker} runs). */
  #reads = 0;
  /** `performance.now()` when the worker last had a job outstanding. */
  #workerBusyAt = 0;
  /** Workers terminated for outgrowing {@link KVEngineOptions.workerRecycleBytes}. */
  #workerRestarts = 0;
  /** Jobs after which the worker collected its garbage to stay under the recycle limit. */
  #workerCollections = 0;
  readonly #workerRecycleBytes: number;
  /** Worker jobs awaiting their reply, by job id. */
  #workerPending = new Map<
    number,
    { resolve: (r: CompactionReply) => void; reject: (e: unknown) => void }
  >();
  /** Terminates the worker once it has been idle a while (an idle worker keeps a process alive). */
  #workerIdle: ReturnType<typeof setTimeout> | undefined;
  /** Set by open: the background loop's first step waits one event-loop turn (see #open). */
  #bgDefer = false;
  /** Write groups delayed by the level-0 soft limit. */
  #slowdowns = 0;
  /** When the commit loop last yielded to the event loop for background work. */
  #lastYield = 0;
  #onImm: (() => void) | undefined;

  private constructor(dir: string, options: KVEngineOptions) {
    this.#fs = options.fs ?? new DenoFs();
    this.#dir = dir.replace(/\/+$/, "") || "/";
    this.#sync = options.sync ?? "always";
    if (!["always", "batch", "none"].includes(this.#sync)) {
      throw new InvalidArgumentError(`bad sync mode ${String(this.#sync)}`);
    }
    this.#walOn = options.wal ?? true;
    this.#flushOnClose = options.flushOnClose ?? true;
    if (typeof this.#walOn !== "boolean") {
      throw new InvalidArgumentError(`bad wal option ${String(this.#walOn)}`);
    }
    this.#memtableBytes = options.memtableBytes ?? 4 * 1024 * 1024;
    this.#memOptions = {
      arenaBytes: this.#memtableBytes + Math.max(this.#memtableBytes >> 3, 64 << 10),
    };
    this.#maxKey = options.maxKeyBytes ?? 65536;
    this.#maxValue = options.maxValueBytes ?? 4 * 1024 * 1024;
    this.#tableBytes = options.tableBytes ?? 2 * 1024 * 1024;
    this.#level1Bytes = options.level1Bytes ?? 10 * 1024 * 1024;
    this.#l0Trigger = options.l0CompactionTrigger ?? 4;
    this.#l0Stop = Math.max(options.l0StopWrites ?? 12, this.#l0Trigger + 1);
    this.#l0Slowdown = Math.min(options.l0SlowdownWrites ?? 8, this.#l0Stop);
    this.#log = options.log ?? ((m) => console.warn(`concordkv storage: ${m}`));
    this.#cache = new BlockCache(options.blockCacheBytes ?? 8 * 1024 * 1024, recycleBlock);
    this.#workerMinBytes = options.workerMinBytes ?? 0;
    this.#workerRecycleBytes = options.workerRecycleBytes ?? 48 * 1024 * 1024;
    const wantWorker = options.compactionWorker ?? options.fs === undefined;
    this.#useWorker = wantWorker && _workerAllowed();
    this.#keepWorker = options.keepWorker ?? false;
    if (wantWorker && !this.#useWorker) {
      this.#log(
        `compaction worker unavailable (no --allow-read on ${
          decodeURIComponent(_WORKER_URL.pathname.replace(/\/[^/]*$/, ""))
        }); compacting in-thread`,
      );
    }
  }

  /**
   * True when large compactions run on the worker thread; false when they run in-thread
   * (disabled, a test file system, or the worker module not readable — logged once at open).
   */
  get usesCompactionWorker(): boolean {
    return this.#useWorker;
  }

  /**
   * Opens (creating if needed) the engine in `dir`: takes the lock, reads the manifest, checks
   * that every live table exists (each is read and checked on its first use), replays the WAL
   * (truncating a torn tail, failing on mid-log corruption), and starts a new WAL segment (none
   * with `wal: false`). A replay that fits in one memtable becomes the immutable memtable,
   * flushed to level 0 in the background (its segments are deleted once that flush is
   * durable); a larger one, or any replay with `wal: false`, is written to level-0 tables first.
   *
   * @throws {LockedError} another engine holds `dir`.
   * @throws {CorruptionError} a manifest or WAL record failed its checks, or a live table is
   *   missing (a corrupt table fails its first read instead).
   */
  static async open(dir: string, options: KVEngineOptions = {}): Promise<KVEngine> {
    const db = new KVEngine(dir, options);
    await db.#open();
    return db;
  }

  /**
   * Creates a fresh engine in `dir` whose content is exactly `pairs` (strictly ascending keys),
   * replacing whatever `dir` held, atomically with respect to crashes: after a crash the
   * directory holds either its old content or all of `pairs`. This is how a Raft follower
   * installs a state-machine snapshot streamed from `Snapshot.scan()`.
   *
   * @example
   * ```ts ignore
   * const db = await KVEngine.restoreFrom("./data/sm", snapshotPairs, { sync: "none" });
   * ```
   */
  static async restoreFrom(
    dir: string,
    pairs: AsyncIterable<KeyValue> | Iterable<KeyValue>,
    options: KVEngineOptions = {},
  ): Promise<KVEngine> {
    const db = await KVEngine.open(dir, options);
    try {
      await db.replaceAll(pairs);
    } catch (e) {
      await db.close();
      throw e;
    }
    return db;
  }

  // ---------------------------------------------------------------- open / recovery

  async #open(): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir;
    await fs.mkdir(dir);
    const lock = await fs.tryLock(`${dir}/LOCK`);
    if (lock === null) throw new LockedError(dir);
    this.#lock = lock;
    try {
      await this.#recover();
    } catch (e) {
      this.#closeFiles();
      lock.release();
      this.#lock = undefined;
      throw e;
    }
    // Background work (the recovered memtable's flush, compactions) starts on the next turn of
    // the event loop: starting the worker blocks this thread for ~20 ms, which open() and the
    // caller's first reads need not wait for.
    this.#bgDefer = true;
    this.#maybeScheduleBg();
    this.#bgDefer = false;
    if (this.#keepWorker && this.#useWorker) this.#worker ??= this.#startWorker();
  }

  async #recover(): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir;
    const found = await readManifest(fs, dir, { compare: compareBytes, log: this.#log });
    const state = found?.state ?? emptyState();
    this.#state = state;
    // Every live table must exist; each is opened on first use (see _LiveTable).
    const names = await fs.list(dir);
    const present = new Set(names);
    const cache = this.#cache;
    const levels: _LiveTable[][] = [];
    for (let l = 0; l < NUM_LEVELS; l++) {
      const lv: _LiveTable[] = [];
      for (const meta of state.levels[l]!) {
        const path = `${dir}/${_tableName(meta.number)}`;
        const missing = () =>
          new CorruptionError("live table is missing", { file: path, offset: 0 });
        if (!present.has(_tableName(meta.number))) throw missing();
        const live = new _LiveTable(meta, path, () => {
          try {
            return Table.openSync(fs, path, { number: meta.number, cache });
          } catch (e) {
            throw e instanceof Deno.errors.NotFound ? missing() : e;
          }
        });
        this.#live.set(meta.number, live);
        lv.push(live);
      }
      levels.push(lv);
    }
    this.#installVersion(new _Version(levels));
    this.#lastSeq = state.lastSeq;

    // Replay WAL segments at or after logNumber, oldest first.
    const logs = names
      .map((n) => /^(\d+)\.log$/.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .filter((n) => n >= state.logNumber)
      .sort((a, b) => a - b);
    // Segments created after the last manifest edit carry numbers the manifest's nextFile does
    // not cover yet: never hand those numbers out again.
    for (const n of logs) if (n >= state.nextFile) state.nextFile = n + 1;
    const edit: VersionEdit = { add: [] };
    // With the WAL on, a close can leave a full sealed memtable and a live one (two segments):
    // both fit in the one recovered memtable, as they fit in memory before.
    const replayLimit = this.#walOn ? 2 * this.#memtableBytes : this.#memtableBytes;
    let mem = new MemTable(0, this.#memOptions);
    for (let i = 0; i < logs.length; i++) {
      const path = `${dir}/${_logName(logs[i]!)}`;
      const res = await readWalSegment(fs, path, (seq, kind, key, value) => {
        mem.add(key, seq, kind, value);
        if (seq > this.#lastSeq) this.#lastSeq = seq;
      });
      if (res.tornAt) {
        if (i !== logs.length - 1) {
          throw new CorruptionError(`bad WAL record (${res.tornAt.reason}) in a sealed segment`, {
            file: path,
            offset: res.tornAt.offset,
          });
        }
        this.#log(
          `WAL ${path}: truncating torn tail at offset ${res.tornAt.offset} (${res.tornAt.reason})`,
        );
        const f = await fs.openAppend(path);
        await f.truncate(res.validEnd);
        await f.sync();
        f.close();
      }
      if (mem.bytes >= replayLimit) {
        edit.add!.push(...(await this.#writeLevel0(mem)));
        mem = new MemTable(0, this.#memOptions);
      }
    }
    // With the WAL on, a replay that fit in one memtable is not written out here (LevelDB does
    // the same with its recovered memtable): it becomes the immutable memtable, flushed to level 0
    // in the background like any sealed one. Its segments stay live — the manifest's logNumber
    // does not move — until that flush is logged, so a crash before then replays them again.
    let recovered: MemTable | null = null;
    if (!mem.empty) {
      if (this.#walOn && edit.add!.length === 0) recovered = mem;
      else edit.add!.push(...(await this.#writeLevel0(mem)));
    }

    // A fresh WAL segment and a fresh manifest holding the whole state. Without a WAL the number
    // is still taken, so every replayed segment (all below it) becomes obsolete and is deleted
    // once the new manifest is durable: their content is in the level-0 tables just written.
    const logNumber = state.nextFile++;
    if (this.#walOn) {
      this.#wal = await fs.openAppend(`${dir}/${_logName(logNumber)}`, { truncate: true });
    } else if (logs.length > 0) {
      this.#log(`replayed ${logs.length} WAL segment(s) into level-0 tables; the WAL is off now`);
    }
    this.#mem = new MemTable(logNumber, this.#memOptions);
    if (recovered !== null) {
      // The flush of #imm deletes #oldWals once its edit (logNumber = the new segment) is durable.
      this.#imm = recovered;
      for (const n of logs) this.#oldWals.push(await fs.openRead(`${dir}/${_logName(n)}`));
    } else edit.logNumber = logNumber;
    edit.lastSeq = this.#lastSeq;
    applyEdit(state, edit, compareBytes);
    await this.#installEdit(edit);
    await this.#writeNewManifest();
    await this.#removeObsoleteFiles();
    this.#sealedSeq = this.#lastSeq;
  }

  async #writeLevel0(mem: MemTable): Promise<TableMeta[]> {
    const it = mem.iterator();
    it.seekToFirst();
    return await this.#writeTables(it, 0, { dropAll: false, splitBytes: Infinity });
  }

  // ---------------------------------------------------------------- manifest

  async #writeNewManifest(): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir;
    const number = this.#state.nextFile++;
    const name = manifestName(number);
    const f = await fs.openAppend(`${dir}/${name}`, { truncate: true });
    try {
      await f.append(editRecord(snapshotEdit(this.#state)));
      await f.sync();
      const tmp = `${dir}/CURRENT.tmp`;
      const c = await fs.openAppend(tmp, { truncate: true });
      try {
        await c.append(new TextEncoder().encode(`${name}\n`));
        await c.sync();
      } finally {
        c.close();
      }
      await fs.rename(tmp, `${dir}/CURRENT`);
      await fs.syncDir(dir);
    } catch (e) {
      f.close();
      throw e;
    }
    const old = this.#manifest;
    this.#manifest = f;
    this.#manifestNumber = number;
    if (old) {
      old.close();
      await fs.remove(old.path);
    }
  }

  /** Appends `edit` to the manifest (durably), then applies it to the in-memory state. */
  #logAndApply(edit: VersionEdit): Promise<void> {
    const run = this.#manifestChain.then(() => this.#logAndApplyNow(edit));
    this.#manifestChain = run.catch(() => {});
    return run;
  }

  async #logAndApplyNow(edit: VersionEdit): Promise<void> {
    edit.nextFile = this.#state.nextFile;
    if (edit.lastSeq === undefined) edit.lastSeq = this.#lastSeq;
    await this.#fs.syncDir(this.#dir); // new tables and WAL segments are named durably first
    const m = this.#manifest!;
    await m.append(editRecord(edit));
    await m.sync();
    applyEdit(this.#state, edit, compareBytes);
    await this.#installEdit(edit);
    if (m.size() > 4 * 1024 * 1024) await this.#writeNewManifest();
  }

  /** Opens added tables and installs a new current version reflecting `#state`. */
  async #installEdit(edit: VersionEdit): Promise<void> {
    for (const meta of edit.add ?? []) {
      if (this.#live.has(meta.number)) continue;
      const path = `${this.#dir}/${_tableName(meta.number)}`;
      const table = await Table.open(this.#fs, path, { number: meta.number, cache: this.#cache });
      this.#live.set(meta.number, new _LiveTable(meta, path, table));
    }
    const levels = this.#state.levels.map((lv) => lv.map((m) => this.#live.get(m.number)!));
    this.#installVersion(new _Version(levels));
  }

  #installVersion(v: _Version): void {
    this.#ref(v);
    const old = this.#version;
    this.#version = v;
    this.#unref(old);
  }

  #ref(v: _Version): void {
    if (v.refs++ === 0) { for (const lv of v.levels) for (const t of lv) t.refs++; }
  }

  #unref(v: _Version): void {
    if (--v.refs > 0) return;
    for (const lv of v.levels) {
      for (const t of lv) {
        if (--t.refs === 0) {
          this.#live.delete(t.number);
          t.close();
          if (!this.#closed) {
            const r = this.#fs.remove(t.path)
              .catch((e) => this.#log(`remove ${t.path}: ${e}`))
              .finally(() => this.#removals.delete(r));
            this.#removals.add(r);
          }
        }
      }
    }
  }

  async #removeObsoleteFiles(): Promise<void> {
    const fs = this.#fs;
    for (const name of await fs.list(this.#dir)) {
      let m: RegExpExecArray | null;
      let obsolete = false;
      if ((m = /^(\d+)\.log$/.exec(name))) obsolete = Number(m[1]) < this.#state.logNumber;
      else if ((m = /^(\d+)\.sst$/.exec(name))) obsolete = !this.#live.has(Number(m[1]));
      else if ((m = /^MANIFEST-(\d+)$/.exec(name))) {
        obsolete = Number(m[1]) !== this.#manifestNumber;
      } else if (name.endsWith(".tmp")) obsolete = true;
      if (obsolete) await fs.remove(`${this.#dir}/${name}`);
    }
  }

  // ---------------------------------------------------------------- writes

  /** Reads keep working after a background failure (only writes stop). */
  #checkOpen(): void {
    if (this.#closed) throw new ClosedError();
  }

  /** #check for a new operation: also refused once close() has begun. */
  #checkAccept(): void {
    if (this.#closing !== undefined) throw new ClosedError();
    this.#check();
  }

  #check(): void {
    if (this.#closed) throw new ClosedError();
    if (this.#failure !== undefined) {
      throw new ClosedError(`engine stopped after a failure: ${this.#failure}`, {
        cause: this.#failure,
      });
    }
  }

  #validate(batch: BatchOp[]): number {
    if (!Array.isArray(batch)) throw new InvalidArgumentError("batch must be an array");
    let bytes = 16;
    for (const op of batch) {
      if (op === null || typeof op !== "object") throw new InvalidArgumentError("bad batch entry");
      const { key } = op;
      if (!(key instanceof Uint8Array)) throw new InvalidArgumentError("key must be a Uint8Array");
      if (key.length === 0) throw new InvalidArgumentError("empty key");
      if (key.length > this.#maxKey) {
        throw new InvalidArgumentError(`key of ${key.length} bytes exceeds ${this.#maxKey}`);
      }
      if (op.type === "put") {
        if (!(op.value instanceof Uint8Array)) {
          throw new InvalidArgumentError("put needs a Uint8Array value");
        }
        if (op.value.length > this.#maxValue) {
          throw new InvalidArgumentError(
            `value of ${op.value.length} bytes exceeds ${this.#maxValue}`,
          );
        }
        bytes += op.value.length;
      } else if (op.type !== "delete") {
        throw new InvalidArgumentError(`bad batch op type ${String(op.type)}`);
      }
      bytes += key.length + 11;
    }
    if (bytes > MAX_RECORD_PAYLOAD) throw new InvalidArgumentError("batch too large");
    return bytes;
  }

  /** Sets `key` to `value`. Resolves when durable per the sync mode. */
  put(key: Uint8Array, value: Uint8Array): Promise<void> {
    return this.write([{ type: "put", key, value }]);
  }

  /** Removes `key` (a no-op if absent). Resolves when durable per the sync mode. */
  delete(key: Uint8Array): Promise<void> {
    return this.write([{ type: "delete", key }]);
  }

  /**
   * Applies `batch` atomically: after a crash either every operation is visible or none is.
   * Later operations on the same key win. Resolves when durable per the sync mode (with
   * `wal: false`, when visible; durable after {@link KVEngine.flush}). Use an
   * ordinary key in the batch to persist metadata (e.g. Raft's applied index) with it.
   *
   * @throws {InvalidArgumentError} empty key, key or value too large, bad op.
   */
  write(batch: BatchOp[]): Promise<void> {
    let bytes: number;
    try {
      this.#checkAccept();
      bytes = this.#validate(batch);
    } catch (e) {
      return Promise.reject(e);
    }
    if (batch.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ entries: batch, bytes, resolve, reject });
      if (!this.#committing) this.#commitRun = this.#commitLoop();
    });
  }

  /** Runs `fn` alone in the commit loop (no write group runs concurrently). */
  #exclusive(fn: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ fn, resolve, reject });
      if (!this.#committing) this.#commitRun = this.#commitLoop();
    });
  }

  async #commitLoop(): Promise<void> {
    this.#committing = true;
    try {
      while (this.#queue.length > 0) {
        const head = this.#queue[0]!;
        if ("fn" in head) {
          this.#queue.shift();
          try {
            await head.fn();
            head.resolve();
          } catch (e) {
            head.reject(e);
          }
          continue;
        }
        if (this.#sync === "batch") await _yieldToEventLoop();
        try {
          this.#check();
          await this.#makeRoomForWrite();
        } catch (e) {
          this.#failQueued(e);
          continue;
        }
        // Take a group: consecutive writes up to ~4 MiB.
        const group: _Pending[] = [];
        let bytes = 0;
        while (this.#queue.length > 0) {
          const next = this.#queue[0]!;
          if ("fn" in next) break;
          if (group.length > 0 && bytes + next.bytes > 4 * 1024 * 1024) break;
          group.push(next);
          bytes += next.bytes;
          this.#queue.shift();
        }
        try {
          await this.#commitGroup(group);
          for (const p of group) p.resolve();
        } catch (e) {
          for (const p of group) p.reject(e);
        }
      }
    } finally {
      this.#committing = false;
    }
  }

  #failQueued(e: unknown): void {
    const q = this.#queue;
    this.#queue = [];
    for (const p of q) p.reject(e);
  }

  async #commitGroup(group: _Pending[]): Promise<void> {
    if (!this.#walOn) {
      // No WAL: straight into the memtable (synchronously, so a batch never spans two memtables
      // and reads see the group at once when #lastSeq moves).
      const mem = this.#mem;
      let seq = this.#lastSeq;
      for (const p of group) {
        for (const op of p.entries) {
          if (op.type === "put") mem.add(op.key, ++seq, KIND_PUT, op.value!);
          else mem.add(op.key, ++seq, KIND_DELETE, _EMPTY);
        }
      }
      this.#lastSeq = seq;
      return;
    }
    const enc = this.#encoder;
    const first = this.#lastSeq + 1;
    enc.begin(first);
    let count = 0;
    for (const p of group) {
      for (const op of p.entries) {
        enc.add(
          op.type === "put" ? KIND_PUT : KIND_DELETE,
          op.key,
          op.type === "put" ? op.value! : _EMPTY,
        );
        count++;
      }
    }
    const record = enc.finish();
    const wal = this.#wal!;
    try {
      await wal.append(record);
      if (this.#sync !== "none") await wal.sync();
      else {
        this.#dirty = true;
        this.#walUnsynced += record.length;
        if (this.#walUnsynced >= _WAL_BYTES_PER_SYNC && this.#walSyncing === undefined) {
          this.#startWalSync(wal);
        }
      }
    } catch (e) {
      // The WAL's state is unknown: refuse further writes rather than risk a hole.
      this.#failure = e;
      throw new StorageError("IO", `WAL write failed: ${e}`, { cause: e });
    }
    // The memtable copies keys and values, so it takes them from the batches (as the no-WAL
    // path does), not back out of the record: the encoder's scratch buffer is reused.
    const mem = this.#mem;
    let seq = first - 1;
    for (const p of group) {
      for (const op of p.entries) {
        if (op.type === "put") mem.add(op.key, ++seq, KIND_PUT, op.value!);
        else mem.add(op.key, ++seq, KIND_DELETE, _EMPTY);
      }
    }
    this.#lastSeq = first + count - 1;
  }

  /**
   * Under sync "none", starts an fdatasync of `wal` without making writes wait for it, so the
   * sync at the next memtable switch (which must make the sealed segment durable before the new
   * segment's writes can be) finds at most ~_WAL_BYTES_PER_SYNC unsynced bytes instead of a whole
   * segment. A failure stops the engine, as a failed WAL write does.
   */
  #startWalSync(wal: StorageFile): void {
    this.#walUnsynced = 0;
    const run = wal.sync().catch((e) => {
      if (this.#failure === undefined && !this.#closed) {
        this.#failure = e;
        this.#log(`WAL sync failed, engine stopped: ${e}`);
      }
    }).finally(() => {
      if (this.#walSyncing === run) this.#walSyncing = undefined;
    });
    this.#walSyncing = run;
  }

  /** Waits for a background WAL sync (before the WAL is synced, switched or closed). */
  async #walSyncDone(): Promise<void> {
    while (this.#walSyncing !== undefined) await this.#walSyncing;
  }

  /**
   * Waits until the memtable has room (sealing it when full). LevelDB's policy: from
   * `l0SlowdownWrites` level-0 tables each write group is delayed once by ~1 ms (the compaction
   * catches up while writes keep flowing, instead of every write stopping at once); at
   * `l0StopWrites` tables, and while a full memtable waits for the previous one's flush, writes
   * wait for background progress.
   */
  async #makeRoomForWrite(): Promise<void> {
    if (this.#bg !== undefined && performance.now() - this.#lastYield >= _WRITER_YIELD_MS) {
      // Writers that never wait for I/O (sync "none", no stall) run from microtask to microtask
      // and would starve the background work, which advances only in event-loop turns (worker
      // replies, file I/O, the flush's pauses). Let it run about once a millisecond.
      await _yieldToEventLoop();
      this.#lastYield = performance.now();
    }
    let allowDelay = true;
    for (;;) {
      this.#check();
      const l0 = this.#version.levels[0]!.length;
      if (l0 >= this.#l0Stop) {
        await this.#waitProgress();
        continue;
      }
      if (allowDelay && l0 >= this.#l0Slowdown) {
        allowDelay = false;
        this.#slowdowns++;
        this.#maybeScheduleBg();
        await _delay(1);
        continue;
      }
      if (this.#mem.bytes < this.#memtableBytes) return;
      if (this.#imm !== null) {
        await this.#waitProgress();
        continue;
      }
      await this.#rotate();
      return;
    }
  }

  /**
   * Seals the memtable (it becomes immutable and is flushed in the background). With the WAL on,
   * a new segment is started first and the sealed one synced; without a WAL nothing touches the
   * disk here.
   */
  async #rotate(): Promise<void> {
    if (!this.#walOn) {
      this.#seal(this.#mem.logNumber);
      return;
    }
    const fs = this.#fs;
    const number = this.#state.nextFile++;
    const wal = await fs.openAppend(`${this.#dir}/${_logName(number)}`, { truncate: true });
    const old = this.#wal!;
    // The sealed segment is synced, so only the newest segment can ever have a torn tail, and
    // the new segment's name is made durable before any acknowledged write depends on it.
    await this.#walSyncDone();
    await old.sync();
    this.#walUnsynced = 0;
    await fs.syncDir(this.#dir);
    this.#dirty = false;
    this.#oldWals.push(old);
    this.#wal = wal;
    this.#seal(number);
  }

  /** Makes the memtable immutable (`#imm` must be null) and starts its level-0 flush. */
  #seal(number: number): void {
    this.#imm = this.#mem;
    const arena = this.#spareMemArena;
    this.#spareMemArena = undefined;
    this.#mem = new MemTable(number, arena ? { arena } : this.#memOptions);
    this.#sealedSeq = this.#lastSeq;
    this.#onImm?.();
    this.#maybeScheduleBg();
  }

  #waitProgress(): Promise<void> {
    this.#maybeScheduleBg();
    if (this.#bg === undefined) {
      if (this.#failure !== undefined) return Promise.reject(new ClosedError(`${this.#failure}`));
      return Promise.resolve();
    }
    return new Promise((r) => this.#progressWaiters.push(r));
  }

  #notifyProgress(): void {
    const w = this.#progressWaiters;
    this.#progressWaiters = [];
    for (const r of w) r();
  }

  /**
   * Makes every write issued before this call durable. With the WAL: an fdatasync of it (needed
   * only with `sync: "none"`; cheap otherwise). With `wal: false`: seals the memtable and resolves
   * once it (and any memtable sealed before it) is in level-0 tables recorded by a durable
   * manifest edit; writes issued meanwhile are not held up (they go to the next memtable).
   */
  flush(): Promise<void> {
    try {
      this.#checkAccept();
    } catch (e) {
      return Promise.reject(e);
    }
    if (!this.#walOn) {
      // Ordered after the writes queued before it; the wait itself runs outside the commit loop.
      let upTo = 0;
      return this.#exclusive(() => {
        upTo = this.#lastSeq;
        return Promise.resolve();
      }).then(() => this.#waitDurable(upTo));
    }
    return this.#exclusive(async () => {
      await this.#walSyncDone();
      if (this.#dirty) {
        await this.#wal!.sync();
        this.#dirty = false;
      }
    });
  }

  /**
   * Without a WAL: resolves once every write with a sequence number up to `seq` is in tables
   * recorded by a durable manifest edit, sealing the memtable that holds it if needed. Memtables
   * are flushed one at a time in sealing order, so `#imm === null` means everything sealed so far
   * is durable.
   */
  async #waitDurable(seq: number): Promise<void> {
    for (;;) {
      this.#check();
      if (this.#imm === null) {
        if (seq <= this.#sealedSeq) return;
        if (this.#mem.empty) this.#sealedSeq = this.#lastSeq;
        else this.#seal(this.#mem.logNumber);
        continue;
      }
      await this.#waitBg();
    }
  }

  /** Resolves at the next progress of the background loop (at once if none can come). */
  #waitBg(): Promise<void> {
    this.#maybeScheduleBg();
    if (this.#bg === undefined && this.#bgPaused === 0) return Promise.resolve();
    return new Promise((r) => this.#progressWaiters.push(r));
  }

  /** Alias of {@link KVEngine.flush}. */
  sync(): Promise<void> {
    return this.flush();
  }

  // ---------------------------------------------------------------- reads

  /** The value of `key`, or `undefined`. */
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    try {
      this.#checkOpen();
      if ((++this.#reads & 1023) === 0) this.#reapIdleWorker();
      return Promise.resolve(this._getIn(this.#currentView(), key));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Synchronous {@link KVEngine.get}. */
  getSync(key: Uint8Array): Uint8Array | undefined {
    this.#checkOpen();
    if ((++this.#reads & 1023) === 0) this.#reapIdleWorker();
    return this._getIn(this.#currentView(), key);
  }

  #currentView(): _View {
    return { mem: this.#mem, imm: this.#imm, version: this.#version, seq: this.#lastSeq };
  }

  /** @internal Point lookup in a view. */
  _getIn(view: _View, key: Uint8Array): Uint8Array | undefined {
    if (!(key instanceof Uint8Array)) throw new InvalidArgumentError("key must be a Uint8Array");
    if (key.length === 0) throw new InvalidArgumentError("empty key");
    if (key.length > this.#maxKey) {
      throw new InvalidArgumentError(`key of ${key.length} bytes exceeds ${this.#maxKey}`);
    }
    const seq = view.seq;
    let e = view.mem.get(key, seq);
    if (e === undefined && view.imm !== null) e = view.imm.get(key, seq);
    if (e !== undefined) return e.kind === KIND_PUT ? copyOut(e.value) : undefined;
    const levels = view.version.levels;
    const hash = bloomHash(key);
    const l0 = levels[0]!;
    for (let i = l0.length - 1; i >= 0; i--) {
      const t = l0[i]!;
      if (compareBytes(key, t.smallest) < 0 || compareBytes(key, t.largest) > 0) continue;
      const f = t.table.get(key, seq, hash);
      if (f !== undefined) return f.kind === KIND_PUT ? f.value : undefined;
    }
    for (let l = 1; l < levels.length; l++) {
      const lv = levels[l]!;
      if (lv.length === 0) continue;
      let lo = 0;
      let hi = lv.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareBytes(lv[mid]!.largest, key) < 0) lo = mid + 1;
        else hi = mid;
      }
      if (lo >= lv.length) continue;
      const t = lv[lo]!;
      if (compareBytes(key, t.smallest) < 0) continue;
      const f = t.table.get(key, seq, hash);
      if (f !== undefined) return f.kind === KIND_PUT ? f.value : undefined;
    }
    return undefined;
  }

  #iterator(view: _View): InternalIterator {
    const children: InternalIterator[] = [view.mem.iterator()];
    if (view.imm !== null) children.push(view.imm.iterator());
    const levels = view.version.levels;
    for (let i = levels[0]!.length - 1; i >= 0; i--) children.push(levels[0]![i]!.table.iterator());
    for (let l = 1; l < levels.length; l++) {
      const lv = levels[l]!;
      if (lv.length === 0) continue;
      children.push(
        new LevelIterator(
          lv.map((t) => t.table),
          lv.map((t) => t.smallest),
          lv.map((t) => t.largest),
        ),
      );
    }
    return new MergingIterator(children);
  }

  /**
   * The live pairs within the bounds, in key order. The scan reads a consistent snapshot taken
   * when it starts; writes during the scan are not seen.
   */
  scan(options: ScanOptions = {}): AsyncIterable<KeyValue> {
    this.#checkOpen();
    if ((++this.#reads & 63) === 0) this.#reapIdleWorker();
    return {
      [Symbol.asyncIterator]: () => this.#scanIterator(options, undefined, () => !this.#closed),
    };
  }

  /** Synchronous scan into an array (for callers that want everything at once). */
  scanSync(options: ScanOptions = {}): KeyValue[] {
    this.#checkOpen();
    return [..._userScan(this.#iterator(this.#currentView()), this.#lastSeq, options)];
  }

  /** @internal An async iterable over a snapshot's view; `alive()` false stops it. */
  _scanIn(view: _View, options: ScanOptions, alive: () => boolean): AsyncIterable<KeyValue> {
    return { [Symbol.asyncIterator]: () => this.#scanIterator(options, view, alive) };
  }

  /**
   * A plain async iterator over a sync scan (no async-generator machinery per pair). Without a
   * `view`, it pins the current view at the first `next()` and releases it at the end, on
   * `return()` (a `break`) or on error.
   */
  #scanIterator(
    options: ScanOptions,
    pinned: _View | undefined,
    alive: () => boolean,
  ): AsyncIterator<KeyValue> {
    let gen: Generator<KeyValue> | undefined;
    let owned: _View | undefined;
    let finished = false;
    const release = () => {
      finished = true;
      if (owned !== undefined) {
        const v = owned;
        owned = undefined;
        this._releaseView(v);
      }
    };
    const end: IteratorReturnResult<undefined> = { done: true, value: undefined };
    return {
      next: (): Promise<IteratorResult<KeyValue>> => {
        if (finished) return Promise.resolve(end);
        try {
          if (!alive()) throw new ClosedError("scan outlived its engine or snapshot");
          if (gen === undefined) {
            let view = pinned;
            if (view === undefined) view = owned = this.#acquireView();
            gen = _userScan(this.#iterator(view), view.seq, options);
          }
          const r = gen.next();
          if (r.done) {
            release();
            return Promise.resolve(end);
          }
          return Promise.resolve(r);
        } catch (e) {
          release();
          return Promise.reject(e);
        }
      },
      return: (): Promise<IteratorResult<KeyValue>> => {
        release();
        return Promise.resolve(end);
      },
    };
  }

  #acquireView(): _View {
    const view = this.#currentView();
    this.#ref(view.version);
    this.#snapshots.set(view.seq, (this.#snapshots.get(view.seq) ?? 0) + 1);
    return view;
  }

  /** @internal */
  _releaseView(view: _View): void {
    const n = this.#snapshots.get(view.seq)! - 1;
    if (n === 0) this.#snapshots.delete(view.seq);
    else this.#snapshots.set(view.seq, n);
    this.#unref(view.version);
  }

  /**
   * A consistent point-in-time view (reads see exactly the writes acknowledged before it).
   * Release it when done: until then compactions keep the versions it needs.
   */
  snapshot(): Snapshot {
    this.#checkOpen();
    return new Snapshot(this, this.#acquireView());
  }

  // ---------------------------------------------------------------- bulk replace

  /**
   * Replaces the whole content with `pairs` (strictly ascending keys), atomically with respect
   * to crashes and to other operations: writes queued before it apply first, those after it
   * apply on top of the new content, and a crash leaves the old or the new content, never a
   * mix. The new content is durable when the promise resolves (with or without a WAL), so a
   * caller may then drop its own copy. Snapshots taken earlier keep reading the old content.
   *
   * @throws {InvalidArgumentError} keys not strictly ascending, or a bad key or value.
   */
  replaceAll(pairs: AsyncIterable<KeyValue> | Iterable<KeyValue>): Promise<void> {
    try {
      this.#checkAccept();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#exclusive(() => this.#pauseBgWhile(() => this.#replaceAll(pairs)));
  }

  async #replaceAll(pairs: AsyncIterable<KeyValue> | Iterable<KeyValue>): Promise<void> {
    const seq = this.#lastSeq + 1;
    const level = NUM_LEVELS - 1;
    const added: TableMeta[] = [];
    let builder = new TableBuilder();
    let prev: Uint8Array | undefined;
    const finish = async () => {
      if (builder.entries === 0) return;
      const { bytes, info } = builder.finish();
      const number = this.#state.nextFile++;
      await writeTableFile(this.#fs, `${this.#dir}/${_tableName(number)}`, bytes);
      added.push({
        number,
        level,
        size: info.size,
        entries: info.entries,
        smallest: info.smallest,
        largest: info.largest,
      });
      builder = new TableBuilder();
    };
    try {
      for await (const kv of pairs) {
        const { key, value } = kv;
        this.#validate([{ type: "put", key, value }]);
        if (prev !== undefined && compareBytes(prev, key) >= 0) {
          throw new InvalidArgumentError("replaceAll needs strictly ascending keys");
        }
        builder.add(key, seq, KIND_PUT, value);
        prev = builder.lastKey;
        if (builder.estimatedSize >= this.#tableBytes) {
          prev = prev.slice();
          await finish();
        }
      }
      await finish();
    } catch (e) {
      for (const t of added) await this.#fs.remove(`${this.#dir}/${_tableName(t.number)}`);
      throw e;
    }
    const logNumber = this.#state.nextFile++;
    const wal = this.#walOn
      ? await this.#fs.openAppend(`${this.#dir}/${_logName(logNumber)}`, { truncate: true })
      : undefined;
    const del: Array<[number, number]> = [];
    for (const lv of this.#state.levels) for (const t of lv) del.push([t.level, t.number]);
    this.#lastSeq = seq;
    await this.#walSyncDone();
    try {
      await this.#logAndApply({ add: added, del, logNumber, lastSeq: seq });
    } catch (e) {
      this.#failure = e;
      wal?.close();
      throw e;
    }
    // Durable from here on (the manifest edit is synced), WAL or not.
    const oldWals = this.#wal === undefined ? this.#oldWals : [this.#wal, ...this.#oldWals];
    this.#oldWals = [];
    this.#wal = wal;
    this.#dirty = false;
    this.#mem = new MemTable(logNumber, this.#memOptions);
    this.#imm = null;
    this.#sealedSeq = seq;
    for (const f of oldWals) {
      f.close();
      await this.#fs.remove(f.path);
    }
  }

  // ---------------------------------------------------------------- background work

  #maybeScheduleBg(): void {
    if (
      this.#bg !== undefined || this.#closed || this.#bgPaused > 0 || this.#failure !== undefined
    ) return;
    // A manual compaction's next step is decided (and taken) by the loop's own pick.
    const manual = this.#manual !== undefined && !this.#closeFlush;
    if (this.#imm === null && !manual && this.#pickCompaction() === undefined) return;
    this.#bg = this.#bgLoop().finally(() => {
      this.#bg = undefined;
      this.#notifyProgress();
      this.#maybeScheduleBg();
      if (this.#bg === undefined && this.#worker !== undefined) this.#idleWorker();
    });
  }

  /**
   * Terminates the worker when it has had no job for a second. The idle timer does the same,
   * but a caller that issues reads back to back (each resolves at once, in a microtask) starves
   * timers, so reads check too; a worker kept through a long read phase holds tens of MiB.
   */
  #reapIdleWorker(): void {
    if (
      this.#keepWorker || this.#worker === undefined || this.#workerPending.size > 0 ||
      performance.now() - this.#workerBusyAt < _WORKER_IDLE_MS
    ) return;
    this.#stopWorker();
  }

  /** Terminates the worker (if any) and its idle timer; the next job starts a new one. */
  #stopWorker(): void {
    clearTimeout(this.#workerIdle);
    this.#workerIdle = undefined;
    this.#worker?.terminate();
    this.#worker = undefined;
  }

  /**
   * Terminates the worker after it has been idle for a second: an idle worker would keep the
   * process alive, but starting one per compaction costs a module load and a cold JIT.
   */
  #idleWorker(): void {
    clearTimeout(this.#workerIdle);
    if (this.#keepWorker) return;
    this.#workerIdle = setTimeout(() => {
      this.#workerIdle = undefined;
      // Busy again: the loop's end re-arms the timer.
      if (this.#bg !== undefined || this.#workerPending.size > 0) return;
      this.#stopWorker();
    }, _WORKER_IDLE_MS);
  }

  async #bgLoop(): Promise<void> {
    if (this.#bgDefer) {
      this.#bgDefer = false;
      await _yieldToEventLoop();
    }
    while (!this.#closed && this.#bgPaused === 0 && this.#failure === undefined) {
      try {
        // A compaction bound for the worker starts first: the memtable is flushed here while the
        // worker merges (see #compactOnWorker), so neither waits for the other.
        const c = this.#imm === null || this.#useWorker ? this.#pickCompaction() : undefined;
        if (this.#imm !== null && (c === undefined || !this.#onWorker(c))) await this.#flushImm();
        else if (c === undefined) return;
        else await this.#compact(c);
      } catch (e) {
        if (this.#closed) return;
        this.#failure = e;
        this.#log(`background work failed, engine stopped: ${e}`);
        this.#failQueued(new ClosedError(`engine stopped after a failure: ${e}`, { cause: e }));
        return;
      }
      this.#notifyProgress();
    }
  }

  async #pauseBgWhile(fn: () => Promise<void>): Promise<void> {
    this.#bgPaused++;
    try {
      while (this.#bg !== undefined) await this.#bg.catch(() => {});
      await fn();
    } finally {
      this.#bgPaused--;
      this.#maybeScheduleBg();
      this.#notifyProgress(); // flush() without a WAL may wait on a flush the pause held back
    }
  }

  async #flushImm(): Promise<void> {
    const imm = this.#imm!;
    let add: TableMeta[];
    // The flush at close runs here when no worker is up: starting one would cost more than it.
    if (this.#useWorker && (this.#worker !== undefined || !this.#closeFlush)) {
      add = await this.#flushOnWorker(imm);
    } else {
      const it = imm.iterator();
      it.seekToFirst();
      add = await this.#writeTables(it, 0, { dropAll: false, splitBytes: Infinity });
    }
    await this.#logAndApply({ add, logNumber: this.#mem.logNumber });
    this.#imm = null;
    // With no scan or snapshot open, nothing can read the flushed memtable any more (gets copy
    // what they return): the next memtable reuses its arena instead of allocating 4 MiB, while
    // the dead one would wait for a full GC.
    if (this.#snapshots.size === 0 && imm.arenaBytes < 2 * this.#memOptions.arenaBytes!) {
      this.#spareMemArena = imm.releaseArena();
    }
    const old = this.#oldWals;
    this.#oldWals = [];
    for (const f of old) {
      f.close();
      await this.#fs.remove(f.path);
    }
  }

  #smallestSnapshot(): number {
    let s = this.#lastSeq;
    for (const seq of this.#snapshots.keys()) if (seq < s) s = seq;
    return s;
  }

  #maxBytes(level: number): number {
    return this.#level1Bytes * 10 ** (level - 1);
  }

  #pickCompaction(): { level: number; inputs: _LiveTable[]; next: _LiveTable[] } | undefined {
    // Once close's flush has begun (every write is in), only memtable flushes run.
    if (this.#closeFlush) return undefined;
    const levels = this.#version.levels;
    let best = -1;
    let bestScore = 1;
    if (levels[0]!.length >= this.#l0Trigger) {
      best = 0;
      bestScore = levels[0]!.length / this.#l0Trigger;
    }
    for (let l = 1; l < NUM_LEVELS - 1; l++) {
      let bytes = 0;
      for (const t of levels[l]!) bytes += t.size;
      const score = bytes / this.#maxBytes(l);
      if (score > bestScore) {
        best = l;
        bestScore = score;
      }
    }
    if (best < 0) return this.#manual === undefined ? undefined : this.#pickManual();
    let inputs: _LiveTable[];
    if (best === 0) inputs = [...levels[0]!];
    else {
      const lv = levels[best]!;
      const ptr = this.#compactPointer[best];
      const pick = lv.find((t) => ptr === undefined || compareBytes(t.smallest, ptr) > 0) ?? lv[0]!;
      inputs = [pick];
    }
    return { level: best, inputs, next: this.#overlapping(best + 1, inputs) };
  }

  /**
   * The next step of the manual compaction, when no automatic one is due: all of the next
   * populated level above the target, with what overlaps it below. Taking it advances the
   * manual compaction past that level (tables flushed meanwhile are not waited for); past the
   * target the manual compaction is done.
   */
  #pickManual(): { level: number; inputs: _LiveTable[]; next: _LiveTable[] } | undefined {
    const m = this.#manual!;
    // A memtable sealed by the request (or since) is flushed first: the merge must cover it.
    if (this.#imm !== null) return undefined;
    const levels = this.#version.levels;
    if (m.target < 0) {
      m.target = 1;
      for (let l = 1; l < NUM_LEVELS; l++) if (levels[l]!.length > 0) m.target = l;
    }
    while (m.level < m.target && levels[m.level]!.length === 0) m.level++;
    if (m.level >= m.target) {
      this.#manual = undefined;
      this.#manualCompactions++;
      return undefined;
    }
    const level = m.level++;
    const inputs = [...levels[level]!];
    return { level, inputs, next: this.#overlapping(level + 1, inputs) };
  }

  #overlapping(level: number, inputs: _LiveTable[]): _LiveTable[] {
    let lo = inputs[0]!.smallest;
    let hi = inputs[0]!.largest;
    for (const t of inputs) {
      if (compareBytes(t.smallest, lo) < 0) lo = t.smallest;
      if (compareBytes(t.largest, hi) > 0) hi = t.largest;
    }
    return this.#version.levels[level]!.filter((t) =>
      compareBytes(t.largest, lo) >= 0 && compareBytes(t.smallest, hi) <= 0
    );
  }

  /** True when #compact would run `c` on the worker (not a trivial move, enough input). */
  #onWorker(c: { level: number; inputs: _LiveTable[]; next: _LiveTable[] }): boolean {
    if (!this.#useWorker || (c.level > 0 && c.inputs.length === 1 && c.next.length === 0)) {
      return false;
    }
    let inputBytes = 0;
    for (const t of c.inputs) inputBytes += t.size;
    for (const t of c.next) inputBytes += t.size;
    return inputBytes >= this.#workerMinBytes;
  }

  async #compact(c: { level: number; inputs: _LiveTable[]; next: _LiveTable[] }): Promise<void> {
    const out = c.level + 1;
    const del: Array<[number, number]> = [];
    for (const t of c.inputs) del.push([c.level, t.number]);
    for (const t of c.next) del.push([out, t.number]);
    if (c.level > 0) this.#compactPointer[c.level] = c.inputs[c.inputs.length - 1]!.largest;
    if (c.level > 0 && c.inputs.length === 1 && c.next.length === 0) {
      // Trivial move: no overlap below, so the table just changes level.
      const t = c.inputs[0]!;
      await this.#logAndApply({ del, add: [{ ...this.#metaOf(t), level: out }] });
      return;
    }
    if (this.#onWorker(c)) {
      const add = await this.#compactOnWorker([...c.inputs].reverse(), c.next, out);
      await this.#logAndApply({ del, add });
      return;
    }
    const children: InternalIterator[] = [];
    for (const t of [...c.inputs].reverse()) children.push(t.table.sequentialIterator());
    if (c.next.length > 0) children.push(_sequentialLevel(c.next));
    const it = new MergingIterator(children);
    it.seekToFirst();
    const add = await this.#writeTables(it, out, { dropAll: true, splitBytes: this.#tableBytes });
    await this.#logAndApply({ del, add });
  }

  #metaOf(t: _LiveTable): TableMeta {
    return {
      number: t.number,
      level: t.level,
      size: t.size,
      entries: t.entries,
      smallest: t.smallest,
      largest: t.largest,
    };
  }

  /** Key ranges of the levels below `level` (for tombstone dropping). */
  #deeperRanges(level: number): LevelRanges[] {
    const out: LevelRanges[] = [];
    for (let l = level + 1; l < NUM_LEVELS; l++) {
      const lv = this.#version.levels[l]!;
      if (lv.length > 0) {
        out.push({
          smallest: lv.map((t) => t.smallest),
          largest: lv.map((t) => t.largest),
        });
      }
    }
    return out;
  }

  /**
   * Writes the entries of `it` as tables of `level` on this thread. With `dropAll`, drops
   * versions shadowed by a newer version visible to every snapshot, and tombstones no deeper
   * level may need.
   */
  async #writeTables(
    it: InternalIterator,
    level: number,
    options: { dropAll: boolean; splitBytes: number },
  ): Promise<TableMeta[]> {
    const out: TableMeta[] = [];
    await writeCompacted(it, {
      dropAll: options.dropAll,
      smallestSnapshot: this.#smallestSnapshot(),
      deeper: options.dropAll ? this.#deeperRanges(level) : [],
      splitBytes: options.splitBytes,
      emit: async (bytes, info) => {
        const number = this.#state.nextFile++;
        await writeTableFile(this.#fs, `${this.#dir}/${_tableName(number)}`, bytes);
        out.push({ number, level, ...info });
      },
      pause: async () => {
        await _yieldToEventLoop(); // let foreground reads and writes run
        if (this.#closed) throw new ClosedError("closed during background work");
        // A long compaction must not stall writers behind a full memtable: flush it now.
        if (options.dropAll && this.#imm !== null && !this.#inlineFlush) await this.#flushInline();
      },
    });
    return out;
  }

  async #flushInline(): Promise<void> {
    this.#inlineFlush = true;
    try {
      await this.#flushImm();
    } finally {
      this.#inlineFlush = false;
    }
    this.#notifyProgress();
  }

  /**
   * Posts `req` to the worker (started on first use) and resolves with its reply. Replies are
   * matched to jobs by id, so several jobs may be outstanding (the worker runs them interleaved).
   */
  #workerCall(req: WorkerRequest, transfer: Transferable[] = []): Promise<CompactionReply> {
    clearTimeout(this.#workerIdle);
    this.#workerIdle = undefined;
    this.#workerBusyAt = performance.now();
    const w = this.#worker ??= this.#startWorker();
    req.collectAboveBytes = this.#workerRecycleBytes;
    return new Promise<CompactionReply>((resolve, reject) => {
      this.#workerPending.set(req.id, { resolve, reject });
      w.postMessage(req, transfer);
    });
  }

  /** Starts a worker whose replies settle the jobs in `#workerPending`. */
  #startWorker(): Worker {
    const worker = new Worker(_WORKER_URL.href, { type: "module" });
    this.#workerStarts++;
    const pending = this.#workerPending;
    // A kept worker first compiles its code on synthetic tables (see WarmUpRequest), so that the
    // first real flush does not come with V8's compiler threads busy on top of it.
    if (this.#keepWorker) {
      const id = ++this.#jobId;
      pending.set(id, {
        resolve: (r) => {
          if (r.ok) this.#workerWarmUps++;
          // A close() right after open cancels it (CancelRequest): nothing went wrong then.
          else if (r.kind !== "Cancelled") {
            this.#log(`compaction worker warm-up failed: ${r.message}`);
          }
        },
        reject: () => {},
      });
      worker.postMessage({ kind: "warm", id } satisfies WorkerRequest);
    }
    worker.onmessage = (ev: MessageEvent<CompactionReply>) => {
      const job = pending.get(ev.data.id);
      pending.delete(ev.data.id);
      this.#workerBusyAt = performance.now();
      if (ev.data.collected) this.#workerCollections++;
      // A V8 heap grows under sustained load (its young generation grows and never shrinks, its
      // garbage is collected lazily) and gives nothing back: a worker that has outgrown the
      // limit is replaced between jobs, which frees all of it. The new one starts now, so that
      // its start-up overlaps this thread's work instead of delaying the next job.
      if (
        pending.size === 0 && this.#worker === worker &&
        (ev.data.heapBytes ?? 0) > this.#workerRecycleBytes
      ) {
        worker.terminate();
        this.#worker = this.#closing === undefined ? this.#startWorker() : undefined;
        this.#workerRestarts++;
      }
      job?.resolve(ev.data);
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      const e = new StorageError("IO", `compaction worker failed: ${ev.message}`);
      const jobs = [...pending.values()];
      pending.clear();
      for (const job of jobs) job.reject(e);
    };
    return worker;
  }

  /**
   * Writes the level-0 table of a sealed memtable on the worker (which interleaves it with a
   * running compaction): a copy of the arena (one memcpy, ~1 ms for 4 MiB; readers keep using the
   * table here meanwhile) is transferred to the worker, which walks it and writes and syncs
   * `flush-<id>.tmp`, renamed here to its table number (live once the caller records it in the
   * manifest). The job is awaited even if close() starts meanwhile, so the worker is never
   * terminated mid-write.
   */
  async #flushOnWorker(imm: MemTable): Promise<TableMeta[]> {
    const id = ++this.#jobId;
    const arena = imm.copyArenaInto(this.#spareArena);
    this.#spareArena = undefined;
    const req: FlushRequest = { kind: "flush", id, arena, path: `${this.#dir}/flush-${id}.tmp` };
    const reply = await this.#workerCall(req, [arena]);
    this.#spareArena = reply.arena;
    if (this.#closed) throw new ClosedError("closed during flush");
    if (!reply.ok) throw new StorageError("IO", `flush failed: ${reply.message}`);
    this.#workerFlushes++;
    return await this.#installWorkerTables(reply.outputs, 0);
  }

  /** Runs a compaction on the worker, flushing memtables here meanwhile; returns outputs. */
  async #compactOnWorker(
    inputs: _LiveTable[],
    next: _LiveTable[],
    level: number,
  ): Promise<TableMeta[]> {
    const id = ++this.#jobId;
    const req: CompactionRequest = {
      id,
      inputs: inputs.map((t) => ({ path: t.path, number: t.number })),
      run: next.map((t) => ({
        path: t.path,
        number: t.number,
        smallest: t.smallest,
        largest: t.largest,
      })),
      smallestSnapshot: this.#smallestSnapshot(),
      deeper: this.#deeperRanges(level),
      splitBytes: this.#tableBytes,
      tmpPrefix: `${this.#dir}/compaction-${id}-`,
    };
    const job = this.#workerCall(req);
    const settled = job.then((r) => ({ r }), (e: unknown) => ({ e }));
    let reply: CompactionReply;
    try {
      for (;;) {
        if (this.#imm !== null && !this.#inlineFlush && !this.#closed) {
          await this.#flushInline();
          continue;
        }
        const immReady = new Promise<undefined>((r) => this.#onImm = () => r(undefined));
        const res = await Promise.race([settled, immReady]);
        this.#onImm = undefined;
        if (res === undefined) continue;
        if ("e" in res) throw res.e;
        reply = res.r;
        break;
      }
    } catch (e) {
      // An inline flush failed (or close() interrupted it) while the worker is still writing:
      // wait for the job, or the worker would be terminated mid-write and its thread could create
      // files after close() released the directory. Its outputs stay as *.tmp (deleted on open).
      this.#onImm = undefined;
      await settled;
      throw e;
    }
    if (this.#closed) {
      // Finished while close() waited: its tables will never be installed.
      if (reply.ok) {
        for (const o of reply.outputs) await this.#fs.remove(o.path).catch(() => {});
      }
      throw new ClosedError("closed during compaction");
    }
    if (reply.ok) this.#workerJobs++;
    if (!reply.ok) {
      if (reply.kind === "Corruption") {
        throw new CorruptionError(reply.message.replace(/ \(file .*\)$/, ""), {
          file: reply.file!,
          offset: reply.offset!,
        });
      }
      throw new StorageError("IO", `compaction failed: ${reply.message}`);
    }
    return await this.#installWorkerTables(reply.outputs, level);
  }

  /** Renames the worker's finished temporary tables to their numbered names, for `level`. */
  async #installWorkerTables(
    outputs: Extract<CompactionReply, { ok: true }>["outputs"],
    level: number,
  ): Promise<TableMeta[]> {
    const out: TableMeta[] = [];
    for (const o of outputs) {
      const number = this.#state.nextFile++;
      await this.#fs.rename(o.path, `${this.#dir}/${_tableName(number)}`);
      out.push({
        number,
        level,
        size: o.size,
        entries: o.entries,
        smallest: o.smallest,
        largest: o.largest,
      });
    }
    return out;
  }

  /**
   * Flushes the memtable and compacts every level into the bottom-most populated one,
   * dropping shadowed versions and tombstones; resolves once the replaced files are
   * deleted. Used by tests and benchmarks; compaction otherwise runs by itself.
   */
  compact(): Promise<void> {
    try {
      this.#checkAccept();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#exclusive(() =>
      this.#pauseBgWhile(async () => {
        if (!this.#mem.empty) {
          if (this.#imm !== null) await this.#flushImm();
          await this.#rotate();
        }
        if (this.#imm !== null) await this.#flushImm();
        let target = 1;
        for (let l = 1; l < NUM_LEVELS; l++) if (this.#version.levels[l]!.length > 0) target = l;
        for (let l = 0; l < target; l++) {
          const inputs = this.#version.levels[l]!;
          if (inputs.length === 0) continue;
          const all = [...inputs];
          const next = this.#overlapping(l + 1, all);
          const del: Array<[number, number]> = [];
          for (const t of all) del.push([l, t.number]);
          for (const t of next) del.push([l + 1, t.number]);
          // One pass over each input, read in chunks, uncached (as the worker's compactions).
          const children: InternalIterator[] = [];
          if (l === 0) {
            for (const t of [...all].reverse()) children.push(t.table.sequentialIterator());
          } else children.push(_sequentialLevel(all));
          if (next.length > 0) children.push(_sequentialLevel(next));
          const it = new MergingIterator(children);
          it.seekToFirst();
          const add = await this.#writeTables(it, l + 1, {
            dropAll: true,
            splitBytes: this.#tableBytes,
          });
          await this.#logAndApply({ del, add });
        }
        // The replaced tables' files go before compact() resolves (those an open
        // iterator or snapshot still reads go when it is released), so disk use
        // measured right after is the compacted size.
        while (this.#removals.size > 0) await Promise.all([...this.#removals]);
      })
    );
  }

  /**
   * Compacts every level into the bottom-most populated one, as {@link KVEngine.compact} does,
   * but as background work: reads and writes go on meanwhile, merges run on the worker thread
   * (when the engine has one), and automatic compactions keep their turn. What was written
   * before the call is covered (the memtable is sealed first): the space of deleted and
   * overwritten keys is reclaimed, tombstones are dropped. Resolves once the replaced files
   * are deleted (those an open snapshot still reads, once it is released). A call while one is
   * in progress restarts it from the top, and both resolve when it completes.
   */
  async compactInBackground(): Promise<void> {
    this.#checkAccept();
    // Sealed in the commit loop, after the writes queued before the call, as a full memtable
    // is: waiting (as writes then do) for the memtable sealed before it to be flushed.
    await this.#exclusive(async () => {
      if (!this.#mem.empty) {
        while (this.#imm !== null) await this.#waitProgress();
        await this.#rotate();
      }
      if (this.#manual === undefined) this.#manual = { level: 0, target: -1 };
      else this.#manual.level = 0;
      this.#maybeScheduleBg();
    });
    const m = this.#manual;
    while (m !== undefined && this.#manual === m) {
      this.#checkAccept(); // close() stops background work: no waiting past its start
      await this.#waitBg();
    }
    while (this.#removals.size > 0) await Promise.all([...this.#removals]);
  }

  // ---------------------------------------------------------------- introspection & close

  /** Counters for tests, metrics and benchmarks. */
  stats(): {
    levels: Array<{ tables: number; bytes: number }>;
    memtableBytes: number;
    lastSeq: number;
    cacheHits: number;
    cacheMisses: number;
    workerCompactions: number;
    workerFlushes: number;
    workerRestarts: number;
    workerStarts: number;
    workerWarmUps: number;
    workerCollections: number;
    workerRunning: boolean;
    slowdowns: number;
    manualCompactions: number;
  } {
    return {
      levels: this.#version.levels.map((lv) => ({
        tables: lv.length,
        bytes: lv.reduce((s, t) => s + t.size, 0),
      })),
      memtableBytes: this.#mem.bytes + (this.#imm?.bytes ?? 0),
      lastSeq: this.#lastSeq,
      cacheHits: this.#cache.hits,
      cacheMisses: this.#cache.misses,
      workerCompactions: this.#workerJobs,
      workerFlushes: this.#workerFlushes,
      workerRestarts: this.#workerRestarts,
      workerStarts: this.#workerStarts,
      workerWarmUps: this.#workerWarmUps,
      workerCollections: this.#workerCollections,
      workerRunning: this.#worker !== undefined,
      slowdowns: this.#slowdowns,
      manualCompactions: this.#manualCompactions,
    };
  }

  /**
   * Waits for queued writes, makes them durable (syncs the WAL whatever the sync mode; without a
   * WAL, writes the memtables to level-0 tables), stops background work and releases the
   * directory. Writes and other operations started after close() begins are
   * refused with {@link ClosedError}. When the promise resolves nothing of this engine touches
   * the directory any more. Idempotent (concurrent calls share one close).
   */
  close(): Promise<void> {
    if (this.#closed || this.#lock === undefined) return Promise.resolve();
    return this.#closing ??= this.#closeNow();
  }

  /**
   * Every task that can touch the directory is waited for before the lock is released: the
   * commit loop (WAL appends, memtable switches), the background loop (flushes, in-thread and
   * worker compactions, manifest writes, WAL deletions), the manifest chain, and table deletions
   * started when a version was dropped.
   */
  async #closeNow(): Promise<void> {
    // Writes queued before close() are committed; later ones are refused by #check().
    if (this.#failure === undefined) {
      await new Promise<void>((resolve) => {
        this.#queue.push({
          fn: async () => {
            if (!this.#walOn) return await this.#waitDurable(this.#lastSeq);
            await this.#walSyncDone();
            if (this.#dirty) await this.#wal!.sync();
            this.#dirty = false;
            if (this.#flushOnClose) await this.#flushForClose();
          },
          resolve,
          reject: () => resolve(),
        });
        if (!this.#committing) this.#commitRun = this.#commitLoop();
      });
    }
    this.#closed = true;
    this.#failQueued(new ClosedError());
    await this.#commitRun.catch(() => {});
    await this.#walSyncDone();
    this.#onImm?.();
    // Everything written is durable by now: a compaction running on the worker is told to stop
    // at its next pause and remove what it wrote (a long merge would otherwise hold close() up
    // for seconds), and is then waited for: terminating the worker mid-write would leave its
    // thread writing into the directory after the lock is released.
    this.#worker?.postMessage({ kind: "cancel", id: 0 } satisfies WorkerRequest);
    while (this.#bg !== undefined) await this.#bg.catch(() => {});
    await this.#manifestChain;
    while (this.#removals.size > 0) await Promise.all([...this.#removals]);
    this.#stopWorker();
    this.#notifyProgress();
    this.#closeFiles();
    this.#lock?.release();
    this.#lock = undefined;
  }

  /**
   * At close, with the WAL on and synced: seals the memtable into a fresh segment and waits until
   * every sealed memtable is in level-0 tables, so the manifest's log number passes every segment
   * that holds data and the next open replays none. Runs in the commit loop (no write can slip in).
   */
  async #flushForClose(): Promise<void> {
    this.#closeFlush = true;
    try {
      if (!(await this.#settleImm()) || this.#mem.empty) return;
      await this.#rotate();
      await this.#settleImm();
    } catch (e) {
      this.#log(`flush at close failed, the next open replays the WAL: ${e}`);
    }
  }

  /**
   * Waits until no memtable awaits its flush; false if background work is paused, throws if it
   * failed.
   */
  async #settleImm(): Promise<boolean> {
    while (this.#imm !== null) {
      this.#maybeScheduleBg();
      if (this.#bg === undefined) {
        this.#check();
        return false;
      }
      await this.#waitProgress();
    }
    return true;
  }

  #closeFiles(): void {
    this.#wal?.close();
    for (const f of this.#oldWals) f.close();
    this.#manifest?.close();
    for (const t of this.#live.values()) t.close();
    this.#live.clear();
  }
}

/** One pass over the sorted, disjoint tables `ts` of a level ≥ 1 (chunked, uncached reads). */
function _sequentialLevel(ts: _LiveTable[]): InternalIterator {
  return new LevelIterator(
    ts.map((t) => t.table),
    ts.map((t) => t.smallest),
    ts.map((t) => t.largest),
    true,
  );
}

/** Applies snapshot visibility, tombstones, bounds and limit over an internal iterator. */
const _NO_VALUE = new Uint8Array(0);

function* _userScan(it: InternalIterator, seq: number, options: ScanOptions): Generator<KeyValue> {
  const { prefix, limit, keysOnly } = options;
  let start = options.start;
  let end = options.end;
  if (prefix !== undefined && prefix.length > 0) {
    if (start === undefined || compareBytes(start, prefix) < 0) start = prefix;
    const pe = prefixEnd(prefix);
    if (pe !== undefined && (end === undefined || compareBytes(pe, end) < 0)) end = pe;
  }
  if (limit !== undefined && limit <= 0) return;
  let n = 0;
  if (start !== undefined) it.seek(start, seq);
  else it.seekToFirst();
  let last: Uint8Array | undefined;
  while (it.valid) {
    const k = it.key;
    if (end !== undefined && compareBytes(k, end) >= 0) return;
    if (it.seq <= seq && (last === undefined || !equalBytes(last, k))) {
      last = k;
      if (it.kind === KIND_PUT) {
        if (prefix === undefined || hasPrefix(k, prefix)) {
          yield { key: k.slice(), value: keysOnly ? _NO_VALUE : copyOut(it.value) };
          if (limit !== undefined && ++n >= limit) return;
        }
      }
    }
    it.next();
  }
}
