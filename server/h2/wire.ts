/**
 * HTTP/2 framing constants (RFC 9113 §6, §7) and the per-connection output buffer of the h2 gRPC
 * server, plus the small gRPC wire helpers (`grpc-timeout`, `grpc-message` percent-encoding).
 *
 * Frame layout (RFC 9113 §4.1): 24-bit payload length, 8-bit type, 8-bit flags, 1 reserved bit and
 * a 31-bit stream id, all big-endian, then the payload. A gRPC message inside DATA frames is
 * 1 byte "compressed" flag + 4-byte big-endian length + the protobuf bytes (gRPC PROTOCOL-HTTP2).
 *
 * @example
 * ```ts
 * import { FRAME_PING, FrameWriter } from "./wire.ts";
 * const w = new FrameWriter();
 * w.frame(FRAME_PING, 0, 0, new Uint8Array(8));
 * console.log(w.length); // 17
 * ```
 *
 * @module
 */

/** The 24 octets a client sends first (RFC 9113 §3.4). */
export const PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Frame types. */
export const FRAME_DATA = 0x0;
/** HEADERS frame. */
export const FRAME_HEADERS = 0x1;
/** PRIORITY frame. */
export const FRAME_PRIORITY = 0x2;
/** RST_STREAM frame. */
export const FRAME_RST_STREAM = 0x3;
/** SETTINGS frame. */
export const FRAME_SETTINGS = 0x4;
/** PUSH_PROMISE frame (never valid from a client). */
export const FRAME_PUSH_PROMISE = 0x5;
/** PING frame. */
export const FRAME_PING = 0x6;
/** GOAWAY frame. */
export const FRAME_GOAWAY = 0x7;
/** WINDOW_UPDATE frame. */
export const FRAME_WINDOW_UPDATE = 0x8;
/** CONTINUATION frame. */
export const FRAME_CONTINUATION = 0x9;

/** END_STREAM (DATA, HEADERS). */
export const FLAG_END_STREAM = 0x1;
/** ACK (SETTINGS, PING). */
export const FLAG_ACK = 0x1;
/** END_HEADERS (HEADERS, CONTINUATION). */
export const FLAG_END_HEADERS = 0x4;
/** PADDED (DATA, HEADERS). */
export const FLAG_PADDED = 0x8;
/** PRIORITY (HEADERS). */
export const FLAG_PRIORITY = 0x20;

/** SETTINGS identifiers. */
export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
/** SETTINGS_ENABLE_PUSH. */
export const SETTINGS_ENABLE_PUSH = 0x2;
/** SETTINGS_MAX_CONCURRENT_STREAMS. */
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
/** SETTINGS_INITIAL_WINDOW_SIZE. */
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
/** SETTINGS_MAX_FRAME_SIZE. */
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
/** SETTINGS_MAX_HEADER_LIST_SIZE. */
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

/** HTTP/2 error codes (RFC 9113 §7). */
export const H2_NO_ERROR = 0x0;
/** PROTOCOL_ERROR. */
export const H2_PROTOCOL_ERROR = 0x1;
/** INTERNAL_ERROR. */
export const H2_INTERNAL_ERROR = 0x2;
/** FLOW_CONTROL_ERROR. */
export const H2_FLOW_CONTROL_ERROR = 0x3;
/** STREAM_CLOSED. */
export const H2_STREAM_CLOSED = 0x5;
/** FRAME_SIZE_ERROR. */
export const H2_FRAME_SIZE_ERROR = 0x6;
/** REFUSED_STREAM. */
export const H2_REFUSED_STREAM = 0x7;
/** CANCEL. */
export const H2_CANCEL = 0x8;
/** COMPRESSION_ERROR. */
export const H2_COMPRESSION_ERROR = 0x9;
/** ENHANCE_YOUR_CALM. */
export const H2_ENHANCE_YOUR_CALM = 0xb;

/** The largest flow-control window (2^31 - 1). */
export const MAX_WINDOW = 0x7fff_ffff;
/** Default SETTINGS_MAX_FRAME_SIZE and the frame size limit this server enforces on input. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;

const INITIAL_CAPACITY = 64 * 1024;
/** A buffer that grew past this is dropped once written, so one big response doesn't pin it. */
const SHRINK_ABOVE = 1024 * 1024;

/**
 * A growable byte buffer that frames are appended to; the connection writes its contents with one
 * `conn.write` and then {@linkcode FrameWriter.reset}s it. Frames are written in place (no
 * per-frame allocation).
 */
export class FrameWriter {
  #buf: Uint8Array = new Uint8Array(INITIAL_CAPACITY);
  #len = 0;

  /** Bytes appended since the last reset. */
  get length(): number {
    return this.#len;
  }

