/**
 * The manifest: which tables are live at which level, plus the counters the engine needs on
 * open. It is a log of version edits (JSON payloads in `record.ts` frames, type 1) in a file
 * `MANIFEST-NNNNNN`; the file `CURRENT` names the live manifest and is replaced by write-temp,
 * fsync, rename, fsync-dir. Each edit is appended and synced before the engine acts on it, so a
 * crash leaves the previous or the next state. See `manifest_format.md`.
 *
 * @module
 */
import { fromHex, toHex } from "./coding.ts";
import { CorruptionError } from "./errors.ts";
import type { FileSystem } from "./fs.ts";
import { encodeRecord, readRecord } from "./record.ts";
import { goodRecordAfter } from "./wal.ts";

/** Record type of a version edit. Reaches the disk: never change. */
export const MANIFEST_EDIT = 1;

/** Number of levels. */
export const NUM_LEVELS = 7;

/** A table as the manifest knows it. */
export interface TableMeta {
  /** File number (`NNNNNN.sst`). */
  number: number;
  /** Level. */
  level: number;
  /** File size. */
  size: number;
  /** Entry count. */
  entries: number;
  /** Smallest user key. */
  smallest: Uint8Array;
  /** Largest user key. */
  largest: Uint8Array;
}

/** A change to the set of live tables and counters. */
export interface VersionEdit {
  /** WAL segments below this number are obsolete. */
  logNumber?: number;
  /** Next free file number. */
  nextFile?: number;
  /** Largest sequence number used. */
  lastSeq?: number;
  /** Tables added. */
  add?: TableMeta[];
  /** Tables removed: `[level, number]`. */
  del?: Array<[number, number]>;
}

/** The state a manifest describes. */
export interface ManifestState {
  /** Live tables per level (level 0 in file-number order; others by smallest key). */
  levels: TableMeta[][];
  /** First live WAL segment. */
  logNumber: number;
  /** Next free file number. */
  nextFile: number;
  /** Largest sequence number used. */
  lastSeq: number;
}

/** Encodes an edit as JSON bytes. */
export function encodeEdit(edit: VersionEdit): Uint8Array {
  const json = {
    logNumber: edit.logNumber,
    nextFile: edit.nextFile,
    lastSeq: edit.lastSeq,
    add: edit.add?.map((
      t,
    ) => [t.level, t.number, t.size, t.entries, toHex(t.smallest), toHex(t.largest)]),
    del: edit.del,
  };
  return new TextEncoder().encode(JSON.stringify(json));
}

/** Decodes an edit; throws `RangeError` on malformed input. */
export function decodeEdit(bytes: Uint8Array): VersionEdit {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new RangeError("edit is not JSON");
  }
  const num = (v: unknown): number | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw new RangeError("bad number");
    }
    return v;
  };
  const edit: VersionEdit = {
    logNumber: num(json.logNumber),
    nextFile: num(json.nextFile),
    lastSeq: num(json.lastSeq),
  };
  if (json.add !== undefined) {
    if (!Array.isArray(json.add)) throw new RangeError("bad add");
    edit.add = json.add.map((a: unknown) => {
      if (!Array.isArray(a) || a.length !== 6) throw new RangeError("bad add entry");
      const level = num(a[0])!;
      if (level >= NUM_LEVELS) throw new RangeError("bad level");
      return {
        level,
        number: num(a[1])!,
        size: num(a[2])!,
        entries: num(a[3])!,
        smallest: fromHex(String(a[4])),
        largest: fromHex(String(a[5])),
      };
    });
  }
  if (json.del !== undefined) {
    if (!Array.isArray(json.del)) throw new RangeError("bad del");
    edit.del = json.del.map((d: unknown) => {
      if (!Array.isArray(d) || d.length !== 2) throw new RangeError("bad del entry");
      return [num(d[0])!, num(d[1])!] as [number, number];
    });
  }
  return edit;
}

