/**
 * The write-ahead log: one segment file (`NNNNNN.log`) per memtable, a sequence of records
 * framed by `record.ts`. Each record holds one *commit group* (all the batches that one group
 * commit wrote with one append and one sync), so a torn write tears exactly one record, always
 * the last. See `wal_format.md`.
 *
 * Group payload (little-endian; reaches the disk — never change):
 *
 * ```
 * firstSeq u64 | count u32 | count × ( kind u8 | varint klen | key | varint vlen | value )
 * ```
 *
 * Entry `i` has sequence number `firstSeq + i`.
 *
 * @module
 */
import { ByteReader, ByteWriter } from "./coding.ts";
import { CorruptionError } from "./errors.ts";
import type { FileSystem } from "./fs.ts";
import { KIND_DELETE, KIND_PUT } from "./iterator.ts";
import { readRecord, RECORD_HEADER_SIZE, recordCrc } from "./record.ts";

/** Record type of a commit group. Reaches the disk: never change. */
export const WAL_GROUP = 1;

/** One logical write. */
export interface WalEntry {
  /** {@link KIND_PUT} or {@link KIND_DELETE}. */
  kind: number;
  /** User key. */
  key: Uint8Array;
  /** Value (empty for deletes). */
  value: Uint8Array;
}

const _EMPTY = new Uint8Array(0);

/**
 * Encodes commit groups as WAL records into one reused scratch buffer: a group costs no
 * allocation (the memtable copies keys and values from the batch itself, so nothing needs to
 * keep the record's bytes after the append).
 *
 * @example
 * ```ts
 * const enc = new WalEncoder();
 * enc.begin(1);
 * enc.add(KIND_PUT, new TextEncoder().encode("k"), new TextEncoder().encode("v"));
 * const record = enc.finish(); // append to the segment before the next begin()
 * ```
 */
export class WalEncoder {
  #w = new ByteWriter(64 * 1024);
  #count = 0;
  /**
   * Starts a group whose first entry gets sequence `firstSeq`. The record returned by the
   * previous {@link finish} is overwritten from here on.
   */
  begin(firstSeq: number): void {
    // Shrink the scratch buffer again after an unusually large group.
    if (this.#w.buf.length > _SCRATCH_MAX) this.#w = new ByteWriter(64 * 1024);
    const w = this.#w;
    w.reset();
    w.reserve(RECORD_HEADER_SIZE);
    w.length = RECORD_HEADER_SIZE; // header filled by finish()
    w.u64(firstSeq);
    w.u32(0);
    this.#count = 0;
  }
  /** Adds an entry (kind, key and value are copied into the record). */
  add(kind: number, key: Uint8Array, value: Uint8Array): void {
    const w = this.#w;
    w.reserve(1 + 10 + key.length + 10 + value.length);
    w.u8(kind);
    w.varint(key.length);
    w.bytes(key);
    w.varint(value.length);
    w.bytes(value);
    this.#count++;
  }
  /** Payload bytes so far. */
  get size(): number {
    return this.#w.length;
  }
  /**
   * Completes the record (header and entry count written in place) and returns it as a view
   * into the scratch buffer: valid until the next {@link begin}, so the caller must finish
   * writing it (an awaited append) before encoding the next group.
   */
  finish(): Uint8Array {
    const w = this.#w;
    const buf = w.buf;
    const n = w.length;
    // Record header (see record.ts): crc u32 | payload length u32 | type u8, little-endian.
    _putU32(buf, RECORD_HEADER_SIZE + 8, this.#count);
    _putU32(buf, 0, recordCrc(WAL_GROUP, buf.subarray(RECORD_HEADER_SIZE, n)));
    _putU32(buf, 4, n - RECORD_HEADER_SIZE);
    buf[8] = WAL_GROUP;
    return buf.subarray(0, n);
  }
}

function _putU32(buf: Uint8Array, p: number, v: number): void {
  buf[p] = v & 0xff;
  buf[p + 1] = (v >>> 8) & 0xff;
  buf[p + 2] = (v >>> 16) & 0xff;
  buf[p + 3] = (v >>> 24) & 0xff;
}

/** Scratch buffers larger than this are dropped at the next group. */
const _SCRATCH_MAX = 1 << 20;

/** Calls `fn` for each entry of a group payload, with views into `payload`. */
export function decodeGroup(
  payload: Uint8Array,
  fn: (seq: number, kind: number, key: Uint8Array, value: Uint8Array) => void,
): void {
  const r = new ByteReader(payload);
  const first = r.u64();
  const count = r.u32();
  for (let i = 0; i < count; i++) {
    const kind = r.u8();
    if (kind !== KIND_PUT && kind !== KIND_DELETE) throw new RangeError(`bad entry kind ${kind}`);
    const key = r.bytes(r.varint());
    const value = r.bytes(r.varint());
    fn(first + i, kind, key, kind === KIND_PUT ? value : _EMPTY);
  }
  if (r.pos !== payload.length) throw new RangeError("trailing bytes in group");
}

/** What {@link readWalSegment} found. */
export interface WalReadResult {
  /** Offset after the last good record. */
  validEnd: number;
  /** Set when a bad record ends the segment (a torn tail): its offset and why. */
  tornAt?: { offset: number; reason: string };
}

/** True when a good record of a known type starts somewhere in `buf` after `from`. */
export function goodRecordAfter(buf: Uint8Array, from: number, type: number): boolean {
  for (let p = from + 1; p + RECORD_HEADER_SIZE <= buf.length; p++) {
    const r = readRecord(buf, p);
    if (r.kind === "record" && r.type === type && r.payload.length > 0) return true;
  }
  return false;
}

/**
 * Reads one WAL segment and calls `fn` for every entry in order. A bad record followed only by
 * garbage is a torn tail (reported in the result; the caller truncates and logs); a bad record
 * followed by a good one throws {@link CorruptionError} naming the file and offset.
 *
 * @example
 * ```ts ignore
 * const res = await readWalSegment(fs, "/db/000003.log", (seq, kind, key, value) => {});
 * if (res.tornAt) console.warn("torn tail at", res.tornAt.offset);
 * ```
 */
export async function readWalSegment(
  fs: FileSystem,
  path: string,
  fn: (seq: number, kind: number, key: Uint8Array, value: Uint8Array) => void,
): Promise<WalReadResult> {
  const buf = await fs.readFile(path);
  let pos = 0;
  for (;;) {
    const r = readRecord(buf, pos);
    if (r.kind === "end") return { validEnd: pos };
    if (r.kind === "bad" || r.type !== WAL_GROUP) {
      const reason = r.kind === "bad" ? r.reason : `unknown record type ${r.type}`;
      if (goodRecordAfter(buf, pos, WAL_GROUP)) {
        throw new CorruptionError(`bad WAL record (${reason}) followed by valid records`, {
          file: path,
          offset: pos,
        });
      }
      return { validEnd: pos, tornAt: { offset: pos, reason } };
    }
    try {
      decodeGroup(r.payload, fn);
    } catch (e) {
      if (e instanceof RangeError) {
        throw new CorruptionError(`bad WAL group: ${e.message}`, { file: path, offset: pos });
      }
      throw e;
    }
    pos = r.next;
  }
}
