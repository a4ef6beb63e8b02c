import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { BenchRow } from "./chart.ts";
import {
  benchInterleaved,
  combineMeasurements,
  parseClusterBenchArgs,
  planSteps,
  stepOrder,
  systemKind,
} from "./cluster_bench.ts";
import { mergeRuns } from "./load.ts";
import { Histogram } from "./load_stats.ts";

Deno.test("cluster bench defaults: both systems, four concurrencies, variants on", () => {
  const o = parseClusterBenchArgs([]);
  if (o === "help") throw new Error("help");
  deepEqual(o.systems, ["concordkv", "etcd"]);
  deepEqual(o.concurrency, [1, 16, 64, 256]);
  equal(o.durationS, 10);
  equal(o.oneClientDurationS, 30);
  equal(o.settleS, 10);
  equal(o.variants, true);
  equal(o.target, "leader");
  // Pooled over A B B A A B B A parts unless another order is asked for.
  equal(o.interleave, true);
  equal(o.mirror, true);
  equal(o.rounds, 2);
  equal(o.ops, undefined);
  equal(o.client, "grpc-js");
});

Deno.test("an order given on the command line replaces the pooled default", () => {
  const order = (...args: string[]) => {
    const o = parseClusterBenchArgs(args);
    if (o === "help") throw new Error("help");
    return [o.interleave, o.mirror, o.rounds];
  };
  deepEqual(order("--interleave"), [true, false, 1]);
  deepEqual(order("--mirror"), [true, true, 1]);
  deepEqual(order("--rounds", "8"), [true, true, 8]);
  deepEqual(order("--sequential"), [false, false, 1]);
  deepEqual(order("--quick"), [false, false, 1]);
  deepEqual(order("--quick", "--rounds", "2"), [true, true, 2]);
  throws(() => order("--sequential", "--mirror"), /--sequential does not go with/);
  throws(() => order("--sequential", "--rounds", "2"), /--sequential does not go with/);
});

Deno.test("one-client steps run longer by default, as long as --duration when it is given", () => {
  const oneClient = (...args: string[]) => {
    const o = parseClusterBenchArgs(args);
    if (o === "help") throw new Error("help");
    return [o.durationS, o.oneClientDurationS];
  };
  deepEqual(oneClient(), [10, 30]);
  deepEqual(oneClient("--duration", "240"), [240, 240]);
  deepEqual(oneClient("--quick"), [2, 2]);
  deepEqual(oneClient("--one-client-duration", "12"), [10, 12]);
  deepEqual(oneClient("--duration", "5", "--one-client-duration", "1.5"), [5, 1.5]);
  throws(() => oneClient("--one-client-duration", "x"), /--one-client-duration must be/);
});

Deno.test("--interleave and --ops are parsed", () => {
  const o = parseClusterBenchArgs(["--interleave", "--ops", "500"]);
  if (o === "help") throw new Error("help");
  equal(o.interleave, true);
  equal(o.ops, 500);
});

Deno.test("--quick shortens runs and drops the variants", () => {
  const o = parseClusterBenchArgs(["--quick", "--systems", "etcd"]);
  if (o === "help") throw new Error("help");
  equal(o.durationS, 2);
  equal(o.settleS, 2);
  equal(o.variants, false);
  deepEqual(o.systems, ["etcd"]);
  const none = parseClusterBenchArgs(["--settle", "0"]);
  if (none === "help") throw new Error("help");
  equal(none.settleS, 0);
  const steps = planSteps(o);
  equal(steps.filter((s) => s.measured).length, 16);
  equal(steps[0]!.spec.workload, "fill");
});

Deno.test("bad cluster bench flags are rejected", () => {
  throws(() => parseClusterBenchArgs(["--systems", "redis"]), /unknown system/);
  throws(() => parseClusterBenchArgs(["--workloads", "scan"]), /unknown workload/);
  throws(() => parseClusterBenchArgs(["--target", "x"]), /--target/);
  throws(() => parseClusterBenchArgs(["--concurrency", "0"]), /≥ 1/);
  throws(() => parseClusterBenchArgs(["--client", "curl"]), /--client must be grpc-js or h2/);
  const h2 = parseClusterBenchArgs(["--client", "h2"]);
  equal(h2 === "help" ? "" : h2.client, "h2");
  equal(parseClusterBenchArgs(["--help"]), "help");
});

