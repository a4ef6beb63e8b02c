/**
 * The MemTable: a skip list of internal entries (user key ascending, sequence descending),
 * holding the writes not yet flushed to an SSTable. It is written by one writer (the engine's
 * commit loop) and read by any number of iterators; entries are never removed, so iterators
 * stay valid while writes continue.
 *
 * Every node lives in one arena (an `ArrayBuffer`, as LevelDB's `Arena`): no JavaScript object
 * per entry, so a memtable is a handful of heap objects however many entries it holds, and
 * nothing of it survives a scavenge only to die in old space after the flush. Keys and values
 * are copied in; the caller's buffers are not retained.
 *
 * Arena layout (host byte order, in-memory only — never written to disk). A node is addressed
 * by its *ref*, the index of its first 32-bit word; nodes start on 8-byte boundaries, so refs
 * are even and `ref >> 1` indexes the node's sequence number as a `Float64Array` element:
 *
 * ```
 * word  0..1   seq        float64 (exact up to 2^53)
 * word  2      kind | height << 8
 * word  3      key length
 * word  4      value length
 * word  5..    next[0..height-1]: refs of the successors (0 = none; ref 0 is the head)
 * then         key bytes, value bytes, padding to 8 bytes
 * ```
 *
 * The arena starts at the size given to the constructor and doubles (copying) when full, up to
 * 1 GiB; views handed out earlier keep pointing at the old buffer, whose bytes never change.
 *
 * @module
 */
import { type InternalIterator, KIND_DELETE } from "./iterator.ts";

const _MAX_HEIGHT = 12;
const _EMPTY = new Uint8Array(0);
/** Words before the tower. */
const _HEADER_WORDS = 5;
/** The head node: a full-height tower, no key. */
const _HEAD = 0;
const _HEAD_BYTES = (_HEADER_WORDS + _MAX_HEIGHT) * 4;
/** Default initial arena size. */
const _DEFAULT_ARENA = 64 * 1024;
/** Largest arena (refs and byte offsets must stay within int32 arithmetic). */
const _MAX_ARENA = 1 << 30;

/** What {@link MemTable.get} found: an entry's kind and value (a view into the arena). */
export interface MemHit {
  /** {@link KIND_PUT} or {@link KIND_DELETE}. */
  kind: number;
  /** The value (empty for a tombstone); a read-only view, valid as long as the table. */
  value: Uint8Array;
}

/** Options of {@link MemTable}. */
export interface MemTableOptions {
  /**
   * Initial arena size in bytes (default 64 KiB). The engine passes a little more than its
   * flush threshold, so a table normally never grows (growing copies the arena).
   */
  arenaBytes?: number;
  /**
   * An arena to reuse (from {@link MemTable.releaseArena} of a table nobody reads any more)
   * instead of allocating one; `arenaBytes` is then ignored.
   */
  arena?: ArrayBuffer;
}

/**
 * A sorted in-memory table of internal entries.
 *
 * @example
 * ```ts
 * import { KIND_PUT } from "./iterator.ts";
 * const m = new MemTable();
 * m.add(new TextEncoder().encode("k"), 1, KIND_PUT, new TextEncoder().encode("v"));
 * m.get(new TextEncoder().encode("k"), 1)?.value; // the bytes of "v"
 * ```
 */
export class MemTable {
  #buf: ArrayBuffer;
  /** Set on a table made by {@link MemTable.fromArena}: it cannot be written. */
  #readOnly = false;
  #u8: Uint8Array;
  #i32: Int32Array;
  #f64: Float64Array;
  /** Next free byte (a multiple of 8). */
  #pos: number;
  #height = 1;
  readonly #prev = new Int32Array(_MAX_HEIGHT);
  #probe = new Uint8Array(64);
  #probeWords = new Int32Array(this.#probe.buffer);
  /**
   * Memory used in bytes: the arena bytes taken by nodes (keys, values and per-node headers).
   * The arena's free tail is not counted.
   */
  bytes = 0;
  /** Number of entries. */
  count = 0;
  /** Number of the WAL segment that holds this table's writes. */
  logNumber: number;

