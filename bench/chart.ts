/**
 * Rendering of cluster-benchmark results: the text table with ConcordKV/etcd ratios and an SVG
 * chart of throughput against p99 latency (one panel per workload, one line per system, points
 * at each concurrency). Pure functions of the result rows.
 *
 * @module
 */
import type { LatencySummary } from "./load_stats.ts";

/** One measured run in a report. */
export interface BenchRow {
  system: string;
  workload: string;
  keys: number;
  valueSize: number;
  concurrency: number;
  /** Successful operations per second. */
  throughput: number;
  ops: number;
  errors: number;
  errorKinds: Record<string, number>;
  latencyMs: LatencySummary;
  seconds: number;
  /** Reads that found nothing. */
  misses: number;
  /** CPU cores used by the load client process during the run (warm-up included). */
  clientCores: number;
  /**
   * How late the load client's 5 ms timer ran in the window, ms: the longest delay, and all delays
   * over 5 ms added up. GC pauses of the client show here, and so does a saturated client thread.
   */
  clientLagMs?: { maxMs: number; totalMs: number };
  /** CPU cores used by each server process, leader first. */
  serverCores: number[];
  /** CPU cores used by other processes on the machine during the run (noise). */
  otherCores?: number;
  /** Resident memory of each server process at the end of the run, MiB, leader first. */
  serverRssMiB?: number[];
}

/** The identity of a measurement, without the system. */
export function caseKey(r: Pick<BenchRow, "workload" | "keys" | "valueSize" | "concurrency">) {
  return `${r.workload}|${r.keys}|${r.valueSize}|${r.concurrency}`;
}

/** `1024` → `1 KiB`, `256` → `256 B`, `10000` → `10k`. */
export function formatSize(bytes: number): string {
  return bytes >= 1024 && bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

/** `10000` → `10k`, `100000` → `100k`. */
export function formatCount(n: number): string {
  return n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
}

/** A ratio as `1.23×`, or `—` when undefined. */
export function formatRatio(r: number | undefined): string {
  return r === undefined || !Number.isFinite(r) ? "—" : `${r.toFixed(2)}×`;
}

function fmtNum(n: number): string {
  return n >= 100 ? String(Math.round(n)) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/**
 * The results table. With two systems, each case gets both systems' throughput and p50/p99 and
 * the ratios `a/b` of throughput and of p99 (the first system over the second, e.g.
 * ConcordKV/etcd). A system missing from a case shows `—`. When the rows carry `otherCores`, a
 * last column `bg cpu` shows the CPU other processes used meanwhile (worst of the systems).
 *
 * @example
 * ```ts
 * renderTable([], ["concordkv", "etcd"]); // just the header
 * ```
 */
export function renderTable(rows: BenchRow[], systems: string[]): string {
  const cases: BenchRow[] = [];
  const seen = new Set<string>();
  for (const r of rows) {
    const k = caseKey(r);
    if (!seen.has(k)) {
      seen.add(k);
      cases.push(r);
    }
  }
  const find = (sys: string, c: BenchRow) =>
    rows.find((r) => r.system === sys && caseKey(r) === caseKey(c));
  const header = ["workload", "keys", "value", "conc"];
  for (const s of systems) header.push(`${s} ops/s`, "p50 ms", "p99 ms", "err");
  const ratio = systems.length === 2;
  if (ratio) header.push(`ops ${systems[0]}/${systems[1]}`, `p99 ${systems[0]}/${systems[1]}`);
  const noise = rows.some((r) => r.otherCores !== undefined);
  if (noise) header.push("bg cpu");
  const lines: string[][] = [header];
  for (const c of cases) {
    const line = [c.workload, formatCount(c.keys), formatSize(c.valueSize), String(c.concurrency)];
    const found = systems.map((s) => find(s, c));
    for (const r of found) {
      if (r === undefined) line.push("—", "—", "—", "—");
      else {
        line.push(
          String(Math.round(r.throughput)),
          fmtNum(r.latencyMs.p50),
          fmtNum(r.latencyMs.p99),
          String(r.errors),
        );
      }
    }
    if (ratio) {
      const [a, b] = found;
      line.push(
        formatRatio(a && b && b.throughput > 0 ? a.throughput / b.throughput : undefined),
        formatRatio(a && b && b.latencyMs.p99 > 0 ? a.latencyMs.p99 / b.latencyMs.p99 : undefined),
      );
    }
    if (noise) {
      // Cores other processes used during the runs of this case (worst system): noise.
      const bg = Math.max(...found.map((r) => r?.otherCores ?? 0));
      line.push(bg.toFixed(2));
    }
    lines.push(line);
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const fmt = (l: string[]) =>
    "| " + l.map((cell, i) => i < 4 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))
      .join(" | ") +
    " |";
  const sep = "|" + widths.map((w, i) => "-".repeat(w + 1) + (i < 4 ? "-" : ":")).join("|") + "|";
  return [fmt(lines[0]!), sep, ...lines.slice(1).map(fmt)].join("\n");
}

/** About `count` round tick values covering `[lo, hi]` (linear axis). */
export function linearTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.round(t * 1e9) / 1e9);
  }
  return ticks;
}

/** Ticks 1, 2, 5 × powers of ten within `[lo, hi]` (log axis, lo > 0). */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(Number(t.toPrecision(6)));
    }
  }
  return ticks;
}

