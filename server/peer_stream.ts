/**
 * The dialing half of a peer stream without grpc-js: `raft.Raft/Stream` as the one HTTP/2 stream
 * (h2c with prior knowledge, RFC 9113 §3.3) of its own TCP connection.
 *
 * Why: through grpc-js and Deno's `node:http2`, every frame a node sends to a peer costs a
 * `writeBuffer` syscall plus tens of microseconds of stream machinery; on a leader at one client
 * that was about a third of its CPU (bench/PROFILE.md). Here every frame produced in one turn of
 * the event loop goes out in ONE `conn.write`, and `PeerFrame` is encoded by hand.
 * Frames are laid out in place in two reused buffers (h2/wire.ts `FrameWriter`: one being
 * written, one filling); `writeFrame` encodes a `PeerFrame` straight into DATA frames there, so
 * its payload is copied once and nothing is allocated per message.
 *
 * What it speaks (enough for any conforming HTTP/2 gRPC server, grpc-js's or server/h2's):
 * - Sends the preface, SETTINGS (no push, a 1 MiB stream window), a connection WINDOW_UPDATE,
 *   one HEADERS frame (POST `path`, `content-type: application/grpc`, `te: trailers`, the
 *   metadata), then DATA frames carrying length-prefixed gRPC messages (never compressed).
 * - Honours the server's flow control (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE on the
 *   stream and the connection) and SETTINGS_MAX_FRAME_SIZE; acknowledges SETTINGS and PING.
 * - Reads DATA on its stream as gRPC messages (handed to `onMessage`) and returns the credit
 *   with WINDOW_UPDATE. Response header blocks are not decoded (nothing in them is needed); a
 *   block or DATA frame that ends the stream, RST_STREAM, GOAWAY, EOF or an error closes it.
 *
 * `PeerFrame` wire format (protos/raft.proto, protobuf): field 1 `PeerHeader` (1: cluster_id
 * string, 2: from uint64, 3: to uint64), field 2 `payload` bytes. Zero fields are omitted.
 *
 * @module
 */
import { putVarint, varintLength } from "../storage/coding.ts";
import { encodeHeaders } from "./h2/hpack.ts";
import {
  FLAG_ACK as ACK,
  FLAG_END_HEADERS as END_HEADERS,
  FLAG_END_STREAM as END_STREAM,
  FLAG_PADDED as PADDED,
  FRAME_DATA as DATA,
  FRAME_GOAWAY as GOAWAY,
  FRAME_HEADERS as HEADERS,
  FRAME_PING as PING,
  FRAME_RST_STREAM as RST_STREAM,
  FRAME_SETTINGS as SETTINGS,
  FRAME_WINDOW_UPDATE as WINDOW_UPDATE,
  FrameWriter,
  PREFACE as _PREFACE,
} from "./h2/wire.ts";

const _enc = new TextEncoder();
const _dec = new TextDecoder();

const STREAM = 1;
/** The receive window we announce for the stream; the connection gets 16 MiB. */
const RECV_STREAM_WINDOW = 1 << 20;
const RECV_CONN_WINDOW = 1 << 24;
/** `write()` returns false while more than this many bytes wait to be written. */
const HIGH_WATER = 4 * 1024 * 1024;
/** The largest gRPC message accepted from the server (only hellos are expected). */
const MAX_RECV_MESSAGE = 16 * 1024 * 1024;

/** The decoded form of a `PeerFrame`. */
export interface PeerFrameLike {
  header: { cluster_id: string; from: number; to: number } | null;
  payload: Uint8Array;
}

/**
 * Encodes a `PeerFrame` (protobuf) behind the 5-byte gRPC message prefix.
 *
 * @example
 * ```ts
 * const m = encodePeerFrameMessage({ header: { cluster_id: "c", from: 1, to: 2 }, payload: new Uint8Array(0) });
 * console.log(m[0], m.length); // 0 14
 * ```
 */
export function encodePeerFrameMessage(f: PeerFrameLike): Uint8Array {
  const head = _encodeFrameHead(f.header);
  const len = _frameLength(head, f.payload);
  const out = new Uint8Array(5 + len);
  new DataView(out.buffer).setUint32(1, len);
  out.set(head, 5);
  let p = 5 + head.length;
  if (f.payload.length > 0) {
    out[p++] = 0x12;
    p = putVarint(out, p, f.payload.length);
    out.set(f.payload, p);
  }
  return out;
}

