/**
 * `RaftNode`: the Raft consensus core as a pure, deterministic state machine (in the style of
 * etcd-io/raft's RawNode). No I/O, no timers, no clock reads; randomness comes from the seeded
 * `config.random`.
 *
 * Driving contract (see `Ready` in types.ts). Inputs are `tick()`, `step(message)`,
 * `propose(data)`, `proposeConfChange(cc)`, `readIndex(ctx)`, `transferLeader(id)` and the
 * transport feedback `reportUnreachable` / `reportSnapshot`. After inputs, while `hasReady()`:
 *
 * 1. `const rd = node.ready()`;
 * 2. persist `rd.snapshot`, then `rd.entries` (truncating any stored suffix they overwrite), then
 *    `rd.hardState`; fsync if `rd.mustSync` — all BEFORE step 3;
 * 3. send `rd.messages`;
 * 4. apply `rd.committedEntries` in order (call `applyConfChange` for `EntryType.ConfChange`
 *    entries), serve `rd.readStates` once applied ≥ their index;
 * 5. `node.advance(rd)`.
 *
 * One Ready at a time: call `advance(rd)` before the next `ready()`. Inputs (`step`, `tick`,
 * proposals) may be fed while a Ready is being persisted.
 *
 * Leader optimization (etcd's "leader writes its log in parallel with replication"): messages of
 * type `App`, `Heartbeat` and `Snap` — sent only by a leader — may be sent BEFORE the Ready is
 * persisted, because the leader counts its own entries toward commit only after `advance()`.
 * Every other message (votes, responses) must wait until the Ready is durable.
 *
 * Safety rules implemented here: one vote per term (persisted with the term before the vote is
 * sent), election restriction (§5.4.1), a leader commits only entries of its own term by
 * counting replicas (Figure 8), PreVote, CheckQuorum (with leader lease on votes), single-server
 * membership changes applied one at a time and only after the leader committed an entry of its
 * term, ReadIndex, TimeoutNow leadership transfer and snapshots.
 *
 * @module
 */
import { decodeConfChange, encodeConfChange } from "./codec.ts";
import { RaftError } from "./errors.ts";
import { Progress } from "./progress.ts";
import { committedIndex, hasQuorum, voteResult } from "./quorum.ts";
import { RaftLog } from "./raft_log.ts";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  newMessage,
  type NodeId,
  NONE,
  type ProgressStatus,
  type ProposeError,
  type RaftConfig,
  type RaftStatus,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
} from "./types.ts";

/** Vote context marking an election started by leadership transfer (bypasses the lease). */
export const CAMPAIGN_TRANSFER: Uint8Array = new TextEncoder().encode("CampaignTransfer");

/**
 * Deliberately unsafe switches, for tests that prove the simulator catches broken rules. Never
 * set them outside tests.
 */
export interface UnsafeTestingKnobs {
  /** Commit any index a majority holds, ignoring the entry's term (breaks Figure 8). */
  unsafeCommitByCount?: boolean;
  /** Grant votes without the up-to-date check (breaks the election restriction). */
  unsafeSkipElectionRestriction?: boolean;
  /** Lease mode: hold the lease for `electionTick * 2` ticks (longer than followers wait). */
  unsafeLongLease?: boolean;
}

/** Extra optional settings of a node, beyond `RaftConfig`. */
export interface RaftNodeOptions extends RaftConfig, UnsafeTestingKnobs {
  /**
   * The bootstrap configuration of the initial cluster (pass the same list on every start of an
   * initial member). On a fresh (empty) storage the node writes committed entries 1..n at term 1
   * adding these members, exactly as every other initial member does, so that members joining
   * later learn the initial configuration by replication. When the storage holds a snapshot, its
   * configuration wins. A node joining a running cluster leaves this empty and learns the
   * configuration from the leader (log or snapshot).
   */
  peers?: NodeId[];
  /** Largest single proposal (data bytes); larger ones get `TooLarge`. Default 16 MiB. */
  maxProposalBytes?: number;
  /** Initial learners, with `peers`. */
  learners?: NodeId[];
}

interface _ReadRequest {
  index: number;
  from: NodeId;
  context: Uint8Array;
  key: string;
  acks: Map<NodeId, boolean>;
}

function _ctxKey(ctx: Uint8Array): string {
  let s = "";
  for (let i = 0; i < ctx.length; i++) s += String.fromCharCode(ctx[i]!);
  return s;
}

function _bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const EMPTY = new Uint8Array(0);

function _msg(type: MessageType, to: NodeId, fields: Partial<Message> = {}): Message {
  return newMessage(type, { to, ...fields });
}

/**
 * One Raft member.
 *
 * @example
 * ```ts
 * import { RaftNode } from "./node.ts";
 * import { MemoryStorage } from "./memory_storage.ts";
 * const storage = new MemoryStorage({ confState: { voters: [1], learners: [] } });
 * const node = new RaftNode({ id: 1, storage, random: () => 0.5 });
 * while (node.role !== "leader") node.tick();
 * node.propose(new TextEncoder().encode("x"));
 * while (node.hasReady()) {
 *   const rd = node.ready();
 *   storage.append(rd.entries);
 *   if (rd.hardState) storage.setHardState(rd.hardState);
 *   // send rd.messages, apply rd.committedEntries
 *   node.advance(rd);
 * }
 * console.log(node.status().commit); // 2 (the leader's no-op and the proposal)
 * ```
 */
export class RaftNode {
  readonly #id: NodeId;
  #term = 0;
  #vote: NodeId = NONE;
  #lead: NodeId = NONE;
  #role: Role = "follower";
  readonly #log: RaftLog;
  readonly #random: () => number;

