/**
 * The call objects the h2 gRPC server hands to service handlers: the subset of grpc-js's
 * `ServerUnaryCall`, `ServerReadableStream` and `ServerDuplexStream` that ConcordKV's handlers
 * use (`request`, `metadata`, `getDeadline()`, `getPeer()`, `cancelled`, EventEmitter-style
 * `on`/`once`/`off`/`emit` for "data", "end", "error", "close", "drain", "cancelled",
 * `write()` with back-pressure, `end()`, and `emit("error", {code, details})` to end the call
 * with a status, as grpc-js does).
 *
 * The HTTP/2 side is behind {@linkcode CallSink}; server.ts implements it per stream.
 *
 * @example
 * ```ts ignore
 * const call = new ServerCall(sink, "bidi", headers, deadline);
 * call.on("data", (m) => call.write(m));
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";

/** What a call needs from its HTTP/2 stream. */
export interface CallSink {
  /** Serializes and queues one response message; false when above the high-water mark. */
  sendMessage(message: unknown): boolean;
  /** Ends the call with a status (and trailing metadata); later calls are ignored. */
  sendStatus(code: number, details: string, metadata?: grpc.Metadata): void;
  /** Initial metadata for the response headers, if they were not sent yet. */
  sendMetadata(metadata: grpc.Metadata): void;
  /** The client's address, "host:port". */
  readonly peer: string;
}

/** The kinds of gRPC method. */
export type CallKind = "unary" | "clientStream" | "serverStream" | "bidi";

/** A status error as handlers produce it (grpc-js `ServiceError`-like). */
export interface StatusLike {
  code?: unknown;
  details?: unknown;
  message?: unknown;
  metadata?: unknown;
}

// deno-lint-ignore no-explicit-any
type Listener = (...args: any[]) => void;

/** Headers that are HTTP/2 or gRPC transport headers, not call metadata. */
const _TRANSPORT_HEADERS = new Set([
  "te",
  "content-type",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "connection",
]);

/** Converts a handler's error into a status (grpc-js `serverErrorToStatus` semantics). */
export function statusOf(
  err: unknown,
): { code: number; details: string; metadata: grpc.Metadata | undefined } {
  const e = (typeof err === "object" && err !== null ? err : {}) as StatusLike;
  const code = typeof e.code === "number" && Number.isInteger(e.code) && e.code >= 0 &&
      e.code <= 16
    ? e.code
    : grpc.status.UNKNOWN;
  const details = typeof e.details === "string"
    ? e.details
    : typeof e.message === "string"
    ? e.message
    : typeof err === "string"
    ? err
    : "Unknown Error";
  const metadata = e.metadata instanceof grpc.Metadata ? e.metadata : undefined;
  return { code, details, metadata };
}

/**
 * One server call. Unary handlers see `request`; streaming handlers get "data" events (one per
 * request message), "end" when the client half-closes, "cancelled"/"error"/"close" when the
 * client cancels or the connection drops.
 */
export class ServerCall {
  /** The request message (unary and server-streaming calls). */
  request: unknown = undefined;
  /** Whether the client cancelled the call (RST_STREAM, connection loss, deadline). */
  cancelled = false;
  readonly #sink: CallSink;
  readonly kind: CallKind;
  /** Request header fields, flat: `[name0, value0, name1, value1, ...]`. */
  readonly #headers: readonly string[];
  readonly #deadline: number;
  #metadata: grpc.Metadata | undefined;
  #listeners: Map<string, Listener[]> | undefined;
  /** Messages that arrived before a "data" listener was attached. */
  #pendingData: unknown[] | undefined;
  #pendingEnd = false;
  #closed = false;

  constructor(
    sink: CallSink,
    kind: CallKind,
    headers: readonly string[],
    deadline: number,
  ) {
    this.#sink = sink;
    this.kind = kind;
    this.#headers = headers;
    this.#deadline = deadline;
  }

