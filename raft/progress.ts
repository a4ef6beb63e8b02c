/**
 * Replication progress of one member as the leader sees it (etcd-io/raft's tracker), pure.
 *
 * States:
 * - `probe`: the leader does not know where the follower's log matches; it sends at most one
 *   App per heartbeat interval and backs `next` off on rejection.
 * - `replicate`: the follower is known to match up to `match`; the leader streams (pipelines)
 *   entries, optimistically advancing `next`, with at most `maxInflight` App messages unacked.
 * - `snapshot`: a snapshot is being sent; nothing else is sent until it is reported.
 *
 * Invariant: `match < next`.
 *
 * @module
 */

/** A ring buffer of the last index of each in-flight App message, in increasing order. */
export class Inflights {
  #buf: number[];
  #start = 0;
  #count = 0;
  constructor(readonly capacity: number) {
    this.#buf = new Array(capacity).fill(0);
  }
  /** Number of messages in flight. */
  get count(): number {
    return this.#count;
  }
  /** No more messages may be sent. */
  full(): boolean {
    return this.#count >= this.capacity;
  }
  /** Records a sent App whose last entry is `last`. */
  add(last: number): void {
    if (this.full()) throw new Error("inflights: add to a full window");
    this.#buf[(this.#start + this.#count) % this.capacity] = last;
    this.#count++;
  }
  /** Frees every message whose last index is ≤ `to` (acknowledged). */
  freeLE(to: number): void {
    while (this.#count > 0 && this.#buf[this.#start]! <= to) {
      this.#start = (this.#start + 1) % this.capacity;
      this.#count--;
    }
  }
  /** Frees the oldest message (a heartbeat response shows the follower is alive). */
  freeFirstOne(): void {
    if (this.#count === 0) return;
    this.#start = (this.#start + 1) % this.capacity;
    this.#count--;
  }
  /** Frees everything. */
  reset(): void {
    this.#start = 0;
    this.#count = 0;
  }
}

/** Replication state of one member. */
export type ProgressState = "probe" | "replicate" | "snapshot";

/**
 * Progress of one member.
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const pr = new Progress({ next: 11, maxInflight: 4 });
 * pr.maybeUpdate(10); // the follower acknowledged index 10
 * pr.becomeReplicate();
 * console.log(pr.match, pr.next, pr.state); // 10 11 "replicate"
 * ```
 */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** Probe: an App was sent since the last response/heartbeat; wait before sending another. */
  probeSent = false;
  /** Snapshot: index of the snapshot in flight. */
  pendingSnapshot = 0;
  /** Heard from within the current CheckQuorum window. */
  recentActive = false;
  learner: boolean;
  readonly inflights: Inflights;

  constructor(opts: { next: number; match?: number; maxInflight: number; learner?: boolean }) {
    this.next = opts.next;
    this.match = opts.match ?? 0;
    this.learner = opts.learner ?? false;
    this.inflights = new Inflights(opts.maxInflight);
  }

  #reset(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  /** Back to probing from just after `match` (or after the snapshot just sent). */
  becomeProbe(): void {
    if (this.state === "snapshot") {
      const pending = this.pendingSnapshot;
      this.#reset("probe");
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.#reset("probe");
      this.next = this.match + 1;
    }
  }

  /** Pipelined replication from `match + 1`. */
  becomeReplicate(): void {
    this.#reset("replicate");
    this.next = this.match + 1;
  }

  /** A snapshot at `snapshotIndex` is being sent. */
  becomeSnapshot(snapshotIndex: number): void {
    this.#reset("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  /** An acknowledgement of index `n`; returns whether `match` advanced. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** An App ending at `n` was sent in the replicate state. */
  optimisticUpdate(n: number): void {
    this.next = n + 1;
  }

  /**
   * A rejection of the App whose previous index was `rejected`; `matchHint` is the largest
   * index that might match. Returns false if the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** Whether sending is currently throttled. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }
}
