/**
 * Deterministic cluster simulator: 3- or 5-member clusters of the real `RaftNode` in one process
 * on virtual time, with a seeded PRNG driving every choice. The same seed replays bit-for-bit.
 *
 * Faults: message loss, delay, duplication and reordering; symmetric and asymmetric partitions
 * (isolate the leader, majority/minority split, a bridge node seeing both sides, one-way cuts);
 * crashes that lose the Ready being persisted (the unsynced tail) and restarts (with a volatile
 * or a durable state machine); nodes ticking at different rates; client proposals throughout;
 * membership changes (learner add → promote, remove, including the leader), leadership
 * transfer, snapshots with log compaction, and ReadIndex reads (on half of the CheckQuorum
 * seeds as lease reads, `readOnly: "lease"`, with every node ticking at the same rate).
 *
 * Checked at every step: election safety (≤ 1 leader per term), log matching (an (index, term)
 * names one entry and one predecessor), leader completeness (a new leader holds every applied
 * entry), state-machine safety (every member applies one common sequence, in order, exactly
 * once), snapshot consistency, read linearizability (a read index covers every write applied
 * anywhere before the read began), and at the end liveness: after healing, a leader is elected,
 * a new proposal commits and every member catches up within a bounded time (so no applied
 * proposal was lost).
 *
 * Time: one step is one unit of virtual time; each node ticks every 3–5 units; messages take
 * 1–3 units (more when reordered).
 *
 * @module
 */
import { decodeConfChange } from "./codec.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { RaftNode } from "./node.ts";
import { mulberry32 } from "./testing.ts";
import {
  type ConfChange,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  NONE,
  type Ready,
} from "./types.ts";

/** A deliberately broken rule, to show the checks can fail. */
export type SimBug =
  /** The core commits by replica count alone, ignoring the entry's term (Figure 8). */
  | "commitByCount"
  /** The core grants votes without the election restriction (§5.4.1). */
  | "skipElectionRestriction"
  /** The driver does not persist the vote with the term. */
  | "forgetVote"
  /** Lease reads whose lease outlasts the followers' election timeout. */
  | "longLease";

/** Options of one simulation run. */
export interface SimOptions {
  seed: number;
  /** Initial voters: 3 or 5. Default 3. */
  nodes?: number;
  /** Steps (units of virtual time) of the faulty phase. Default 3000. */
  steps?: number;
  /** Membership changes (learners, promotion, removal). Default true. */
  membership?: boolean;
  /** Snapshots and log compaction. Default true. */
  snapshots?: boolean;
  /** ReadIndex reads. Default true. */
  reads?: boolean;
  /**
   * Lease reads (`readOnly: "lease"`; every node then ticks at the same rate, the lease's
   * bounded-drift assumption). Default: chosen per seed (half of the CheckQuorum seeds).
   */
  lease?: boolean;
  /** Crashes and restarts. Default true. */
  crashes?: boolean;
  /**
   * Harsher faults: short fault regimes, frequent crashes and quick restarts (more leader
   * changes with partially replicated logs). Default false.
   */
  harsh?: boolean;
  /** Inject a bug (tests only). */
  bug?: SimBug;
  /** Keep a human-readable trace (slow). */
  trace?: boolean;
}

/** A broken property. */
export interface SimViolation {
  property: string;
  step: number;
  detail: string;
}

/** Outcome of one run. */
export interface SimResult {
  seed: number;
  violation?: SimViolation;
  /** A hash of everything that happened; equal digests mean identical runs. */
  digest: string;
  stats: {
    steps: number;
    elections: number;
    applied: number;
    crashes: number;
    confChanges: number;
    snapshotsSent: number;
    reads: number;
    maxTerm: number;
  };
  trace: string[];
}

class _Violation extends Error {
  constructor(readonly property: string, readonly detail: string) {
    super(`${property}: ${detail}`);
  }
}

