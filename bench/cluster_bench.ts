/**
 * `deno task bench cluster`: ConcordKV against etcd, side by side on this machine.
 *
 * For each system in turn it starts a 3-node cluster on free loopback ports (fsync on both; etcd
 * is Debian's `etcd-server`, installed with apt-get when missing), preloads the key space, runs
 * the same workloads at each concurrency, records throughput, latency percentiles, errors and the
 * CPU used by the client and by every server process, then stops the cluster (always, also on
 * failure or Ctrl-C). At the end it prints one table with ConcordKV/etcd ratios and writes JSON,
 * the table (Markdown) and an SVG chart to `bench/results/`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { type BenchRow, renderSvg, renderTable } from "./chart.ts";
import {
  LoadClient,
  type LoadResult,
  type LoadSpec,
  mergeRuns,
  type Workload,
  WORKLOADS,
} from "./load.ts";
import { CLIENT_KINDS, type ClientKind, type SystemName } from "./load_adapters.ts";
import type { NodeCommand } from "./load_concordkv.ts";
import { type BenchCluster, cpuSnapshot, waitQuiet } from "./load_cluster.ts";
import { ensureEtcd, EtcdCluster } from "./etcd_cluster.ts";
import { type CpuProfile, formatProfile, summarizeProfile } from "./load_profile.ts";

/** The usage text. */
export const CLUSTER_BENCH_USAGE =
  `Usage: deno task bench cluster [--quick] [--duration S] [--systems concordkv,etcd] [options]

Starts a 3-node ConcordKV and a 3-node etcd on loopback and runs the same workloads
(put, linearizable get, serializable get, 90/10 get/put) at each concurrency against both.
Prints one table with ConcordKV/etcd ratios; writes JSON, Markdown and SVG to bench/results/.
Installs Debian's etcd-server with apt-get if etcd is missing.

By default (not --quick) both systems are started first and each step runs on both in four
parts, A B B A A B B A, whose latencies are pooled (--rounds 2): drift of the machine lands on
both alike, and neither gains from going first or last. Steps at one client run 30 s a system
rather than 10: at ~550 operations a second, 10 s leaves a p99 resting on ~55 samples, which
moves by a fifth from run to run. A full run takes about 17 minutes.

Options:
  --quick              short runs, base case only, each system in turn (under ~2 minutes)
  --duration S         measured seconds per step and system (default 10, quick 2)
  --one-client-duration S
                       the same for steps at one client (default 30, quick 2; with
                       --duration given, that value)
  --warmup S           warm-up seconds per run (default 1, quick 0.5)
  --settle S           before each run, wait up to S seconds for the machine to go quiet
                       (under 0.25 cores busy; default 10, quick 2, 0 = don't wait)
  --ops N              measure a fixed number of operations per run instead of --duration
  --systems LIST       systems in run order (default concordkv,etcd); also "stub", an
                       in-memory grpc-js KVStore (no Raft, no disk: the grpc-js ceiling),
                       "h2stub", the same over raw HTTP/2 with coalesced writes, and
                       "concordkv@DIR", ConcordKV from another checkout (A/B of a change:
                       --systems concordkv,concordkv@/tmp/base gives new/old ratios);
                       "+flag=value" after either passes a node flag (A/B of a setting:
                       --systems concordkv+read-mode=lease,concordkv)
  --concurrency LIST   concurrent clients (default 1,16,64,256)
  --workloads LIST     of put,get,get-ser,mixed (default all)
  --no-variants        skip the 4 KiB-value and 100k-key runs (implied by --quick)
  --interleave         run each step on all systems back to back, in one part each
  --mirror             with --interleave (implied): run each step in two halves of the
                       duration, the second in reverse order (A B, then B A), and merge them
  --rounds N           with --mirror (implied): repeat the A B, B A pair N times within the
                       duration (2N parts a system, merged; default 2, or 1 with --interleave
                       or --mirror)
  --sequential         run every step on one system, then every step on the next (the
                       least fair to compare; the default of --quick)
  --target T           leader (default: every channel to the leader) or all (spread over nodes)
  --channels N         grpc channels (connections) per endpoint (default 4)
  --client C           the gRPC client driving both systems: grpc-js (default) or h2, a lean
                       unary client on Deno.connect (bench/load_h2_client.ts) that pauses less
                       and needs less CPU than grpc-js on node:http2
  --workers N          Web Workers running the load (default 0: the main thread)
  --profile DIR        run ConcordKV nodes under --cpu-prof, profiles in DIR/node-<id>
  --out PREFIX         output prefix (default bench/results/cluster-latest)
  -h, --help           print this help`;

