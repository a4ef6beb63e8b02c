/**
 * `RaftLogStore`: the Raft log on disk (format: raft/log_format.md).
 *
 * The log is a sequence of segment files `NNNNNNNNNN.rlog` of checksummed records
 * (storage/record.ts framing). Every mutation (`append`, `setHardState`, `applySnapshot`,
 * `createSnapshot`, `compact`) updates the in-memory view at once (so the core's synchronous
 * `entries()`/`term()` see it) and buffers a record; `sync()` writes everything buffered and
 * fsyncs once (group commit). Entry records are encoded at `sync()`, straight into one write
 * buffer the store reuses (no per-entry buffers). Recovery replays the segments and restores the hard state and the
 * log exactly as of the last completed `sync()`: a torn tail of the last segment is truncated, a
 * bad record anywhere else is a `LogCorruptionError` naming the file and offset.
 *
 * Memory: entries not yet compacted are held in memory (bounded by compaction).
 *
 * @module
 */
import {
  encodeRecord,
  encodeRecordInto,
  readRecord,
  RECORD_HEADER_SIZE,
  recordCrc,
} from "../storage/record.ts";
import {
  CODEC_VERSION,
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  encodedEntrySize,
  encodeEntryInto,
  encodeHardState,
  encodeSnapshot,
} from "./codec.ts";
import { CodecError, LogCorruptionError, RaftError } from "./errors.ts";
import { MemoryStorage } from "./memory_storage.ts";
import type { ConfState, Entry, HardState, LogStorage, Snapshot } from "./types.ts";

/** Record types of the Raft log. These values reach the disk: never change them. */
export const RaftRecordType = {
  /** First record of every segment: the state carried over from older segments. */
  SegmentStart: 1,
  /** One log entry (codec `encodeEntry`). Overwrites entries at ≥ its index. */
  Entry: 2,
  /** A hard state (codec `encodeHardState`). */
  HardState: 3,
  /** A snapshot installed from the leader: the log restarts after it (codec `encodeSnapshot`). */
  SnapshotInstall: 4,
  /** A snapshot taken locally: the log is kept (codec `encodeSnapshot`). */
  SnapshotMeta: 5,
  /** Entries ≤ index are discarded: `version:u8 index:u64le term:u64le`. */
  Compact: 6,
} as const;

/** Default segment size before rolling to a new file (64 MiB). */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;

const SEGMENT_SUFFIX = ".rlog";
const EMPTY = new Uint8Array(0);

/** Options of {@linkcode RaftLogStore.open}. */
export interface RaftLogStoreOptions {
  /** Roll to a new segment after this many bytes. Default 64 MiB. */
  segmentBytes?: number;
  /** Configuration of a brand-new store (bootstrap). Ignored when the directory has a log. */
  confState?: ConfState;
  /**
   * A write of at most this many bytes is fsynced on the calling thread, the rest on the
   * runtime's thread pool. Default {@linkcode INLINE_SYNC_BYTES}; 0 sends every fsync to the pool.
   */
  inlineSyncBytes?: number;
}

/**
 * Writes up to this size are fsynced inline. A pooled fsync costs two thread hand-offs (the pool
 * thread must get a core, then wake the event loop, which must get one again); on a busy 2-core
 * machine each can wait milliseconds. An inline fsync blocks the event loop instead, which for a
 * small write lasts about as long as those hand-offs save; a large write (a big batch under load)
 * takes longer, and the event loop has other work to do meanwhile.
 */
export const INLINE_SYNC_BYTES = 64 * 1024;

/** How many fsyncs a store made, and how many of them inline ({@linkcode INLINE_SYNC_BYTES}). */
export interface RaftLogSyncStats {
  syncs: number;
  inlineSyncs: number;
}

interface _RollMark {
  last: number;
  lastTerm: number;
  hs: HardState;
  snap: Snapshot;
}

/**
 * A buffered record: an `Entry` record, encoded at sync time straight into the write buffer
 * (`entry`, whose encoding is `size` bytes), or any other record's payload.
 */
type _Rec =
  | { type: number; payload: Uint8Array; entry?: undefined; size: number }
  | { type: number; payload?: undefined; entry: Entry; size: number };

/** The write buffer is kept between syncs up to this size (larger ones are dropped after use). */
const KEEP_WRITE_BUFFER = 4 * 1024 * 1024;

