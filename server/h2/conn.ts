/**
 * One client connection of the h2 gRPC server (server.ts): the read loop and frame parser, the
 * HTTP/2 connection state (settings, flow-control windows both ways, HPACK decoder, stream
 * table), and the coalescing output (one buffer, at most one `conn.write` in flight).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { ServerCall } from "./call.ts";
import { encodeHeaders, HeaderListTooLargeError, HpackDecoder } from "./hpack.ts";
import type { H2Server } from "./server.ts";
import { H2Stream } from "./stream.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_PRIORITY,
  FRAME_PUSH_PROMISE,
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FRAME_WINDOW_UPDATE,
  FrameWriter,
  H2_COMPRESSION_ERROR,
  H2_ENHANCE_YOUR_CALM,
  H2_FLOW_CONTROL_ERROR,
  H2_FRAME_SIZE_ERROR,
  H2_INTERNAL_ERROR,
  H2_NO_ERROR,
  H2_PROTOCOL_ERROR,
  H2_REFUSED_STREAM,
  H2_STREAM_CLOSED,
  MAX_WINDOW,
  parseGrpcTimeout,
  PREFACE,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
} from "./wire.ts";

const READ_SIZE = 64 * 1024;
/** How a plain HTTP/1.1 request starts (see `#http1`). */
const _GET = new TextEncoder().encode("GET ");
/** Longest HTTP/1.1 request head read. */
const HTTP1_MAX_HEAD = 8 * 1024;
const HTTP1_REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};
/** Unwritten output above which a connection stops reading until its write in flight ends. */
const MAX_PENDING_OUTPUT = 1024 * 1024;
/**
 * A connection whose unwritten output exceeds this is dropped: its client sends but does not read
 * (DATA is bounded by the client's windows; HEADERS, PING and SETTINGS acknowledgements are not).
 */
const MAX_UNWRITTEN = 64 * 1024 * 1024;
/** Largest compressed header block (HEADERS + CONTINUATION) accepted before decoding it. */
const MAX_HEADER_BLOCK = 256 * 1024;

/** One client connection. */
export class H2Conn {
  readonly server: H2Server;
  readonly #conn: Deno.TcpConn;
  readonly peer: string;
  readonly #streams = new Map<number, H2Stream>();
  readonly #hpack: HpackDecoder;
  #out = new FrameWriter();
  #spare = new FrameWriter();
  #writing = false;
  #inFlightBytes = 0;
  #flushScheduled = false;
  readonly #flushFn = () => this.#flush();
  /** No more input is processed (connection error, EOF, destroy). */
  #dead = false;
  /** Close the socket once the output is written. */
  #closeAfterWrite = false;
  #closed = false;
  #goawaySent = false;
  #lastStreamId = 0;
  #prefaceSeen = false;
  #prefaceTimer: ReturnType<typeof setTimeout> | undefined;
  #settingsSeen = false;
  // Peer settings.
  #peerInitialWindow = 65_535;
  #peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  #sendWindow = 65_535;
  readonly #blocked = new Set<H2Stream>();
  readonly #wantDrain = new Set<H2Stream>();
  // Receive accounting.
  #recvUnacked = 0;
  // Header block assembly (HEADERS + CONTINUATION).
  #contStream = 0;
  #contEndStream = false;
  #contBuf = new Uint8Array(0);
  #contBytes = 0;
  // Partial frame carried over between reads.
  #carry = new Uint8Array(READ_SIZE);
  #carryLen = 0;

