/**
 * Internal iterators: every source of entries (memtable, table, level) walks internal keys
 * (user key ascending, sequence number descending). {@link MergingIterator} merges them; the
 * engine's user-facing scan sits on top and applies snapshot visibility and tombstones.
 *
 * @module
 */
import { compareInternal } from "./coding.ts";

/** Entry kind of a deletion marker (tombstone). Reaches the disk: never change. */
export const KIND_DELETE = 0;
/** Entry kind of a value. Reaches the disk: never change. */
export const KIND_PUT = 1;

/**
 * A synchronous cursor over internal entries in internal-key order. When `valid`, `key`, `seq`,
 * `kind` and `value` describe the current entry (views that stay valid until the next move).
 */
export interface InternalIterator {
  /** True while positioned on an entry. */
  valid: boolean;
  /** User key of the current entry. */
  key: Uint8Array;
  /** Sequence number of the current entry. */
  seq: number;
  /** {@link KIND_PUT} or {@link KIND_DELETE}. */
  kind: number;
  /** Value of the current entry (empty for tombstones). */
  value: Uint8Array;
  /** Positions on the first entry. */
  seekToFirst(): void;
  /** Positions on the first entry at or after (`key`, `seq`) in internal order. */
  seek(key: Uint8Array, seq: number): void;
  /** Moves to the next entry. */
  next(): void;
}

const _EMPTY = new Uint8Array(0);

/**
 * Merges child iterators into one internal-key-ordered stream (a binary min-heap). Children
 * listed first win ties, but ties cannot happen: sequence numbers are unique.
 *
 * @example
 * ```ts
 * const merged = new MergingIterator([]);
 * merged.seekToFirst();
 * console.log(merged.valid); // false
 * ```
 */
export class MergingIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = 0;
  value: Uint8Array = _EMPTY;
  #children: InternalIterator[];
  #heap: InternalIterator[] = [];

  /** Creates the merge of `children`. */
  constructor(children: InternalIterator[]) {
    this.#children = children;
  }
  #less(a: InternalIterator, b: InternalIterator): boolean {
    return compareInternal(a.key, a.seq, b.key, b.seq) < 0;
  }
  #rebuild(): void {
    const heap = this.#heap;
    heap.length = 0;
    for (const c of this.#children) if (c.valid) heap.push(c);
    for (let i = (heap.length >> 1) - 1; i >= 0; i--) this.#down(i);
    this.#load();
  }
  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      let m = l;
      if (r < n && this.#less(heap[r]!, heap[l]!)) m = r;
      if (!this.#less(heap[m]!, heap[i]!)) return;
      const t = heap[m]!;
      heap[m] = heap[i]!;
      heap[i] = t;
      i = m;
    }
  }
  #load(): void {
    const top = this.#heap[0];
    if (!top) {
      this.valid = false;
      return;
    }
    this.valid = true;
    this.key = top.key;
    this.seq = top.seq;
    this.kind = top.kind;
    this.value = top.value;
  }
  seekToFirst(): void {
    for (const c of this.#children) c.seekToFirst();
    this.#rebuild();
  }
  seek(key: Uint8Array, seq: number): void {
    for (const c of this.#children) c.seek(key, seq);
    this.#rebuild();
  }
  next(): void {
    const heap = this.#heap;
    const top = heap[0];
    if (!top) return;
    top.next();
    if (!top.valid) {
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        this.#down(0);
      }
    } else {
      this.#down(0);
    }
    this.#load();
  }
}
