/**
 * The vocabulary of the Raft core: entries, messages, hard state and the `Ready` record.
 *
 * This file is the contract between `raft/` (the pure state machine) and `server/` (the driver
 * that does every effect). Changing a name here changes both sides.
 *
 * @module
 */

/** A member id. 0 means "none" (no vote, no leader known). */
export type NodeId = number;

/** No node. */
export const NONE: NodeId = 0;

/** What an entry carries. Values reach the disk: never change them. */
export const EntryType = {
  /** An application command (see raft/command.ts); empty data is the leader's no-op. */
  Normal: 0,
  /** A membership change (encoded `ConfChange`). */
  ConfChange: 1,
} as const;
/** One of {@linkcode EntryType}. */
export type EntryType = typeof EntryType[keyof typeof EntryType];

/** One log entry. */
export interface Entry {
  index: number;
  term: number;
  type: EntryType;
  data: Uint8Array;
}

/** What must be durable before messages that depend on it are sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

/** The voters and learners of a configuration. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

/** A membership change, proposed through the log. */
export interface ConfChange {
  type: "addVoter" | "addLearner" | "removeNode";
  nodeId: NodeId;
  /** Opaque to the core (the server puts the member's address here). */
  context: Uint8Array;
}

/** Identity of a state-machine snapshot. */
export interface SnapshotMeta {
  index: number;
  term: number;
  confState: ConfState;
}

/** A snapshot as the core sees it: its identity plus opaque data the server produced. */
export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/** Message types. Values reach the wire: never change them. */
export const MessageType = {
  /** Local: start an election (from tick). */
  Hup: 0,
  /** Local: leader sends heartbeats (from tick). */
  Beat: 1,
  /** Client proposal forwarded from a follower to the leader. */
  Prop: 2,
  App: 3,
  AppResp: 4,
  Vote: 5,
  VoteResp: 6,
  PreVote: 7,
  PreVoteResp: 8,
  Snap: 9,
  Heartbeat: 10,
  HeartbeatResp: 11,
  /** The leader reports a follower unreachable / a snapshot done (local feedback from the transport). */
  Unreachable: 12,
  SnapStatus: 13,
  TransferLeader: 14,
  TimeoutNow: 15,
  ReadIndex: 16,
  ReadIndexResp: 17,
} as const;
/** One of {@linkcode MessageType}. */
export type MessageType = typeof MessageType[keyof typeof MessageType];

/** A Raft message between nodes. Unused fields are 0 / empty. */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** Term of the entry at `index` (App: prev log term; Vote: last log term). */
  logTerm: number;
  /**
   * App: prev log index; AppResp: match index or rejected index; Vote: last log index;
   * Heartbeat: the leader's tick count when it sent it, echoed back in HeartbeatResp (the leader
   * lease, `readOnly: "lease"`; a follower that does not echo it, i.e. 0, renews no lease).
   */
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /**
   * AppResp reject: the follower's hint index — the largest index ≤ min(rejected index, its last
   * index) whose term ≤ the App's logTerm (etcd's fast backtracking).
   */
  rejectHint: number;
  /** AppResp reject: the term of the follower's entry at rejectHint (0 at index 0). */
  hintTerm: number;
  /** ReadIndex / Heartbeat: opaque request context (read request id). */
  context: Uint8Array;
  /** Snap: the snapshot to install. */
  snapshot?: Snapshot;
}

/**
 * A message of `type` with every other field zero or empty, then `fields` applied.
 *
 * @example
 * ```ts
 * const hup = newMessage(MessageType.Hup, { from: 1, to: 1 });
 * console.log(hup.term, hup.entries.length); // 0 0
 * ```
 */
export function newMessage(type: MessageType, fields: Partial<Message> = {}): Message {
  return {
    type,
    from: NONE,
    to: NONE,
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    hintTerm: 0,
    context: _EMPTY,
    ...fields,
  };
}

const _EMPTY = new Uint8Array(0);

/** A role of the node. */
export type Role = "follower" | "candidate" | "precandidate" | "leader";

/** Volatile state the driver may want to log or report. */
export interface SoftState {
  leader: NodeId;
  role: Role;
}