/** Parsed options. */
export interface ClusterBenchOptions {
  quick: boolean;
  durationS: number;
  /** Measured seconds per step and system at concurrency 1 (more, for a steadier tail). */
  oneClientDurationS: number;
  warmupS: number;
  /** Before each measured run, wait up to this long for the machine to go quiet (0: don't). */
  settleS: number;
  /** Fixed measured operations per run (instead of `durationS`). */
  ops?: number;
  /** System labels in run order: a {@linkcode SystemName}, or `concordkv@DIR`. */
  systems: string[];
  concurrency: number[];
  workloads: Workload[];
  variants: boolean;
  /** Run each step on every system back to back instead of one system after the other. */
  interleave: boolean;
  /** Interleaved, run each measured step in two halves, the second in reverse system order. */
  mirror: boolean;
  /** Mirrored, how many times the A B, B A pair repeats within a step (2 × rounds parts). */
  rounds: number;
  target: "leader" | "all";
  channels: number;
  /** The gRPC client driving both systems. */
  client: ClientKind;
  workers: number;
  profileDir?: string;
  out: string;
}

class UsageError extends Error {}

function list(text: string): string[] {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function positive(text: string, what: string, integer = false): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${what} must be a ${integer ? "whole " : ""}number ≥ 0, got "${text}"`);
  }
  return n;
}

/** Parses the command line; returns `"help"` for `--help`. */
export function parseClusterBenchArgs(args: string[]): ClusterBenchOptions | "help" {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      duration: { type: "string" },
      "one-client-duration": { type: "string" },
      warmup: { type: "string" },
      settle: { type: "string" },
      ops: { type: "string" },
      systems: { type: "string", default: "concordkv,etcd" },
      concurrency: { type: "string", default: "1,16,64,256" },
      workloads: { type: "string", default: WORKLOADS.join(",") },
      "no-variants": { type: "boolean", default: false },
      interleave: { type: "boolean", default: false },
      mirror: { type: "boolean", default: false },
      rounds: { type: "string" },
      sequential: { type: "boolean", default: false },
      target: { type: "string", default: "leader" },
      channels: { type: "string", default: "4" },
      client: { type: "string", default: "grpc-js" },
      workers: { type: "string", default: "0" },
      profile: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  const systems = list(values.systems!);
  for (const s of systems) systemKind(s);
  if (new Set(systems).size !== systems.length) {
    throw new UsageError("--systems names a system twice");
  }
  const workloads = list(values.workloads!);
  for (const w of workloads) {
    if (!(WORKLOADS as readonly string[]).includes(w)) {
      throw new UsageError(`unknown workload "${w}" (known: ${WORKLOADS.join(", ")})`);
    }
  }
  if (values.target !== "leader" && values.target !== "all") {
    throw new UsageError(`--target must be leader or all, got "${values.target}"`);
  }
  if (!(CLIENT_KINDS as readonly string[]).includes(values.client!)) {
    throw new UsageError(`--client must be ${CLIENT_KINDS.join(" or ")}, got "${values.client}"`);
  }
  const quick = values.quick!;
  const concurrency = list(values.concurrency!).map((c) => positive(c, "--concurrency", true));
  if (concurrency.some((c) => c < 1)) throw new UsageError("--concurrency must be ≥ 1");
  const sequential = values.sequential!;
  if (sequential && (values.interleave || values.mirror || values.rounds !== undefined)) {
    throw new UsageError("--sequential does not go with --interleave, --mirror or --rounds");
  }
  // With no order asked for, a full run is pooled over A B B A A B B A parts; --quick, or an
  // order given in part, keeps to what was asked.
  const pooled = !quick && !sequential && !values.interleave && !values.mirror;
  const rounds = positive(values.rounds ?? (pooled ? "2" : "1"), "--rounds", true);
  if (rounds < 1) throw new UsageError("--rounds must be ≥ 1");
  const mirror = !sequential && (values.mirror! || rounds > 1);
  const durationS = positive(values.duration ?? (quick ? "2" : "10"), "--duration");
  const oneClient = values["one-client-duration"];
  return {
    quick,
    durationS,
    oneClientDurationS: oneClient !== undefined
      ? positive(oneClient, "--one-client-duration")
      : quick || values.duration !== undefined
      ? durationS
      : 30,
    warmupS: positive(values.warmup ?? (quick ? "0.5" : "1"), "--warmup"),
    settleS: positive(values.settle ?? (quick ? "2" : "10"), "--settle"),
    ops: values.ops === undefined ? undefined : Math.max(1, positive(values.ops, "--ops", true)),
    systems,
    concurrency,
    workloads: workloads as Workload[],
    variants: !quick && !values["no-variants"],
    interleave: values.interleave! || mirror,
    mirror,
    rounds,
    target: values.target,
    channels: Math.max(1, positive(values.channels!, "--channels", true)),
    client: values.client as ClientKind,
    workers: positive(values.workers!, "--workers", true),
    profileDir: values.profile,
    out: values.out ?? new URL("./results/cluster-latest", import.meta.url).pathname,
  };
}

/**
 * The kind of a `--systems` label and, for `concordkv@DIR`, the checkout to run the nodes from.
 * Throws a usage error for an unknown label.
 */
export function systemKind(
  label: string,
): { kind: SystemName; tree?: string; nodeArgs?: string[] } {
  if (label === "concordkv" || label === "etcd" || label === "stub" || label === "h2stub") {
    return { kind: label };
  }
  const m = /^concordkv(?:@([^+]+))?((?:\+[a-z][a-z0-9-]*=[^+]*)*)$/.exec(label);
  if (m && (m[1] !== undefined || m[2] !== "")) {
    const out: { kind: SystemName; tree?: string; nodeArgs?: string[] } = { kind: "concordkv" };
    if (m[1] !== undefined) out.tree = m[1].replace(/\/+$/, "");
    if (m[2] !== "") {
      out.nodeArgs = m[2]!.slice(1).split("+").flatMap((kv) => {
        const eq = kv.indexOf("=");
        return [`--${kv.slice(0, eq)}`, kv.slice(eq + 1)];
      });
    }
    return out;
  }
  throw new UsageError(
    `unknown system "${label}" (known: concordkv, etcd, stub, h2stub, concordkv@DIR, ` +
      `concordkv[@DIR]+flag=value)`,
  );
}

/** A machine using at most this many cores (both clusters idle, the client waiting) is quiet. */
const SETTLE_MAX_CORES = 0.25;

/** One planned step: a preload (`fill`) or a measured run. */
export interface Step {
  spec: Omit<LoadSpec, "warmupMs" | "durationMs">;
  measured: boolean;
}

/** The runs of one system, in order: preloads before the reads that need them. */
export function planSteps(opts: ClusterBenchOptions): Step[] {
  const steps: Step[] = [];
  const fill = (keys: number, valueSize: number) =>
    steps.push({
      spec: { workload: "fill", keys, valueSize, concurrency: 256 },
      measured: false,
    });
  const run = (workload: Workload, keys: number, valueSize: number, concurrency: number) =>
    steps.push({ spec: { workload, keys, valueSize, concurrency }, measured: true });
  const needsFill = opts.workloads.some((w) => w !== "put");
  if (needsFill) fill(10_000, 256);
  for (const c of opts.concurrency) {
    for (const w of opts.workloads) run(w, 10_000, 256, c);
  }
  if (opts.variants) {
    const c = opts.concurrency.includes(64) ? 64 : opts.concurrency[opts.concurrency.length - 1]!;
    const reads = opts.workloads.filter((w) => w !== "put");
    if (reads.length > 0) fill(10_000, 4096);
    for (const w of opts.workloads) run(w, 10_000, 4096, c);
    if (reads.length > 0) fill(100_000, 256);
    for (const w of opts.workloads) run(w, 100_000, 256, c);
  }
  return steps;
}

function say(line: string): void {
  console.error(line);
}

async function startCluster(
  label: string,
  opts: ClusterBenchOptions,
): Promise<BenchCluster> {
  const { kind: system, tree, nodeArgs } = systemKind(label);
  if (system === "etcd") return await EtcdCluster.start();
  if (system === "stub") {
    const { StubCluster } = await import("./load_stub_server.ts");
    return await StubCluster.start();
  }
  if (system === "h2stub") {
    const { H2StubCluster } = await import("./load_h2_stub.ts");
    return await H2StubCluster.start();
  }
  // Imported lazily so that an etcd-only run works while the node is being built.
  const { ConcordKvCluster } = await import("./load_concordkv.ts");
  let profileDir = opts.profileDir;
  if (profileDir !== undefined && tree !== undefined) {
    profileDir += `/${label.replace(/\W+/g, "_")}`;
  }
  if (profileDir !== undefined) await Deno.mkdir(profileDir, { recursive: true });
  // Another checkout's nodes come from its own launch.ts (its REPO_ROOT, its node_main.ts).
  const launch = tree === undefined
    ? undefined
    : (await import(new URL(`file://${Deno.realPathSync(tree)}/server/launch.ts`).href)) as {
      nodeCommand: NodeCommand;
    };
  return await ConcordKvCluster.start({
    cpuProfDir: profileDir,
    nodeCommand: launch?.nodeCommand,
    extraArgs: nodeArgs,
  });
}

