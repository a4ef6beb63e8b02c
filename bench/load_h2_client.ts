/**
 * A lean gRPC client for the load generator (`--client h2`): unary calls over HTTP/2 (h2c, prior
 * knowledge) on `Deno.connect`, for both systems' KV calls, instead of grpc-js on Deno's
 * `node:http2`.
 *
 * Why: at one client grpc-js pauses 7–19 ms in each of its own scavenges (nearly every call's
 * objects reach the old generation), about half of the slow one-client puts overlap such a pause,
 * and from 64 clients up its one thread is saturated, whichever system it drives (bench/PROFILE.md,
 * session 7). This client does what a unary call needs and little else, so that the figures are
 * the servers'. grpc-js stays the default (`--client grpc-js`).
 *
 * Per connection: the preface and SETTINGS (no push, a 16 MiB stream and connection window), every
 * frame produced in one turn coalesced into one socket write, HPACK decoding of every header block
 * (the server's dynamic table), PING and SETTINGS acknowledged, the server's connection window
 * respected for request bodies (queued until a WINDOW_UPDATE), its MAX_FRAME_SIZE and
 * MAX_CONCURRENT_STREAMS honoured, RST_STREAM and GOAWAY failing the calls they concern. Request
 * headers are HPACK literals without indexing (`encodeHeaders`). A call fails with a
 * {@linkcode GrpcCallError} whose `code` is the gRPC status (so the bench's error tally names it);
 * a call older than its deadline is cancelled by a once-a-second sweep. A broken connection is
 * dialled again by the next call.
 *
 * @example
 * ```ts ignore
 * const c = await H2Channel.connect("127.0.0.1:2379");
 * const reply = await c.unary("/etcdserverpb.KV/Range", encodeEtcdRange(key, false), 10_000);
 * c.close();
 * ```
 *
 * @module
 */
import { encodeHeaders, HpackDecoder } from "../server/h2/hpack.ts";
import { putVarint, varintLength } from "../storage/coding.ts";
import {
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
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FRAME_WINDOW_UPDATE,
  FrameWriter,
  H2_CANCEL,
  H2_REFUSED_STREAM,
  PREFACE,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
} from "../server/h2/wire.ts";

/** gRPC status codes used here. */
export const GRPC_CANCELLED = 1;
/** UNKNOWN. */
export const GRPC_UNKNOWN = 2;
/** DEADLINE_EXCEEDED. */
export const GRPC_DEADLINE_EXCEEDED = 4;
/** INTERNAL. */
export const GRPC_INTERNAL = 13;
/** UNAVAILABLE. */
export const GRPC_UNAVAILABLE = 14;

/** A failed call: `code` is the gRPC status code. */
export class GrpcCallError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = "GrpcCallError";
  }
}

/** The receive window this client grants (per stream and for the connection). */
const RECV_WINDOW = 16 * 1024 * 1024;
const DEFAULT_WINDOW = 65_535;
const DEFAULT_FRAME = 16_384;
const READ_CHUNK = 64 * 1024;

interface Call {
  id: number;
  started: number;
  deadlineMs: number;
  resolve: (msg: Uint8Array) => void;
  reject: (e: GrpcCallError) => void;
  /** Response body bytes (gRPC-framed), in pieces. */
  body: Uint8Array[];
  bodyLen: number;
  status: number | undefined;
  message: string;
}

interface PendingRequest {
  path: string;
  body: Uint8Array;
  call: Call;
}