/** A linearizable read point: once applied ≥ index, the read with this context may be served. */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/**
 * Everything the driver must do after an input, in this order:
 * 1. persist `snapshot` (if any), then `entries` (appending; an entry whose index already exists
 *    truncates the stored log from that index first), then `hardState` (if any), fsync when `mustSync`;
 * 2. send `messages`;
 * 3. apply `committedEntries` to the state machine, in order;
 * 4. call `advance(ready)`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  snapshot?: Snapshot;
  entries: Entry[];
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  mustSync: boolean;
}

/** Why a proposal was not accepted; the server forwards or retries on `leaderHint`. */
export type ProposeError =
  | { kind: "NotLeader"; leaderHint: NodeId }
  | { kind: "TransferInProgress"; leaderHint: NodeId }
  | { kind: "ConfChangePending" }
  | { kind: "TooLarge"; limit: number };

/**
 * Read access to the durable ("stable") log, as the core needs it. Implemented in memory by
 * `MemoryStorage` (raft/memory_storage.ts) and on disk by `RaftLogStore` (raft/log_store.ts). All
 * methods are synchronous: the on-disk store keeps its index (and the entries not yet compacted)
 * in memory.
 *
 * Invariants: entries are contiguous from `firstIndex()` to `lastIndex()`; `term(firstIndex() - 1)`
 * is the term of the latest snapshot (or 0); an empty log has `lastIndex() === firstIndex() - 1`.
 */
export interface LogStorage {
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at most `maxBytes` of data (but always at least one entry if any). */
  entries(lo: number, hi: number, maxBytes?: number): Entry[];
  /** Term of the entry at `index`; throws a `LogCompacted`/`LogUnavailable` RaftError if not held. */
  term(index: number): number;
  firstIndex(): number;
  lastIndex(): number;
  /** The latest snapshot (meta plus opaque data; data may be empty when the server streams it). */
  snapshot(): Snapshot;
}

/** Configuration of one `RaftNode` (raft/node.ts). */
export interface RaftConfig {
  id: NodeId;
  storage: LogStorage;
  /** Ticks without hearing from a leader before an election; randomized in [t, 2t). Default 10. */
  electionTick?: number;
  /** Ticks between leader heartbeats. Default 1. */
  heartbeatTick?: number;
  /** Seeded source of randomness in [0, 1). */
  random: () => number;
  /** Default true. */
  preVote?: boolean;
  /** Default true. */
  checkQuorum?: boolean;
  /** Max data bytes of entries per App message. Default 1 MiB. */
  maxSizePerMsg?: number;
  /** Max App messages in flight per follower in the pipelined state. Default 256. */
  maxInflightMsgs?: number;
  /** Last applied index when restarting (entries after it will be re-delivered as committed). */
  applied?: number;
  /**
   * How `readIndex` confirms leadership (etcd's ReadOnlyOption). `"safe"` (default): a
   * heartbeat round per request. `"lease"`: while the leader holds a lease, answer at once
   * with the commit index, no round; requires `checkQuorum` (ignored without it). The lease is
   * counted in ticks: it starts at the tick a heartbeat was sent once a quorum echoed it, and
   * lasts `electionTick - 2` ticks, while a follower that heard that heartbeat refuses votes
   * for `electionTick` of ITS ticks (at least `electionTick - 1` tick lengths). Safe only if
   * ticks run at the same rate everywhere to within that margin (bounded clock drift, no tick
   * skipped by the leader: a driver must check its own clock too, see `leaseStartTick`).
   * In this mode a (re)started member also refuses votes for its first `electionTick` ticks.
   */
  readOnly?: "safe" | "lease";
}

/** Replication progress of one member, as the leader sees it. */
export interface ProgressStatus {
  match: number;
  next: number;
  state: "probe" | "replicate" | "snapshot";
  learner: boolean;
  /** Heard from within the last election timeout. */
  recentActive: boolean;
}

/** A point-in-time view of a node, for Status RPCs and tests. */
export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  leader: NodeId;
  role: Role;
  confState: ConfState;
  /** Only on the leader. */
  progress: Map<NodeId, ProgressStatus>;
}
