/**
 * The two systems behind one small interface: ConcordKV's `kvstore.KVStore` (Put/Get) and etcd's
 * `etcdserverpb.KV` (Put/Range). Both go through the same {@linkcode GrpcPool}: several grpc-js
 * channels per endpoint (each with its own HTTP/2 connection), unary calls with a deadline, and a
 * round-robin pick per call. The only per-system code is the request shape.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  encodeConcordGet,
  encodeEtcdRange,
  encodePut,
  H2Channel,
  scanFields,
} from "./load_h2_client.ts";

/**
 * The systems the benchmark knows: ConcordKV, etcd, and two single-process in-memory KVStore stubs
 * that measure the gRPC server stack alone (`stub`: grpc-js; `h2stub`: raw HTTP/2 on Deno.listen).
 */
export type SystemName = "concordkv" | "etcd" | "stub" | "h2stub";

/** What a load loop needs from a key-value store. */
export interface KvAdapter {
  /** Writes `value` under `key`; rejects on any error. */
  put(key: Uint8Array, value: Uint8Array): Promise<void>;
  /** Reads `key` (linearizable unless `serializable`); resolves whether it was found. */
  get(key: Uint8Array, serializable: boolean): Promise<boolean>;
  /** Closes every channel. */
  close(): void;
}

/** How to connect. */
export interface AdapterOptions {
  /** `host:port` endpoints; calls are spread over all of them. */
  endpoints: string[];
  /** grpc-js channels (connections) per endpoint. Default 4. */
  channelsPerEndpoint?: number;
  /** Per-call deadline. Default 10 s. */
  timeoutMs?: number;
  /**
   * The gRPC client: `grpc-js` (default) or `h2`, the lean one in bench/load_h2_client.ts. Both
   * systems are always driven by the same one.
   */
  client?: ClientKind;
}

/** The gRPC clients the load generator can use. */
export type ClientKind = "grpc-js" | "h2";

/** The client kinds, for option parsing. */
export const CLIENT_KINDS: readonly ClientKind[] = ["grpc-js", "h2"];

type Callback = (err: grpc.ServiceError | null, res?: unknown) => void;
type Unary = (req: unknown, opts: grpc.CallOptions, cb: Callback) => void;
// deno-lint-ignore no-explicit-any
type AnyClient = grpc.Client & Record<string, any>;

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  // 64-bit ids (etcd member ids) do not fit a double.
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
};

// deno-lint-ignore no-explicit-any
const packages = new Map<string, any>();

/** Loads a proto file (cached) and returns the grpc package object. */
// deno-lint-ignore no-explicit-any
export function loadProto(path: string): any {
  let pkg = packages.get(path);
  if (pkg === undefined) {
    pkg = grpc.loadPackageDefinition(protoLoader.loadSync(path, LOADER_OPTIONS));
    packages.set(path, pkg);
  }
  return pkg;
}

/** Path of ConcordKV's client proto. */
export const KVSTORE_PROTO = new URL("../protos/kvstore.proto", import.meta.url).pathname;
/** Path of the benchmark's minimal etcd proto. */
export const ETCD_PROTO = new URL("./protos/etcd_kv.proto", import.meta.url).pathname;

/**
 * A pool of grpc-js clients of one service: `channelsPerEndpoint` separate connections to each
 * endpoint, picked round-robin.
 */
export class GrpcPool {
  #clients: AnyClient[] = [];
  #next = 0;
  #timeoutMs: number;

  constructor(
    // deno-lint-ignore no-explicit-any
    ctor: any,
    opts: AdapterOptions,
  ) {
    const perEndpoint = opts.channelsPerEndpoint ?? 4;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    for (const endpoint of opts.endpoints) {
      for (let i = 0; i < perEndpoint; i++) {
        // A local subchannel pool gives every client its own HTTP/2 connection.
        this.#clients.push(
          new ctor(endpoint, grpc.credentials.createInsecure(), {
            "grpc.use_local_subchannel_pool": 1,
            "grpc.max_receive_message_length": 64 * 1024 * 1024,
          }),
        );
      }
    }
  }

  /** One unary call of `method` on the next client. */
  call<T>(method: string, req: unknown): Promise<T> {
    const client = this.#clients[this.#next]!;
    this.#next = (this.#next + 1) % this.#clients.length;
    const fn = client[method] as Unary;
    return new Promise<T>((resolve, reject) => {
      fn.call(client, req, { deadline: Date.now() + this.#timeoutMs }, (err, res) => {
        if (err) reject(err);
        else resolve(res as T);
      });
    });
  }

  /** Waits until every channel is connected (or throws after `timeoutMs`). */
  async ready(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await Promise.all(
      this.#clients.map((c) =>
        new Promise<void>((resolve, reject) =>
          c.waitForReady(deadline, (err?: Error) => err ? reject(err) : resolve())
        )
      ),
    );
  }

  /** Closes every client. */
  close(): void {
    for (const c of this.#clients) c.close();
    this.#clients = [];
  }
}

/** ConcordKV through `kvstore.KVStore`. */
export class ConcordKvAdapter implements KvAdapter {
  #pool: GrpcPool;

  constructor(opts: AdapterOptions) {
    this.#pool = new GrpcPool(loadProto(KVSTORE_PROTO).kvstore.KVStore, opts);
  }

