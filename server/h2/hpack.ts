/**
 * HPACK header compression for HTTP/2 (RFC 7541): a complete decoder and a minimal encoder.
 *
 * Strings are latin1 on both sides: one byte of the header block is one char code of the string
 * (0..255), so binary `-bin` metadata and any byte survive a round trip; UTF-8 is never decoded here.
 *
 * Decoder (`HpackDecoder`): static table, dynamic table (a ring buffer, entry size = name length +
 * value length + 32), dynamic table size updates (only at the start of a block, at most the
 * advertised `maxTableSize`), all four representations, integers checked against 2^31 and the end of
 * the block, Huffman strings through the table-driven decoder of `huffman.ts`. Every malformed input
 * raises `HpackError` (the connection must answer GOAWAY COMPRESSION_ERROR); a header list larger
 * than `maxHeaderListSize` raises `HeaderListTooLargeError` (a subclass of `HpackError`) *after* the
 * whole block was decoded, so the dynamic table stays in sync and the caller may choose to reset
 * only that stream.
 *
 * Encoder (`encodeHeaders`): each field as an indexed static entry when name and value match the
 * static table exactly, otherwise a literal without indexing whose name is a static-table index when
 * the name is in the static table; no Huffman, no dynamic table (so no encoder state at all and the
 * peer's table size settings never matter).
 *
 * @module
 */

import { huffmanDecode } from "./huffman.ts";

/** Thrown on a malformed header block; the connection must answer GOAWAY COMPRESSION_ERROR. */
export class HpackError extends Error {
  /** @param message what was wrong with the block */
  constructor(message: string) {
    super(message);
    this.name = "HpackError";
  }
}

/**
 * The decoded header list is larger than `maxHeaderListSize` (bytes as RFC 7540 section 6.5.2 counts
 * them: name + value + 32 per field). Thrown after the whole block was decoded, so the decoder's
 * dynamic table is still consistent with the peer's: the connection may survive and reset only the
 * stream (or answer GOAWAY like any `HpackError`).
 */
export class HeaderListTooLargeError extends HpackError {
  /** @param size the size of the header list as decoded; @param limit the configured limit */
  constructor(readonly size: number, readonly limit: number) {
    super(`header list of ${size} bytes exceeds the limit of ${limit}`);
    this.name = "HeaderListTooLargeError";
  }
}

/** RFC 7541 Appendix A: the static table, index 1..61 (index 0 unused). */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  ["", ""],
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];
const STATIC_COUNT = 61;
const STATIC_NAMES: string[] = STATIC_TABLE.map((e) => e[0]);
const STATIC_VALUES: string[] = STATIC_TABLE.map((e) => e[1]);

/** Per-entry overhead of the dynamic table and of the header list size (RFC 7541 4.1, 7540 6.5.2). */
const ENTRY_OVERHEAD = 32;
/** Integers must fit in 31 bits (the largest value any HTTP/2 length or size can take). */
const MAX_INT = 0x7fffffff;

/** Options of `HpackDecoder`. */
export interface HpackDecoderOptions {
  /** SETTINGS_HEADER_TABLE_SIZE this endpoint advertised: the dynamic table's upper bound. Default 4096. */
  maxTableSize?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE: limit on the decoded list (name + value + 32 per field). Default 64 KiB. */
  maxHeaderListSize?: number;
}

const EMPTY = new Uint8Array(0);

/** Strings up to this length are built with one `String.fromCharCode.apply`; longer ones in chunks. */
const APPLY_CHUNK = 4096;

/** One latin1 string from `bytes[start, end)`: one char code per byte. */
function latin1(bytes: Uint8Array, start: number, end: number): string {
  const len = end - start;
  if (len <= 0) return "";
  if (len === 1) return String.fromCharCode(bytes[start]!);
  if (len <= APPLY_CHUNK) {
    return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
  }
  const parts: string[] = [];
  for (let i = start; i < end; i += APPLY_CHUNK) {
    const stop = Math.min(end, i + APPLY_CHUNK);
    parts.push(String.fromCharCode.apply(null, bytes.subarray(i, stop) as unknown as number[]));
  }
  return parts.join("");
}

