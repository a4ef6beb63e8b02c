/**
 * The core's view of the log: a stable part (the `LogStorage` the driver persists into) plus
 * an unstable tail (entries and possibly a snapshot the core has accepted but the driver has not
 * yet persisted), and the commit/apply cursors.
 *
 * Invariants:
 * - `unstable.offset` = index of `unstable.entries[0]`; entries before it are in storage (or in
 *   the unstable snapshot); unstable entries supersede stored ones at the same index.
 * - `applied ≤ applying ≤ committed ≤ lastIndex()`.
 * - `committed` never decreases; committed entries are never truncated.
 *
 * @module
 */
import { RaftError } from "./errors.ts";
import { limitSize } from "./memory_storage.ts";
import type { Entry, LogStorage, Snapshot } from "./types.ts";

/** The unstable tail: accepted by the core, not yet persisted by the driver. */
export class Unstable {
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];
  offset: number;
  constructor(offset: number) {
    this.offset = offset;
  }

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.meta.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot ? this.snapshot.meta.index : undefined;
  }

  maybeTerm(i: number): number | undefined {
    if (i < this.offset) {
      if (this.snapshot && this.snapshot.meta.index === i) return this.snapshot.meta.term;
      return undefined;
    }
    const e = this.entries[i - this.offset];
    return e?.term;
  }

  /** Entries up to `(i, t)` were persisted. */
  stableTo(i: number, t: number): void {
    const gt = this.maybeTerm(i);
    if (gt === undefined || gt !== t || i < this.offset) return;
    this.entries = this.entries.slice(i + 1 - this.offset);
    this.offset = i + 1;
  }

  /** The snapshot at `i` was persisted. */
  stableSnapTo(i: number): void {
    if (this.snapshot && this.snapshot.meta.index === i) this.snapshot = undefined;
  }

  restore(s: Snapshot): void {
    this.offset = s.meta.index + 1;
    this.entries = [];
    this.snapshot = s;
  }

  truncateAndAppend(ents: Entry[]): void {
    const after = ents[0]!.index;
    if (after === this.offset + this.entries.length) {
      for (const e of ents) this.entries.push(e);
    } else if (after <= this.offset) {
      // Replace the whole unstable tail (and, once persisted, the stored suffix).
      this.offset = after;
      this.entries = ents.slice();
    } else {
      this.entries = this.entries.slice(0, after - this.offset);
      for (const e of ents) this.entries.push(e);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

/** Default cap on committed entry bytes handed out in one `Ready`. */
export const MAX_COMMITTED_BYTES_PER_READY = 64 * 1024 * 1024;

/** The Raft log: storage + unstable tail + commit/apply cursors. */
export class RaftLog {
  readonly storage: LogStorage;
  readonly unstable: Unstable;
  committed: number;
  /** Highest index handed to the driver for applying (in a Ready not yet advanced). */
  applying: number;
  /** Highest index the driver has applied (advanced). */
  applied: number;

  constructor(storage: LogStorage) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applying = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Term at `i`: 0 past the end, `undefined` when compacted away. */
  term(i: number): number | undefined {
    const dummy = this.firstIndex() - 1;
    if (i < dummy) return undefined;
    if (i > this.lastIndex()) return 0;
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    try {
      return this.storage.term(i);
    } catch (e) {
      if (e instanceof RaftError && (e.kind === "LogCompacted" || e.kind === "LogUnavailable")) {
        return undefined;
      }
      throw e;
    }
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** Whether a log ending at (lasti, term) is at least as up-to-date as ours (§5.4.1). */
  isUpToDate(lasti: number, term: number): boolean {
    const lt = this.lastTerm();
    return term > lt || (term === lt && lasti >= this.lastIndex());
  }

  /** First index whose entry conflicts with (or is missing from) our log; 0 if none. */
  findConflict(ents: readonly Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The largest index ≤ `index` whose term is ≤ `term` (or that is compacted): the fast
   * backtracking step, skipping a whole term per round trip.
   */
  findConflictByTerm(index: number, term: number): number {
    for (; index > 0; index--) {
      const t = this.term(index);
      if (t === undefined || t <= term) break;
    }
    return index;
  }

  /**
   * Follower side of App: if our log matches (index, logTerm), append `ents` (truncating a
   * conflicting suffix) and advance commit; returns the last new index, or undefined on mismatch.
   */
  maybeAppend(
    index: number,
    logTerm: number,
    committed: number,
    ents: Entry[],
  ): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      if (ci <= this.committed) {
        throw new RaftError("Invalid", `entry ${ci} conflicts with committed ${this.committed}`);
      }
      this.append(ents.slice(ci - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (after < this.committed) {
      throw new RaftError("Invalid", `append after ${after} is before committed ${this.committed}`);
    }
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  commitTo(toCommit: number): void {
    if (this.committed < toCommit) {
      if (this.lastIndex() < toCommit) {
        throw new RaftError("Invalid", `commit ${toCommit} beyond last ${this.lastIndex()}`);
      }
      this.committed = toCommit;
    }
  }

  /** Commit `maxIndex` if it is newer and its entry is of `term` (Figure 8 rule). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.term(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  /** Entries in [lo, hi), at most `maxBytes`; undefined if `lo` is compacted. */
  slice(lo: number, hi: number, maxBytes?: number): Entry[] | undefined {
    if (lo < this.firstIndex()) return undefined;
    if (lo >= hi) return [];
    const u = this.unstable;
    let out: Entry[] = [];
    if (lo < u.offset) {
      let stored: Entry[];
      try {
        stored = this.storage.entries(lo, Math.min(hi, u.offset), maxBytes);
      } catch (e) {
        if (e instanceof RaftError && e.kind === "LogCompacted") return undefined;
        throw e;
      }
      if (stored.length < Math.min(hi, u.offset) - lo) return stored; // size-limited
      out = stored;
    }
    if (hi > u.offset) {
      const un = u.slice(Math.max(lo, u.offset), hi);
      out = out.length > 0 ? out.concat(un) : un;
    }
    return limitSize(out, maxBytes);
  }

  /** Entries from `lo` to the end; undefined if `lo` is compacted. */
  entriesFrom(lo: number, maxBytes?: number): Entry[] | undefined {
    if (lo > this.lastIndex()) return [];
    return this.slice(lo, this.lastIndex() + 1, maxBytes);
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== undefined;
  }

  hasNextCommittedEnts(): boolean {
    if (this.hasPendingSnapshot()) return false;
    return this.committed > Math.max(this.applying, this.firstIndex() - 1);
  }

  nextCommittedEnts(maxBytes = MAX_COMMITTED_BYTES_PER_READY): Entry[] {
    if (this.hasPendingSnapshot()) return [];
    const off = Math.max(this.applying + 1, this.firstIndex());
    if (this.committed + 1 > off) return this.slice(off, this.committed + 1, maxBytes) ?? [];
    return [];
  }

  /** The entries up to `i` were handed out for applying. */
  applyingTo(i: number): void {
    if (i > this.applying) this.applying = i;
  }

  appliedTo(i: number): void {
    if (i > this.applied) this.applied = i;
    if (i > this.applying) this.applying = i;
  }

  /** Latest snapshot: the pending unstable one, else the stored one. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Accept a leader's snapshot: the log now starts after it. */
  restore(s: Snapshot): void {
    this.committed = s.meta.index;
    this.unstable.restore(s);
  }
}