  #voters = new Set<NodeId>();
  #learners = new Set<NodeId>();
  #prs = new Map<NodeId, Progress>();
  #votes = new Map<NodeId, boolean>();

  readonly #electionTimeout: number;
  readonly #heartbeatTimeout: number;
  #randomizedElectionTimeout = 0;
  #electionElapsed = 0;
  #heartbeatElapsed = 0;

  readonly #preVote: boolean;
  readonly #checkQuorum: boolean;
  /** Lease reads (`readOnly: "lease"` with CheckQuorum). */
  readonly #leaseReads: boolean;
  /** Ticks since this node started (never reset): the clock of the leader lease. */
  #ticks = 0;
  /** Leader, lease mode: per voter, the newest tick of ours it echoed in a HeartbeatResp. */
  #heardTick = new Map<NodeId, number>();
  /** Leader: TimeoutNow was sent this term (a forced election may be under way: no lease). */
  #leaseVoid = false;
  /**
   * Lease mode: votes are refused until `#ticks` reaches this (a restarted member may have
   * echoed a leader's heartbeat just before it went down; a fresh, empty one never did).
   */
  #voteQuietTicks = 0;
  readonly #maxSizePerMsg: number;
  readonly #maxProposalBytes: number;
  readonly #maxInflight: number;
  readonly #knobs: UnsafeTestingKnobs;

  #leadTransferee: NodeId = NONE;
  #pendingConfIndex = 0;

  // ReadIndex state (leader).
  #reads: _ReadRequest[] = [];
  #readsByKey = new Map<string, _ReadRequest>();
  #pendingReadMsgs: Message[] = [];
  #readStates: ReadState[] = [];

  #msgs: Message[] = [];
  #needBcast = false;

  #prevSoft: SoftState;
  #prevHard: HardState;

  constructor(config: RaftConfig | RaftNodeOptions) {
    const cfg = config as RaftNodeOptions;
    if (!Number.isSafeInteger(cfg.id) || cfg.id <= 0) {
      throw new RaftError("Invalid", `node id must be a positive integer, got ${cfg.id}`);
    }
    this.#id = cfg.id;
    this.#random = cfg.random;
    this.#electionTimeout = cfg.electionTick ?? 10;
    this.#heartbeatTimeout = cfg.heartbeatTick ?? 1;
    if (this.#heartbeatTimeout <= 0 || this.#electionTimeout <= this.#heartbeatTimeout) {
      throw new RaftError("Invalid", "electionTick must exceed heartbeatTick > 0");
    }
    this.#preVote = cfg.preVote ?? true;
    this.#checkQuorum = cfg.checkQuorum ?? true;
    this.#leaseReads = cfg.readOnly === "lease" && this.#checkQuorum;
    this.#maxSizePerMsg = cfg.maxSizePerMsg ?? 1024 * 1024;
    this.#maxProposalBytes = cfg.maxProposalBytes ?? 16 * 1024 * 1024;
    this.#maxInflight = cfg.maxInflightMsgs ?? 256;
    this.#knobs = {
      unsafeCommitByCount: cfg.unsafeCommitByCount,
      unsafeSkipElectionRestriction: cfg.unsafeSkipElectionRestriction,
      unsafeLongLease: cfg.unsafeLongLease,
    };
    this.#log = new RaftLog(cfg.storage);

    const { hardState, confState } = cfg.storage.initialState();
    let cs = confState;
    const peers = cfg.peers ?? [];
    const bootLearners = cfg.learners ?? [];
    const hasSnapshot = cfg.storage.snapshot().meta.index > 0;
    if (!hasSnapshot && (peers.length > 0 || bootLearners.length > 0)) {
      // No snapshot: the base configuration is the bootstrap one (`peers`).
      cs = { voters: [...peers], learners: [...bootLearners] };
    }
    for (const v of cs.voters) this.#voters.add(v);
    for (const l of cs.learners) this.#learners.add(l);
    const fresh = cfg.storage.lastIndex() === 0 && hardState.term === 0 && !hasSnapshot;
    if (this.#leaseReads && !fresh) this.#voteQuietTicks = this.#electionTimeout;

    if (hardState.commit > 0 || hardState.term > 0) {
      const last = this.#log.lastIndex();
      if (hardState.commit > last) {
        throw new RaftError(
          "Invalid",
          `hard state commit ${hardState.commit} beyond the last log index ${last}`,
        );
      }
      this.#log.committed = Math.max(this.#log.committed, hardState.commit);
      this.#term = hardState.term;
      this.#vote = hardState.vote;
    }
    // A commit below the latest snapshot (a crash between recording a snapshot and the next hard
    // state) is raised to it: a snapshot only ever holds committed entries.
    const snapIndex = cfg.storage.snapshot().meta.index;
    if (snapIndex > this.#log.committed && snapIndex <= this.#log.lastIndex()) {
      this.#log.committed = snapIndex;
    }
    // Default: the state machine was restored from the latest snapshot.
    const applied = cfg.applied ?? cfg.storage.snapshot().meta.index;
    if (applied > this.#log.applied) {
      if (applied > this.#log.committed) {
        throw new RaftError("Invalid", `applied ${applied} > commit ${this.#log.committed}`);
      }
      // Conf changes between the snapshot and `applied` were applied before the restart but
      // will not be redelivered: replay them into the configuration now.
      const ents = this.#log.slice(this.#log.applied + 1, applied + 1) ?? [];
      for (const e of ents) {
        if (e.type === EntryType.ConfChange) this.#applyConfChangeToSets(decodeConfChange(e.data));
      }
      this.#log.appliedTo(applied);
    }
    if (fresh && (peers.length > 0 || bootLearners.length > 0)) {
      // Bootstrap (as etcd does): every initial member writes the same committed entries at
      // term 1 describing the initial configuration, so members that join later learn it by
      // ordinary replication.
      const boot: Entry[] = [];
      const add = (type: ConfChange["type"], nodeId: NodeId) =>
        boot.push({
          index: boot.length + 1,
          term: 1,
          type: EntryType.ConfChange,
          data: encodeConfChange({ type, nodeId, context: EMPTY }),
        });
      for (const v of [...peers].sort((a, b) => a - b)) add("addVoter", v);
      for (const l of [...bootLearners].sort((a, b) => a - b)) add("addLearner", l);
      this.#log.append(boot);
      this.#log.commitTo(boot.length);
      this.#term = 1;
    }
    this.#resetProgress();
    this.#becomeFollower(this.#term, NONE);
    this.#prevSoft = { leader: this.#lead, role: this.#role };
    this.#prevHard = { ...hardState }; // as stored: a raised commit or a bootstrap is persisted
  }

