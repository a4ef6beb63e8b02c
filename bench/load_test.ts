import { deepEqual, equal, ok } from "node:assert/strict";
import {
  keyOf,
  mergeParts,
  mergeRuns,
  runLoops,
  splitEven,
  StallMonitor,
  valueOf,
} from "./load.ts";
import type { KvAdapter } from "./load_adapters.ts";
import { Histogram } from "./load_stats.ts";

Deno.test("splitEven spreads a total over parts, larger first", () => {
  deepEqual(splitEven(10, 3), [4, 3, 3]);
  deepEqual(splitEven(1, 2), [1, 0]);
  deepEqual(splitEven(256, 2), [128, 128]);
});

Deno.test("keys are fixed-width and values deterministic", () => {
  equal(new TextDecoder().decode(keyOf(42)), "k/00000042");
  deepEqual(valueOf(16, 3), valueOf(16, 3));
  equal(valueOf(4096).length, 4096);
});

Deno.test("mergeParts sums counts and computes throughput over the window", () => {
  const h1 = new Histogram(), h2 = new Histogram();
  h1.record(1000);
  h2.record(3000);
  const r = mergeParts([
    {
      hist: h1.toData(),
      ops: 100,
      errors: 1,
      errorKinds: { UNAVAILABLE: 1 },
      windowMs: 2000,
      misses: 0,
      stall: { maxMs: 12, totalMs: 30 },
    },
    {
      hist: h2.toData(),
      ops: 300,
      errors: 2,
      errorKinds: { UNAVAILABLE: 2 },
      windowMs: 2000,
      misses: 1,
      stall: { maxMs: 20, totalMs: 25 },
    },
  ]);
  equal(r.ops, 400);
  equal(r.errors, 3);
  deepEqual(r.errorKinds, { UNAVAILABLE: 3 });
  equal(r.throughput, 200);
  equal(r.misses, 1);
  equal(r.hist.count, 2);
  // Threads stall in parallel: the longest stall, and the worst thread's total.
  deepEqual(r.clientLag, { maxMs: 20, totalMs: 30 });
});

Deno.test("mergeRuns adds up runs made one after the other", () => {
  const h1 = new Histogram(), h2 = new Histogram();
  for (let i = 0; i < 99; i++) h1.record(1000);
  h2.record(50_000);
  const part = (hist: Histogram, ops: number, windowMs: number, stallMs: number) =>
    mergeParts([{
      hist: hist.toData(),
      ops,
      errors: ops === 1 ? 1 : 0,
      errorKinds: ops === 1 ? { DEADLINE_EXCEEDED: 1 } : {},
      windowMs,
      misses: 0,
      stall: { maxMs: stallMs, totalMs: stallMs },
    }]);
  const r = mergeRuns([part(h1, 99, 2000, 8), part(h2, 1, 500, 30)]);
  equal(r.ops, 100);
  equal(r.seconds, 2.5);
  equal(r.throughput, 40);
  equal(r.errors, 1);
  deepEqual(r.errorKinds, { DEADLINE_EXCEEDED: 1 });
  equal(r.hist.count, 100);
  // The slow operation of the second run is the merged p99.9, not the first run's 1 ms.
  ok(r.latencyMs.p999 >= 45, `p99.9 ${r.latencyMs.p999}`);
  ok(r.latencyMs.p50 < 1.2, `p50 ${r.latencyMs.p50}`);
  // Runs follow each other: their stalls add up.
  deepEqual(r.clientLag, { maxMs: 30, totalMs: 38 });
});

function blockFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* the thread is busy, as in a GC pause */ }
}

Deno.test("StallMonitor reports a thread that stood still", async () => {
  const m = new StallMonitor();
  await new Promise((r) => setTimeout(r, 20));
  blockFor(60);
  await new Promise((r) => setTimeout(r, 20));
  const s = m.stop();
  ok(s.maxMs >= 50, `max ${s.maxMs}`);
  ok(s.totalMs >= s.maxMs);
});

Deno.test("a run reports the load thread's stalls in the window, not in the warm-up", async () => {
  const store = fakeStore();
  let t0 = 0;
  let blocked = 0;
  const part = await runLoops(
    {
      ...store,
      async get(key) {
        if (t0 === 0) t0 = performance.now();
        const since = performance.now() - t0;
        // One 100 ms stall in the warm-up (not counted), one of 80 ms in the window.
        if ((blocked === 0 && since > 10) || (blocked === 1 && since > 200)) {
          blockFor(blocked === 0 ? 100 : 80);
          blocked++;
        }
        return await store.get(key, false);
      },
    },
    { workload: "get", keys: 10, valueSize: 8, concurrency: 1, warmupMs: 150, durationMs: 250 },
    { concurrency: 1, startAt: Date.now() },
  );
  equal(blocked, 2);
  ok(part.stall.maxMs >= 70, `max ${part.stall.maxMs}`);
  ok(part.stall.totalMs < 80 + 90, `total ${part.stall.totalMs}`);
});

function fakeStore(failEvery = 0): KvAdapter & { puts: Map<string, number> } {
  const puts = new Map<string, number>();
  let calls = 0;
  return {
    puts,
    async put(key) {
      await new Promise((r) => setTimeout(r, 1));
      if (failEvery > 0 && ++calls % failEvery === 0) {
        throw Object.assign(new Error("x"), { code: 14 });
      }
      const k = new TextDecoder().decode(key);
      puts.set(k, (puts.get(k) ?? 0) + 1);
    },
    async get(key) {
      await new Promise((r) => setTimeout(r, 1));
      return puts.has(new TextDecoder().decode(key));
    },
    close() {},
  };
}

Deno.test("fill writes every key of its range even when some puts fail", async () => {
  const store = fakeStore(7);
  const part = await runLoops(
    store,
    { workload: "fill", keys: 200, valueSize: 8, concurrency: 8, warmupMs: 0, durationMs: 0 },
    { concurrency: 8, fillFrom: 50, fillTo: 150, startAt: Date.now() },
  );
  equal(store.puts.size, 100);
  ok([...store.puts.keys()].every((k) => k >= "k/00000050" && k < "k/00000150"));
  equal(part.ops, 100);
  ok(part.errors > 0);
  equal(part.errorKinds.UNAVAILABLE, part.errors);
});

Deno.test("fixed op count mode measures exactly that many operations", async () => {
  const store = fakeStore();
  const part = await runLoops(
    store,
    {
      workload: "put",
      keys: 10,
      valueSize: 8,
      concurrency: 4,
      warmupMs: 0,
      durationMs: 0,
      ops: 40,
    },
    { concurrency: 4, ops: 40, startAt: Date.now() },
  );
  equal(part.ops, 40);
  equal(part.hist.count, 40);
  ok(part.windowMs > 0);
});

Deno.test("a duration run counts reads that miss", async () => {
  const store = fakeStore();
  const part = await runLoops(
    store,
    { workload: "get", keys: 10, valueSize: 8, concurrency: 2, warmupMs: 20, durationMs: 60 },
    { concurrency: 2, startAt: Date.now() },
  );
  ok(part.ops > 0);
  equal(part.misses, part.ops);
  equal(part.windowMs, 60);
});
