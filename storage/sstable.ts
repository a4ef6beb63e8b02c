/**
 * SSTables: immutable sorted files of internal entries. See `sstable_format.md` for the byte
 * layout; the constants below reach the disk: never change them.
 *
 * ```
 * data block 0 | crc u32
 * ...
 * data block n-1 | crc u32
 * index block    | crc u32
 * bloom filter   | crc u32
 * footer (48 bytes)
 * ```
 *
 * A point lookup checks the bloom filter (in memory), binary-searches the index (in memory) for
 * the one block that can hold the key, and reads that block (through the block cache).
 *
 * @module
 */
import { recordCrc } from "./record.ts";
import { BlockCache } from "./block_cache.ts";
import { bloomHash, bloomMayContain, buildBloom } from "./bloom.ts";
import {
  ByteReader,
  ByteWriter,
  compareBytes,
  copyOut,
  getU32,
  putVarint,
  setU32,
} from "./coding.ts";
import { CorruptionError } from "./errors.ts";
import type { FileSystem, StorageFile } from "./fs.ts";
import { type InternalIterator, KIND_DELETE, KIND_PUT } from "./iterator.ts";

/** Footer magic, "CKVSST\0\1" as a little-endian u64 split in two u32. */
export const SST_MAGIC_LO = 0x53564b43; // "CKVS"
/** High half of the footer magic. */
export const SST_MAGIC_HI = 0x01005453; // "ST\0\1"
/** Format version in the footer. */
export const SST_VERSION = 1;
/** Footer size in bytes. */
export const FOOTER_SIZE = 48;
/** Target size of a data block before it is cut. */
export const BLOCK_SIZE = 4096;
/** Bloom filter bits per key. */
export const BLOOM_BITS_PER_KEY = 10;
/** Bytes of consecutive blocks a {@link Table.sequentialIterator} reads at a time. */
export const SEQUENTIAL_READ_BYTES = 256 * 1024;

const _EMPTY = new Uint8Array(0);
/** Domain byte mixed into block checksums (record type slot of `recordCrc`). */
const _CRC_DATA = 0x44;
const _CRC_INDEX = 0x49;
const _CRC_BLOOM = 0x42;

/**
 * Evicted, unpinned blocks, reused whole (buffer and objects) for the next block reads: a block
 * read then allocates nothing that outlives it. Allocating per read, the blocks that sat in the
 * cache across a scavenge were promoted and died in old space, which grew by tens of MiB per
 * million point reads before a full GC (and V8 keeps the freed pages).
 */
const _blockPool: Block[] = [];
/** Buffer size of pooled blocks (a 4 KiB block plus its longest last entry, and the crc). */
const _POOLED_BYTES = 4608;

/**
 * Returns an evicted block to the pool, unless an iterator may still hold views into it
 * (`pinned`) or it does not own its buffer. Pass as the block cache's `onEvict`.
 */
export function recycleBlock(block: Block): void {
  if (!block.pinned && block.pooled && _blockPool.length < 256) _blockPool.push(block);
}

