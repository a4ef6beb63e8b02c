/**
 * Prometheus text exposition (format 0.0.4) of a node's metrics, served by the node on its client
 * port at `GET /metrics` (plain HTTP/1.1, as etcd serves its `/metrics` on its client port; see
 * `H2ServerOptions.http1`), with `GET /health`.
 *
 * @example
 * ```ts
 * import { renderMetrics } from "./metrics.ts";
 * const text = renderMetrics([
 *   { name: "concordkv_raft_term", help: "Current Raft term.", type: "gauge", values: [{ value: 3 }] },
 * ]);
 * console.log(text.split("\n")[2]); // concordkv_raft_term 3
 * ```
 *
 * @module
 */

/** One metric family: its samples share the name and differ by labels. */
export interface Metric {
  name: string;
  help: string;
  type: "gauge" | "counter";
  values: Array<{ labels?: Record<string, string>; value: number }>;
}

function _escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function _number(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Renders metric families as Prometheus text (HELP and TYPE lines, then the samples). */
export function renderMetrics(metrics: readonly Metric[]): string {
  const out: string[] = [];
  for (const m of metrics) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(m.name)) throw new Error(`bad metric name ${m.name}`);
    out.push(`# HELP ${m.name} ${m.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
    out.push(`# TYPE ${m.name} ${m.type}`);
    for (const v of m.values) {
      const labels = Object.entries(v.labels ?? {});
      const l = labels.length === 0
        ? ""
        : `{${labels.map(([k, x]) => `${k}="${_escapeLabel(x)}"`).join(",")}}`;
      out.push(`${m.name}${l} ${_number(v.value)}`);
    }
  }
  return out.join("\n") + "\n";
}

/** A gauge with one unlabelled sample. */
export function gauge(name: string, help: string, value: number): Metric {
  return { name, help, type: "gauge", values: [{ value }] };
}

/** A counter with one unlabelled sample. */
export function counter(name: string, help: string, value: number): Metric {
  return { name, help, type: "counter", values: [{ value }] };
}
