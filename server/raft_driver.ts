/**
 * The driver of the Raft core: the only place where the pure `RaftNode` meets time, disk and
 * network.
 *
 * - A tick timer (`tickMs`, the heartbeat interval) calls `node.tick()`.
 * - The Ready loop (one at a time): persist the snapshot / entries / hard state to the
 *   `RaftLogStore` with ONE fsync for the whole Ready (group commit), then send the messages,
 *   then apply the committed entries to the state machine (one atomic engine write), then serve
 *   read states, then `advance`. Inputs that arrive while a Ready is being persisted (peer
 *   messages, proposals) are stepped into the core at once and picked up by the next Ready, so
 *   batches grow with load.
 * - Client proposals are queued and proposed once per loop turn as few entries (each entry is a
 *   batch of commands, raft/command.ts). On a follower the same batch travels to the leader as
 *   one `Prop` message on the peer stream; the proposer's own waiter is answered when its own
 *   state machine applies the entry (each command names its origin node, process epoch and
 *   request id), so forwarding needs no reply path.
 * - Linearizable reads: every read queued in one loop turn shares one ReadIndex request; once
 *   the read state arrives and applied ≥ its index, they are served from local state. With
 *   `readOnly: "lease"` in the core (`--read-mode lease`) the leader answers the request at once
 *   while its lease holds; the driver ends the lease early when the real time since the tick
 *   that started it (a monotonic clock) reached the lease length, so a stalled process (a GC
 *   pause, SIGSTOP) never serves a read from a lease its ticks did not see run out.
 * - Local snapshots (every `entries` applied entries): the engine view is taken between two
 *   applies; the engine flush that makes it durable runs beside the loop, and the snapshot is
 *   recorded in the log (and the log compacted) once it finished.
 * - Deadlines: a request keeps its deadline in its waiter; the tick handler fails the expired
 *   ones (one timer is armed only for a deadline that falls before the next tick), so no timer
 *   is created per request.
 *
 * @module
 */
import { keyString } from "../storage/coding.ts";
import type { RaftLogStore } from "../raft/log_store.ts";
import type { RaftNode } from "../raft/node.ts";
import {
  clientIdOf,
  type Command,
  type CommandResult,
  commandSize,
  encodeBatch,
} from "../raft/command.ts";
import {
  type ConfChange,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  newMessage,
  NONE,
  type ReadState,
  type Ready,
} from "../raft/types.ts";
import type { Logger } from "./log.ts";
import { type EngineView, readSnapshotFile, type SnapKeyValue, snapPath } from "./snapshot.ts";
import type { StateMachine } from "./state_machine.ts";

/** Why a request failed, as a value the service maps to a gRPC status. */
export class DriverError extends Error {
  override name = "DriverError";
  readonly kind: "unavailable" | "timeout" | "too_large" | "stopped" | "failed_precondition";
  readonly leaderHint: number;
  constructor(kind: DriverError["kind"], message: string, leaderHint = NONE) {
    super(message);
    this.kind = kind;
    this.leaderHint = leaderHint;
  }
}

/** A command as the service gives it (the driver fills in origin, epoch and reqId). */
export type CommandInput =
  | Omit<Extract<Command, { op: "put" }>, "origin" | "epoch" | "reqId">
  | Omit<Extract<Command, { op: "delete" }>, "origin" | "epoch" | "reqId">
  | Omit<Extract<Command, { op: "cas" }>, "origin" | "epoch" | "reqId">
  | Omit<Extract<Command, { op: "deleteRange" }>, "origin" | "epoch" | "reqId">;

/** Options of a {@linkcode RaftDriver}. */
export interface DriverOptions {
  id: number;
  node: RaftNode;
  store: RaftLogStore;
  sm: StateMachine;
  log: Logger;
  /** Sends raft messages to peers. */
  send: (msgs: Message[]) => void;
  /** Milliseconds per tick (the heartbeat interval). */
  tickMs: number;
  /** Random per-process tag (see raft/command.ts). */
  epoch: number;
  /** Called after a membership change is applied. */
  onConfChange?: (cc: ConfChange, index: number) => void;
  /** Called when the leader changes. */
  onLeaderChange?: (leader: number) => void;
  /** A fatal error (the log store failed): the node must stop. */
  onFatal?: (e: unknown) => void;
  /** Snapshot support (absent: never snapshot, never install). */
  snapshots?: SnapshotOptions;
}

/** What the driver needs to take, send and install snapshots. */
export interface SnapshotOptions {
  engine: {
    flush(): Promise<void>;
    snapshot(): EngineView;
    replaceAll(pairs: Iterable<SnapKeyValue>): Promise<void>;
  };
  /** Directory of received `.snap` files. */
  dir: string;
  /** Snapshot after this many applied entries. */
  entries: number;
  /** Entries kept in the log behind a snapshot (for slow followers). */
  keepEntries: number;
  /** At most this many bytes of those entries (default {@linkcode KEEP_LOG_BYTES}). */
  keepBytes?: number;
  /** Streams the snapshot of `msg` (a Snap message) to `msg.to` from `view`. */
  send: (msg: Message, view: EngineView) => Promise<void>;
  /** Called after a received snapshot was installed (members may have changed). */
  onInstalled?: () => void;
}

interface _PinnedView {
  index: number;
  view: EngineView;
  refs: number;
  stale: boolean;
}

