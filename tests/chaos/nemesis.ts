/**
 * The nemesis: injects one fault at a time into a {@linkcode ChaosCluster}, holds it, heals it,
 * lets the cluster recover, and repeats, with every choice drawn from a seeded {@linkcode Rng}.
 * Every fault and heal is logged with its time as a history event.
 *
 * Faults:
 * - `kill`: `kill -9` of the leader or of a random node (sometimes of a majority, or of every
 *   node, at once); restarted after a while with the same data.
 * - `pause`: SIGSTOP of the leader or of a random node for longer than the election timeout,
 *   then SIGCONT.
 * - `partition` (through the peer-link proxies): majority/minority (the leader on either side),
 *   leader isolated, bridge (two halves that reach each other only through one node), one-way
 *   (the leader cannot reach the others, who can still reach it; or one random link).
 *
 * @module
 */
import type { History } from "../linearizability/history.ts";
import type { ChaosCluster } from "./cluster.ts";
import type { Rng } from "./rng.ts";

/** The fault families. */
export type FaultKind = "kill" | "pause" | "partition";

/** All fault families. */
export const FAULT_KINDS: readonly FaultKind[] = ["kill", "pause", "partition"];

/** Options of {@linkcode Nemesis}. */
export interface NemesisOptions {
  cluster: ChaosCluster;
  rng: Rng;
  history: History;
  t0: number;
  faults: FaultKind[];
  electionTimeoutMs: number;
  /** Called with each logged line (default: stderr). */
  log?: (line: string) => void;
  /** Called when the nemesis learns the leader (so clients can aim at it). */
  onLeader?: (id: number | undefined) => void;
  /** Pause between a heal and the next fault, ms (default 1000..3000). */
  quietMs?: [number, number];
  /** How long a fault is held, ms (default 1500..4000). */
  holdMs?: [number, number];
}

function _sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Injects faults until its signal aborts; see the module documentation. */
export class Nemesis {
  #o: NemesisOptions;
  /** Faults injected so far. */
  faults = 0;
  /** Nodes killed and not yet restarted. */
  #down = new Set<number>();

  constructor(opts: NemesisOptions) {
    this.#o = opts;
  }