/** The `PeerFrame` bytes before the payload: field 1 (the `PeerHeader`), or nothing. */
function _encodeFrameHead(h: PeerFrameLike["header"]): Uint8Array {
  if (h === null) return new Uint8Array(0);
  const cid = _enc.encode(h.cluster_id);
  let hlen = 0;
  if (cid.length > 0) hlen += 1 + varintLength(cid.length) + cid.length;
  if (h.from > 0) hlen += 1 + varintLength(h.from);
  if (h.to > 0) hlen += 1 + varintLength(h.to);
  const out = new Uint8Array(1 + varintLength(hlen) + hlen);
  out[0] = 0x0a;
  let p = putVarint(out, 1, hlen);
  if (cid.length > 0) {
    out[p++] = 0x0a;
    p = putVarint(out, p, cid.length);
    out.set(cid, p);
    p += cid.length;
  }
  if (h.from > 0) {
    out[p++] = 0x10;
    p = putVarint(out, p, h.from);
  }
  if (h.to > 0) {
    out[p++] = 0x18;
    putVarint(out, p, h.to);
  }
  return out;
}

/** Length of the `PeerFrame` protobuf made of `head` and `payload`. */
function _frameLength(head: Uint8Array, payload: Uint8Array): number {
  const n = payload.length;
  return head.length + (n > 0 ? 1 + varintLength(n) + n : 0);
}

/** A truncated or malformed protobuf message. */
export class PeerFrameDecodeError extends Error {
  override name = "PeerFrameDecodeError";
}

function _readVarint(b: Uint8Array, pos: { p: number }, end: number): number {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos.p >= end) throw new PeerFrameDecodeError("truncated varint");
    const x = b[pos.p++]!;
    n += (x & 0x7f) * mul;
    if (x < 0x80) return n;
    mul *= 128;
  }
  throw new PeerFrameDecodeError("varint too long");
}

function _skip(b: Uint8Array, pos: { p: number }, end: number, wire: number): void {
  if (wire === 0) _readVarint(b, pos, end);
  else if (wire === 1) pos.p += 8;
  else if (wire === 2) pos.p += _readVarint(b, pos, end);
  else if (wire === 5) pos.p += 4;
  else throw new PeerFrameDecodeError(`unsupported wire type ${wire}`);
  if (pos.p > end) throw new PeerFrameDecodeError("truncated field");
}

/**
 * Decodes a `PeerFrame` (protobuf, without the gRPC prefix).
 *
 * @example
 * ```ts
 * const m = encodePeerFrameMessage({ header: { cluster_id: "c", from: 1, to: 2 }, payload: new Uint8Array(0) });
 * console.log(decodePeerFrame(m.subarray(5)).header); // { cluster_id: "c", from: 1, to: 2 }
 * ```
 */
export function decodePeerFrame(b: Uint8Array): PeerFrameLike {
  const f: PeerFrameLike = { header: null, payload: new Uint8Array(0) };
  const pos = { p: 0 };
  while (pos.p < b.length) {
    const tag = _readVarint(b, pos, b.length);
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 2) {
      const len = _readVarint(b, pos, b.length);
      const end = pos.p + len;
      if (end > b.length) throw new PeerFrameDecodeError("truncated header");
      const h = { cluster_id: "", from: 0, to: 0 };
      while (pos.p < end) {
        const t = _readVarint(b, pos, end);
        const hf = Math.floor(t / 8);
        const hw = t & 7;
        if (hf === 1 && hw === 2) {
          const n = _readVarint(b, pos, end);
          if (pos.p + n > end) throw new PeerFrameDecodeError("truncated cluster id");
          h.cluster_id = _dec.decode(b.subarray(pos.p, pos.p + n));
          pos.p += n;
        } else if (hf === 2 && hw === 0) h.from = _readVarint(b, pos, end);
        else if (hf === 3 && hw === 0) h.to = _readVarint(b, pos, end);
        else _skip(b, pos, end, hw);
      }
      f.header = h;
    } else if (field === 2 && wire === 2) {
      const len = _readVarint(b, pos, b.length);
      if (pos.p + len > b.length) throw new PeerFrameDecodeError("truncated payload");
      f.payload = b.subarray(pos.p, pos.p + len);
      pos.p += len;
    } else {
      _skip(b, pos, b.length, wire);
    }
  }
  return f;
}

/** Options of {@linkcode PeerStream.open}. */
export interface PeerStreamOptions {
  hostname: string;
  port: number;
  /** `:authority` (host:port). */
  authority: string;
  /** `:path`, e.g. `/raft.Raft/Stream`. */
  path: string;
  /** Extra request headers (gRPC metadata), lowercase names. */
  metadata: [string, string][];
  /** One gRPC message (protobuf bytes) from the server. */
  onMessage: (msg: Uint8Array) => void;
  /** The buffered bytes fell back under the high-water mark after `write` returned false. */
  onDrain: () => void;
  /** The stream is over (called once); `why` says what happened. */
  onClose: (why: string) => void;
}