  /** The request metadata (built on first access; `-bin` values base64-decoded). */
  get metadata(): grpc.Metadata {
    if (this.#metadata !== undefined) return this.#metadata;
    const md = new grpc.Metadata();
    const h = this.#headers;
    for (let i = 0; i < h.length; i += 2) {
      const k = h[i]!;
      const v = h[i + 1]!;
      if (k.startsWith(":") || _TRANSPORT_HEADERS.has(k)) continue;
      try {
        if (k.endsWith("-bin")) {
          for (const part of v.split(",")) md.add(k, Buffer.from(part.trim(), "base64"));
        } else {
          md.add(k, v);
        }
      } catch {
        // an invalid key or value is left out, as grpc-js does
      }
    }
    this.#metadata = md;
    return md;
  }

  /** The call's deadline in epoch milliseconds (Infinity when the client set none): no Date. */
  get deadlineMs(): number {
    return this.#deadline;
  }

  /** The call's deadline: a Date, or Infinity when the client set none. */
  getDeadline(): Date | number {
    return Number.isFinite(this.#deadline) ? new Date(this.#deadline) : Infinity;
  }

  /** The client's address ("host:port"). */
  getPeer(): string {
    return this.#sink.peer;
  }

  /** Sends the response headers with this initial metadata (before the first message). */
  sendMetadata(md: grpc.Metadata): void {
    this.#sink.sendMetadata(md);
  }

  /** Writes one response message; false when the caller should wait for "drain". */
  write(message: unknown, cb?: () => void): boolean {
    const ok = this.#sink.sendMessage(message);
    if (cb !== undefined) queueMicrotask(cb);
    return ok;
  }

  /** Ends the call with status OK (optionally with trailing metadata). */
  end(metadata?: grpc.Metadata): void {
    this.#sink.sendStatus(grpc.status.OK, "OK", metadata);
  }

  /** Adds a listener. */
  on(event: string, fn: Listener): this {
    const m = this.#listeners ??= new Map();
    const list = m.get(event);
    if (list === undefined) m.set(event, [fn]);
    else list.push(fn);
    if (event === "data" && this.#pendingData !== undefined) {
      const msgs = this.#pendingData;
      this.#pendingData = undefined;
      queueMicrotask(() => {
        for (const msg of msgs) this.dispatch("data", msg);
        if (this.#pendingEnd) {
          this.#pendingEnd = false;
          this.dispatch("end");
        }
      });
    }
    return this;
  }

  /** Same as {@linkcode ServerCall.on}. */
  addListener(event: string, fn: Listener): this {
    return this.on(event, fn);
  }

  /** Adds a listener called at most once. */
  once(event: string, fn: Listener): this {
    const w: Listener = (...args) => {
      this.off(event, w);
      fn(...args);
    };
    return this.on(event, w);
  }

  /** Removes a listener. */
  off(event: string, fn: Listener): this {
    const list = this.#listeners?.get(event);
    if (list !== undefined) {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  /** Same as {@linkcode ServerCall.off}. */
  removeListener(event: string, fn: Listener): this {
    return this.off(event, fn);
  }

  /** Removes every listener of an event (or of all events). */
  removeAllListeners(event?: string): this {
    if (event === undefined) this.#listeners = undefined;
    else this.#listeners?.delete(event);
    return this;
  }

  /** Number of listeners of an event. */
  listenerCount(event: string): number {
    return this.#listeners?.get(event)?.length ?? 0;
  }

  /**
   * Emits an event to the listeners. As in grpc-js, a handler emitting "error" with
   * `{code, details, metadata}` ends the call with that status.
   */
  emit(event: string, ...args: unknown[]): boolean {
    if (event === "error") {
      const s = statusOf(args[0]);
      this.#sink.sendStatus(s.code, s.details, s.metadata);
    }
    return this.dispatch(event, ...args);
  }

  /** Calls the listeners of an event (server side; never ends the call). */
  dispatch(event: string, ...args: unknown[]): boolean {
    const list = this.#listeners?.get(event);
    if (list === undefined || list.length === 0) return false;
    for (const fn of list.length === 1 ? list : list.slice()) {
      try {
        fn(...args);
      } catch (e) {
        // A throwing listener must not take the connection down; end the call instead.
        this.#sink.sendStatus(grpc.status.UNKNOWN, `handler threw: ${String(e)}`);
      }
    }
    return true;
  }

  /** Delivers one request message of a streaming call. */
  deliver(message: unknown): void {
    if (this.listenerCount("data") === 0) {
      (this.#pendingData ??= []).push(message);
      return;
    }
    this.dispatch("data", message);
  }

  /** The client half-closed a streaming call. */
  deliverEnd(): void {
    if (this.#pendingData !== undefined) {
      this.#pendingEnd = true;
      return;
    }
    this.dispatch("end");
  }

  /** The call was cancelled by the client, the connection, or its deadline. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.dispatch("cancelled", "cancelled");
    if (this.kind !== "unary") {
      this.dispatch("error", { code: grpc.status.CANCELLED, details: "Cancelled" });
    }
    this.close();
  }

  /** The call is over (status sent or cancelled): "close", once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.kind === "unary") return;
    queueMicrotask(() => this.dispatch("close"));
  }
}
