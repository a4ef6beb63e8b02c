/**
 * The compaction worker: runs large compactions on a second core (LevelDB's background
 * thread). The engine posts a {@link CompactionRequest}; the worker merges the input tables and
 * writes synced output tables under temporary names; the engine renames them to table numbers
 * and records them in the manifest (so a crash before that leaves only `*.tmp` files, deleted
 * on open).
 *
 * @module
 */
import { BlockCache } from "./block_cache.ts";
import { writeCompacted } from "./compaction.ts";
import { CorruptionError, StorageError } from "./errors.ts";
import { DenoFs } from "./fs.ts";
import { type InternalIterator, MergingIterator } from "./iterator.ts";
import { type Block, Table, writeTableFile } from "./sstable.ts";
import type { LevelRanges } from "./compaction.ts";

/** A compaction job. */
export interface CompactionRequest {
  /** Job id, echoed in the reply. */
  id: number;
  /** Input tables, newest data first (level-0 tables newest first, then the next level). */
  inputs: Array<{ path: string; number: number }>;
  /** Oldest live snapshot. */
  smallestSnapshot: number;
  /** Key ranges of the levels below the output. */
  deeper: LevelRanges[];
  /** Output table target size. */
  splitBytes: number;
  /** Output paths are `${tmpPrefix}${i}.tmp`. */
  tmpPrefix: string;
}

/** The worker's reply. */
export type CompactionReply =
  | {
    id: number;
    ok: true;
    outputs: Array<
      { path: string; size: number; entries: number; smallest: Uint8Array; largest: Uint8Array }
    >;
  }
  | { id: number; ok: false; message: string; kind?: string; file?: string; offset?: number };

/** Runs one job (exported for tests; the worker calls it per message). */
export async function runCompaction(req: CompactionRequest): Promise<CompactionReply> {
  const fs = new DenoFs();
  const cache = new BlockCache<Block>(0);
  const tables: Table[] = [];
  const outputs: Extract<CompactionReply, { ok: true }>["outputs"] = [];
  try {
    for (const inp of req.inputs) {
      tables.push(await Table.open(fs, inp.path, { number: inp.number, cache }));
    }
    const children: InternalIterator[] = tables.map((t) => t.iterator());
    const it = new MergingIterator(children);
    it.seekToFirst();
    await writeCompacted(it, {
      dropAll: true,
      smallestSnapshot: req.smallestSnapshot,
      deeper: req.deeper,
      splitBytes: req.splitBytes,
      emit: async (bytes, info) => {
        const path = `${req.tmpPrefix}${outputs.length}.tmp`;
        await writeTableFile(fs, path, bytes);
        outputs.push({
          path,
          size: info.size,
          entries: info.entries,
          smallest: info.smallest,
          largest: info.largest,
        });
      },
    });
    return { id: req.id, ok: true, outputs };
  } catch (e) {
    for (const o of outputs) await fs.remove(o.path);
    if (e instanceof CorruptionError) {
      return {
        id: req.id,
        ok: false,
        message: e.message,
        kind: e.kind,
        file: e.file,
        offset: e.offset,
      };
    }
    return {
      id: req.id,
      ok: false,
      message: String(e),
      kind: e instanceof StorageError ? e.kind : undefined,
    };
  } finally {
    for (const t of tables) t.close();
  }
}

interface _WorkerScope {
  onmessage: ((ev: MessageEvent<CompactionRequest>) => void) | null;
  postMessage(message: unknown): void;
}

// Only inside a worker (where WorkerGlobalScope exists) does this module serve requests.
if (typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  const scope = globalThis as unknown as _WorkerScope;
  scope.onmessage = (ev) => {
    runCompaction(ev.data).then((reply) => scope.postMessage(reply));
  };
}
