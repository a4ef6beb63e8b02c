/**
 * Storage benchmark: db_bench-style workloads on ConcordKV's KVEngine and on LevelDB (the npm
 * package `classic-level`), each engine in its own child process (so peak RSS is its own), in
 * the same run with the same sync setting, 16-byte keys and 100-byte random values.
 *
 * Workloads, in order, per engine:
 * - `fillseq`: N single puts, ascending keys, fresh database.
 * - `fillrandom`: N puts in random order, batches of `--batch` (fresh database).
 * - `overwrite`: N single puts of random existing keys.
 * - `readrandom`: N single gets of random existing keys.
 * - `readseq`: one full scan.
 * - `scan100`: N/100 range scans of 100 pairs from random keys.
 * - `reopen`: close, open and one get (then `compact` + disk use).
 * - `deleterandom`: N single deletes of random keys.
 *
 * @example
 * ```sh
 * deno task bench storage --num 1000000
 * deno run --allow-read --allow-write=/tmp --allow-run --allow-env --allow-ffi bench/storage_bench.ts --num 200000
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NODE_V8_FLAGS } from "../server/launch.ts";

const USAGE =
  `Usage: storage_bench.ts [--num N] [--batch B] [--sync none|always] [--engines concordkv,leveldb]
                        [--workloads fillseq,fillrandom,...] [--markdown FILE] [--dir DIR]`;

/** One measured row. */
interface Row {
  workload: string;
  ops: number;
  seconds: number;
  bytes: number;
  p50us?: number;
  p99us?: number;
  note?: string;
  /** Peak RSS of the process so far, sampled when the workload ended (bytes). */
  peakRss?: number;
}

interface EngineAdapter {
  put(k: Uint8Array, v: Uint8Array): Promise<void>;
  get(k: Uint8Array): Promise<Uint8Array | undefined>;
  del(k: Uint8Array): Promise<void>;
  batch(ops: Array<{ key: Uint8Array; value: Uint8Array }>): Promise<void>;
  scan(start: Uint8Array | undefined, limit: number | undefined): AsyncIterable<unknown>;
  compact(): Promise<void>;
  close(): Promise<void>;
}

const ALL = [
  "fillseq",
  "fillrandom",
  "overwrite",
  "readrandom",
  "readseq",
  "scan100",
  "reopen",
  "deleterandom",
];

async function openEngine(name: string, dir: string, sync: string): Promise<EngineAdapter> {
  if (name === "null") {
    // No storage at all: measures what the harness itself costs (peak RSS, loop overhead).
    await Deno.mkdir(dir, { recursive: true });
    const one = new Uint8Array(100);
    return {
      put: () => Promise.resolve(),
      get: () => Promise.resolve(one),
      del: () => Promise.resolve(),
      batch: () => Promise.resolve(),
      scan: async function* (_start, limit) {
        for (let i = 0; i < (limit ?? 1_000_000); i++) yield one;
      },
      compact: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
  }
  if (name === "concordkv") {
    const { KVEngine } = await import("../storage/mod.ts");
    const db = await KVEngine.open(dir, { sync: sync as "none" | "always", log: () => {} });
    return {
      put: (k, v) => db.put(k, v),
      get: (k) => db.get(k),
      del: (k) => db.delete(k),
      batch: (ops) => db.write(ops.map((o) => ({ type: "put", key: o.key, value: o.value }))),
      scan: (start, limit) => db.scan({ start, limit }),
      compact: () => db.compact(),
      close: () => db.close(),
    };
  }
  const { ClassicLevel } = await import("classic-level");
  const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, {
    keyEncoding: "view",
    valueEncoding: "view",
  });
  await db.open();
  const wo = { sync: sync === "always" };
  return {
    put: (k, v) => db.put(k, v, wo),
    get: (k) => db.get(k),
    del: (k) => db.del(k, wo),
    batch: (ops) =>
      db.batch(ops.map((o) => ({ type: "put" as const, key: o.key, value: o.value })), wo),
    scan: (start, limit) =>
      db.iterator(start ? { gte: start, limit: limit ?? -1 } : { limit: limit ?? -1 }),
    compact: () => db.compactRange(new Uint8Array([0]), new Uint8Array([0xff])),
    close: () => db.close(),
  };
}

