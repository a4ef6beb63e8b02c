/**
 * Checksummed record framing shared by every append-only log in ConcordKV (the KV engine's WAL,
 * the manifest log and the Raft log).
 *
 * Layout of one record (little-endian; these values reach the disk — never change them):
 *
 * ```
 * +----------+------------+--------+----------------+
 * | crc u32  | length u32 | type u8| payload[length]|
 * +----------+------------+--------+----------------+
 * ```
 *
 * `crc` is CRC-32 (zlib polynomial) over `type` and `payload`. A reader distinguishes three
 * outcomes: a complete valid record, a clean end of data, and a bad record (torn or corrupt); the
 * caller decides whether a bad record at the tail is a torn write (truncate) or corruption
 * (valid records follow it).
 *
 * @module
 */
import { crc32 } from "node:zlib";

/** Bytes before the payload. */
export const RECORD_HEADER_SIZE = 9;

/** Largest payload a record may carry (64 MiB). */
export const MAX_RECORD_PAYLOAD = 64 * 1024 * 1024;

/** CRC-32 of `type` followed by `payload`. */
export function recordCrc(type: number, payload: Uint8Array): number {
  let seed = _typeCrc[type & 0xff]!;
  if (seed < 0) seed = _typeCrc[type & 0xff] = crc32(Uint8Array.of(type)) >>> 0;
  return crc32(payload, seed) >>> 0;
}

/** CRC-32 of each one-byte type, computed on first use (-1: not yet). */
const _typeCrc: number[] = new Array(256).fill(-1);

/**
 * Encodes one record into `out` at `offset`; returns the offset after it.
 *
 * @example
 * ```ts
 * const payload = new TextEncoder().encode("hi");
 * const buf = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
 * encodeRecordInto(buf, 0, { type: 1, payload });
 * ```
 */
export function encodeRecordInto(
  out: Uint8Array,
  offset: number,
  record: { type: number; payload: Uint8Array },
): number {
  const { type, payload } = record;
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(offset, recordCrc(type, payload), true);
  view.setUint32(offset + 4, payload.length, true);
  out[offset + 8] = type;
  out.set(payload, offset + RECORD_HEADER_SIZE);
  return offset + RECORD_HEADER_SIZE + payload.length;
}

/** Encodes one record into a new buffer. */
export function encodeRecord(type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
  encodeRecordInto(out, 0, { type, payload });
  return out;
}

/** Result of reading one record at an offset. */
export type RecordRead =
  | { kind: "record"; type: number; payload: Uint8Array; next: number }
  | { kind: "end" }
  | { kind: "bad"; reason: "truncated" | "checksum" | "length" };

/**
 * Reads the record at `offset` of `buf`. The payload is a view into `buf` (no copy).
 *
 * @example
 * ```ts
 * const r = readRecord(encodeRecord(7, new Uint8Array([1, 2])), 0);
 * if (r.kind === "record") console.log(r.type, r.payload);
 * ```
 */
export function readRecord(buf: Uint8Array, offset: number): RecordRead {
  if (offset === buf.length) return { kind: "end" };
  if (buf.length - offset < RECORD_HEADER_SIZE) return { kind: "bad", reason: "truncated" };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const crc = view.getUint32(offset, true);
  const length = view.getUint32(offset + 4, true);
  if (length > MAX_RECORD_PAYLOAD) return { kind: "bad", reason: "length" };
  const start = offset + RECORD_HEADER_SIZE;
  if (start + length > buf.length) return { kind: "bad", reason: "truncated" };
  const type = buf[offset + 8]!;
  const payload = buf.subarray(start, start + length);
  if (recordCrc(type, payload) !== crc) return { kind: "bad", reason: "checksum" };
  return { kind: "record", type, payload, next: start + length };
}