/**
 * Decodes HPACK header blocks of one HTTP/2 connection direction. Keep one per connection: the
 * dynamic table carries over from block to block, in order.
 *
 * @example
 * ```ts
 * const decoder = new HpackDecoder();
 * // RFC 7541 C.2.4: 0x82 is the static entry ":method: GET".
 * console.log(decoder.decode(new Uint8Array([0x82]))); // [[":method", "GET"]]
 * ```
 */
export class HpackDecoder {
  readonly #maxTableSize: number;
  readonly #maxHeaderListSize: number;
  /** The table size limit in force (last size update, initially `maxTableSize`). */
  #limit: number;
  /**
   * Ring buffer of entries: the newest is at `#head`, older ones follow (mod capacity). Grown by
   * doubling (never shrunk), so steady-state inserts and evictions allocate nothing.
   */
  #names: string[];
  #values: string[];
  #head = 0;
  #count = 0;
  #size = 0;
  /** Scratch buffer for Huffman output, grown on demand (bounded by the block's length × 8/5). */
  #scratch = new Uint8Array(256);
  /** Reused output of `decodeFlat` (copied out at the end of each block). */
  readonly #flat: string[] = [];
  /** The block being decoded and the read position in it (only during `decode`). */
  #block: Uint8Array = EMPTY;
  /** Where the block being decoded ends in `#block`. */
  #blockEnd = 0;
  #pos = 0;
  /** The last string read by `#readStringBytes`: bounds, and whether they point into `#scratch`. */
  #strStart = 0;
  #strEnd = 0;
  #strHuffman = false;

  /** @param options table size and header list limits; see `HpackDecoderOptions`. */
  constructor(options: HpackDecoderOptions = {}) {
    const maxTableSize = options.maxTableSize ?? 4096;
    const maxHeaderListSize = options.maxHeaderListSize ?? 64 * 1024;
    if (!Number.isSafeInteger(maxTableSize) || maxTableSize < 0 || maxTableSize > MAX_INT) {
      throw new RangeError(`maxTableSize must be an integer in [0, 2^31): ${maxTableSize}`);
    }
    if (!Number.isSafeInteger(maxHeaderListSize) || maxHeaderListSize < 0) {
      throw new RangeError(
        `maxHeaderListSize must be a non-negative integer: ${maxHeaderListSize}`,
      );
    }
    this.#maxTableSize = maxTableSize;
    this.#maxHeaderListSize = maxHeaderListSize;
    this.#limit = maxTableSize;
    // The ring starts small and doubles when full (an entry takes at least 32 bytes, so it never
    // needs more than maxTableSize / 32 slots): a large maxTableSize costs nothing up front.
    const capacity = Math.max(1, Math.min(16, Math.floor(maxTableSize / ENTRY_OVERHEAD)));
    this.#names = new Array<string>(capacity).fill("");
    this.#values = new Array<string>(capacity).fill("");
  }

  /** Current size of the dynamic table in bytes (entries' name + value + 32). */
  get dynamicTableSize(): number {
    return this.#size;
  }

  /** Current dynamic table size limit (the last size update, initially `maxTableSize`). */
  get dynamicTableLimit(): number {
    return this.#limit;
  }

