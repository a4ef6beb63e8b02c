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
  if (bits >= _INT_BITS_LIMIT) {
    for (let i = 0; i < hashes.length; i++) _setProbesSlow(out, bits, k, hashes[i]!);
    return out;
  }
  // Probe j of hash h is bit (h + j·delta mod 2^32) mod bits (LevelDB's double hashing). The
  // positions are stepped in int32 arithmetic: +delta mod bits per probe, and -(2^32 mod bits)
  // when the u32 sum wraps. Two float modulos per key instead of k.
  const wrap = _TWO32 % bits;
  for (let i = 0; i < hashes.length; i++) {
    let h = hashes[i]!;
    const delta = ((h >>> 17) | (h << 15)) >>> 0;
    const step = delta % bits;
    let pos = h % bits;
    for (let j = 0;;) {
      out[pos >> 3]! |= 1 << (pos & 7);
      if (++j === k) break;
      h += delta;
      pos += step;
      if (h >= _TWO32) {
        h -= _TWO32;
        pos -= wrap;
        if (pos < 0) pos += bits;
      }
      if (pos >= bits) pos -= bits;
    }
  }
  return out;
}

const _TWO32 = 0x100000000;
/** Filters this large step positions in float arithmetic (positions must stay below 2^30). */
const _INT_BITS_LIMIT = 1 << 30;

/** The k probes of `h` the plain way (a modulo each); for huge filters only. */
function _setProbesSlow(out: Uint8Array, bits: number, k: number, h: number): void {
  const delta = ((h >>> 17) | (h << 15)) >>> 0;
  for (let j = 0; j < k; j++) {
    const pos = h % bits;
    out[Math.floor(pos / 8)]! |= 1 << (pos & 7);
    h = (h + delta) >>> 0;
  }
}

/** False only when the key with hash `h` is certainly not in the set `filter` was built from. */
export function bloomMayContain(filter: Uint8Array, h: number): boolean {
  const len = filter.length;
  if (len < 2) return true;
  const bits = (len - 1) * 8;
  const k = filter[len - 1]!;
  if (k > 30) return true; // reserved for future encodings
  const delta = ((h >>> 17) | (h << 15)) >>> 0;
  if (bits >= _INT_BITS_LIMIT) {
    for (let j = 0; j < k; j++) {
      const pos = h % bits;
      if ((filter[Math.floor(pos / 8)]! & (1 << (pos & 7))) === 0) return false;
      h = (h + delta) >>> 0;
    }
    return true;
  }
  // The same probe sequence as buildBloom, stepped the same way.
  const wrap = _TWO32 % bits;
  const step = delta % bits;
  let pos = h % bits;
  for (let j = 0;;) {
    if ((filter[pos >> 3]! & (1 << (pos & 7))) === 0) return false;
    if (++j >= k) return true;
    h += delta;
    pos += step;
    if (h >= _TWO32) {
      h -= _TWO32;
      pos -= wrap;
      if (pos < 0) pos += bits;
    }
    if (pos >= bits) pos -= bits;
  }
}
