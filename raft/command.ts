/**
 * State-machine commands: the data of `EntryType.Normal` log entries, in a compact, versioned
 * binary encoding (not JSON). One entry carries a batch of commands, so a node proposes one entry
 * per burst of client requests.
 *
 * Byte layout (varints are unsigned LEB128 up to 2^53 − 1; `bytes` is a varint length then the
 * bytes; `f64` is an IEEE-754 double, `u64` an unsigned 64-bit integer, both little-endian). These
 * layouts reach the disk: never change them, add a version instead.
 *
 * ```
 * batch    = version:u8 (=1 or 2) count:v command*
 * command  = op:u8 origin:v epoch:v reqId:v flags:u8 [clientId seq:v if flags&1] body
 *   clientId = f64 in a version 1 batch (exact below 2^53 only), u64 in a version 2 batch
 *   op 1 put     body = key:bytes value:bytes
 *   op 2 delete  body = key:bytes
 *   op 3 cas     body = casFlags:u8 key:bytes expected:bytes value:bytes
 *                       casFlags: bit0 expect absent, bit1 delete instead of writing value
 *   op 4 barrier body = (empty) — a linearizable read point through the log
 *   op 5 deleteRange  body = start:bytes end:bytes — every user key in [start, end) (empty end:
 *                       no upper bound), enumerated when the entry is applied; refused whole
 *                       when the range holds more than 100,000 keys
 *   op 6 deleteRange with its own limit  body = start:bytes end:bytes limit:v — the same, refused
 *                       over `limit` keys (the proposer's `--max-delete-range-keys`: every replica
 *                       applies the limit the entry carries, whatever its own flag says)
 * result   = version:u8 (=1) kind:u8 ...
 *   kind 1 ok        (put, barrier)
 *   kind 2 delete    existed:u8
 *   kind 3 cas       success:u8 found:u8 current:bytes
 *   kind 4 deleteRange  flags:u8 (bit0: over the limit, nothing deleted) deleted:v
 * ```
 *
 * A node from before op 5 (op 6) cannot decode a batch that holds one (it stops, asking to be
 * upgraded). A range with the default limit is written as op 5, so that nodes that know op 5 but
 * not op 6 read it.
 *
 * `origin` (proposing node id), `epoch` (random per process start) and `reqId` identify the
 * request so the node that proposed it can answer its client when it applies the entry. `clientId`
 * and `seq` are the client's exactly-once id (Raft thesis §6.3); clientId 0 means "no dedup".
 * Empty entry data is the leader's no-op and decodes to no commands.
 *
 * A client id is any unsigned 64-bit integer (the proto's `uint64 client_id`). Version 1 stored it
 * as a double, which is exact only below 2^53: two ids equal in their top 53 bits would have shared
 * one exactly-once record, and the second client's write would have been answered with the first
 * one's result and never applied. A batch that carries an id of 2^53 or more is now written as
 * version 2 (ids as u64); every other batch is still version 1, byte for byte, so logs and
 * snapshots written before read the same. A node older than version 2 cannot decode such a batch.
 *
 * @example
 * ```ts
 * import { decodeBatch, encodeBatch } from "./command.ts";
 * const key = new TextEncoder().encode("k");
 * const data = encodeBatch([{ op: "put", origin: 1, epoch: 7, reqId: 1, clientId: 0, seq: 0, key, value: key }]);
 * console.log(decodeBatch(data)[0]?.op); // "put"
 * ```
 *
 * @module
 */

/** Format version of a command batch without large client ids. Never change its meaning. */
export const COMMAND_VERSION = 1;
/** Format version of a batch with a client id of 2^53 or more (ids as u64). */
export const COMMAND_VERSION_U64_IDS = 2;

/**
 * An exactly-once client id, an unsigned 64-bit integer in one canonical form, so that equal ids
 * are equal map keys: a `number` below 2^53 (0 means none), a `bigint` from 2^53 to 2^64 − 1.
 * {@linkcode clientIdOf} makes one.
 */
export type ClientId = number | bigint;

/** 2^64 − 1, the largest client id. */
export const MAX_CLIENT_ID: bigint = (1n << 64n) - 1n;

/**
 * The canonical {@linkcode ClientId} of an unsigned 64-bit integer (a safe integer or a bigint);
 * `undefined` when `v` is not an integer in [0, 2^64 − 1].
 *
 * @example
 * ```ts
 * import { clientIdOf } from "./command.ts";
 * console.log(clientIdOf(7n), clientIdOf(2n ** 60n + 1n)); // 7 1152921504606846977n
 * ```
 */
