/**
 * The load generator: N concurrent client loops over a {@linkcode KvAdapter}, a warm-up, then a
 * measured window of fixed duration (or fixed op count), with latencies in a mergeable
 * {@linkcode Histogram}. {@linkcode LoadClient} runs the loops in the calling thread or spreads
 * them over Web Workers (one V8 isolate and event loop each, so one client is not capped at one
 * core) and merges their histograms.
 *
 * @module
 */
import { Histogram, type HistogramData, type LatencySummary } from "./load_stats.ts";
import {
  type AdapterOptions,
  createAdapter,
  errorKind,
  type KvAdapter,
  type SystemName,
} from "./load_adapters.ts";

/**
 * The workloads: `put` (write-only), `get` (linearizable reads), `get-ser` (serializable reads),
 * `mixed` (90 % linearizable reads, 10 % puts), `fill` (writes every key once, in order: the
 * preload before reads).
 */
export type Workload = "put" | "get" | "get-ser" | "mixed" | "fill";

/** All measured workloads, in table order. */
export const WORKLOADS: readonly Workload[] = ["put", "get", "get-ser", "mixed"];

/** One load run. */
export interface LoadSpec {
  workload: Workload;
  /** Key space size: keys `k/00000000` … `k/<keys-1>`. */
  keys: number;
  /** Value size in bytes. */
  valueSize: number;
  /** Concurrent client loops (each with at most one call in flight). */
  concurrency: number;
  /** Unmeasured warm-up before the window. */
  warmupMs: number;
  /** Length of the measured window (ignored when `ops` is set). */
  durationMs: number;
  /** Fixed number of measured operations instead of a duration. */
  ops?: number;
  /** Seed of the key choice. */
  seed?: number;
}

/** The outcome of a run (or of one worker's share of it). */
export interface LoadPart {
  /** Latencies (µs) of successful operations completed in the window. */
  hist: HistogramData;
  /** Successful operations completed in the window. */
  ops: number;
  /** Failed operations in the window. */
  errors: number;
  /** Failures by gRPC status name. */
  errorKinds: Record<string, number>;
  /** Measured window, ms. */
  windowMs: number;
  /** Reads that found no value (a preload problem if non-zero). */
  misses: number;
  /** How long this thread's event loop stood still during the window ({@linkcode StallMonitor}). */
  stall: StallSummary;
}

/** Event-loop stalls of a load thread during a window, ms. */
export interface StallSummary {
  /** The longest stall. */
  maxMs: number;
  /** All stalls longer than {@linkcode STALL_MIN_MS}, added up. */
  totalMs: number;
}

/**
 * A timer turn this much later than due counts as a stall. Deno's timers often run 1–2 ms late on
 * an idle thread (of a 2 ms interval timer's gaps over 3 ms in a one-client run, 2,752 of 3,085
 * were 3–4 ms), which this keeps out of the total.
 */
export const STALL_MIN_MS = 5;

/**
 * Watches the calling thread's event loop with a 5 ms interval timer: a turn that comes more than
 * {@linkcode STALL_MIN_MS} late means the thread could not run it (a GC pause, a long stretch of
 * callbacks, no free core), and every reply that arrived meanwhile waited as long before its
 * latency was taken. Scavenges of the load client itself (grpc-js on `node:http2`) take 10–45 ms
 * here (bench/PROFILE.md, session 7); at a few hundred clients the thread is busy all the time and
 * the total approaches the window.
 */
export class StallMonitor {
  #timer: ReturnType<typeof setInterval>;
  #last = performance.now();
  #maxMs = 0;
  #totalMs = 0;
  static readonly INTERVAL_MS = 5;

  constructor() {
    this.#timer = setInterval(() => this.#tick(), StallMonitor.INTERVAL_MS);
  }

  #tick(): void {
    const now = performance.now();
    const late = now - this.#last - StallMonitor.INTERVAL_MS;
    this.#last = now;
    if (late > STALL_MIN_MS) {
      this.#totalMs += late;
      if (late > this.#maxMs) this.#maxMs = late;
    }
  }

