/**
 * `deno task chaos`: a Jepsen-style run against real node processes.
 *
 * Starts a cluster on free ports (peer links through fault-injecting proxies), runs ~10
 * concurrent clients doing put/get/delete/cas on a few keys while the nemesis kills, pauses and
 * partitions nodes, heals, reads every key, checks the history for linearizability, stops
 * everything, and prints exactly one line on stdout:
 *
 *     chaos: N ops (ok A, failed B, unknown C), F faults, linearizable: yes|no|unknown
 *
 * Exit status 0 only for `yes`. Progress, the failing window of a violation and errors go to
 * stderr. Ctrl-C ends the workload early (the run still heals, checks and cleans up); a second
 * Ctrl-C stops the nodes and exits at once.
 *
 * @example
 * ```sh
 * deno task chaos --duration 60 --seed 7 --nemesis kill,pause,partition
 * deno task chaos --duration 20 --nemesis partition --unsafe-local-reads   # must say "no"
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { FAULT_KINDS, type FaultKind } from "./nemesis.ts";
import { type ChaosOptions, type ChaosReport, runChaos, summaryLine } from "./run.ts";

/** The usage text. */
export const CHAOS_USAGE = `Usage: deno task chaos --duration S [options]

Runs a workload against a local cluster under faults and checks linearizability.

Options:
  --duration S             seconds of workload (required)
  --seed N                 seed of every random choice (default: random, printed)
  --nemesis LIST           faults, comma-separated: kill,pause,partition (default all; "none")
  --nodes N                3 or 5 (default 3)
  --unsafe-local-reads     nodes answer reads locally (self-test: must report "no")
  --read-mode M            the nodes' --read-mode: readindex (default) or lease
  --out DIR                history, node logs, violation timeline, under data/ or /tmp
                           (default data/chaos/<seed>-<time>)
  --clients N              concurrent clients (default 10)
  --keys N                 keys per 30 s generation (default 3)
  --retries N              retry a failed operation N times on other nodes, with the same
                           client id and sequence number (tests exactly-once; default 0)
  --election-timeout-ms N  passed to the nodes (default 500)
  --heartbeat-ms N         passed to the nodes (default 100)
  --check-budget-s N       linearizability checker time budget (default 120)
  --keep-data              keep the nodes' data directories
  -h, --help               print this help`;

class _Usage extends Error {}

function _int(text: string | undefined, what: string, dflt: number, min = 1): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
    throw new _Usage(`${what} must be an integer ≥ ${min}, got "${text}"`);
  }
  return n;
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        duration: { type: "string" },
        seed: { type: "string" },
        nemesis: { type: "string", default: FAULT_KINDS.join(",") },
        nodes: { type: "string", default: "3" },
        "unsafe-local-reads": { type: "boolean", default: false },
        "read-mode": { type: "string", default: "readindex" },
        out: { type: "string" },
        clients: { type: "string" },
        keys: { type: "string" },
        retries: { type: "string" },
        "election-timeout-ms": { type: "string" },
        "heartbeat-ms": { type: "string" },
        "check-budget-s": { type: "string" },
        "keep-data": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    console.error(`chaos: ${e instanceof Error ? e.message : e}\n\n${CHAOS_USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(CHAOS_USAGE);
    return 0;
  }
  let opts;
  try {
    if (values.duration === undefined) throw new _Usage("--duration is required");
    const duration = Number(values.duration);
    if (!(duration > 0)) throw new _Usage(`--duration must be positive, got "${values.duration}"`);
    const seed = _int(values.seed, "--seed", Math.floor(Math.random() * 2 ** 31), 0);
    const faults = values.nemesis === "none" || values.nemesis === ""
      ? []
      : values.nemesis.split(",").map((s) => s.trim());
    for (const f of faults) {
      if (!FAULT_KINDS.includes(f as FaultKind)) {
        throw new _Usage(`unknown nemesis "${f}" (expected ${FAULT_KINDS.join(", ")} or none)`);
      }
    }
    const nodes = _int(values.nodes, "--nodes", 3);
    if (nodes !== 3 && nodes !== 5) throw new _Usage(`--nodes must be 3 or 5, got ${nodes}`);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    opts = {
      durationMs: duration * 1000,
      seed,
      faults: faults as FaultKind[],
      nodes,
      unsafeLocalReads: values["unsafe-local-reads"],
      readMode: _readMode(values["read-mode"]),
      out: values.out ?? `data/chaos/${seed}-${stamp}`,
      clients: _int(values.clients, "--clients", 10),
      keys: _int(values.keys, "--keys", 3),
      retries: _int(values.retries, "--retries", 0, 0),
      electionTimeoutMs: _int(values["election-timeout-ms"], "--election-timeout-ms", 500),
      heartbeatMs: _int(values["heartbeat-ms"], "--heartbeat-ms", 100),
      checkBudgetMs: _int(values["check-budget-s"], "--check-budget-s", 120) * 1000,
      keepData: values["keep-data"],
    };
  } catch (e) {
    if (!(e instanceof _Usage)) throw e;
    console.error(`chaos: ${e.message}\n\n${CHAOS_USAGE}`);
    return 2;
  }
  console.error(
    `chaos: seed ${opts.seed}, ${opts.durationMs / 1000} s, nemesis ${
      opts.faults.join(",") || "none"
    }, ${opts.nodes} nodes${opts.unsafeLocalReads ? ", UNSAFE local reads" : ""}${
      opts.readMode === "lease" ? ", lease reads" : ""
    }`,
  );
  const interrupt = new AbortController();
  const live: NonNullable<ChaosOptions["live"]> = {};
  const liveSummary = () => {
    const ops = live.history?.ops ?? [];
    const n = (o: string) => ops.filter((x) => x.outcome === o).length;
    return summaryLine({
      ops: ops.length,
      ok: n("ok"),
      failed: n("fail"),
      unknown: n("unknown"),
      faults: live.faults?.() ?? 0,
      linearizable: "unknown",
      historyPath: "",
    });
  };
  let interrupts = 0;
  const onSignal = () => {
    interrupts++;
    if (interrupts === 1) {
      console.error("chaos: interrupted: ending the workload (Ctrl-C again to stop at once)");
      interrupt.abort();
    } else {
      // The harness's unload listener kills every node process it started.
      console.error("chaos: stopping now (history not checked)");
      console.log(liveSummary());
      Deno.exit(130);
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let report: ChaosReport;
  try {
    report = await runChaos({ ...opts, signal: interrupt.signal, live });
  } catch (e) {
    console.error(`chaos: run failed: ${e instanceof Error ? e.message : e}`);
    console.log(liveSummary());
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  if (report.reason !== undefined && report.linearizable !== "no") {
    console.error(`chaos: not "yes" because: ${report.reason}`);
  }
  console.log(summaryLine(report));
  return report.linearizable === "yes" ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

function _readMode(v: string | undefined): "readindex" | "lease" {
  if (v === undefined || v === "readindex" || v === "lease") return v ?? "readindex";
  throw new _Usage(`--read-mode must be readindex or lease, got "${v}"`);
}