function fmtRun(
  system: string,
  spec: LoadSpec,
  r: LoadResult,
  client: number,
  srv: number[],
  other: number,
  rssMiB: number[],
) {
  const errs = r.errors > 0 ? ` errors=${r.errors} ${JSON.stringify(r.errorKinds)}` : "";
  const miss = r.misses > 0 ? ` misses=${r.misses}` : "";
  return `  ${system} ${spec.workload} keys=${spec.keys} value=${spec.valueSize} ` +
    `c=${spec.concurrency}: ${Math.round(r.throughput)} ops/s p50=${r.latencyMs.p50} ` +
    `p99=${r.latencyMs.p99} p99.9=${r.latencyMs.p999} ms; cpu client=${client.toFixed(2)} ` +
    `servers=${srv.map((c) => c.toFixed(2)).join("/")} other=${other.toFixed(2)}` +
    ` leader=${r.throughput > 0 ? Math.round((srv[0]! * 1e6) / r.throughput) : "—"}µs/op` +
    ` rss=${rssMiB.join("/")} MiB` +
    ` client-lag=${r.clientLag.maxMs}/${r.clientLag.totalMs} ms (max/total)` +
    `${other > 0.25 ? " (NOISY: other processes used CPU)" : ""}${errs}${miss}`;
}

