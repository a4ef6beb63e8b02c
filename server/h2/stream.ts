/**
 * One HTTP/2 stream of the h2 gRPC server (server.ts) carrying one gRPC call: assembles request
 * messages from DATA (5-byte gRPC prefix, possibly split across frames), runs the handler, and
 * turns its answer into HEADERS, DATA and trailers (Trailers-Only when no message was sent).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { type CallSink, type ServerCall, statusOf } from "./call.ts";
import type { H2Conn } from "./conn.ts";
import { encodeHeaders } from "./hpack.ts";
import type { H2Method } from "./server.ts";
import { encodeGrpcMessage, FLAG_END_HEADERS } from "./wire.ts";

/** `:status: 200`, `content-type: application/grpc`. */
const RESPONSE_HEADERS = encodeHeaders([[":status", "200"], ["content-type", "application/grpc"]]);
/** `grpc-status: 0` (no grpc-message: OK needs none). */
const OK_TRAILERS = encodeHeaders([["grpc-status", "0"]]);

/** One HTTP/2 stream carrying one gRPC call. */
export class H2Stream implements CallSink {
  readonly id: number;
  readonly #c: H2Conn;
  readonly method: H2Method | undefined;
  readonly deadline: number;
  call: ServerCall | undefined;
  readonly peer: string;
  /** The client may still send (no END_STREAM or RST yet). */
  remoteOpen = true;
  /** Our trailers (or RST) are queued: nothing more goes out. */
  done = false;
  headersSent = false;
  #initialMetadata: grpc.Metadata | undefined;
  sendWindow: number;
  recvUnacked = 0;
  /** DATA waiting for send window: whole gRPC-framed messages, the first partly sent. */
  queue: Uint8Array[] = [];
  queueOff = 0;
  queuedBytes = 0;
  /** Trailer block waiting behind the queue. */
  pendingTrailers: Uint8Array | undefined;
  needDrain = false;
  // Request message assembly.
  /** A message prefix split across DATA frames (allocated only then). */
  #prefix: Uint8Array | undefined;
  #prefixLen = 0;
  #msg: Buffer | undefined;
  #msgFilled = 0;
  /** A message was refused (too large, compressed): further request bytes are ignored. */
  #discard = false;
  #received = 0;

  constructor(
    c: H2Conn,
    id: number,
    method: H2Method | undefined,
    deadline: number,
    sendWindow: number,
  ) {
    this.#c = c;
    this.id = id;
    this.method = method;
    this.deadline = deadline;
    this.sendWindow = sendWindow;
    this.peer = c.peer;
  }

  // --- input ---------------------------------------------------------------------------------