interface _Waiter {
  resolve: (v: { result: CommandResult; index: number }) => void;
  reject: (e: DriverError) => void;
  /** `Date.now()` after which the tick handler fails the request. */
  deadline: number;
  cmd: Command;
}

interface _ReadWaiter {
  resolve: () => void;
  reject: (e: DriverError) => void;
  /** `Date.now()` after which the tick handler fails the read. */
  deadline: number;
  done: boolean;
}

interface _ReadBatch {
  ctx: Uint8Array;
  key: string;
  waiters: _ReadWaiter[];
  sentAt: number;
  index: number;
}

/**
 * How long a leader may hold a commit-only append back for the next append to replace (see
 * RaftDriver #out): about one client round trip on loopback.
 */
const COMMIT_HOLD_MS = 1;

/** Default of {@linkcode SnapshotOptions.keepBytes}: log kept behind a snapshot, in bytes. */
const KEEP_LOG_BYTES = 16 * 1024 * 1024;

/** Also snapshot once this many bytes of entries were applied since the last snapshot. */
const SNAPSHOT_BYTES = 32 * 1024 * 1024;

/** Largest engine write of one apply (the engine caps one atomic batch at 64 MiB). */
const APPLY_BATCH_BYTES = 16 * 1024 * 1024;

/** Largest command batch put into one entry (a bigger single command gets its own entry). */
const ENTRY_BATCH_BYTES = 1024 * 1024;

/**
 * The command of a proposal: a literal with every field named, in raft/command.ts
 * `decodeBatch`'s order (one hidden class per op, shared with decoded commands; a spread of the
 * input would make one object of another shape and grow it by three fields).
 */
function _command(input: CommandInput, origin: number, epoch: number, reqId: number): Command {
  const { clientId, seq } = input;
  switch (input.op) {
    case "put":
      return { op: "put", origin, epoch, reqId, clientId, seq, key: input.key, value: input.value };
    case "delete":
      return { op: "delete", origin, epoch, reqId, clientId, seq, key: input.key };
    case "cas":
      return {
        op: "cas",
        origin,
        epoch,
        reqId,
        clientId,
        seq,
        key: input.key,
        expected: input.expected,
        expectAbsent: input.expectAbsent,
        value: input.value,
        del: input.del,
      };
    case "deleteRange":
      return {
        op: "deleteRange",
        origin,
        epoch,
        reqId,
        clientId,
        seq,
        start: input.start,
        end: input.end,
        limit: input.limit,
      };
  }
}

/** What a leader applies during its own fsync (see `RaftDriver.#applyWhileSyncing`). */
interface _MidSync {
  /** The applies started so far, in order. */
  chain: Promise<void>;
  /** Next log index to apply. */
  next: number;
  /** A membership change was reached: the rest waits for the next Ready. */
  done: boolean;
}

/** Drives one `RaftNode`. */
export class RaftDriver {
  readonly #o: DriverOptions;
  readonly node: RaftNode;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** When the next tick is due (`Date.now()`); Infinity before `start()`. */
  #nextTickAt = Infinity;
  /** The one-shot timer for a deadline that falls before the next tick (rare). */
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #expiryAt = Infinity;
  /** `performance.now()` (monotonic) of each core tick, by tick number modulo the length. */
  readonly #tickTimes: Float64Array;
  #running = false;
  #kicked = false;
  #stopped = false;
  #nextReq = 1;
  #pending: Command[] = [];
  /** Whether the first snapshot since start was taken (see #maybeSnapshot). */
  #snapStaggered = false;
  /** Commit-only appends a leader holds back, by follower (see #out). */
  #heldCommit = new Map<number, Message>();
  #heldTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #waiters = new Map<number, _Waiter>();
  #readQueue: _ReadWaiter[] = [];
  readonly #reads = new Map<string, _ReadBatch>();
  /** Read batches whose read index is known, waiting for applied ≥ index. */
  #readsReady: _ReadBatch[] = [];
  #leader = NONE;
  #role = "follower";
  #idle: (() => void)[] = [];
  #fatal: unknown;
  /** Last log index known durable on this node. */
  #durableLast: number;
  /**
   * While a leader's Ready waits for its own fsync: the applies started so far (`chain`) and the
   * next index to apply. Entries committed meanwhile — a majority of followers holds them
   * durably — are applied and answered without waiting for that fsync (see #applyWhileSyncing).
   */
  #midSync: _MidSync | undefined;
  /** The engine view at the latest local snapshot (what followers get sent). */
  #pinned: _PinnedView | undefined;
  #snapIndex: number;
  readonly #sendingSnap = new Set<number>();
  #bytesSinceSnap = 0;
  /** The background part of a local snapshot (engine flush, then log snapshot + compaction). */
  #snapTask: Promise<void> | undefined;