/** A started system: its cluster and its connected load client. */
interface RunningSystem {
  label: string;
  cluster: BenchCluster;
  client: LoadClient;
  stop: () => Promise<void>;
}

/** Starts a system's cluster and connects its load client (stopping the cluster on failure). */
async function startSystem(
  label: string,
  opts: ClusterBenchOptions,
  cleanup: Set<() => Promise<void>>,
): Promise<RunningSystem> {
  say(`${label}: starting ${label.endsWith("stub") ? "the stub server" : "a 3-node cluster"}`);
  const t0 = performance.now();
  const cluster = await startCluster(label, opts);
  const stop = () => cluster.stop();
  cleanup.add(stop);
  try {
    say(
      `${label}: leader ${cluster.leader} (ready in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s)`,
    );
    const endpoints = opts.target === "leader" ? [cluster.leader] : cluster.endpoints;
    const client = await LoadClient.connect({
      system: systemKind(label).kind,
      adapter: { endpoints, channelsPerEndpoint: opts.channels, client: opts.client },
      workers: opts.workers,
    });
    return { label, cluster, client, stop };
  } catch (e) {
    await stop();
    cleanup.delete(stop);
    throw e;
  }
}

/** Closes the client, stops the cluster, and summarizes the leader's profile if one was taken. */
async function stopSystem(
  s: RunningSystem,
  opts: ClusterBenchOptions,
  cleanup: Set<() => Promise<void>>,
): Promise<void> {
  try {
    await s.client.close();
  } finally {
    say(`${s.label}: stopping the cluster`);
    await s.stop();
    cleanup.delete(s.stop);
  }
  const { kind, tree } = systemKind(s.label);
  if (kind === "concordkv" && opts.profileDir !== undefined) {
    const dir = tree === undefined
      ? opts.profileDir
      : `${opts.profileDir}/${s.label.replace(/\W+/g, "_")}`;
    await summarizeLeaderProfile(dir, s.cluster.leaderProcess.name);
  }
}