  // -------------------------------------------------------------------------------------------
  // Accessors.

  /** This member's id. */
  get id(): NodeId {
    return this.#id;
  }
  /** The known leader, or `NONE` (0). */
  get leader(): NodeId {
    return this.#lead;
  }
  /** Current role. */
  get role(): Role {
    return this.#role;
  }
  /** Current term. */
  get term(): number {
    return this.#term;
  }

  /** A point-in-time view for status reports and tests. */
  status(): RaftStatus {
    const progress = new Map<NodeId, ProgressStatus>();
    if (this.#role === "leader") {
      for (const [id, pr] of this.#prs) {
        progress.set(id, {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          learner: pr.learner,
          recentActive: pr.recentActive,
        });
      }
    }
    return {
      id: this.#id,
      term: this.#term,
      vote: this.#vote,
      commit: this.#log.committed,
      applied: this.#log.applied,
      leader: this.#lead,
      role: this.#role,
      confState: this.confState(),
      progress,
    };
  }

  /** The current configuration (as applied). */
  confState(): ConfState {
    return {
      voters: [...this.#voters].sort((a, b) => a - b),
      learners: [...this.#learners].sort((a, b) => a - b),
    };
  }

  /** Last index of the log (stable + unstable). */
  lastIndex(): number {
    return this.#log.lastIndex();
  }

  /**
   * The commit index as of now. It can move between `ready()` and `advance()` (acknowledgements
   * stepped meanwhile); the leader's own unpersisted entries never count toward it.
   */
  get committed(): number {
    return this.#log.committed;
  }

  /** Term of the entry at `index` (0 past the end, undefined if compacted). For tests. */
  termAt(index: number): number | undefined {
    return this.#log.term(index);
  }

  /** The log's entries in [lo, hi) (stable and unstable), undefined if compacted. */
  entries(lo: number, hi: number): Entry[] | undefined {
    return this.#log.slice(lo, hi);
  }

  /** Ticks since this node was created (the lease clock; see `leaseStartTick`). */
  get ticks(): number {
    return this.#ticks;
  }

  /**
   * Lease mode, leader: the tick (of {@linkcode RaftNode.ticks}) at which the heartbeat that
   * a quorum most recently echoed was sent, if the lease it grants is still running; else 0.
   * `readIndex` answers without a round while this is non-zero. The core counts ticks only;
   * a driver whose ticks can run late (a stalled event loop) checks the real time elapsed since
   * that tick and calls {@linkcode RaftNode.expireLease} when it exceeds the lease.
   */
  leaseStartTick(): number {
    if (!this.#leaseReads || this.#role !== "leader" || this.#leaseVoid) return 0;
    const heard = this.#heardTick;
    const start = committedIndex(
      this.#voters,
      (id) => id === this.#id ? this.#ticks : heard.get(id) ?? 0,
    );
    if (start <= 0 || this.#ticks - start >= this.leaseTicks) return 0;
    return start;
  }

  /** Length of the leader lease in ticks: `electionTick - 2` (≤ 0: lease reads never served). */
  get leaseTicks(): number {
    return this.#knobs.unsafeLongLease ? this.#electionTimeout * 2 : this.#electionTimeout - 2;
  }

  /** Forgets every heartbeat echo: no lease until a quorum echoes a newer heartbeat. */
  expireLease(): void {
    this.#heardTick.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Inputs.

  /** Advances logical time by one tick. */
  tick(): void {
    this.#ticks++;
    if (this.#role === "leader") this.#tickHeartbeat();
    else this.#tickElection();
  }

  /**
   * Proposes a command. Leader only: elsewhere returns `NotLeader` with the known leader as a
   * hint (the server forwards).
   */
  propose(data: Uint8Array): ProposeError | undefined {
    return this.proposeBatch([data]);
  }

  /** Proposes several commands at once (one append, one broadcast). */
  proposeBatch(datas: readonly Uint8Array[]): ProposeError | undefined {
    const err = this.#canPropose();
    if (err) return err;
    const ents: Entry[] = [];
    for (const data of datas) {
      if (data.length > this.#maxProposalBytes) {
        return { kind: "TooLarge", limit: this.#maxProposalBytes };
      }
      ents.push({ index: 0, term: 0, type: EntryType.Normal, data });
    }
    this.#appendEntries(ents);
    this.#needBcast = true;
    return undefined;
  }

  /**
   * Proposes a single-server membership change. Rejected while another change is not yet
   * applied, or before the leader applied an entry of its own term (`ConfChangePending`).
   */
  proposeConfChange(cc: ConfChange): ProposeError | undefined {
    const err = this.#canPropose();
    if (err) return err;
    if (this.#pendingConfIndex > this.#log.applied) return { kind: "ConfChangePending" };
    const data = encodeConfChange(cc);
    this.#appendEntries([{ index: 0, term: 0, type: EntryType.ConfChange, data }]);
    this.#pendingConfIndex = this.#log.lastIndex();
    this.#needBcast = true;
    return undefined;
  }

  #canPropose(): ProposeError | undefined {
    if (this.#role !== "leader") return { kind: "NotLeader", leaderHint: this.#lead };
    if (this.#leadTransferee !== NONE) {
      return { kind: "TransferInProgress", leaderHint: this.#leadTransferee };
    }
    return undefined;
  }

  /**
   * Applies a committed membership change (the driver calls this when it applies an
   * `EntryType.ConfChange` entry) and returns the new configuration.
   */
  applyConfChange(cc: ConfChange): ConfState {
    this.#applyConfChangeToSets(cc);
    if (cc.type === "removeNode") {
      this.#prs.delete(cc.nodeId);
      if (this.#leadTransferee === cc.nodeId) this.#leadTransferee = NONE;
    } else {
      const learner = cc.type === "addLearner";
      const pr = this.#prs.get(cc.nodeId);
      if (pr) pr.learner = learner;
      else {
        const npr = new Progress({
          next: this.#log.lastIndex() + 1,
          maxInflight: this.#maxInflight,
          learner,
        });
        npr.recentActive = true;
        if (cc.nodeId === this.#id) npr.match = this.#persistedLast();
        this.#prs.set(cc.nodeId, npr);
      }
    }
    if (this.#role === "leader") {
      if (!this.#voters.has(this.#id)) {
        // Removed (or demoted) leader: hand over to the most caught-up voter, then step down.
        let best = NONE;
        let bestMatch = -1;
        for (const v of this.#voters) {
          const pr = this.#prs.get(v);
          if (pr && pr.match > bestMatch) {
            best = v;
            bestMatch = pr.match;
          }
        }
        if (best !== NONE && bestMatch === this.#log.lastIndex()) {
          this.#send(_msg(MessageType.TimeoutNow, best));
        }
        this.#becomeFollower(this.#term, NONE);
      } else {
        if (this.#maybeCommit()) this.#needBcast = true;
        else if (cc.type !== "removeNode") this.#needBcast = true;
      }
    }
    return this.confState();
  }

  #applyConfChangeToSets(cc: ConfChange): void {
    switch (cc.type) {
      case "addVoter":
        this.#learners.delete(cc.nodeId);
        this.#voters.add(cc.nodeId);
        break;
      case "addLearner":
        this.#voters.delete(cc.nodeId);
        this.#learners.add(cc.nodeId);
        break;
      case "removeNode":
        this.#voters.delete(cc.nodeId);
        this.#learners.delete(cc.nodeId);
        break;
    }
  }

  /**
   * Requests a linearizable read point for `context` (unique per request). The result arrives
   * later as a `Ready.readStates` entry with the same context; serve the read once applied ≥ its
   * index. On a follower the request is forwarded to the leader. Requests may be dropped (leader
   * change, message loss): the caller retries on a timeout.
   */
  readIndex(context: Uint8Array): ProposeError | undefined {
    if (this.#role === "leader") {
      this.#stepLeaderReadIndex(
        _msg(MessageType.ReadIndex, this.#id, { from: this.#id, context }),
      );
      return undefined;
    }
    if (this.#lead === NONE) return { kind: "NotLeader", leaderHint: NONE };
    this.#send(_msg(MessageType.ReadIndex, this.#lead, { context }));
    return undefined;
  }

  /** Asks the leader to hand leadership to `to` (TimeoutNow once `to` is caught up). */
  transferLeader(to: NodeId): void {
    this.step(_msg(MessageType.TransferLeader, this.#id, { from: to }));
  }

  /** Transport feedback: a message to `id` could not be delivered. */
  reportUnreachable(id: NodeId): void {
    this.step(_msg(MessageType.Unreachable, this.#id, { from: id }));
  }

  /** Transport feedback: the snapshot sent to `id` was installed (`ok`) or failed. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    this.step(_msg(MessageType.SnapStatus, this.#id, { from: id, reject: !ok }));
  }

  // -------------------------------------------------------------------------------------------
  // Ready / advance.

  #flush(): void {
    if (this.#needBcast) {
      this.#needBcast = false;
      if (this.#role === "leader") this.#bcastAppend();
    }
  }

  /** Whether `ready()` has anything to do. */
  hasReady(): boolean {
    this.#flush();
    if (this.#msgs.length > 0 || this.#readStates.length > 0) return true;
    if (this.#log.unstable.entries.length > 0 || this.#log.hasPendingSnapshot()) return true;
    if (this.#log.hasNextCommittedEnts()) return true;
    const hs = this.#prevHard;
    if (hs.term !== this.#term || hs.vote !== this.#vote || hs.commit !== this.#log.committed) {
      return true;
    }
    return this.#prevSoft.leader !== this.#lead || this.#prevSoft.role !== this.#role;
  }

  /** Collects everything the driver must do now (see the module doc for the order). */
  ready(): Ready {
    this.#flush();
    const rd: Ready = {
      entries: this.#log.unstable.entries.slice(),
      committedEntries: this.#log.nextCommittedEnts(),
      messages: this.#msgs,
      readStates: this.#readStates,
      mustSync: false,
    };
    this.#msgs = [];
    this.#readStates = [];
    if (this.#prevSoft.leader !== this.#lead || this.#prevSoft.role !== this.#role) {
      rd.softState = { leader: this.#lead, role: this.#role };
      this.#prevSoft = rd.softState;
    }
    const hs = this.#hardState();
    const prev = this.#prevHard;
    if (hs.term !== prev.term || hs.vote !== prev.vote || hs.commit !== prev.commit) {
      rd.hardState = hs;
    }
    if (this.#log.unstable.snapshot) rd.snapshot = this.#log.unstable.snapshot;
    rd.mustSync = rd.entries.length > 0 || rd.snapshot !== undefined ||
      hs.term !== prev.term || hs.vote !== prev.vote;
    if (rd.hardState) this.#prevHard = rd.hardState;
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) this.#log.applyingTo(lastCommitted.index);
    return rd;
  }

  /** Acknowledges that `rd` was persisted, sent and applied. */
  advance(rd: Ready): void {
    const lastEnt = rd.entries[rd.entries.length - 1];
    if (lastEnt) this.#log.unstable.stableTo(lastEnt.index, lastEnt.term);
    if (rd.snapshot) {
      this.#log.unstable.stableSnapTo(rd.snapshot.meta.index);
      this.#log.appliedTo(rd.snapshot.meta.index);
    }
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) this.#log.appliedTo(lastCommitted.index);
    if (this.#role === "leader" && lastEnt) {
      // Our own entries are durable now: they count toward the quorum.
      const self = this.#prs.get(this.#id);
      if (self && self.maybeUpdate(this.#persistedLast())) {
        if (this.#maybeCommit()) this.#needBcast = true;
      }
    }
  }

  /** Last index of the persisted (stable) log. */
  #persistedLast(): number {
    return Math.min(this.#log.unstable.offset - 1, this.#log.lastIndex());
  }

  #hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.#log.committed };
  }

  // -------------------------------------------------------------------------------------------
  // Role transitions.

  #reset(term: number): void {
    if (this.#term !== term) {
      this.#term = term;
      this.#vote = NONE;
    }
    this.#lead = NONE;
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizedElectionTimeout = this.#electionTimeout +
      Math.floor(this.#random() * this.#electionTimeout);
    this.#leadTransferee = NONE;
    this.#votes.clear();
    this.#resetProgress();
    this.#reads = [];
    this.#readsByKey.clear();
    this.#pendingReadMsgs = [];
    this.#needBcast = false;
    this.#heardTick.clear();
    this.#leaseVoid = false;
  }

  #resetProgress(): void {
    const last = this.#log.lastIndex();
    const prs = new Map<NodeId, Progress>();
    const add = (id: NodeId, learner: boolean) => {
      const pr = new Progress({ next: last + 1, maxInflight: this.#maxInflight, learner });
      if (id === this.#id) pr.match = this.#persistedLast();
      prs.set(id, pr);
    };
    for (const v of this.#voters) add(v, false);
    for (const l of this.#learners) add(l, true);
    this.#prs = prs;
  }

  /** Becomes a follower of `lead` (or of nobody) in `term`. */
  #becomeFollower(term: number, lead: NodeId): void {
    this.#reset(term);
    this.#lead = lead;
    this.#role = "follower";
  }

  #becomePreCandidate(): void {
    // PreVote: neither the term nor the vote changes.
    this.#votes.clear();
    this.#lead = NONE;
    this.#role = "precandidate";
  }

  #becomeCandidate(): void {
    this.#reset(this.#term + 1);
    this.#vote = this.#id;
    this.#role = "candidate";
  }

  #becomeLeader(): void {
    this.#reset(this.#term);
    this.#lead = this.#id;
    this.#role = "leader";
    const self = this.#prs.get(this.#id);
    if (self) self.becomeReplicate();
    for (const pr of this.#prs.values()) pr.recentActive = true;
    // The no-op of this term: commits everything before it (Figure 8) and unlocks ReadIndex.
    this.#appendEntries([{ index: 0, term: 0, type: EntryType.Normal, data: EMPTY }]);
    // Membership changes wait until this no-op is applied.
    this.#pendingConfIndex = this.#log.lastIndex();
  }

  #promotable(): boolean {
    return this.#voters.has(this.#id);
  }

  #pastElectionTimeout(): boolean {
    return this.#electionElapsed >= this.#randomizedElectionTimeout;
  }

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#promotable() && this.#pastElectionTimeout()) {
      this.#electionElapsed = 0;
      this.step(_msg(MessageType.Hup, this.#id, { from: this.#id }));
    }
  }

  #tickHeartbeat(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#electionTimeout) {
      this.#electionElapsed = 0;
      if (this.#checkQuorum) {
        const prs = this.#prs;
        const active = hasQuorum(
          this.#voters,
          (id) => id === this.#id || (prs.get(id)?.recentActive ?? false),
        );
        for (const [id, pr] of prs) if (id !== this.#id) pr.recentActive = false;
        if (!active) {
          this.#becomeFollower(this.#term, NONE);
          return;
        }
      }
      if (this.#leadTransferee !== NONE) this.#leadTransferee = NONE; // transfer timed out
    }
    if (this.#role !== "leader") return;
    if (this.#heartbeatElapsed >= this.#heartbeatTimeout) {
      this.#heartbeatElapsed = 0;
      this.step(_msg(MessageType.Beat, this.#id, { from: this.#id }));
    }
  }

  #hasUnappliedConfChange(): boolean {
    if (this.#log.committed <= this.#log.applied) return false;
    const ents = this.#log.slice(this.#log.applied + 1, this.#log.committed + 1) ?? [];
    return ents.some((e) => e.type === EntryType.ConfChange);
  }

  #campaign(kind: "pre" | "election" | "transfer"): void {
    if (!this.#promotable()) return;
    let voteType: MessageType;
    let term: number;
    if (kind === "pre") {
      this.#becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.#term + 1;
    } else {
      this.#becomeCandidate();
      voteType = MessageType.Vote;
      term = this.#term;
    }
    const respType = kind === "pre" ? MessageType.PreVoteResp : MessageType.VoteResp;
    if (this.#poll(this.#id, respType, true) === "won") {
      if (kind === "pre") this.#campaign("election");
      else this.#becomeLeader();
      return;
    }
    const ctx = kind === "transfer" ? CAMPAIGN_TRANSFER : EMPTY;
    for (const id of [...this.#voters].sort((a, b) => a - b)) {
      if (id === this.#id) continue;
      this.#send(_msg(voteType, id, {
        term,
        index: this.#log.lastIndex(),
        logTerm: this.#log.lastTerm(),
        context: ctx,
      }));
    }
  }

  #poll(id: NodeId, _type: MessageType, granted: boolean) {
    if (!this.#votes.has(id)) this.#votes.set(id, granted);
    return voteResult(this.#voters, this.#votes);
  }

  // -------------------------------------------------------------------------------------------
  // Messages.

  #send(m: Message): void {
    if (m.from === NONE) m.from = this.#id;
    const t = m.type;
    // The target of a TimeoutNow campaigns at once, and voters grant it despite their lease.
    if (t === MessageType.TimeoutNow) this.#leaseVoid = true;
    if (
      t === MessageType.Vote || t === MessageType.VoteResp || t === MessageType.PreVote ||
      t === MessageType.PreVoteResp
    ) {
      if (m.term === 0) throw new RaftError("Invalid", `vote message ${t} without a term`);
    } else if (t !== MessageType.ReadIndex && t !== MessageType.Prop) {
      m.term = this.#term;
    }
    this.#msgs.push(m);
  }

  /** Feeds one message (from a peer, or a local one) into the state machine. */
  step(m: Message): void {
    if (m.term === 0) {
      // Local message (or a forwarded ReadIndex/Prop).
    } else if (m.term > this.#term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = _bytesEqual(m.context, CAMPAIGN_TRANSFER);
        // Lease mode: a member that just (re)started may have acknowledged the current leader's
        // heartbeat before it went down, so it waits a full election timeout before voting.
        const inLease = this.#checkQuorum &&
          ((this.#lead !== NONE && this.#electionElapsed < this.#electionTimeout) ||
            this.#ticks < this.#voteQuietTicks);
        if (!force && inLease) return; // a leader is alive: ignore the disruptive election
      }
      if (m.type === MessageType.PreVote) {
        // Never change the term on a PreVote.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // Our PreVote was granted at the future term; the term changes when we campaign.
      } else if (
        m.type === MessageType.App || m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snap
      ) {
        this.#becomeFollower(m.term, m.from);
      } else if (m.type === MessageType.Vote) {
        // As in the paper, only granting a vote resets the election timer: a candidate that
        // cannot win (stale log, fast clock) must not keep better candidates from timing out.
        const elapsed = this.#electionElapsed;
        this.#becomeFollower(m.term, NONE);
        this.#electionElapsed = elapsed;
      } else {
        this.#becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.#term) {
      if (
        (this.#checkQuorum || this.#preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.App)
      ) {
        // A stale leader (e.g. one rejoining after a partition): tell it our term.
        this.#send(_msg(MessageType.AppResp, m.from));
      } else if (m.type === MessageType.PreVote) {
        this.#send(_msg(MessageType.PreVoteResp, m.from, { term: this.#term, reject: true }));
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        if (this.#role === "leader") return;
        if (this.#hasUnappliedConfChange()) return;
        this.#campaign(this.#preVote ? "pre" : "election");
        return;
      case MessageType.Vote:
      case MessageType.PreVote: {
        const canVote = this.#vote === m.from ||
          (this.#vote === NONE && this.#lead === NONE) ||
          (m.type === MessageType.PreVote && m.term > this.#term);
        const upToDate = this.#knobs.unsafeSkipElectionRestriction ||
          this.#log.isUpToDate(m.index, m.logTerm);
        const respType = m.type === MessageType.Vote
          ? MessageType.VoteResp
          : MessageType.PreVoteResp;
        if (canVote && upToDate) {
          this.#send(_msg(respType, m.from, { term: m.term }));
          if (m.type === MessageType.Vote) {
            this.#electionElapsed = 0;
            this.#vote = m.from;
          }
        } else {
          this.#send(_msg(respType, m.from, { term: this.#term, reject: true }));
        }
        return;
      }
    }

    switch (this.#role) {
      case "leader":
        this.#stepLeader(m);
        return;
      case "candidate":
      case "precandidate":
        this.#stepCandidate(m);
        return;
      case "follower":
        this.#stepFollower(m);
        return;
    }
  }

  #stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.#lead !== NONE) {
          this.#send(_msg(MessageType.TransferLeader, this.#lead, { from: m.from }));
        }
        return;
      case MessageType.TimeoutNow:
        // Leadership transfer: campaign now, skipping PreVote and the lease.
        this.#campaign("transfer");
        return;
      case MessageType.ReadIndex:
        if (this.#lead !== NONE) {
          this.#send(_msg(MessageType.ReadIndex, this.#lead, { from: m.from, context: m.context }));
        }
        return;
      case MessageType.ReadIndexResp:
        this.#readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  #stepCandidate(m: Message): void {
    const myRespType = this.#role === "precandidate"
      ? MessageType.PreVoteResp
      : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.App:
        this.#becomeFollower(m.term, m.from);
        this.#handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.#becomeFollower(m.term, m.from);
        this.#handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.#becomeFollower(m.term, m.from);
        this.#handleSnapshot(m);
        return;
      case MessageType.VoteResp:
      case MessageType.PreVoteResp: {
        if (m.type !== myRespType) return;
        const res = this.#poll(m.from, m.type, !m.reject);
        if (res === "won") {
          if (this.#role === "precandidate") this.#campaign("election");
          else {
            this.#becomeLeader();
            this.#bcastAppend();
          }
        } else if (res === "lost") {
          this.#becomeFollower(this.#term, NONE);
        }
        return;
      }
    }
  }

  #stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.#bcastHeartbeat();
        return;
      case MessageType.ReadIndex:
        this.#stepLeaderReadIndex(m);
        return;
      case MessageType.TransferLeader:
        this.#stepTransferLeader(m.from);
        return;
    }
    const pr = this.#prs.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case MessageType.AppResp:
        pr.recentActive = true;
        this.#handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp:
        pr.recentActive = true;
        if (this.#leaseReads && m.index > 0 && m.index <= this.#ticks) {
          if (m.index > (this.#heardTick.get(m.from) ?? 0)) this.#heardTick.set(m.from, m.index);
        }
        pr.probeSent = false;
        if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.#log.lastIndex()) this.#sendAppend(m.from);
        if (m.context.length > 0) this.#ackRead(m.from, m.context);
        return;
      case MessageType.SnapStatus:
        if (pr.state !== "snapshot") return;
        if (m.reject) pr.pendingSnapshot = 0;
        pr.becomeProbe();
        // Wait for the next heartbeat response (or append response) before probing again.
        pr.probeSent = true;
        return;
      case MessageType.Unreachable:
        if (pr.state === "replicate") pr.becomeProbe();
        return;
    }
  }

  #handleAppendResponse(m: Message, pr: Progress): void {
    if (m.reject) {
      let nextProbe = m.rejectHint;
      if (m.hintTerm > 0) nextProbe = this.#log.findConflictByTerm(m.rejectHint, m.hintTerm);
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.#sendAppend(m.from);
      }
      return;
    }
    const oldPaused = pr.isPaused();
    if (pr.maybeUpdate(m.index)) {
      if (pr.state === "probe") pr.becomeReplicate();
      else if (pr.state === "snapshot" && pr.match + 1 >= this.#log.firstIndex()) {
        pr.becomeProbe();
        pr.becomeReplicate();
      } else if (pr.state === "replicate") pr.inflights.freeLE(m.index);

      if (this.#maybeCommit()) {
        // Tell everyone the new commit index, coalesced with other inputs until ready().
        this.#needBcast = true;
      } else if (oldPaused) {
        this.#sendAppend(m.from);
      }
      // Keep the pipeline full.
      while (this.#maybeSendAppend(m.from, false));
      if (m.from === this.#leadTransferee && pr.match === this.#log.lastIndex()) {
        this.#send(_msg(MessageType.TimeoutNow, m.from));
      }
    }
  }

  #stepTransferLeader(to: NodeId): void {
    const pr = this.#prs.get(to);
    if (!pr || pr.learner) return;
    if (this.#leadTransferee === to) return;
    if (to === this.#id) return;
    this.#leadTransferee = to;
    this.#electionElapsed = 0;
    if (pr.match === this.#log.lastIndex()) this.#send(_msg(MessageType.TimeoutNow, to));
    else this.#sendAppend(to);
  }

  // --- follower handlers ----------------------------------------------------------------------

  #handleAppend(m: Message): void {
    if (m.index < this.#log.committed) {
      this.#send(_msg(MessageType.AppResp, m.from, { index: this.#log.committed }));
      return;
    }
    const lastNew = this.#log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.#send(_msg(MessageType.AppResp, m.from, { index: lastNew }));
      return;
    }
    // Reject with a hint: the largest index ≤ min(m.index, last) whose term ≤ m.logTerm, and
    // that entry's term, so the leader can skip a whole term per round trip.
    const hintIndex = this.#log.findConflictByTerm(
      Math.min(m.index, this.#log.lastIndex()),
      m.logTerm,
    );
    const hintTerm = this.#log.term(hintIndex) ?? 0;
    this.#send(_msg(MessageType.AppResp, m.from, {
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      hintTerm,
    }));
  }

  #handleHeartbeat(m: Message): void {
    this.#log.commitTo(Math.min(m.commit, this.#log.lastIndex()));
    // Echo the leader's tick (its lease clock) and the read context.
    this.#send(_msg(MessageType.HeartbeatResp, m.from, { context: m.context, index: m.index }));
  }

  #handleSnapshot(m: Message): void {
    const s = m.snapshot;
    if (!s) return;
    if (this.#restore(s)) {
      this.#send(_msg(MessageType.AppResp, m.from, { index: this.#log.lastIndex() }));
    } else {
      this.#send(_msg(MessageType.AppResp, m.from, { index: this.#log.committed }));
    }
  }

  #restore(s: Snapshot): boolean {
    if (s.meta.index <= this.#log.committed) return false;
    if (this.#log.matchTerm(s.meta.index, s.meta.term)) {
      // We already have the entry: just fast-forward the commit index.
      this.#log.commitTo(s.meta.index);
      return false;
    }
    this.#log.restore(s);
    this.#voters = new Set(s.meta.confState.voters);
    this.#learners = new Set(s.meta.confState.learners);
    this.#resetProgress();
    return true;
  }

  // --- leader internals -----------------------------------------------------------------------

  #appendEntries(ents: Entry[]): void {
    let li = this.#log.lastIndex();
    for (const e of ents) {
      e.term = this.#term;
      e.index = ++li;
    }
    this.#log.append(ents);
    // The leader's own entries count toward commit only once persisted (see advance()).
  }

  #maybeCommit(): boolean {
    const prs = this.#prs;
    const mci = committedIndex(this.#voters, (id) => prs.get(id)?.match ?? 0);
    if (this.#knobs.unsafeCommitByCount) {
      if (mci > this.#log.committed) {
        this.#log.commitTo(mci);
        this.#afterCommit();
        return true;
      }
      return false;
    }
    if (this.#log.maybeCommit(mci, this.#term)) {
      this.#afterCommit();
      return true;
    }
    return false;
  }

  #afterCommit(): void {
    // Read requests that arrived before this term had a committed entry can proceed now.
    if (this.#pendingReadMsgs.length > 0 && this.#committedInTerm()) {
      const pending = this.#pendingReadMsgs;
      this.#pendingReadMsgs = [];
      for (const m of pending) this.#stepLeaderReadIndex(m);
    }
  }

  #committedInTerm(): boolean {
    return this.#log.term(this.#log.committed) === this.#term;
  }

  #bcastAppend(): void {
    for (const id of this.#prs.keys()) {
      if (id !== this.#id) this.#sendAppend(id);
    }
  }

  #sendAppend(to: NodeId): void {
    this.#maybeSendAppend(to, true);
  }

  #maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.#prs.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.#log.term(prevIndex);
    const ents = prevTerm === undefined
      ? undefined
      : this.#log.entriesFrom(pr.next, this.#maxSizePerMsg);
    if (ents !== undefined && ents.length === 0 && !sendIfEmpty) return false;
    if (prevTerm === undefined || ents === undefined) {
      // The follower needs compacted entries: send a snapshot.
      if (!pr.recentActive) return false;
      const snap = this.#log.snapshot();
      if (snap.meta.index === 0) {
        throw new RaftError("Invalid", `entries for ${to} compacted but no snapshot`);
      }
      this.#send(_msg(MessageType.Snap, to, { snapshot: snap }));
      pr.becomeSnapshot(snap.meta.index);
      return true;
    }
    this.#send(_msg(MessageType.App, to, {
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.#log.committed,
    }));
    const last = ents[ents.length - 1];
    if (last) {
      if (pr.state === "replicate") {
        pr.optimisticUpdate(last.index);
        pr.inflights.add(last.index);
      } else if (pr.state === "probe") {
        pr.probeSent = true;
      }
    }
    return true;
  }

  #bcastHeartbeat(context: Uint8Array = this.#lastReadContext()): void {
    for (const [id, pr] of this.#prs) {
      if (id === this.#id) continue;
      this.#send(_msg(MessageType.Heartbeat, id, {
        commit: Math.min(pr.match, this.#log.committed),
        context,
        index: this.#leaseReads ? this.#ticks : 0,
      }));
    }
  }

  // --- ReadIndex ------------------------------------------------------------------------------

  #lastReadContext(): Uint8Array {
    const last = this.#reads[this.#reads.length - 1];
    return last ? last.context : EMPTY;
  }

  #respondRead(from: NodeId, index: number, context: Uint8Array): void {
    if (from === NONE || from === this.#id) this.#readStates.push({ index, context });
    else this.#send(_msg(MessageType.ReadIndexResp, from, { index, context }));
  }

  #stepLeaderReadIndex(m: Message): void {
    const from = m.from === NONE ? this.#id : m.from;
    if (this.#voters.size === 1 && this.#voters.has(this.#id)) {
      this.#respondRead(from, this.#log.committed, m.context);
      return;
    }
    if (!this.#committedInTerm()) {
      // The leader does not know the latest commit index until an entry of its term commits.
      this.#pendingReadMsgs.push({ ...m, from });
      return;
    }
    if (this.#leaseReads && this.leaseStartTick() > 0) {
      // No other leader can have been elected while the lease runs: answer without a round.
      this.#respondRead(from, this.#log.committed, m.context);
      return;
    }
    const key = _ctxKey(m.context);
    if (this.#readsByKey.has(key)) return; // duplicate request in flight
    const req: _ReadRequest = {
      index: this.#log.committed,
      from,
      context: m.context,
      key,
      acks: new Map([[this.#id, true]]),
    };
    this.#reads.push(req);
    this.#readsByKey.set(key, req);
    this.#bcastHeartbeat(m.context);
  }

  #ackRead(from: NodeId, context: Uint8Array): void {
    const req = this.#readsByKey.get(_ctxKey(context));
    if (!req) return;
    req.acks.set(from, true);
    if (voteResult(this.#voters, req.acks) !== "won") return;
    // A quorum confirmed leadership after `req` (and every earlier request) arrived.
    let n = 0;
    while (n < this.#reads.length) {
      const r = this.#reads[n++]!;
      this.#readsByKey.delete(r.key);
      this.#respondRead(r.from, r.index, r.context);
      if (r === req) break;
    }
    this.#reads = this.#reads.slice(n);
  }
}
