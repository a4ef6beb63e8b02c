/**
 * One chaos run: a cluster on free ports behind peer-link proxies, the workload under the
 * nemesis, heal, final reads of every key, the linearizability check, and cleanup.
 *
 * `deno task chaos` (tests/chaos/main.ts) is the command line; tests call {@linkcode runChaos}.
 *
 * Output directory (`out`): `history.json` (ops and nemesis events), `nodes/node-<id>.log`
 * (the nodes' logs), and on a violation `violation.txt` and `violation.svg` (a timeline of the
 * failing window, the minimal subset outlined in red).
 *
 * @module
 */
import { checkHistory, type CheckResult, formatViolation } from "../linearizability/checker.ts";
import { type History, saveHistory } from "../linearizability/history.ts";
import { timelineSvg } from "../linearizability/timeline.ts";
import { ChaosCluster } from "./cluster.ts";
import { type FaultKind, Nemesis } from "./nemesis.ts";
import { Rng } from "./rng.ts";
import { finalReads, LeaderGuess, runWorkload } from "./workload.ts";

/** Options of {@linkcode runChaos}. */
export interface ChaosOptions {
  durationMs: number;
  seed: number;
  faults: FaultKind[];
  nodes?: number;
  unsafeLocalReads?: boolean;
  /** The nodes' `--read-mode` (default readindex). */
  readMode?: "readindex" | "lease";
  /** Output directory (created). */
  out: string;
  clients?: number;
  keys?: number;
  electionTimeoutMs?: number;
  heartbeatMs?: number;
  opTimeoutMs?: number;
  /** Retries of a failed operation (same request, another node); default 0. */
  retries?: number;
  /** Checker time budget (default 120 s). */
  checkBudgetMs?: number;
  /** Keep the nodes' data directories (logs are always kept). */
  keepData?: boolean;
  /** Aborting ends the workload early (the run still heals, checks and cleans up). */
  signal?: AbortSignal;
  /** Filled in as the run goes (for a summary if the run is abandoned). */
  live?: { history?: History; faults?: () => number };
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** What a run found. */
export interface ChaosReport {
  ops: number;
  ok: number;
  failed: number;
  unknown: number;
  faults: number;
  linearizable: "yes" | "no" | "unknown";
  /** Why the verdict is not `yes`, when known. */
  reason?: string;
  check?: CheckResult;
  historyPath: string;
}

/** The single summary line of a run. */
export function summaryLine(r: ChaosReport): string {
  return `chaos: ${r.ops} ops (ok ${r.ok}, failed ${r.failed}, unknown ${r.unknown}), ` +
    `${r.faults} faults, linearizable: ${r.linearizable}`;
}

function _sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * After the workload: waits until every node has applied the same index, then reads every key
 * from every node's local state (serializable reads) and compares them with the final
 * linearizable reads. Replicas that applied the same log must hold the same data.
 */
async function _checkConvergence(
  cluster: ChaosCluster,
  history: History,
  timeoutMs: number,
): Promise<{ diverged: boolean; text: string } | undefined> {
  const deadline = performance.now() + timeoutMs;
  let applied: number[] = [];
  for (;;) {
    const st = await Promise.all(cluster.ids.map((id) => cluster.client.status(id, 500)));
    applied = st.map((s) => (s === undefined ? -1 : Number(s.applied_index)));
    const commit = Math.max(...st.map((s) => (s === undefined ? -1 : Number(s.commit_index))));
    if (applied.every((a) => a === applied[0] && a >= commit && a >= 0)) break;
    if (performance.now() > deadline) {
      return {
        diverged: false,
        text: `replicas did not converge within ${timeoutMs} ms (applied ${applied.join(", ")})`,
      };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const finals = new Map<string, string | null>();
  for (const o of history.ops) {
    if (o.client === 1000 && o.f === "get") finals.set(o.key, o.read ?? null);
  }
  const enc = new TextEncoder(), dec = new TextDecoder();
  for (const [key, want] of finals) {
    for (const id of cluster.ids) {
      const r = await cluster.client.call(
        id,
        "Get",
        { key: enc.encode(key), serializable: true },
        2000,
      );
      if (!r.ok) {
        return { diverged: false, text: `node ${id} did not answer a local read: ${r.details}` };
      }
      const got = r.res.found ? dec.decode(r.res.value as Uint8Array) : null;
      if (got !== want) {
        return {
          diverged: true,
          text: `replicas diverge: at applied index ${applied[0]} node ${id} holds ${key}=${
            JSON.stringify(got)
          }, the linearizable final read saw ${JSON.stringify(want)}`,
        };
      }
    }
  }
  return undefined;
}

/** Runs one chaos run; see the module documentation. Never leaves a process behind. */
export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const electionTimeoutMs = opts.electionTimeoutMs ?? 500;
  const heartbeatMs = opts.heartbeatMs ?? 100;
  await Deno.mkdir(`${opts.out}/nodes`, { recursive: true });
  const historyPath = `${opts.out}/history.json`;
  const history: History = {
    version: 1,
    meta: {
      seed: opts.seed,
      nodes: opts.nodes ?? 3,
      faults: opts.faults,
      durationMs: opts.durationMs,
      unsafeLocalReads: opts.unsafeLocalReads ?? false,
      retries: opts.retries ?? 0,
      electionTimeoutMs,
      heartbeatMs,
      startedAt: new Date().toISOString(),
    },
    ops: [],
    events: [],
  };
  if (opts.live) opts.live.history = history;
  const rng = new Rng(opts.seed);
  const cluster = await ChaosCluster.start({
    nodes: opts.nodes ?? 3,
    extraArgs: [
      "--log-level",
      "info",
      ...(opts.unsafeLocalReads ? ["--unsafe-local-reads"] : []),
      ...(opts.readMode !== undefined ? ["--read-mode", opts.readMode] : []),
    ],
    electionTimeoutMs,
    heartbeatMs,
    dataDirRoot: `${opts.out}/nodes`,
  });
  let faults = 0;
  let reason: string | undefined;
  let divergence: string | undefined;
  try {
    history.meta.addresses = Object.fromEntries(
      [...cluster.nodes].map(([id, n]) => [id, n.address]),
    );
    history.meta.peers = cluster.mesh.peersArg();
    const first = await cluster.waitForLeader(30_000, opts.signal).catch((e: Error) => e);
    if (first instanceof Error) {
      throw new Error(
        `the cluster elected no leader at start: ${first.message}\n${cluster.dumpLogs(20)}`,
      );
    }
    if (opts.faults.includes("partition")) cluster.checkProxiesIdentifyNodes();
    log(`chaos: cluster up (${cluster.ids.length} nodes, leader ${first}), out ${opts.out}`);
    const leader = new LeaderGuess((h) => cluster.resolveHint(h));
    leader.id = first;
    const t0 = performance.now();
    history.meta.t0 = t0;
    const stop = new AbortController();
    const onOuterAbort = () => stop.abort();
    opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
    const nemesis = new Nemesis({
      cluster,
      rng: rng.fork(1000),
      history,
      t0,
      faults: opts.faults,
      electionTimeoutMs,
      log,
      onLeader: (id) => {
        if (id !== undefined) leader.id = id;
      },
    });
    // A failure of either ends the run (after cleanup) instead of an unhandled rejection.
    const failed = (e: unknown) => {
      stop.abort();
      return e instanceof Error ? e : new Error(String(e));
    };
    const workload = runWorkload({
      client: cluster.client,
      nodeIds: cluster.ids,
      history,
      t0,
      rng: rng.fork(2000),
      leader,
      clients: opts.clients ?? 10,
      keys: opts.keys ?? 3,
      opTimeoutMs: opts.opTimeoutMs ?? 1500,
      retries: opts.retries ?? 0,
      signal: stop.signal,
    }).then(() => undefined, failed);
    if (opts.live) opts.live.faults = () => nemesis.faults;
    const nemesisDone = nemesis.run(stop.signal).then(() => undefined, failed);
    const progress = setInterval(() => {
      const n = history.ops.length;
      log(
        `chaos: ${
          ((performance.now() - t0) / 1000).toFixed(0)
        }s, ${n} ops, ${nemesis.faults} faults`,
      );
    }, 10_000);
    await _sleep(opts.durationMs, stop.signal);
    stop.abort();
    clearInterval(progress);
    opts.signal?.removeEventListener("abort", onOuterAbort);
    for (const e of await Promise.all([workload, nemesisDone])) if (e !== undefined) throw e;
    faults = nemesis.faults;
    await nemesis.healAll();
    // A terminal's Ctrl-C also reaches the nodes (same process group): let them finish exiting.
    if (opts.signal?.aborted) await _sleep(2000);
    for (const id of cluster.ids) {
      const node = cluster.node(id);
      if (node.running) continue;
      // Not killed by the nemesis (it restarts those): a crash, or a Ctrl-C that reached the
      // whole process group.
      const st = node.exitStatus;
      log(
        `chaos: node ${id} had exited on its own (code ${st?.code}, signal ${st?.signal}); restarting`,
      );
      history.events.push({
        time: performance.now() - t0,
        kind: "info",
        text: `node ${id} exited on its own (code ${st?.code}, signal ${st?.signal})`,
      });
      await node.restart();
    }
    log(`chaos: workload done (${history.ops.length} ops, ${faults} faults); healed, final reads`);
    const healedLeader = await cluster.waitForLeader(30_000).catch(() => undefined);
    if (healedLeader === undefined) {
      reason = "no leader within 30 s after healing";
      log(`chaos: ${reason}\n${cluster.dumpLogs(30)}`);
    } else {
      leader.id = healedLeader;
      const unread = await finalReads(
        { client: cluster.client, history, t0, leader, nodeIds: cluster.ids },
        30_000,
      );
      if (unread.length > 0) {
        reason = `final reads failed for ${unread.length} keys (${unread.slice(0, 5).join(", ")})`;
        log(`chaos: ${reason}`);
      } else {
        const c = await _checkConvergence(cluster, history, 20_000);
        if (c !== undefined) {
          if (c.diverged) divergence = c.text;
          else reason = c.text;
          log(`chaos: ${c.text}`);
        }
      }
    }
    history.meta.finishedAt = new Date().toISOString();
    await saveHistory(historyPath, history);
  } finally {
    await cluster.stop();
    if (!opts.keepData) {
      for (const id of cluster.ids) {
        await Deno.remove(`${opts.out}/nodes/node-${id}`, { recursive: true }).catch(() => {});
      }
    }
  }
  const check = checkHistory(history, { timeBudgetMs: opts.checkBudgetMs ?? 120_000 });
  let verdict = check.result;
  if (verdict === "yes" && reason !== undefined) verdict = "unknown";
  if (divergence !== undefined) {
    verdict = "no";
    reason = divergence;
  }
  if (check.violation !== undefined) {
    const v = check.violation;
    const text = formatViolation(v);
    log(text);
    await Deno.writeTextFile(`${opts.out}/violation.txt`, text + "\n");
    const highlight = new Set(v.minimal.map((o) => o.id));
    highlight.add(v.blocked.id);
    const lo = Math.min(...[...v.writers.slice(-20), ...v.window].map((o) => o.invoke)) - 50;
    const hi = Math.max(...v.window.map((o) => o.complete)) + 50;
    await Deno.writeTextFile(
      `${opts.out}/violation.svg`,
      timelineSvg([...v.writers.slice(-20), ...v.window], {
        title: `key ${v.key}: not linearizable (seed ${opts.seed}); red: minimal failing subset`,
        highlight,
        events: history.events.filter((e) => e.time >= lo && e.time <= hi),
      }),
    );
    log(`chaos: violation written to ${opts.out}/violation.txt and violation.svg`);
  } else if (check.result === "unknown") {
    const slow = check.keys.filter((k) => k.verdict === "unknown").map((k) => k.key);
    reason ??= `checker budget exhausted on ${slow.length} keys (${slow.slice(0, 5).join(", ")})`;
    log(`chaos: ${reason}`);
  }
  log(
    `chaos: checked ${check.keys.length} keys in ${(check.elapsedMs / 1000).toFixed(1)} s; ` +
      `history ${historyPath}`,
  );
  const count = (o: string) => history.ops.filter((x) => x.outcome === o).length;
  return {
    ops: history.ops.length,
    ok: count("ok"),
    failed: count("fail"),
    unknown: count("unknown"),
    faults,
    linearizable: verdict,
    reason,
    check,
    historyPath,
  };
}