  constructor(server: H2Server, conn: Deno.TcpConn) {
    this.server = server;
    this.#conn = conn;
    const a = conn.remoteAddr;
    this.peer = a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
    this.#hpack = new HpackDecoder({
      maxTableSize: 4096,
      maxHeaderListSize: server.opts.maxHeaderListSize,
    });
    try {
      conn.setNoDelay(true);
    } catch {
      // not a TCP socket option we can set: fine
    }
    const o = server.opts;
    this.#out.settings([
      [SETTINGS_MAX_CONCURRENT_STREAMS, o.maxConcurrentStreams],
      [SETTINGS_INITIAL_WINDOW_SIZE, o.streamWindow],
      [SETTINGS_MAX_HEADER_LIST_SIZE, o.maxHeaderListSize],
    ]);
    if (o.connectionWindow > 65_535) this.#out.windowUpdate(0, o.connectionWindow - 65_535);
    // Sent once the client's preface arrived (a client sends its preface without waiting for
    // ours), so that a plain HTTP/1.1 request on this port gets nothing but its answer.
    this.#prefaceTimer = setTimeout(() => {
      this.#prefaceTimer = undefined;
      if (!this.#prefaceSeen) this.destroy();
    }, o.prefaceTimeoutMs);
  }

  /** Reads and serves until the connection closes. */
  async run(): Promise<void> {
    const chunk = new Uint8Array(READ_SIZE);
    try {
      while (!this.#dead) {
        // Backpressure: a peer that does not read must not make us queue answers (PING and
        // SETTINGS ACKs, response HEADERS) without bound: wait for the write in flight.
        while (this.#writing && this.#out.length + this.#inFlightBytes > MAX_PENDING_OUTPUT) {
          await new Promise<void>((r) => this.#writeDone = r);
        }
        if (this.#dead) break;
        let n: number | null;
        try {
          n = await this.#conn.read(chunk);
        } catch {
          n = null;
        }
        if (n === null || this.#dead) break;
        let data: Uint8Array;
        if (this.#carryLen > 0) {
          const need = this.#carryLen + n;
          if (need > this.#carry.length) {
            const c = new Uint8Array(Math.max(need, this.#carry.length * 2));
            c.set(this.#carry.subarray(0, this.#carryLen));
            this.#carry = c;
          }
          this.#carry.set(chunk.subarray(0, n), this.#carryLen);
          data = this.#carry.subarray(0, need);
        } else {
          data = chunk.subarray(0, n);
        }
        let used: number;
        try {
          used = this.#parse(data);
        } catch (e) {
          // A bug here must cost this connection, never the process.
          this.#connError(H2_INTERNAL_ERROR, e instanceof Error ? e.message : String(e));
          used = data.length;
        }
        const rest = data.length - used;
        if (rest > 0 && !this.#dead) {
          if (data.buffer === this.#carry.buffer) {
            this.#carry.copyWithin(0, used, data.length);
          } else {
            if (rest > this.#carry.length) this.#carry = new Uint8Array(rest);
            this.#carry.set(data.subarray(used));
          }
        }
        this.#carryLen = rest;
        if (this.#out.length + this.#inFlightBytes > MAX_UNWRITTEN) {
          // The client keeps sending (PINGs, requests) but does not read what we answer.
          this.destroy();
          break;
        }
        if (this.#recvUnacked > 0 && this.#recvUnacked >= this.server.opts.connectionWindow / 4) {
          this.#out.windowUpdate(0, this.#recvUnacked);
          this.#recvUnacked = 0;
          this.#scheduleFlush();
        }
      }
    } finally {
      this.#dead = true;
      this.#cancelAll();
      if (this.#writing || this.#out.length > 0) {
        this.#closeAfterWrite = true;
        this.#scheduleFlush();
        await this.#closedPromise;
      } else {
        this.#close();
      }
    }
  }

  #resolveClosed!: () => void;
  readonly #closedPromise = new Promise<void>((r) => this.#resolveClosed = r);

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dead = true;
    clearTimeout(this.#prefaceTimer);
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    this.#resolveClosed();
  }

  /** Cancels every call still open (connection gone). */
  #cancelAll(): void {
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    this.#blocked.clear();
    this.#wantDrain.clear();
    for (const s of streams) {
      const wasDone = s.done;
      s.done = true;
      this.server.unwatchDeadline(s);
      if (!wasDone || s.queue.length > 0) s.call?.cancel();
    }
  }

  /** Graceful shutdown: GOAWAY now; close once the last stream ended. */
  goAway(): void {
    if (this.#dead) return;
    if (!this.#goawaySent) {
      this.#goawaySent = true;
      this.#out.goaway(this.#lastStreamId, H2_NO_ERROR);
      this.#scheduleFlush();
    }
    this.#maybeIdleClose();
  }

  /** Drops the connection now (forceShutdown). */
  destroy(): void {
    this.#dead = true;
    this.#cancelAll();
    this.#close();
  }

  #maybeIdleClose(): void {
    if (this.#goawaySent && this.#streams.size === 0) {
      this.#dead = true;
      this.#closeAfterWrite = true;
      if (!this.#writing && this.#out.length === 0) this.#close();
      else this.#scheduleFlush();
    }
  }

  /** Ends the connection with GOAWAY(code). */
  #connError(code: number, why: string): void {
    if (this.#dead) return;
    this.#out.goaway(this.#lastStreamId, code, why);
    this.#goawaySent = true;
    this.#dead = true;
    this.#closeAfterWrite = true;
    this.#cancelAll();
    this.#scheduleFlush();
  }

  /** Ends one stream with RST_STREAM(code). */
  #streamError(id: number, code: number): void {
    const s = this.#streams.get(id);
    if (s !== undefined) {
      s.done = true;
      this.server.unwatchDeadline(s);
      this.#streams.delete(id);
      this.#blocked.delete(s);
      this.#wantDrain.delete(s);
      s.call?.cancel();
    }
    this.#out.rstStream(id, code);
    this.#scheduleFlush();
    this.#maybeIdleClose();
  }

  // --- input ---------------------------------------------------------------------------------

  /**
   * A plain HTTP/1.1 GET instead of the HTTP/2 preface ({@linkcode H2ServerOptions.http1}):
   * waits for the whole request head (at most {@linkcode HTTP1_MAX_HEAD} bytes), answers it in
   * place of our unsent SETTINGS, and closes. Returns the bytes consumed.
   */
  #http1(b: Uint8Array): number {
    const head = Math.min(b.length, HTTP1_MAX_HEAD);
    for (let i = 0; i < Math.min(head, _GET.length); i++) {
      if (b[i] !== _GET[i]) return this.#http1Answer(b, 400, "text/plain", "bad request\n");
    }
    let end = -1;
    for (let i = 3; i < head; i++) {
      if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) {
        end = i;
        break;
      }
    }
    if (end < 0) {
      if (b.length < HTTP1_MAX_HEAD) return 0; // the rest of the head is on its way
      return this.#http1Answer(b, 431, "text/plain", "request header fields too large\n");
    }
    const line = new TextDecoder().decode(b.subarray(0, b.indexOf(13)));
    const m = /^GET (\S+) HTTP\/1\.[01]$/.exec(line);
    if (m === null) return this.#http1Answer(b, 400, "text/plain", "bad request\n");
    let res;
    try {
      res = this.server.opts.http1!(m[1]!);
    } catch (e) {
      return this.#http1Answer(b, 500, "text/plain", `${e instanceof Error ? e.message : e}\n`);
    }
    if (res === undefined) return this.#http1Answer(b, 404, "text/plain", "not found\n");
    return this.#http1Answer(b, res.status, res.contentType, res.body);
  }

  /** Queues the answer in place of our unsent SETTINGS, ends the connection; consumes `b`. */
  #http1Answer(b: Uint8Array, status: number, contentType: string, body: string): number {
    const payload = new TextEncoder().encode(body);
    const reason = HTTP1_REASONS[status] ?? "";
    const head = `HTTP/1.1 ${status} ${reason}\r\ncontent-type: ${contentType}\r\n` +
      `content-length: ${payload.length}\r\nconnection: close\r\n\r\n`;
    clearTimeout(this.#prefaceTimer);
    this.#out.reset(); // our SETTINGS, never sent
    this.#out.put(new TextEncoder().encode(head));
    this.#out.put(payload);
    this.#dead = true;
    this.#closeAfterWrite = true;
    this.#scheduleFlush();
    return b.length;
  }

  /** Parses whole frames from `b`; returns the number of bytes consumed. */
  #parse(b: Uint8Array): number {
    let pos = 0;
    if (!this.#prefaceSeen) {
      if (b[0] === _GET[0] && this.server.opts.http1 !== undefined) return this.#http1(b);
      const n = Math.min(b.length, PREFACE.length);
      for (let i = 0; i < n; i++) {
        if (b[i] !== PREFACE[i]) {
          this.#connError(H2_PROTOCOL_ERROR, "bad connection preface");
          return b.length;
        }
      }
      if (b.length < PREFACE.length) return 0;
      this.#prefaceSeen = true;
      clearTimeout(this.#prefaceTimer);
      this.#scheduleFlush(); // our SETTINGS
      pos = PREFACE.length;
    }
    while (b.length - pos >= 9 && !this.#dead) {
      const len = (b[pos]! << 16) | (b[pos + 1]! << 8) | b[pos + 2]!;
      if (len > DEFAULT_MAX_FRAME_SIZE) {
        this.#connError(H2_FRAME_SIZE_ERROR, `frame of ${len} bytes`);
        return b.length;
      }
      if (b.length - pos < 9 + len) break;
      const type = b[pos + 3]!;
      const flags = b[pos + 4]!;
      const sid = ((b[pos + 5]! & 0x7f) << 24) | (b[pos + 6]! << 16) | (b[pos + 7]! << 8) |
        b[pos + 8]!;
      const start = pos + 9;
      pos = start + len;
      if (!this.#settingsSeen) {
        if (type !== FRAME_SETTINGS || (flags & FLAG_ACK) !== 0) {
          this.#connError(H2_PROTOCOL_ERROR, "the first frame must be SETTINGS");
          return b.length;
        }
        this.#settingsSeen = true;
      }
      if (this.#contStream !== 0 && type !== FRAME_CONTINUATION) {
        this.#connError(H2_PROTOCOL_ERROR, "expected CONTINUATION");
        return b.length;
      }
      switch (type) {
        case FRAME_DATA:
          this.#onData(b, start, pos, flags, sid);
          break;
        case FRAME_HEADERS:
          this.#onHeaders(b, start, pos, flags, sid);
          break;
        case FRAME_CONTINUATION:
          this.#onContinuation(b.subarray(start, pos), flags, sid);
          break;
        case FRAME_SETTINGS:
          this.#onSettings(b, start, pos, flags, sid);
          break;
        case FRAME_PING:
          if (sid !== 0) this.#connError(H2_PROTOCOL_ERROR, "PING on a stream");
          else if (len !== 8) this.#connError(H2_FRAME_SIZE_ERROR, "PING of the wrong size");
          else if ((flags & FLAG_ACK) === 0) {
            this.#out.frame(FRAME_PING, FLAG_ACK, 0, b.subarray(start, pos));
            this.#scheduleFlush();
          }
          break;
        case FRAME_WINDOW_UPDATE:
          this.#onWindowUpdate(b, start, len, sid);
          break;
        case FRAME_RST_STREAM:
          if (sid === 0) this.#connError(H2_PROTOCOL_ERROR, "RST_STREAM on stream 0");
          else if (len !== 4) this.#connError(H2_FRAME_SIZE_ERROR, "RST_STREAM of the wrong size");
          else if (sid > this.#lastStreamId) {
            this.#connError(H2_PROTOCOL_ERROR, "RST_STREAM on an idle stream");
          } else {
            const s = this.#streams.get(sid);
            if (s !== undefined) {
              s.remoteOpen = false;
              s.done = true;
              this.server.unwatchDeadline(s);
              this.removeStream(s);
              s.call?.cancel();
            }
          }
          break;
        case FRAME_PRIORITY:
          if (sid === 0) this.#connError(H2_PROTOCOL_ERROR, "PRIORITY on stream 0");
          else if (len !== 5) this.#streamError(sid, H2_FRAME_SIZE_ERROR);
          break;
        case FRAME_GOAWAY:
          if (sid !== 0) this.#connError(H2_PROTOCOL_ERROR, "GOAWAY on a stream");
          else if (len < 8) this.#connError(H2_FRAME_SIZE_ERROR, "GOAWAY too short");
          // Otherwise the client opens no new streams; the ones in flight finish and it closes.
          break;
        case FRAME_PUSH_PROMISE:
          this.#connError(H2_PROTOCOL_ERROR, "PUSH_PROMISE from a client");
          break;
        default:
          break; // unknown frame types are ignored (RFC 9113 §4.1)
      }
    }
    return this.#dead ? b.length : pos;
  }

  #onSettings(b: Uint8Array, start: number, end: number, flags: number, sid: number): void {
    if (sid !== 0) return this.#connError(H2_PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & FLAG_ACK) !== 0) {
      if (end !== start) this.#connError(H2_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      return;
    }
    if ((end - start) % 6 !== 0) {
      return this.#connError(H2_FRAME_SIZE_ERROR, "SETTINGS of the wrong size");
    }
    for (let p = start; p < end; p += 6) {
      const id = (b[p]! << 8) | b[p + 1]!;
      const v = ((b[p + 2]! << 24) >>> 0) + (b[p + 3]! << 16) + (b[p + 4]! << 8) + b[p + 5]!;
      if (id === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (v > MAX_WINDOW) {
          return this.#connError(H2_FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
        }
        const delta = v - this.#peerInitialWindow;
        this.#peerInitialWindow = v;
        for (const s of this.#streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) {
            return this.#connError(H2_FLOW_CONTROL_ERROR, "stream window overflow");
          }
        }
        if (delta > 0) { for (const s of [...this.#blocked]) this.#drain(s); }
      } else if (id === SETTINGS_MAX_FRAME_SIZE) {
        if (v < DEFAULT_MAX_FRAME_SIZE || v > 16_777_215) {
          return this.#connError(H2_PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
        }
        this.#peerMaxFrame = v;
      } else if (id === 2 /* ENABLE_PUSH */ && v > 1) {
        return this.#connError(H2_PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1");
      } else if (id === SETTINGS_HEADER_TABLE_SIZE) {
        // Our encoder never uses the dynamic table: any size is fine.
      }
    }
    this.#out.header(0, FRAME_SETTINGS, FLAG_ACK, 0);
    this.#scheduleFlush();
  }

  #onWindowUpdate(b: Uint8Array, start: number, len: number, sid: number): void {
    if (len !== 4) return this.#connError(H2_FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size");
    const inc = ((b[start]! & 0x7f) << 24) | (b[start + 1]! << 16) | (b[start + 2]! << 8) |
      b[start + 3]!;
    if (sid === 0) {
      if (inc === 0) return this.#connError(H2_PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this.#sendWindow += inc;
      if (this.#sendWindow > MAX_WINDOW) {
        return this.#connError(H2_FLOW_CONTROL_ERROR, "connection window overflow");
      }
      for (const s of [...this.#blocked]) {
        this.#drain(s);
        if (this.#sendWindow <= 0) break;
      }
      return;
    }
    const s = this.#streams.get(sid);
    if (s === undefined) {
      if (sid > this.#lastStreamId) this.#connError(H2_PROTOCOL_ERROR, "WINDOW_UPDATE on idle");
      return;
    }
    if (inc === 0) return this.#streamError(sid, H2_PROTOCOL_ERROR);
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.#streamError(sid, H2_FLOW_CONTROL_ERROR);
    if (s.queue.length > 0) this.#drain(s);
  }

  #onData(b: Uint8Array, start: number, end: number, flags: number, sid: number): void {
    if (sid === 0) return this.#connError(H2_PROTOCOL_ERROR, "DATA on stream 0");
    const len = end - start;
    this.#recvUnacked += len;
    if (this.#recvUnacked > this.server.opts.connectionWindow) {
      return this.#connError(H2_FLOW_CONTROL_ERROR, "connection window exceeded");
    }
    if ((flags & FLAG_PADDED) !== 0) {
      if (len < 1) return this.#connError(H2_PROTOCOL_ERROR, "DATA padding without length");
      const pad = b[start]!;
      start++;
      end -= pad;
      if (end < start) return this.#connError(H2_PROTOCOL_ERROR, "DATA padding too long");
    }
    const s = this.#streams.get(sid);
    if (s === undefined) {
      if (sid > this.#lastStreamId) this.#connError(H2_PROTOCOL_ERROR, "DATA on an idle stream");
      return; // a stream we closed or refused: ignored (its bytes still count above)
    }
    if (!s.remoteOpen) return this.#streamError(sid, H2_STREAM_CLOSED);
    s.recvUnacked += len;
    if (s.recvUnacked > this.server.opts.streamWindow) {
      return this.#streamError(sid, H2_FLOW_CONTROL_ERROR);
    }
    if (end > start) s.onData(b, start, end);
    if ((flags & FLAG_END_STREAM) !== 0) {
      s.onRemoteEnd();
    } else if (s.remoteOpen && s.recvUnacked >= this.server.opts.streamWindow / 2) {
      this.#out.windowUpdate(sid, s.recvUnacked);
      s.recvUnacked = 0;
      this.#scheduleFlush();
    }
  }

  #onHeaders(b: Uint8Array, start: number, end: number, flags: number, sid: number): void {
    if (sid === 0 || (sid & 1) === 0) {
      return this.#connError(H2_PROTOCOL_ERROR, "HEADERS on an invalid stream id");
    }
    if ((flags & FLAG_PADDED) !== 0) {
      if (end - start < 1) return this.#connError(H2_PROTOCOL_ERROR, "HEADERS padding");
      const pad = b[start]!;
      start++;
      end -= pad;
      if (end < start) return this.#connError(H2_PROTOCOL_ERROR, "HEADERS padding too long");
    }
    if ((flags & FLAG_PRIORITY) !== 0) {
      if (end - start < 5) return this.#connError(H2_PROTOCOL_ERROR, "HEADERS priority");
      start += 5;
    }
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if ((flags & FLAG_END_HEADERS) !== 0) {
      this.#onHeaderBlock(sid, endStream, b, start, end);
      return;
    }
    this.#contStream = sid;
    this.#contEndStream = endStream;
    this.#contBuf = b.slice(start, end);
    this.#contBytes = end - start;
  }

  #onContinuation(frag: Uint8Array, flags: number, sid: number): void {
    if (this.#contStream === 0 || sid !== this.#contStream) {
      return this.#connError(H2_PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    this.#contBytes += frag.length;
    if (this.#contBytes > MAX_HEADER_BLOCK) {
      return this.#connError(H2_ENHANCE_YOUR_CALM, "header block too large");
    }
    if (frag.length > 0) {
      if (this.#contBytes > this.#contBuf.length) {
        const grown = new Uint8Array(Math.max(this.#contBytes, this.#contBuf.length * 2));
        grown.set(this.#contBuf.subarray(0, this.#contBytes - frag.length));
        this.#contBuf = grown;
      }
      this.#contBuf.set(frag, this.#contBytes - frag.length);
    }
    if ((flags & FLAG_END_HEADERS) === 0) return;
    const block = this.#contBuf.subarray(0, this.#contBytes);
    this.#contBuf = new Uint8Array(0);
    this.#contStream = 0;
    this.#onHeaderBlock(sid, this.#contEndStream, block, 0, block.length);
  }

  /** A complete header block: `b[start, end)`. */
  #onHeaderBlock(sid: number, endStream: boolean, b: Uint8Array, start: number, end: number): void {
    let headers: string[];
    let tooLarge = false;
    try {
      headers = this.#hpack.decodeFlat(b, start, end);
    } catch (e) {
      if (!(e instanceof HeaderListTooLargeError)) {
        return this.#connError(H2_COMPRESSION_ERROR, e instanceof Error ? e.message : "HPACK");
      }
      headers = [];
      tooLarge = true;
    }
    const existing = this.#streams.get(sid);
    if (existing !== undefined) {
      // Trailers from the client: must end the stream.
      if (!endStream) return this.#streamError(sid, H2_PROTOCOL_ERROR);
      if (!existing.remoteOpen) return this.#streamError(sid, H2_STREAM_CLOSED);
      existing.onRemoteEnd();
      return;
    }
    if (sid <= this.#lastStreamId) return; // a stream we already closed: ignored
    if (this.#goawaySent) return; // after GOAWAY, new streams are not processed
    this.#lastStreamId = sid;
    if (this.#streams.size >= this.server.opts.maxConcurrentStreams) {
      this.#out.rstStream(sid, H2_REFUSED_STREAM);
      this.#scheduleFlush();
      return;
    }
    if (tooLarge) {
      this.#out.rstStream(sid, H2_ENHANCE_YOUR_CALM);
      this.#scheduleFlush();
      return;
    }
    let method = "", path = "", contentType = "", timeout = "";
    let regular = false;
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i]!;
      const v = headers[i + 1]!;
      if (k.charCodeAt(0) === 0x3a /* : */) {
        if (regular) return this.#malformed(sid, endStream);
        if (k === ":method") method = v;
        else if (k === ":path") path = v;
        else if (k !== ":scheme" && k !== ":authority") return this.#malformed(sid, endStream);
        continue;
      }
      regular = true;
      if (k === "content-type") contentType = v;
      else if (k === "grpc-timeout") timeout = v;
    }
    if (path === "" || method === "") return this.#malformed(sid, endStream);
    if (method !== "POST") return this.#httpError(sid, endStream, "405");
    if (!contentType.startsWith("application/grpc")) {
      return this.#httpError(sid, endStream, "415");
    }
    let deadline = Infinity;
    let badTimeout = false;
    if (timeout !== "") {
      const ms = parseGrpcTimeout(timeout);
      if (ms === undefined) badTimeout = true;
      else deadline = Date.now() + ms;
    }
    const m = this.server.method(path);
    const s = new H2Stream(this, sid, m, deadline, this.#peerInitialWindow);
    this.#streams.set(sid, s);
    if (m === undefined || badTimeout) {
      if (endStream) s.remoteOpen = false;
      s.sendStatus(
        m === undefined ? grpc.status.UNIMPLEMENTED : grpc.status.INTERNAL,
        m === undefined
          ? `The server does not implement the method ${path}`
          : `Invalid grpc-timeout value "${timeout}"`,
      );
      return;
    }
    s.call = new ServerCall(s, m.kind, headers, deadline);
    if (deadline !== Infinity) this.server.watchDeadline(s);
    if (m.kind === "clientStream" || m.kind === "bidi") s.start();
    if (endStream) s.onRemoteEnd();
  }

  /** A request whose header block is not a valid HTTP/2 request: RST_STREAM PROTOCOL_ERROR. */
  #malformed(sid: number, _endStream: boolean): void {
    this.#out.rstStream(sid, H2_PROTOCOL_ERROR);
    this.#scheduleFlush();
  }

  /** A non-gRPC request: an HTTP error status, then the stream is over. */
  #httpError(sid: number, endStream: boolean, status: string): void {
    this.headerBlock(sid, FLAG_END_HEADERS | FLAG_END_STREAM, encodeHeaders([[":status", status]]));
    if (!endStream) this.#out.rstStream(sid, H2_NO_ERROR);
    this.#scheduleFlush();
  }

  // --- output --------------------------------------------------------------------------------

  /** Appends a header block as HEADERS (+ CONTINUATION frames when it exceeds a frame). */
  headerBlock(sid: number, flags: number, block: Uint8Array): void {
    const max = this.#peerMaxFrame;
    if (block.length <= max) {
      this.#out.frame(FRAME_HEADERS, flags, sid, block);
    } else {
      const endStream = flags & FLAG_END_STREAM;
      this.#out.frame(FRAME_HEADERS, endStream, sid, block.subarray(0, max));
      for (let o = max; o < block.length; o += max) {
        const last = o + max >= block.length;
        this.#out.frame(
          FRAME_CONTINUATION,
          last ? FLAG_END_HEADERS : 0,
          sid,
          block.subarray(o, Math.min(o + max, block.length)),
        );
      }
    }
    this.#scheduleFlush();
  }

  /** Queues one response message (gRPC-framed) on a stream, obeying flow control. */
  sendData(s: H2Stream, msg: Uint8Array): void {
    const total = msg.length + 5;
    if (
      s.queue.length === 0 && total <= this.#peerMaxFrame && total <= s.sendWindow &&
      total <= this.#sendWindow
    ) {
      s.sendWindow -= total;
      this.#sendWindow -= total;
      this.#out.header(total, FRAME_DATA, 0, s.id);
      this.#out.grpcPrefix(msg.length);
      this.#out.put(msg);
      this.#scheduleFlush();
      return;
    }
    const framed = new Uint8Array(total);
    framed[1] = (msg.length >>> 24) & 0xff;
    framed[2] = (msg.length >>> 16) & 0xff;
    framed[3] = (msg.length >>> 8) & 0xff;
    framed[4] = msg.length & 0xff;
    framed.set(msg, 5);
    s.queue.push(framed);
    s.queuedBytes += total;
    this.#drain(s);
  }

  /** Sends as much of a stream's queue as the windows allow; then its trailers. */
  #drain(s: H2Stream): void {
    while (s.queue.length > 0) {
      const avail = Math.min(s.sendWindow, this.#sendWindow, this.#peerMaxFrame);
      if (avail <= 0) {
        this.#blocked.add(s);
        this.#scheduleFlush();
        return;
      }
      const chunk = s.queue[0]!;
      const n = Math.min(avail, chunk.length - s.queueOff);
      this.#out.header(n, FRAME_DATA, 0, s.id);
      this.#out.put(chunk.subarray(s.queueOff, s.queueOff + n));
      s.sendWindow -= n;
      this.#sendWindow -= n;
      s.queueOff += n;
      s.queuedBytes -= n;
      if (s.queueOff === chunk.length) {
        s.queue.shift();
        s.queueOff = 0;
      }
    }
    this.#blocked.delete(s);
    const t = s.pendingTrailers;
    if (t !== undefined) {
      s.pendingTrailers = undefined;
      this.finishStream(s, t);
    }
    this.#scheduleFlush();
    if (s.needDrain) this.#wantDrain.add(s);
  }

  /** Writes a stream's trailers (END_STREAM) and forgets the stream. */
  finishStream(s: H2Stream, trailers: Uint8Array): void {
    this.headerBlock(s.id, FLAG_END_HEADERS | FLAG_END_STREAM, trailers);
    if (s.remoteOpen) {
      // The client may still be sending: tell it to stop (RFC 9113 §8.1).
      this.#out.rstStream(s.id, H2_NO_ERROR);
      s.remoteOpen = false;
    }
    this.removeStream(s);
    s.call?.close();
  }

  /** Forgets a stream whose both halves are closed (or that was reset). */
  removeStream(s: H2Stream): void {
    this.server.unwatchDeadline(s);
    if (this.#streams.get(s.id) === s) this.#streams.delete(s.id);
    this.#blocked.delete(s);
    this.#wantDrain.delete(s);
    this.#maybeIdleClose();
  }

  /** Bytes a stream's writes are waiting behind (its queue and the connection's output). */
  pressure(s: H2Stream): number {
    const p = s.queuedBytes + this.#out.length + this.#inFlightBytes;
    if (p >= this.server.opts.writeHighWaterMark) {
      s.needDrain = true;
      this.#wantDrain.add(s);
    }
    return p;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#writing) return;
    this.#flushScheduled = true;
    if (this.server.opts.flush === "timeout") setTimeout(this.#flushFn, 0);
    else queueMicrotask(this.#flushFn);
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#writing || this.#closed) return;
    if (this.#out.length === 0) {
      if (this.#closeAfterWrite) this.#close();
      return;
    }
    const w = this.#out;
    this.#out = this.#spare;
    this.#spare = w;
    this.#writing = true;
    this.#write(w.bytes()).then(() => {
      this.#writing = false;
      this.#wakeReader();
      this.#inFlightBytes = 0;
      w.reset();
      try {
        if (this.#wantDrain.size > 0) this.#emitDrains();
      } finally {
        if (this.#out.length > 0) this.#flush();
        else if (this.#closeAfterWrite) this.#close();
      }
    }, () => {
      this.#writing = false;
      this.#wakeReader();
      this.#dead = true;
      this.#cancelAll();
      this.#close();
    });
  }

  /** Resolves the read loop's wait for the write in flight (backpressure). */
  #writeDone: (() => void) | undefined;
  #wakeReader(): void {
    const r = this.#writeDone;
    this.#writeDone = undefined;
    r?.();
  }

  async #write(b: Uint8Array): Promise<void> {
    this.#inFlightBytes = b.length;
    let o = 0;
    while (o < b.length) o += await this.#conn.write(b.subarray(o));
  }

  #emitDrains(): void {
    const hwm = this.server.opts.writeHighWaterMark;
    for (const s of [...this.#wantDrain]) {
      if (s.queuedBytes + this.#out.length + this.#inFlightBytes >= hwm) continue;
      this.#wantDrain.delete(s);
      if (!s.needDrain) continue;
      s.needDrain = false;
      if (!s.done) s.call?.dispatch("drain");
    }
  }
}