interface _Segment {
  seq: number;
  path: string;
  /** Last log index when the segment was created. */
  startLast: number;
}

function _segName(seq: number): string {
  return `${String(seq).padStart(10, "0")}${SEGMENT_SUFFIX}`;
}

function _u64(view: DataView, off: number, n: number): void {
  view.setUint32(off, n % 0x100000000, true);
  view.setUint32(off + 4, Math.floor(n / 0x100000000), true);
}

function _readU64(view: DataView, off: number): number {
  return view.getUint32(off, true) + view.getUint32(off + 4, true) * 0x100000000;
}

/** SegmentStart payload: version seq:u64 startLast:u64 startLastTerm:u64 then two blobs. */
function _encodeStart(
  seq: number,
  last: number,
  lastTerm: number,
  hs: HardState,
  snap: Snapshot,
): Uint8Array {
  const hsb = encodeHardState(hs);
  const snb = encodeSnapshot({ meta: snap.meta, data: EMPTY });
  const out = new Uint8Array(1 + 24 + 4 + hsb.length + 4 + snb.length);
  const view = new DataView(out.buffer);
  out[0] = CODEC_VERSION;
  _u64(view, 1, seq);
  _u64(view, 9, last);
  _u64(view, 17, lastTerm);
  view.setUint32(25, hsb.length, true);
  out.set(hsb, 29);
  view.setUint32(29 + hsb.length, snb.length, true);
  out.set(snb, 33 + hsb.length);
  return out;
}

function _decodeStart(p: Uint8Array) {
  if (p.length < 33 || p[0] !== CODEC_VERSION) throw new CodecError("bad segment start", 0);
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const seq = _readU64(view, 1);
  const last = _readU64(view, 9);
  const lastTerm = _readU64(view, 17);
  const hl = view.getUint32(25, true);
  if (29 + hl + 4 > p.length) throw new CodecError("bad segment start", 25);
  const hs = decodeHardState(p.subarray(29, 29 + hl));
  const sl = view.getUint32(29 + hl, true);
  if (33 + hl + sl !== p.length) throw new CodecError("bad segment start", 29 + hl);
  const snap = decodeSnapshot(p.subarray(33 + hl, 33 + hl + sl));
  return { seq, last, lastTerm, hs, snap };
}

function _encodeCompact(index: number, term: number): Uint8Array {
  const out = new Uint8Array(17);
  const view = new DataView(out.buffer);
  out[0] = CODEC_VERSION;
  _u64(view, 1, index);
  _u64(view, 9, term);
  return out;
}

function _decodeCompact(p: Uint8Array): { index: number; term: number } {
  if (p.length !== 17 || p[0] !== CODEC_VERSION) throw new CodecError("bad compact record", 0);
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return { index: _readU64(view, 1), term: _readU64(view, 9) };
}

function _copyEntry(e: Entry): Entry {
  return { index: e.index, term: e.term, type: e.type, data: e.data.slice() };
}

/**
 * The durable Raft log.
 *
 * @example
 * ```ts
 * import { RaftLogStore } from "./log_store.ts";
 * const dir = await Deno.makeTempDir();
 * const store = await RaftLogStore.open(dir);
 * store.append([{ index: 1, term: 1, type: 0, data: new Uint8Array([42]) }]);
 * store.setHardState({ term: 1, vote: 1, commit: 1 });
 * await store.sync(); // one fsync for both
 * store.close();
 * const again = await RaftLogStore.open(dir);
 * console.log(again.lastIndex(), again.initialState().hardState.commit); // 1 1
 * again.close();
 * ```
 */
export class RaftLogStore implements LogStorage {
  readonly dir: string;
  readonly #mem: MemoryStorage;
  readonly #segmentBytes: number;
  readonly #inlineSyncBytes: number;
  readonly #syncStats: RaftLogSyncStats = { syncs: 0, inlineSyncs: 0 };
  #segments: _Segment[];
  #file: Deno.FsFile | undefined;
  #fileSize: number;
  /** Buffered records; a `_RollMark` starts a new segment at that point. */
  #pending: (_Rec | _RollMark)[] = [];
  #pendingBytes = 0;
  /**
   * Where a sync lays out its records before the one `writeSync` (reused: the write is
   * synchronous and syncs are serialized, so no write is in flight when it is refilled).
   */
  #wbuf = new Uint8Array(64 * 1024);
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #failed: Error | undefined;

