import { deepEqual, equal, ok } from "node:assert/strict";
import { bucketOf, bucketRange, Histogram } from "./load_stats.ts";

Deno.test("histogram buckets are exact below 256 µs and contiguous above", () => {
  for (let v = 0; v < 256; v++) equal(bucketOf(v), v);
  let prevHigh = 255;
  for (let i = 256; i < 256 + 23 * 128; i++) {
    const [lo, hi] = bucketRange(i);
    equal(lo, prevHigh + 1, `bucket ${i} starts where ${i - 1} ended`);
    ok(hi >= lo);
    equal(bucketOf(lo), i);
    equal(bucketOf(hi), i);
    prevHigh = hi;
  }
});

Deno.test("histogram bucket width is within 1/128 of the value", () => {
  for (const v of [300, 1_000, 12_345, 999_999, 50_000_000]) {
    const [lo, hi] = bucketRange(bucketOf(v));
    ok(lo <= v && v <= hi);
    ok((hi - lo + 1) / lo <= 1 / 128 + 1e-12, `width at ${v}`);
  }
});

Deno.test("histogram percentiles of 1..1000 ms are within 0.4 %", () => {
  const h = new Histogram();
  for (let i = 1000; i >= 1; i--) h.record(i * 1000);
  for (const [p, want] of [[50, 500_000], [95, 950_000], [99, 990_000], [99.9, 999_000]]) {
    const got = h.percentile(p!);
    ok(Math.abs(got - want!) / want! <= 0.004, `p${p}: ${got} vs ${want}`);
  }
  equal(h.percentile(100), 1_000_000);
  const s = h.summary();
  equal(s.max, 1000);
  equal(s.mean, 500.5);
});

Deno.test("histogram of one value reports that value at every percentile", () => {
  const h = new Histogram();
  h.record(4321);
  for (const p of [1, 50, 99.9, 100]) equal(h.percentile(p), 4321);
});

Deno.test("empty histogram reports zeros", () => {
  deepEqual(new Histogram().summary(), { p50: 0, p95: 0, p99: 0, p999: 0, max: 0, mean: 0 });
});

Deno.test("merged histograms equal one histogram of all values", () => {
  const a = new Histogram(), b = new Histogram(), all = new Histogram();
  for (let i = 0; i < 5000; i++) {
    const v = (i * 7919) % 200_000;
    (i % 3 === 0 ? a : b).record(v);
    all.record(v);
  }
  const m = Histogram.fromData(a.toData());
  m.merge(b.toData());
  deepEqual(m.toData(), all.toData());
  deepEqual(m.summary(), all.summary());
});