function key(i: number, out = new Uint8Array(16)): Uint8Array {
  // 16 decimal digits, like db_bench's "%016d".
  for (let p = 15; p >= 0; p--) {
    out[p] = 48 + (i % 10);
    i = Math.floor(i / 10);
  }
  return out;
}

function makeRng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296 * n) | 0;
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/**
 * Removes a closed database's directory. A failure ("Directory not empty") has been seen
 * intermittently after ConcordKV's close (cause not found yet): name what is left and retry,
 * so the run still reports its numbers.
 */
async function removeDb(dir: string): Promise<void> {
  for (let attempt = 1;; attempt++) {
    try {
      await Deno.remove(dir, { recursive: true });
      return;
    } catch (e) {
      if (attempt >= 5) throw e;
      const left: string[] = [];
      for await (const entry of Deno.readDir(dir)) left.push(entry.name);
      console.error(`remove ${dir} failed (${e}); left: ${left.join(", ")}; retrying`);
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) total += (await Deno.stat(`${dir}/${e.name}`)).size;
  }
  return total;
}

async function child(
  engine: string,
  num: number,
  batch: number,
  sync: string,
  workloads: Set<string>,
  base: string,
) {
  const rows: Row[] = [];
  let peakRss = 0;
  const sampleRss = () => {
    peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  };
  const sampler = setInterval(sampleRss, 20);
  // Stamp each row with the peak RSS so far, to see which workload grows the process.
  const rowsPush = rows.push.bind(rows);
  rows.push = (...r: Row[]) => {
    sampleRss();
    for (const x of r) x.peakRss = peakRss;
    return rowsPush(...r);
  };
  const rng = makeRng(42);
  const valuePool = new Uint8Array(1 << 20);
  for (let i = 0; i < valuePool.length; i++) valuePool[i] = rng(256);
  const value = () => {
    const off = rng(valuePool.length - 100);
    return valuePool.subarray(off, off + 100);
  };
  const lat = new Float64Array(num);
  const timed = async (
    workload: string,
    ops: number,
    fn: (i: number) => Promise<void>,
    bytesPerOp = 116,
  ) => {
    const t0 = performance.now();
    for (let i = 0; i < ops; i++) {
      const a = performance.now();
      await fn(i);
      lat[i] = (performance.now() - a) * 1000;
      // The interval sampler never runs while an engine's ops resolve in microtasks (no macrotask
      // turn): sample here too, so a peak inside a workload is seen for every engine.
      if ((i & 1023) === 0) sampleRss();
    }
    const seconds = (performance.now() - t0) / 1000;
    const sorted = lat.subarray(0, ops).sort();
    rows.push({
      workload,
      ops,
      seconds,
      bytes: ops * bytesPerOp,
      p50us: percentile(sorted, 0.5),
      p99us: percentile(sorted, 0.99),
    });
  };
  const perm = new Uint32Array(num);
  for (let i = 0; i < num; i++) perm[i] = i;
  for (let i = num - 1; i > 0; i--) {
    const j = rng(i + 1);
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }

  if (workloads.has("fillseq")) {
    const dir = `${base}/${engine}-seq`;
    const db = await openEngine(engine, dir, sync);
    await timed("fillseq", num, (i) => db.put(key(i), value()));
    await db.close();
    await removeDb(dir);
  }
  const dir = `${base}/${engine}-main`;
  let db = await openEngine(engine, dir, sync);
  {
    const t0 = performance.now();
    const batches = Math.ceil(num / batch);
    for (let b = 0; b < batches; b++) {
      const ops = [];
      for (let i = b * batch; i < Math.min(num, (b + 1) * batch); i++) {
        ops.push({ key: key(perm[i]!), value: value() });
      }
      const a = performance.now();
      await db.batch(ops);
      lat[b] = (performance.now() - a) * 1000;
      sampleRss();
    }
    const sorted = lat.subarray(0, batches).sort();
    if (workloads.has("fillrandom")) {
      rows.push({
        workload: `fillrandom (batch ${batch})`,
        ops: num,
        seconds: (performance.now() - t0) / 1000,
        bytes: num * 116,
        p50us: percentile(sorted, 0.5),
        p99us: percentile(sorted, 0.99),
        note: "latency per batch",
      });
    }
  }
  if (workloads.has("overwrite")) {
    await timed("overwrite", num, () => db.put(key(rng(num)), value()));
  }
  const k = new Uint8Array(16);
  if (workloads.has("readrandom")) {
    let found = 0;
    await timed("readrandom", num, async () => {
      if ((await db.get(key(rng(num), k))) !== undefined) found++;
    });
    if (found !== num) throw new Error(`readrandom found ${found} of ${num}`);
  }
  if (workloads.has("readseq")) {
    const t0 = performance.now();
    let n = 0;
    for await (const _ of db.scan(undefined, undefined)) if ((++n & 16383) === 0) sampleRss();
    if (n !== num) throw new Error(`readseq saw ${n} of ${num}`);
    rows.push({
      workload: "readseq",
      ops: n,
      seconds: (performance.now() - t0) / 1000,
      bytes: n * 116,
    });
  }
  if (workloads.has("scan100")) {
    const scans = Math.max(1, Math.floor(num / 100));
    await timed("scan100", scans, async () => {
      let n = 0;
      for await (const _ of db.scan(key(rng(num)), 100)) n++;
      if (n === 0) throw new Error("empty scan");
    }, 116 * 100);
    rows[rows.length - 1]!.note = "ops = scans of 100 pairs";
  }
  if (workloads.has("reopen")) {
    const q0 = performance.now();
    await db.close();
    const closeMs = performance.now() - q0;
    const t0 = performance.now();
    db = await openEngine(engine, dir, sync);
    if ((await db.get(key(0))) === undefined) throw new Error("key 0 missing after reopen");
    rows.push({
      workload: "reopen",
      ops: 1,
      seconds: (performance.now() - t0) / 1000,
      bytes: 0,
      note: `${num} keys; the close before it took ${closeMs.toFixed(0)} ms`,
    });
    const before = await dirBytes(dir);
    const c0 = performance.now();
    await db.compact();
    const after = await dirBytes(dir);
    rows.push({
      workload: "compact",
      ops: 1,
      seconds: (performance.now() - c0) / 1000,
      bytes: 0,
      note: `disk ${(before / 2 ** 20).toFixed(1)} → ${(after / 2 ** 20).toFixed(1)} MiB (live ≈ ${
        (num * 116 / 2 ** 20).toFixed(1)
      } MiB)`,
    });
  }
  if (workloads.has("deleterandom")) {
    await timed("deleterandom", num, () => db.del(key(rng(num))), 16);
  }
  await db.close();
  const disk = await dirBytes(dir);
  await removeDb(dir);
  clearInterval(sampler);
  sampleRss();
  console.log(JSON.stringify({ engine, rows, peakRss, diskAfter: disk }));
}