  private constructor(
    dir: string,
    mem: MemoryStorage,
    segments: _Segment[],
    file: Deno.FsFile,
    fileSize: number,
    segmentBytes: number,
    inlineSyncBytes: number,
  ) {
    this.dir = dir;
    this.#mem = mem;
    this.#segments = segments;
    this.#file = file;
    this.#fileSize = fileSize;
    this.#segmentBytes = segmentBytes;
    this.#inlineSyncBytes = inlineSyncBytes;
  }

  /**
   * Opens (creating if needed) the log in `dir`, replaying it. Throws `LogCorruptionError` if a
   * record other than the torn tail of the last segment is bad.
   */
  static async open(dir: string, opts: RaftLogStoreOptions = {}): Promise<RaftLogStore> {
    const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    await Deno.mkdir(dir, { recursive: true });
    const seqs: number[] = [];
    for await (const ent of Deno.readDir(dir)) {
      const m = /^(\d{10})\.rlog$/.exec(ent.name);
      if (ent.isFile && m) seqs.push(Number(m[1]));
    }
    seqs.sort((a, b) => a - b);
    const mem = new MemoryStorage({ confState: opts.confState });
    const segments: _Segment[] = [];
    let lastSize = 0;
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i]!;
      const path = `${dir}/${_segName(seq)}`;
      const isLast = i === seqs.length - 1;
      if (i > 0 && seq !== seqs[i - 1]! + 1) {
        throw new LogCorruptionError(path, 0, `segment ${seqs[i - 1]! + 1} is missing`);
      }
      const buf = await Deno.readFile(path);
      const res = RaftLogStore.#replay(path, buf, mem, segments.length === 0, isLast, seq);
      if (res.kind === "emptyTail") {
        // The last segment was being created when the process died: drop it.
        await Deno.remove(path);
        continue;
      }
      if (res.truncateAt !== undefined) {
        await Deno.truncate(path, res.truncateAt);
        lastSize = res.truncateAt;
      } else {
        lastSize = buf.length;
      }
      segments.push({ seq, path, startLast: res.startLast });
    }
    let file: Deno.FsFile;
    if (segments.length === 0) {
      const seg = { seq: 1, path: `${dir}/${_segName(1)}`, startLast: 0 };
      const rec = encodeRecord(
        RaftRecordType.SegmentStart,
        _encodeStart(1, 0, 0, mem.hardState(), mem.snapshot()),
      );
      file = await Deno.open(seg.path, { write: true, create: true, truncate: true });
      await _writeAll(file, rec);
      await file.syncData();
      await _syncDir(dir);
      segments.push(seg);
      lastSize = rec.length;
    } else {
      file = await Deno.open(segments[segments.length - 1]!.path, { write: true, append: true });
      await file.syncData(); // make a truncation durable
    }
    const inline = opts.inlineSyncBytes ?? INLINE_SYNC_BYTES;
    return new RaftLogStore(dir, mem, segments, file, lastSize, segmentBytes, Math.max(0, inline));
  }

  static #replay(
    path: string,
    buf: Uint8Array,
    mem: MemoryStorage,
    first: boolean,
    isLast: boolean,
    seq: number,
  ): { kind: "ok"; startLast: number; truncateAt?: number } | { kind: "emptyTail" } {
    let off = 0;
    let startLast = -1;
    while (true) {
      const r = readRecord(buf, off);
      if (r.kind === "end") break;
      if (r.kind === "bad") {
        if (!isLast || !_isTornTail(buf, off, r.reason)) {
          throw new LogCorruptionError(path, off, r.reason);
        }
        if (startLast < 0) return { kind: "emptyTail" };
        return { kind: "ok", startLast, truncateAt: off };
      }
      try {
        if (startLast < 0) {
          if (r.type !== RaftRecordType.SegmentStart) {
            throw new LogCorruptionError(path, off, "segment does not begin with a start record");
          }
          const st = _decodeStart(r.payload);
          if (st.seq !== seq) throw new LogCorruptionError(path, off, `start record seq ${st.seq}`);
          startLast = st.last;
          if (first) mem._reset(st.last, st.lastTerm, st.snap, st.hs);
        } else {
          RaftLogStore.#apply(mem, r.type, r.payload, path, off);
        }
      } catch (e) {
        if (e instanceof CodecError) throw new LogCorruptionError(path, off, e.message);
        if (e instanceof RaftError) throw new LogCorruptionError(path, off, e.message);
        throw e;
      }
      off = r.next;
    }
    if (startLast < 0) {
      if (isLast) return { kind: "emptyTail" };
      throw new LogCorruptionError(path, 0, "empty segment");
    }
    return { kind: "ok", startLast };
  }

  static #apply(mem: MemoryStorage, type: number, p: Uint8Array, path: string, off: number) {
    switch (type) {
      case RaftRecordType.Entry: {
        const e = _copyEntry(decodeEntry(p));
        if (e.index < mem.firstIndex()) {
          // Entries at or before the compaction point are never written, so this record
          // overwrote an entry before the base of the first replayed segment (whose older
          // segments were deleted after a later compaction). Restart the log at it; the later
          // Compact record that allowed the deletion restores the true base and its term.
          mem._reset(e.index - 1, 0, mem.snapshot(), mem.hardState());
        }
        if (e.index > mem.lastIndex() + 1) {
          throw new LogCorruptionError(path, off, `entry ${e.index} after ${mem.lastIndex()}`);
        }
        mem.append([e]);
        return;
      }
      case RaftRecordType.HardState:
        mem.setHardState(decodeHardState(p));
        return;
      case RaftRecordType.SnapshotInstall: {
        const s = decodeSnapshot(p);
        mem._reset(s.meta.index, s.meta.term, { meta: s.meta, data: EMPTY }, mem.hardState());
        return;
      }
      case RaftRecordType.SnapshotMeta: {
        const s = decodeSnapshot(p);
        mem._setSnapshot({ meta: s.meta, data: EMPTY });
        return;
      }
      case RaftRecordType.Compact: {
        const c = _decodeCompact(p);
        if (c.index <= mem.firstIndex() - 1) return;
        if (c.index > mem.lastIndex()) {
          throw new LogCorruptionError(path, off, `compact ${c.index} beyond ${mem.lastIndex()}`);
        }
        mem.compact(c.index);
        return;
      }
      default:
        throw new LogCorruptionError(path, off, `unknown record type ${type}`);
    }
  }

  // --- LogStorage ------------------------------------------------------------------------------

  initialState(): { hardState: HardState; confState: ConfState } {
    return this.#mem.initialState();
  }
  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    return this.#mem.entries(lo, hi, maxBytes);
  }
  term(index: number): number {
    return this.#mem.term(index);
  }
  firstIndex(): number {
    return this.#mem.firstIndex();
  }
  lastIndex(): number {
    return this.#mem.lastIndex();
  }
  /** The latest snapshot's metadata (data is empty: the server stores snapshot data). */
  snapshot(): Snapshot {
    return this.#mem.snapshot();
  }

  /** The stored hard state (including unsynced changes). */
  hardState(): HardState {
    return this.#mem.hardState();
  }

  // --- mutations (buffered until sync) --------------------------------------------------------

  #buffer(type: number, payload: Uint8Array): void {
    this.#check();
    this.#pending.push({ type, payload, size: payload.length });
    this.#pendingBytes += RECORD_HEADER_SIZE + payload.length;
  }

  #check(): void {
    if (this.#closed) throw new RaftError("Invalid", "raft log store is closed");
    if (this.#failed) throw this.#failed;
  }

  /** Appends entries, truncating any stored suffix they overwrite. Buffered until `sync()`. */
  append(entries: readonly Entry[]): void {
    this.#check();
    if (entries.length === 0) return;
    const first = this.#mem.firstIndex();
    this.#mem.append(entries);
    for (const e of entries) {
      if (e.index < first) continue;
      // Entries are immutable once appended (the in-memory log holds the same objects), so
      // the record is encoded when it is written, without a buffer of its own.
      const size = encodedEntrySize(e);
      this.#pending.push({ type: RaftRecordType.Entry, entry: e, size });
      this.#pendingBytes += RECORD_HEADER_SIZE + size;
    }
  }

  /** Records the hard state. Buffered until `sync()`. */
  setHardState(hs: HardState): void {
    this.#check();
    this.#mem.setHardState(hs);
    this.#buffer(RaftRecordType.HardState, encodeHardState(hs));
  }

  /**
   * Installs a leader's snapshot (its metadata; the data is the server's): the whole log is
   * replaced and restarts after `snap.meta.index`. Buffered until `sync()`.
   */
  applySnapshot(snap: Snapshot): void {
    this.#check();
    const meta = { meta: snap.meta, data: EMPTY };
    this.#mem.applySnapshot(meta);
    this.#buffer(RaftRecordType.SnapshotInstall, encodeSnapshot(meta));
    // Start a new segment right after the install so every older segment becomes obsolete.
    this.#pending.push({
      last: snap.meta.index,
      lastTerm: snap.meta.term,
      hs: this.#mem.hardState(),
      snap: meta,
    });
  }

  /**
   * Records that the local state machine snapshotted at `index` (with configuration
   * `confState`): the core will send this snapshot to followers that need compacted entries.
   * The log is kept; call `compact` to drop its prefix. Buffered until `sync()`. Snapshot data
   * is the server's to store (`_data` is accepted for signature compatibility with
   * `MemoryStorage` and ignored).
   */
  createSnapshot(index: number, confState: ConfState, _data?: Uint8Array): Snapshot {
    this.#check();
    const snap = this.#mem.createSnapshot(index, confState, EMPTY);
    this.#buffer(RaftRecordType.SnapshotMeta, encodeSnapshot(snap));
    return snap;
  }

  /**
   * Discards entries ≤ `index` (prefix truncation; `index` should be ≤ the latest snapshot's
   * index). Whole segments holding only discarded entries are deleted at the next `sync()`.
   */
  compact(index: number): void {
    this.#check();
    if (index <= this.#mem.firstIndex() - 1) return;
    const snap = this.#mem.snapshot().meta.index;
    if (index > snap) {
      throw new RaftError("Invalid", `compact ${index} beyond the latest snapshot ${snap}`);
    }
    const term = this.#mem.term(index);
    this.#mem.compact(index);
    this.#buffer(RaftRecordType.Compact, _encodeCompact(index, term));
  }

  /** Bytes buffered and not yet synced. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Number of segment files. */
  get segmentCount(): number {
    return this.#segments.length;
  }

  /** The fsyncs of record writes so far (a copy). */
  get syncStats(): RaftLogSyncStats {
    return { ...this.#syncStats };
  }

  /**
   * Writes everything buffered and fsyncs once (group commit). Concurrent calls are serialized;
   * each resolves once everything buffered before it is durable.
   */
  sync(): Promise<void> {
    this.#check();
    // Exactly what is buffered now is written by this sync; later mutations go to the next one.
    const items = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    let endMark: _RollMark | undefined;
    if (items.length > 0) {
      // The state after exactly these records: a segment rolled after them starts from it.
      const last = this.#mem.lastIndex();
      endMark = {
        last,
        lastTerm: this.#mem.term(last),
        hs: this.#mem.hardState(),
        snap: this.#mem.snapshot(),
      };
    }
    const p = this.#chain.then(() => this.#doSync(items, endMark));
    this.#chain = p.catch(() => {});
    return p;
  }

  async #doSync(items: (_Rec | _RollMark)[], endMark?: _RollMark): Promise<void> {
    if (this.#failed) throw this.#failed;
    if (items.length === 0 || endMark === undefined) return;
    try {
      let recs: _Rec[] = [];
      let size = 0;
      const flush = async () => {
        if (recs.length === 0) return;
        // A synchronous write is a page-cache copy; it saves a thread-pool round trip before
        // the fsync, which is what a commit waits for.
        _writeAllSync(this.#file!, this.#layout(recs, size));
        this.#syncStats.syncs++;
        if (size <= this.#inlineSyncBytes) {
          this.#syncStats.inlineSyncs++;
          this.#file!.syncDataSync();
        } else {
          await this.#file!.syncData();
        }
        this.#fileSize += size;
        recs = [];
        size = 0;
      };
      for (const item of items) {
        if ("type" in item) {
          recs.push(item);
          size += RECORD_HEADER_SIZE + item.size;
        } else {
          await flush();
          await this.#roll(item);
        }
      }
      await flush();
      if (this.#fileSize >= this.#segmentBytes) await this.#roll(endMark);
      await this.#dropObsolete();
    } catch (e) {
      // The on-disk state is unknown: refuse further writes (reopen to recover).
      this.#failed = e instanceof Error ? e : new Error(String(e));
      throw this.#failed;
    }
  }

  /** Encodes `recs` (`size` bytes in all) one after the other into the write buffer. */
  #layout(recs: readonly _Rec[], size: number): Uint8Array {
    let buf = this.#wbuf;
    if (buf.length < size) {
      let cap = buf.length;
      while (cap < size) cap *= 2;
      buf = new Uint8Array(cap);
      if (cap <= KEEP_WRITE_BUFFER) this.#wbuf = buf;
    }
    let p = 0;
    for (const r of recs) {
      if (r.entry === undefined) {
        p = encodeRecordInto(buf, p, r);
        continue;
      }
      const start = p + RECORD_HEADER_SIZE;
      const end = encodeEntryInto(buf, start, r.entry);
      if (end - start !== r.size) throw new RaftError("Invalid", "entry changed after append");
      const view = new DataView(buf.buffer, buf.byteOffset + p, RECORD_HEADER_SIZE);
      view.setUint32(0, recordCrc(r.type, buf.subarray(start, end)), true);
      view.setUint32(4, r.size, true);
      view.setUint8(8, r.type);
      p = end;
    }
    return buf.subarray(0, p);
  }

  async #roll(mark: _RollMark): Promise<void> {
    const seq = this.#segments[this.#segments.length - 1]!.seq + 1;
    const path = `${this.dir}/${_segName(seq)}`;
    const rec = encodeRecord(
      RaftRecordType.SegmentStart,
      _encodeStart(seq, mark.last, mark.lastTerm, mark.hs, mark.snap),
    );
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    await _writeAll(file, rec);
    await file.syncData();
    await _syncDir(this.dir);
    this.#file!.close();
    this.#file = file;
    this.#fileSize = rec.length;
    this.#segments.push({ seq, path, startLast: mark.last });
  }

  async #dropObsolete(): Promise<void> {
    const base = this.#mem.firstIndex() - 1;
    let removed = false;
    // Segment k is obsolete when the next segment began after the compaction point: every
    // entry k holds is then ≤ base, and the next segment's start record carries the state.
    while (this.#segments.length > 1 && this.#segments[1]!.startLast <= base) {
      const seg = this.#segments.shift()!;
      await Deno.remove(seg.path);
      removed = true;
    }
    if (removed) await _syncDir(this.dir);
  }

  /** Syncs anything buffered, then closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (!this.#failed) await this.sync();
    this.#closed = true;
    await this.#chain;
    this.#file?.close();
    this.#file = undefined;
  }

  /** Closes without writing what is buffered (simulates a crash; for tests). */
  closeWithoutSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    this.#file?.close();
    this.#file = undefined;
  }
}