  /** Request bytes `b[start, end)` (a view into the read buffer: copied if kept). */
  onData(b: Uint8Array, start: number, end: number): void {
    while (start < end && !this.#discard && !this.done) {
      const msg = this.#msg;
      if (msg === undefined) {
        let flag: number, len: number;
        if (this.#prefixLen === 0 && end - start >= 5) {
          flag = b[start]!;
          len = ((b[start + 1]! << 24) >>> 0) + (b[start + 2]! << 16) + (b[start + 3]! << 8) +
            b[start + 4]!;
          start += 5;
        } else {
          const n = Math.min(5 - this.#prefixLen, end - start);
          (this.#prefix ??= new Uint8Array(5)).set(b.subarray(start, start + n), this.#prefixLen);
          this.#prefixLen += n;
          start += n;
          if (this.#prefixLen < 5) return;
          this.#prefixLen = 0;
          const p = this.#prefix!;
          flag = p[0]!;
          len = ((p[1]! << 24) >>> 0) + (p[2]! << 16) + (p[3]! << 8) + p[4]!;
        }
        if (flag !== 0) {
          this.#discard = true;
          this.sendStatus(
            grpc.status.UNIMPLEMENTED,
            flag === 1
              ? 'Received a compressed message but no grpc-encoding was negotiated ("identity")'
              : `Received a message with an unknown flags byte ${flag}`,
          );
          return;
        }
        const max = this.#c.server.opts.maxReceiveMessageBytes;
        if (len > max) {
          this.#discard = true;
          this.sendStatus(
            grpc.status.RESOURCE_EXHAUSTED,
            `Received message larger than max (${len} vs ${max})`,
          );
          return;
        }
        if (end - start >= len) {
          const m = Buffer.allocUnsafe(len);
          m.set(b.subarray(start, start + len));
          start += len;
          this.#deliver(m);
          continue;
        }
        this.#msg = Buffer.allocUnsafe(len);
        this.#msgFilled = 0;
        continue;
      }
      const n = Math.min(msg.length - this.#msgFilled, end - start);
      msg.set(b.subarray(start, start + n), this.#msgFilled);
      this.#msgFilled += n;
      start += n;
      if (this.#msgFilled === msg.length) {
        this.#msg = undefined;
        this.#deliver(msg);
      }
    }
  }

  #deliver(bytes: Buffer): void {
    const m = this.method!;
    let msg: unknown;
    try {
      msg = m.deserialize(bytes);
    } catch (e) {
      this.#discard = true;
      this.sendStatus(
        grpc.status.INTERNAL,
        `Error deserializing request: ${e instanceof Error ? e.message : String(e)}`,
      );
      return;
    }
    this.#received++;
    const call = this.call!;
    if (m.kind === "unary" || m.kind === "serverStream") {
      if (this.#received > 1) {
        this.#discard = true;
        this.sendStatus(
          grpc.status.UNIMPLEMENTED,
          `Received a second request message for server streaming method ${m.path}`,
        );
        return;
      }
      call.request = msg;
      return;
    }
    call.deliver(msg);
  }

  /** The client half-closed (END_STREAM). */
  onRemoteEnd(): void {
    if (!this.remoteOpen) return;
    this.remoteOpen = false;
    if (this.done) {
      this.#c.removeStream(this);
      return;
    }
    const m = this.method!;
    const call = this.call!;
    if (this.#msg !== undefined || this.#prefixLen !== 0) {
      this.sendStatus(grpc.status.INTERNAL, "Request ended in the middle of a message");
      return;
    }
    if (m.kind === "unary" || m.kind === "serverStream") {
      if (this.#received === 0) {
        this.sendStatus(
          grpc.status.UNIMPLEMENTED,
          `Received no request message for server streaming method ${m.path}`,
        );
        return;
      }
      this.#invoke(call);
      return;
    }
    call.deliverEnd();
  }

  /** Calls the handler of a unary or server-streaming call (its request is complete). */
  #invoke(call: ServerCall): void {
    const m = this.method!;
    try {
      if (m.kind === "unary") m.handler(call, this.#callback(call));
      else m.handler(call);
    } catch (e) {
      this.#handlerThrew(e);
    }
  }

  /** Starts a client- or bidi-streaming call (its handler attaches listeners). */
  start(): void {
    const m = this.method!;
    const call = this.call!;
    try {
      if (m.kind === "clientStream") m.handler(call, this.#callback(call));
      else if (m.kind === "bidi") m.handler(call);
    } catch (e) {
      this.#handlerThrew(e);
    }
  }

  #handlerThrew(e: unknown): void {
    this.sendStatus(
      grpc.status.UNKNOWN,
      `Server method handler threw error ${e instanceof Error ? e.message : String(e)}`,
    );
  }

  #callback(call: ServerCall) {
    return (err: unknown, value?: unknown, trailer?: grpc.Metadata) => {
      if (this.done || call.cancelled) return;
      if (err !== null && err !== undefined) {
        const s = statusOf(err);
        this.sendStatus(s.code, s.details, s.metadata);
        return;
      }
      if (this.sendMessageOk(value)) this.sendStatus(grpc.status.OK, "OK", trailer);
    };
  }

  // --- output --------------------------------------------------------------------------------

  /** CallSink: sends initial metadata with the response headers. */
  sendMetadata(md: grpc.Metadata): void {
    if (this.headersSent || this.done) return;
    this.#initialMetadata = md;
    this.#sendHeaders();
  }

  #sendHeaders(): void {
    this.headersSent = true;
    let block = RESPONSE_HEADERS;
    const md = this.#initialMetadata;
    if (md !== undefined) {
      const h: Array<[string, string]> = [[":status", "200"], ["content-type", "application/grpc"]];
      _appendMetadata(h, md);
      block = _encodeOr(h, true);
    }
    this.#c.headerBlock(this.id, FLAG_END_HEADERS, block);
  }

  /** CallSink: serializes and queues a message; false when above the high-water mark. */
  sendMessage(value: unknown): boolean {
    this.sendMessageOk(value);
    return this.#c.pressure(this) < this.#c.server.opts.writeHighWaterMark || this.done;
  }

  /** Serializes and queues a message; false when it failed (the call then ended). */
  sendMessageOk(value: unknown): boolean {
    if (this.done) return false;
    let bytes: Uint8Array;
    try {
      bytes = this.method!.serialize(value);
    } catch (e) {
      this.sendStatus(
        grpc.status.INTERNAL,
        `Error serializing response: ${e instanceof Error ? e.message : String(e)}`,
      );
      return false;
    }
    const max = this.#c.server.opts.maxSendMessageBytes;
    if (bytes.length > max) {
      this.sendStatus(
        grpc.status.RESOURCE_EXHAUSTED,
        `Sent message larger than max (${bytes.length} vs. ${max})`,
      );
      return false;
    }
    if (!this.headersSent) this.#sendHeaders();
    this.#c.sendData(this, bytes);
    return true;
  }

  /** CallSink: ends the call with a status. */
  sendStatus(code: number, details: string, metadata?: grpc.Metadata): void {
    if (this.done) return;
    this.done = true;
    this.#c.server.unwatchDeadline(this);
    let block: Uint8Array;
    if (!this.headersSent) {
      // Trailers-Only.
      this.headersSent = true;
      const h: Array<[string, string]> = [
        [":status", "200"],
        ["content-type", "application/grpc"],
        ["grpc-status", String(code)],
      ];
      if (details !== "" && code !== 0) h.push(["grpc-message", encodeGrpcMessage(details)]);
      if (this.#initialMetadata !== undefined) _appendMetadata(h, this.#initialMetadata);
      if (metadata !== undefined) _appendMetadata(h, metadata);
      block = _encodeOr(h, true);
    } else if (code === 0 && (metadata === undefined || _isEmpty(metadata))) {
      block = OK_TRAILERS;
    } else {
      const h: Array<[string, string]> = [["grpc-status", String(code)]];
      if (details !== "" && code !== 0) h.push(["grpc-message", encodeGrpcMessage(details)]);
      if (metadata !== undefined) _appendMetadata(h, metadata);
      block = _encodeOr(h, false);
    }
    if (this.queue.length > 0) this.pendingTrailers = block;
    else this.#c.finishStream(this, block);
  }

  /** The deadline passed before the call ended. */
  deadlineExceeded(): void {
    if (this.done) return;
    this.sendStatus(grpc.status.DEADLINE_EXCEEDED, "Deadline exceeded");
    this.call?.cancel();
  }
}

/**
 * Encodes a header list; metadata that HPACK cannot carry (a char above U+00FF, an uppercase
 * name) must not throw into a handler's callback: the call then ends with INTERNAL instead.
 */
function _encodeOr(h: Array<[string, string]>, withStatus: boolean): Uint8Array {
  try {
    return encodeHeaders(h);
  } catch {
    const f: Array<[string, string]> = withStatus
      ? [[":status", "200"], ["content-type", "application/grpc"]]
      : [];
    f.push(["grpc-status", String(grpc.status.INTERNAL)]);
    f.push(["grpc-message", "response metadata cannot be encoded"]);
    return encodeHeaders(f);
  }
}

function _appendMetadata(h: Array<[string, string]>, md: grpc.Metadata): void {
  const obj = md.toHttp2Headers() as Record<string, string | string[] | undefined>;
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) { for (const x of v) h.push([k, String(x)]); }
    else h.push([k, String(v)]);
  }
}

function _isEmpty(md: grpc.Metadata): boolean {
  for (const _ in md.getMap()) return false;
  return true;
}
