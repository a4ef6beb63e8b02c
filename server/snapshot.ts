/**
 * State-machine snapshots: taking them (a pinned point-in-time engine view plus the Raft log's
 * snapshot record), sending them over `raft.Raft/InstallSnapshot` in bounded, checksummed chunks,
 * receiving them into a durable file, and installing them atomically.
 *
 * Snapshot data format (the stream and the `.snap` file): a sequence of records
 * `keyLen:varint key valueLen:varint value` in strictly ascending key order, covering the whole
 * engine key space (user data, exactly-once table, members, applied index) at the snapshot index.
 * Every chunk carries CRC-32 of its data; chunks must arrive in order (`offset`). A broken
 * transfer is restarted from the beginning by the leader (the core retries after
 * `reportSnapshot(false)`).
 *
 * Install order (crash-safe): the received file is fsynced and renamed to `<index>.snap`; the
 * Raft log records the snapshot (fsync); the engine content is replaced atomically
 * (`KVEngine.replaceAll`); then the file is deleted. A restart that finds the Raft log's snapshot
 * index above the state machine's applied index installs the `.snap` file again.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { crc32 } from "node:zlib";
import { decodeMessages, encodeMessages } from "../raft/codec.ts";
import { type Message, MessageType } from "../raft/types.ts";
import type { Logger } from "./log.ts";
import type { InstallSnapshotResponse, SnapshotChunk } from "./proto.ts";
import type { Transport } from "./transport.ts";

/** Bytes of data per chunk. */
export const CHUNK_BYTES = 1024 * 1024;

/** A key and value. */
export interface SnapKeyValue {
  key: Uint8Array;
  value: Uint8Array;
}

/** A pinned point-in-time view of the engine (storage/engine.ts `Snapshot`). */
export interface EngineView {
  scan(): AsyncIterable<SnapKeyValue>;
  release(): void;
}

function _crc(b: Uint8Array): number {
  return crc32(b) >>> 0;
}

function _varint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** Encodes pairs into chunks of about {@linkcode CHUNK_BYTES}. */
export async function* snapshotChunks(
  pairs: AsyncIterable<SnapKeyValue>,
  chunkBytes = CHUNK_BYTES,
): AsyncIterable<Uint8Array> {
  let parts: Uint8Array[] = [];
  let size = 0;
  const flush = () => {
    const out = new Uint8Array(size);
    let p = 0;
    for (const x of parts) {
      out.set(x, p);
      p += x.length;
    }
    parts = [];
    size = 0;
    return out;
  };
  for await (const { key, value } of pairs) {
    const h1: number[] = [];
    _varint(h1, key.length);
    const h2: number[] = [];
    _varint(h2, value.length);
    parts.push(new Uint8Array(h1), key, new Uint8Array(h2), value);
    size += h1.length + key.length + h2.length + value.length;
    if (size >= chunkBytes) yield flush();
  }
  if (size > 0) yield flush();
}

/**
 * Reads a `.snap` file's pairs (throws on a malformed file), streaming: memory stays around one
 * read buffer plus the largest record, whatever the file size.
 */
export function* readSnapshotFile(
  path: string,
  bufBytes = 4 * 1024 * 1024,
): Iterable<SnapKeyValue> {
  const f = Deno.openSync(path, { read: true });
  try {
    let buf = new Uint8Array(bufBytes);
    let start = 0; // first unread byte in buf
    let end = 0; // end of valid data in buf
    let eof = false;
    let offset = 0; // file offset of buf[0], for messages
    /** Makes at least `n` bytes available from `start`; false at a clean end of file. */
    const need = (n: number): boolean => {
      while (end - start < n) {
        if (eof) return false;
        if (start > 0) {
          buf.copyWithin(0, start, end);
          offset += start;
          end -= start;
          start = 0;
        }
        if (buf.length - end < n - (end - start) || end === buf.length) {
          const bigger = new Uint8Array(Math.max(buf.length * 2, n + bufBytes));
          bigger.set(buf.subarray(0, end));
          buf = bigger;
        }
        const r = f.readSync(buf.subarray(end));
        if (r === null || r === 0) eof = true;
        else end += r;
      }
      return true;
    };
    const fail = (what: string): never => {
      throw new Error(`snapshot file ${path}: ${what} at ${offset + start}`);
    };
    const varint = (): number => {
      let n = 0;
      let mul = 1;
      for (let i = 0; i < 8; i++) {
        if (!need(1)) fail("truncated varint");
        const b = buf[start++]!;
        n += (b & 0x7f) * mul;
        if (b < 0x80) return n;
        mul *= 128;
      }
      return fail("bad varint");
    };
    for (;;) {
      if (!need(1)) return;
      const kl = varint();
      if (!need(kl)) fail("truncated key");
      const key = buf.slice(start, start + kl);
      start += kl;
      const vl = varint();
      if (!need(vl)) fail("truncated value");
      const value = buf.slice(start, start + vl);
      start += vl;
      yield { key, value };
    }
  } finally {
    f.close();
  }
}