/** One outbound `raft.Raft/Stream` over raw HTTP/2 (see the module doc). */
export class PeerStream {
  readonly #o: PeerStreamOptions;
  #conn: Deno.TcpConn | undefined;
  #closed = false;
  /**
   * Encoded HTTP/2 frames waiting for the next `conn.write`, appended in place; `#spare` is the
   * buffer of the write in flight (swapped when a write starts, reused when it ends).
   */
  #out = new FrameWriter();
  #spare = new FrameWriter();
  #inFlight = 0;
  #writing = false;
  /** The last `PeerFrame` header written by `writeFrame` and its encoding. */
  #lastHeader: PeerFrameLike["header"] = null;
  #lastHead: Uint8Array | undefined;
  /** Scratch for the bytes of a `writeFrame` message before its payload (copied at once). */
  #pre = new Uint8Array(64);
  #flushQueued = false;
  /** gRPC-framed message bytes not yet sent for lack of flow-control window. */
  #pending: Uint8Array[] = [];
  #pendingOff = 0;
  #pendingBytes = 0;
  #connWindow = 65535;
  #streamWindow = 65535;
  #peerInitialWindow = 65535;
  #maxFrame = 16384;
  #recvCredit = 0;
  #full = false;
  /** Bytes of the gRPC message being reassembled from DATA frames. */
  #msgBuf = new Uint8Array(0);

  private constructor(o: PeerStreamOptions) {
    this.#o = o;
  }

  /** Starts connecting; `write` may be called at once (frames wait for the connection). */
  static open(o: PeerStreamOptions): PeerStream {
    const s = new PeerStream(o);
    s.#start();
    return s;
  }

