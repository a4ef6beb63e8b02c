/**
 * A byte-bounded LRU cache of parsed SSTable data blocks, shared by all tables of an engine.
 *
 * @module
 */

/** Anything with a size in bytes. */
export interface Sized {
  /** Bytes the entry holds. */
  readonly byteLength: number;
}

/**
 * LRU cache keyed by numbers (table number × 2^24 + block index), bounded by total bytes.
 *
 * @example
 * ```ts
 * const cache = new BlockCache<Uint8Array>(1 << 20);
 * cache.set(1, new Uint8Array(10));
 * cache.get(1)?.byteLength; // 10
 * ```
 */
export class BlockCache<T extends Sized> {
  #map = new Map<number, T>();
  #used = 0;
  /** Lookups answered from the cache. */
  hits = 0;
  /** Lookups that missed. */
  misses = 0;

  /**
   * Creates a cache holding at most `capacity` bytes (0 disables it); `onEvict` sees each entry
   * evicted for space.
   */
  constructor(readonly capacity: number, readonly onEvict?: (value: T) => void) {}

  /** The cached entry for `key`, marking it most recently used. */
  get(key: number): T | undefined {
    const v = this.#map.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Move to the back of the insertion order (most recent).
    this.#map.delete(key);
    this.#map.set(key, v);
    return v;
  }

  /** Inserts `value`, evicting least recently used entries beyond the capacity. */
  set(key: number, value: T): void {
    if (value.byteLength > this.capacity) return;
    const old = this.#map.get(key);
    if (old !== undefined) {
      this.#used -= old.byteLength;
      this.#map.delete(key);
    }
    this.#map.set(key, value);
    this.#used += value.byteLength;
    if (this.#used > this.capacity) {
      for (const [k, v] of this.#map) {
        this.#map.delete(k);
        this.#used -= v.byteLength;
        this.onEvict?.(v);
        if (this.#used <= this.capacity) break;
      }
    }
  }

  /** Drops every block of table `tableNumber`. */
  evictTable(tableNumber: number): void {
    const lo = tableNumber * 0x1000000;
    const hi = lo + 0x1000000;
    for (const [k, v] of this.#map) {
      if (k >= lo && k < hi) {
        this.#map.delete(k);
        this.#used -= v.byteLength;
      }
    }
  }

  /** Bytes held. */
  get used(): number {
    return this.#used;
  }
}
