/**
 * `MemoryStorage`: the in-memory reference implementation of {@linkcode LogStorage}, used by
 * tests and the simulator (and a model for the on-disk `RaftLogStore`).
 *
 * Representation: `#ents[0]` is a dummy entry at the snapshot (or compaction) index holding that
 * index's term; real entries follow contiguously. So `firstIndex() = #ents[0].index + 1` and
 * `lastIndex() = #ents[0].index + #ents.length - 1`.
 *
 * @module
 */
import { RaftError } from "./errors.ts";
import type { ConfState, Entry, HardState, LogStorage, Snapshot } from "./types.ts";

/** Options of {@linkcode MemoryStorage}. */
export interface MemoryStorageOptions {
  /** Initial configuration (bootstrap); the node's `peers` config is the alternative. */
  confState?: ConfState;
}

/** Sum of entry data bytes, with the "at least one entry" rule of `LogStorage.entries`. */
export function limitSize(ents: Entry[], maxBytes: number | undefined): Entry[] {
  if (maxBytes === undefined || ents.length === 0) return ents;
  let size = ents[0]!.data.length;
  let n = 1;
  for (; n < ents.length; n++) {
    size += ents[n]!.data.length;
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

/**
 * In-memory Raft log storage.
 *
 * @example
 * ```ts
 * import { MemoryStorage } from "./memory_storage.ts";
 * const s = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
 * s.append([{ index: 1, term: 1, type: 0, data: new Uint8Array() }]);
 * s.setHardState({ term: 1, vote: 1, commit: 1 });
 * console.log(s.firstIndex(), s.lastIndex(), s.term(1)); // 1 1 1
 * ```
 */
export class MemoryStorage implements LogStorage {
  #hs: HardState = { term: 0, vote: 0, commit: 0 };
  #snap: Snapshot;
  #ents: Entry[];

  constructor(opts: MemoryStorageOptions = {}) {
    const cs = opts.confState ?? { voters: [], learners: [] };
    this.#snap = {
      meta: {
        index: 0,
        term: 0,
        confState: { voters: [...cs.voters], learners: [...cs.learners] },
      },
      data: new Uint8Array(0),
    };
    this.#ents = [{ index: 0, term: 0, type: 0, data: new Uint8Array(0) }];
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    const cs = this.#snap.meta.confState;
    return {
      hardState: { ...this.#hs },
      confState: { voters: [...cs.voters], learners: [...cs.learners] },
    };
  }

  /** The stored hard state. */
  hardState(): HardState {
    return { ...this.#hs };
  }

  /** Replaces the stored hard state. */
  setHardState(hs: HardState): void {
    this.#hs = { ...hs };
  }

  #offset(): number {
    return this.#ents[0]!.index;
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    const offset = this.#offset();
    if (lo <= offset) throw new RaftError("LogCompacted", `entries: ${lo} ≤ compacted ${offset}`);
    if (hi > this.lastIndex() + 1) {
      throw new RaftError("LogUnavailable", `entries: ${hi} > last ${this.lastIndex()} + 1`);
    }
    if (lo >= hi) return [];
    return limitSize(this.#ents.slice(lo - offset, hi - offset), maxBytes);
  }

  term(index: number): number {
    const offset = this.#offset();
    if (index < offset) throw new RaftError("LogCompacted", `term: ${index} < ${offset}`);
    const e = this.#ents[index - offset];
    if (e === undefined) throw new RaftError("LogUnavailable", `term: ${index} unavailable`);
    return e.term;
  }

  firstIndex(): number {
    return this.#offset() + 1;
  }

  lastIndex(): number {
    return this.#offset() + this.#ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.#snap;
  }

  /**
   * Appends entries; an entry whose index already exists truncates the log from there first.
   * Entries at or before the compaction point are ignored.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const lastNew = entries[entries.length - 1]!.index;
    if (lastNew < first) return;
    let ents = entries as Entry[];
    if (first > ents[0]!.index) ents = ents.slice(first - ents[0]!.index);
    const start = ents[0]!.index;
    if (start > this.lastIndex() + 1) {
      throw new RaftError("Invalid", `append: gap, ${start} after last ${this.lastIndex()}`);
    }
    const keep = start - this.#offset();
    this.#ents.length = keep;
    for (const e of ents) this.#ents.push(e);
  }

  /** Replaces the whole log with a snapshot (a follower installing the leader's snapshot). */
  applySnapshot(snap: Snapshot): void {
    if (snap.meta.index < this.#snap.meta.index) {
      throw new RaftError(
        "SnapshotOutOfDate",
        `applySnapshot: ${snap.meta.index} < ${this.#snap.meta.index}`,
      );
    }
    this.#snap = snap;
    this.#ents = [{
      index: snap.meta.index,
      term: snap.meta.term,
      type: 0,
      data: new Uint8Array(0),
    }];
  }

  /**
   * Records a snapshot the local state machine took at `index` (≤ lastIndex); the log is kept
   * (call {@linkcode compact} to drop its prefix).
   */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.#snap.meta.index) {
      throw new RaftError(
        "SnapshotOutOfDate",
        `createSnapshot: ${index} ≤ ${this.#snap.meta.index}`,
      );
    }
    if (index > this.lastIndex()) {
      throw new RaftError("LogUnavailable", `createSnapshot: ${index} > last ${this.lastIndex()}`);
    }
    this.#snap = {
      meta: {
        index,
        term: this.term(index),
        confState: { voters: [...confState.voters], learners: [...confState.learners] },
      },
      data,
    };
    return this.#snap;
  }

  /**
   * Internal (used by `RaftLogStore` recovery): resets to an empty log whose base (the entry
   * before the first) is `(baseIndex, baseTerm)`, with the given snapshot and hard state.
   */
  _reset(baseIndex: number, baseTerm: number, snapshot: Snapshot, hardState: HardState): void {
    this.#snap = snapshot;
    this.#hs = { ...hardState };
    this.#ents = [{ index: baseIndex, term: baseTerm, type: 0, data: new Uint8Array(0) }];
  }

  /** Internal (used by `RaftLogStore` recovery): replaces the snapshot record, keeping the log. */
  _setSnapshot(snapshot: Snapshot): void {
    this.#snap = snapshot;
  }

  /**
   * Discards entries up to and including `index` (the entry's term is kept as the log's base),
   * so `firstIndex()` becomes `index + 1`. Compacting at or before the current base is a no-op.
   */
  compact(index: number): void {
    const offset = this.#offset();
    if (index <= offset) return;
    if (index > this.lastIndex()) {
      throw new RaftError("LogUnavailable", `compact: ${index} > last ${this.lastIndex()}`);
    }
    const base = this.#ents[index - offset]!;
    const rest = this.#ents.slice(index - offset + 1);
    this.#ents = [
      { index: base.index, term: base.term, type: 0, data: new Uint8Array(0) },
      ...rest,
    ];
  }
}
