/**
 * Compact, versioned binary encoding of the Raft vocabulary (not JSON): entries, messages and
 * batches of messages, hard state, conf state and conf changes.
 *
 * Every top-level buffer starts with a one-byte format version (`CODEC_VERSION`). Integers are
 * unsigned LEB128 varints (up to 2^53 − 1); byte strings are a varint length then the bytes.
 * These layouts reach the disk and the wire: never change them, add a version instead.
 *
 * ```
 * entry       = index:v term:v type:u8 data:bytes
 * message     = type:u8 from:v to:v term:v logTerm:v index:v commit:v flags:u8
 *               rejectHint:v hintTerm:v context:bytes nEntries:v entry* [snapshot if flags&2]
 *               flags: bit0 reject, bit1 has snapshot
 * snapshot    = index:v term:v confState data:bytes
 * confState   = nVoters:v voter:v* nLearners:v learner:v*
 * messages    = version:u8 count:v message*
 * hardState   = version:u8 term:v vote:v commit:v
 * confChange  = version:u8 kind:u8 (0 addVoter, 1 addLearner, 2 removeNode) nodeId:v context:bytes
 * ```
 *
 * Decoded byte fields (entry data, contexts, snapshot data) are views into the input buffer (no
 * copy); copy them if the input buffer is reused. Decoding untrusted bytes throws `CodecError`
 * and nothing else: every length is checked against the remaining input before any allocation.
 *
 * @module
 */
import { CodecError } from "./errors.ts";
import type {
  ConfChange,
  ConfState,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  Snapshot,
} from "./types.ts";

/** Format version written first in every top-level buffer. Never change its meaning. */
export const CODEC_VERSION = 1;

const MAX_MESSAGE_TYPE = 17;
const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------------------------
// Sizing and writing.

function _varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  let size = 4;
  n = Math.floor(n / 0x10000000);
  while (n > 0) {
    size++;
    n = Math.floor(n / 128);
  }
  return size;
}

class _Writer {
  buf: Uint8Array;
  pos = 0;
  /** A writer over a new buffer of `size` bytes, or over `into` from `offset`. */
  constructor(size: number, into?: Uint8Array, offset = 0) {
    this.buf = into ?? new Uint8Array(size);
    this.pos = offset;
  }
  u8(n: number): void {
    this.buf[this.pos++] = n;
  }
  varint(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`codec: ${n} is not a non-negative safe integer`);
    }
    const buf = this.buf;
    while (n >= 0x80) {
      buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }
  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

function _entrySize(e: Entry): number {
  return _varintSize(e.index) + _varintSize(e.term) + 1 + _varintSize(e.data.length) +
    e.data.length;
}

function _writeEntry(w: _Writer, e: Entry): void {
  w.varint(e.index);
  w.varint(e.term);
  w.u8(e.type);
  w.bytes(e.data);
}

function _confStateSize(cs: ConfState): number {
  let n = _varintSize(cs.voters.length) + _varintSize(cs.learners.length);
  for (const v of cs.voters) n += _varintSize(v);
  for (const v of cs.learners) n += _varintSize(v);
  return n;
}

function _writeConfState(w: _Writer, cs: ConfState): void {
  w.varint(cs.voters.length);
  for (const v of cs.voters) w.varint(v);
  w.varint(cs.learners.length);
  for (const v of cs.learners) w.varint(v);
}

function _snapshotSize(s: Snapshot): number {
  return _varintSize(s.meta.index) + _varintSize(s.meta.term) + _confStateSize(s.meta.confState) +
    _varintSize(s.data.length) + s.data.length;
}

function _writeSnapshot(w: _Writer, s: Snapshot): void {
  w.varint(s.meta.index);
  w.varint(s.meta.term);
  _writeConfState(w, s.meta.confState);
  w.bytes(s.data);
}

function _messageSize(m: Message): number {
  let n = 1 + _varintSize(m.from) + _varintSize(m.to) + _varintSize(m.term) +
    _varintSize(m.logTerm) + _varintSize(m.index) + _varintSize(m.commit) + 1 +
    _varintSize(m.rejectHint) + _varintSize(m.hintTerm) + _varintSize(m.context.length) +
    m.context.length + _varintSize(m.entries.length);
  for (const e of m.entries) n += _entrySize(e);
  if (m.snapshot) n += _snapshotSize(m.snapshot);
  return n;
}

