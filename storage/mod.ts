/**
 * ConcordKV's storage engine: a crash-safe LSM tree (WAL, MemTable, SSTables, manifest,
 * leveled compaction) on `Deno.FsFile`.
 *
 * @example
 * ```ts ignore
 * import { KVEngine } from "./storage/mod.ts";
 * const db = await KVEngine.open("./data/sm");
 * await db.put(new TextEncoder().encode("k"), new TextEncoder().encode("v"));
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