/** One measured run of a step on one system (a table row, or half of one with `--mirror`). */
export interface Measurement {
  spec: LoadSpec;
  r: LoadResult;
  /** Wall-clock seconds of the run. */
  wall: number;
  clientCores: number;
  serverCores: number[];
  otherCores: number;
  rssMiB: number[];
}

/**
 * Runs one step against a started system for `fraction` of the run length (duration or op
 * count); returns its measurement, or undefined for a preload.
 */
async function measureStep(
  s: RunningSystem,
  step: Step,
  opts: ClusterBenchOptions,
  fraction = 1,
): Promise<Measurement | undefined> {
  const { label: system, cluster, client } = s;
  const spec: LoadSpec = {
    ...step.spec,
    warmupMs: step.measured ? opts.warmupS * 1000 : 0,
    durationMs: (step.spec.concurrency === 1 ? opts.oneClientDurationS : opts.durationS) * 1000 *
      fraction,
    ops: step.measured && opts.ops !== undefined
      ? Math.max(1, Math.ceil(opts.ops * fraction))
      : undefined,
  };
  // Leader first, as in cluster.endpoints.
  const pids = [
    cluster.leaderProcess,
    ...cluster.processes.filter((p) => p !== cluster.leaderProcess),
  ].map((p) => p.pid);
  // The other system, or this one, may still be compacting after its last step: measure each
  // step on a quiet machine, so that neither system pays for the other's leftovers.
  if (step.measured && opts.settleS > 0) {
    await waitQuiet({ maxCores: SETTLE_MAX_CORES, windowMs: 300, timeoutMs: opts.settleS * 1000 });
  }
  const cpuBefore = await cpuSnapshot(pids);
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  const r = await client.run(spec);
  const wall = (performance.now() - w0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuAfter = await cpuSnapshot(pids);
  const clientCores = (cpu.user + cpu.system) / 1e6 / wall;
  const serverCores = pids.map((_, i) => (cpuAfter.procs[i]! - cpuBefore.procs[i]!) / wall);
  // Whatever else ran on the machine meanwhile (another benchmark, a test suite): noise.
  const machineCores = (cpuAfter.machineBusy - cpuBefore.machineBusy) / wall;
  const otherCores = Math.max(
    0,
    machineCores - clientCores - serverCores.reduce((a, b) => a + (b || 0), 0),
  );
  if (!step.measured) {
    say(
      `  ${system} preload ${spec.keys} keys × ${spec.valueSize} B: ${
        Math.round(r.throughput)
      } puts/s${r.errors > 0 ? `, ${r.errors} retried errors` : ""}`,
    );
    return undefined;
  }
  const rssMiB = cpuAfter.rssBytes.map((b) => Math.round(b / 1048576));
  return { spec, r, wall, clientCores, serverCores, otherCores, rssMiB };
}

/**
 * The parts of a mirrored step as one measurement: results merged as consecutive runs
 * ({@linkcode mergeRuns}: latencies pooled), CPU figures averaged over their wall time, memory
 * from the last part.
 */
export function combineMeasurements(parts: Measurement[]): Measurement {
  const first = parts[0]!, last = parts[parts.length - 1]!;
  const wall = parts.reduce((t, m) => t + m.wall, 0);
  const avg = (f: (m: Measurement) => number) =>
    wall > 0 ? parts.reduce((t, m) => t + f(m) * m.wall, 0) / wall : 0;
  return {
    spec: { ...first.spec, durationMs: parts.reduce((t, m) => t + m.spec.durationMs, 0) },
    r: mergeRuns(parts.map((m) => m.r)),
    wall,
    clientCores: avg((m) => m.clientCores),
    serverCores: first.serverCores.map((_, i) => avg((m) => m.serverCores[i] ?? 0)),
    otherCores: avg((m) => m.otherCores),
    rssMiB: last.rssMiB,
  };
}

/** A measurement's run line. */
function fmtMeasurement(system: string, m: Measurement): string {
  return fmtRun(system, m.spec, m.r, m.clientCores, m.serverCores, m.otherCores, m.rssMiB);
}

/** Prints a measurement's run line and returns its table row. */
function rowOf(system: string, m: Measurement): BenchRow {
  const { spec, r, clientCores, serverCores, otherCores, rssMiB } = m;
  say(fmtMeasurement(system, m));
  return {
    system,
    workload: spec.workload,
    keys: spec.keys,
    valueSize: spec.valueSize,
    concurrency: spec.concurrency,
    throughput: r.throughput,
    ops: r.ops,
    errors: r.errors,
    errorKinds: r.errorKinds,
    latencyMs: r.latencyMs,
    seconds: r.seconds,
    misses: r.misses,
    clientCores: Math.round(clientCores * 100) / 100,
    clientLagMs: r.clientLag,
    serverCores: serverCores.map((c) => Math.round(c * 100) / 100),
    otherCores: Math.round(otherCores * 100) / 100,
    serverRssMiB: rssMiB,
  };
}

/** Runs one step against a started system; returns its row (undefined for a preload). */
async function runStep(
  s: RunningSystem,
  step: Step,
  opts: ClusterBenchOptions,
): Promise<BenchRow | undefined> {
  const m = await measureStep(s, step, opts);
  return m === undefined ? undefined : rowOf(s.label, m);
}

/**
 * The order of one interleaved step's runs, as passes over system indices: steps alternate
 * which system goes first; mirrored, a second pass runs them again in reverse (A B, B A), so
 * that every system runs once first and once last, and `rounds` repeats that pair.
 */
export function stepOrder(
  systems: number,
  step: number,
  mirror: boolean,
  rounds = 1,
): number[][] {
  const forward = Array.from({ length: systems }, (_, i) => i);
  const first = step % 2 === 0 ? forward : forward.reverse();
  if (!mirror) return [first];
  const pair = [first, [...first].reverse()];
  return Array.from({ length: 2 * rounds }, (_, i) => pair[i % 2]!);
}

/** Runs every step against one system; the cluster is always stopped. */
export async function benchSystem(
  label: string,
  opts: ClusterBenchOptions,
  onRow: (row: BenchRow) => void,
  cleanup: Set<() => Promise<void>>,
): Promise<void> {
  const s = await startSystem(label, opts, cleanup);
  try {
    for (const step of planSteps(opts)) {
      const row = await runStep(s, step, opts);
      if (row !== undefined) onRow(row);
    }
  } finally {
    await stopSystem(s, opts, cleanup);
  }
}

/**
 * `--interleave`: starts every system first, then runs each step against all of them back to
 * back (alternating which goes first), so that a noisy machine hits every system alike. A system
 * that fails is reported and dropped; the others go on. Every cluster is always stopped.
 */
export async function benchInterleaved(
  labels: string[],
  opts: ClusterBenchOptions,
  onRow: (row: BenchRow) => void,
  onFailure: (label: string, e: unknown) => void,
  cleanup: Set<() => Promise<void>>,
): Promise<void> {
  let running: RunningSystem[] = [];
  try {
    for (const label of labels) {
      try {
        running.push(await startSystem(label, opts, cleanup));
      } catch (e) {
        onFailure(label, e);
      }
    }
    for (const [i, step] of planSteps(opts).entries()) {
      const systems = [...running];
      const passes = stepOrder(
        systems.length,
        i,
        opts.mirror && step.measured,
        opts.rounds,
      );
      const parts = new Map<RunningSystem, Measurement[]>();
      for (const pass of passes) {
        for (const s of pass.map((k) => systems[k]!)) {
          if (!running.includes(s)) continue; // failed in this step's first pass
          try {
            if (passes.length === 1) {
              const row = await runStep(s, step, opts);
              if (row !== undefined) onRow(row);
            } else {
              const m = await measureStep(s, step, opts, 1 / passes.length);
              if (m === undefined) continue;
              const done = [...(parts.get(s) ?? []), m];
              parts.set(s, done);
              say(`${fmtMeasurement(s.label, m)} [part ${done.length} of ${passes.length}]`);
            }
          } catch (e) {
            onFailure(s.label, e);
            running = running.filter((x) => x !== s);
            await stopSystem(s, opts, cleanup).catch(() => {});
          }
        }
      }
      for (const s of systems) {
        const done = parts.get(s) ?? [];
        if (done.length === passes.length) onRow(rowOf(s.label, combineMeasurements(done)));
      }
    }
  } finally {
    for (const s of running) await stopSystem(s, opts, cleanup).catch(() => {});
  }
}

/** Prints and saves (`<dir>/leader-summary.txt`) the summary of the leader's CPU profile. */
async function summarizeLeaderProfile(dir: string, leaderName: string): Promise<void> {
  const id = /(\d+)$/.exec(leaderName)?.[1];
  const nodeDir = `${dir}/node-${id}`;
  const files: string[] = [];
  try {
    for await (const e of Deno.readDir(nodeDir)) {
      if (e.name.endsWith(".cpuprofile")) files.push(`${nodeDir}/${e.name}`);
    }
  } catch {
    // no profile directory
  }
  if (files.length === 0) {
    say(`no CPU profile in ${nodeDir} (the node must exit through Deno.exit on SIGTERM)`);
    return;
  }
  // The main thread's profile: the engine's compaction workers write their own
  // (`CPU.<time>.<pid>.worker-N.cpuprofile`), which sort after it.
  files.sort();
  const file = files.filter((f) => !/\.worker-\d+\.cpuprofile$/.test(f)).at(-1) ??
    files[files.length - 1]!;
  const text = formatProfile(
    summarizeProfile(JSON.parse(await Deno.readTextFile(file)) as CpuProfile),
    40,
  );
  await Deno.writeTextFile(`${dir}/leader-summary.txt`, `leader ${leaderName}: ${file}\n${text}\n`);
  say(
    `leader profile: ${file}\n${
      text.split("\n").slice(0, 16).join("\n")
    }\n(full: ${dir}/leader-summary.txt)`,
  );
}

/** The JSON written to `<out>.json`. */
export interface ClusterBenchReport {
  kind: "cluster";
  startedAt: string;
  finishedAt: string;
  machine: { cpus: number; deno: string; etcd?: string };
  options: Omit<ClusterBenchOptions, "out">;
  rows: BenchRow[];
  failures: { system: string; message: string }[];
}

async function etcdVersion(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(await ensureEtcd(say), { args: ["--version"] }).output();
    return /etcd Version: (\S+)/.exec(new TextDecoder().decode(out.stdout))?.[1];
  } catch {
    return undefined;
  }
}