/** One HTTP/2 connection to one endpoint, carrying unary gRPC calls. */
export class H2Channel {
  readonly endpoint: string;
  #conn: Deno.Conn | undefined;
  #connecting: Promise<void> | undefined;
  #closed = false;
  #broken: GrpcCallError | undefined;
  #decoder = new HpackDecoder();
  #out = new FrameWriter();
  /** The buffer of the write in flight; swapped with `#out` by each flush. */
  #spare = new FrameWriter();
  /** HPACK request header blocks by path (the rest of a request's headers never change). */
  #headerBlocks = new Map<string, Uint8Array>();
  #flushQueued = false;
  #writing = false;
  #nextId = 1;
  #calls = new Map<number, Call>();
  /** Requests waiting for a stream slot (MAX_CONCURRENT_STREAMS). */
  #waiting: PendingRequest[] = [];
  /** Request bodies waiting for connection send window: [stream id, remaining bytes]. */
  #blocked: [number, Uint8Array][] = [];
  #sendWindow = DEFAULT_WINDOW;
  #peerStreamWindow = DEFAULT_WINDOW;
  #peerMaxFrame = DEFAULT_FRAME;
  #peerMaxStreams = Infinity;
  #recvUnacked = 0;
  /** A HEADERS block being continued: stream id and fragments. */
  #hdrStream = 0;
  #hdrEndStream = false;
  #hdrParts: Uint8Array[] = [];
  #sweep: number;
  readonly #flushFn = () => this.#flush();