function _writeMessage(w: _Writer, m: Message): void {
  w.u8(m.type);
  w.varint(m.from);
  w.varint(m.to);
  w.varint(m.term);
  w.varint(m.logTerm);
  w.varint(m.index);
  w.varint(m.commit);
  w.u8((m.reject ? 1 : 0) | (m.snapshot ? 2 : 0));
  w.varint(m.rejectHint);
  w.varint(m.hintTerm);
  w.bytes(m.context);
  w.varint(m.entries.length);
  for (const e of m.entries) _writeEntry(w, e);
  if (m.snapshot) _writeSnapshot(w, m.snapshot);
}

// ---------------------------------------------------------------------------------------------
// Reading.

class _Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, pos = 0) {
    this.pos = pos;
  }
  fail(what: string): never {
    throw new CodecError(what, this.pos);
  }
  u8(): number {
    if (this.pos >= this.buf.length) this.fail("truncated input");
    return this.buf[this.pos++]!;
  }
  varint(): number {
    const buf = this.buf;
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= buf.length) this.fail("truncated varint");
      const b = buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) this.fail("varint out of range");
        return result;
      }
      mul *= 128;
    }
    this.fail("varint too long");
  }
  /** A count of items each at least `minItemSize` bytes: bounded by the remaining input. */
  count(minItemSize: number): number {
    const n = this.varint();
    if (n * minItemSize > this.buf.length - this.pos) this.fail(`count ${n} exceeds input`);
    return n;
  }
  bytes(): Uint8Array {
    const n = this.varint();
    if (n > this.buf.length - this.pos) this.fail(`length ${n} exceeds input`);
    if (n === 0) return EMPTY;
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  version(): void {
    const v = this.u8();
    if (v !== CODEC_VERSION) {
      this.pos--;
      this.fail(`unsupported codec version ${v}`);
    }
  }
  end(): void {
    if (this.pos !== this.buf.length) this.fail("trailing bytes");
  }
}

function _readEntry(r: _Reader): Entry {
  const index = r.varint();
  const term = r.varint();
  const type = r.u8();
  if (type > 1) {
    r.pos--;
    r.fail(`unknown entry type ${type}`);
  }
  const data = r.bytes();
  return { index, term, type: type as EntryType, data };
}

function _readConfState(r: _Reader): ConfState {
  const nv = r.count(1);
  const voters: number[] = new Array(nv);
  for (let i = 0; i < nv; i++) voters[i] = r.varint();
  const nl = r.count(1);
  const learners: number[] = new Array(nl);
  for (let i = 0; i < nl; i++) learners[i] = r.varint();
  return { voters, learners };
}

function _readSnapshot(r: _Reader): Snapshot {
  const index = r.varint();
  const term = r.varint();
  const confState = _readConfState(r);
  const data = r.bytes();
  return { meta: { index, term, confState }, data };
}

function _readMessage(r: _Reader): Message {
  const type = r.u8();
  if (type > MAX_MESSAGE_TYPE) {
    r.pos--;
    r.fail(`unknown message type ${type}`);
  }
  const from = r.varint();
  const to = r.varint();
  const term = r.varint();
  const logTerm = r.varint();
  const index = r.varint();
  const commit = r.varint();
  const flags = r.u8();
  if (flags > 3) {
    r.pos--;
    r.fail(`bad message flags ${flags}`);
  }
  const rejectHint = r.varint();
  const hintTerm = r.varint();
  const context = r.bytes();
  const n = r.count(4);
  const entries: Entry[] = new Array(n);
  for (let i = 0; i < n; i++) entries[i] = _readEntry(r);
  const m: Message = {
    type: type as MessageType,
    from,
    to,
    term,
    logTerm,
    index,
    entries,
    commit,
    reject: (flags & 1) !== 0,
    rejectHint,
    hintTerm,
    context,
  };
  if (flags & 2) m.snapshot = _readSnapshot(r);
  return m;
}