/**
 * Whether a bad record at `off` of the last segment is a torn tail (an interrupted append)
 * rather than corruption: nothing valid follows it.
 */
function _isTornTail(buf: Uint8Array, off: number, reason: string): boolean {
  if (reason === "truncated") return true;
  // A checksum/length failure with a complete-looking record: torn only if no valid record
  // can be found after it (preallocated or partially written garbage).
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length - off >= RECORD_HEADER_SIZE) {
    const len = view.getUint32(off + 4, true);
    const next = off + RECORD_HEADER_SIZE + len;
    if (next < buf.length && readRecord(buf, next).kind === "record") return false;
  }
  // Scan forward for any valid record header (bounded by the rest of the file).
  for (let p = off + 1; p + RECORD_HEADER_SIZE <= buf.length; p++) {
    const len = view.getUint32(p + 4, true);
    if (len === 0 && view.getUint32(p, true) === 0) continue;
    if (p + RECORD_HEADER_SIZE + len > buf.length) continue;
    if (readRecord(buf, p).kind === "record") return false;
  }
  return true;
}

function _writeAllSync(file: Deno.FsFile, buf: Uint8Array): void {
  let n = 0;
  while (n < buf.length) n += file.writeSync(buf.subarray(n));
}

async function _writeAll(file: Deno.FsFile, buf: Uint8Array): Promise<void> {
  let n = 0;
  while (n < buf.length) n += await file.write(buf.subarray(n));
}

async function _syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}