  private constructor(endpoint: string) {
    this.endpoint = endpoint;
    this.#sweep = setInterval(() => this.#expire(), 1000) as unknown as number;
    Deno.unrefTimer(this.#sweep);
  }

  /** Connects to `host:port` and sends the preface. */
  static async connect(endpoint: string): Promise<H2Channel> {
    const c = new H2Channel(endpoint);
    await c.#dial();
    return c;
  }

  /** Calls `path` with one request message (protobuf bytes); resolves with the reply message. */
  unary(path: string, request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const call: Call = {
        id: 0,
        started: performance.now(),
        deadlineMs: timeoutMs,
        resolve,
        reject,
        body: [],
        bodyLen: 0,
        status: undefined,
        message: "",
      };
      const req = { path, body: request, call };
      if (this.#closed) {
        reject(new GrpcCallError(GRPC_CANCELLED, "channel closed"));
        return;
      }
      if (this.#conn === undefined || this.#broken !== undefined) {
        this.#dial().then(() => this.#start(req), (e) => reject(unavailable(e)));
        return;
      }
      this.#start(req);
    });
  }

  /** Closes the connection; calls in flight fail with CANCELLED. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#fail(new GrpcCallError(GRPC_CANCELLED, "channel closed"));
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
    this.#conn = undefined;
  }

  #dial(): Promise<void> {
    if (this.#connecting !== undefined) return this.#connecting;
    this.#connecting = (async () => {
      const i = this.endpoint.lastIndexOf(":");
      const conn = await Deno.connect({
        hostname: this.endpoint.slice(0, i),
        port: Number(this.endpoint.slice(i + 1)),
      });
      conn.setNoDelay(true);
      if (this.#closed) {
        conn.close();
        throw new Error("channel closed");
      }
      this.#conn = conn;
      this.#broken = undefined;
      this.#decoder = new HpackDecoder();
      // Fresh buffers: a write still failing on the old connection keeps its own.
      this.#out = new FrameWriter();
      this.#spare = new FrameWriter();
      this.#writing = false;
      this.#nextId = 1;
      this.#sendWindow = DEFAULT_WINDOW;
      this.#peerStreamWindow = DEFAULT_WINDOW;
      this.#peerMaxFrame = DEFAULT_FRAME;
      this.#peerMaxStreams = Infinity;
      this.#recvUnacked = 0;
      this.#hdrParts = [];
      this.#out.put(PREFACE);
      const settings: [number, number][] = [
        [SETTINGS_ENABLE_PUSH, 0],
        [SETTINGS_INITIAL_WINDOW_SIZE, RECV_WINDOW],
      ];
      this.#out.header(settings.length * 6, FRAME_SETTINGS, 0, 0);
      for (const [id, v] of settings) {
        this.#out.put(new Uint8Array([id >> 8, id & 0xff]));
        this.#out.u32(v);
      }
      this.#out.header(4, FRAME_WINDOW_UPDATE, 0, 0);
      this.#out.u32(RECV_WINDOW - DEFAULT_WINDOW);
      this.#queueFlush();
      this.#readLoop(conn);
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  #start(req: PendingRequest): void {
    if (this.#broken !== undefined || this.#conn === undefined) {
      req.call.reject(this.#broken ?? new GrpcCallError(GRPC_UNAVAILABLE, "not connected"));
      return;
    }
    if (this.#calls.size >= this.#peerMaxStreams) {
      this.#waiting.push(req);
      return;
    }
    const call = req.call;
    const size = 5 + req.body.length;
    if (size > this.#peerStreamWindow) {
      call.reject(
        new GrpcCallError(GRPC_INTERNAL, "request larger than the server's stream window"),
      );
      return;
    }
    call.id = this.#nextId;
    this.#nextId += 2;
    this.#calls.set(call.id, call);
    let block = this.#headerBlocks.get(req.path);
    if (block === undefined) {
      block = encodeHeaders([
        [":method", "POST"],
        [":scheme", "http"],
        [":path", req.path],
        [":authority", this.endpoint],
        ["content-type", "application/grpc"],
        ["te", "trailers"],
      ]);
      this.#headerBlocks.set(req.path, block);
    }
    this.#out.frame(FRAME_HEADERS, FLAG_END_HEADERS, call.id, block);
    if (this.#blocked.length === 0 && size <= this.#peerMaxFrame && size <= this.#sendWindow) {
      // The usual case: the whole message in one DATA frame, written in place.
      this.#out.header(size, FRAME_DATA, FLAG_END_STREAM, call.id);
      this.#out.grpcPrefix(req.body.length);
      this.#out.put(req.body);
      this.#sendWindow -= size;
    } else {
      const msg = new Uint8Array(size);
      new DataView(msg.buffer).setUint32(1, req.body.length);
      msg.set(req.body, 5);
      if (this.#blocked.length > 0) this.#blocked.push([call.id, msg]);
      else this.#sendData(call.id, msg);
    }
    this.#queueFlush();
  }

  /** Writes as much of `msg` as the connection window allows; queues the rest. */
  #sendData(id: number, msg: Uint8Array): void {
    let o = 0;
    while (o < msg.length) {
      const n = Math.min(msg.length - o, this.#peerMaxFrame, this.#sendWindow);
      if (n <= 0) {
        this.#blocked.push([id, msg.subarray(o)]);
        return;
      }
      const last = o + n === msg.length;
      this.#out.frame(FRAME_DATA, last ? FLAG_END_STREAM : 0, id, msg.subarray(o, o + n));
      this.#sendWindow -= n;
      o += n;
    }
  }

  #queueFlush(): void {
    if (this.#flushQueued || this.#writing) return;
    this.#flushQueued = true;
    queueMicrotask(this.#flushFn);
  }

  async #flush(): Promise<void> {
    this.#flushQueued = false;
    const conn = this.#conn;
    if (conn === undefined || this.#out.length === 0 || this.#writing) return;
    this.#writing = true;
    const w = this.#out;
    this.#out = this.#spare;
    this.#spare = w;
    const bytes = w.bytes();
    try {
      let o = 0;
      while (o < bytes.length) o += await conn.write(bytes.subarray(o));
    } catch (e) {
      this.#breakConn(conn, unavailable(e));
    } finally {
      w.reset();
      if (this.#conn === conn) this.#writing = false; // (#dial resets it for a new one)
    }
    if (this.#out.length > 0) this.#queueFlush();
  }

  async #readLoop(conn: Deno.Conn): Promise<void> {
    let buf = new Uint8Array(READ_CHUNK * 2);
    let len = 0;
    try {
      for (;;) {
        if (buf.length - len < READ_CHUNK) {
          const b = new Uint8Array(Math.max(buf.length * 2, len + READ_CHUNK));
          b.set(buf.subarray(0, len));
          buf = b;
        }
        const n = await conn.read(buf.subarray(len));
        if (n === null) throw new Error("connection closed by the server");
        len += n;
        let o = 0;
        while (len - o >= 9) {
          const flen = (buf[o]! << 16) | (buf[o + 1]! << 8) | buf[o + 2]!;
          if (len - o < 9 + flen) break;
          const type = buf[o + 3]!;
          const flags = buf[o + 4]!;
          const sid = ((buf[o + 5]! & 0x7f) << 24) | (buf[o + 6]! << 16) | (buf[o + 7]! << 8) |
            buf[o + 8]!;
          this.#onFrame(type, flags, sid, buf.subarray(o + 9, o + 9 + flen));
          o += 9 + flen;
        }
        if (o > 0) {
          buf.copyWithin(0, o, len);
          len -= o;
        }
        if (this.#out.length > 0) this.#queueFlush();
      }
    } catch (e) {
      if (!this.#closed) this.#breakConn(conn, unavailable(e));
    }
  }

  #onFrame(type: number, flags: number, sid: number, p: Uint8Array): void {
    if (this.#hdrParts.length > 0 && type !== FRAME_CONTINUATION) {
      throw new Error("expected CONTINUATION");
    }
    switch (type) {
      case FRAME_DATA:
        return this.#onData(flags, sid, p);
      case FRAME_HEADERS: {
        let s = 0;
        let e = p.length;
        if (flags & FLAG_PADDED) e -= p[s++]!;
        if (flags & FLAG_PRIORITY) s += 5;
        this.#hdrStream = sid;
        this.#hdrEndStream = (flags & FLAG_END_STREAM) !== 0;
        this.#hdrParts = [p.slice(s, e)];
        if (flags & FLAG_END_HEADERS) this.#onHeaderBlock();
        return;
      }
      case FRAME_CONTINUATION:
        if (sid !== this.#hdrStream || this.#hdrParts.length === 0) {
          throw new Error("unexpected CONTINUATION");
        }
        this.#hdrParts.push(p.slice());
        if (flags & FLAG_END_HEADERS) this.#onHeaderBlock();
        return;
      case FRAME_SETTINGS:
        if (flags & FLAG_ACK) return;
        for (let i = 0; i + 6 <= p.length; i += 6) {
          const id = (p[i]! << 8) | p[i + 1]!;
          const v = ((p[i + 2]! << 24) | (p[i + 3]! << 16) | (p[i + 4]! << 8) | p[i + 5]!) >>> 0;
          if (id === SETTINGS_INITIAL_WINDOW_SIZE) this.#peerStreamWindow = v;
          else if (id === SETTINGS_MAX_FRAME_SIZE) this.#peerMaxFrame = v;
          else if (id === SETTINGS_MAX_CONCURRENT_STREAMS) this.#peerMaxStreams = Math.max(1, v);
        }
        this.#out.header(0, FRAME_SETTINGS, FLAG_ACK, 0);
        this.#startWaiting();
        return;
      case FRAME_PING:
        if (!(flags & FLAG_ACK)) this.#out.frame(FRAME_PING, FLAG_ACK, 0, p.slice());
        return;
      case FRAME_WINDOW_UPDATE: {
        const inc = ((p[0]! & 0x7f) << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!;
        if (sid === 0) {
          this.#sendWindow += inc;
          this.#unblock();
        }
        return;
      }
      case FRAME_RST_STREAM: {
        const c = this.#calls.get(sid);
        const code = ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
        if (c !== undefined) {
          const status = code === H2_REFUSED_STREAM ? GRPC_UNAVAILABLE : GRPC_INTERNAL;
          this.#finish(c, status, `RST_STREAM ${code}`);
        }
        return;
      }
      case FRAME_GOAWAY:
        // Calls still running on it fail too (simpler than draining them; the bench counts
        // them as errors), and the next call dials again.
        throw new GrpcCallError(GRPC_UNAVAILABLE, "the server sent GOAWAY");
      default:
        return; // PRIORITY, PUSH_PROMISE (disabled), unknown: ignored
    }
  }

  #onData(flags: number, sid: number, p: Uint8Array): void {
    this.#recvUnacked += p.length;
    if (this.#recvUnacked >= RECV_WINDOW / 2) {
      this.#out.header(4, FRAME_WINDOW_UPDATE, 0, 0);
      this.#out.u32(this.#recvUnacked);
      this.#recvUnacked = 0;
    }
    const c = this.#calls.get(sid);
    if (c === undefined) return;
    let s = 0;
    let e = p.length;
    if (flags & FLAG_PADDED) e -= p[s++]!;
    if (e > s) {
      c.body.push(p.slice(s, e));
      c.bodyLen += e - s;
    }
    if (flags & FLAG_END_STREAM) this.#complete(c);
  }

  #onHeaderBlock(): void {
    const parts = this.#hdrParts;
    this.#hdrParts = [];
    let block = parts[0]!;
    if (parts.length > 1) {
      block = new Uint8Array(parts.reduce((a, b) => a + b.length, 0));
      let o = 0;
      for (const q of parts) {
        block.set(q, o);
        o += q.length;
      }
    }
    // Every block is decoded, even for a call no longer here: the dynamic table depends on it.
    const headers = this.#decoder.decode(block);
    const c = this.#calls.get(this.#hdrStream);
    if (c === undefined) return;
    for (const [name, value] of headers) {
      if (name === "grpc-status") c.status = Number(value);
      else if (name === "grpc-message") c.message = value;
      else if (name === ":status" && value !== "200") {
        c.status = GRPC_UNKNOWN;
        c.message = `HTTP status ${value}`;
      }
    }
    if (this.#hdrEndStream) this.#complete(c);
  }

  #complete(c: Call): void {
    if (c.status === undefined) {
      return this.#finish(c, GRPC_INTERNAL, "stream ended without grpc-status");
    }
    if (c.status !== 0) return this.#finish(c, c.status, c.message || `status ${c.status}`);
    let body = c.body[0] ?? new Uint8Array(0);
    if (c.body.length > 1) {
      body = new Uint8Array(c.bodyLen);
      let o = 0;
      for (const q of c.body) {
        body.set(q, o);
        o += q.length;
      }
    }
    if (body.length < 5) return this.#finish(c, GRPC_INTERNAL, "no response message");
    const n = new DataView(body.buffer, body.byteOffset, body.length).getUint32(1);
    if (body[0] !== 0 || 5 + n > body.length) {
      return this.#finish(c, GRPC_INTERNAL, "malformed response message");
    }
    this.#calls.delete(c.id);
    c.resolve(body.subarray(5, 5 + n));
    this.#startWaiting();
  }

  #finish(c: Call, code: number, message: string): void {
    if (c.id !== 0 && !this.#calls.delete(c.id)) return;
    c.reject(new GrpcCallError(code, message));
    this.#startWaiting();
  }

  #startWaiting(): void {
    while (this.#waiting.length > 0 && this.#calls.size < this.#peerMaxStreams) {
      this.#start(this.#waiting.shift()!);
    }
    if (this.#out.length > 0) this.#queueFlush();
  }

  #unblock(): void {
    while (this.#blocked.length > 0 && this.#sendWindow > 0) {
      const [id, rest] = this.#blocked.shift()!;
      if (!this.#calls.has(id)) continue;
      this.#sendData(id, rest);
      if (this.#blocked.length > 0 && this.#blocked[this.#blocked.length - 1]![0] === id) break;
    }
    this.#queueFlush();
  }

  /** Cancels calls past their deadline (RST_STREAM CANCEL) and requests that waited as long. */
  #expire(): void {
    const now = performance.now();
    for (const c of [...this.#calls.values()]) {
      if (now - c.started > c.deadlineMs) {
        this.#out.header(4, FRAME_RST_STREAM, 0, c.id);
        this.#out.u32(H2_CANCEL);
        this.#finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
      }
    }
    this.#waiting = this.#waiting.filter((r) => {
      if (now - r.call.started <= r.call.deadlineMs) return true;
      r.call.reject(new GrpcCallError(GRPC_DEADLINE_EXCEEDED, "deadline exceeded"));
      return false;
    });
    if (this.#out.length > 0) this.#queueFlush();
  }

  #breakConn(conn: Deno.Conn, e: GrpcCallError): void {
    if (this.#conn !== conn) return;
    this.#broken = e;
    this.#conn = undefined;
    try {
      conn.close();
    } catch {
      // already closed
    }
    this.#fail(e);
  }

  #fail(e: GrpcCallError): void {
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    this.#blocked = [];
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const c of calls) c.reject(e);
    for (const r of waiting) r.call.reject(e);
  }
}

