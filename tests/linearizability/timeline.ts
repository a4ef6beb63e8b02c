/**
 * A self-contained SVG timeline of operations: one row per client, one bar per op from invocation
 * to completion (green ok, grey failed, orange dashed to the right edge for unknown), the ops to
 * highlight outlined in red, and nemesis events as vertical lines.
 *
 * @example
 * ```ts
 * import { timelineSvg } from "./timeline.ts";
 * const svg = timelineSvg([
 *   { id: 0, client: 0, key: "x", f: "put", value: "1", invoke: 0, complete: 10, outcome: "ok" },
 * ], { title: "example" });
 * await Deno.writeTextFile("/tmp/t.svg", svg);
 * ```
 *
 * @module
 */
import { describeOp, type HistoryEvent, type Op } from "./history.ts";

/** Options of {@linkcode timelineSvg}. */
export interface TimelineOptions {
  title?: string;
  /** Op ids outlined in red. */
  highlight?: Iterable<number>;
  /** Nemesis events to draw (those inside the time range). */
  events?: HistoryEvent[];
  /** Width of the plot area in px (default 1200). */
  width?: number;
}

function _esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** Renders `ops` as an SVG document (a string). */
export function timelineSvg(ops: Op[], opts: TimelineOptions = {}): string {
  const width = opts.width ?? 1200;
  const left = 90, top = 56, rowH = 34, barH = 16;
  const highlight = new Set(opts.highlight ?? []);
  const clients = [...new Set(ops.map((o) => o.client))].sort((a, b) => a - b);
  const row = new Map(clients.map((c, i) => [c, i]));
  const tMin = Math.min(...ops.map((o) => o.invoke));
  const finite = ops.map((o) => o.complete);
  let tMax = Math.max(...finite);
  if (!(tMax > tMin)) tMax = tMin + 1;
  const span = tMax - tMin;
  const pad = span * 0.08;
  const x = (t: number) => left + ((t - tMin) / (span + pad)) * width;
  const height = top + clients.length * rowH + 40;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + 20}" height="${height}" ` +
      `font-family="monospace" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  );
  if (opts.title) out.push(`<text x="10" y="18" font-size="13">${_esc(opts.title)}</text>`);
  for (const [c, i] of row) {
    const y = top + i * rowH;
    out.push(
      `<text x="10" y="${y + barH - 3}">client ${c}</text>`,
      `<line x1="${left}" x2="${left + width}" y1="${y + barH / 2}" y2="${
        y + barH / 2
      }" stroke="#eee"/>`,
    );
  }
  for (const e of opts.events ?? []) {
    if (e.time < tMin || e.time > tMax + pad) continue;
    const ex = x(e.time);
    const color = e.kind === "fault" ? "#c00" : e.kind === "heal" ? "#070" : "#888";
    out.push(
      `<line x1="${ex}" x2="${ex}" y1="${top - 10}" y2="${
        height - 30
      }" stroke="${color}" stroke-dasharray="2,3"/>`,
      `<text x="${ex + 2}" y="${height - 18}" fill="${color}">${_esc(e.text)}</text>`,
    );
  }
  for (const o of ops) {
    const y = top + row.get(o.client)! * rowH;
    const x0 = x(o.invoke);
    const x1 = o.outcome === "unknown" ? left + width : Math.max(x(o.complete), x0 + 2);
    const fill = o.outcome === "ok" ? "#cfe8cf" : o.outcome === "fail" ? "#e0e0e0" : "#ffe0b0";
    const stroke = highlight.has(o.id) ? "#d00" : o.outcome === "unknown" ? "#d80" : "#555";
    const sw = highlight.has(o.id) ? 2.5 : 1;
    const dash = o.outcome === "unknown" ? ` stroke-dasharray="5,3"` : "";
    const label = `#${o.id} ${describeOp(o)}`;
    out.push(
      `<g><title>${
        _esc(
          `${label}\ninvoke ${o.invoke.toFixed(2)} complete ${
            o.outcome === "unknown" ? "∞" : o.complete.toFixed(2)
          }${o.error ? `\n${o.error}` : ""}`,
        )
      }</title>`,
      `<rect x="${x0}" y="${y}" width="${x1 - x0}" height="${barH}" fill="${fill}" ` +
        `stroke="${stroke}" stroke-width="${sw}"${dash}/>`,
      `<text x="${x0 + 2}" y="${y + barH + 11}">${_esc(label)}</text></g>`,
    );
  }
  const ticks = 8;
  for (let k = 0; k <= ticks; k++) {
    const t = tMin + (span * k) / ticks;
    out.push(
      `<text x="${x(t)}" y="${top - 14}" fill="#666">${(t - tMin).toFixed(1)}ms</text>`,
    );
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}
