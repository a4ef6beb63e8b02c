/**
 * Typed errors of the storage engine. Every error carries a `kind` the caller can switch on
 * (the server maps `InvalidArgument` to gRPC `INVALID_ARGUMENT`, the rest to `INTERNAL` or
 * `UNAVAILABLE`).
 *
 * @module
 */

/** The kinds of storage errors. */
export type StorageErrorKind = "InvalidArgument" | "Corruption" | "Locked" | "Closed" | "IO";

/**
 * Base class of every error the engine throws on purpose.
 *
 * @example
 * ```ts
 * try {
 *   throw new InvalidArgumentError("empty key");
 * } catch (e) {
 *   if (e instanceof StorageError && e.kind === "InvalidArgument") console.log("bad input");
 * }
 * ```
 */
export class StorageError extends Error {
  /** What went wrong, for programs. */
  readonly kind: StorageErrorKind;
  /** Creates an error of `kind`. */
  constructor(kind: StorageErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.name = `${kind}Error`;
  }
}

/**
 * A bad key, value, batch or option (empty key, key > `maxKeyBytes`, value > `maxValueBytes`).
 *
 * @example
 * ```ts
 * const e = new InvalidArgumentError("empty key");
 * console.log(e.kind); // "InvalidArgument"
 * ```
 */
export class InvalidArgumentError extends StorageError {
  /** Creates the error. */
  constructor(message: string) {
    super("InvalidArgument", message);
  }
}

/**
 * Data on disk failed a checksum or a structural check. `file` and `offset` name where.
 *
 * @example
 * ```ts
 * const e = new CorruptionError("checksum mismatch", { file: "/d/000003.log", offset: 4096 });
 * console.log(e.file, e.offset);
 * ```
 */
export class CorruptionError extends StorageError {
  /** Path of the corrupt file. */
  readonly file: string;
  /** Byte offset in `file` of the bad record or block. */
  readonly offset: number;
  /** Creates the error. */
  constructor(message: string, where: { file: string; offset: number }) {
    super("Corruption", `${message} (file ${where.file}, offset ${where.offset})`);
    this.file = where.file;
    this.offset = where.offset;
  }
}

/**
 * Another process (or another engine in this process) holds the directory's lock.
 *
 * @example
 * ```ts
 * const e = new LockedError("/data/node-1");
 * console.log(e.dir);
 * ```
 */
export class LockedError extends StorageError {
  /** The locked directory. */
  readonly dir: string;
  /** Creates the error. */
  constructor(dir: string) {
    super("Locked", `storage directory ${dir} is locked by another process or engine`);
    this.dir = dir;
  }
}

/**
 * The engine (or snapshot) was closed, or a background failure made it unusable.
 *
 * @example
 * ```ts
 * const e = new ClosedError("engine is closed");
 * console.log(e.kind); // "Closed"
 * ```
 */
export class ClosedError extends StorageError {
  /** Creates the error. */
  constructor(message = "engine is closed", options?: ErrorOptions) {
    super("Closed", message, options);
  }
}