/** Entry point of `deno task bench cluster`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let opts;
  try {
    opts = parseClusterBenchArgs(args);
  } catch (e) {
    if (!(e instanceof UsageError) && !(e instanceof TypeError)) throw e;
    console.error(`bench cluster: ${e.message}\n\n${CLUSTER_BENCH_USAGE}`);
    return 2;
  }
  if (opts === "help") {
    console.log(CLUSTER_BENCH_USAGE);
    return 0;
  }
  const cleanup = new Set<() => Promise<void>>();
  const onSignal = async () => {
    say("interrupted: stopping clusters");
    await Promise.allSettled([...cleanup].map((f) => f()));
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const { out, ...shown } = opts;
  const report: ClusterBenchReport = {
    kind: "cluster",
    startedAt: new Date().toISOString(),
    finishedAt: "",
    machine: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      etcd: opts.systems.includes("etcd") ? await etcdVersion() : undefined,
    },
    options: shown,
    rows: [],
    failures: [],
  };
  const started = performance.now();
  try {
    const onFailure = (system: string, e: unknown) => {
      const message = e instanceof Error ? e.message : String(e);
      say(`${system}: FAILED: ${message}`);
      report.failures.push({ system, message });
    };
    if (opts.interleave) {
      await benchInterleaved(
        opts.systems,
        opts,
        (row) => report.rows.push(row),
        onFailure,
        cleanup,
      );
    } else {
      for (const system of opts.systems) {
        try {
          await benchSystem(system, opts, (row) => report.rows.push(row), cleanup);
        } catch (e) {
          onFailure(system, e);
        }
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await Promise.allSettled([...cleanup].map((f) => f()));
  }
  report.finishedAt = new Date().toISOString();
  const table = renderTable(report.rows, opts.systems);
  const header = `Cluster benchmark ${report.startedAt} — 3 nodes each on loopback, ` +
    `${report.machine.cpus} CPUs, Deno ${report.machine.deno}` +
    (report.machine.etcd ? `, etcd ${report.machine.etcd}` : "") +
    `; ${
      opts.ops !== undefined
        ? `${opts.ops} ops`
        : opts.oneClientDurationS !== opts.durationS && opts.concurrency.includes(1)
        ? `${opts.durationS} s (${opts.oneClientDurationS} s at one client)`
        : `${opts.durationS} s`
    } per run after ` +
    `${opts.warmupS} s warm-up` +
    (opts.settleS > 0 ? `, each on a quiet machine (waited up to ${opts.settleS} s)` : "") +
    `${opts.interleave ? ", systems interleaved" : ""}` +
    (opts.mirror
      ? opts.rounds > 1
        ? ` in ${2 * opts.rounds} mirrored parts (A B, B A ×${opts.rounds})`
        : " in mirrored halves (A B, B A)"
      : "") +
    "; " +
    `clients → ${opts.target}, ` +
    `${opts.channels} channels/endpoint, ${opts.client} client`;
  console.log(`\n${header}\n\n${table}\n`);
  const svg = renderSvg(report.rows, {
    systems: opts.systems,
    keys: 10_000,
    valueSize: 256,
  });
  const dir = out.slice(0, out.lastIndexOf("/"));
  if (dir !== "") await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${out}.json`, JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(`${out}.md`, `${header}\n\n${table}\n`);
  await Deno.writeTextFile(`${out}.svg`, svg);
  say(
    `wrote ${out}.json, ${out}.md, ${out}.svg (${
      ((performance.now() - started) / 1000).toFixed(0)
    } s)`,
  );
  for (const f of report.failures) say(`FAILED ${f.system}: ${f.message.split("\n")[0]}`);
  return report.failures.length > 0 ? 1 : 0;
}
