import { equal, ok } from "node:assert/strict";
import {
  type BenchRow,
  formatCount,
  formatRatio,
  formatSize,
  linearTicks,
  logTicks,
  renderSvg,
  renderTable,
} from "./chart.ts";

function row(system: string, workload: string, concurrency: number, tput: number, p99: number) {
  return {
    system,
    workload,
    keys: 10_000,
    valueSize: 256,
    concurrency,
    throughput: tput,
    ops: tput * 5,
    errors: 0,
    errorKinds: {},
    latencyMs: { p50: p99 / 4, p95: p99 / 2, p99, p999: p99 * 2, max: p99 * 3, mean: p99 / 3 },
    seconds: 5,
    misses: 0,
    clientCores: 0.5,
    serverCores: [0.5, 0.2, 0.2],
  } satisfies BenchRow;
}

Deno.test("sizes, counts and ratios are formatted for the table", () => {
  equal(formatSize(256), "256 B");
  equal(formatSize(4096), "4 KiB");
  equal(formatCount(100_000), "100k");
  equal(formatCount(64), "64");
  equal(formatRatio(1.234), "1.23×");
  equal(formatRatio(undefined), "—");
  equal(formatRatio(Infinity), "—");
});

Deno.test("the table pairs both systems per case with ConcordKV/etcd ratios", () => {
  const table = renderTable([
    row("concordkv", "put", 64, 3000, 40),
    row("etcd", "put", 64, 2000, 80),
    row("etcd", "get", 64, 2700, 30),
  ], ["concordkv", "etcd"]);
  const lines = table.split("\n");
  equal(lines.length, 4);
  ok(lines[0]!.includes("ops concordkv/etcd"));
  ok(lines[2]!.includes("1.50×"), lines[2]!);
  ok(lines[2]!.includes("0.50×"), lines[2]!);
  ok(lines[3]!.startsWith("| get"));
  ok(lines[3]!.includes("—"));
  // Every line has the same width.
  ok(lines.every((l) => l.length === lines[0]!.length));
});

Deno.test("a one-system table has no ratio columns", () => {
  const table = renderTable([row("etcd", "put", 1, 280, 5)], ["etcd"]);
  ok(!table.includes("etcd/") && !table.includes("×"));
  ok(table.includes("280"));
});

Deno.test("tick helpers give round values inside the range", () => {
  const lin = linearTicks(0, 4300);
  equal(lin[0], 0);
  ok(lin.every((t) => t % 500 === 0 || t % 1000 === 0));
  ok(lin[lin.length - 1]! <= 4300);
  const log = logTicks(0.8, 300);
  ok(log.includes(1) && log.includes(2) && log.includes(5) && log.includes(100));
  ok(!log.includes(500));
});

Deno.test("the SVG has one panel per workload and one line per system", () => {
  const rows = [1, 16, 64, 256].flatMap((c) => [
    row("concordkv", "put", c, 100 * c, c),
    row("etcd", "put", c, 90 * c, c * 1.2),
    row("etcd", "get", c, 120 * c, c / 2),
  ]);
  const svg = renderSvg(rows, { systems: ["concordkv", "etcd"], keys: 10_000, valueSize: 256 });
  ok(svg.startsWith("<svg"));
  ok(svg.trimEnd().endsWith("</svg>"));
  equal((svg.match(/<polyline/g) ?? []).length, 3);
  equal(
    (svg.match(/<circle cx="[\d.]+" cy="[\d.]+" r="3.5" fill="[^"]+"><title>/g) ?? []).length,
    12,
  );
  ok(svg.includes(">put</text>") && svg.includes(">get</text>"));
  ok(!svg.includes("NaN"));
});
