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
import { encodeRecordInto, readRecord, RECORD_HEADER_SIZE } from "./record.ts";

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
 * Encodes commit groups as WAL records, reusing one buffer.
 *
 * @example
 * ```ts
 * const enc = new WalEncoder();
 * enc.begin(1);
 * enc.add(KIND_PUT, new TextEncoder().encode("k"), new TextEncoder().encode("v"));
 * const record = enc.finish(); // append to the segment
 * ```
 */
export class WalEncoder {
  #w = new ByteWriter(64 * 1024);
  #count = 0;
  #slab = new Uint8Array(0);
  #slabPos = 0;
  /** Starts a group whose first entry gets sequence `firstSeq`. */
  begin(firstSeq: number): void {
    const w = this.#w;
    w.reset();
    w.reserve(RECORD_HEADER_SIZE);
    w.length = RECORD_HEADER_SIZE; // header filled by finish()
    w.u64(firstSeq);
    w.u32(0);
    this.#count = 0;
  }
  /**
   * Adds an entry; returns where its key and value start in the payload buffer, which the
   * memtable can keep as views after {@link finish} (the buffer is handed over, not reused).
   */
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
   * Completes the record. The returned bytes are never written again by the encoder (they may
   * be a view into a buffer shared with other small records).
   */
  finish(): Uint8Array {
    const w = this.#w;
    const buf = w.buf;
    const c = this.#count;
    const p = RECORD_HEADER_SIZE + 8;
    buf[p] = c & 0xff;
    buf[p + 1] = (c >>> 8) & 0xff;
    buf[p + 2] = (c >>> 16) & 0xff;
    buf[p + 3] = (c >>> 24) & 0xff;
    // One copy per group, which the memtable keeps views into; the encoder keeps its scratch
    // buffer (shrunk again after an unusually large group). Small groups (single puts) are
    // copied into a shared slab rather than each into its own ArrayBuffer: a million tiny
    // backing stores, freed only by full GCs, cost far more memory than the bytes they hold.
    const n = w.length;
    let out: Uint8Array;
    if (n <= _SLAB_MAX_RECORD) {
      if (this.#slab.length - this.#slabPos < n) {
        this.#slab = new Uint8Array(_SLAB_BYTES);
        this.#slabPos = 0;
      }
      out = this.#slab.subarray(this.#slabPos, this.#slabPos + n);
      this.#slabPos += n;
      out.set(buf.subarray(0, n));
    } else {
      out = buf.slice(0, n);
    }
    encodeRecordInto(out, 0, { type: WAL_GROUP, payload: out.subarray(RECORD_HEADER_SIZE) });
    if (buf.length > 1 << 20) this.#w = new ByteWriter(64 * 1024);
    return out;
  }
}

/** Size of the shared buffers small group records are copied into. */
const _SLAB_BYTES = 256 * 1024;
/** Groups up to this size go into a slab; larger ones get their own buffer. */
const _SLAB_MAX_RECORD = 16 * 1024;

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
