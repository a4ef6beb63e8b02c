/**
 * Re-checks a saved history: `deno run --allow-read --allow-write tests/linearizability/check_main.ts
 * HISTORY.json [--budget-s N] [--svg OUT.svg] [--key K]`.
 *
 * Prints the failing window of a violation to stderr, writes its timeline to `--svg` (default
 * `<history>.violation.svg`), and ends with one line `linearizable: yes|no|unknown` (exit 0 only
 * on yes). `--key` checks one key only.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkHistory, formatViolation } from "./checker.ts";
import { loadHistory } from "./history.ts";
import { timelineSvg } from "./timeline.ts";

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      "budget-s": { type: "string", default: "120" },
      svg: { type: "string" },
      key: { type: "string" },
    },
  });
  const path = positionals[0];
  if (path === undefined) {
    console.error("usage: check_main.ts HISTORY.json [--budget-s N] [--svg OUT.svg] [--key K]");
    return 2;
  }
  const history = await loadHistory(path);
  const ops = values.key === undefined
    ? history.ops
    : history.ops.filter((o) => o.key === values.key);
  const r = checkHistory(ops, { timeBudgetMs: Number(values["budget-s"]) * 1000 });
  for (const k of r.keys) {
    if (k.verdict !== "ok") {
      console.error(`key ${k.key}: ${k.verdict} (${k.ops} ops, ${k.steps} steps)`);
    }
  }
  if (r.violation !== undefined) {
    const v = r.violation;
    console.error(formatViolation(v));
    const svg = values.svg ?? `${path.replace(/\.json$/, "")}.violation.svg`;
    const highlight = new Set([v.blocked.id, ...v.minimal.map((o) => o.id)]);
    const lo = Math.min(...[...v.writers.slice(-20), ...v.window].map((o) => o.invoke)) - 50;
    const hi = Math.max(...v.window.map((o) => o.complete)) + 50;
    await Deno.writeTextFile(
      svg,
      timelineSvg([...v.writers.slice(-20), ...v.window], {
        title: `key ${v.key}: not linearizable; red: minimal failing subset`,
        highlight,
        events: history.events.filter((e) => e.time >= lo && e.time <= hi),
      }),
    );
    console.error(`timeline: ${svg}`);
  }
  console.error(`checked ${r.keys.length} keys, ${ops.length} ops in ${r.elapsedMs.toFixed(0)} ms`);
  console.log(`linearizable: ${r.result}`);
  return r.result === "yes" ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`check: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
