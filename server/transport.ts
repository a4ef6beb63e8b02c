/**
 * Peer transport: raft messages between nodes over the `raft.Raft/Stream` gRPC method.
 *
 * - One long-lived outbound bidi stream per peer, dialed by server/peer_stream.ts (raw HTTP/2 on
 *   its own TCP connection, every frame of a turn in one write; `rawPeerStreams: false` uses a
 *   grpc-js client stream instead), plus one grpc-js channel per peer for the unary and snapshot
 *   RPCs. Outbound frames carry a batch of raft messages (raft/codec.ts `encodeMessages`) in
 *   `PeerFrame.payload`; one `send` call writes at most one frame per peer (frames are split
 *   above {@linkcode MAX_FRAME_BYTES}).
 *   The reverse direction of a stream only carries the server's hello (its header), which tells
 *   the dialer the peer is up and which cluster it belongs to; a node's messages to a peer always
 *   travel on its own outbound stream to that peer.
 * - Bounded per-peer queue: while grpc-js's write buffer is over its high-water mark, messages
 *   wait in a queue of at most `maxQueueMessages` / `maxQueueBytes`; beyond that, and whenever
 *   the peer is down (no stream), messages are dropped and the core is told
 *   (`onUnreachable`), so a down peer never costs unbounded memory. Raft retransmits.
 * - Reconnect with exponential backoff (100 ms → 1 s); "peer N up" / "peer N down" logged once per
 *   transition.
 * - Identity: every frame carries cluster id, from and to. Inbound frames whose cluster id is not
 *   ours, whose `to` is not us, or whose `from` is not a member are rejected (logged, rate-limited)
 *   and never delivered; the stream is failed with PERMISSION_DENIED. A dialer that receives a
 *   hello with another cluster id drops the stream and logs it.
 *
 * @example
 * ```ts ignore
 * const t = new Transport({ id: 1, clusterId: "c1", peers: new Map([[2, "127.0.0.1:50052"]]),
 *   isMember: (id) => id === 2, onMessages: (msgs) => {}, onUnreachable: (id) => {}, log });
 * t.send(messages);
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import {
  decodeMessages,
  encodedMessagesSize,
  encodeMessages,
  encodeMessagesInto,
} from "../raft/codec.ts";
import { type Message, MessageType } from "../raft/types.ts";
import type { Logger } from "./log.ts";
import { decodePeerFrame, PeerStream } from "./peer_stream.ts";
import { MAX_MESSAGE_BYTES, type PeerFrame, raftPackage } from "./proto.ts";

/** A frame is cut before it exceeds this many payload bytes (unless one message is larger). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** Options of a {@linkcode Transport}. */
export interface TransportOptions {
  id: number;
  clusterId: string;
  /** Peer id → "host:port" (this node may be included; it is skipped). */
  peers: Map<number, string>;
  /** Whether `id` may talk to us (a member of the current configuration, or a known peer). */
  isMember: (id: number) => boolean;
  /** Validated inbound messages from one peer. */
  onMessages: (msgs: Message[], from: number) => void;
  /** Messages to `id` were dropped. */
  onUnreachable: (id: number) => void;
  log: Logger;
  /** Default 8192. */
  maxQueueMessages?: number;
  /** Default 64 MiB. */
  maxQueueBytes?: number;
  /**
   * Dial the outbound streams with server/peer_stream.ts (raw HTTP/2, one write per turn)
   * instead of a grpc-js client stream. Default true.
   */
  rawPeerStreams?: boolean;
}

/** Channel options for peer and client connections. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
};

function _msgBytes(m: Message): number {
  let n = 48 + m.context.length;
  for (const e of m.entries) n += e.data.length + 16;
  if (m.snapshot) n += m.snapshot.data.length + 64;
  return n;
}

type Duplex = grpc.ClientDuplexStream<PeerFrame, PeerFrame>;

/** An outbound stream, whichever client carries it. */
interface _Link {
  /** Queues a frame; false: wait for the drain callback. */
  write(frame: PeerFrame): boolean;
  close(): void;
  /**
   * Whether `write` copies the payload before it returns (the raw peer stream does), so the
   * payload may be encoded into a buffer that is reused for the next frame.
   */
  copies: boolean;
}

/** Payloads for links that copy them (one per process: frames are encoded one at a time). */
let _scratch = new Uint8Array(64 * 1024);
/** A larger scratch buffer is dropped after use (a snapshot-sized batch is rare). */
const SCRATCH_KEEP = 1024 * 1024;

function _hostPort(address: string): { hostname: string; port: number } {
  const at = address.lastIndexOf(":");
  let hostname = address.slice(0, at);
  if (hostname.startsWith("[") && hostname.endsWith("]")) hostname = hostname.slice(1, -1);
  return { hostname, port: Number(address.slice(at + 1)) };
}