  constructor(opts: DriverOptions) {
    this.#o = opts;
    this.node = opts.node;
    const st = this.node.status();
    this.#leader = st.leader;
    this.#role = st.role;
    this.#durableLast = opts.store.lastIndex();
    this.#tickTimes = new Float64Array(Math.max(16, this.node.leaseTicks + 2));
    this.#snapIndex = opts.store.snapshot().meta.index;
    // A leader about to apply a DeleteRange (a long synchronous step) first sends the commit
    // index it holds back (#out), and lets the peer streams write it, so that followers learn of
    // the commit now and apply the range alongside the leader, not after it.
    opts.sm.beforeLongApply = async () => {
      if (this.#role === "leader") this.#sendHeld();
      await null;
    };
  }

  /**
   * Makes the latest state sendable as a snapshot at start-up: pins an engine view at the
   * applied index (recording a new log snapshot there if the applied index moved past the last).
   */
  async initSnapshot(): Promise<void> {
    const so = this.#o.snapshots;
    if (so === undefined) return;
    const applied = this.#o.sm.applied;
    if (applied === 0) return;
    if (applied > this.#snapIndex) {
      await so.engine.flush(); // durable up to `applied` before the log records the snapshot
      this.#o.store.createSnapshot(applied, this.node.confState());
      this.#snapIndex = applied;
      await this.#o.store.sync();
    }
    if (applied === this.#snapIndex) this.#pin(applied, so.engine.snapshot());
  }

  #pin(index: number, view: EngineView): void {
    const old = this.#pinned;
    this.#pinned = { index, view, refs: 0, stale: false };
    if (old !== undefined) {
      old.stale = true;
      if (old.refs === 0) old.view.release();
    }
  }

  /**
   * After apply: snapshot and compact the log once enough entries were applied. The engine view
   * and the membership are taken now, at exactly `applied` (no apply is running: the Ready loop
   * calls this between applies); making the engine durable up to there (the engine runs without
   * a WAL: `flush()` seals its memtable and waits for the level-0 table and manifest edit, tens of
   * milliseconds) runs in the background, and only then is the snapshot recorded in the log and
   * the log compacted. The Ready loop does not wait for it: the pipeline keeps persisting,
   * replicating and applying (writes after the seal go to the next memtable).
   *
   * Invariant (server/node.ts header): the log is never compacted past the engine's durable
   * applied index — a restart re-applies the entries after it from the log.
   */
  #maybeSnapshot(): void {
    const so = this.#o.snapshots;
    if (so === undefined || this.#snapTask !== undefined) return;
    const applied = this.#o.sm.applied;
    // Every replica applies the same entries, so with equal thresholds all of them would flush
    // their engines at the same index, at once, on one disk or three. The first snapshot after
    // start waits longer on some nodes (by id: ×1, ×4/3, ×5/3), which keeps them out of step.
    const stretch = this.#snapStaggered ? 1 : 1 + ((this.#o.id - 1) % 3) / 3;
    if (
      applied - this.#snapIndex < so.entries * stretch &&
      this.#bytesSinceSnap < SNAPSHOT_BYTES * stretch
    ) return;
    this.#snapStaggered = true;
    this.#bytesSinceSnap = 0;
    const view = so.engine.snapshot();
    const cs = this.node.confState();
    // The engine has no WAL: make it durable up to `applied` before the log forgets.
    this.#snapTask = so.engine.flush().then(
      () => {
        // Stopped, or a snapshot received from the leader was installed meanwhile, or (after a
        // crash during a leader's fsync; see #applyWhileSyncing) the engine is past the log.
        if (this.#stopped || applied <= this.#snapIndex || applied > this.#durableLast) {
          view.release();
          return;
        }
        const store = this.#o.store;
        store.createSnapshot(applied, cs);
        this.#snapIndex = applied;
        this.#pin(applied, view);
        const compactTo = this.#compactTarget(applied, so);
        if (compactTo > store.firstIndex() - 1) store.compact(compactTo);
        this.#o.log.info(
          `snapshot at ${applied}; log now [${store.firstIndex()}, ${store.lastIndex()}]`,
        );
      },
      (e) => {
        view.release();
        if (!this.#stopped) {
          this.#o.log.warn(`snapshot at ${applied} failed: ${e instanceof Error ? e.message : e}`);
        }
      },
    ).finally(() => {
      this.#snapTask = undefined;
    });
  }

  /**
   * The index to compact through after a snapshot at `applied`: {@link #compactPoint} with the
   * configured limits, except that a leader keeps the entries a follower it is replicating to and
   * heard from recently still needs, up to four times the byte limit, so that a follower a few
   * seconds behind under heavy writes catches up from the log instead of receiving the whole state.
   */
  #compactTarget(applied: number, so: SnapshotOptions): number {
    const maxBytes = so.keepBytes ?? KEEP_LOG_BYTES;
    let to = this.#compactPoint(applied, so.keepEntries, maxBytes);
    if (this.#role !== "leader") return to;
    let lagging = Infinity;
    for (const [id, pr] of this.node.status().progress) {
      // Replicating and heard from: a follower whose stream broke is in probe state at once
      // (the transport reports it unreachable), before recentActive lapses.
      if (id !== this.#o.id && pr.recentActive && pr.state === "replicate") {
        lagging = Math.min(lagging, pr.match);
      }
    }
    if (lagging < to) {
      to = Math.max(lagging, this.#compactPoint(applied, so.keepEntries, 4 * maxBytes));
    }
    return to;
  }

  /**
   * The index to compact the log through after a snapshot at `applied`: the last `keep` entries
   * stay for lagging followers to catch up from, but only as many of them as fit in `maxBytes`.
   * An entry is a batch of commands (hundreds of KiB under load), so a count alone kept hundreds
   * of MiB of log in memory (RSS 700 MiB per node after 40 s of 4 KiB puts, measured 2026-12-05).
   */
  #compactPoint(applied: number, keep: number, maxBytes: number): number {
    const store = this.#o.store;
    const lo = Math.max(store.firstIndex(), applied - keep + 1);
    if (lo > applied) return applied - keep;
    const ents = store.entries(lo, applied + 1);
    let bytes = 0;
    let i = ents.length;
    while (i > 0 && bytes + ents[i - 1]!.data.length <= maxBytes) {
      bytes += ents[--i]!.data.length;
    }
    return i > 0 ? ents[i - 1]!.index : lo - 1;
  }

  #sendMessages(msgs: Message[]): void {
    let plain = msgs;
    if (msgs.some((m) => m.type === MessageType.Snap)) {
      plain = [];
      for (const m of msgs) {
        if (m.type === MessageType.Snap) this.#sendSnapshot(m);
        else plain.push(m);
      }
    }
    if (plain.length > 0) this.#out(plain);
  }

  /**
   * Sends Raft messages. A leader holds back an append without entries, which only tells a
   * follower the new commit index, for up to {@linkcode COMMIT_HOLD_MS}: the next append to that
   * follower carries the same or a later commit index with the next entries, and replaces it.
   * Under load, and at one client whose next write follows its answer, that is what happens, and
   * it saves a socket write on each side and a follower Ready per commit. The commit index is
   * liveness only (a follower applies, and answers follower reads, that much later); the core
   * keeps no progress state for an append without entries, so holding or dropping one is safe.
   */
  #out(msgs: Message[]): void {
    if (this.#role !== "leader") {
      this.#o.send(msgs);
      return;
    }
    const keep: Message[] = [];
    for (const m of msgs) {
      if (m.type === MessageType.App) {
        if (m.entries.length === 0) {
          this.#heldCommit.set(m.to, m);
          continue;
        }
        this.#heldCommit.delete(m.to);
      }
      keep.push(m);
    }
    if (this.#heldCommit.size > 0 && this.#heldTimer === undefined) {
      this.#heldTimer = setTimeout(this.#sendHeld, COMMIT_HOLD_MS);
    }
    if (keep.length > 0) this.#o.send(keep);
  }

  /** Sends the held commit-only appends (see #out). */
  readonly #sendHeld = (): void => {
    this.#heldTimer = undefined;
    if (this.#heldCommit.size === 0) return;
    const msgs = [...this.#heldCommit.values()];
    this.#heldCommit.clear();
    if (!this.#stopped && this.#role === "leader") this.#o.send(msgs);
  };

  #sendSnapshot(m: Message): void {
    const so = this.#o.snapshots;
    const pinned = this.#pinned;
    const to = m.to;
    if (this.#sendingSnap.has(to)) return;
    if (so === undefined || pinned === undefined || m.snapshot?.meta.index !== pinned.index) {
      this.#o.log.warn(
        `cannot send snapshot ${m.snapshot?.meta.index} to ${to}: no matching local view`,
      );
      this.node.reportSnapshot(to, false);
      return;
    }
    this.#sendingSnap.add(to);
    pinned.refs++;
    this.#o.log.info(`sending snapshot at ${pinned.index} to node ${to}`);
    so.send(m, pinned.view).then(
      () => {
        this.#o.log.info(`snapshot at ${pinned.index} installed by node ${to}`);
        if (!this.#stopped) this.node.reportSnapshot(to, true);
      },
      (e) => {
        this.#o.log.warn(`snapshot to node ${to} failed: ${e instanceof Error ? e.message : e}`);
        if (!this.#stopped) this.node.reportSnapshot(to, false);
      },
    ).finally(() => {
      this.#sendingSnap.delete(to);
      pinned.refs--;
      if (pinned.stale && pinned.refs === 0) pinned.view.release();
      this.kick();
    });
  }

  /** Starts the tick timer. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#nextTickAt = Date.now() + this.#o.tickMs;
    this.#timer = setInterval(() => {
      if (this.#stopped) return;
      const now = Date.now();
      this.#nextTickAt = now + this.#o.tickMs;
      this.node.tick();
      this.#tickTimes[this.node.ticks % this.#tickTimes.length] = performance.now();
      if (this.#role === "leader") this.#guardLease();
      this.#expire(now);
      this.#retryReads();
      this.kick();
    }, this.#o.tickMs);
    this.kick();
  }

  /** The current leader (0 if unknown). */
  get leader(): number {
    return this.#leader;
  }

  /** Whether this node is the leader. */
  get isLeader(): boolean {
    return this.#role === "leader";
  }

  /**
   * Lease reads: the core counts the lease in ticks, which assumes ticks come on time. If this
   * process stalled (a long GC pause, a busy event loop), fewer ticks than tick lengths went by:
   * end the lease when the real time since the tick that started it reached the lease length.
   */
  #guardLease(): void {
    const start = this.node.leaseStartTick();
    if (start === 0) return;
    const n = this.#tickTimes.length;
    const at = this.#tickTimes[start % n]!;
    if (
      this.node.ticks - start >= n - 1 || at === 0 ||
      performance.now() - at >= this.node.leaseTicks * this.#o.tickMs
    ) {
      this.node.expireLease();
    }
  }

  /** Steps peer messages into the core (proposals forwarded to us are proposed here). */
  receive(msgs: Message[]): void {
    if (this.#stopped) return;
    let guarded = false;
    for (const m of msgs) {
      if (m.type === MessageType.ReadIndex && !guarded && this.#role === "leader") {
        guarded = true;
        this.#guardLease();
      }
      if (m.type === MessageType.Prop) {
        if (this.#role === "leader") {
          const err = this.node.proposeBatch(m.entries.map((e) => e.data));
          if (err !== undefined) this.#o.log.debug(`forwarded proposal dropped: ${err.kind}`);
        }
        continue;
      }
      try {
        this.node.step(m);
      } catch (e) {
        this.#o.log.warn(`message ${m.type} from ${m.from} rejected by the core: ${e}`);
      }
    }
    if (this.#midSync !== undefined) this.#applyWhileSyncing();
    this.kick();
  }

  /** Transport feedback. */
  reportUnreachable(id: number): void {
    if (this.#stopped) return;
    this.node.reportUnreachable(id);
  }

  /**
   * Proposes a command; resolves when this node applied it (with the result), rejects with a
   * {@linkcode DriverError} on timeout or when no leader is known.
   */
  propose(
    input: CommandInput,
    timeoutMs: number,
  ): Promise<{ result: CommandResult; index: number }> {
    if (this.#stopped) {
      return Promise.reject(new DriverError("stopped", "node is shutting down", this.#leader));
    }
    if (this.#fatal !== undefined) {
      return Promise.reject(new DriverError("unavailable", `node failed: ${this.#fatal}`));
    }
    if (clientIdOf(input.clientId) !== input.clientId || !Number.isSafeInteger(input.seq)) {
      // The service checks both; a bad one here must fail this request, not the Ready loop
      // (encodeBatch would throw there).
      return Promise.reject(
        new RangeError(`client id ${input.clientId} or seq ${input.seq} is out of range`),
      );
    }
    const cmd = _command(input, this.#o.id, this.#o.epoch, this.#nextReq++);
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      this.#waiters.set(cmd.reqId, { resolve, reject, deadline, cmd });
      this.#pending.push(cmd);
      if (deadline < this.#nextTickAt) this.#armExpiry(deadline);
      this.kick();
    });
  }

  /**
   * Fails the requests whose deadline passed (called every tick, so a deadline is kept to
   * within one tick; no timer per request). A write still queued here was never proposed and
   * fails as unavailable (safe to retry anywhere); a proposed or forwarded one may still commit
   * and fails as a timeout (DEADLINE_EXCEEDED).
   */
  #expire(now: number): void {
    let unproposed: Set<Command> | undefined;
    let next = Infinity;
    for (const [reqId, w] of this.#waiters) {
      if (w.deadline > now) {
        if (w.deadline < next) next = w.deadline;
        continue;
      }
      this.#waiters.delete(reqId);
      if (unproposed === undefined) unproposed = new Set(this.#pending);
      if (unproposed.has(w.cmd)) {
        // Never proposed: certainly not applied, so the client may retry anywhere.
        w.reject(this.#unavailable("timed out waiting for a leader to propose the write"));
      } else {
        // Proposed or forwarded: it may still commit. UNAVAILABLE would tell the client it is
        // safe to retry without its (client id, seq), which could apply the write twice.
        w.reject(
          new DriverError(
            "timeout",
            "timed out waiting for the write to commit (it may still be applied)",
            this.#leader,
          ),
        );
      }
    }
    if (unproposed !== undefined) {
      this.#pending = this.#pending.filter((c) => this.#waiters.has(c.reqId));
    }
    const expireReads = (list: _ReadWaiter[]) => {
      for (const w of list) {
        if (w.done) continue;
        if (w.deadline > now) {
          if (w.deadline < next) next = w.deadline;
          continue;
        }
        w.done = true;
        w.reject(this.#unavailable("timed out waiting for a read index"));
      }
    };
    expireReads(this.#readQueue);
    for (const b of this.#reads.values()) expireReads(b.waiters);
    for (const b of this.#readsReady) expireReads(b.waiters);
    if (next < this.#nextTickAt) this.#armExpiry(next);
  }

  /** Makes sure `#expire` runs at `at` (a deadline before the next tick). */
  #armExpiry(at: number): void {
    if (this.#stopped || (this.#expiryTimer !== undefined && this.#expiryAt <= at)) return;
    if (this.#expiryTimer !== undefined) clearTimeout(this.#expiryTimer);
    this.#expiryAt = at;
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = undefined;
      this.#expiryAt = Infinity;
      if (!this.#stopped) this.#expire(Date.now());
    }, Math.max(0, at - Date.now()));
  }

  /**
   * Waits until a linearizable read may be served from local state (ReadIndex: the leader
   * confirmed its leadership after this call, and this node applied up to the read index).
   */
  readBarrier(timeoutMs: number): Promise<void> {
    if (this.#stopped) {
      return Promise.reject(new DriverError("stopped", "node is shutting down", this.#leader));
    }
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const w: _ReadWaiter = { resolve, reject, deadline, done: false };
      this.#readQueue.push(w);
      if (deadline < this.#nextTickAt) this.#armExpiry(deadline);
      this.kick();
    });
  }

  #unavailable(msg: string): DriverError {
    const hint = this.#leader;
    return new DriverError(
      hint === NONE ? "unavailable" : "timeout",
      hint === NONE ? `no leader: ${msg}` : msg,
      hint,
    );
  }

  /** Schedules a turn of the Ready loop. */
  kick(): void {
    // After a fatal error the loop stays down (the node is stopping): it would only fail again.
    if (this.#kicked || this.#stopped || this.#fatal !== undefined) return;
    this.#kicked = true;
    queueMicrotask(() => {
      this.#kicked = false;
      if (!this.#running) this.#loop();
    });
  }

  #flushProposals(): void {
    if (this.#pending.length === 0) return;
    if (this.#role !== "leader" && this.#leader === NONE) return; // wait for a leader (or timeout)
    // Requests whose caller gave up (timed out) are not proposed any more.
    const cmds = this.#pending.filter((c) => this.#waiters.has(c.reqId));
    this.#pending = [];
    if (cmds.length === 0) return;
    const datas: Uint8Array[] = [];
    let batch: Command[] = [];
    let bytes = 0;
    for (const c of cmds) {
      const n = commandSize(c);
      if (batch.length > 0 && bytes + n > ENTRY_BATCH_BYTES) {
        datas.push(encodeBatch(batch));
        batch = [];
        bytes = 0;
      }
      batch.push(c);
      bytes += n;
    }
    if (batch.length > 0) datas.push(encodeBatch(batch));
    if (this.#role === "leader") {
      const err = this.node.proposeBatch(datas);
      if (err === undefined) return;
      if (err.kind === "TooLarge") {
        this.#failCommands(cmds, new DriverError("too_large", `command over ${err.limit} bytes`));
        return;
      }
      // Transfer in progress or lost leadership: keep them for the next turn.
      this.#pending = cmds.concat(this.#pending);
      return;
    }
    this.#o.send([newMessage(MessageType.Prop, {
      from: this.#o.id,
      to: this.#leader,
      entries: datas.map((data) => ({ index: 0, term: 0, type: EntryType.Normal, data })),
    })]);
  }

  #failCommands(cmds: Command[], e: DriverError): void {
    for (const c of cmds) {
      const w = this.#waiters.get(c.reqId);
      if (w === undefined) continue;
      this.#waiters.delete(c.reqId);
      w.reject(e);
    }
  }

  #flushReads(): void {
    if (this.#readQueue.length === 0) return;
    if (this.#role !== "leader" && this.#leader === NONE) return;
    const waiters = this.#readQueue.filter((w) => !w.done);
    this.#readQueue = [];
    if (waiters.length === 0) return;
    const ctx = new Uint8Array(12);
    const dv = new DataView(ctx.buffer);
    dv.setUint32(0, this.#o.epoch >>> 0);
    dv.setFloat64(4, this.#nextReq++);
    const b: _ReadBatch = { ctx, key: keyString(ctx), waiters, sentAt: Date.now(), index: -1 };
    if (this.#role === "leader") this.#guardLease();
    const err = this.node.readIndex(ctx);
    if (err !== undefined) {
      this.#readQueue = waiters.concat(this.#readQueue);
      return;
    }
    this.#reads.set(b.key, b);
  }

  /** Re-asks for read indexes that got no answer (a dropped message, a leader change). */
  #retryReads(): void {
    const now = Date.now();
    if (this.#readQueue.length > 0) this.#readQueue = this.#readQueue.filter((w) => !w.done);
    if (this.#pending.length > 0 && this.#leader === NONE) {
      this.#pending = this.#pending.filter((c) => this.#waiters.has(c.reqId));
    }
    for (const [key, b] of this.#reads) {
      if (b.waiters.every((w) => w.done)) {
        this.#reads.delete(key);
        continue;
      }
      if (now - b.sentAt > Math.max(300, 3 * this.#o.tickMs)) {
        this.#reads.delete(key);
        this.#readQueue.push(...b.waiters.filter((w) => !w.done));
      }
    }
  }

  #onReadStates(states: ReadState[]): void {
    for (const rs of states) {
      const b = this.#reads.get(keyString(rs.context));
      if (b === undefined) continue;
      this.#reads.delete(b.key);
      b.index = rs.index;
      this.#readsReady.push(b);
    }
  }

  #serveReads(): void {
    if (this.#readsReady.length === 0) return;
    const applied = this.#o.sm.applied;
    const keep: _ReadBatch[] = [];
    for (const b of this.#readsReady) {
      if (b.index > applied) {
        keep.push(b);
        continue;
      }
      for (const w of b.waiters) {
        if (w.done) continue;
        w.done = true;
        w.resolve();
      }
    }
    this.#readsReady = keep;
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (!this.#stopped) {
        this.#flushProposals();
        this.#flushReads();
        if (!this.node.hasReady()) break;
        const rd = this.node.ready();
        await this.#handleReady(rd);
        this.node.advance(rd);
      }
    } catch (e) {
      this.#fatal = e;
      this.#o.log.error(`raft loop failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
      this.#o.onFatal?.(e);
    } finally {
      this.#running = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const f of idle) f();
    }
  }

  async #handleReady(rd: Ready): Promise<void> {
    if (rd.softState !== undefined) this.#onSoftState(rd.softState.leader, rd.softState.role);
    const store = this.#o.store;
    const snap = rd.snapshot;
    let snapFile = "";
    if (snap !== undefined) {
      const so = this.#o.snapshots;
      if (so === undefined) throw new Error("received a snapshot but snapshots are not configured");
      snapFile = snapPath(so.dir, snap.meta.index);
      try {
        Deno.statSync(snapFile);
      } catch {
        throw new Error(`snapshot ${snap.meta.index} to install has no data file ${snapFile}`);
      }
      store.applySnapshot(snap);
    }
    const prevHs = store.hardState();
    if (rd.entries.length > 0) store.append(rd.entries);
    if (rd.hardState !== undefined) store.setHardState(rd.hardState);
    // The leader replicates while it writes its own log (Raft thesis §10.2.1, as etcd does): its
    // App/Heartbeat messages only carry entries and a commit index, and the commit index can
    // only cover this Ready's entries after followers acknowledged them, which is handled in a
    // later Ready, after this fsync finished. So every node that learns an entry is committed
    // learns it after the leader's copy is durable. Not when term or vote change in this Ready.
    let late = rd.messages;
    const termVoteSame = rd.hardState === undefined ||
      (rd.hardState.term === prevHs.term && rd.hardState.vote === prevHs.vote);
    if (this.#role === "leader" && snap === undefined && termVoteSame && late.length > 0) {
      const early: Message[] = [];
      late = [];
      for (const m of rd.messages) {
        if (m.type === MessageType.App || m.type === MessageType.Heartbeat) early.push(m);
        else late.push(m);
      }
      if (early.length > 0) this.#out(early);
    }
    // Committed entries that were already durable here before this Ready are applied while the
    // new entries are being fsynced; the rest after. Entries this Ready (over)writes are not
    // durable yet even at indexes ≤ #durableLast: a conflicting suffix replaced here is still
    // the old one on disk, and applying its replacement before the fsync would leave a state
    // machine ahead of (and different from) the log after a crash.
    const ce = rd.committedEntries;
    const firstNew = rd.entries[0];
    const durable = firstNew === undefined
      ? this.#durableLast
      : Math.min(this.#durableLast, firstNew.index - 1);
    let split = 0;
    while (snap === undefined && split < ce.length && ce[split]!.index <= durable) {
      split++;
    }
    const early = split > 0
      ? this.#apply(split === ce.length ? ce : ce.slice(0, split))
      : undefined;
    // A Ready that only moves the commit index needs no fsync (etcd's MustSync): the record stays
    // buffered and reaches the disk with the next sync; a lost commit index is relearned.
    const syncing = rd.mustSync ? store.sync() : undefined;
    let applying = early;
    if (syncing !== undefined) {
      // A leader whose committed entries are all being applied keeps applying what commits
      // during its own fsync (acknowledgements keep arriving; see #applyWhileSyncing).
      let mid: _MidSync | undefined;
      if (this.#role === "leader" && snap === undefined && split === ce.length) {
        const next = (ce[ce.length - 1]?.index ?? this.#o.sm.applied) + 1;
        mid = this.#midSync = { chain: early ?? Promise.resolve(), next, done: false };
        this.#applyWhileSyncing();
      }
      // A failed sync is fatal and reported first; the applies' outcome is awaited below.
      early?.catch(() => {});
      try {
        await syncing;
      } finally {
        this.#midSync = undefined;
        mid?.chain.catch(() => {}); // awaited below, unless the sync failed (fatal anyway)
      }
      if (mid !== undefined) applying = mid.chain;
    }
    if (snap !== undefined) await this.#installSnapshot(snap.meta.index, snapFile);
    const last = rd.entries[rd.entries.length - 1];
    if (last !== undefined) this.#durableLast = last.index;
    // The acknowledgements (and votes) depend on what was just persisted, never on applying:
    // they leave as soon as the fsync is done, not after the early apply, which can wait behind
    // the KV engine (a memtable switch or a level-0 flush holding the event loop).
    if (late.length > 0) this.#sendMessages(late);
    if (applying !== undefined) await applying;
    if (split < ce.length) await this.#apply(split === 0 ? ce : ce.slice(split));
    if (ce.length > 0) this.#maybeSnapshot();
    if (rd.readStates.length > 0) this.#onReadStates(rd.readStates);
    this.#serveReads();
  }

  /**
   * Applies the normal entries committed since the running Ready was taken, while the leader's
   * own fsync runs. They are committed, so a majority holds them durably without this node: the
   * core counts the leader's entries only once persisted (raft/node.ts `advance`). The next Ready
   * hands them out again; the state machine skips what it applied. A membership change ends it
   * (those are applied in Ready order). A crash can leave the engine's applied index past this
   * node's log end; a restart clamps the core's applied index to the commit index, and the
   * entries arrive again from the leader and are skipped. Only a large write's fsync leaves the
   * event loop free for this: writes up to `INLINE_SYNC_BYTES` are fsynced on this thread
   * (raft/log_store.ts).
   */
  #applyWhileSyncing(): void {
    const mid = this.#midSync;
    if (mid === undefined || mid.done) return;
    const commit = this.node.committed;
    if (commit < mid.next) return;
    const ents = this.node.entries(mid.next, commit + 1);
    if (ents === undefined || ents.length === 0) return;
    let n = 0;
    while (n < ents.length && ents[n]!.type === EntryType.Normal) n++;
    if (n < ents.length) mid.done = true;
    if (n === 0) return;
    const batch = n === ents.length ? ents : ents.slice(0, n);
    mid.next = batch[n - 1]!.index + 1;
    mid.chain = mid.chain.then(() => this.#apply(batch)).then(() => this.#serveReads());
  }

  async #installSnapshot(index: number, file: string): Promise<void> {
    const so = this.#o.snapshots!;
    // The log already records the snapshot (and dropped the entries it covers); the data file is
    // what a restart would install it from (server/node.ts), so it goes only after replaceAll,
    // which is durable when it resolves (the engine has no WAL to replay it from).
    await so.engine.replaceAll(readSnapshotFile(file));
    this.#o.sm.reload();
    if (this.#o.sm.applied !== index) {
      this.#o.log.warn(`snapshot ${index} carried applied index ${this.#o.sm.applied}`);
    }
    this.#durableLast = Math.max(this.#durableLast, index);
    this.#snapIndex = index;
    this.#pin(index, so.engine.snapshot());
    try {
      Deno.removeSync(file);
    } catch {
      // already gone
    }
    this.#o.log.info(`installed snapshot at ${index}`);
    so.onInstalled?.();
  }

  /** Applies entries in atomic engine batches of at most {@linkcode APPLY_BATCH_BYTES}. */
  async #apply(entries: Entry[]): Promise<void> {
    let from = 0;
    let bytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const n = entries[i]!.data.length;
      if (i > from && bytes + n > APPLY_BATCH_BYTES) {
        await this.#applyBatch(entries.slice(from, i));
        from = i;
        bytes = 0;
      }
      bytes += n;
    }
    await this.#applyBatch(from === 0 ? entries : entries.slice(from));
  }

  async #applyBatch(entries: Entry[]): Promise<void> {
    const applied = this.#o.sm.applied;
    for (const e of entries) if (e.index > applied) this.#bytesSinceSnap += e.data.length;
    const { results, confChanges } = await this.#o.sm.apply(entries, {
      origin: this.#o.id,
      epoch: this.#o.epoch,
    });
    for (const { cc, index } of confChanges) {
      this.node.applyConfChange(cc);
      this.#o.log.info(`membership change applied at ${index}: ${cc.type} ${cc.nodeId}`);
      this.#o.onConfChange?.(cc, index);
    }
    for (const r of results) {
      const w = this.#waiters.get(r.cmd.reqId);
      if (w === undefined) continue;
      this.#waiters.delete(r.cmd.reqId);
      w.resolve(r); // an `Applied` is a { result, index } (no second object per request)
    }
  }

  #onSoftState(leader: number, role: string): void {
    const prevLeader = this.#leader;
    const prevRole = this.#role;
    this.#leader = leader;
    this.#role = role;
    if (role !== prevRole) {
      // Held commit-only appends belong to the old term: a new leader sends its own.
      if (prevRole === "leader") this.#heldCommit.clear();
      if (role === "leader") this.#o.log.info(`became leader`);
      else if (role === "candidate") this.#o.log.info(`election started`);
      else if (role === "precandidate") this.#o.log.debug(`pre-vote started`);
    }
    if (leader !== prevLeader) {
      if (leader === NONE) this.#o.log.info(`lost leader ${prevLeader}`);
      else if (leader !== this.#o.id) this.#o.log.info(`leader is ${leader}`);
      this.#o.onLeaderChange?.(leader);
      if (leader !== NONE) {
        this.#reproposeAfterLeaderChange();
        this.kick();
      }
    }
  }

  /**
   * A proposal made to the old leader may have been lost. Commands with an exactly-once id are
   * proposed again (the state machine applies them once; the first application answers); those
   * without one are left to their deadline (a second copy could apply twice).
   */
  #reproposeAfterLeaderChange(): void {
    const queued = new Set(this.#pending.map((c) => c.reqId));
    for (const w of this.#waiters.values()) {
      if (w.cmd.clientId !== 0 && w.cmd.seq > 0 && !queued.has(w.cmd.reqId)) {
        this.#pending.push(w.cmd);
      }
    }
  }

  /** Leader only: hands leadership to `to`. */
  transferLeader(to: number): void {
    this.node.transferLeader(to);
    this.kick();
  }

  /** Resolves when the Ready loop is idle. */
  async idle(): Promise<void> {
    // Let a pending kick start its turn first.
    await new Promise((r) => setTimeout(r, 0));
    if (!this.#running) return;
    await new Promise<void>((r) => this.#idle.push(r));
  }

  /** Stops ticking and the loop (after the current turn), failing queued requests. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#expiryTimer !== undefined) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    clearTimeout(this.#heldTimer);
    this.#heldTimer = undefined;
    this.#heldCommit.clear();
    await this.idle();
    await this.#snapTask;
    if (this.#pinned !== undefined && this.#pinned.refs === 0) this.#pinned.view.release();
    this.#pinned = undefined;
    const e = new DriverError("stopped", "node is shutting down", this.#leader);
    for (const w of this.#waiters.values()) w.reject(e);
    this.#waiters.clear();
    for (const w of this.#readQueue) {
      if (!w.done) {
        w.done = true;
        w.reject(e);
      }
    }
    for (const b of [...this.#reads.values(), ...this.#readsReady]) {
      for (const w of b.waiters) {
        if (!w.done) {
          w.done = true;
          w.reject(e);
        }
      }
    }
  }

  /** Whether the driver hit a fatal error. */
  get failed(): boolean {
    return this.#fatal !== undefined;
  }

  /** The current role. */
  get role(): string {
    return this.#role;
  }
}