interface ChildResult {
  engine: string;
  rows: Row[];
  peakRss: number;
  diskAfter: number;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

function table(results: ChildResult[], opts: { num: number; sync: string; batch: number }): string {
  const [a, b] = results;
  const lines: string[] = [];
  lines.push(
    `N = ${
      fmt(opts.num)
    } keys, 16 B keys, 100 B values, sync ${opts.sync}, Deno ${Deno.version.deno}`,
  );
  lines.push("");
  const names = results.map((r) => r.engine);
  lines.push(
    `| workload | ${
      names.map((n) => `${n} ops/s | ${n} MB/s | ${n} p50/p99 µs`).join(" | ")
    } | ratio ${names[0]}/${names[1] ?? "-"} |`,
  );
  lines.push(`|---|${names.map(() => "---:|---:|---:").join("|")}|---:|`);
  const rowsA = a?.rows ?? [];
  for (const ra of rowsA) {
    const rb = b?.rows.find((r) => r.workload === ra.workload);
    const cell = (r: Row | undefined) => {
      if (!r) return "- | - | -";
      if (r.workload === "reopen" || r.workload === "compact") {
        return `${fmt(r.seconds * 1000)} ms | | ${r.note ?? ""}`;
      }
      const ops = r.ops / r.seconds;
      const lat = r.p50us !== undefined ? `${fmt(r.p50us, 1)} / ${fmt(r.p99us!, 1)}` : "";
      return `${fmt(ops)} | ${fmt(r.bytes / r.seconds / 1e6, 1)} | ${lat}`;
    };
    let ratio = "-";
    if (rb) {
      ratio = ra.workload === "reopen" || ra.workload === "compact"
        ? `${(rb.seconds / ra.seconds).toFixed(2)}× (time)`
        : `${((ra.ops / ra.seconds) / (rb.ops / rb.seconds)).toFixed(2)}×`;
    }
    lines.push(`| ${ra.workload} | ${cell(ra)} | ${cell(rb)} | ${ratio} |`);
  }
  lines.push("");
  for (const r of results) {
    lines.push(
      `- ${r.engine}: peak RSS ${fmt(r.peakRss / 2 ** 20, 1)} MiB, disk after deleterandom ${
        fmt(r.diskAfter / 2 ** 20, 1)
      } MiB`,
    );
  }
  lines.push("");
  lines.push(
    "Ratios are ConcordKV ÷ LevelDB throughput (> 1 is ConcordKV faster); for reopen/compact, LevelDB time ÷ ConcordKV time.",
  );
  return lines.join("\n");
}

/** Entry point (also used by `bench/main.ts`). Returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      num: { type: "string", default: "1000000" },
      batch: { type: "string", default: "1000" },
      sync: { type: "string", default: "none" },
      engines: { type: "string", default: "concordkv,leveldb" },
      workloads: { type: "string", default: ALL.join(",") },
      markdown: { type: "string" },
      dir: { type: "string" },
      child: { type: "string" },
      "cpu-prof": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const num = Number(values.num);
  const batch = Number(values.batch);
  const sync = values.sync!;
  if (
    !Number.isInteger(num) || num < 100 || !Number.isInteger(batch) || batch < 1 ||
    !["none", "always"].includes(sync)
  ) {
    console.error(USAGE);
    return 2;
  }
  const workloads = new Set(values.workloads!.split(","));
  if (values.child) {
    await child(values.child, num, batch, sync, workloads, values.dir!);
    return 0;
  }
  const base = values.dir ?? await Deno.makeTempDir({ prefix: "concordkv-bench-" });
  const results: ChildResult[] = [];
  try {
    for (const engine of values.engines!.split(",")) {
      console.error(`running ${engine} (N=${num})…`);
      const self = new URL(import.meta.url).pathname;
      // Both engines run under the V8 flags a ConcordKV node runs with (server/launch.ts).
      const flags = [
        "run",
        NODE_V8_FLAGS,
        "--no-prompt",
        "--allow-read",
        `--allow-write=${base}`,
        "--allow-env",
        "--allow-ffi",
        "--allow-sys",
      ];
      if (values["cpu-prof"]) flags.push("--cpu-prof", `--cpu-prof-dir=${base}/prof-${engine}`);
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          ...flags,
          self,
          "--child",
          engine,
          "--num",
          String(num),
          "--batch",
          String(batch),
          "--sync",
          sync,
          "--workloads",
          [...workloads].join(","),
          "--dir",
          base,
        ],
        stdout: "piped",
        stderr: "inherit",
        env: { RUST_BACKTRACE: "0" },
      }).output();
      if (!out.success) {
        console.error(`${engine} failed`);
        return 1;
      }
      const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
      results.push(JSON.parse(text));
    }
  } finally {
    if (values.dir === undefined && !values["cpu-prof"]) {
      await Deno.remove(base, { recursive: true }).catch(() => {});
    } else console.error(`data and profiles left in ${base}`);
  }
  const md = table(results, { num, sync, batch });
  console.log(md);
  if (values.markdown) await Deno.writeTextFile(values.markdown, md + "\n");
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`storage bench: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