class _Peer {
  readonly id: number;
  readonly address: string;
  readonly #t: Transport;
  #client: grpc.Client | undefined;
  #call: _Link | undefined;
  #queue: Message[] = [];
  #queueBytes = 0;
  #waitingDrain = false;
  #backoffMs = 100;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Heard the peer's hello on the current stream. */
  up = false;
  /** Ever logged as up (to log "down" only after an "up"). */
  #everUp = false;
  #loggedFailure = false;
  lastUp = 0;
  /** The header of every frame to this peer (never modified). */
  readonly #header: NonNullable<PeerFrame["header"]>;

  constructor(t: Transport, id: number, address: string) {
    this.#t = t;
    this.id = id;
    this.address = address;
    this.#header = { cluster_id: t.clusterId, from: t.id, to: id };
  }

  /** The peer's gRPC client (one channel per peer, shared with the stream). */
  client(): grpc.Client {
    if (this.#client === undefined) {
      const Ctor = raftPackage().Raft;
      this.#client = new Ctor(this.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    }
    return this.#client;
  }

  #connect(): void {
    if (this.#closed || this.#call !== undefined || this.#retryTimer !== undefined) return;
    this.#waitingDrain = false;
    const drained = (link: _Link) => {
      if (this.#call !== link) return;
      this.#waitingDrain = false;
      this.flush();
    };
    if (this.#t.opts.rawPeerStreams ?? true) {
      const { hostname, port } = _hostPort(this.address);
      // deno-lint-ignore prefer-const
      let link: _Link;
      const stream = PeerStream.open({
        hostname,
        port,
        authority: this.address,
        path: "/raft.Raft/Stream",
        metadata: [
          ["concordkv-cluster", this.#t.clusterId],
          ["concordkv-from", String(this.#t.id)],
        ],
        onMessage: (b) => {
          let frame: PeerFrame;
          try {
            frame = decodePeerFrame(b) as PeerFrame;
          } catch (e) {
            this.#onBroken(link, `undecodable frame: ${e}`);
            return;
          }
          this.#onHello(link, frame);
        },
        onDrain: () => drained(link),
        onClose: (why) => this.#onBroken(link, why),
      });
      link = {
        write: (frame) => stream.writeFrame(frame),
        close: () => stream.close(),
        copies: true,
      };
      this.#call = link;
      return;
    }
    const client = this.client() as grpc.Client & { Stream(md: grpc.Metadata): Duplex };
    const md = new grpc.Metadata();
    md.set("concordkv-cluster", this.#t.clusterId);
    md.set("concordkv-from", String(this.#t.id));
    const call = client.Stream(md);
    const link: _Link = {
      write: (frame) => call.write(frame),
      copies: false,
      close: () => {
        try {
          call.end();
          call.cancel();
        } catch {
          // gone
        }
      },
    };
    this.#call = link;
    call.on("data", (frame: PeerFrame) => this.#onHello(link, frame));
    call.on("error", (e: grpc.ServiceError) => {
      this.#onBroken(link, `${grpc.status[e.code] ?? e.code}: ${e.details}`);
    });
    call.on("end", () => this.#onBroken(link, "stream ended"));
    call.on("drain", () => drained(link));
  }

  #onHello(call: _Link, frame: PeerFrame): void {
    if (this.#call !== call) return;
    const h = frame.header;
    if (h === null || h.cluster_id !== this.#t.clusterId || h.from !== this.id) {
      this.#t.log.error(
        `peer ${this.id} (${this.address}) answered as cluster "${h?.cluster_id}" node ${h?.from}; ` +
          `expected cluster "${this.#t.clusterId}" node ${this.id}: not talking to it`,
      );
      this.#onBroken(call, "answered as another cluster or node");
      return;
    }
    if (!this.up) {
      this.up = true;
      this.#everUp = true;
      this.#loggedFailure = false;
      this.#backoffMs = 100;
      this.#t.log.info(`peer ${this.id} up (${this.address})`);
    }
    this.lastUp = Date.now();
  }

  #onBroken(call: _Link, why: string): void {
    if (this.#call !== call) return;
    this.#call = undefined;
    call.close();
    if (this.up) {
      this.up = false;
      this.#t.log.warn(`peer ${this.id} down (${this.address}): ${why}`);
    } else if (!this.#loggedFailure) {
      this.#loggedFailure = true;
      const level = this.#everUp ? "debug" : "info";
      this.#t.log[level](`peer ${this.id} unreachable (${this.address}): ${why}; retrying`);
    }
    this.#dropQueue();
    if (this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#connect();
    }, this.#backoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, 1000);
  }

  /** Drops queued messages; messages written to the broken stream may be lost too: report. */
  #dropQueue(): void {
    this.#queue = [];
    this.#queueBytes = 0;
    this.#t.opts.onUnreachable(this.id);
  }

  enqueue(msgs: Message[]): void {
    if (this.#closed) return;
    if (this.#call === undefined) this.#connect();
    if (this.#call === undefined) {
      // In backoff: the peer is down. Drop, and let the core know.
      this.#t.opts.onUnreachable(this.id);
      return;
    }
    const maxMsgs = this.#t.opts.maxQueueMessages ?? 8192;
    const maxBytes = this.#t.opts.maxQueueBytes ?? 64 * 1024 * 1024;
    let dropped = false;
    for (const m of msgs) {
      const b = _msgBytes(m);
      if (this.#queue.length >= maxMsgs || this.#queueBytes + b > maxBytes) {
        dropped = true;
        continue;
      }
      this.#queue.push(m);
      this.#queueBytes += b;
    }
    if (dropped) this.#t.opts.onUnreachable(this.id);
    this.flush();
  }

  flush(): void {
    const call = this.#call;
    if (call === undefined || this.#waitingDrain) return;
    while (this.#queue.length > 0) {
      let n = 0;
      let bytes = 0;
      while (n < this.#queue.length) {
        const b = _msgBytes(this.#queue[n]!);
        if (n > 0 && bytes + b > MAX_FRAME_BYTES) break;
        bytes += b;
        n++;
      }
      const batch = n === this.#queue.length ? this.#queue : this.#queue.slice(0, n);
      if (batch === this.#queue) this.#queue = [];
      else this.#queue.splice(0, n);
      this.#queueBytes -= bytes;
      let payload: Uint8Array;
      if (call.copies) {
        const size = encodedMessagesSize(batch);
        if (_scratch.length < size) _scratch = new Uint8Array(size);
        payload = _scratch.subarray(0, encodeMessagesInto(_scratch, 0, batch));
      } else {
        payload = encodeMessages(batch);
      }
      const frame: PeerFrame = { header: this.#header, payload };
      let ok: boolean;
      try {
        ok = call.write(frame);
      } catch (e) {
        this.#t.log.warn(`peer ${this.id}: write failed: ${e}`);
        this.#onBroken(call, `write failed: ${e}`);
        return;
      }
      if (_scratch.length > SCRATCH_KEEP) _scratch = new Uint8Array(64 * 1024);
      if (!ok) {
        this.#waitingDrain = true;
        return;
      }
    }
    this.#queueBytes = 0;
  }

  close(): void {
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const call = this.#call;
    this.#call = undefined;
    call?.close();
    this.#client?.close();
    this.#queue = [];
  }
}

/** The peer transport of one node (client half and server half of `raft.Raft/Stream`). */
export class Transport {
  readonly opts: TransportOptions;
  readonly #peers = new Map<number, _Peer>();
  readonly #inbound = new Set<grpc.ServerDuplexStream<PeerFrame, PeerFrame>>();
  readonly #rejectLogged = new Map<string, number>();

  constructor(opts: TransportOptions) {
    this.opts = opts;
    for (const [id, addr] of opts.peers) if (id !== opts.id) this.addPeer(id, addr);
  }

  /** This node's id. */
  get id(): number {
    return this.opts.id;
  }
  /** The cluster id every frame carries. */
  get clusterId(): string {
    return this.opts.clusterId;
  }
  /** The event log. */
  get log(): Logger {
    return this.opts.log;
  }

  /** Adds (or re-addresses) a peer. */
  addPeer(id: number, address: string): void {
    if (id === this.opts.id) return;
    const old = this.#peers.get(id);
    if (old !== undefined) {
      if (old.address === address) return;
      old.close();
    }
    this.#peers.set(id, new _Peer(this, id, address));
  }

  /** Forgets a peer (closes its channel). */
  removePeer(id: number): void {
    this.#peers.get(id)?.close();
    this.#peers.delete(id);
  }

  /** Address of a peer, if known. */
  address(id: number): string | undefined {
    return this.#peers.get(id)?.address;
  }

  /** The gRPC client of peer `id` (its one channel), if the peer is known. */
  peerClient(id: number): grpc.Client | undefined {
    return this.#peers.get(id)?.client();
  }

  /** Whether the outbound stream to `id` has heard the peer's hello. */
  isUp(id: number): boolean {
    return this.#peers.get(id)?.up ?? false;
  }

  /** Sends messages (grouped into one frame per peer). Messages to unknown peers are dropped. */
  send(msgs: readonly Message[]): void {
    if (msgs.length === 0) return;
    if (msgs.length === 1) {
      const m = msgs[0]!;
      const p = this.#peers.get(m.to);
      if (p === undefined) this.opts.onUnreachable(m.to);
      else p.enqueue([m]);
      return;
    }
    const by = new Map<number, Message[]>();
    for (const m of msgs) {
      let list = by.get(m.to);
      if (list === undefined) by.set(m.to, list = []);
      list.push(m);
    }
    for (const [to, list] of by) {
      const p = this.#peers.get(to);
      if (p === undefined) this.opts.onUnreachable(to);
      else p.enqueue(list);
    }
  }

  #reject(key: string, msg: string): void {
    const now = Date.now();
    const last = this.#rejectLogged.get(key) ?? 0;
    if (now - last < 10_000) return;
    this.#rejectLogged.set(key, now);
    this.opts.log.warn(msg);
  }

  /**
   * Checks a peer header; returns why it is rejected, or undefined when it is acceptable.
   * Exported for the unary RPCs and for tests.
   */
  checkHeader(h: { cluster_id: string; from: number; to: number } | null): string | undefined {
    if (h === null) return "no header";
    if (h.cluster_id !== this.opts.clusterId) {
      return `cluster id "${h.cluster_id}" is not ours ("${this.opts.clusterId}")`;
    }
    if (h.to !== this.opts.id && h.to !== 0) {
      return `addressed to node ${h.to}, this is node ${this.opts.id}`;
    }
    if (!this.opts.isMember(h.from)) return `node ${h.from} is not a member`;
    return undefined;
  }

  /** The server half: handles one inbound `raft.Raft/Stream` call. */
  handleStream(call: grpc.ServerDuplexStream<PeerFrame, PeerFrame>): void {
    this.#inbound.add(call);
    let accepted = false;
    let from = 0;
    const fail = (why: string) => {
      this.#reject(`${why}`, `rejected peer stream: ${why}`);
      try {
        call.emit("error", { code: grpc.status.PERMISSION_DENIED, details: why });
      } catch {
        // already closed
      }
    };
    call.on("data", (frame: PeerFrame) => {
      const why = this.checkHeader(frame.header);
      if (why !== undefined) {
        fail(why);
        return;
      }
      const h = frame.header!;
      if (!accepted) {
        accepted = true;
        from = h.from;
        try {
          call.write({
            header: { cluster_id: this.opts.clusterId, from: this.opts.id, to: from },
            payload: new Uint8Array(0),
          });
        } catch {
          // gone
        }
      } else if (h.from !== from) {
        fail(`stream from node ${from} carried a frame from node ${h.from}`);
        return;
      }
      if (frame.payload.length === 0) return;
      let msgs: Message[];
      try {
        msgs = decodeMessages(frame.payload);
      } catch (e) {
        this.#reject(`decode-${from}`, `undecodable frame from node ${from}: ${e}`);
        return;
      }
      const good: Message[] = [];
      for (const m of msgs) {
        if (m.type === MessageType.Unreachable) continue; // local-only, never valid on the wire
        if (m.from !== from || (m.to !== this.opts.id)) {
          this.#reject(
            `msg-${from}`,
            `node ${from} sent a message from ${m.from} to ${m.to}; dropped`,
          );
          continue;
        }
        good.push(m);
      }
      if (good.length > 0) this.opts.onMessages(good, from);
    });
    // Say hello right away too: the dialer learns we are up before it sends anything.
    const md = call.metadata;
    const mdCluster = md.get("concordkv-cluster")[0];
    const mdFrom = Number(md.get("concordkv-from")[0] ?? 0);
    if (typeof mdCluster === "string") {
      const why = this.checkHeader({ cluster_id: mdCluster, from: mdFrom, to: this.opts.id });
      if (why !== undefined) {
        fail(why);
      } else {
        accepted = true;
        from = mdFrom;
        try {
          call.write({
            header: { cluster_id: this.opts.clusterId, from: this.opts.id, to: from },
            payload: new Uint8Array(0),
          });
        } catch {
          // gone
        }
      }
    }
    const done = () => {
      this.#inbound.delete(call);
    };
    call.on("error", done);
    call.on("end", () => {
      done();
      try {
        call.end();
      } catch {
        // gone
      }
    });
    call.on("close", done);
  }

  /** Closes every channel and inbound stream. */
  close(): void {
    for (const p of this.#peers.values()) p.close();
    this.#peers.clear();
    for (const call of this.#inbound) {
      try {
        call.end();
      } catch {
        // gone
      }
    }
    this.#inbound.clear();
  }
}