export function clientIdOf(v: number | bigint): ClientId | undefined {
  if (typeof v === "number") return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (v < 0n || v > MAX_CLIENT_ID) return undefined;
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

const OP_PUT = 1;
const OP_DELETE = 2;
const OP_CAS = 3;
const OP_BARRIER = 4;
const OP_DELETE_RANGE = 5;
const OP_DELETE_RANGE_LIMIT = 6;

/**
 * The most keys one DeleteRange deletes unless its entry says otherwise (op 5's limit), and the
 * most a node's `--max-delete-range-keys` allows. A range that holds more is refused whole, so
 * that one request cannot make every replica build an unbounded write in memory.
 */
export const DELETE_RANGE_DEFAULT_LIMIT = 100_000;

const EMPTY = new Uint8Array(0);

/** Fields every command carries. */
export interface CommandHeader {
  /** Node that proposed it (answers the client). */
  origin: number;
  /** Random per-process-start tag of the origin (a restarted node never matches old requests). */
  epoch: number;
  /** Request id, unique per (origin, epoch). */
  reqId: number;
  /** Exactly-once client id; 0 means none. */
  clientId: ClientId;
  /** Sequence number within clientId. */
  seq: number;
}

/** Set `key` to `value`. */
export interface PutCommand extends CommandHeader {
  op: "put";
  key: Uint8Array;
  value: Uint8Array;
}
/** Remove `key`. */
export interface DeleteCommand extends CommandHeader {
  op: "delete";
  key: Uint8Array;
}
/** Compare-and-swap. */
export interface CasCommand extends CommandHeader {
  op: "cas";
  key: Uint8Array;
  /** Expected value (ignored when expectAbsent). */
  expected: Uint8Array;
  expectAbsent: boolean;
  /** New value (ignored when del). */
  value: Uint8Array;
  del: boolean;
}
/** A read point: applying it changes nothing. */
export interface BarrierCommand extends CommandHeader {
  op: "barrier";
}
/** Remove every key in [start, end) (empty `end`: no upper bound), or none if over `limit`. */
export interface DeleteRangeCommand extends CommandHeader {
  op: "deleteRange";
  start: Uint8Array;
  end: Uint8Array;
  /** The most live keys it deletes (≥ 1); a range with more is refused whole. */
  limit: number;
}
/** Any state-machine command. */
export type Command =
  | PutCommand
  | DeleteCommand
  | CasCommand
  | BarrierCommand
  | DeleteRangeCommand;

/** The outcome of applying one command (deterministic on every replica). */
export type CommandResult =
  | { kind: "ok" }
  | { kind: "delete"; existed: boolean }
  | { kind: "cas"; success: boolean; found: boolean; current: Uint8Array }
  /** `overLimit`: the range held more keys than one command may delete; none was deleted. */
  | { kind: "deleteRange"; deleted: number; overLimit: boolean };

/** A malformed command buffer. */
export class CommandCodecError extends Error {
  override name = "CommandCodecError";
}

// ---------------------------------------------------------------------------------------------

function _varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

class _Writer {
  buf: Uint8Array;
  view: DataView;
  pos = 0;
  constructor(size: number) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }
  u8(n: number): void {
    this.buf[this.pos++] = n;
  }
  varint(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`command: ${n} is not a non-negative safe integer`);
    }
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }
  f64(n: number): void {
    this.view.setFloat64(this.pos, n, true);
    this.pos += 8;
  }
  u64(n: ClientId): void {
    this.view.setBigUint64(this.pos, BigInt(n), true);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

class _Reader {
  readonly buf: Uint8Array;
  readonly view: DataView;
  pos = 0;
  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u8(): number {
    if (this.pos >= this.buf.length) throw new CommandCodecError("command: truncated");
    return this.buf[this.pos++]!;
  }
  varint(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      n += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (!Number.isSafeInteger(n)) throw new CommandCodecError("command: varint too large");
        return n;
      }
      mul *= 128;
    }
    throw new CommandCodecError("command: varint too long");
  }
  f64(): number {
    if (this.pos + 8 > this.buf.length) throw new CommandCodecError("command: truncated");
    const n = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return n;
  }
  u64(): bigint {
    if (this.pos + 8 > this.buf.length) throw new CommandCodecError("command: truncated");
    const n = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return n;
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (len > this.buf.length - this.pos) throw new CommandCodecError("command: truncated bytes");
    const b = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return b;
  }
}

