/**
 * A gRPC server speaking HTTP/2 (h2c with prior knowledge, RFC 9113 §3.3) directly on
 * `Deno.listen`: the node's server for `kvstore.KVStore` and `raft.Raft` on one port. It replaces
 * grpc-js's server on Deno's `node:http2`, which wrote every frame with its own socket write
 * (≈3.6 writes per unary response; bench/PROFILE.md).
 *
 * Shape: a drop-in for the subset of `grpc.Server` that server/node.ts uses:
 * {@linkcode H2Server.addService} takes proto-loader service definitions and handler objects
 * (unary `(call, callback)`, client-streaming, server-streaming and bidi-streaming handlers see
 * call objects from call.ts), {@linkcode H2Server.listen} binds (throwing `Deno.errors.AddrInUse`
 * on a used port), {@linkcode H2Server.tryShutdown} sends GOAWAY and lets in-flight calls finish,
 * {@linkcode H2Server.forceShutdown} drops every connection.
 *
 * Per connection:
 * - Input: one socket read is parsed as a run of frames in a loop; payloads are views into the
 *   read buffer (only a partial frame at the end of a read is copied, and each gRPC message is
 *   copied once into its own buffer before it is decoded).
 * - Output: every frame produced for the connection is appended to one buffer; at most one
 *   `conn.write` is in flight, and it carries everything produced since the previous one (all the
 *   responses a Raft apply batch completes go out in one write). The flush is scheduled as a
 *   microtask by default ({@linkcode H2ServerOptions.flush}).
 * - Flow control: we announce a large stream window ({@linkcode H2ServerOptions.streamWindow})
 *   and grant a large connection window up front, replenishing both as DATA arrives. On the send
 *   side the client's stream and connection windows are obeyed: DATA that does not fit waits in
 *   the stream's queue until WINDOW_UPDATE (or a SETTINGS change) opens the window; the trailers
 *   wait behind it.
 * - Errors: a malformed frame ends the connection with GOAWAY and the RFC's error code, or the
 *   stream with RST_STREAM; gRPC-level problems end the call with a status (UNIMPLEMENTED for an
 *   unknown path or a compressed message, RESOURCE_EXHAUSTED for a message over the limit,
 *   INTERNAL for an undecodable one unless the service definition tolerates it, DEADLINE_EXCEEDED
 *   after `grpc-timeout`). Buffers are bounded by the frame size, the header list size and the
 *   message size limit.
 *
 * @example
 * ```ts ignore
 * const server = new H2Server({ maxReceiveMessageBytes: 16 << 20 });
 * server.addService(kvstorePackage().KVStore.service, handlers);
 * const port = await server.listen({ hostname: "127.0.0.1", port: 50051 });
 * server.tryShutdown(() => console.log("stopped"));
 * ```
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Buffer } from "node:buffer";
import type { CallKind } from "./call.ts";
import { H2Conn } from "./conn.ts";
import type { H2Stream } from "./stream.ts";

/** Options of an {@linkcode H2Server}. */
export interface H2ServerOptions {
  /** Largest request message accepted (RESOURCE_EXHAUSTED above it). Default 4 MiB. */
  maxReceiveMessageBytes?: number;
  /** Largest response message sent (RESOURCE_EXHAUSTED above it). Default unlimited. */
  maxSendMessageBytes?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond are refused. Default 1000. */
  maxConcurrentStreams?: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE we announce (per-stream receive window). Default 4 MiB. */
  streamWindow?: number;
  /** Connection receive window granted up front. Default 16 MiB. */
  connectionWindow?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE. Default 64 KiB. */
  maxHeaderListSize?: number;
  /**
   * When the frames a connection produced are written: `"microtask"` (default) after the current
   * macrotask's synchronous work and its promise callbacks, `"timeout"` in a `setTimeout(0)`.
   * Frames produced while a write is in flight always go in the next write.
   */
  flush?: "microtask" | "timeout";
  /** A streaming call's `write()` returns false while this many bytes wait. Default 1 MiB. */
  writeHighWaterMark?: number;
  /**
   * A connection that has not sent the whole HTTP/2 connection preface this many ms after it was
   * accepted is closed (a slow or idle opener must not hold a socket forever). Default 10 s.
   */
  prefaceTimeoutMs?: number;
  /**
   * Plain HTTP/1.1 `GET` requests on the same port (a connection whose first bytes are `GET `
   * rather than the HTTP/2 preface), as etcd serves `/metrics` and `/health` on its client port:
   * called with the request's path, it returns the response (or undefined: 404). The connection
   * answers that one request and closes. Without it such a connection is a bad preface.
   */
  http1?: (path: string) => Http1Response | undefined;
}

/** A response to a plain HTTP/1.1 GET ({@linkcode H2ServerOptions.http1}). */
export interface Http1Response {
  status: number;
  contentType: string;
  body: string;
}

/** Everything the server knows about one method. */
export interface H2Method {
  readonly path: string;
  readonly kind: CallKind;
  readonly deserialize: (b: Buffer) => unknown;
  readonly serialize: (v: unknown) => Uint8Array;
  // deno-lint-ignore no-explicit-any
  readonly handler: (...args: any[]) => unknown;
}

/** How often calls are checked against their deadlines. */
const DEADLINE_SWEEP_MS = 20;