  /** The dynamic table's entries, newest first (index 62 first); for tests and diagnostics. */
  dynamicTableEntries(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    const cap = this.#names.length;
    for (let i = 0; i < this.#count; i++) {
      const slot = (this.#head + i) % cap;
      out.push([this.#names[slot]!, this.#values[slot]!]);
    }
    return out;
  }

  /**
   * Decodes one complete header block (HEADERS + CONTINUATION payloads concatenated, padding and
   * priority removed). Throws `HpackError` on a malformed block (after which the decoder's state is
   * unspecified and the connection must be closed), or `HeaderListTooLargeError` when the list is
   * over `maxHeaderListSize` (the state is then still valid).
   */
  decode(block: Uint8Array): Array<[name: string, value: string]> {
    const flat = this.decodeFlat(block);
    const out: Array<[string, string]> = [];
    for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
    return out;
  }

  /**
   * {@linkcode decode} into one flat array `[name0, value0, name1, value1, ...]` (a single
   * allocation per block instead of one pair per field: what the server's hot path uses).
   */
  decodeFlat(block: Uint8Array, start = 0, end: number = block.length): string[] {
    const out = this.#flat;
    let n = 0;
    this.#block = block;
    this.#blockEnd = end;
    this.#pos = start;
    let listSize = 0;
    let tooLarge = false;
    let fieldSeen = false;
    try {
      while (this.#pos < end) {
        const b = block[this.#pos]!;
        let name: string;
        let value: string;
        if (b & 0x80) {
          // Indexed header field (6.1).
          const index = b < 0xff ? (this.#pos++, b & 0x7f) : this.#readInt(7);
          fieldSeen = true;
          if (index <= STATIC_COUNT) {
            if (index === 0) throw new HpackError("indexed header field with index 0");
            name = STATIC_NAMES[index]!;
            value = STATIC_VALUES[index]!;
          } else {
            const rel = index - STATIC_COUNT - 1;
            if (rel >= this.#count) throw new HpackError(`index ${index} is past the table`);
            const slot = (this.#head + rel) % this.#names.length;
            name = this.#names[slot]!;
            value = this.#values[slot]!;
          }
        } else if ((b & 0xe0) === 0x20) {
          // Dynamic table size update (6.3): only before the first field of the block.
          if (fieldSeen) throw new HpackError("dynamic table size update after a header field");
          const size = this.#readInt(5);
          if (size > this.#maxTableSize) {
            throw new HpackError(
              `table size update to ${size} above the limit ${this.#maxTableSize}`,
            );
          }
          this.#limit = size;
          this.#evictTo(size);
          continue;
        } else {
          // Literal: with incremental indexing (01, 6-bit index), else without / never indexed
          // (0000 / 0001, 4-bit index).
          const indexing = (b & 0xc0) === 0x40;
          const index = this.#readInt(indexing ? 6 : 4);
          fieldSeen = true;
          if (tooLarge && !indexing) {
            // Over the limit already: keep parsing (to find errors, stay in sync), build nothing.
            const nameLength = index === 0 ? this.#skipString() : this.#nameAt(index).length;
            listSize += nameLength + this.#skipString() + ENTRY_OVERHEAD;
            continue;
          }
          name = index === 0 ? this.#readString() : this.#nameAt(index);
          value = this.#readString();
          if (indexing) this.#insert(name, value);
        }
        listSize += name.length + value.length + ENTRY_OVERHEAD;
        if (listSize > this.#maxHeaderListSize) tooLarge = true;
        if (!tooLarge) {
          out[n++] = name;
          out[n++] = value;
        }
      }
    } finally {
      this.#block = EMPTY;
    }
    if (tooLarge) throw new HeaderListTooLargeError(listSize, this.#maxHeaderListSize);
    const list = out.slice(0, n);
    out.fill("", 0, n);
    return list;
  }

  /** Reads an integer with an N-bit prefix at `#pos` (5.1), at most 2^31 - 1. */
  #readInt(prefixBits: number): number {
    const block = this.#block;
    const mask = (1 << prefixBits) - 1;
    let value = block[this.#pos++]! & mask;
    if (value < mask) return value;
    let shift = 0;
    for (;;) {
      if (this.#pos >= this.#blockEnd) throw new HpackError("truncated integer");
      const b = block[this.#pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (value > MAX_INT) throw new HpackError("integer does not fit in 31 bits");
      if ((b & 0x80) === 0) return value;
      shift += 7;
      if (shift > 28) throw new HpackError("integer encoding too long");
    }
  }

  /**
   * Reads a string literal's header (5.2) and, when Huffman-coded, decodes it into `#scratch`.
   * Leaves `#strStart`/`#strEnd` on the raw bytes in `#block`, or on `#scratch` (`#strHuffman`).
   */
  #readStringBytes(): void {
    const block = this.#block;
    if (this.#pos >= this.#blockEnd) throw new HpackError("truncated string length");
    const huffman = (block[this.#pos]! & 0x80) !== 0;
    const len = this.#readInt(7);
    const start = this.#pos;
    if (len > this.#blockEnd - start) {
      throw new HpackError("string literal runs past the end of the block");
    }
    this.#pos = start + len;
    this.#strHuffman = huffman;
    if (!huffman) {
      this.#strStart = start;
      this.#strEnd = start + len;
      return;
    }
    const need = Math.floor((len * 8) / 5);
    if (this.#scratch.length < need) {
      this.#scratch = new Uint8Array(Math.max(need, this.#scratch.length * 2));
    }
    const n = huffmanDecode(block, start, start + len, this.#scratch);
    if (n < 0) throw new HpackError("invalid Huffman-coded string (EOS or bad padding)");
    this.#strStart = 0;
    this.#strEnd = n;
  }

  #readString(): string {
    this.#readStringBytes();
    return latin1(this.#strHuffman ? this.#scratch : this.#block, this.#strStart, this.#strEnd);
  }

  /** Validates and skips a string literal without building it; returns its decoded length. */
  #skipString(): number {
    this.#readStringBytes();
    return this.#strEnd - this.#strStart;
  }

  #nameAt(index: number): string {
    if (index <= STATIC_COUNT) return STATIC_NAMES[index]!;
    const rel = index - STATIC_COUNT - 1;
    if (rel >= this.#count) throw new HpackError(`name index ${index} is past the table`);
    return this.#names[(this.#head + rel) % this.#names.length]!;
  }

  /** Adds an entry (4.4): evicts until it fits; an entry larger than the limit empties the table. */
  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.#limit) {
      this.#evictTo(0);
      return;
    }
    this.#evictTo(this.#limit - size);
    if (this.#count === this.#names.length) this.#grow();
    const cap = this.#names.length;
    this.#head = (this.#head + cap - 1) % cap;
    this.#names[this.#head] = name;
    this.#values[this.#head] = value;
    this.#count++;
    this.#size += size;
  }

  /** Doubles the ring's capacity, entries laid out again from slot 0 (newest first). */
  #grow(): void {
    const cap = this.#names.length;
    const names = new Array<string>(cap * 2).fill("");
    const values = new Array<string>(cap * 2).fill("");
    for (let i = 0; i < this.#count; i++) {
      names[i] = this.#names[(this.#head + i) % cap]!;
      values[i] = this.#values[(this.#head + i) % cap]!;
    }
    this.#names = names;
    this.#values = values;
    this.#head = 0;
  }

  /** Evicts the oldest entries until the table's size is at most `target`. */
  #evictTo(target: number): void {
    const cap = this.#names.length;
    while (this.#size > target && this.#count > 0) {
      const slot = (this.#head + this.#count - 1) % cap;
      this.#size -= this.#names[slot]!.length + this.#values[slot]!.length + ENTRY_OVERHEAD;
      this.#names[slot] = "";
      this.#values[slot] = "";
      this.#count--;
    }
  }
}

/** Static-table index of each name (its first entry), and of each exact (name, value) pair. */
const STATIC_NAME_INDEX = new Map<string, number>();
const STATIC_PAIR_INDEX = new Map<string, Map<string, number>>();
for (let i = STATIC_COUNT; i >= 1; i--) {
  const name = STATIC_NAMES[i]!;
  STATIC_NAME_INDEX.set(name, i);
  if (STATIC_VALUES[i] === "") continue;
  let byValue = STATIC_PAIR_INDEX.get(name);
  if (byValue === undefined) STATIC_PAIR_INDEX.set(name, byValue = new Map());
  byValue.set(STATIC_VALUES[i]!, i);
}

/** Writes an HPACK integer with an N-bit prefix, the high bits of the first byte set to `flags`. */
function writeInt(
  out: Uint8Array,
  pos: number,
  value: number,
  prefixBits: number,
  flags: number,
): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out[pos++] = flags | value;
    return pos;
  }
  out[pos++] = flags | max;
  let rest = value - max;
  while (rest >= 128) {
    out[pos++] = (rest % 128) | 0x80;
    rest = Math.floor(rest / 128);
  }
  out[pos++] = rest;
  return pos;
}

/** Writes `s` as latin1 string literal bytes; a char code above 255 is a `RangeError`. */
function writeLatin1(out: Uint8Array, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) throw new RangeError(`header "${s}" has a character above U+00FF at ${i}`);
    out[pos++] = c;
  }
  return pos;
}

/** Writes a literal header name, refusing uppercase ASCII and char codes above 255. */
function writeName(out: Uint8Array, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255 || (c >= 0x41 && c <= 0x5a)) {
      throw new RangeError(`header name "${s}" must be lowercase latin1`);
    }
    out[pos++] = c;
  }
  return pos;
}

/**
 * Encodes a header list as one HPACK block with no encoder state: an exact static-table match is
 * sent as an indexed field, anything else as a literal without indexing (name as a static-table
 * index when the name is in the static table), strings as latin1 without Huffman. Names must be
 * lowercase; every char code must be ≤ 255 (a `RangeError` otherwise).
 *
 * @example
 * ```ts
 * const block = encodeHeaders([[":status", "200"], ["content-type", "application/grpc"]]);
 * console.log(new HpackDecoder().decode(block)); // [[":status","200"],["content-type","application/grpc"]]
 * ```
 */
export function encodeHeaders(headers: ReadonlyArray<readonly [string, string]>): Uint8Array {
  // Pass 1: the representation of each field and the exact block length.
  if (_kinds.length < headers.length) _kinds = new Int32Array(headers.length * 2);
  const kinds = _kinds; // > 0: static pair index; < 0: -(static name index); 0: literal name
  let total = 0;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    const name = h[0];
    const value = h[1];
    const pair = STATIC_PAIR_INDEX.get(name)?.get(value);
    if (pair !== undefined) {
      kinds[i] = pair;
      total += 1; // every static index is < 127
      continue;
    }
    const nameIndex = STATIC_NAME_INDEX.get(name);
    if (nameIndex !== undefined) {
      kinds[i] = -nameIndex;
      total += nameIndex < 15 ? 1 : 2;
    } else {
      kinds[i] = 0;
      total += 1 + intLength(name.length) + name.length;
    }
    total += intLength(value.length) + value.length;
  }
  // Pass 2: write.
  const out = new Uint8Array(total);
  let pos = 0;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    const kind = kinds[i]!;
    if (kind > 0) {
      out[pos++] = 0x80 | kind;
      continue;
    }
    if (kind < 0) {
      pos = writeInt(out, pos, -kind, 4, 0x00);
    } else {
      out[pos++] = 0x00;
      pos = writeInt(out, pos, h[0].length, 7, 0x00);
      pos = writeName(out, pos, h[0]);
    }
    pos = writeInt(out, pos, h[1].length, 7, 0x00);
    pos = writeLatin1(out, pos, h[1]);
  }
  return out;
}

/** Scratch for `encodeHeaders`' first pass (reused across calls; never escapes). */
let _kinds = new Int32Array(16);

/** Bytes an HPACK string length takes (7-bit prefix). */
function intLength(value: number): number {
  if (value < 127) return 1;
  let n = 2;
  for (let rest = value - 127; rest >= 128; rest = Math.floor(rest / 128)) n++;
  return n;
}