function _bodySize(c: Command): number {
  switch (c.op) {
    case "put":
      return _varintSize(c.key.length) + c.key.length + _varintSize(c.value.length) +
        c.value.length;
    case "delete":
      return _varintSize(c.key.length) + c.key.length;
    case "cas":
      return 1 + _varintSize(c.key.length) + c.key.length + _varintSize(c.expected.length) +
        c.expected.length + _varintSize(c.value.length) + c.value.length;
    case "barrier":
      return 0;
    case "deleteRange":
      return _varintSize(c.start.length) + c.start.length + _varintSize(c.end.length) +
        c.end.length + (c.limit === DELETE_RANGE_DEFAULT_LIMIT ? 0 : _varintSize(c.limit));
  }
}

/**
 * The client id a version 1 record holds as a double: exact below 2^53; above, the integer the
 * double holds (a version 1 node had rounded the id to it), as the canonical bigint. Throws
 * {@linkcode CommandCodecError} for a double that no version 1 node wrote (not an integer in
 * [0, 2^64]).
 *
 * @example
 * ```ts
 * import { clientIdOfDouble } from "./command.ts";
 * console.log(clientIdOfDouble(42), clientIdOfDouble(2 ** 60)); // 42 1152921504606846976n
 * ```
 */
export function clientIdOfDouble(d: number): ClientId {
  if (Number.isSafeInteger(d) && d >= 0) return d;
  if (!Number.isInteger(d) || d < 0 || d > 2 ** 64) {
    throw new CommandCodecError(`command: bad client id ${d}`);
  }
  const v = BigInt(d);
  return v > MAX_CLIENT_ID ? MAX_CLIENT_ID : v;
}

/** Encoded size of one command (for batching under a byte budget). */
export function commandSize(c: Command): number {
  let n = 1 + _varintSize(c.origin) + _varintSize(c.epoch) + _varintSize(c.reqId) + 1;
  if (c.clientId !== 0) n += 8 + _varintSize(c.seq);
  return n + _bodySize(c);
}

/**
 * Encodes commands as one entry's data.
 *
 * @example
 * ```ts
 * import { encodeBatch } from "./command.ts";
 * const b = encodeBatch([{ op: "barrier", origin: 1, epoch: 1, reqId: 9, clientId: 0, seq: 0 }]);
 * console.log(b[0]); // 1 (the version)
 * ```
 */
export function encodeBatch(cmds: readonly Command[]): Uint8Array {
  let size = 1 + _varintSize(cmds.length);
  let u64Ids = false;
  for (const c of cmds) {
    size += commandSize(c);
    if (clientIdOf(c.clientId) !== c.clientId) {
      throw new RangeError(`command: client id ${c.clientId} is not in its canonical form`);
    }
    if (typeof c.clientId === "bigint") u64Ids = true;
  }
  const w = new _Writer(size);
  w.u8(u64Ids ? COMMAND_VERSION_U64_IDS : COMMAND_VERSION);
  w.varint(cmds.length);
  for (const c of cmds) {
    w.u8(
      c.op === "put"
        ? OP_PUT
        : c.op === "delete"
        ? OP_DELETE
        : c.op === "cas"
        ? OP_CAS
        : c.op === "barrier"
        ? OP_BARRIER
        : c.limit === DELETE_RANGE_DEFAULT_LIMIT
        ? OP_DELETE_RANGE
        : OP_DELETE_RANGE_LIMIT,
    );
    w.varint(c.origin);
    w.varint(c.epoch);
    w.varint(c.reqId);
    if (c.clientId !== 0) {
      w.u8(1);
      if (u64Ids) w.u64(c.clientId);
      else w.f64(c.clientId as number);
      w.varint(c.seq);
    } else w.u8(0);
    switch (c.op) {
      case "put":
        w.bytes(c.key);
        w.bytes(c.value);
        break;
      case "delete":
        w.bytes(c.key);
        break;
      case "cas":
        w.u8((c.expectAbsent ? 1 : 0) | (c.del ? 2 : 0));
        w.bytes(c.key);
        w.bytes(c.expected);
        w.bytes(c.value);
        break;
      case "barrier":
        break;
      case "deleteRange":
        w.bytes(c.start);
        w.bytes(c.end);
        if (c.limit !== DELETE_RANGE_DEFAULT_LIMIT) w.varint(c.limit);
        break;
    }
  }
  if (w.pos !== size) throw new Error(`command: size ${size} != written ${w.pos}`);
  return w.buf;
}

/**
 * Decodes one entry's data (empty data: the leader's no-op, no commands). Byte fields are views
 * into `data`. Throws {@linkcode CommandCodecError} on malformed input, never anything else.
 *
 * @example
 * ```ts
 * import { decodeBatch } from "./command.ts";
 * console.log(decodeBatch(new Uint8Array(0)).length); // 0
 * ```
 */