  /** The appended bytes (a view, valid until the next append or reset). */
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }

  /** Empties the buffer (dropping it if it grew large). */
  reset(): void {
    this.#len = 0;
    if (this.#buf.length > SHRINK_ABOVE) this.#buf = new Uint8Array(INITIAL_CAPACITY);
  }

  #reserve(n: number): void {
    const need = this.#len + n;
    if (need <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < need) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.#buf.subarray(0, this.#len));
    this.#buf = b;
  }

  /** Appends a 9-byte frame header for a payload of `length` bytes (the caller appends it). */
  header(length: number, type: number, flags: number, stream: number): void {
    this.#reserve(9 + length);
    const b = this.#buf;
    let o = this.#len;
    b[o++] = (length >>> 16) & 0xff;
    b[o++] = (length >>> 8) & 0xff;
    b[o++] = length & 0xff;
    b[o++] = type;
    b[o++] = flags;
    b[o++] = (stream >>> 24) & 0x7f;
    b[o++] = (stream >>> 16) & 0xff;
    b[o++] = (stream >>> 8) & 0xff;
    b[o++] = stream & 0xff;
    this.#len = o;
  }

  /** Appends raw bytes. */
  put(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.length;
  }

  /** Appends a 32-bit big-endian integer. */
  u32(n: number): void {
    this.#reserve(4);
    const b = this.#buf;
    const o = this.#len;
    b[o] = (n >>> 24) & 0xff;
    b[o + 1] = (n >>> 16) & 0xff;
    b[o + 2] = (n >>> 8) & 0xff;
    b[o + 3] = n & 0xff;
    this.#len = o + 4;
  }

  /** Appends the 5-byte gRPC message prefix (uncompressed) for a message of `length` bytes. */
  grpcPrefix(length: number): void {
    this.#reserve(5);
    this.#buf[this.#len] = 0;
    this.#len++;
    this.u32(length);
  }

  /** Appends a whole frame. */
  frame(type: number, flags: number, stream: number, payload: Uint8Array): void {
    this.header(payload.length, type, flags, stream);
    this.put(payload);
  }

  /** Appends a WINDOW_UPDATE frame. */
  windowUpdate(stream: number, increment: number): void {
    this.header(4, FRAME_WINDOW_UPDATE, 0, stream);
    this.u32(increment);
  }

  /** Appends an RST_STREAM frame. */
  rstStream(stream: number, code: number): void {
    this.header(4, FRAME_RST_STREAM, 0, stream);
    this.u32(code);
  }

  /** Appends a GOAWAY frame with an optional debug text. */
  goaway(lastStream: number, code: number, debug = ""): void {
    const d = new TextEncoder().encode(debug);
    this.header(8 + d.length, FRAME_GOAWAY, 0, 0);
    this.u32(lastStream & MAX_WINDOW);
    this.u32(code);
    this.put(d);
  }

  /** Appends a SETTINGS frame with `[id, value]` pairs. */
  settings(pairs: ReadonlyArray<readonly [number, number]>): void {
    this.header(6 * pairs.length, FRAME_SETTINGS, 0, 0);
    for (const [id, v] of pairs) {
      this.#reserve(2);
      this.#buf[this.#len++] = (id >>> 8) & 0xff;
      this.#buf[this.#len++] = id & 0xff;
      this.u32(v);
    }
  }
}

/**
 * Parses a `grpc-timeout` header value (1–8 digits and a unit H, M, S, m, u, n) into
 * milliseconds; undefined when malformed.
 */
export function parseGrpcTimeout(v: string): number | undefined {
  const digits = v.length - 1;
  if (digits < 1 || digits > 8) return undefined;
  let n = 0;
  for (let i = 0; i < digits; i++) {
    const c = v.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return undefined;
    n = n * 10 + c;
  }
  switch (v[digits]) {
    case "H":
      return n * 3_600_000;
    case "M":
      return n * 60_000;
    case "S":
      return n * 1000;
    case "m":
      return n;
    case "u":
      return n / 1000;
    case "n":
      return n / 1_000_000;
    default:
      return undefined;
  }
}

const HEX = "0123456789ABCDEF";

/**
 * Percent-encodes a status message for `grpc-message` (gRPC PROTOCOL-HTTP2): UTF-8 bytes outside
 * printable ASCII 0x20–0x7E, and `%`, become `%XX`.
 */
export function encodeGrpcMessage(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = "";
  for (const b of new TextEncoder().encode(s)) {
    if (b < 0x20 || b > 0x7e || b === 0x25) out += "%" + HEX[b >> 4] + HEX[b & 15];
    else out += String.fromCharCode(b);
  }
  return out;
}