function _wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CodecError) throw e;
    // Defensive: any other failure while decoding untrusted input is still a codec error.
    throw new CodecError(`malformed input (${(e as Error).message})`, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Public API.

/**
 * Encodes a batch of messages into one buffer (the payload of one peer RPC / stream frame).
 *
 * @example
 * ```ts
 * import { decodeMessages, encodeMessages } from "./codec.ts";
 * import { MessageType } from "./types.ts";
 * const buf = encodeMessages([{
 *   type: MessageType.Heartbeat, from: 1, to: 2, term: 3, logTerm: 0, index: 0, entries: [],
 *   commit: 5, reject: false, rejectHint: 0, hintTerm: 0, context: new Uint8Array(0),
 * }]);
 * console.log(decodeMessages(buf)[0]!.commit); // 5
 * ```
 */
export function encodeMessages(msgs: readonly Message[]): Uint8Array {
  const out = new Uint8Array(encodedMessagesSize(msgs));
  encodeMessagesInto(out, 0, msgs);
  return out;
}

/** The length in bytes of {@linkcode encodeMessages}`(msgs)`. */
export function encodedMessagesSize(msgs: readonly Message[]): number {
  let size = 1 + _varintSize(msgs.length);
  for (const m of msgs) size += _messageSize(m);
  return size;
}

/**
 * Writes {@linkcode encodeMessages}`(msgs)` into `out` at `offset` (it must have room for
 * {@linkcode encodedMessagesSize}`(msgs)` bytes, else `RangeError`); returns the offset after it.
 * For a caller that reuses one buffer instead of allocating one per batch.
 *
 * @example
 * ```ts
 * import { decodeMessages, encodedMessagesSize, encodeMessagesInto } from "./codec.ts";
 * const out = new Uint8Array(64);
 * const end = encodeMessagesInto(out, 3, []);
 * console.log(end - 3 === encodedMessagesSize([]), decodeMessages(out.subarray(3, end)).length); // true 0
 * ```
 */
export function encodeMessagesInto(
  out: Uint8Array,
  offset: number,
  msgs: readonly Message[],
): number {
  const size = encodedMessagesSize(msgs);
  if (offset < 0 || offset + size > out.length) {
    throw new RangeError(`codec: ${size} bytes do not fit at ${offset} in ${out.length}`);
  }
  const w = new _Writer(0, out, offset);
  w.u8(CODEC_VERSION);
  w.varint(msgs.length);
  for (const m of msgs) _writeMessage(w, m);
  return w.pos;
}

/**
 * Decodes a batch written by {@linkcode encodeMessages}. Throws `CodecError` on bad input.
 *
 * @example
 * ```ts
 * import { decodeMessages, encodeMessages } from "./codec.ts";
 * console.log(decodeMessages(encodeMessages([])).length); // 0
 * ```
 */
export function decodeMessages(buf: Uint8Array): Message[] {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const n = r.count(12); // the smallest message is 12 bytes
    const out: Message[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = _readMessage(r);
    r.end();
    return out;
  });
}

/**
 * Encodes one message (a batch of one).
 *
 * @example
 * ```ts
 * import { decodeMessage, encodeMessage } from "./codec.ts";
 * import { MessageType } from "./types.ts";
 * const m = decodeMessage(encodeMessage({
 *   type: MessageType.Vote, from: 1, to: 2, term: 3, logTerm: 2, index: 9, entries: [],
 *   commit: 0, reject: false, rejectHint: 0, hintTerm: 0, context: new Uint8Array(0),
 * }));
 * console.log(m.index); // 9
 * ```
 */
export function encodeMessage(m: Message): Uint8Array {
  return encodeMessages([m]);
}

/** Decodes a buffer holding exactly one message. Throws `CodecError` otherwise. */
export function decodeMessage(buf: Uint8Array): Message {
  const msgs = decodeMessages(buf);
  if (msgs.length !== 1) throw new CodecError(`expected 1 message, found ${msgs.length}`, 0);
  return msgs[0]!;
}

/**
 * Encodes one log entry (version byte first); the Raft log store's record payload.
 *
 * @example
 * ```ts
 * import { decodeEntry, encodeEntry } from "./codec.ts";
 * const e = decodeEntry(encodeEntry({ index: 7, term: 2, type: 0, data: new Uint8Array([1]) }));
 * console.log(e.index, e.term); // 7 2
 * ```
 */
export function encodeEntry(e: Entry): Uint8Array {
  const w = new _Writer(1 + _entrySize(e));
  w.u8(CODEC_VERSION);
  _writeEntry(w, e);
  return w.buf;
}

/**
 * The length of {@linkcode encodeEntry}`(e)`.
 *
 * @example
 * ```ts
 * import { encodedEntrySize, encodeEntry } from "./codec.ts";
 * import { type Entry, EntryType } from "./types.ts";
 * const e: Entry = { index: 7, term: 2, type: EntryType.Normal, data: new Uint8Array(3) };
 * console.log(encodedEntrySize(e) === encodeEntry(e).length); // true
 * ```
 */
export function encodedEntrySize(e: Entry): number {
  return 1 + _entrySize(e);
}

