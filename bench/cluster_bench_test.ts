import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { parseClusterBenchArgs, planSteps, systemKind } from "./cluster_bench.ts";

Deno.test("cluster bench defaults: both systems, four concurrencies, variants on", () => {
  const o = parseClusterBenchArgs([]);
  if (o === "help") throw new Error("help");
  deepEqual(o.systems, ["concordkv", "etcd"]);
  deepEqual(o.concurrency, [1, 16, 64, 256]);
  equal(o.durationS, 5);
  equal(o.settleS, 10);
  equal(o.variants, true);
  equal(o.target, "leader");
  equal(o.interleave, false);
  equal(o.ops, undefined);
  equal(o.client, "grpc-js");
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