interface _Envelope {
  time: number;
  seq: number;
  m: Message;
}

/** Binary min-heap of envelopes by (time, seq). */
class _Heap {
  #a: _Envelope[] = [];
  get size(): number {
    return this.#a.length;
  }
  #less(x: _Envelope, y: _Envelope): boolean {
    return x.time < y.time || (x.time === y.time && x.seq < y.seq);
  }
  push(e: _Envelope): void {
    const a = this.#a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  peek(): _Envelope | undefined {
    return this.#a[0];
  }
  pop(): _Envelope | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      let i = 0;
      while (true) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.#less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

interface _SimNode {
  id: NodeId;
  node: RaftNode | undefined;
  durable: MemoryStorage;
  founder: boolean;
  inflight: { rd: Ready; doneAt: number } | undefined;
  appliedIndex: number;
  tickEvery: number;
  tickPhase: number;
  restartAt: number;
  stopAt: number;
  removed: boolean;
  incarnation: number;
  lastLeaderTerm: number;
}

type _Regime =
  | { kind: "calm" }
  | { kind: "lossy"; loss: number; dup: number; reorder: number }
  | { kind: "partition"; groups: NodeId[][]; name: string }
  | { kind: "oneway"; from: NodeId; name: string };

const SNAPSHOT_EVERY = 25;
const LIVENESS_BOUND = 800;

const dec = new TextDecoder("latin1");
const enc = new TextEncoder();

/**
 * Runs one simulation.
 *
 * @example
 * ```ts
 * import { runSim } from "./sim.ts";
 * const r = runSim({ seed: 1, steps: 500 });
 * console.log(r.violation === undefined, r.digest === runSim({ seed: 1, steps: 500 }).digest);
 * ```
 */
export function runSim(opts: SimOptions): SimResult {
  return new _Sim(opts).run();
}

class _Sim {
  readonly opts: Required<Omit<SimOptions, "bug" | "lease">> & { bug?: SimBug; lease?: boolean };
  readonly rand: () => number;
  readonly nodes = new Map<NodeId, _SimNode>();
  readonly heap = new _Heap();
  seq = 0;
  now = 0;
  regime: _Regime = { kind: "calm" };
  regimeUntil = 0;
  healed = false;
  nextId: NodeId;
  maxId: NodeId;
  // Global knowledge for the checks.
  leaders = new Map<number, NodeId>();
  entryInfo = new Map<string, string>(); // "index:term" -> data key + prev term
  committedTerm: number[] = [0];
  committedData: string[] = [""];
  maxApplied = 0;
  reads = new Map<string, { node: NodeId; minIndex: number }>();
  proposalSeq = 0;
  readSeq = 0;
  hash = 0x811c9dc5;
  trace: string[] = [];
  /** Per-seed core settings: most seeds use PreVote and CheckQuorum, some run without. */
  preVote: boolean;
  checkQuorum: boolean;
  /** Lease reads on this seed. */
  lease: boolean;
  electionTick: number;
  heartbeatTick: number;
  stats = {
    steps: 0,
    elections: 0,
    applied: 0,
    crashes: 0,
    confChanges: 0,
    snapshotsSent: 0,
    reads: 0,
    maxTerm: 0,
  };

  constructor(opts: SimOptions) {
    this.opts = {
      nodes: 3,
      harsh: false,
      steps: 3000,
      membership: true,
      snapshots: true,
      reads: true,
      crashes: true,
      trace: false,
      ...opts,
    };
    this.rand = mulberry32(opts.seed ^ 0x5eed);
    this.preVote = this.rand() < 0.8;
    this.checkQuorum = this.rand() < 0.8;
    // From its own stream, so the other seeds' runs stay as they were.
    this.lease = opts.lease ?? (this.checkQuorum && mulberry32(opts.seed ^ 0x1ea5e)() < 0.5);
    if (this.lease) this.checkQuorum = true;
    this.electionTick = 8 + this.#int(7);
    this.heartbeatTick = 1 + this.#int(2);
    const n = this.opts.nodes;
    for (let id = 1; id <= n; id++) this.#addNode(id, true);
    this.nextId = n + 1;
    this.maxId = n + 2;
  }