Deno.test("the full plan preloads before every read variant", () => {
  const o = parseClusterBenchArgs(["--workloads", "put,get"]);
  if (o === "help") throw new Error("help");
  const steps = planSteps(o);
  const fills = steps.filter((s) => !s.measured).map((s) => `${s.spec.keys}/${s.spec.valueSize}`);
  deepEqual(fills, ["10000/256", "10000/4096", "100000/256"]);
  const variant = steps.filter((s) => s.measured && s.spec.keys === 100_000);
  deepEqual(variant.map((s) => `${s.spec.workload}@${s.spec.concurrency}`), ["put@64", "get@64"]);
  // Each read comes after a fill of its key space and value size.
  steps.forEach((s, i) => {
    if (!s.measured || s.spec.workload === "put") return;
    const fill = steps.slice(0, i).reverse().find((f) => !f.measured);
    ok(fill && fill.spec.keys === s.spec.keys && fill.spec.valueSize === s.spec.valueSize);
  });
});

Deno.test("the stub systems are accepted", () => {
  const o = parseClusterBenchArgs(["--systems", "stub,h2stub"]);
  if (o === "help") throw new Error("help");
  deepEqual(o.systems, ["stub", "h2stub"]);
});

Deno.test("concordkv@DIR names another checkout for an A/B run", () => {
  deepEqual(systemKind("concordkv@/tmp/base/"), { kind: "concordkv", tree: "/tmp/base" });
  deepEqual(systemKind("etcd"), { kind: "etcd" });
  deepEqual(systemKind("concordkv+read-mode=lease"), {
    kind: "concordkv",
    nodeArgs: ["--read-mode", "lease"],
  });
  deepEqual(systemKind("concordkv@/tmp/b+read-mode=lease+heartbeat-ms=50"), {
    kind: "concordkv",
    tree: "/tmp/b",
    nodeArgs: ["--read-mode", "lease", "--heartbeat-ms", "50"],
  });
  throws(() => systemKind("concordkv" + "+"), /unknown system/);
  throws(() => systemKind("redis"), /unknown system/);
  throws(() => parseClusterBenchArgs(["--systems", "etcd,etcd"]), /twice/);
});

Deno.test("--mirror implies --interleave", () => {
  const o = parseClusterBenchArgs(["--mirror"]);
  if (o === "help") throw new Error("help");
  equal(o.mirror, true);
  equal(o.interleave, true);
  const d = parseClusterBenchArgs(["--interleave"]);
  if (d === "help") throw new Error("help");
  equal(d.mirror, false);
});

Deno.test("interleaved steps alternate the first system; mirrored ones run each first once", () => {
  deepEqual(stepOrder(2, 0, false), [[0, 1]]);
  deepEqual(stepOrder(2, 1, false), [[1, 0]]);
  deepEqual(stepOrder(2, 0, true), [[0, 1], [1, 0]]);
  deepEqual(stepOrder(2, 1, true), [[1, 0], [0, 1]]);
  deepEqual(stepOrder(3, 2, true), [[0, 1, 2], [2, 1, 0]]);
  deepEqual(stepOrder(2, 1, true, 3), [[1, 0], [0, 1], [1, 0], [0, 1], [1, 0], [0, 1]]);
});

Deno.test("--rounds implies --mirror and must be a whole number ≥ 1", () => {
  const o = parseClusterBenchArgs(["--rounds", "4"]);
  if (o === "help") throw new Error("help");
  equal(o.rounds, 4);
  equal(o.mirror, true);
  equal(o.interleave, true);
  const d = parseClusterBenchArgs(["--interleave"]);
  if (d === "help") throw new Error("help");
  equal(d.rounds, 1);
  equal(d.mirror, false);
  for (const bad of ["0", "1.5", "x"]) {
    let err: unknown;
    try {
      parseClusterBenchArgs(["--rounds", bad]);
    } catch (e) {
      err = e;
    }
    ok(err instanceof Error && /--rounds/.test(err.message), `--rounds ${bad}: ${err}`);
  }
});

Deno.test("two halves combine into one measurement weighted by their wall time", () => {
  const m = combineMeasurements([part(300, 1, 1, 0.2, 100), part(900, 3, 3, 0.6, 120)]);
  equal(m.r.ops, 1200);
  equal(m.r.throughput, 300);
  equal(m.spec.durationMs, 4000);
  equal(m.wall, 4);
  equal(Math.round(m.clientCores * 100) / 100, 0.5);
  deepEqual(m.serverCores.map((c) => Math.round(c * 100) / 100), [0.5, 0.25]);
  deepEqual(m.rssMiB, [120]);
});