/** Path of the durable snapshot file of `index` under `dir`. */
export function snapPath(dir: string, index: number): string {
  return `${dir}/${String(index).padStart(16, "0")}.snap`;
}

async function _fsyncDir(dir: string): Promise<void> {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // not supported everywhere
  }
}

type _Stub = grpc.Client & {
  InstallSnapshot(
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: InstallSnapshotResponse) => void,
  ): grpc.ClientWritableStream<SnapshotChunk>;
};

/**
 * Streams a snapshot to a peer. `msg` is the core's Snap message; `view` the pinned engine view
 * at `msg.snapshot.meta.index`. Resolves when the peer stored and accepted it.
 */
export async function sendSnapshot(
  transport: Transport,
  msg: Message,
  view: EngineView,
  opts: { timeoutMs?: number } = {},
): Promise<void> {
  const snap = msg.snapshot;
  if (snap === undefined) throw new Error("Snap message without a snapshot");
  const stub = transport.peerClient(msg.to) as _Stub | undefined;
  if (stub === undefined) throw new Error(`no address for node ${msg.to}`);
  const header = { cluster_id: transport.clusterId, from: transport.id, to: msg.to };
  let call!: grpc.ClientWritableStream<SnapshotChunk>;
  const done = new Promise<InstallSnapshotResponse>((resolve, reject) => {
    call = stub.InstallSnapshot(
      new grpc.Metadata(),
      { deadline: Date.now() + (opts.timeoutMs ?? 10 * 60_000) },
      (err, res) => err ? reject(err) : resolve(res!),
    );
  });
  done.catch(() => {});
  const base = {
    header,
    term: msg.term,
    index: snap.meta.index,
    snapshot_term: snap.meta.term,
    conf_state: new Uint8Array(0),
  };
  const write = async (chunk: SnapshotChunk) => {
    if (!call.write(chunk)) {
      await new Promise<void>((resolve) => call.once("drain", () => resolve()));
    }
  };
  let offset = 0;
  let first = true;
  try {
    for await (const data of snapshotChunks(view.scan())) {
      await write({
        ...base,
        offset,
        data,
        crc: _crc(data),
        done: false,
        message: first
          ? encodeMessages([{ ...msg, snapshot: { meta: snap.meta, data: new Uint8Array(0) } }])
          : new Uint8Array(0),
      });
      first = false;
      offset += data.length;
    }
    await write({
      ...base,
      offset,
      data: new Uint8Array(0),
      crc: 0,
      done: true,
      message: first
        ? encodeMessages([{ ...msg, snapshot: { meta: snap.meta, data: new Uint8Array(0) } }])
        : new Uint8Array(0),
    });
    call.end();
  } catch (e) {
    call.cancel();
    throw e;
  }
  const res = await done;
  if (!res.done) throw new Error(`node ${msg.to} did not accept the snapshot`);
}

/** Options of a {@linkcode SnapshotReceiver}. */
export interface ReceiverOptions {
  /** Directory of `.snap` files (created if missing). */
  dir: string;
  transport: Transport;
  log: Logger;
  /** Steps the Snap message into the core once the data is durable. */
  deliver: (msg: Message) => void;
  /** Current term (for responses). */
  term: () => number;
}

