/**
 * The MemTable: a skip list of internal entries (user key ascending, sequence descending),
 * holding the writes not yet flushed to an SSTable. It is written by one writer (the engine's
 * commit loop) and read by any number of iterators; entries are never removed, so iterators
 * stay valid while writes continue.
 *
 * @module
 */
import { compareBytes } from "./coding.ts";
import { type InternalIterator, KIND_DELETE } from "./iterator.ts";

const _MAX_HEIGHT = 12;
const _EMPTY = new Uint8Array(0);

/** One skip-list node (an entry). */
export class MemEntry {
  /** Creates a node with `height` forward links. */
  constructor(
    readonly key: Uint8Array,
    readonly seq: number,
    readonly kind: number,
    readonly value: Uint8Array,
    height: number,
  ) {
    this.next = new Array(height).fill(null);
  }
  /** Forward links, one per level. */
  next: (MemEntry | null)[];
}

/** Estimated memory per entry beyond key and value bytes. */
const _ENTRY_OVERHEAD = 64;

/**
 * A sorted in-memory table of internal entries.
 *
 * @example
 * ```ts
 * const m = new MemTable();
 * m.add(new TextEncoder().encode("k"), 1, KIND_PUT, new TextEncoder().encode("v"));
 * m.get(new TextEncoder().encode("k"), 1)?.value; // "v"
 * ```
 */
export class MemTable {
  #head = new MemEntry(_EMPTY, 0, 0, _EMPTY, _MAX_HEIGHT);
  #height = 1;
  #prev: (MemEntry | null)[] = new Array(_MAX_HEIGHT).fill(null);
  /** Approximate memory use in bytes. */
  bytes = 0;
  /** Number of entries. */
  count = 0;
  /** Number of the WAL segment that holds this table's writes. */
  logNumber: number;

  /** Creates an empty table whose writes go to WAL segment `logNumber`. */
  constructor(logNumber = 0) {
    this.logNumber = logNumber;
  }

  #randomHeight(): number {
    let h = 1;
    while (h < _MAX_HEIGHT && Math.random() < 0.25) h++;
    return h;
  }

  /** First node at or after (`key`, `seq`); fills `prev` with the predecessors when given. */
  findGreaterOrEqual(
    key: Uint8Array,
    seq: number,
    prev?: (MemEntry | null)[],
  ): MemEntry | null {
    let x = this.#head;
    let level = this.#height - 1;
    for (;;) {
      const n = x.next[level]!;
      let before = false;
      if (n !== null) {
        const c = compareBytes(n.key, key);
        before = c < 0 || (c === 0 && n.seq > seq);
      }
      if (before) {
        x = n!;
      } else {
        if (prev) prev[level] = x;
        if (level === 0) return n;
        level--;
      }
    }
  }

  /** Adds an entry; (`key`, `seq`) must be new. `key` and `value` are kept, not copied. */
  add(key: Uint8Array, seq: number, kind: number, value: Uint8Array): void {
    const prev = this.#prev;
    this.findGreaterOrEqual(key, seq, prev);
    const h = this.#randomHeight();
    if (h > this.#height) {
      for (let i = this.#height; i < h; i++) prev[i] = this.#head;
      this.#height = h;
    }
    const node = new MemEntry(key, seq, kind, value, h);
    for (let i = 0; i < h; i++) {
      const p = prev[i]!;
      node.next[i] = p.next[i]!;
      p.next[i] = node;
    }
    this.bytes += key.length + value.length + _ENTRY_OVERHEAD;
    this.count++;
  }

  /**
   * The newest entry for `key` with sequence ≤ `seq` (a value or a tombstone — check `kind`), or
   * `undefined` when this table knows nothing of `key`.
   */
  get(key: Uint8Array, seq: number): MemEntry | undefined {
    const n = this.findGreaterOrEqual(key, seq);
    if (n !== null && compareBytes(n.key, key) === 0) return n;
    return undefined;
  }

  /** The first node (smallest internal key). */
  first(): MemEntry | null {
    return this.#head.next[0]!;
  }

  /** An iterator over the entries. */
  iterator(): InternalIterator {
    return new _MemIterator(this);
  }

  /** True when the table holds no entries. */
  get empty(): boolean {
    return this.count === 0;
  }
}

class _MemIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = KIND_DELETE;
  value: Uint8Array = _EMPTY;
  #node: MemEntry | null = null;
  constructor(private table: MemTable) {}
  #load(): void {
    const n = this.#node;
    if (n === null) {
      this.valid = false;
      return;
    }
    this.valid = true;
    this.key = n.key;
    this.seq = n.seq;
    this.kind = n.kind;
    this.value = n.value;
  }
  seekToFirst(): void {
    this.#node = this.table.first();
    this.#load();
  }
  seek(key: Uint8Array, seq: number): void {
    this.#node = this.table.findGreaterOrEqual(key, seq);
    this.#load();
  }
  next(): void {
    if (this.#node !== null) this.#node = this.#node.next[0]!;
    this.#load();
  }
}