  async #start(): Promise<void> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: this.#o.hostname, port: this.#o.port });
    } catch (e) {
      this.#close(`connect failed: ${e instanceof Error ? e.message : e}`);
      return;
    }
    if (this.#closed) {
      conn.close();
      return;
    }
    try {
      conn.setNoDelay(true);
    } catch {
      // not fatal
    }
    this.#conn = conn;
    const settings = new Uint8Array(12);
    const sv = new DataView(settings.buffer);
    sv.setUint16(0, 0x2); // SETTINGS_ENABLE_PUSH
    sv.setUint32(2, 0);
    sv.setUint16(6, 0x4); // SETTINGS_INITIAL_WINDOW_SIZE
    sv.setUint32(8, RECV_STREAM_WINDOW);
    const block = encodeHeaders([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", this.#o.path],
      [":authority", this.#o.authority],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...this.#o.metadata,
    ]);
    // Nothing is in `#out` yet: frames are only made once the connection exists, and whatever
    // was written before it waits in `#pending`, to go after the stream's HEADERS.
    const o = this.#out;
    o.put(_PREFACE);
    o.frame(SETTINGS, 0, 0, settings);
    o.windowUpdate(0, RECV_CONN_WINDOW - 65535);
    o.frame(HEADERS, END_HEADERS, STREAM, block);
    this.#pump();
    this.#flush();
    this.#readLoop(conn);
  }

  /**
   * Queues one gRPC message (5-byte prefix + protobuf, e.g. from
   * {@linkcode encodePeerFrameMessage}); returns false once the buffered bytes exceed the
   * high-water mark (wait for `onDrain`).
   */
  write(message: Uint8Array): boolean {
    if (this.#closed) return false;
    this.#pending.push(message);
    this.#pendingBytes += message.length;
    this.#pump();
    return this.#queued();
  }

  /**
   * Queues one `PeerFrame` as a gRPC message, like `write(encodePeerFrameMessage(f))`; when the
   * flow-control windows allow it (the usual case) the frame is encoded straight into the output
   * buffer, so the payload is copied once and no message buffer is allocated. Either way the
   * payload is copied before this returns: the caller may reuse its buffer at once
   * (server/transport.ts encodes every payload into one scratch buffer).
   */
  writeFrame(f: PeerFrameLike): boolean {
    if (this.#closed) return false;
    let head = this.#lastHead;
    const h = f.header, last = this.#lastHeader;
    if (
      head === undefined || h === null || last === null || h.cluster_id !== last.cluster_id ||
      h.from !== last.from || h.to !== last.to
    ) {
      head = _encodeFrameHead(h);
      this.#lastHead = head;
      this.#lastHeader = h === null ? null : { ...h };
    }
    const payload = f.payload;
    const len = _frameLength(head, payload);
    const total = 5 + len;
    // The gRPC prefix, the header and the payload's tag and length: everything but the payload.
    if (this.#pre.length < 5 + head.length + 11) this.#pre = new Uint8Array(5 + head.length + 11);
    const pre = this.#pre;
    pre[0] = 0;
    pre[1] = (len >>> 24) & 0xff;
    pre[2] = (len >>> 16) & 0xff;
    pre[3] = (len >>> 8) & 0xff;
    pre[4] = len & 0xff;
    pre.set(head, 5);
    let np = 5 + head.length;
    if (payload.length > 0) {
      pre[np++] = 0x12;
      np = putVarint(pre, np, payload.length);
    }
    if (
      this.#conn === undefined || this.#pending.length > 0 ||
      total > Math.min(this.#connWindow, this.#streamWindow)
    ) {
      // Not sendable now: queue the message (encoded on its own) behind the others.
      const m = new Uint8Array(total);
      m.set(pre.subarray(0, np));
      m.set(payload, np);
      return this.write(m);
    }
    // The message as DATA frames of at most SETTINGS_MAX_FRAME_SIZE, copied into `#out`.
    const o = this.#out;
    for (let off = 0; off < total;) {
      const end = Math.min(total, off + this.#maxFrame);
      o.header(end - off, DATA, 0, STREAM);
      if (off < np) o.put(pre.subarray(off, Math.min(end, np)));
      if (end > np) o.put(payload.subarray(Math.max(off, np) - np, end - np));
      off = end;
    }
    this.#connWindow -= total;
    this.#streamWindow -= total;
    return this.#queued();
  }

  /** Schedules the flush; false (and a later `onDrain`) when above the high-water mark. */
  #queued(): boolean {
    this.#scheduleFlush();
    const ok = this.#pendingBytes + this.#out.length + this.#inFlight <= HIGH_WATER;
    if (!ok) this.#full = true;
    return ok;
  }

  /** Closes the connection (no further callbacks). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
  }

  #close(why: string): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
    this.#o.onClose(why);
  }

  /** Moves pending message bytes into DATA frames as far as the windows allow. */
  #pump(): void {
    if (this.#conn === undefined) return;
    while (this.#pending.length > 0) {
      const room = Math.min(this.#connWindow, this.#streamWindow, this.#maxFrame);
      if (room <= 0) return;
      // Up to `room` bytes from consecutive pending messages make one DATA frame.
      const n = Math.min(room, this.#pendingBytes);
      const o = this.#out;
      o.header(n, DATA, 0, STREAM);
      let left = n;
      while (left > 0) {
        const m = this.#pending[0]!;
        const take = Math.min(m.length - this.#pendingOff, left);
        o.put(
          take === m.length ? m : m.subarray(this.#pendingOff, this.#pendingOff + take),
        );
        left -= take;
        this.#pendingOff += take;
        if (this.#pendingOff === m.length) {
          this.#pending.shift();
          this.#pendingOff = 0;
        }
      }
      this.#pendingBytes -= n;
      this.#connWindow -= n;
      this.#streamWindow -= n;
    }
  }

  #scheduleFlush(): void {
    if (this.#flushQueued || this.#writing) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.#flush();
    });
  }

  async #flush(): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined || this.#writing || this.#out.length === 0 || this.#closed) return;
    this.#writing = true;
    try {
      while (this.#out.length > 0 && !this.#closed) {
        // Frames made while this write is in flight go to the other buffer.
        const w = this.#out;
        this.#out = this.#spare;
        this.#spare = w;
        const buf = w.bytes();
        this.#inFlight = buf.length;
        let done = 0;
        while (done < buf.length) done += await conn.write(buf.subarray(done));
        this.#inFlight = 0;
        w.reset();
        if (this.#full && this.#pendingBytes + this.#out.length <= HIGH_WATER / 2) {
          this.#full = false;
          this.#o.onDrain();
        }
      }
    } catch (e) {
      this.#close(`write failed: ${e instanceof Error ? e.message : e}`);
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(conn: Deno.TcpConn): Promise<void> {
    let buf = new Uint8Array(64 * 1024);
    let len = 0;
    try {
      for (;;) {
        if (len === buf.length) {
          const bigger = new Uint8Array(buf.length * 2);
          bigger.set(buf.subarray(0, len));
          buf = bigger;
        }
        const n = await conn.read(buf.subarray(len));
        if (n === null) {
          this.#close("connection closed by the peer");
          return;
        }
        len += n;
        let off = 0;
        while (len - off >= 9) {
          const flen = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
          if (flen > 16 * 1024 * 1024) throw new Error(`frame of ${flen} bytes`);
          if (len - off < 9 + flen) {
            if (9 + flen > buf.length) {
              const bigger = new Uint8Array(9 + flen);
              bigger.set(buf.subarray(off, len));
              buf = bigger;
              len -= off;
              off = 0;
            }
            break;
          }
          const type = buf[off + 3]!;
          const flags = buf[off + 4]!;
          const sid = new DataView(buf.buffer, buf.byteOffset + off + 5, 4).getUint32(0) &
            0x7fffffff;
          this.#onFrame(type, flags, sid, buf.subarray(off + 9, off + 9 + flen));
          if (this.#closed) return;
          off += 9 + flen;
        }
        if (off > 0) {
          buf.copyWithin(0, off, len);
          len -= off;
        }
        this.#flush();
      }
    } catch (e) {
      this.#close(`read failed: ${e instanceof Error ? e.message : e}`);
    }
  }

  #onFrame(type: number, flags: number, sid: number, p: Uint8Array): void {
    switch (type) {
      case DATA: {
        if (p.length > 0) {
          this.#recvCredit += p.length;
          if (this.#recvCredit >= 16 * 1024) {
            this.#out.windowUpdate(0, this.#recvCredit);
            if (sid === STREAM) this.#out.windowUpdate(STREAM, this.#recvCredit);
            this.#recvCredit = 0;
          }
        }
        if (sid !== STREAM) return;
        let data = p;
        if (flags & PADDED) {
          const pad = p[0] ?? 0;
          data = p.subarray(1, Math.max(1, p.length - pad));
        }
        this.#onData(data);
        if (flags & END_STREAM) this.#close("stream ended by the peer");
        return;
      }
      case HEADERS:
        if (sid === STREAM && (flags & END_STREAM)) this.#close("stream ended by the peer");
        return;
      case RST_STREAM:
        if (sid === STREAM) {
          const code = p.length >= 4 ? new DataView(p.buffer, p.byteOffset, 4).getUint32(0) : -1;
          this.#close(`stream reset by the peer (code ${code})`);
        }
        return;
      case SETTINGS: {
        if (flags & ACK) return;
        const v = new DataView(p.buffer, p.byteOffset, p.length);
        for (let i = 0; i + 6 <= p.length; i += 6) {
          const id = v.getUint16(i);
          const val = v.getUint32(i + 2);
          if (id === 0x4) {
            this.#streamWindow += val - this.#peerInitialWindow;
            this.#peerInitialWindow = val;
          } else if (id === 0x5) {
            this.#maxFrame = Math.max(16384, Math.min(val, 16777215));
          }
        }
        this.#out.header(0, SETTINGS, ACK, 0);
        this.#pump();
        return;
      }
      case PING:
        if (!(flags & ACK)) {
          this.#out.frame(PING, ACK, 0, p.subarray(0, 8));
        }
        return;
      case GOAWAY:
        this.#close("the peer sent GOAWAY");
        return;
      case WINDOW_UPDATE: {
        if (p.length < 4) return;
        const inc = new DataView(p.buffer, p.byteOffset, 4).getUint32(0) & 0x7fffffff;
        if (sid === 0) this.#connWindow += inc;
        else if (sid === STREAM) this.#streamWindow += inc;
        this.#pump();
        return;
      }
    }
  }

  /** Reassembles length-prefixed gRPC messages from the stream's DATA. */
  #onData(data: Uint8Array): void {
    let b = data;
    if (this.#msgBuf.length > 0) {
      const joined = new Uint8Array(this.#msgBuf.length + data.length);
      joined.set(this.#msgBuf);
      joined.set(data, this.#msgBuf.length);
      b = joined;
    }
    let off = 0;
    while (b.length - off >= 5) {
      if (b[off] !== 0) {
        this.#close("the peer sent a compressed message");
        return;
      }
      const n = new DataView(b.buffer, b.byteOffset + off + 1, 4).getUint32(0);
      if (n > MAX_RECV_MESSAGE) {
        this.#close(`the peer sent a ${n}-byte message`);
        return;
      }
      if (b.length - off - 5 < n) break;
      this.#o.onMessage(b.subarray(off + 5, off + 5 + n));
      if (this.#closed) return;
      off += 5 + n;
    }
    this.#msgBuf = off === b.length ? new Uint8Array(0) : b.slice(off);
  }
}