/** A parsed data block. Entries: `varint klen | varint vlen | kind u8 | seq u64 | key | value`. */
export class Block {
  /** Entry count. */
  count = 0;
  /**
   * True once anything but a point lookup (an iterator) used the block: its bytes may then be
   * referenced after eviction, so its buffer is never recycled.
   */
  pinned = true;
  /** True when the block owns its buffer (from the pool): it may be recycled. */
  pooled = false;
  /** The block's bytes start at 0; `#size` of them are the block (no crc). */
  #d: Uint8Array;
  #size = 0;
  #offsets = 0;
  /** Creates a view over the first `size` bytes of `data` (the block without its crc). */
  constructor(data: Uint8Array, size = data.length) {
    this.#d = data;
    this.reset(size);
  }
  /** Re-parses the block after its buffer was refilled with a block of `size` bytes. */
  reset(size: number): void {
    if (size < 4 || size > this.#d.length) throw new RangeError("block too small");
    this.#size = size;
    this.count = getU32(this.#d, size - 4);
    this.#offsets = size - 4 - 4 * this.count;
    if (this.#offsets < 0) throw new RangeError("bad block entry count");
  }
  /** The block's bytes (a new view). */
  get data(): Uint8Array {
    return this.#d.subarray(0, this.#size);
  }
  /** The whole buffer the block lives in (may extend past the block). */
  get buffer(): Uint8Array {
    return this.#d;
  }
  /** Bytes held (for the cache). */
  get byteLength(): number {
    return this.#size;
  }
  /** Offset of entry `i`. */
  offset(i: number): number {
    return getU32(this.#d, this.#offsets + 4 * i);
  }
  /**
   * Compares entry `i` with (`key`, `seq`) in internal order without allocating.
   */
  compareAt(i: number, key: Uint8Array, seq: number): number {
    const d = this.#d;
    let p = this.offset(i);
    let klen = 0;
    let mul = 1;
    for (;;) {
      const b = d[p++]!;
      klen += (b & 0x7f) * mul;
      if (b < 0x80) break;
      mul *= 128;
    }
    while (d[p++]! >= 0x80) { /* skip vlen */ }
    p++; // kind
    const seqAt = getU32(d, p) + getU32(d, p + 4) * 0x100000000;
    p += 8;
    const n = klen < key.length ? klen : key.length;
    for (let j = 0; j < n; j++) {
      const c = d[p + j]! - key[j]!;
      if (c !== 0) return c;
    }
    if (klen !== key.length) return klen - key.length;
    return seq - seqAt;
  }
  /** Index of the first entry at or after (`key`, `seq`); `count` when none. */
  lowerBound(key: Uint8Array, seq: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compareAt(mid, key, seq) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  /** Decodes entry `i` into `out`. */
  decode(i: number, out: { key: Uint8Array; seq: number; kind: number; value: Uint8Array }): void {
    const d = this.#d;
    let p = this.offset(i);
    // One-byte varints (lengths below 128) are the common case.
    let klen = d[p++]!;
    if (klen >= 0x80) {
      klen &= 0x7f;
      let mul = 128;
      let c: number;
      do {
        c = d[p++]!;
        klen += (c & 0x7f) * mul;
        mul *= 128;
      } while (c >= 0x80);
    }
    let vlen = d[p++]!;
    if (vlen >= 0x80) {
      vlen &= 0x7f;
      let mul = 128;
      let c: number;
      do {
        c = d[p++]!;
        vlen += (c & 0x7f) * mul;
        mul *= 128;
      } while (c >= 0x80);
    }
    out.kind = d[p]!;
    out.seq = getU32(d, p + 1) + getU32(d, p + 5) * 0x100000000;
    p += 9;
    // Also false for NaN (a varint that ran off the data).
    if (!(p + klen + vlen <= this.#offsets)) throw new RangeError("entry past block end");
    out.key = d.subarray(p, p + klen);
    out.value = d.subarray(p + klen, p + klen + vlen);
  }
}

/**
 * Bloom-hash buffers of finished table builders, reused by the next ones: a builder's hashes
 * live as long as its table is built (across scavenges), so a fresh growing array per table was
 * promoted and died in old space (about as much garbage as the rest of a compaction).
 */
const _hashPool: Uint32Array[] = [];
const _NO_HASHES = new Uint32Array(0);

/** A reusable read buffer of {@link Table.readBlocks}. */
export interface ChunkBuffer {
  /** The buffer (replaced by a larger one when a read does not fit). */
  buf: Uint8Array;
}

/** The in-memory index of a table: last internal key and location of each data block. */
interface _Index {
  keys: Uint8Array[];
  seqs: number[];
  offsets: number[];
  sizes: number[];
}

/** Metadata the builder reports for the manifest. */
export interface TableInfo {
  /** File size in bytes. */
  size: number;
  /** Entries in the table. */
  entries: number;
  /** Smallest user key. */
  smallest: Uint8Array;
  /** Largest user key. */
  largest: Uint8Array;
}

/**
 * Builds a table in memory from entries added in internal-key order, then writes it with one
 * append and one sync. Entries are encoded straight into the output buffer (a data block is
 * finished in place: its offsets, count and crc are appended after its entries).
 *
 * @example
 * ```ts
 * const b = new TableBuilder();
 * b.add(new TextEncoder().encode("a"), 1, KIND_PUT, new TextEncoder().encode("1"));
 * const bytes = b.finish(); // the whole file
 * ```
 */
export class TableBuilder {
  #out: ByteWriter;
  /** Where the current data block starts in `#out`. */
  #blockStart = 0;
  /** Offsets of the current block's entries, from the block start. */
  #blockOffsets: number[] = [];
  #index = new ByteWriter(4096);
  /** Bloom hashes of the distinct keys (the first `#nHashes`); from {@link _hashPool}. */
  #hashes: Uint32Array = _hashPool.pop() ?? new Uint32Array(16384);
  #nHashes = 0;
  /** Position of the last key in `#out` (its bytes stay put until the next table). */
  #lastKeyAt = 0;
  #lastKeyLen = 0;
  #lastSeq = 0;
  #smallest: Uint8Array | undefined;
  #entries = 0;

  /**
   * Creates a builder. `out`, when given, is reused as the output buffer (reset now): the
   * bytes `finish()` returned for a previous table must no longer be needed.
   */
  constructor(out?: ByteWriter) {
    this.#out = out ?? new ByteWriter(64 * 1024);
    this.#out.reset();
  }

  /** Entries added. */
  get entries(): number {
    return this.#entries;
  }
  /** Approximate file size so far. */
  get estimatedSize(): number {
    return this.#out.length + this.#index.length + this.#nHashes * 2 +
      this.#blockOffsets.length * 4;
  }
  /** The last user key added (a view, valid until the builder's buffer is reused). */
  get lastKey(): Uint8Array {
    if (this.#entries === 0) return _EMPTY;
    return this.#out.buf.subarray(this.#lastKeyAt, this.#lastKeyAt + this.#lastKeyLen);
  }

  /** True when `key` equals the last key added. */
  #isLastKey(key: Uint8Array): boolean {
    const n = key.length;
    if (n !== this.#lastKeyLen) return false;
    const buf = this.#out.buf;
    const at = this.#lastKeyAt;
    for (let i = 0; i < n; i++) if (buf[at + i] !== key[i]) return false;
    return true;
  }

  /**
   * Adds an entry; entries must come in internal-key order. Keeps no reference to inputs.
   * `sameUserKey` (when the caller knows it) skips a comparison with the previous key.
   */
  add(key: Uint8Array, seq: number, kind: number, value: Uint8Array, sameUserKey?: boolean): void {
    const klen = key.length;
    const vlen = value.length;
    const same = this.#entries > 0 && (sameUserKey ?? this.#isLastKey(key));
    if (!same) {
      if (this.#nHashes === this.#hashes.length) {
        const grown = new Uint32Array(Math.max(16384, this.#hashes.length * 2));
        grown.set(this.#hashes);
        this.#hashes = grown;
      }
      this.#hashes[this.#nHashes++] = bloomHash(key);
    }
    const o = this.#out;
    o.reserve(klen + vlen + 29);
    const buf = o.buf;
    let p = o.length;
    this.#blockOffsets.push(p - this.#blockStart);
    if (klen < 0x80) buf[p++] = klen;
    else p = putVarint(buf, p, klen);
    if (vlen < 0x80) buf[p++] = vlen;
    else p = putVarint(buf, p, vlen);
    buf[p] = kind;
    setU32(buf, p + 1, seq >>> 0);
    setU32(buf, p + 5, Math.floor(seq / 0x100000000));
    p += 9;
    const keyAt = p;
    if (klen <= 32) { for (let i = 0; i < klen; i++) buf[p + i] = key[i]!; }
    else buf.set(key, p);
    p += klen;
    if (vlen <= 32) { for (let i = 0; i < vlen; i++) buf[p + i] = value[i]!; }
    else buf.set(value, p);
    o.length = p + vlen;
    if (this.#smallest === undefined) this.#smallest = key.slice();
    this.#lastKeyAt = keyAt;
    this.#lastKeyLen = klen;
    this.#lastSeq = seq;
    this.#entries++;
    if (o.length - this.#blockStart >= BLOCK_SIZE) this.#finishBlock();
  }

  /** Appends the current block's offsets, count and crc after its entries, and indexes it. */
  #finishBlock(): void {
    const n = this.#blockOffsets.length;
    if (n === 0) return;
    const o = this.#out;
    const offsets = this.#blockOffsets;
    o.reserve(4 * n + 8);
    const buf = o.buf;
    let p = o.length;
    for (let i = 0; i < n; i++, p += 4) setU32(buf, p, offsets[i]!);
    setU32(buf, p, n);
    p += 4;
    const start = this.#blockStart;
    setU32(buf, p, recordCrc(_CRC_DATA, buf.subarray(start, p)));
    o.length = p + 4;
    const ix = this.#index;
    ix.varint(this.#lastKeyLen);
    ix.bytes(buf.subarray(this.#lastKeyAt, this.#lastKeyAt + this.#lastKeyLen));
    ix.u64(this.#lastSeq);
    ix.u64(start);
    ix.u32(p - start);
    this.#blockStart = o.length;
    offsets.length = 0;
  }

  /** Completes the table; returns the file's bytes and its metadata. */
  finish(): { bytes: Uint8Array; info: TableInfo } {
    this.#finishBlock();
    const out = this.#out;
    const indexOffset = out.length;
    const index = this.#index.view();
    out.bytes(index);
    out.u32(recordCrc(_CRC_INDEX, index));
    const bloomOffset = out.length;
    const bloom = buildBloom(this.#hashes.subarray(0, this.#nHashes), BLOOM_BITS_PER_KEY);
    if (_hashPool.length < 2) _hashPool.push(this.#hashes);
    this.#hashes = _NO_HASHES;
    this.#nHashes = 0;
    out.bytes(bloom);
    out.u32(recordCrc(_CRC_BLOOM, bloom));
    const footer = new Uint8Array(FOOTER_SIZE);
    const f = new ByteWriter(FOOTER_SIZE);
    f.u64(indexOffset);
    f.u32(index.length);
    f.u64(bloomOffset);
    f.u32(bloom.length);
    f.u64(this.#entries);
    f.u32(SST_VERSION);
    footer.set(f.view());
    setU32(footer, 36, recordCrc(0, footer.subarray(0, 36)));
    setU32(footer, 40, SST_MAGIC_LO);
    setU32(footer, 44, SST_MAGIC_HI);
    out.bytes(footer);
    const bytes = out.view();
    return {
      bytes,
      info: {
        size: bytes.length,
        entries: this.#entries,
        smallest: this.#smallest ?? _EMPTY,
        largest: this.lastKey.slice(),
      },
    };
  }
}

/** The result of a point lookup in a table. */
export interface Found {
  /** {@link KIND_PUT} or {@link KIND_DELETE}. */
  kind: number;
  /** The value (a copy, possibly a view into a shared slab: see `copyOut`); empty for tombstones. */
  value: Uint8Array;
  /** The entry's sequence number. */
  seq: number;
}

/**
 * An open SSTable: footer, index and bloom filter in memory, data blocks read on demand.
 *
 * @example
 * ```ts ignore
 * const t = await Table.open(fs, "/db/000005.sst", { number: 5, cache });
 * t.get(key, Number.MAX_SAFE_INTEGER, bloomHash(key));
 * ```
 */
export class Table {
  #file: StorageFile;
  #index: _Index;
  #bloom: Uint8Array;
  #cache: BlockCache<Block>;
  #scratch = { key: _EMPTY, seq: 0, kind: 0, value: _EMPTY };
  /** Table (file) number. */
  readonly number: number;
  /** File size. */
  readonly size: number;
  /** Entries in the table. */
  readonly entries: number;

  private constructor(
    file: StorageFile,
    number: number,
    index: _Index,
    bloom: Uint8Array,
    cache: BlockCache<Block>,
    entries: number,
  ) {
    this.#file = file;
    this.number = number;
    this.#index = index;
    this.#bloom = bloom;
    this.#cache = cache;
    this.size = file.size();
    this.entries = entries;
  }

  /** Opens and validates a table; throws {@link CorruptionError} on a bad footer, index or filter. */
  static async open(
    fs: FileSystem,
    path: string,
    options: { number: number; cache: BlockCache<Block> },
  ): Promise<Table> {
    return Table.#load(await fs.openRead(path), path, options);
  }

  /**
   * {@link Table.open}, synchronously: for tables opened lazily on their first lookup. Same
   * checks, same {@link CorruptionError}s.
   */
  static openSync(
    fs: FileSystem,
    path: string,
    options: { number: number; cache: BlockCache<Block> },
  ): Table {
    return Table.#load(fs.openReadSync(path), path, options);
  }

  /** Reads and checks the footer, index and filter of `file`; closes it on failure. */
  static #load(
    file: StorageFile,
    path: string,
    options: { number: number; cache: BlockCache<Block> },
  ): Table {
    try {
      const size = file.size();
      if (size < FOOTER_SIZE) {
        throw new CorruptionError("table shorter than its footer", { file: path, offset: 0 });
      }
      const footer = new Uint8Array(FOOTER_SIZE);
      const fpos = size - FOOTER_SIZE;
      file.readAt(footer, fpos);
      if (getU32(footer, 40) !== SST_MAGIC_LO || getU32(footer, 44) !== SST_MAGIC_HI) {
        throw new CorruptionError("bad table magic", { file: path, offset: fpos + 40 });
      }
      if (getU32(footer, 36) !== recordCrc(0, footer.subarray(0, 36))) {
        throw new CorruptionError("table footer checksum mismatch", { file: path, offset: fpos });
      }
      const fr = new ByteReader(footer);
      const indexOffset = fr.u64();
      const indexSize = fr.u32();
      const bloomOffset = fr.u64();
      const bloomSize = fr.u32();
      const entries = fr.u64();
      const version = fr.u32();
      if (version !== SST_VERSION) {
        throw new CorruptionError(`unknown table version ${version}`, {
          file: path,
          offset: fpos + 32,
        });
      }
      if (indexOffset + indexSize + 4 > fpos || bloomOffset + bloomSize + 4 > fpos) {
        throw new CorruptionError("table footer points past the file", {
          file: path,
          offset: fpos,
        });
      }
      const indexBytes = _readChecked(file, indexOffset, indexSize, _CRC_INDEX, "index block");
      const bloom = _readChecked(file, bloomOffset, bloomSize, _CRC_BLOOM, "bloom filter");
      const index: _Index = { keys: [], seqs: [], offsets: [], sizes: [] };
      try {
        const r = new ByteReader(indexBytes);
        while (r.pos < indexBytes.length) {
          const klen = r.varint();
          index.keys.push(r.bytes(klen));
          index.seqs.push(r.u64());
          const off = r.u64();
          const sz = r.u32();
          if (off + sz + 4 > indexOffset) throw new RangeError("block past the index");
          index.offsets.push(off);
          index.sizes.push(sz);
        }
      } catch (e) {
        if (e instanceof RangeError) {
          throw new CorruptionError(`bad index block: ${e.message}`, {
            file: path,
            offset: indexOffset,
          });
        }
        throw e;
      }
      return new Table(file, options.number, index, bloom, options.cache, entries);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Number of data blocks. */
  get blockCount(): number {
    return this.#index.keys.length;
  }

  /**
   * Reads (or finds in the cache) data block `i`. `pin` (an iterator): the block may be
   * referenced after the call; a block read for it is not cached. Without `pin` (a point lookup,
   * whose caller keeps nothing of it), a block read is cached and recycled once evicted.
   */
  block(i: number, pin = true): Block {
    const cacheKey = this.number * 0x1000000 + i;
    const cached = this.#cache.get(cacheKey);
    if (cached !== undefined) {
      if (pin) cached.pinned = true;
      return cached;
    }
    const offset = this.#index.offsets[i]!;
    const size = this.#index.sizes[i]!;
    // A point lookup reuses a pooled block; an iterator's block may be referenced after the
    // iterator moves on (it is never recycled): it gets a buffer of its own.
    let block = pin ? undefined : _blockPool.pop();
    if (block !== undefined && block.buffer.length >= size + 4) {
      _readChecked(this.#file, offset, size, _CRC_DATA, "data block", block.buffer);
      try {
        block.reset(size);
      } catch {
        throw new CorruptionError("bad data block", { file: this.#file.path, offset });
      }
    } else {
      const buf = new Uint8Array(pin ? size + 4 : Math.max(size + 4, _POOLED_BYTES));
      _readChecked(this.#file, offset, size, _CRC_DATA, "data block", buf);
      try {
        block = new Block(buf, size);
      } catch {
        throw new CorruptionError("bad data block", { file: this.#file.path, offset });
      }
      block.pooled = !pin;
    }
    block.pinned = pin;
    // Iterators read through the cache but do not fill it (LevelDB's `fill_cache = false` for
    // scans): a scan reads each block once, and caching its blocks would evict the point
    // lookups' blocks and keep each scanned block's buffer alive (it cannot be recycled) until
    // evicted, long enough to be promoted; old space then grew by ~100 MiB per full scan.
    if (!pin) this.#cache.set(cacheKey, block);
    return block;
  }

  /**
   * Reads consecutive data blocks from `first` in one positional read: as many whole blocks as
   * fit in `maxBytes` (at least one). Each is checked; none enters the block cache. A block that
   * fails its checks ends the run before it, or, when it is `first`, throws the error
   * {@link Table.block} would. With `chunk`, the read goes into `chunk.buf` (replaced by a
   * larger buffer when too small), overwriting the blocks an earlier read returned.
   */
  readBlocks(first: number, maxBytes: number, chunk?: ChunkBuffer): Block[] {
    const { offsets, sizes } = this.#index;
    const start = offsets[first]!;
    let last = first;
    let end = start + sizes[first]! + 4;
    while (
      last + 1 < offsets.length && offsets[last + 1] === end &&
      end + sizes[last + 1]! + 4 - start <= maxBytes
    ) {
      last++;
      end += sizes[last]! + 4;
    }
    let buf: Uint8Array;
    if (chunk === undefined) buf = new Uint8Array(end - start);
    else {
      if (chunk.buf.length < end - start) {
        chunk.buf = new Uint8Array(Math.max(end - start, maxBytes));
      }
      buf = chunk.buf.subarray(0, end - start);
    }
    const n = this.#file.readAt(buf, start);
    const out: Block[] = [];
    for (let j = first; j <= last; j++) {
      const at = offsets[j]! - start;
      const size = sizes[j]!;
      if (at + size + 4 > n) break;
      const data = buf.subarray(at, at + size);
      if (getU32(buf, at + size) !== recordCrc(_CRC_DATA, data)) break;
      let block: Block;
      try {
        block = new Block(data);
      } catch {
        break;
      }
      out.push(block);
    }
    if (out.length === 0) {
      // Reread the bad block alone, uncached, for the precise error.
      const data = _readChecked(this.#file, start, sizes[first]!, _CRC_DATA, "data block");
      try {
        out.push(new Block(data));
      } catch {
        throw new CorruptionError("bad data block", { file: this.#file.path, offset: start });
      }
    }
    return out;
  }

  /** Index of the first block whose last key is at or after (`key`, `seq`); `blockCount` if none. */
  findBlock(key: Uint8Array, seq: number): number {
    const { keys, seqs } = this.#index;
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareBytes(keys[mid]!, key);
      if (c < 0 || (c === 0 && seqs[mid]! > seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** False when the bloom filter rules `key` (with hash `hash`) out. */
  mayContain(hash: number): boolean {
    return bloomMayContain(this.#bloom, hash);
  }

  /**
   * The newest entry for `key` with sequence ≤ `seq`, or `undefined`. Reads at most one block.
   */
  get(key: Uint8Array, seq: number, hash: number): Found | undefined {
    if (!bloomMayContain(this.#bloom, hash)) return undefined;
    const bi = this.findBlock(key, seq);
    if (bi >= this.#index.keys.length) return undefined;
    const block = this.block(bi, false); // nothing outlives this call: the buffer may be recycled
    const i = block.lowerBound(key, seq);
    if (i >= block.count) return undefined;
    const e = this.#scratch;
    try {
      block.decode(i, e);
    } catch {
      throw new CorruptionError("bad entry in data block", {
        file: this.#file.path,
        offset: this.#index.offsets[bi]!,
      });
    }
    const found = compareBytes(e.key, key) === 0
      ? { kind: e.kind, value: e.kind === KIND_PUT ? copyOut(e.value) : _EMPTY, seq: e.seq }
      : undefined;
    // Views kept in the long-lived scratch would outlive this call (and be promoted).
    e.key = e.value = _EMPTY;
    return found;
  }

  /** An iterator over every entry. */
  iterator(): InternalIterator {
    return new _TableIterator(this);
  }

  /**
   * An iterator for one pass in order (a compaction): it reads up to `chunkBytes` of
   * consecutive blocks per read (one system call instead of one per 4 KiB block) and bypasses
   * the block cache, as LevelDB's compactions do (`fill_cache = false`). Every read goes into
   * one buffer, `chunk` (a {@link LevelIterator} hands its own to each table's iterator), so a
   * compaction allocates a read buffer per input, not per 256 KiB read: the current entry's
   * views are valid until the next move (consumers copy what they keep, as `writeCompacted`
   * does with the last key).
   */
  sequentialIterator(
    chunkBytes: number = SEQUENTIAL_READ_BYTES,
    chunk: ChunkBuffer = { buf: _EMPTY },
  ): InternalIterator {
    return new _SequentialIterator(this, chunkBytes, chunk);
  }

  /** Path of the file. */
  get path(): string {
    return this.#file.path;
  }

  /** Closes the file and drops its cached blocks. */
  close(): void {
    this.#cache.evictTable(this.number);
    this.#file.close();
  }
}

/**
 * Reads `size` bytes at `offset` and their crc, checks them, and returns the bytes: read into
 * the start of `into` when given (which must hold `size + 4` bytes), else into a new buffer.
 */
function _readChecked(
  file: StorageFile,
  offset: number,
  size: number,
  domain: number,
  what: string,
  into?: Uint8Array,
): Uint8Array {
  const buf = into === undefined ? new Uint8Array(size + 4) : into.subarray(0, size + 4);
  const n = file.readAt(buf, offset);
  if (n !== buf.length) throw new CorruptionError(`truncated ${what}`, { file: file.path, offset });
  const data = buf.subarray(0, size);
  if (getU32(buf, size) !== recordCrc(domain, data)) {
    throw new CorruptionError(`${what} checksum mismatch`, { file: file.path, offset });
  }
  return data;
}

class _TableIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = KIND_DELETE;
  value: Uint8Array = _EMPTY;
  #bi = 0;
  #block: Block | undefined;
  #i = 0;
  constructor(private table: Table) {}
  #settle(): void {
    for (;;) {
      const b = this.#block;
      if (b !== undefined && this.#i < b.count) {
        b.decode(this.#i, this);
        this.valid = true;
        return;
      }
      if (b !== undefined) this.#bi++;
      if (this.#bi >= this.table.blockCount) {
        this.valid = false;
        this.#block = undefined;
        return;
      }
      this.#block = this.table.block(this.#bi);
      this.#i = 0;
    }
  }
  seekToFirst(): void {
    this.#bi = 0;
    this.#block = undefined;
    this.#settle();
  }
  seek(key: Uint8Array, seq: number): void {
    this.#bi = this.table.findBlock(key, seq);
    if (this.#bi >= this.table.blockCount) {
      this.valid = false;
      this.#block = undefined;
      return;
    }
    this.#block = this.table.block(this.#bi);
    this.#i = this.#block.lowerBound(key, seq);
    this.#settle();
  }
  next(): void {
    if (!this.valid) return;
    this.#i++;
    this.#settle();
  }
}

/** {@link Table.sequentialIterator}: walks chunks of blocks read by {@link Table.readBlocks}. */
class _SequentialIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = KIND_DELETE;
  value: Uint8Array = _EMPTY;
  /** Blocks of the current chunk; `#first` is the table's index of the first one. */
  #blocks: Block[] = [];
  #first = 0;
  /** Index in `#blocks` of the block after the current one. */
  #next = 0;
  #block: Block | undefined;
  #i = 0;
  constructor(private table: Table, private chunkBytes: number, private chunk: ChunkBuffer) {}
  #settle(): void {
    for (;;) {
      const b = this.#block;
      if (b !== undefined && this.#i < b.count) {
        b.decode(this.#i, this);
        this.valid = true;
        return;
      }
      if (this.#next >= this.#blocks.length) {
        const first = this.#first + this.#blocks.length;
        if (first >= this.table.blockCount) {
          this.valid = false;
          this.#block = undefined;
          this.#blocks = [];
          this.#first = first;
          this.#next = 0;
          return;
        }
        this.#blocks = this.table.readBlocks(first, this.chunkBytes, this.chunk);
        this.#first = first;
        this.#next = 0;
      }
      this.#block = this.#blocks[this.#next++];
      this.#i = 0;
    }
  }
  seekToFirst(): void {
    this.#blocks = [];
    this.#first = 0;
    this.#next = 0;
    this.#block = undefined;
    this.#settle();
  }
  seek(key: Uint8Array, seq: number): void {
    const bi = this.table.findBlock(key, seq);
    this.#blocks = [];
    this.#first = bi;
    this.#next = 0;
    this.#block = undefined;
    if (bi >= this.table.blockCount) {
      this.valid = false;
      return;
    }
    this.#blocks = this.table.readBlocks(bi, this.chunkBytes, this.chunk);
    const b = this.#blocks[0]!;
    this.#next = 1;
    this.#block = b;
    this.#i = b.lowerBound(key, seq);
    this.#settle();
  }
  next(): void {
    if (!this.valid) return;
    this.#i++;
    this.#settle();
  }
}

/**
 * Iterates the concatenation of non-overlapping tables sorted by key (a level ≥ 1).
 *
 * @example
 * ```ts
 * const it = new LevelIterator([], [], []);
 * it.seekToFirst(); // it.valid === false
 * ```
 */
export class LevelIterator implements InternalIterator {
  valid = false;
  key: Uint8Array = _EMPTY;
  seq = 0;
  kind = KIND_DELETE;
  value: Uint8Array = _EMPTY;
  #ti = 0;
  #it: InternalIterator | undefined;
  /** The read buffer each table's sequential iterator uses in turn. */
  #chunk: ChunkBuffer = { buf: _EMPTY };
  /**
   * Creates the iterator over `tables` whose smallest and largest keys are `smallest` and
   * `largest`; `sequential` walks each table with {@link Table.sequentialIterator} (one pass,
   * uncached: compactions).
   */
  constructor(
    private tables: Table[],
    private smallest: Uint8Array[],
    private largest: Uint8Array[],
    private sequential = false,
  ) {}
  #open(i: number): InternalIterator {
    const t = this.tables[i]!;
    return this.sequential
      ? t.sequentialIterator(SEQUENTIAL_READ_BYTES, this.#chunk)
      : t.iterator();
  }
  #load(): void {
    for (;;) {
      const it = this.#it;
      if (it !== undefined && it.valid) {
        this.valid = true;
        this.key = it.key;
        this.seq = it.seq;
        this.kind = it.kind;
        this.value = it.value;
        return;
      }
      if (it !== undefined) this.#ti++;
      if (this.#ti >= this.tables.length) {
        this.valid = false;
        this.#it = undefined;
        return;
      }
      this.#it = this.#open(this.#ti);
      this.#it.seekToFirst();
    }
  }
  seekToFirst(): void {
    this.#ti = 0;
    this.#it = undefined;
    this.#load();
  }
  seek(key: Uint8Array, seq: number): void {
    let lo = 0;
    let hi = this.tables.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(this.largest[mid]!, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.#ti = lo;
    if (lo >= this.tables.length) {
      this.valid = false;
      this.#it = undefined;
      return;
    }
    this.#it = this.#open(lo);
    if (compareBytes(this.smallest[lo]!, key) > 0) this.#it.seekToFirst();
    else this.#it.seek(key, seq);
    this.#load();
  }
  next(): void {
    if (!this.valid) return;
    this.#it!.next();
    this.#load();
  }
}

/** Writes a finished table to `path` (one append, one sync) and closes it. */
export async function writeTableFile(
  fs: FileSystem,
  path: string,
  bytes: Uint8Array,
): Promise<void> {
  const f = await fs.openAppend(path, { truncate: true });
  try {
    await f.append(bytes);
    await f.sync();
  } finally {
    f.close();
  }
}

/** Re-exported for callers that hash once per lookup. */
export { bloomHash, putVarint };