function unavailable(e: unknown): GrpcCallError {
  if (e instanceof GrpcCallError) return e;
  return new GrpcCallError(GRPC_UNAVAILABLE, e instanceof Error ? e.message : String(e));
}

// --- The four request messages and what the bench reads of the replies (proto3 wire format). ---

/** Encodes `bytes` fields (field number, value; empty values omitted) and `bool` fields (true only). */
function encodeFields(
  bytesFields: [number, Uint8Array][],
  boolFields: [number, boolean][],
): Uint8Array {
  let n = 0;
  for (const [f, v] of bytesFields) {
    if (v.length > 0) n += varintLength(f << 3) + varintLength(v.length) + v.length;
  }
  for (const [f, v] of boolFields) if (v) n += varintLength(f << 3) + 1;
  const b = new Uint8Array(n);
  let o = 0;
  for (const [f, v] of bytesFields) {
    if (v.length === 0) continue;
    o = putVarint(b, o, (f << 3) | 2);
    o = putVarint(b, o, v.length);
    b.set(v, o);
    o += v.length;
  }
  for (const [f, v] of boolFields) {
    if (!v) continue;
    o = putVarint(b, o, f << 3);
    b[o++] = 1;
  }
  return b;
}

/** `kvstore.PutRequest{key, value}` (also etcd's `PutRequest{key, value}`: same field numbers). */
export function encodePut(key: Uint8Array, value: Uint8Array): Uint8Array {
  return encodeFields([[1, key], [2, value]], []);
}