  #event(kind: "fault" | "heal" | "info", text: string): void {
    const time = performance.now() - this.#o.t0;
    this.#o.history.events.push({ time, kind, text });
    (this.#o.log ?? ((l) => console.error(l)))(
      `nemesis ${(time / 1000).toFixed(2)}s ${kind}: ${text}`,
    );
  }

  async #leader(): Promise<number | undefined> {
    const l = await this.#o.cluster.leader(400);
    this.#o.onLeader?.(l);
    return l;
  }

  /** Runs faults until `signal` aborts, then heals everything. */
  async run(signal: AbortSignal): Promise<void> {
    const { rng, faults } = this.#o;
    const [qLo, qHi] = this.#o.quietMs ?? [1000, 3000];
    try {
      await _sleep(rng.range(qLo, qHi), signal);
      while (!signal.aborted && faults.length > 0) {
        const kind = rng.pick(faults);
        await this.#inject(kind, signal);
        await this.healAll();
        await _sleep(rng.range(qLo, qHi), signal);
      }
    } finally {
      await this.healAll();
    }
  }

  async #target(): Promise<{ id: number; leader: boolean }> {
    const { rng, cluster } = this.#o;
    const leader = await this.#leader();
    if (leader !== undefined && rng.next() < 0.5) return { id: leader, leader: true };
    const id = rng.pick(cluster.ids);
    return { id, leader: id === leader };
  }

  async #inject(kind: FaultKind, signal: AbortSignal): Promise<void> {
    const { rng, cluster } = this.#o;
    const [hLo, hHi] = this.#o.holdMs ?? [1500, 4000];
    switch (kind) {
      case "kill": {
        const roll = rng.next();
        if (roll < 0.2) {
          // Crash a majority, or every node, at once: restarts must recover from their own
          // logs (no surviving quorum keeps the state in memory).
          const all = roll < 0.1;
          const victims = all
            ? cluster.ids
            : rng.shuffle(cluster.ids).slice(0, Math.floor(cluster.ids.length / 2) + 1).sort();
          this.faults++;
          this.#event("fault", `kill -9 ${all ? "all nodes" : `nodes ${victims.join(",")}`}`);
          for (const id of victims) {
            this.#down.add(id);
            cluster.node(id).kill("SIGKILL");
          }
          await Promise.all(victims.map((id) => cluster.node(id).wait()));
          await _sleep(rng.range(300, hHi), signal);
          break;
        }
        const t = await this.#target();
        const node = cluster.node(t.id);
        this.faults++;
        this.#event("fault", `kill -9 node ${t.id}${t.leader ? " (leader)" : ""}`);
        this.#down.add(t.id);
        node.kill("SIGKILL");
        await node.wait();
        await _sleep(rng.range(300, hHi), signal);
        break;
      }
      case "pause": {
        const t = await this.#target();
        this.faults++;
        this.#event("fault", `SIGSTOP node ${t.id}${t.leader ? " (leader)" : ""}`);
        cluster.pause(t.id);
        const et = this.#o.electionTimeoutMs;
        await _sleep(rng.range(2 * et + 200, Math.max(2 * et + 200, hHi) + et), signal);
        break;
      }
      case "partition": {
        const leader = await this.#leader();
        const ids = cluster.ids;
        const shape = rng.pick(["majority", "isolate-leader", "bridge", "one-way"] as const);
        const mesh = cluster.mesh;
        this.faults++;
        if (shape === "majority" || (shape === "isolate-leader" && leader === undefined)) {
          const minoritySize = Math.floor((ids.length - 1) / 2);
          let order = rng.shuffle(ids);
          if (leader !== undefined && rng.next() < 0.5) {
            // Put the leader in the minority.
            order = [leader, ...order.filter((id) => id !== leader)];
          }
          const minority = order.slice(0, minoritySize).sort();
          const majority = order.slice(minoritySize).sort();
          mesh.partition([minority, majority]);
          this.#event(
            "fault",
            `partition ${JSON.stringify(minority)} | ${JSON.stringify(majority)} (leader ${
              leader ?? "?"
            })`,
          );
        } else if (shape === "isolate-leader") {
          mesh.isolate(leader!);
          this.#event("fault", `isolate leader ${leader}`);
        } else if (shape === "bridge") {
          const b = rng.pick(ids);
          const [l, r] = mesh.bridge(b);
          this.#event(
            "fault",
            `bridge via ${b}: ${JSON.stringify(l)} ⟷ ${b} ⟷ ${JSON.stringify(r)} (leader ${
              leader ?? "?"
            })`,
          );
        } else {
          if (leader !== undefined && rng.next() < 0.7) {
            for (const j of ids) if (j !== leader) mesh.cutOneWay(leader, j);
            this.#event("fault", `one-way: leader ${leader} cannot reach the others`);
          } else {
            const from = rng.pick(ids);
            const to = rng.pick(ids.filter((j) => j !== from));
            mesh.cutOneWay(from, to);
            this.#event("fault", `one-way: ${from} cannot reach ${to} (leader ${leader ?? "?"})`);
          }
        }
        await _sleep(rng.range(hLo, hHi), signal);
        break;
      }
    }
  }

  /** Heals every link, resumes paused nodes, restarts killed ones. */
  async healAll(): Promise<void> {
    const { cluster } = this.#o;
    const cut = cluster.mesh.cutLinks();
    if (cut.length > 0) {
      cluster.mesh.healAll();
      this.#event("heal", `heal network (${cut.join(" ")})`);
    }
    for (const id of [...cluster.paused]) {
      cluster.resume(id);
      this.#event("heal", `SIGCONT node ${id}`);
    }
    for (const id of [...this.#down]) {
      const node = cluster.node(id);
      if (!node.running) {
        await node.restart();
        this.#event("heal", `restart node ${id}`);
      }
      this.#down.delete(id);
    }
  }
}