  /** Waits for every channel. */
  ready(timeoutMs?: number): Promise<void> {
    return this.#pool.ready(timeoutMs);
  }

  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    const res = await this.#pool.call<{ success?: boolean }>("Put", { key, value });
    if (res.success === false) throw new Error("Put answered success=false");
  }

  async get(key: Uint8Array, serializable: boolean): Promise<boolean> {
    const res = await this.#pool.call<{ found?: boolean }>("Get", { key, serializable });
    return res.found === true;
  }

  close(): void {
    this.#pool.close();
  }
}

/** etcd through `etcdserverpb.KV`. */
export class EtcdAdapter implements KvAdapter {
  #pool: GrpcPool;

  constructor(opts: AdapterOptions) {
    this.#pool = new GrpcPool(loadProto(ETCD_PROTO).etcdserverpb.KV, opts);
  }

  /** Waits for every channel. */
  ready(timeoutMs?: number): Promise<void> {
    return this.#pool.ready(timeoutMs);
  }

  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.#pool.call("Put", { key, value });
  }

  async get(key: Uint8Array, serializable: boolean): Promise<boolean> {
    const res = await this.#pool.call<{ kvs?: unknown[] }>("Range", { key, serializable });
    return (res.kvs?.length ?? 0) > 0;
  }

  close(): void {
    this.#pool.close();
  }
}

/**
 * `channelsPerEndpoint` {@linkcode H2Channel}s to each endpoint, picked round-robin: the same
 * shape as {@linkcode GrpcPool}, for the lean client.
 */
export class H2Pool {
  #endpoints: string[] = [];
  #channels: H2Channel[] = [];
  #next = 0;
  #timeoutMs: number;

  constructor(opts: AdapterOptions) {
    const perEndpoint = opts.channelsPerEndpoint ?? 4;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    for (const e of opts.endpoints) for (let i = 0; i < perEndpoint; i++) this.#endpoints.push(e);
  }

  /** Connects every channel (throws if one does not connect within `timeoutMs`). */
  async ready(timeoutMs = 10_000): Promise<void> {
    if (this.#channels.length > 0) return;
    let timer = 0;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`not connected within ${timeoutMs} ms`)),
        timeoutMs,
      ) as unknown as number;
    });
    const dialing = Promise.all(this.#endpoints.map((e) => H2Channel.connect(e)));
    try {
      this.#channels = await Promise.race([dialing, timeout]);
    } catch (e) {
      dialing.then((cs) => cs.forEach((c) => c.close()), () => {});
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One unary call on the next channel; resolves with the reply message. */
  call(path: string, request: Uint8Array): Promise<Uint8Array> {
    const c = this.#channels[this.#next];
    if (c === undefined) return Promise.reject(new Error("H2Pool: ready() was not awaited"));
    this.#next = (this.#next + 1) % this.#channels.length;
    return c.unary(path, request, this.#timeoutMs);
  }

  /** Closes every channel. */
  close(): void {
    for (const c of this.#channels) c.close();
    this.#channels = [];
  }
}

/** What both lean-client adapters share: the pool, `ready` and `close`. */
abstract class H2Adapter implements KvAdapter {
  protected readonly pool: H2Pool;

  constructor(opts: AdapterOptions) {
    this.pool = new H2Pool(opts);
  }

  /** Connects every channel. */
  ready(timeoutMs?: number): Promise<void> {
    return this.pool.ready(timeoutMs);
  }

  abstract put(key: Uint8Array, value: Uint8Array): Promise<void>;
  abstract get(key: Uint8Array, serializable: boolean): Promise<boolean>;

  close(): void {
    this.pool.close();
  }
}

/** ConcordKV through the lean client. */
export class ConcordKvH2Adapter extends H2Adapter {
  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    const res = await this.pool.call("/kvstore.KVStore/Put", encodePut(key, value));
    if (scanFields(res, 1).value !== 1) throw new Error("Put answered success=false");
  }

  async get(key: Uint8Array, serializable: boolean): Promise<boolean> {
    const res = await this.pool.call("/kvstore.KVStore/Get", encodeConcordGet(key, serializable));
    return scanFields(res, 2).value === 1;
  }
}

/** etcd through the lean client. */
export class EtcdH2Adapter extends H2Adapter {
  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.pool.call("/etcdserverpb.KV/Put", encodePut(key, value));
  }

  async get(key: Uint8Array, serializable: boolean): Promise<boolean> {
    const res = await this.pool.call("/etcdserverpb.KV/Range", encodeEtcdRange(key, serializable));
    return scanFields(res, -1, 2).count > 0;
  }
}

/** Creates the adapter of `system` (with the client `opts.client`, grpc-js by default). */
export function createAdapter(
  system: SystemName,
  opts: AdapterOptions,
): KvAdapter & { ready(timeoutMs?: number): Promise<void> } {
  if (opts.client === "h2") {
    return system === "etcd" ? new EtcdH2Adapter(opts) : new ConcordKvH2Adapter(opts);
  }
  return system === "etcd" ? new EtcdAdapter(opts) : new ConcordKvAdapter(opts);
}

/** A short description of a gRPC error for the error tally, e.g. `UNAVAILABLE`. */
export function errorKind(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "number") return grpc.status[code] ?? `CODE_${code}`;
  return e instanceof Error ? e.name : "Error";
}
