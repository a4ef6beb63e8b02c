/**
 * Bloom filter over the user keys of one SSTable (LevelDB's scheme: one 32-bit hash, k probes by
 * double hashing). Layout: `bits[ceil(n*bitsPerKey/8)] | k u8`. The hash and layout reach the
 * disk: never change them.
 *
 * @module
 */

/**
 * 32-bit hash of `key` (LevelDB's murmur-like `Hash` with seed 0xbc9f1d34).
 *
 * @example
 * ```ts
 * bloomHash(new TextEncoder().encode("key")); // a u32
 * ```
 */
export function bloomHash(key: Uint8Array): number {
  const m = 0xc6a4a793;
  const n = key.length;
  let h = (0xbc9f1d34 ^ Math.imul(n, m)) >>> 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const w = key[i]! | (key[i + 1]! << 8) | (key[i + 2]! << 16) | (key[i + 3]! << 24);
    h = (h + w) >>> 0;
    h = Math.imul(h, m) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  const rest = n - i;
  if (rest === 3) h = (h + (key[i + 2]! << 16)) >>> 0;
  if (rest >= 2) h = (h + (key[i + 1]! << 8)) >>> 0;
  if (rest >= 1) {
    h = (h + key[i]!) >>> 0;
    h = Math.imul(h, m) >>> 0;
    h = (h ^ (h >>> 24)) >>> 0;
  }
  return h;
}

/**
 * Builds a filter from key hashes.
 *
 * @example
 * ```ts
 * const keys = [new TextEncoder().encode("a")];
 * const filter = buildBloom(keys.map(bloomHash), 10);
 * bloomMayContain(filter, bloomHash(keys[0]!)); // true
 * ```
 */
export function buildBloom(hashes: ArrayLike<number>, bitsPerKey: number): Uint8Array {
  let k = Math.round(bitsPerKey * 0.69);
  if (k < 1) k = 1;
  if (k > 30) k = 30;
  let bits = hashes.length * bitsPerKey;
  if (bits < 64) bits = 64;
  const bytes = (bits + 7) >> 3;
  bits = bytes * 8;
  const out = new Uint8Array(bytes + 1);
  out[bytes] = k;
  for (let i = 0; i < hashes.length; i++) {
    let h = hashes[i]!;
    const delta = ((h >>> 17) | (h << 15)) >>> 0;
    for (let j = 0; j < k; j++) {
      const pos = h % bits;
      out[pos >> 3]! |= 1 << (pos & 7);
      h = (h + delta) >>> 0;
    }
  }
  return out;
}

/** False only when the key with hash `h` is certainly not in the set `filter` was built from. */
export function bloomMayContain(filter: Uint8Array, h: number): boolean {
  const len = filter.length;
  if (len < 2) return true;
  const bits = (len - 1) * 8;
  const k = filter[len - 1]!;
  if (k > 30) return true; // reserved for future encodings
  const delta = ((h >>> 17) | (h << 15)) >>> 0;
  for (let j = 0; j < k; j++) {
    const pos = h % bits;
    if ((filter[pos >> 3]! & (1 << (pos & 7))) === 0) return false;
    h = (h + delta) >>> 0;
  }
  return true;
}
