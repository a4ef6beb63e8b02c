/**
 * A single-attempt gRPC client for the chaos workload.
 *
 * Unlike `client/` (which retries, follows leaders and deduplicates), every call here is exactly
 * one RPC to one node with one deadline, so the workload knows precisely what a failure means:
 * {@linkcode classifyWriteError} turns a failed write into `fail` (definitely not applied) or
 * `unknown` (may have been applied).
 *
 * @example
 * ```ts
 * import { RawClient } from "./raw_client.ts";
 * const c = new RawClient(new Map([[1, "127.0.0.1:50051"]]));
 * const r = await c.call(1, "Get", { key: new TextEncoder().encode("k") }, 1000);
 * c.close();
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { kvstorePackage, type StatusResponse } from "../../server/proto.ts";

/** The result of one call. */
export type CallResult<T = Record<string, unknown>> =
  | { ok: true; res: T }
  | { ok: false; code: number; details: string; leaderHint: string | undefined };

type _Unary = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => grpc.ClientUnaryCall;

/** One stub per node; calls never retry. */
export class RawClient {
  readonly addresses: Map<number, string>;
  #stubs = new Map<number, grpc.Client>();
  #closed = false;

  constructor(addresses: Map<number, string>) {
    this.addresses = addresses;
  }

  #stub(node: number): grpc.Client {
    let s = this.#stubs.get(node);
    if (s === undefined) {
      const addr = this.addresses.get(node);
      if (addr === undefined) throw new Error(`no node ${node}`);
      s = new (kvstorePackage().KVStore)(addr, grpc.credentials.createInsecure(), {
        "grpc.initial_reconnect_backoff_ms": 50,
        "grpc.min_reconnect_backoff_ms": 50,
        "grpc.max_reconnect_backoff_ms": 500,
      });
      this.#stubs.set(node, s);
    }
    return s;
  }

  /** One RPC `method` to `node` with a deadline `timeoutMs` from now. */
  call<T = Record<string, unknown>>(
    node: number,
    method: string,
    req: unknown,
    timeoutMs: number,
  ): Promise<CallResult<T>> {
    if (this.#closed) {
      return Promise.resolve({
        ok: false,
        code: grpc.status.CANCELLED,
        details: "closed",
        leaderHint: undefined,
      });
    }
    const stub = this.#stub(node) as unknown as Record<string, _Unary>;
    const fn = stub[method];
    if (typeof fn !== "function") throw new Error(`no RPC ${method}`);
    return new Promise((resolve) => {
      fn.call(stub, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) {
          const hint = err.metadata?.get("concordkv-leader")?.[0];
          resolve({
            ok: false,
            code: err.code,
            details: err.details || grpc.status[err.code] || "error",
            leaderHint: hint === undefined || hint === "" ? undefined : String(hint),
          });
        } else resolve({ ok: true, res: res as T });
      });
    });
  }

  /** Node `node`'s Status, or undefined if it does not answer in time. */
  async status(node: number, timeoutMs = 500): Promise<StatusResponse | undefined> {
    const r = await this.call<StatusResponse>(node, "Status", {}, timeoutMs);
    return r.ok ? r.res : undefined;
  }

  /** Closes every channel; later calls fail with CANCELLED. */
  close(): void {
    this.#closed = true;
    for (const s of this.#stubs.values()) {
      try {
        s.close();
      } catch {
        // Best effort.
      }
    }
    this.#stubs.clear();
  }
}

/**
 * What a failed write means: `fail` only when the request certainly never reached the state
 * machine, `unknown` otherwise.
 *
 * - No connection could be established (grpc-js never sent the request) → `fail`.
 * - The node rejected the request before proposing it: INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
 *   FAILED_PRECONDITION, UNIMPLEMENTED, PERMISSION_DENIED, UNAUTHENTICATED → `fail`.
 * - Everything else → `unknown`: DEADLINE_EXCEEDED, CANCELLED, a dropped connection, and any
 *   UNAVAILABLE a node answers. A node queues a write before it knows whether it can commit it
 *   (a follower forwards it; a leader may lose leadership after appending it), and answers
 *   UNAVAILABLE ("no leader: timed out waiting for the write to commit") when its deadline
 *   passes — by then the write may be in some log and commit later, so it is not a failure.
 */
export function classifyWriteError(code: number, details: string): "fail" | "unknown" {
  switch (code) {
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.RESOURCE_EXHAUSTED:
    case grpc.status.FAILED_PRECONDITION:
    case grpc.status.UNIMPLEMENTED:
    case grpc.status.PERMISSION_DENIED:
    case grpc.status.UNAUTHENTICATED:
      return "fail";
    case grpc.status.UNAVAILABLE:
      return /^No connection established/i.test(details) ? "fail" : "unknown";
    default:
      return "unknown";
  }
}