/** The server half of `raft.Raft/InstallSnapshot`. */
export class SnapshotReceiver {
  readonly #o: ReceiverOptions;

  constructor(opts: ReceiverOptions) {
    this.#o = opts;
  }

  /** Handles one InstallSnapshot call. */
  handle(
    call: grpc.ServerReadableStream<SnapshotChunk, InstallSnapshotResponse>,
    cb: grpc.sendUnaryData<InstallSnapshotResponse>,
  ): void {
    const o = this.#o;
    let file: Deno.FsFile | undefined;
    let tmp = "";
    let msg: Message | undefined;
    let received = 0;
    let failed = false;
    let chain = Promise.resolve();
    const fail = (code: grpc.status, why: string) => {
      if (failed) return;
      failed = true;
      o.log.warn(`snapshot transfer rejected: ${why}`);
      try {
        file?.close();
      } catch {
        // closed
      }
      file = undefined;
      if (tmp !== "") Deno.remove(tmp).catch(() => {});
      cb(
        Object.assign(new Error(why), {
          code,
          details: why,
          metadata: new grpc.Metadata(),
        }) as grpc.ServiceError,
      );
    };
    const onChunk = async (c: SnapshotChunk) => {
      if (failed) return;
      const why = o.transport.checkHeader(c.header);
      if (why !== undefined) return fail(grpc.status.PERMISSION_DENIED, why);
      if (msg === undefined) {
        let msgs: Message[];
        try {
          msgs = decodeMessages(c.message);
        } catch (e) {
          return fail(grpc.status.INVALID_ARGUMENT, `bad snapshot message: ${e}`);
        }
        const m = msgs[0];
        if (
          msgs.length !== 1 || m === undefined || m.type !== MessageType.Snap ||
          m.snapshot === undefined ||
          m.snapshot.meta.index !== c.index || m.from !== c.header!.from
        ) {
          return fail(
            grpc.status.INVALID_ARGUMENT,
            "first chunk does not carry a matching Snap message",
          );
        }
        msg = m;
        await Deno.mkdir(o.dir, { recursive: true });
        tmp = `${o.dir}/incoming-${c.header!.from}-${c.index}.tmp`;
        file = await Deno.open(tmp, { write: true, create: true, truncate: true });
        o.log.info(`receiving snapshot at index ${c.index} from node ${m.from}`);
      }
      if (c.index !== msg.snapshot!.meta.index) {
        return fail(grpc.status.INVALID_ARGUMENT, "chunk of another snapshot");
      }
      if (c.offset !== received) {
        return fail(
          grpc.status.INVALID_ARGUMENT,
          `chunk at offset ${c.offset}, expected ${received}`,
        );
      }
      if (c.data.length > 0 && _crc(c.data) !== c.crc) {
        return fail(grpc.status.DATA_LOSS, `chunk at offset ${c.offset} fails its checksum`);
      }
      let n = 0;
      while (n < c.data.length) n += await file!.write(c.data.subarray(n));
      received += c.data.length;
      if (!c.done) return;
      await file!.syncData();
      file!.close();
      file = undefined;
      const path = snapPath(o.dir, c.index);
      await Deno.rename(tmp, path);
      tmp = "";
      await _fsyncDir(o.dir);
      o.log.info(`snapshot at index ${c.index} received (${received} bytes)`);
      o.deliver(msg);
      failed = true; // answered
      cb(null, { term: o.term(), received, done: true });
    };
    call.on("data", (c: SnapshotChunk) => {
      chain = chain.then(() => onChunk(c)).catch((e) =>
        fail(grpc.status.INTERNAL, `storing the snapshot: ${e}`)
      );
    });
    call.on("end", () => {
      chain = chain.then(() => {
        if (!failed) fail(grpc.status.INVALID_ARGUMENT, "transfer ended before its last chunk");
      });
    });
    call.on("error", () => {
      chain = chain.then(() => {
        if (!failed) {
          failed = true;
          try {
            file?.close();
          } catch {
            // closed
          }
          if (tmp !== "") Deno.remove(tmp).catch(() => {});
        }
      });
    });
  }
}