Deno.test("many mirrored parts pool their latencies: the tail of the whole, not of a part", () => {
  // Three parts of 100 puts; only the middle one has a slow 2 %: the pooled p99 (the 297th of
  // 300) is fast, while the middle part's own p99 is slow and an average of p99s would be ~17 ms.
  const m = combineMeasurements([
    part(100, 1, 1, 0.1, 90, () => 1000),
    part(100, 1, 1, 0.1, 90, (i) => i < 2 ? 50_000 : 1000),
    part(100, 1, 1, 0.1, 95, () => 1000),
  ]);
  equal(m.r.ops, 300);
  equal(m.spec.durationMs, 3000);
  ok(m.r.latencyMs.p99 < 2, `pooled p99 ${m.r.latencyMs.p99} ms`);
  ok(m.r.latencyMs.p999 > 40, `pooled p99.9 ${m.r.latencyMs.p999} ms`);
  deepEqual(m.rssMiB, [95]);
});

function part(
  ops: number,
  seconds: number,
  wall: number,
  cores: number,
  rss: number,
  latencyUs = (i: number) => 1000 * (1 + (i % 3)),
) {
  const h = new Histogram();
  for (let i = 0; i < ops; i++) h.record(latencyUs(i));
  const r = mergeRuns([{
    ops,
    errors: 0,
    errorKinds: {},
    seconds,
    throughput: ops / seconds,
    latencyMs: h.summary(),
    misses: 0,
    hist: h.toData(),
    clientLag: { maxMs: 0, totalMs: 0 },
  }]);
  const spec = {
    workload: "put" as const,
    keys: 10,
    valueSize: 8,
    concurrency: 1,
    warmupMs: 0,
    durationMs: seconds * 1000,
  };
  return {
    spec,
    r,
    wall,
    clientCores: cores,
    serverCores: [cores, cores / 2],
    otherCores: 0,
    rssMiB: [rss],
  };
}

/** Runs an interleaved bench of the stub systems with `args` (no settling, one channel). */
async function runStubBench(args: string[]): Promise<BenchRow[]> {
  const o = parseClusterBenchArgs([...args, "--settle", "0", "--channels", "1"]);
  if (o === "help") throw new Error("help");
  const rows: BenchRow[] = [];
  const failures: string[] = [];
  await benchInterleaved(
    o.systems,
    o,
    (row) => rows.push(row),
    (label, e) => failures.push(`${label}: ${e}`),
    new Set(),
  );
  deepEqual(failures, []);
  return rows;
}

Deno.test("a mirrored interleaved run measures each system in two halves and merges them", async () => {
  const rows = await runStubBench([
    "--mirror",
    "--systems",
    "stub,h2stub",
    "--workloads",
    "put",
    "--concurrency",
    "2",
    "--no-variants",
    "--duration",
    "0.6",
    "--warmup",
    "0.1",
  ]);
  deepEqual(rows.map((r) => r.system), ["stub", "h2stub"]);
  for (const r of rows) {
    equal(r.errors, 0);
    ok(r.ops > 0, `${r.system}: no operations`);
    // Two halves of 0.3 s each make the row's 0.6 s.
    ok(r.seconds >= 0.55 && r.seconds < 0.9, `${r.system}: ${r.seconds} s measured`);
    equal(Math.round(r.throughput), Math.round(r.ops / r.seconds));
  }
});

Deno.test("a one-client step runs for --one-client-duration, the others for --duration", async () => {
  const rows = await runStubBench([
    "--interleave",
    "--systems",
    "stub",
    "--workloads",
    "put",
    "--concurrency",
    "1,2",
    "--no-variants",
    "--duration",
    "0.3",
    "--one-client-duration",
    "0.9",
    "--warmup",
    "0.1",
  ]);
  deepEqual(rows.map((r) => r.concurrency), [1, 2]);
  const [one, two] = rows;
  ok(one!.seconds >= 0.85 && one!.seconds < 1.3, `one client: ${one!.seconds} s measured`);
  ok(two!.seconds >= 0.25 && two!.seconds < 0.6, `two clients: ${two!.seconds} s measured`);
});