  /** Creates an empty table whose writes go to WAL segment `logNumber`. */
  constructor(logNumber = 0, options: MemTableOptions = {}) {
    this.logNumber = logNumber;
    const want = _align8(options.arenaBytes ?? _DEFAULT_ARENA);
    const size = Math.min(_MAX_ARENA, Math.max(_align8(_HEAD_BYTES) + 64, want));
    const reuse = options.arena !== undefined &&
      options.arena.byteLength >= _align8(_HEAD_BYTES) + 64;
    this.#buf = reuse ? options.arena! : new ArrayBuffer(size);
    this.#u8 = new Uint8Array(this.#buf);
    this.#i32 = new Int32Array(this.#buf);
    this.#f64 = new Float64Array(this.#buf);
    // Only the head node must start zeroed (no links); every node is written whole when added.
    if (reuse) this.#u8.fill(0, 0, _align8(_HEAD_BYTES));
    this.#i32[_HEAD + 2] = _MAX_HEIGHT << 8;
    this.#pos = _align8(_HEAD_BYTES);
  }

  /**
   * A read-only table over `arena`, a {@link MemTable.copyArena} of a table (a sealed memtable
   * handed to a worker). `count` and `bytes` read 0; iteration and lookups work.
   *
   * @example
   * ```ts
   * import { KIND_PUT } from "./iterator.ts";
   * const m = new MemTable();
   * m.add(new TextEncoder().encode("k"), 1, KIND_PUT, new Uint8Array(0));
   * const copy = MemTable.fromArena(m.copyArena()); // e.g. transferred to a worker
   * copy.get(new TextEncoder().encode("k"), 1)?.kind; // KIND_PUT
   * ```
   */
  static fromArena(arena: ArrayBuffer): MemTable {
    const m = new MemTable(0, { arenaBytes: 0 });
    m.#setArena(arena);
    m.#pos = arena.byteLength;
    m.#readOnly = true;
    let h = 1;
    while (h < _MAX_HEIGHT && m.#i32[_HEAD + _HEADER_WORDS + h] !== 0) h++;
    m.#height = h;
    return m;
  }

  /**
   * A copy of the used part of the arena (one `memcpy`), for {@link MemTable.fromArena} in
   * another thread: it can be transferred, while this table stays readable. (A
   * `SharedArrayBuffer` arena would save the copy, but V8 does not count shared buffers as
   * memory pressure, so freed memtables would pile up uncollected.)
   */
  copyArena(): ArrayBuffer {
    return this.#buf.slice(0, this.#pos);
  }

  /**
   * Like {@link copyArena}, but copies into `spare` when it is large enough (e.g. an arena a
   * worker handed back after an earlier flush), so repeated flushes allocate nothing; the bytes
   * past the used part are never reached from the table's links. Returns the buffer used.
   */
  copyArenaInto(spare: ArrayBuffer | undefined): ArrayBuffer {
    if (spare === undefined || spare.byteLength < this.#pos) return this.copyArena();
    new Uint8Array(spare, 0, this.#pos).set(new Uint8Array(this.#buf, 0, this.#pos));
    return spare;
  }

  /**
   * Gives up the arena, for a new table to reuse: the caller guarantees nothing reads this
   * table any more (no iterator, no value view). The table is left empty and read-only.
   */
  releaseArena(): ArrayBuffer {
    const buf = this.#buf;
    this.#setArena(new ArrayBuffer(_align8(_HEAD_BYTES)));
    this.#i32[_HEAD + 2] = _MAX_HEIGHT << 8;
    this.#pos = _align8(_HEAD_BYTES);
    this.#height = 1;
    this.#readOnly = true;
    this.bytes = 0;
    this.count = 0;
    return buf;
  }

  /** Size of the arena in bytes (allocated, used or not). */
  get arenaBytes(): number {
    return this.#buf.byteLength;
  }

  #setArena(buf: ArrayBuffer): void {
    this.#buf = buf;
    this.#u8 = new Uint8Array(buf);
    this.#i32 = new Int32Array(buf);
    this.#f64 = new Float64Array(buf);
  }

  #randomHeight(): number {
    let h = 1;
    while (h < _MAX_HEIGHT && Math.random() < 0.25) h++;
    return h;
  }

  /**
   * Ref of the first node at or after (`key`, `seq`) in internal order, or 0 when there is none.
   * With `prev`, fills `prev[level]` with the predecessor at each level.
   */
  #seek(key: Uint8Array, seq: number, prev: Int32Array | null): number {
    const u8 = this.#u8;
    const i32 = this.#i32;
    const f64 = this.#f64;
    const klen = key.length;
    // The probe key, copied to a word-aligned scratch buffer: keys in the arena start on a
    // 4-byte boundary, so a common prefix is skipped a 32-bit word (host order on both sides)
    // per step.
    if (this.#probe.length < klen) {
      this.#probe = new Uint8Array(_align8(klen));
      this.#probeWords = new Int32Array(this.#probe.buffer);
    }
    const pb = this.#probe;
    const pw = this.#probeWords;
    if (klen <= 64) { for (let i = 0; i < klen; i++) pb[i] = key[i]!; }
    else pb.set(key);
    let x = _HEAD;
    let level = this.#height - 1;
    // The node found "not before" at the level above: no need to compare it again.
    let known = -1;
    for (;;) {
      const n = i32[x + _HEADER_WORDS + level]!;
      let before = false;
      if (n !== 0 && n !== known) {
        const nlen = i32[n + 3]!;
        const w = n + _HEADER_WORDS + (i32[n + 2]! >> 8);
        const m = nlen < klen ? nlen : klen;
        const mw = m >> 2;
        let i = 0;
        while (i < mw && i32[w + i] === pw[i]) i++;
        const p = w << 2;
        let c = 0;
        for (i <<= 2; i < m; i++) {
          c = u8[p + i]! - key[i]!;
          if (c !== 0) break;
        }
        if (c === 0) c = nlen - klen;
        before = c < 0 || (c === 0 && f64[n >> 1]! > seq);
      }
      if (before) {
        x = n;
      } else {
        if (prev !== null) prev[level] = x;
        if (level === 0) return n;
        known = n;
        level--;
      }
    }
  }