export function decodeBatch(data: Uint8Array): Command[] {
  if (data.length === 0) return [];
  const r = new _Reader(data);
  const version = r.u8();
  if (version !== COMMAND_VERSION && version !== COMMAND_VERSION_U64_IDS) {
    throw new CommandCodecError(`command: unknown batch version ${version}`);
  }
  const u64Ids = version === COMMAND_VERSION_U64_IDS;
  const count = r.varint();
  if (count > data.length) throw new CommandCodecError("command: bad count");
  const out: Command[] = [];
  for (let i = 0; i < count; i++) {
    const op = r.u8();
    const origin = r.varint();
    const epoch = r.varint();
    const reqId = r.varint();
    const flags = r.u8();
    let clientId: ClientId = 0;
    let seq = 0;
    if (flags & 1) {
      clientId = u64Ids ? clientIdOf(r.u64())! : clientIdOfDouble(r.f64());
      seq = r.varint();
    }
    // Literal objects with every field named (no spread of a shared header object): one
    // allocation per command, and one hidden class per op.
    switch (op) {
      case OP_PUT: {
        const key = r.bytes();
        const value = r.bytes();
        out.push({ op: "put", origin, epoch, reqId, clientId, seq, key, value });
        break;
      }
      case OP_DELETE: {
        const key = r.bytes();
        out.push({ op: "delete", origin, epoch, reqId, clientId, seq, key });
        break;
      }
      case OP_CAS: {
        const cf = r.u8();
        const key = r.bytes();
        const expected = r.bytes();
        const value = r.bytes();
        out.push({
          op: "cas",
          origin,
          epoch,
          reqId,
          clientId,
          seq,
          key,
          expected,
          expectAbsent: (cf & 1) !== 0,
          value,
          del: (cf & 2) !== 0,
        });
        break;
      }
      case OP_BARRIER:
        out.push({ op: "barrier", origin, epoch, reqId, clientId, seq });
        break;
      case OP_DELETE_RANGE:
      case OP_DELETE_RANGE_LIMIT: {
        const start = r.bytes();
        const end = r.bytes();
        const limit = op === OP_DELETE_RANGE ? DELETE_RANGE_DEFAULT_LIMIT : r.varint();
        if (limit < 1) throw new CommandCodecError("command: deleteRange limit 0");
        out.push({ op: "deleteRange", origin, epoch, reqId, clientId, seq, start, end, limit });
        break;
      }
      default:
        throw new CommandCodecError(`command: unknown op ${op}`);
    }
  }
  if (r.pos !== data.length) throw new CommandCodecError("command: trailing bytes");
  return out;
}

/**
 * Encodes a result (stored in the dedup table).
 *
 * @example
 * ```ts
 * import { decodeResult, encodeResult } from "./command.ts";
 * console.log(decodeResult(encodeResult({ kind: "delete", existed: true }))); // { kind: "delete", existed: true }
 * ```
 */
export function encodeResult(res: CommandResult): Uint8Array {
  switch (res.kind) {
    case "ok":
      return new Uint8Array([COMMAND_VERSION, 1]);
    case "delete":
      return new Uint8Array([COMMAND_VERSION, 2, res.existed ? 1 : 0]);
    case "cas": {
      const w = new _Writer(4 + _varintSize(res.current.length) + res.current.length);
      w.u8(COMMAND_VERSION);
      w.u8(3);
      w.u8(res.success ? 1 : 0);
      w.u8(res.found ? 1 : 0);
      w.bytes(res.current);
      return w.buf;
    }
    case "deleteRange": {
      const w = new _Writer(3 + _varintSize(res.deleted));
      w.u8(COMMAND_VERSION);
      w.u8(4);
      w.u8(res.overLimit ? 1 : 0);
      w.varint(res.deleted);
      return w.buf;
    }
  }
}

/** Decodes {@linkcode encodeResult}'s output; throws {@linkcode CommandCodecError} if malformed. */
export function decodeResult(data: Uint8Array): CommandResult {
  const r = new _Reader(data);
  const version = r.u8();
  if (version !== COMMAND_VERSION) {
    throw new CommandCodecError(`result: unknown version ${version}`);
  }
  const kind = r.u8();
  switch (kind) {
    case 1:
      return { kind: "ok" };
    case 2:
      return { kind: "delete", existed: r.u8() === 1 };
    case 3: {
      const success = r.u8() === 1;
      const found = r.u8() === 1;
      return { kind: "cas", success, found, current: r.bytes().slice() };
    }
    case 4: {
      const overLimit = (r.u8() & 1) !== 0;
      return { kind: "deleteRange", deleted: r.varint(), overLimit };
    }
    default:
      throw new CommandCodecError(`result: unknown kind ${kind}`);
  }
}

/** The empty byte string (shared). */
export const EMPTY_BYTES: Uint8Array = EMPTY;
