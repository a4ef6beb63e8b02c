/**
 * A tiny synchronous in-memory network of `RaftNode`s for unit tests (etcd-io/raft's
 * `network`): messages are delivered immediately in FIFO order unless dropped by a cut or an
 * isolation. Not used in production.
 *
 * @module
 */
import { decodeConfChange } from "./codec.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { RaftNode, type RaftNodeOptions } from "./node.ts";
import {
  type Entry,
  EntryType,
  type Message,
  MessageType,
  newMessage,
  type NodeId,
  type ReadState,
} from "./types.ts";

/** A deterministic PRNG (mulberry32) returning numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One member of a {@linkcode TestNetwork}. */
export interface TestMember {
  node: RaftNode;
  storage: MemoryStorage;
  applied: Entry[];
  /** Indexes of snapshots installed from the leader. */
  snapshots: number[];
  /** Read states received. */
  readStates: ReadState[];
}

/** Options of a test network. */
export interface TestNetworkOptions extends Partial<RaftNodeOptions> {
  /** Per-node pre-filled storages (e.g. Figure 7 logs). */
  storages?: Map<NodeId, MemoryStorage>;
  /** Bootstrap with `peers` (log entries 1..n) instead of a storage conf state. */
  bootstrapPeers?: boolean;
}

/** A synchronous in-memory cluster. */
export class TestNetwork {
  readonly members = new Map<NodeId, TestMember>();
  #cut = new Set<string>();
  #dropTypes = new Set<MessageType>();
  /** Every message delivered, for assertions. */
  readonly delivered: Message[] = [];

  constructor(ids: NodeId[], opts: TestNetworkOptions = {}) {
    for (const id of ids) {
      const storage = opts.storages?.get(id) ??
        new MemoryStorage(opts.bootstrapPeers ? {} : { confState: { voters: ids, learners: [] } });
      const node = new RaftNode({
        electionTick: 10,
        heartbeatTick: 1,
        ...opts,
        peers: opts.bootstrapPeers ? ids : undefined,
        id,
        storage,
        random: opts.random ?? mulberry32(id * 7919),
      });
      this.members.set(id, { node, storage, applied: [], snapshots: [], readStates: [] });
    }
  }

  /** Adds a member started empty (joining a running cluster, no bootstrap peers). */
  addMember(id: NodeId, opts: Partial<RaftNodeOptions> = {}): TestMember {
    const storage = new MemoryStorage();
    const node = new RaftNode({
      electionTick: 10,
      heartbeatTick: 1,
      ...opts,
      id,
      storage,
      random: opts.random ?? mulberry32(id * 7919),
    });
    const m = { node, storage, applied: [], snapshots: [], readStates: [] };
    this.members.set(id, m);
    return m;
  }

  /** The node with `id`. */
  node(id: NodeId): RaftNode {
    return this.members.get(id)!.node;
  }

  /** Drops messages between a and b (both directions). */
  cut(a: NodeId, b: NodeId): void {
    this.#cut.add(`${a}-${b}`);
    this.#cut.add(`${b}-${a}`);
  }

  /** Cuts `id` off from everyone. */
  isolate(id: NodeId): void {
    for (const other of this.members.keys()) if (other !== id) this.cut(id, other);
  }

  /** Drops every message of this type. */
  dropType(t: MessageType): void {
    this.#dropTypes.add(t);
  }

  /** Heals every cut and drop. */
  recover(): void {
    this.#cut.clear();
    this.#dropTypes.clear();
  }

  /** Drains every node's Ready and delivers messages until quiet. */
  settle(): void {
    for (let round = 0; round < 10_000; round++) {
      const msgs: Message[] = [];
      for (const m of this.members.values()) {
        while (m.node.hasReady()) {
          const rd = m.node.ready();
          if (rd.snapshot) {
            m.storage.applySnapshot(rd.snapshot);
            m.snapshots.push(rd.snapshot.meta.index);
          }
          m.readStates.push(...rd.readStates);
          m.storage.append(rd.entries);
          if (rd.hardState) m.storage.setHardState(rd.hardState);
          msgs.push(...rd.messages);
          for (const e of rd.committedEntries) {
            if (e.type === EntryType.ConfChange) m.node.applyConfChange(decodeConfChange(e.data));
            m.applied.push(e);
          }
          m.node.advance(rd);
        }
      }
      if (msgs.length === 0) return;
      for (const msg of msgs) this.deliver(msg);
    }
    throw new Error("network did not settle");
  }

  /** Delivers one message (subject to cuts) without settling. */
  deliver(msg: Message): void {
    if (this.#cut.has(`${msg.from}-${msg.to}`) || this.#dropTypes.has(msg.type)) return;
    const to = this.members.get(msg.to);
    if (!to) return;
    this.delivered.push(msg);
    to.node.step(msg);
    if (msg.type === MessageType.Snap) {
      this.members.get(msg.from)?.node.reportSnapshot(msg.to, true);
    }
  }

  /** Ticks `id` until it starts an election, then settles. */
  campaign(id: NodeId): void {
    this.settle(); // apply pending (e.g. bootstrap) conf changes first
    this.node(id).step(newMessage(MessageType.Hup, { from: id, to: id }));
    this.settle();
  }

  /** Ticks every node once, then settles. */
  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const m of this.members.values()) m.node.tick();
      this.settle();
    }
  }
}