  // --- helpers ---------------------------------------------------------------------------------

  #mix(...xs: number[]): void {
    let h = this.hash;
    for (const x of xs) {
      h ^= x & 0xffffffff;
      h = Math.imul(h, 0x01000193) >>> 0;
      h ^= Math.floor(x / 0x100000000);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    this.hash = h;
  }

  #log(s: string): void {
    if (this.opts.trace) this.trace.push(`${this.now}: ${s}`);
  }

  #int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  #pick<T>(xs: readonly T[]): T | undefined {
    return xs.length === 0 ? undefined : xs[this.#int(xs.length)];
  }

  #fail(property: string, detail: string): never {
    throw new _Violation(property, detail);
  }

  #live(): _SimNode[] {
    return [...this.nodes.values()].filter((s) => s.node !== undefined);
  }

  #leader(): _SimNode | undefined {
    let best: _SimNode | undefined;
    for (const s of this.nodes.values()) {
      if (s.node?.role === "leader" && (!best || s.node.term > best.node!.term)) best = s;
    }
    return best;
  }

  #newRaft(s: _SimNode, applied?: number): RaftNode {
    const bug = this.opts.bug;
    return new RaftNode({
      id: s.id,
      storage: s.durable,
      random: mulberry32(this.opts.seed * 7919 + s.id * 131 + s.incarnation),
      electionTick: this.electionTick,
      heartbeatTick: this.heartbeatTick,
      preVote: this.preVote,
      checkQuorum: this.checkQuorum,
      readOnly: this.lease ? "lease" : "safe",
      unsafeLongLease: bug === "longLease",
      maxSizePerMsg: this.rand() < 0.3 ? 1 : 16 + this.#int(200),
      maxInflightMsgs: 1 + this.#int(8),
      peers: s.founder ? [...Array(this.opts.nodes).keys()].map((i) => i + 1) : undefined,
      applied,
      unsafeCommitByCount: bug === "commitByCount",
      unsafeSkipElectionRestriction: bug === "skipElectionRestriction",
    });
  }

  #addNode(id: NodeId, founder: boolean): _SimNode {
    const s: _SimNode = {
      id,
      node: undefined,
      durable: new MemoryStorage(),
      founder,
      inflight: undefined,
      appliedIndex: 0,
      tickEvery: this.lease ? (this.#int(3), 4) : 3 + this.#int(3),
      tickPhase: this.#int(5),
      restartAt: -1,
      stopAt: -1,
      removed: false,
      incarnation: 0,
      lastLeaderTerm: 0,
    };
    this.nodes.set(id, s);
    s.node = this.#newRaft(s);
    return s;
  }

  // --- network --------------------------------------------------------------------------------

  #blocked(from: NodeId, to: NodeId): boolean {
    const r = this.regime;
    if (r.kind === "partition") {
      const gf = r.groups.findIndex((g) => g.includes(from));
      const gt = r.groups.findIndex((g) => g.includes(to));
      if (gf < 0 || gt < 0) return false;
      if (gf === gt) return false;
      // Group index 0 in a 3-group partition is the bridge: it sees everyone.
      return !(r.groups.length === 3 && (gf === 0 || gt === 0));
    }
    if (r.kind === "oneway") return from === r.from;
    return false;
  }

  #send(m: Message): void {
    const isSnap = m.type === MessageType.Snap;
    if (isSnap) this.stats.snapshotsSent++;
    const r = this.regime;
    let drop = this.#blocked(m.from, m.to);
    if (!drop && r.kind === "lossy" && this.rand() < r.loss) drop = true;
    if (drop) {
      if (isSnap) this.#reportSnapshot(m.from, m.to, false);
      return;
    }
    let delay = 1 + this.#int(3);
    if (r.kind === "lossy" && this.rand() < r.reorder) delay += this.#int(30);
    this.heap.push({ time: this.now + delay, seq: this.seq++, m });
    if (r.kind === "lossy" && this.rand() < r.dup) {
      this.heap.push({ time: this.now + 1 + this.#int(20), seq: this.seq++, m });
    }
  }

  #reportSnapshot(from: NodeId, to: NodeId, ok: boolean): void {
    const s = this.nodes.get(from);
    s?.node?.reportSnapshot(to, ok);
  }

  #deliver(env: _Envelope): void {
    const m = env.m;
    const to = this.nodes.get(m.to);
    if (!to?.node || this.#blocked(m.from, m.to)) {
      if (m.type === MessageType.Snap) this.#reportSnapshot(m.from, m.to, false);
      return;
    }
    this.#mix(1, env.time, m.type, m.from, m.to, m.term, m.index);
    to.node.step(m);
    if (m.type === MessageType.Snap) this.#reportSnapshot(m.from, m.to, true);
  }

  // --- the driver (what server/ does for a real node) ------------------------------------------

  #process(s: _SimNode): void {
    for (let guard = 0; guard < 50; guard++) {
      const node = s.node;
      if (!node) return;
      if (s.inflight) {
        if (s.inflight.doneAt > this.now) return;
        const { rd } = s.inflight;
        s.inflight = undefined;
        this.#complete(s, node, rd);
        continue;
      }
      if (!node.hasReady()) return;
      const rd = node.ready();
      if (this.rand() < 0.5) {
        // The leader optimization: App/Heartbeat/Snap go out before the Ready is durable.
        const early = rd.messages.filter(_isLeaderMessage);
        if (early.length > 0) {
          rd.messages = rd.messages.filter((m) => !_isLeaderMessage(m));
          for (const m of early) this.#send(m);
        }
      }
      // Persisting takes 0 or 1 unit of time; a crash meanwhile loses this Ready.
      s.inflight = { rd, doneAt: this.now + (this.rand() < 0.5 ? 0 : 1) };
    }
  }

  #complete(s: _SimNode, node: RaftNode, rd: Ready): void {
    // 1. Persist snapshot, entries, hard state.
    if (rd.snapshot) {
      const meta = rd.snapshot.meta;
      const known = this.committedTerm[meta.index];
      if (known !== undefined && known !== meta.term) {
        this.#fail(
          "snapshot",
          `node ${s.id} got snapshot ${meta.index}@${meta.term}, committed term ${known}`,
        );
      }
      if (meta.index > this.maxApplied) {
        this.#fail(
          "snapshot",
          `node ${s.id} got snapshot ${meta.index} beyond applied ${this.maxApplied}`,
        );
      }
      s.durable.applySnapshot(rd.snapshot);
      s.appliedIndex = meta.index;
      this.#log(`n${s.id} installs snapshot ${meta.index}@${meta.term}`);
    }
    if (rd.entries.length > 0) {
      s.durable.append(rd.entries);
      for (const e of rd.entries) {
        let prev: number;
        try {
          prev = s.durable.term(e.index - 1);
        } catch {
          prev = -1;
        }
        const key = `${e.index}:${e.term}`;
        const info = `${e.type}/${dec.decode(e.data)}`;
        const rec = this.entryInfo.get(key);
        if (rec === undefined) this.entryInfo.set(key, `${info}|${prev}`);
        else {
          const [rinfo, rprev] = rec.split("|");
          if (rinfo !== info || (prev >= 0 && Number(rprev) >= 0 && Number(rprev) !== prev)) {
            this.#fail(
              "log matching",
              `node ${s.id} entry ${key} is ${info}|${prev}, elsewhere ${rec}`,
            );
          }
        }
      }
    }
    if (rd.hardState) {
      const hs = this.opts.bug === "forgetVote" ? { ...rd.hardState, vote: NONE } : rd.hardState;
      s.durable.setHardState(hs);
    }
    if (rd.softState && this.opts.trace) {
      this.#log(`n${s.id} is ${rd.softState.role} (leader ${rd.softState.leader}) t${node.term}`);
    }
    // 2. Send.
    for (const m of rd.messages) this.#send(m);
    // 3. Apply.
    for (const e of rd.committedEntries) {
      if (e.index !== s.appliedIndex + 1) {
        this.#fail("apply order", `node ${s.id} applies ${e.index} after ${s.appliedIndex}`);
      }
      const data = `${e.type}/${dec.decode(e.data)}`;
      const known = this.committedTerm[e.index];
      if (known === undefined) {
        if (e.index !== this.committedTerm.length) {
          this.#fail("state machine safety", `node ${s.id} applies ${e.index} with a gap`);
        }
        this.committedTerm.push(e.term);
        this.committedData.push(data);
      } else if (known !== e.term || this.committedData[e.index] !== data) {
        this.#fail(
          "state machine safety",
          `node ${s.id} applies ${e.index}@${e.term} "${data}", others applied @${known} "${
            this.committedData[e.index]
          }"`,
        );
      }
      s.appliedIndex = e.index;
      if (e.index > this.maxApplied) this.maxApplied = e.index;
      this.stats.applied++;
      this.#mix(2, s.id, e.index, e.term);
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        node.applyConfChange(cc);
        if (cc.type === "removeNode" && cc.nodeId === s.id && !s.removed) {
          // The server shuts a removed member down shortly after.
          s.removed = true;
          s.stopAt = this.now + 30;
          this.#log(`n${s.id} removed; stops at ${s.stopAt}`);
        }
        if (cc.type === "removeNode") {
          const r = this.nodes.get(cc.nodeId);
          if (r && !r.removed) {
            r.removed = true;
            r.stopAt = this.now + 30;
          }
        }
      }
    }
    // 4. Reads.
    for (const rs of rd.readStates) {
      const key = dec.decode(rs.context);
      const req = this.reads.get(key);
      if (!req) continue;
      this.reads.delete(key);
      this.stats.reads++;
      if (req.node !== s.id) {
        this.#fail("read", `read ${key} answered on ${s.id}, asked on ${req.node}`);
      }
      if (rs.index < req.minIndex) {
        this.#fail(
          "read linearizability",
          `read ${key} on node ${s.id} got index ${rs.index} < ${req.minIndex} applied before it began`,
        );
      }
    }
    node.advance(rd);
    // Snapshot + compaction policy.
    if (this.opts.snapshots) {
      const snapIndex = s.durable.snapshot().meta.index;
      if (s.appliedIndex - snapIndex >= SNAPSHOT_EVERY && s.appliedIndex <= s.durable.lastIndex()) {
        s.durable.createSnapshot(s.appliedIndex, node.confState(), new Uint8Array(0));
        const keep = this.#int(6);
        s.durable.compact(Math.max(s.durable.firstIndex() - 1, s.appliedIndex - keep));
        this.#log(`n${s.id} snapshots at ${s.appliedIndex}`);
      }
    }
  }

  // --- faults and workload ---------------------------------------------------------------------

  #crash(s: _SimNode): void {
    s.node = undefined;
    // The Ready being persisted is lost, or (half the time) a prefix of its writes made it to
    // disk (snapshot, entries, hard state — in that order — as a torn group commit leaves them).
    const rd = s.inflight?.rd;
    s.inflight = undefined;
    if (rd && this.rand() < 0.5) {
      const ops: (() => void)[] = [];
      if (rd.snapshot) ops.push(() => s.durable.applySnapshot(rd.snapshot!));
      for (let i = 0; i < rd.entries.length; i++) {
        ops.push(() => s.durable.append(rd.entries.slice(i, i + 1)));
      }
      if (rd.hardState) {
        const hs = this.opts.bug === "forgetVote" ? { ...rd.hardState, vote: NONE } : rd.hardState;
        ops.push(() => s.durable.setHardState(hs));
      }
      const n = this.#int(ops.length + 1);
      for (let i = 0; i < n; i++) ops[i]!();
      this.#log(`n${s.id} crash persisted ${n}/${ops.length} writes of its Ready`);
    }
    s.restartAt = this.now + (this.opts.harsh ? 10 + this.#int(60) : 40 + this.#int(300));
    this.stats.crashes++;
    this.#log(`n${s.id} crashes, restarts at ${s.restartAt}`);
    for (const [k, r] of this.reads) if (r.node === s.id) this.reads.delete(k);
  }

  #restart(s: _SimNode): void {
    s.incarnation++;
    s.restartAt = -1;
    // Half the time the state machine is volatile (rebuilt from the snapshot and the log),
    // half the time it is durable and the node restarts at its applied index.
    const durableSm = this.rand() < 0.5 &&
      s.appliedIndex <= s.durable.initialState().hardState.commit;
    if (durableSm && s.appliedIndex >= s.durable.firstIndex() - 1) {
      s.node = this.#newRaft(s, s.appliedIndex);
    } else {
      s.appliedIndex = s.durable.snapshot().meta.index;
      s.node = this.#newRaft(s);
    }
    this.#log(`n${s.id} restarts (applied ${s.appliedIndex})`);
  }

  #newRegime(): void {
    const ids = [...this.nodes.values()].filter((s) => !s.removed).map((s) => s.id);
    const kind = this.#int(7);
    const shuffled = ids.slice();
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = this.#int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const leader = this.#leader();
    switch (kind) {
      case 0:
      case 1:
        this.regime = { kind: "calm" };
        break;
      case 2:
        this.regime = {
          kind: "lossy",
          loss: 0.05 + this.rand() * 0.3,
          dup: this.rand() * 0.2,
          reorder: this.rand() * 0.3,
        };
        break;
      case 3: {
        const l = leader?.id ?? shuffled[0]!;
        this.regime = {
          kind: "partition",
          groups: [[l], ids.filter((x) => x !== l)],
          name: `isolate ${l}`,
        };
        break;
      }
      case 4: {
        const k = Math.floor(ids.length / 2);
        this.regime = {
          kind: "partition",
          groups: [shuffled.slice(0, k), shuffled.slice(k)],
          name: "split",
        };
        break;
      }
      case 5: {
        const [b, ...rest] = shuffled;
        const half = Math.ceil(rest.length / 2);
        this.regime = {
          kind: "partition",
          groups: [[b!], rest.slice(0, half), rest.slice(half)],
          name: `bridge ${b}`,
        };
        break;
      }
      case 6: {
        const x = this.rand() < 0.5 && leader ? leader.id : shuffled[0]!;
        this.regime = { kind: "oneway", from: x, name: `oneway from ${x}` };
        break;
      }
    }
    this.regimeUntil = this.now + (this.opts.harsh ? 20 + this.#int(80) : 100 + this.#int(400));
    this.#log(`regime ${JSON.stringify(this.regime)}`);
  }

  #propose(): void {
    const live = this.#live();
    const leader = this.#leader();
    const target = leader && this.rand() < 0.8 ? leader : this.#pick(live);
    if (!target?.node) return;
    const data = enc.encode(`p${this.proposalSeq++}`);
    const err = target.node.propose(data);
    if (err?.kind === "NotLeader" && err.leaderHint !== NONE) {
      this.nodes.get(err.leaderHint)?.node?.propose(data);
    }
  }

  #read(): void {
    const target = this.#pick(this.#live());
    if (!target?.node) return;
    const key = `r${this.readSeq++}`;
    // Every write applied anywhere before the read began must be visible to it.
    const err = target.node.readIndex(enc.encode(key));
    if (err === undefined) this.reads.set(key, { node: target.id, minIndex: this.maxApplied });
  }

  #membership(): void {
    const leader = this.#leader();
    if (!leader?.node) return;
    const cs = leader.node.confState();
    let cc: ConfChange | undefined;
    const r = this.rand();
    if (cs.learners.length > 0 && r < 0.6) {
      cc = { type: "addVoter", nodeId: cs.learners[0]!, context: new Uint8Array(0) };
    } else if (r < 0.8 && this.nextId <= this.maxId && cs.voters.length <= this.opts.nodes) {
      cc = { type: "addLearner", nodeId: this.nextId, context: new Uint8Array(0) };
    } else if (cs.voters.length > 3) {
      const victim = this.#pick(cs.voters)!;
      cc = { type: "removeNode", nodeId: victim, context: new Uint8Array(0) };
    }
    if (!cc) return;
    const err = leader.node.proposeConfChange(cc);
    if (err) return;
    this.stats.confChanges++;
    this.#log(`n${leader.id} proposes ${cc.type} ${cc.nodeId}`);
    if (cc.type === "addLearner") {
      // The new member starts empty (`--join`) and waits for the leader.
      this.#addNode(this.nextId++, false);
    }
  }

  // --- checks ----------------------------------------------------------------------------------

  #checkLeaders(): void {
    for (const s of this.nodes.values()) {
      const node = s.node;
      if (!node) continue;
      if (node.term > this.stats.maxTerm) this.stats.maxTerm = node.term;
      if (node.role !== "leader") continue;
      const prev = this.leaders.get(node.term);
      if (prev === undefined) {
        this.leaders.set(node.term, s.id);
        this.stats.elections++;
        this.#log(`n${s.id} leads term ${node.term}`);
      } else if (prev !== s.id) {
        this.#fail("election safety", `nodes ${prev} and ${s.id} both lead term ${node.term}`);
      }
      if (s.lastLeaderTerm !== node.term) {
        s.lastLeaderTerm = node.term;
        // Leader completeness: every applied (hence committed) entry is in the new leader's log.
        for (let i = 1; i <= this.maxApplied; i++) {
          const t = node.termAt(i);
          if (t === undefined) continue; // compacted into its snapshot
          if (t !== this.committedTerm[i]) {
            this.#fail(
              "leader completeness",
              `leader ${s.id} of term ${node.term} has ${i}@${t}, committed ${i}@${
                this.committedTerm[i]
              }`,
            );
          }
        }
      }
    }
  }

  // --- main loop -------------------------------------------------------------------------------

  #step(faults: boolean): void {
    const t = this.now;
    // Deliveries due now.
    while (this.heap.size > 0 && this.heap.peek()!.time <= t) this.#deliver(this.heap.pop()!);
    // Ticks.
    for (const s of this.nodes.values()) {
      if (s.node && (t + s.tickPhase) % s.tickEvery === 0) s.node.tick();
    }
    // Stops of removed members, restarts.
    for (const s of this.nodes.values()) {
      if (s.node && s.stopAt >= 0 && s.stopAt <= t) {
        s.node = undefined;
        s.inflight = undefined;
      }
      if (!s.node && !s.removed && s.restartAt >= 0 && s.restartAt <= t) this.#restart(s);
    }
    // Workload and faults.
    // After healing only the liveness marker is proposed, so "everyone caught up" is reachable
    // even when a seed's replication is slow (one entry per message, one message in flight).
    if (faults && this.rand() < 0.25) this.#propose();
    if (this.opts.reads && this.rand() < 0.05) this.#read();
    if (faults) {
      if (t >= this.regimeUntil) this.#newRegime();
      if (this.opts.crashes && this.rand() < (this.opts.harsh ? 0.015 : 0.004)) {
        const victim = this.#pick(this.#live().filter((s) => !s.removed));
        if (victim) this.#crash(victim);
      }
      if (this.opts.membership && this.rand() < 0.004) this.#membership();
      if (this.rand() < 0.002) {
        const leader = this.#leader();
        const to = leader ? this.#pick(leader.node!.confState().voters) : undefined;
        if (leader && to !== undefined) leader.node!.transferLeader(to);
      }
    }
    for (const s of this.nodes.values()) this.#process(s);
    this.#checkLeaders();
    this.stats.steps++;
    this.now++;
  }

  run(): SimResult {
    let violation: SimViolation | undefined;
    try {
      for (let i = 0; i < this.opts.steps; i++) this.#step(true);
      this.#heal();
    } catch (e) {
      if (e instanceof _Violation) {
        violation = { property: e.property, step: this.now, detail: e.message };
      } else {
        violation = {
          property: "exception",
          step: this.now,
          detail: (e as Error).stack ?? String(e),
        };
      }
    }
    return {
      seed: this.opts.seed,
      violation,
      digest: this.hash.toString(16).padStart(8, "0"),
      stats: this.stats,
      trace: this.trace,
    };
  }

  #heal(): void {
    this.regime = { kind: "calm" };
    this.healed = true;
    this.#log("heal");
    for (const s of this.nodes.values()) {
      if (!s.node && !s.removed) s.restartAt = this.now;
    }
    const start = this.now;
    const marker = `final-${this.opts.seed}`;
    let proposedAt = -1;
    while (this.now - start < LIVENESS_BOUND) {
      this.#step(false);
      const leader = this.#leader();
      if (!leader?.node) continue;
      if (proposedAt < 0 || this.now - proposedAt > 100) {
        if (leader.node.propose(enc.encode(marker)) === undefined) proposedAt = this.now;
      }
      // Done when every member of the leader's configuration applied the marker.
      const idx = this.committedData.indexOf(`${EntryType.Normal}/${marker}`);
      if (idx < 0) continue;
      const cs = leader.node.confState();
      const members = [...cs.voters, ...cs.learners];
      if (members.every((id) => (this.nodes.get(id)?.appliedIndex ?? -1) >= this.maxApplied)) {
        return;
      }
    }
    const leader = this.#leader();
    const lagging = [...this.nodes.values()]
      .filter((s) => !s.removed)
      .map((s) => {
        if (!s.node) return `${s.id}:down`;
        const st = s.node.status();
        const li = s.node.lastIndex();
        return `${s.id}:${st.role}@${s.appliedIndex} t${st.term} c${st.commit} last ${li}@${
          s.node.termAt(li)
        } voters ${st.confState.voters} learners ${st.confState.learners}`;
      })
      .join("; ");
    if (leader?.node) {
      const pr = [...leader.node.status().progress].map(([id, p]) =>
        `${id}:${p.state} m${p.match} n${p.next}${p.recentActive ? "" : " inactive"}`
      );
      this.#log(`leader ${leader.id} progress ${pr.join(", ")}`);
    }
    this.#fail(
      "liveness",
      `no progress within ${LIVENESS_BOUND} steps after heal (leader ${
        leader?.id ?? "none"
      }, max applied ${this.maxApplied}, ${lagging})`,
    );
  }
}

function _isLeaderMessage(m: Message): boolean {
  return m.type === MessageType.App || m.type === MessageType.Heartbeat ||
    m.type === MessageType.Snap;
}

/** Runs seeds `[from, from + count)`; returns the failures. */
export function runSeeds(
  opts: Omit<SimOptions, "seed"> & { from: number; count: number },
  onFailure?: (r: SimResult) => void,
): { failures: SimResult[]; runs: number } {
  const failures: SimResult[] = [];
  for (let seed = opts.from; seed < opts.from + opts.count; seed++) {
    const r = runSim({ ...opts, seed });
    if (r.violation) {
      failures.push(r);
      onFailure?.(r);
    }
  }
  return { failures, runs: opts.count };
}