const COLORS: Record<string, string> = { concordkv: "#1f6fd1", etcd: "#e0701a" };
const FALLBACK = ["#2a9d4b", "#9b3fc4", "#c43f5a"];

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

function tickLabel(v: number): string {
  if (v >= 1000) return `${Number((v / 1000).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

/**
 * An SVG chart: one panel per workload of the base case (`keys`, `valueSize`), x = throughput
 * (ops/s), y = p99 latency (ms, log scale), one polyline per system through its concurrency
 * levels, each point labelled with its concurrency.
 */
export function renderSvg(
  rows: BenchRow[],
  opts: { systems: string[]; keys: number; valueSize: number; title?: string },
): string {
  const base = rows.filter((r) =>
    r.keys === opts.keys && r.valueSize === opts.valueSize && r.ops > 0
  );
  const workloads = [...new Set(base.map((r) => r.workload))];
  const cols = Math.min(2, Math.max(1, workloads.length));
  const rowsN = Math.max(1, Math.ceil(workloads.length / cols));
  const pw = 440, ph = 300, ml = 58, mr = 16, mt = 30, mb = 44, top = 56;
  const width = cols * pw, height = top + rowsN * ph + 10;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${
      escapeXml(
        opts.title ??
          `Throughput vs p99 latency (${formatCount(opts.keys)} keys, ${
            formatSize(opts.valueSize)
          } values)`,
      )
    }</text>`,
  );
  opts.systems.forEach((s, i) => {
    const color = COLORS[s] ?? FALLBACK[i % FALLBACK.length]!;
    const x = width / 2 - 90 + i * 110;
    out.push(
      `<line x1="${x}" y1="38" x2="${x + 22}" y2="38" stroke="${color}" stroke-width="2.5"/>`,
      `<circle cx="${x + 11}" cy="38" r="3.5" fill="${color}"/>`,
      `<text x="${x + 28}" y="42">${escapeXml(s)}</text>`,
    );
  });
  workloads.forEach((wl, idx) => {
    const ox = (idx % cols) * pw, oy = top + Math.floor(idx / cols) * ph;
    const pts = base.filter((r) => r.workload === wl);
    const maxX = Math.max(1, ...pts.map((r) => r.throughput)) * 1.08;
    const p99s = pts.map((r) => Math.max(0.01, r.latencyMs.p99));
    const minY = Math.min(...p99s) / 1.5, maxY = Math.max(...p99s) * 1.5;
    const x0 = ox + ml, x1 = ox + pw - mr, y0 = oy + ph - mb, y1 = oy + mt;
    const sx = (v: number) => x0 + (v / maxX) * (x1 - x0);
    const ly = (v: number) => Math.log10(Math.max(v, 0.01));
    const sy = (v: number) => y0 - ((ly(v) - ly(minY)) / (ly(maxY) - ly(minY))) * (y0 - y1);
    out.push(
      `<text x="${(x0 + x1) / 2}" y="${oy + 18}" text-anchor="middle" font-size="13" ` +
        `font-weight="bold">${escapeXml(wl)}</text>`,
      `<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="none" ` +
        `stroke="#999"/>`,
    );
    for (const t of linearTicks(0, maxX)) {
      const x = sx(t).toFixed(1);
      out.push(
        `<line x1="${x}" y1="${y0}" x2="${x}" y2="${y1}" stroke="#eee"/>`,
        `<text x="${x}" y="${y0 + 14}" text-anchor="middle">${tickLabel(t)}</text>`,
      );
    }
    for (const t of logTicks(minY, maxY)) {
      const y = sy(t).toFixed(1);
      out.push(
        `<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#eee"/>`,
        `<text x="${x0 - 5}" y="${y}" text-anchor="end" dominant-baseline="middle">${
          tickLabel(t)
        }</text>`,
      );
    }
    out.push(
      `<text x="${(x0 + x1) / 2}" y="${y0 + 32}" text-anchor="middle">throughput (ops/s)</text>`,
      `<text x="${ox + 14}" y="${(y0 + y1) / 2}" text-anchor="middle" ` +
        `transform="rotate(-90 ${ox + 14} ${(y0 + y1) / 2})">p99 latency (ms, log)</text>`,
    );
    opts.systems.forEach((s, i) => {
      const color = COLORS[s] ?? FALLBACK[i % FALLBACK.length]!;
      const series = pts.filter((r) => r.system === s).sort((a, b) =>
        a.concurrency - b.concurrency
      );
      if (series.length === 0) return;
      const path = series.map((r) =>
        `${sx(r.throughput).toFixed(1)},${sy(r.latencyMs.p99).toFixed(1)}`
      )
        .join(" ");
      out.push(`<polyline points="${path}" fill="none" stroke="${color}" stroke-width="2"/>`);
      for (const r of series) {
        const x = sx(r.throughput), y = sy(r.latencyMs.p99);
        out.push(
          `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${color}">` +
            `<title>${escapeXml(s)} c=${r.concurrency}: ${Math.round(r.throughput)} ops/s, ` +
            `p99 ${r.latencyMs.p99} ms</title></circle>`,
          `<text x="${(x + 5).toFixed(1)}" y="${(y - 5).toFixed(1)}" fill="${color}" ` +
            `font-size="10">c${r.concurrency}</text>`,
        );
      }
    });
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
