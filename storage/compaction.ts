/**
 * The compaction loop shared by the engine (flushes, small compactions, tests on `MemFs`) and
 * the compaction worker (large compactions on a second core): merge input entries, drop what
 * no reader can see, cut output tables at a target size.
 *
 * Drop rules (LevelDB's): an entry is dropped when a newer version of the same user key, at or
 * below the oldest live snapshot, was already kept or dropped (it shadows it); a tombstone at or
 * below the oldest snapshot is dropped when no deeper level may hold the key.
 *
 * @module
 */
import { ByteWriter, compareBytes } from "./coding.ts";
import { type InternalIterator, KIND_DELETE } from "./iterator.ts";
import { TableBuilder, type TableInfo } from "./sstable.ts";

/** Key ranges of the tables of one level. */
export interface LevelRanges {
  /** Smallest keys, by table. */
  smallest: Uint8Array[];
  /** Largest keys, by table (same order). */
  largest: Uint8Array[];
}

/** True when no table of `deeper` levels covers `key`. */
export function isBaseLevelFor(deeper: LevelRanges[], key: Uint8Array): boolean {
  for (const lv of deeper) {
    // Tables of a level ≥ 1 are sorted and disjoint: binary search by largest key.
    let lo = 0;
    let hi = lv.largest.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(lv.largest[mid]!, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo < lv.largest.length && compareBytes(lv.smallest[lo]!, key) <= 0) return false;
  }
  return true;
}

/** Options of {@link writeCompacted}. */
export interface CompactOptions {
  /** Apply the drop rules (false for a memtable flush, which keeps everything). */
  dropAll: boolean;
  /** Oldest sequence number a live snapshot (or the present) reads at. */
  smallestSnapshot: number;
  /** Ranges of the levels below the output level (for tombstone dropping). */
  deeper: LevelRanges[];
  /** Cut an output table once it reaches this size (at a user-key boundary). */
  splitBytes: number;
  /** Persists one finished table. */
  emit: (bytes: Uint8Array, info: TableInfo) => Promise<void>;
  /** Called every few thousand entries; may yield to the event loop or throw to abort. */
  pause?: () => Promise<void>;
  /** Buffer to build the tables in (e.g. kept by the caller across runs); default a new one. */
  out?: ByteWriter;
}

/**
 * Writes the entries of `it` (positioned on its first entry) as tables.
 *
 * @example
 * ```ts ignore
 * it.seekToFirst();
 * await writeCompacted(it, { dropAll: true, smallestSnapshot: seq, deeper: [], splitBytes: 2 << 20, emit });
 * ```
 */
export async function writeCompacted(it: InternalIterator, options: CompactOptions): Promise<void> {
  const { dropAll, smallestSnapshot: snap, deeper, splitBytes, emit, pause } = options;
  // One output buffer for every table of this run (less garbage than a fresh one per table).
  const out = options.out ??
    new ByteWriter(Number.isFinite(splitBytes) ? splitBytes + (256 << 10) : 1 << 20);
  let builder = new TableBuilder(out);
  // A copy of the last user key (input views are valid only until the input moves on).
  let lastKey = new Uint8Array(64);
  let lastKeyLen = -1;
  let lastSeqForKey = Number.MAX_SAFE_INTEGER;
  let work = 0;
  const finish = async () => {
    if (builder.entries === 0) return;
    const { bytes, info } = builder.finish();
    await emit(bytes, info); // before the buffer is reused
    builder = new TableBuilder(out);
  };
  for (; it.valid; it.next()) {
    let same = true;
    const key = it.key;
    let differs = key.length !== lastKeyLen;
    for (let i = 0; !differs && i < lastKeyLen; i++) differs = key[i] !== lastKey[i];
    if (differs) {
      if (builder.estimatedSize >= splitBytes) await finish();
      if (key.length > lastKey.length) lastKey = new Uint8Array(key.length * 2);
      lastKey.set(key);
      lastKeyLen = key.length;
      lastSeqForKey = Number.MAX_SAFE_INTEGER;
      same = false;
    }
    if (dropAll) {
      if (lastSeqForKey <= snap) continue; // shadowed by a newer version every reader sees
      lastSeqForKey = it.seq;
      if (it.kind === KIND_DELETE && it.seq <= snap && isBaseLevelFor(deeper, it.key)) continue;
    }
    // After a table cut the builder is new: it must not be told "same key".
    builder.add(it.key, it.seq, it.kind, it.value, same && builder.entries > 0);
    if (pause !== undefined && ++work % 4096 === 0) await pause();
  }
  await finish();
}
