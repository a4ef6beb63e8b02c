/**
 * ConcordKV's storage engine: a crash-safe LSM tree (WAL, MemTable, SSTables, manifest,
 * leveled compaction) on `Deno.FsFile`. Formats: `wal_format.md`, `sstable_format.md`,
 * `manifest_format.md`; figures: `BENCHMARK.md`.
 *
 * - `KVEngine.open(dir, options?)` — options: `sync` (`"always"` default | `"batch"` |
 *   `"none"`), `memtableBytes` (4 MiB), `maxKeyBytes` (65536), `maxValueBytes` (4 MiB),
 *   `blockCacheBytes` (8 MiB), `tableBytes`, `level1Bytes`, `l0CompactionTrigger` (4),
 *   `l0SlowdownWrites` (8), `l0StopWrites` (12), `compactionWorker`, `workerMinBytes`, `fs`, `log`.
 * - `put`, `delete`, `write(batch)` (atomic; resolves when durable per `sync`), `get`,
 *   `getSync`, `scan({ prefix, start, end, limit })` (async iterable, a consistent view),
 *   `scanSync`, `snapshot()` (`get`, `scan`, `release`, `seq`), `flush()`/`sync()` (fdatasync the
 *   WAL: durability for `sync: "none"`), `compact()`, `stats()`, `close()`.
 * - Bulk load: `replaceAll(pairs)` and `KVEngine.restoreFrom(dir, pairs, options?)` replace the
 *   whole content with strictly ascending pairs, atomically across crashes (old or new content,
 *   never a mix) — how a Raft follower installs a snapshot streamed from `Snapshot.scan()`.
 * - Errors: `StorageError` with `kind`: `InvalidArgumentError` (empty/oversized key or value, bad
 *   batch, unsorted bulk load), `CorruptionError { file, offset }`, `LockedError { dir }`,
 *   `ClosedError` (closed engine or released snapshot; also writes after a WAL/background I/O
 *   failure, with the failure as `cause`), `kind: "IO"` for a failed WAL write.
 *
 * @example
 * ```ts ignore
 * import { KVEngine } from "./storage/mod.ts";
 * const db = await KVEngine.open("./data/sm", { sync: "none" });
 * const enc = new TextEncoder();
 * await db.write([
 *   { type: "put", key: enc.encode("user/1"), value: enc.encode("alice") },
 *   { type: "put", key: enc.encode("\0applied"), value: enc.encode("42") },
 * ]);
 * await db.flush();
 * const snap = db.snapshot();
 * const copy = await KVEngine.restoreFrom("./data/sm-copy", snap.scan());
 * snap.release();
 * await copy.close();
 * await db.close();
 * ```
 *
 * @module
 */
export { KVEngine, Snapshot } from "./engine.ts";
export type { BatchOp, KeyValue, KVEngineOptions, ScanOptions, SyncMode } from "./engine.ts";
export {
  ClosedError,
  CorruptionError,
  InvalidArgumentError,
  LockedError,
  StorageError,
} from "./errors.ts";
export type { StorageErrorKind } from "./errors.ts";
export { DenoFs, MemFs } from "./fs.ts";
export type { FileLock, FileSystem, StorageFile } from "./fs.ts";
