/**
 * Typed errors of the Raft core and its log stores. Errors are values with a `kind` the caller
 * can act on, never bare strings.
 *
 * @module
 */

/** What went wrong inside `raft/`. */
export type RaftErrorKind =
  /** The requested index is before the first retained entry (it was compacted into a snapshot). */
  | "LogCompacted"
  /** The requested index is after the last entry. */
  | "LogUnavailable"
  /** A snapshot older than the one already held. */
  | "SnapshotOutOfDate"
  /** An invariant of the caller's contract was broken (a driver bug). */
  | "Invalid";

/**
 * An error raised by the core or a log store.
 *
 * @example
 * ```ts
 * import { RaftError } from "./errors.ts";
 * try {
 *   throw new RaftError("LogCompacted", "index 3 is compacted");
 * } catch (e) {
 *   if (e instanceof RaftError && e.kind === "LogCompacted") console.log("send a snapshot");
 * }
 * ```
 */
export class RaftError extends Error {
  override name = "RaftError";
  /** The kind of failure. */
  readonly kind: RaftErrorKind;
  constructor(kind: RaftErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

/**
 * Bytes that do not decode (raft/codec.ts). Thrown for truncated, oversized or malformed input;
 * decoding untrusted bytes never does anything else.
 *
 * @example
 * ```ts
 * import { CodecError } from "./errors.ts";
 * const e = new CodecError("truncated input", 3);
 * console.log(e.kind, e.offset);
 * ```
 */
export class CodecError extends Error {
  override name = "CodecError";
  /** Always "Codec". */
  readonly kind = "Codec" as const;
  /** Byte offset in the input where decoding failed. */
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(`${message} at byte ${offset}`);
    this.offset = offset;
  }
}

/**
 * A damaged Raft log file: a bad record that is not a torn tail (raft/log_store.ts).
 *
 * @example
 * ```ts
 * import { LogCorruptionError } from "./errors.ts";
 * const e = new LogCorruptionError("/data/raft/000001.log", 4096, "checksum");
 * console.log(e.kind, e.file, e.offset);
 * ```
 */
export class LogCorruptionError extends Error {
  override name = "LogCorruptionError";
  /** Always "Corruption". */
  readonly kind = "Corruption" as const;
  /** The damaged file. */
  readonly file: string;
  /** Offset of the bad record in the file. */
  readonly offset: number;
  constructor(file: string, offset: number, reason: string) {
    super(`raft log corrupted: ${file} at offset ${offset} (${reason})`);
    this.file = file;
    this.offset = offset;
  }
}