/**
 * Writes {@linkcode encodeEntry}`(e)` into `out` at `offset` (which must have
 * {@linkcode encodedEntrySize}`(e)` bytes of room); returns the offset after it.
 *
 * @example
 * ```ts
 * import { decodeEntry, encodedEntrySize, encodeEntryInto } from "./codec.ts";
 * import { type Entry, EntryType } from "./types.ts";
 * const e: Entry = { index: 7, term: 2, type: EntryType.Normal, data: new Uint8Array([1]) };
 * const buf = new Uint8Array(2 + encodedEntrySize(e));
 * const end = encodeEntryInto(buf, 2, e);
 * console.log(decodeEntry(buf.subarray(2, end)).index); // 7
 * ```
 */
export function encodeEntryInto(out: Uint8Array, offset: number, e: Entry): number {
  const w = new _Writer(0, out, offset);
  w.u8(CODEC_VERSION);
  _writeEntry(w, e);
  return w.pos;
}

/** Decodes an entry written by {@linkcode encodeEntry}. Throws `CodecError` on bad input. */
export function decodeEntry(buf: Uint8Array): Entry {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const e = _readEntry(r);
    r.end();
    return e;
  });
}

/**
 * Encodes a hard state.
 *
 * @example
 * ```ts
 * import { decodeHardState, encodeHardState } from "./codec.ts";
 * console.log(decodeHardState(encodeHardState({ term: 4, vote: 2, commit: 10 })).vote); // 2
 * ```
 */
export function encodeHardState(hs: HardState): Uint8Array {
  const w = new _Writer(1 + _varintSize(hs.term) + _varintSize(hs.vote) + _varintSize(hs.commit));
  w.u8(CODEC_VERSION);
  w.varint(hs.term);
  w.varint(hs.vote);
  w.varint(hs.commit);
  return w.buf;
}

/** Decodes a hard state. Throws `CodecError` on bad input. */
export function decodeHardState(buf: Uint8Array): HardState {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const hs = { term: r.varint(), vote: r.varint(), commit: r.varint() };
    r.end();
    return hs;
  });
}

/**
 * Encodes a conf state (voters and learners).
 *
 * @example
 * ```ts
 * import { decodeConfState, encodeConfState } from "./codec.ts";
 * console.log(decodeConfState(encodeConfState({ voters: [1, 2], learners: [3] })).learners); // [3]
 * ```
 */
export function encodeConfState(cs: ConfState): Uint8Array {
  const w = new _Writer(1 + _confStateSize(cs));
  w.u8(CODEC_VERSION);
  _writeConfState(w, cs);
  return w.buf;
}

/** Decodes a conf state. Throws `CodecError` on bad input. */
export function decodeConfState(buf: Uint8Array): ConfState {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const cs = _readConfState(r);
    r.end();
    return cs;
  });
}

/** Encodes snapshot metadata plus data (version byte first). */
export function encodeSnapshot(s: Snapshot): Uint8Array {
  const w = new _Writer(1 + _snapshotSize(s));
  w.u8(CODEC_VERSION);
  _writeSnapshot(w, s);
  return w.buf;
}

/** Decodes a snapshot written by {@linkcode encodeSnapshot}. Throws `CodecError` on bad input. */
export function decodeSnapshot(buf: Uint8Array): Snapshot {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const s = _readSnapshot(r);
    r.end();
    return s;
  });
}

const CC_KINDS = ["addVoter", "addLearner", "removeNode"] as const;

/**
 * Encodes a membership change: the data of an `EntryType.ConfChange` entry.
 *
 * @example
 * ```ts
 * import { decodeConfChange, encodeConfChange } from "./codec.ts";
 * const cc = decodeConfChange(encodeConfChange({
 *   type: "addLearner", nodeId: 4, context: new TextEncoder().encode("127.0.0.1:50054"),
 * }));
 * console.log(cc.type, cc.nodeId); // addLearner 4
 * ```
 */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const kind = CC_KINDS.indexOf(cc.type);
  if (kind < 0) throw new RangeError(`codec: unknown conf change type ${cc.type}`);
  const w = new _Writer(
    2 + _varintSize(cc.nodeId) + _varintSize(cc.context.length) + cc.context.length,
  );
  w.u8(CODEC_VERSION);
  w.u8(kind);
  w.varint(cc.nodeId);
  w.bytes(cc.context);
  return w.buf;
}

/** Decodes a membership change. Throws `CodecError` on bad input. */
export function decodeConfChange(buf: Uint8Array): ConfChange {
  return _wrap(() => {
    const r = new _Reader(buf);
    r.version();
    const kind = r.u8();
    const type = CC_KINDS[kind];
    if (type === undefined) throw new CodecError(`unknown conf change kind ${kind}`, r.pos - 1);
    const nodeId = r.varint();
    const context = r.bytes();
    r.end();
    return { type, nodeId, context };
  });
}