  /** Stops watching (counting a stall still in progress) and returns what was seen. */
  stop(): StallSummary {
    this.#tick();
    clearInterval(this.#timer);
    const r = (x: number) => Math.round(x * 10) / 10;
    return { maxMs: r(this.#maxMs), totalMs: r(this.#totalMs) };
  }
}

/** A finished run with percentiles. */
export interface LoadResult {
  ops: number;
  errors: number;
  errorKinds: Record<string, number>;
  seconds: number;
  /** Successful operations per second. */
  throughput: number;
  latencyMs: LatencySummary;
  misses: number;
  hist: HistogramData;
  /** The load threads' event-loop lag ({@linkcode StallMonitor}): the longest, and the largest per-thread total. */
  clientLag: StallSummary;
}

/** What part of a run one thread does. */
export interface LoadShare {
  concurrency: number;
  /** Measured operations for this share (fixed-count mode). */
  ops?: number;
  /** For `fill`: the half-open key range this share writes. */
  fillFrom?: number;
  fillTo?: number;
}

const encoder = new TextEncoder();

/** The key bytes of key number `i`. */
export function keyOf(i: number): Uint8Array {
  return encoder.encode(`k/${String(i).padStart(8, "0")}`);
}

/** Deterministic pseudo-random bytes (xorshift32), so that runs are comparable. */
export function valueOf(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed | 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Splits `total` into `parts` near-equal non-negative integers (larger ones first). */
export function splitEven(total: number, parts: number): number[] {
  const base = Math.floor(total / parts);
  const extra = total % parts;
  return Array.from({ length: parts }, (_, i) => base + (i < extra ? 1 : 0));
}

/** What the parts of a result add up to; `seconds` and `clientLag` are combined by the caller. */
interface _Sum {
  hist: Histogram;
  ops: number;
  errors: number;
  misses: number;
  errorKinds: Record<string, number>;
}

function _sum(
  items: Array<Pick<LoadPart, "hist" | "ops" | "errors" | "misses" | "errorKinds">>,
): _Sum {
  const sum: _Sum = { hist: new Histogram(), ops: 0, errors: 0, misses: 0, errorKinds: {} };
  for (const p of items) {
    sum.hist.merge(p.hist);
    sum.ops += p.ops;
    sum.errors += p.errors;
    sum.misses += p.misses;
    for (const [k, v] of Object.entries(p.errorKinds)) {
      sum.errorKinds[k] = (sum.errorKinds[k] ?? 0) + v;
    }
  }
  return sum;
}

function _result(sum: _Sum, seconds: number, clientLag: StallSummary): LoadResult {
  return {
    ops: sum.ops,
    errors: sum.errors,
    errorKinds: sum.errorKinds,
    seconds: Math.round(seconds * 1000) / 1000,
    throughput: seconds > 0 ? Math.round((sum.ops / seconds) * 10) / 10 : 0,
    latencyMs: sum.hist.summary(),
    misses: sum.misses,
    hist: sum.hist.toData(),
    clientLag,
  };
}

/**
 * Merges worker parts (run side by side) into one result: the window is the longest part's, the
 * client lag the longest stall and the worst thread's total.
 */
export function mergeParts(parts: LoadPart[]): LoadResult {
  const windowMs = Math.max(0, ...parts.map((p) => p.windowMs));
  return _result(_sum(parts), windowMs / 1000, {
    maxMs: Math.max(0, ...parts.map((p) => p.stall.maxMs)),
    totalMs: Math.max(0, ...parts.map((p) => p.stall.totalMs)),
  });
}

/**
 * Merges results of runs made one after the other (e.g. the two halves of a mirrored step):
 * counts, histograms and measured seconds add up, throughput is over the summed seconds; the
 * client lag is the longest stall and the summed totals.
 */
export function mergeRuns(runs: LoadResult[]): LoadResult {
  const seconds = runs.reduce((t, r) => t + r.seconds, 0);
  const total = runs.reduce((t, r) => t + r.clientLag.totalMs, 0);
  return _result(_sum(runs), seconds, {
    maxMs: Math.max(0, ...runs.map((r) => r.clientLag.maxMs)),
    totalMs: Math.round(total * 10) / 10,
  });
}

/**
 * Runs `share.concurrency` loops of `spec` against `adapter` in this thread. Loops start at
 * `startAt` (epoch ms, so that workers start together); the window opens after the warm-up.
 */
export async function runLoops(
  adapter: KvAdapter,
  spec: LoadSpec,
  share: LoadShare & { startAt: number },
): Promise<LoadPart> {
  const keys: Uint8Array[] = new Array(spec.keys);
  for (let i = 0; i < spec.keys; i++) keys[i] = keyOf(i);
  const value = valueOf(spec.valueSize, (spec.seed ?? 1) + 7);
  const hist = new Histogram();
  const errorKinds: Record<string, number> = {};
  let ops = 0, errors = 0, misses = 0;

  // Start from a collected heap (when the isolate was started with --expose-gc, as `deno task
  // bench` does), so that a run does not pay for the client garbage left by the run before it,
  // which may have been another system's.
  (globalThis as { gc?: () => void }).gc?.();
  const delay = share.startAt - Date.now();
  if (delay > 0) await new Promise((r) => setTimeout(r, delay));
  const t0 = performance.now();
  const fill = spec.workload === "fill";
  const measureFrom = fill ? t0 : t0 + spec.warmupMs;
  const fixedOps = fill ? undefined : share.ops;
  const measureTo = fixedOps !== undefined || fill ? Infinity : measureFrom + spec.durationMs;
  let nextFill = share.fillFrom ?? 0;
  const fillTo = share.fillTo ?? spec.keys;
  let issuedInWindow = 0;
  let lastDone = measureFrom;

  const loop = async (loopIndex: number) => {
    let x = ((spec.seed ?? 1) * 2654435761 + loopIndex * 40503 + share.startAt) | 0 || 1;
    const rand = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 4294967296;
    };
    let failures = 0;
    let retry: Uint8Array | undefined; // a fill key whose put failed
    while (true) {
      const start = performance.now();
      if (start >= measureTo) return;
      let key: Uint8Array;
      if (fill) {
        if (retry !== undefined) key = retry;
        else if (nextFill < fillTo) key = keys[nextFill++]!;
        else return;
        retry = undefined;
      } else {
        key = keys[Math.floor(rand() * spec.keys)]!;
      }
      const inWindow = start >= measureFrom;
      if (inWindow && fixedOps !== undefined) {
        if (issuedInWindow >= fixedOps) return;
        issuedInWindow++;
      }
      try {
        let miss = false;
        switch (spec.workload) {
          case "put":
          case "fill":
            await adapter.put(key, value);
            break;
          case "get":
            miss = !await adapter.get(key, false);
            break;
          case "get-ser":
            miss = !await adapter.get(key, true);
            break;
          case "mixed":
            if (rand() < 0.1) await adapter.put(key, value);
            else miss = !await adapter.get(key, false);
            break;
        }
        failures = 0;
        const end = performance.now();
        if (inWindow && end <= measureTo) {
          hist.record((end - start) * 1000);
          ops++;
          if (miss) misses++;
          if (end > lastDone) lastDone = end;
        }
      } catch (e) {
        const end = performance.now();
        if (inWindow && end <= measureTo) {
          errors++;
          const kind = errorKind(e);
          errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
        }
        if (fill) retry = key;
        // Back off a little so that a dead endpoint does not become a busy loop.
        failures++;
        await new Promise((r) => setTimeout(r, Math.min(100, 5 * failures)));
        if (fill && failures > 50) throw e;
      }
    }
  };
  // Stalls are counted over the measured window only (the warm-up's are not).
  let monitor: StallMonitor | undefined;
  const warm = measureFrom - performance.now();
  const monitorStart = setTimeout(() => monitor = new StallMonitor(), Math.max(0, warm));
  let stall: StallSummary = { maxMs: 0, totalMs: 0 };
  try {
    await Promise.all(Array.from({ length: share.concurrency }, (_, i) => loop(i)));
  } finally {
    clearTimeout(monitorStart);
    if (monitor !== undefined) stall = (monitor as StallMonitor).stop();
  }
  const windowMs = measureTo === Infinity ? lastDone - measureFrom : spec.durationMs;
  return { hist: hist.toData(), ops, errors, errorKinds, windowMs, misses, stall };
}

/** Messages to a load worker. */
export type WorkerRequest =
  | { type: "connect"; system: SystemName; adapter: AdapterOptions }
  | { type: "run"; spec: LoadSpec; share: LoadShare & { startAt: number } }
  | { type: "close" };

/** Messages from a load worker. */
export type WorkerReply =
  | { type: "connected" }
  | { type: "result"; part: LoadPart }
  | { type: "error"; message: string };

/** Options of {@linkcode LoadClient}. */
export interface LoadClientOptions {
  system: SystemName;
  adapter: AdapterOptions;
  /** Web Workers to spread the loops over; 0 runs them in this thread. Default 0. */
  workers?: number;
}

/**
 * The load client of one system: its adapters (in this thread or in workers), kept connected
 * across runs.
 *
 * @example
 * ```ts ignore
 * const client = await LoadClient.connect({ system: "etcd", adapter: { endpoints } });
 * const r = await client.run({ workload: "put", keys: 10_000, valueSize: 256,
 *   concurrency: 64, warmupMs: 1000, durationMs: 5000 });
 * console.log(r.throughput, r.latencyMs.p99);
 * await client.close();
 * ```
 */
export class LoadClient {
  #local?: KvAdapter;
  #workers: Worker[] = [];

  private constructor() {}

  /** Connects all channels (in every worker). */
  static async connect(opts: LoadClientOptions): Promise<LoadClient> {
    const c = new LoadClient();
    const n = opts.workers ?? 0;
    if (n === 0) {
      const a = createAdapter(opts.system, opts.adapter);
      c.#local = a;
      await a.ready();
      return c;
    }
    for (let i = 0; i < n; i++) {
      c.#workers.push(
        new Worker(new URL("./load_worker.ts", import.meta.url), { type: "module" }),
      );
    }
    try {
      await Promise.all(
        c.#workers.map((w) =>
          ask(w, { type: "connect", system: opts.system, adapter: opts.adapter })
        ),
      );
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  /** Threads the loops are spread over (1 when running in this thread). */
  get threads(): number {
    return Math.max(1, this.#workers.length);
  }

  /** Runs one load and merges the parts. */
  async run(spec: LoadSpec): Promise<LoadResult> {
    const startAt = Date.now() + 50;
    const n = this.threads;
    const conc = splitEven(spec.concurrency, n);
    const ops = spec.ops === undefined ? undefined : splitEven(spec.ops, n);
    const fillSizes = splitEven(spec.keys, n);
    const shares = conc.map((concurrency, i) => {
      const fillFrom = fillSizes.slice(0, i).reduce((a, b) => a + b, 0);
      return {
        concurrency,
        ops: ops?.[i],
        fillFrom,
        fillTo: fillFrom + fillSizes[i]!,
        startAt,
      };
    }).filter((s) => s.concurrency > 0);
    if (this.#local) return mergeParts([await runLoops(this.#local, spec, shares[0]!)]);
    const parts = await Promise.all(
      shares.map(async (share, i) => {
        const reply = await ask(this.#workers[i]!, { type: "run", spec, share });
        if (reply.type !== "result") throw new Error("load worker: unexpected reply");
        return reply.part;
      }),
    );
    return mergeParts(parts);
  }

  /** Closes the adapters and ends the workers. */
  async close(): Promise<void> {
    this.#local?.close();
    await Promise.all(this.#workers.map(async (w) => {
      try {
        await ask(w, { type: "close" }, 2000);
      } catch {
        // ended below anyway
      }
      w.terminate();
    }));
    this.#workers = [];
  }
}

function ask(w: Worker, req: WorkerRequest, timeoutMs = 0): Promise<WorkerReply> {
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      w.removeEventListener("message", onMessage);
      w.removeEventListener("error", onError);
      if (timer !== undefined) clearTimeout(timer);
    };
    const onMessage = (e: MessageEvent<WorkerReply>) => {
      done();
      if (e.data.type === "error") reject(new Error(e.data.message));
      else resolve(e.data);
    };
    const onError = (e: ErrorEvent) => {
      e.preventDefault();
      done();
      reject(new Error(`load worker failed: ${e.message}`));
    };
    w.addEventListener("message", onMessage);
    w.addEventListener("error", onError);
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        done();
        reject(new Error("load worker: no answer"));
      }, timeoutMs);
    }
    w.postMessage(req);
  });
}