  /** Makes room for `need` more bytes, doubling (copying) the arena as often as needed. */
  #reserve(need: number): void {
    const size = this.#buf.byteLength;
    if (this.#pos + need <= size) return;
    let next = size * 2;
    while (this.#pos + need > next) next *= 2;
    if (next > _MAX_ARENA) {
      if (this.#pos + need > _MAX_ARENA) throw new RangeError("memtable arena would exceed 1 GiB");
      next = _MAX_ARENA;
    }
    const old = this.#u8.subarray(0, this.#pos);
    this.#setArena(new ArrayBuffer(next));
    this.#u8.set(old);
  }

  /** Adds an entry; (`key`, `seq`) must be new. `key` and `value` are copied. */
  add(key: Uint8Array, seq: number, kind: number, value: Uint8Array): void {
    if (this.#readOnly) throw new TypeError("memtable made by fromArena is read-only");
    const prev = this.#prev;
    this.#seek(key, seq, prev);
    const h = this.#randomHeight();
    if (h > this.#height) {
      for (let i = this.#height; i < h; i++) prev[i] = _HEAD;
      this.#height = h;
    }
    const klen = key.length;
    const vlen = value.length;
    const size = _align8((_HEADER_WORDS + h) * 4 + klen + vlen);
    this.#reserve(size);
    const u8 = this.#u8;
    const i32 = this.#i32;
    const at = this.#pos;
    const n = at >> 2;
    this.#f64[n >> 1] = seq;
    i32[n + 2] = kind | (h << 8);
    i32[n + 3] = klen;
    i32[n + 4] = vlen;
    let p = (n + _HEADER_WORDS + h) << 2;
    if (klen <= 32) { for (let i = 0; i < klen; i++) u8[p + i] = key[i]!; }
    else u8.set(key, p);
    p += klen;
    if (vlen <= 32) { for (let i = 0; i < vlen; i++) u8[p + i] = value[i]!; }
    else u8.set(value, p);
    // Link bottom-up: a reader walking level 0 sees the node only once it is complete (there is
    // one thread, so this is only tidiness, but it is LevelDB's order).
    for (let i = 0; i < h; i++) {
      const link = prev[i]! + _HEADER_WORDS + i;
      i32[n + _HEADER_WORDS + i] = i32[link]!;
      i32[link] = n;
    }
    this.#pos = at + size;
    this.bytes += size;
    this.count++;
  }

  /**
   * The newest entry for `key` with sequence ≤ `seq` (a value or a tombstone — check `kind`), or
   * `undefined` when this table knows nothing of `key`.
   */
  get(key: Uint8Array, seq: number): MemHit | undefined {
    const n = this.#seek(key, seq, null);
    if (n === 0 || !this._keyEquals(n, key)) return undefined;
    return { kind: this._kind(n), value: this._value(n) };
  }

  /** True when the table holds no entries. */
  get empty(): boolean {
    return this.count === 0;
  }

  /** An iterator over the entries. */
  iterator(): InternalIterator {
    return new _MemIterator(this);
  }

  // Node accessors for the iterator (internal: refs are meaningless outside this module).

  /** @internal Ref of the first node at or after (`key`, `seq`), 0 if none. */
  _seek(key: Uint8Array, seq: number): number {
    return this.#seek(key, seq, null);
  }
  /** @internal Ref of the first node, 0 if the table is empty. */
  _first(): number {
    return this.#i32[_HEAD + _HEADER_WORDS]!;
  }
  /** @internal Ref of the node after `n` (0 at the end). */
  _next(n: number): number {
    return this.#i32[n + _HEADER_WORDS]!;
  }
  /** @internal Sequence number of node `n`. */
  _seq(n: number): number {
    return this.#f64[n >> 1]!;
  }
  /** @internal Kind of node `n`. */
  _kind(n: number): number {
    return this.#i32[n + 2]! & 0xff;
  }
  /** @internal Key of node `n` (a view into the arena). */
  _key(n: number): Uint8Array {
    const i32 = this.#i32;
    const p = (n + _HEADER_WORDS + (i32[n + 2]! >> 8)) << 2;
    return new Uint8Array(this.#buf, p, i32[n + 3]!);
  }
  /** @internal Value of node `n` (a view into the arena). */
  _value(n: number): Uint8Array {
    const i32 = this.#i32;
    const vlen = i32[n + 4]!;
    if (vlen === 0) return _EMPTY;
    const p = ((n + _HEADER_WORDS + (i32[n + 2]! >> 8)) << 2) + i32[n + 3]!;
    return new Uint8Array(this.#buf, p, vlen);
  }
  /** @internal True when node `n` holds user key `key`. */
  _keyEquals(n: number, key: Uint8Array): boolean {
    const i32 = this.#i32;
    const len = i32[n + 3]!;
    if (len !== key.length) return false;
    const u8 = this.#u8;
    const p = (n + _HEADER_WORDS + (i32[n + 2]! >> 8)) << 2;
    for (let i = 0; i < len; i++) if (u8[p + i] !== key[i]) return false;
    return true;
  }
}

function _align8(n: number): number {
  return (n + 7) & ~7;
}

class _MemIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = KIND_DELETE;
  value: Uint8Array = _EMPTY;
  #node = 0;
  readonly #table: MemTable;
  constructor(table: MemTable) {
    this.#table = table;
  }
  #load(): void {
    const n = this.#node;
    if (n === 0) {
      this.valid = false;
      return;
    }
    const t = this.#table;
    this.valid = true;
    this.key = t._key(n);
    this.seq = t._seq(n);
    this.kind = t._kind(n);
    this.value = t._value(n);
  }
  seekToFirst(): void {
    this.#node = this.#table._first();
    this.#load();
  }
  seek(key: Uint8Array, seq: number): void {
    this.#node = this.#table._seek(key, seq);
    this.#load();
  }
  next(): void {
    if (this.#node !== 0) this.#node = this.#table._next(this.#node);
    this.#load();
  }
}