/** A gRPC server on HTTP/2 (see the module documentation). */
export class H2Server {
  readonly #methods = new Map<string, H2Method>();
  readonly #conns = new Set<H2Conn>();
  readonly opts: Required<Omit<H2ServerOptions, "http1">> & Pick<H2ServerOptions, "http1">;
  #listener: Deno.TcpListener | undefined;
  #shutdownCb: (() => void)[] = [];
  #shuttingDown = false;
  readonly #deadlines = new Set<H2Stream>();
  #sweep: ReturnType<typeof setInterval> | undefined;

  constructor(opts: H2ServerOptions = {}) {
    this.opts = {
      maxReceiveMessageBytes: opts.maxReceiveMessageBytes ?? 4 * 1024 * 1024,
      maxSendMessageBytes: opts.maxSendMessageBytes ?? Infinity,
      maxConcurrentStreams: opts.maxConcurrentStreams ?? 1000,
      streamWindow: opts.streamWindow ?? 4 * 1024 * 1024,
      connectionWindow: opts.connectionWindow ?? 16 * 1024 * 1024,
      maxHeaderListSize: opts.maxHeaderListSize ?? 64 * 1024,
      flush: opts.flush ?? "microtask",
      writeHighWaterMark: opts.writeHighWaterMark ?? 1024 * 1024,
      prefaceTimeoutMs: opts.prefaceTimeoutMs ?? 10_000,
      http1: opts.http1,
    };
  }

  /**
   * Registers a service: `def` is a proto-loader (or grpc-js) service definition, `impl` maps
   * method names (or their original names) to handlers. Methods without a handler answer
   * UNIMPLEMENTED.
   */
  addService(def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    for (const [name, m] of Object.entries(def)) {
      const orig = (m as { originalName?: string }).originalName;
      const handler = impl[name] ?? (orig !== undefined ? impl[orig] : undefined);
      if (typeof handler !== "function") continue;
      const kind: CallKind = m.requestStream
        ? (m.responseStream ? "bidi" : "clientStream")
        : (m.responseStream ? "serverStream" : "unary");
      if (this.#methods.has(m.path)) throw new Error(`method ${m.path} added twice`);
      this.#methods.set(m.path, {
        path: m.path,
        kind,
        deserialize: m.requestDeserialize as (b: Buffer) => unknown,
        serialize: m.responseSerialize as (v: unknown) => Uint8Array,
        // deno-lint-ignore no-explicit-any
        handler: handler as (...args: any[]) => unknown,
      });
    }
  }

  /** The method served at a path. */
  method(path: string): H2Method | undefined {
    return this.#methods.get(path);
  }

  /**
   * Listens on `hostname:port` (port 0: any free port) and starts accepting; resolves to the
   * port. A used port throws `Deno.errors.AddrInUse` ("Address already in use").
   */
  // deno-lint-ignore require-await
  async listen(addr: { hostname: string; port: number }): Promise<number> {
    if (this.#listener !== undefined) throw new Error("already listening");
    const l = Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" });
    this.#listener = l;
    this.#accept(l);
    return (l.addr as Deno.NetAddr).port;
  }

  async #accept(l: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await l.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
        if (this.#listener !== l) return;
        // EMFILE and the like: back off briefly instead of spinning.
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (this.#shuttingDown) {
        conn.close();
        continue;
      }
      const c = new H2Conn(this, conn);
      this.#conns.add(c);
      c.run().catch(() => {}).finally(() => {
        this.#conns.delete(c);
        this.#maybeShutdownDone();
      });
    }
  }

  #closeListener(): void {
    const l = this.#listener;
    this.#listener = undefined;
    try {
      l?.close();
    } catch {
      // already closed
    }
  }

  /**
   * Graceful shutdown: stop accepting, send GOAWAY on every connection, let the calls in flight
   * finish; `cb` runs once every connection closed.
   */
  tryShutdown(cb: (err?: Error) => void): void {
    this.#shuttingDown = true;
    this.#closeListener();
    this.#shutdownCb.push(() => cb());
    for (const c of this.#conns) c.goAway();
    this.#maybeShutdownDone();
  }

  /** Stops at once: every connection is closed and its calls cancelled. */
  forceShutdown(): void {
    this.#shuttingDown = true;
    this.#closeListener();
    for (const c of [...this.#conns]) c.destroy();
    this.#maybeShutdownDone();
  }

  #maybeShutdownDone(): void {
    if (!this.#shuttingDown || this.#conns.size > 0) return;
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    this.#sweep = undefined;
    const cbs = this.#shutdownCb;
    this.#shutdownCb = [];
    for (const cb of cbs) cb();
  }

  /** Tracks a call with a deadline. */
  watchDeadline(s: H2Stream): void {
    this.#deadlines.add(s);
    if (this.#sweep === undefined) {
      const t = setInterval(() => this.#sweepDeadlines(), DEADLINE_SWEEP_MS);
      this.#sweep = t;
      Deno.unrefTimer(t as unknown as number);
    }
  }

  /** Stops tracking a call's deadline. */
  unwatchDeadline(s: H2Stream): void {
    this.#deadlines.delete(s);
  }

  #sweepDeadlines(): void {
    if (this.#deadlines.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
      return;
    }
    const now = Date.now();
    for (const s of this.#deadlines) {
      if (s.deadline <= now) {
        this.#deadlines.delete(s);
        try {
          s.deadlineExceeded();
        } catch {
          // listeners are guarded in call.ts; nothing else may stop the sweep
        }
      }
    }
  }
}