/** Applies `edit` to `state` in place (levels ≥ 1 are kept sorted by smallest key). */
export function applyEdit(
  state: ManifestState,
  edit: VersionEdit,
  compare: (a: Uint8Array, b: Uint8Array) => number,
): void {
  // Counters only grow: an edit written earlier never lowers what memory already allocated.
  if (edit.logNumber !== undefined) state.logNumber = Math.max(state.logNumber, edit.logNumber);
  if (edit.nextFile !== undefined) state.nextFile = Math.max(state.nextFile, edit.nextFile);
  if (edit.lastSeq !== undefined) state.lastSeq = Math.max(state.lastSeq, edit.lastSeq);
  for (const [level, number] of edit.del ?? []) {
    const lv = state.levels[level];
    if (lv) state.levels[level] = lv.filter((t) => t.number !== number);
  }
  for (const t of edit.add ?? []) {
    state.levels[t.level]!.push(t);
  }
  for (let l = 0; l < NUM_LEVELS; l++) {
    if (l === 0) state.levels[0]!.sort((a, b) => a.number - b.number);
    else state.levels[l]!.sort((a, b) => compare(a.smallest, b.smallest));
  }
}

/** An empty state. */
export function emptyState(): ManifestState {
  return {
    levels: Array.from({ length: NUM_LEVELS }, () => []),
    logNumber: 0,
    nextFile: 1,
    lastSeq: 0,
  };
}

/** The edit that recreates `state` from nothing. */
export function snapshotEdit(state: ManifestState): VersionEdit {
  return {
    logNumber: state.logNumber,
    nextFile: state.nextFile,
    lastSeq: state.lastSeq,
    add: state.levels.flat(),
  };
}

/** Name of manifest number `n`. */
export function manifestName(n: number): string {
  return `MANIFEST-${String(n).padStart(6, "0")}`;
}

/**
 * Reads the manifest `CURRENT` names. A torn last edit (never acknowledged) is ignored and
 * reported through `log`; a bad edit followed by good ones throws {@link CorruptionError}.
 * Returns `undefined` when `CURRENT` does not exist (a new database).
 *
 * @example
 * ```ts ignore
 * const m = await readManifest(fs, "/db", { compare: compareBytes, log: console.warn });
 * ```
 */
export async function readManifest(
  fs: FileSystem,
  dir: string,
  options: { compare: (a: Uint8Array, b: Uint8Array) => number; log: (msg: string) => void },
): Promise<{ state: ManifestState; name: string; validEnd: number } | undefined> {
  const currentPath = `${dir}/CURRENT`;
  if (!(await fs.exists(currentPath))) return undefined;
  const current = new TextDecoder().decode(await fs.readFile(currentPath));
  if (!/^MANIFEST-\d+\n$/.test(current)) {
    throw new CorruptionError("CURRENT does not name a manifest", { file: currentPath, offset: 0 });
  }
  const name = current.trim();
  const path = `${dir}/${name}`;
  let buf: Uint8Array;
  try {
    buf = await fs.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CorruptionError("manifest named by CURRENT is missing", { file: path, offset: 0 });
    }
    throw e;
  }
  const state = emptyState();
  let pos = 0;
  let edits = 0;
  for (;;) {
    const r = readRecord(buf, pos);
    if (r.kind === "end") break;
    if (r.kind === "bad" || r.type !== MANIFEST_EDIT) {
      const reason = r.kind === "bad" ? r.reason : `unknown record type ${r.type}`;
      // Only an incomplete last record is a torn append (the engine acts on an edit only after
      // syncing it). A complete record failing its checksum is corruption: accepting it as
      // torn would silently roll back an edit the engine already acted on.
      const torn = r.kind === "bad" && r.reason === "truncated";
      if (edits === 0 || !torn || goodRecordAfter(buf, pos, MANIFEST_EDIT)) {
        throw new CorruptionError(`bad manifest record (${reason})`, { file: path, offset: pos });
      }
      options.log(`manifest ${path}: ignoring torn last edit at offset ${pos} (${reason})`);
      break;
    }
    try {
      applyEdit(state, decodeEdit(r.payload), options.compare);
    } catch (e) {
      if (e instanceof RangeError) {
        throw new CorruptionError(`bad manifest edit: ${e.message}`, { file: path, offset: pos });
      }
      throw e;
    }
    edits++;
    pos = r.next;
  }
  return { state, name, validEnd: pos };
}

/** Encodes an edit as a manifest record. */
export function editRecord(edit: VersionEdit): Uint8Array {
  return encodeRecord(MANIFEST_EDIT, encodeEdit(edit));
}
