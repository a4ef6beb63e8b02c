/**
 * Byte helpers shared by the storage modules: comparison, varints and little-endian integers.
 *
 * @module
 */

/**
 * Lexicographic comparison of two byte strings (negative, zero or positive).
 *
 * @example
 * ```ts
 * compareBytes(Uint8Array.of(1), Uint8Array.of(1, 0)); // < 0
 * ```
 */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** True when `a` and `b` hold the same bytes. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The bytes as a string of one char (0–255) per byte: a Map or Set key to which byte strings map
 * one to one.
 */
export function keyString(b: Uint8Array): string {
  if (b.length <= 4096) return String.fromCharCode.apply(null, b as unknown as number[]);
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 4096) as unknown as number[]);
  }
  return s;
}

/** True when `key` starts with `prefix`. */
export function hasPrefix(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/**
 * The smallest key greater than every key with `prefix`, or `undefined` when none exists
 * (the prefix is all 0xff).
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i] !== 0xff) {
      const out = prefix.slice(0, i + 1);
      out[i]!++;
      return out;
    }
  }
  return undefined;
}

/**
 * Compares internal keys: user key ascending, then sequence number descending (newest first).
 */
export function compareInternal(
  ak: Uint8Array,
  aseq: number,
  bk: Uint8Array,
  bseq: number,
): number {
  const c = compareBytes(ak, bk);
  if (c !== 0) return c;
  return bseq - aseq;
}

/** Writes `v` (< 2^53) as a varint at `pos`; returns the position after it. */
export function putVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** Bytes `putVarint` writes for `v`. */
export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** A growable byte buffer for encoders. */
export class ByteWriter {
  /** The backing buffer (valid up to `length`). */
  buf: Uint8Array;
  /** Bytes written so far. */
  length = 0;
  /** Creates a writer with `capacity` bytes reserved. */
  constructor(capacity = 4096) {
    this.buf = new Uint8Array(capacity);
  }
  /** Makes room for `n` more bytes. */
  reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  /** Appends a varint. */
  varint(v: number): void {
    this.reserve(10);
    this.length = putVarint(this.buf, this.length, v);
  }
  /** Appends a little-endian u32. */
  u32(v: number): void {
    this.reserve(4);
    const b = this.buf;
    const p = this.length;
    b[p] = v & 0xff;
    b[p + 1] = (v >>> 8) & 0xff;
    b[p + 2] = (v >>> 16) & 0xff;
    b[p + 3] = (v >>> 24) & 0xff;
    this.length = p + 4;
  }
  /** Appends a little-endian u64 (`v` < 2^53). */
  u64(v: number): void {
    this.u32(v >>> 0);
    this.u32(Math.floor(v / 0x100000000));
  }
  /** Appends one byte. */
  u8(v: number): void {
    this.reserve(1);
    this.buf[this.length++] = v;
  }
  /** Appends bytes. */
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  /** A view of the written bytes. */
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
  /** Forgets the content, keeping the buffer. */
  reset(): void {
    this.length = 0;
  }
}

/** A cursor reading varints and little-endian integers; throws `RangeError` past the end. */
export class ByteReader {
  /** Current position. */
  pos: number;
  /** Creates a reader over `buf[pos, end)`. */
  constructor(readonly buf: Uint8Array, pos = 0, readonly end = buf.length) {
    this.pos = pos;
  }
  /** Reads a varint. */
  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.end) throw new RangeError("varint past end");
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    throw new RangeError("varint too long");
  }
  /** Reads a little-endian u32. */
  u32(): number {
    if (this.pos + 4 > this.end) throw new RangeError("u32 past end");
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
  }
  /** Reads a little-endian u64 (must be < 2^53). */
  u64(): number {
    const lo = this.u32();
    const hi = this.u32();
    if (hi >= 0x200000) throw new RangeError("u64 too large");
    return hi * 0x100000000 + lo;
  }
  /** Reads one byte. */
  u8(): number {
    if (this.pos >= this.end) throw new RangeError("u8 past end");
    return this.buf[this.pos++]!;
  }
  /** Reads `n` bytes as a view. */
  bytes(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.end) throw new RangeError("bytes past end");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/** Reads a little-endian u32 at `p`. */
export function getU32(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

/** Writes a little-endian u32 at `p`. */
export function setU32(b: Uint8Array, p: number, v: number): void {
  b[p] = v & 0xff;
  b[p + 1] = (v >>> 8) & 0xff;
  b[p + 2] = (v >>> 16) & 0xff;
  b[p + 3] = (v >>> 24) & 0xff;
}

/** Hex string of bytes (manifest encoding of keys). */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of a hex string; throws `RangeError` on bad input. */
export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new RangeError("odd hex length");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) {
    const v = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    if (Number.isNaN(v)) throw new RangeError("bad hex");
    out[i] = v;
  }
  return out;
}

/** Values up to this size are copied into a shared slab by {@link copyOut}. */
const _SLAB_VALUE_MAX = 1024;
/** Size of the slabs {@link copyOut} cuts copies from. */
const _SLAB_BYTES = 16 * 1024;
let _slab = new Uint8Array(0);
let _slabPos = 0;

/**
 * A copy of `src` for the caller to keep (values returned by gets and scans). Copies of 65 B –
 * 1 KiB are cut from a shared 16 KiB slab (as Node's Buffer pool does) rather than each getting an
 * ArrayBuffer: every ArrayBuffer carries native bookkeeping several times a 100-byte value's
 * size, freed only when a GC finds it dead, so a million-entry scan made hundreds of MiB of RSS.
 * Smaller copies live in the V8 heap anyway; larger ones get their own buffer. A kept copy keeps
 * its slab alive.
 *
 * @example
 * ```ts
 * const v = copyOut(new Uint8Array(100).fill(7));
 * v.length; // 100 (a view into a shared slab: do not transfer v.buffer)
 * ```
 */
export function copyOut(src: Uint8Array): Uint8Array {
  const n = src.length;
  if (n <= 64 || n > _SLAB_VALUE_MAX) return src.slice();
  if (_slab.length - _slabPos < n) {
    _slab = new Uint8Array(_SLAB_BYTES);
    _slabPos = 0;
  }
  const out = _slab.subarray(_slabPos, _slabPos + n);
  out.set(src);
  _slabPos += (n + 7) & ~7;
  return out;
}