/** `kvstore.GetRequest{key, serializable}`. */
export function encodeConcordGet(key: Uint8Array, serializable: boolean): Uint8Array {
  return encodeFields([[1, key]], [[2, serializable]]);
}

/** `etcdserverpb.RangeRequest{key, serializable (7)}`. */
export function encodeEtcdRange(key: Uint8Array, serializable: boolean): Uint8Array {
  return encodeFields([[1, key]], [[7, serializable]]);
}

/**
 * Walks the top-level fields of a message; returns the last varint value of field `varintField`
 * (or undefined) and how many times field `countField` (any wire type) occurred.
 */
export function scanFields(
  msg: Uint8Array,
  varintField: number,
  countField = 0,
): { value: number | undefined; count: number } {
  let o = 0;
  let value: number | undefined;
  let count = 0;
  const varint = (): number => {
    let r = 0;
    let mul = 1;
    for (;;) {
      if (o >= msg.length) throw new Error("truncated varint");
      const x = msg[o++]!;
      r += (x & 0x7f) * mul;
      if (x < 0x80) return r;
      mul *= 128;
    }
  };
  while (o < msg.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wt = tag & 7;
    if (field === countField) count++;
    if (wt === 0) {
      const v = varint();
      if (field === varintField) value = v;
    } else if (wt === 2) {
      const n = varint(); // (not `o += varint()`: that reads `o` before the call moves it)
      o += n;
    } else if (wt === 1) o += 8;
    else if (wt === 5) o += 4;
    else throw new Error(`wire type ${wt}`);
    if (o > msg.length) throw new Error("truncated field");
  }
  return { value, count };
}
