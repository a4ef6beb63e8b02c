/**
 * One running ConcordKV node: opens the data directory (KV engine, Raft log, cluster id), builds
 * the Raft core, its driver and the peer transport, and serves `kvstore.KVStore` and `raft.Raft`
 * on one gRPC port (server/h2/server.ts: HTTP/2 directly on `Deno.listen`, not grpc-js's server).
 *
 * Data directory layout: `CLUSTER_ID` (server/cluster_id.ts), `kv/` (storage/ KVEngine, opened
 * with `wal: false`: the Raft log is the write-ahead log), `raft/` (raft/log_store.ts).
 *
 * Recovery rests on one invariant: **the Raft log is never compacted past the engine's durable
 * applied index.** The engine has no WAL of its own; after a crash it holds a prefix of the apply
 * batches (each carries the applied index, server/state_machine.ts), and the restart re-applies
 * the committed entries after that index from the Raft log. The paths that shorten the log keep
 * those entries until the engine made them durable:
 * - local snapshots (`#maybeSnapshot`, `initSnapshot` in server/raft_driver.ts) record the log
 *   snapshot at `applied` and compact the log only after `engine.flush()` resolved, which
 *   (`wal: false`) means every write up to `applied` is in level-0 tables and a synced manifest;
 * - an installed snapshot is recorded in the log before the engine holds it, but its data file
 *   stays in `snap/` until `engine.replaceAll` (durable when it resolves) finished, and a restart
 *   that finds the log's snapshot index above the engine's applied index installs it again
 *   (below in `startNode`);
 * - a graceful stop closes the engine, which flushes its memtables.
 *
 * @example
 * ```ts ignore
 * import { startNode } from "./node.ts";
 * const node = await startNode(opts);
 * await node.stop();
 * ```
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { RaftLogStore } from "../raft/log_store.ts";
import { RaftNode } from "../raft/node.ts";
import { type ConfChange, type Message, MessageType, newMessage, NONE } from "../raft/types.ts";
import { KVEngine } from "../storage/mod.ts";
import { deriveClusterId, ensureClusterId, readClusterId, writeClusterId } from "./cluster_id.ts";
import type { NodeOptions } from "./flags.ts";
import { Logger } from "./log.ts";
import {
  type AppendEntriesRequest,
  type AppendEntriesResponse,
  type InstallSnapshotResponse,
  kvstorePackage,
  MAX_MESSAGE_BYTES,
  type Member,
  type MemberChangeResponse,
  type PeerFrame,
  raftPackage,
  type RequestVoteRequest,
  type RequestVoteResponse,
  type SnapshotChunk,
  type StatusResponse,
} from "./proto.ts";
import { RaftDriver } from "./raft_driver.ts";
import {
  kvstoreHandlers,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  RequestCounts,
  RpcError,
  tolerantService,
} from "./service.ts";
import { readSnapshotFile, sendSnapshot, snapPath, SnapshotReceiver } from "./snapshot.ts";
import { StateMachine } from "./state_machine.ts";
import { H2Server, type Http1Response } from "./h2/server.ts";
import { counter, gauge, type Metric, renderMetrics } from "./metrics.ts";
import { CHANNEL_OPTIONS, Transport } from "./transport.ts";

/** The version a node reports in `Status`. */
export const NODE_VERSION = "0.1.0";

/** A node that failed to start, with a one-line reason for the user. */
export class StartError extends Error {
  override name = "StartError";
}

/** A started node. */
export interface RunningNode {
  readonly id: number;
  readonly port: number;
  readonly clusterId: string;
  /** Resolves when the node stopped on its own (a fatal error); the value is the exit code. */
  readonly done: Promise<number>;
  /** Graceful stop: hand over leadership, stop accepting, finish in-flight, fsync, close. */
  stop(): Promise<void>;
}

function _errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The hint a node's fatal or start-up error gets when the disk was full (ENOSPC), else "":
 * what to do about it: nothing is lost (the node stops before it acknowledges
 * what it could not write), and it restarts from its data once there is room.
 */
export function diskFullHint(e: unknown, dataDir: string): string {
  const text = e instanceof Error ? `${e.message} ${String((e as { cause?: unknown }).cause)}` : "";
  if (!/No space left on device|ENOSPC|os error 28/i.test(text)) return "";
  return ` (the disk holding ${dataDir} is full: free space there, then restart this node; ` +
    `it keeps every write it acknowledged and catches up from the others)`;
}

async function _checkDataDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    const probe = `${dir}/.probe-${Deno.pid}`;
    await Deno.writeTextFile(probe, "ok");
    await Deno.remove(probe);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new StartError(`no permission for data directory ${dir}: ${_errMsg(e)}`);
    }
    throw new StartError(
      `data directory ${dir} is not usable: ${_errMsg(e)}${diskFullHint(e, dir)}`,
    );
  }
}

async function _clusterFromJoin(
  join: string[],
  log: Logger,
): Promise<{ clusterId: string; members: Member[] }> {
  const Ctor = kvstorePackage().KVStore;
  for (let attempt = 0; attempt < 20; attempt++) {
    for (const addr of join) {
      const client = new Ctor(
        addr,
        grpc.credentials.createInsecure(),
        CHANNEL_OPTIONS,
      ) as unknown as
        & grpc.Client
        & { Status: (...a: unknown[]) => unknown };
      try {
        const res = await new Promise<StatusResponse>((resolve, reject) => {
          client.Status({}, { deadline: Date.now() + 2000 }, (err: unknown, r: StatusResponse) => {
            if (err) reject(err);
            else resolve(r);
          });
        });
        if (res.cluster_id) return { clusterId: res.cluster_id, members: res.members };
      } catch (e) {
        log.info(`join: ${addr} did not answer: ${_errMsg(e)}`);
      } finally {
        client.close();
      }
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new StartError(
    `could not reach any --join member (${join.join(",")}) to learn the cluster id`,
  );
}

function _memberId(n: unknown): number {
  const id = Number(n ?? 0);
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new RpcError(grpc.status.INVALID_ARGUMENT, `bad member id ${n}`);
  }
  return id;
}

/**
 * The KV engine's memtable size on node `id`: 3, 4 or 5 MiB by `id` (4 MiB on average).
 * Every replica applies the same writes, so with equal sizes all of them switch memtables and
 * write a level-0 table at the same moment (tens of milliseconds of main-thread work each): no
 * majority is left to commit meanwhile. Different sizes spread those stalls out, so at most one
 * node's is in the way at a time and the other two still form a quorum.
 */
export function memtableBytesFor(id: number): number {
  return (3 + (Math.abs(Math.trunc(id)) + 2) % 3) * 1024 * 1024;
}

/** Starts a node; throws {@linkcode StartError} with a one-line reason on failure. */
export async function startNode(opts: NodeOptions): Promise<RunningNode> {
  const ref: { driver?: RaftDriver } = {};
  const log = new Logger({ node: opts.id, level: opts.logLevel, format: opts.logFormat });
  // grpc-js prints its own error lines (e.g. a failed bind) unless asked for: ours say it once.
  let verbosity: string | undefined;
  try {
    verbosity = Deno.env.get("GRPC_VERBOSITY");
  } catch {
    verbosity = undefined;
  }
  if (verbosity === undefined) grpc.setLogVerbosity(grpc.logVerbosity.NONE);
  await _checkDataDir(opts.dataDir);

  // Addresses known from the command line (and, when joining, from the cluster).
  const known = new Map(opts.peers);
  // Cluster identity.
  let clusterId: string;
  const joining = opts.join.length > 0;
  if (joining) {
    const have = await readClusterId(opts.dataDir);
    const joined = await _clusterFromJoin(opts.join, log);
    const theirs = joined.clusterId;
    for (const m of joined.members) {
      if (m.address !== "" && !known.has(Number(m.id))) known.set(Number(m.id), m.address);
    }
    if (have !== undefined && have !== theirs) {
      throw new StartError(
        `data directory ${opts.dataDir} belongs to cluster ${have}, but --join reaches cluster ${theirs}`,
      );
    }
    if (have === undefined) await writeClusterId(opts.dataDir, theirs);
    clusterId = theirs;
  } else {
    const bootstrap = await deriveClusterId(opts.peers, opts.clusterToken);
    const identity = await ensureClusterId(opts.dataDir, bootstrap);
    clusterId = identity.id;
    if (!identity.created && identity.id !== bootstrap) {
      // Like etcd: bootstrap flags only matter on first start; membership lives in the log.
      log.info(
        `data directory ${opts.dataDir} belongs to cluster ${identity.id}; --peers and ` +
          `--initial-cluster-token are bootstrap-only and are ignored on restart`,
      );
    }
  }

  // Storage.
  let engine: KVEngine;
  try {
    engine = await KVEngine.open(`${opts.dataDir}/kv`, {
      // No engine WAL: the Raft log is the write-ahead log (see the module header for the
      // invariant this relies on). A data directory from a run with the WAL is migrated on open.
      wal: false,
      sync: "none",
      memtableBytes: memtableBytesFor(opts.id),
      // Under load a memtable fills every second or two; a worker started per flush stalled the
      // event loop 20–90 ms each time (the p99 of puts at 256 clients, measured 2026-12-05).
      keepWorker: true,
      maxKeyBytes: MAX_KEY_BYTES + 16,
      maxValueBytes: MAX_VALUE_BYTES + 64 * 1024,
      log: (m) => log.warn(`storage: ${m}`),
    });
  } catch (e) {
    throw new StartError(`cannot open the KV engine in ${opts.dataDir}/kv: ${_errMsg(e)}`);
  }
  let store: RaftLogStore;
  const voters = [...opts.peers.keys()].sort((a, b) => a - b);
  try {
    store = await RaftLogStore.open(`${opts.dataDir}/raft`);
  } catch (e) {
    await engine.close().catch(() => {});
    throw new StartError(`cannot open the Raft log in ${opts.dataDir}/raft: ${_errMsg(e)}`);
  }
  // `--peers` configures the Raft group only on a fresh log (the bootstrap entries then record
  // it). Afterwards the configuration is the log's own (its snapshot plus the conf changes after
  // it), whatever `--peers` says now: a restart with another list must not invent voters.
  const fresh = store.lastIndex() === 0 && store.snapshot().meta.index === 0 &&
    store.initialState().hardState.term === 0;
  const bootVoters = fresh && !joining ? voters : [];
  const sm = StateMachine.open(engine, { log: (m) => log.error(m) });
  const snapDir = `${opts.dataDir}/snap`;
  const logSnap = store.snapshot().meta.index;
  if (logSnap > sm.applied) {
    // A snapshot install was interrupted after the log recorded it: finish it.
    const file = snapPath(snapDir, logSnap);
    try {
      await engine.replaceAll(readSnapshotFile(file));
      sm.reload();
      await Deno.remove(file);
    } catch (e) {
      throw new StartError(
        `the Raft log is at snapshot ${logSnap} but its data ${file} is unusable: ${_errMsg(e)}`,
      );
    }
    log.info(`finished installing snapshot ${logSnap}`);
  }
  if (sm.members.length === 0 && !joining) {
    await sm.setMembers(voters.map((id) => ({ id, address: opts.peers.get(id)!, learner: false })));
  }

  const tickMs = opts.heartbeatMs;
  const node = new RaftNode({
    id: opts.id,
    storage: store,
    electionTick: Math.max(2, Math.round(opts.electionTimeoutMs / tickMs)),
    heartbeatTick: 1,
    random: Math.random,
    preVote: true,
    checkQuorum: true,
    readOnly: opts.readMode === "lease" ? "lease" : "safe", // --read-mode (raft driver helper)
    maxSizePerMsg: 8 * 1024 * 1024,
    maxInflightMsgs: 256,
    applied: Math.min(sm.applied, store.initialState().hardState.commit),
    peers: bootVoters,
  });
  log.setState(() => ({ role: node.role, term: node.term }));

  // Addresses: --peers first (they may point at proxies), then the member table.
  const addressOf = (id: number): string | undefined => {
    const a = known.get(id) ?? sm.members.find((m) => m.id === id)?.address;
    return a === "" ? undefined : a;
  };
  const isMember = (id: number): boolean => {
    const cs = node.confState();
    if (cs.voters.length === 0 && cs.learners.length === 0) return true; // joining: not yet known
    return cs.voters.includes(id) || cs.learners.includes(id);
  };
  const initialPeers = new Map<number, string>();
  for (const m of sm.members) if (m.address !== "") initialPeers.set(m.id, m.address);
  for (const [id, a] of known) initialPeers.set(id, a);

  const transport = new Transport({
    id: opts.id,
    clusterId,
    peers: initialPeers,
    isMember,
    onMessages: (msgs) => ref.driver?.receive(msgs),
    onUnreachable: (id) => ref.driver?.reportUnreachable(id),
    log,
  });

  const confWaiters = new Set<{ type: ConfChange["type"]; nodeId: number; resolve: () => void }>();
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => resolveDone = r);
  const driver = new RaftDriver({
    id: opts.id,
    node,
    store,
    sm,
    log,
    send: (msgs) => transport.send(msgs),
    tickMs,
    epoch: (Math.random() * 0xffffffff) >>> 0,
    onConfChange: (cc) => {
      for (const w of confWaiters) {
        if (w.type === cc.type && w.nodeId === cc.nodeId) {
          confWaiters.delete(w);
          w.resolve();
        }
      }
      if (cc.type === "removeNode") {
        if (cc.nodeId !== opts.id) transport.removePeer(cc.nodeId);
      } else {
        const a = addressOf(cc.nodeId);
        if (a !== undefined) transport.addPeer(cc.nodeId, a);
      }
    },
    snapshots: {
      engine,
      dir: snapDir,
      entries: opts.snapshotEntries,
      keepEntries: Math.max(1, Math.min(5000, Math.floor(opts.snapshotEntries / 2))),
      send: (msg, view) => sendSnapshot(transport, msg, view),
      onInstalled: () => {
        for (const m of sm.members) {
          if (m.id !== opts.id) transport.addPeer(m.id, addressOf(m.id) ?? m.address);
        }
      },
    },
    onFatal: (e) => {
      log.error(`fatal: ${_errMsg(e)}; stopping${diskFullHint(e, opts.dataDir)}`);
      resolveDone(1);
    },
  });
  ref.driver = driver;
  await driver.initSnapshot();
  // Leftovers of interrupted or refused snapshot transfers.
  try {
    for (const e of Deno.readDirSync(snapDir)) {
      if (e.name.endsWith(".tmp") || e.name.endsWith(".snap")) {
        Deno.removeSync(`${snapDir}/${e.name}`);
      }
    }
  } catch {
    // no snapshot directory yet
  }
  const receiver = new SnapshotReceiver({
    dir: snapDir,
    transport,
    log,
    deliver: (m) => driver.receive([m]),
    term: () => node.term,
  });

  /** Bytes of this node's data: the engine's tables and memtables (Status, the space quota). */
  const dbBytes = (): number => {
    const st = engine.stats();
    return st.levels.reduce((n, lv) => n + lv.bytes, 0) + st.memtableBytes;
  };
  const status = (): StatusResponse => {
    const st = node.status();
    return {
      node_id: opts.id,
      role: st.role,
      term: st.term,
      leader_id: st.leader,
      commit_index: st.commit,
      applied_index: sm.applied,
      first_index: store.firstIndex(),
      last_index: store.lastIndex(),
      members: members(),
      cluster_id: clusterId,
      version: NODE_VERSION,
      snapshot_index: store.snapshot().meta.index,
      db_bytes: dbBytes(),
      quota_bytes: opts.quotaBytes,
    };
  };
  const members = (): Member[] => {
    const st = node.status();
    const out: Member[] = [];
    const add = (id: number, kind: string) => {
      const pr = st.progress.get(id);
      const role = id === st.leader ? "leader" : kind === "learner" ? "learner" : "follower";
      out.push({
        id,
        address: addressOf(id) ?? "",
        kind,
        role: id === opts.id ? st.role : role,
        match_index: pr?.match ?? (id === opts.id ? store.lastIndex() : 0),
        healthy: id === opts.id ? true : pr !== undefined ? pr.recentActive : transport.isUp(id),
      });
    };
    for (const v of st.confState.voters) add(v, "voter");
    for (const l of st.confState.learners) add(l, "learner");
    out.sort((a, b) => a.id - b.id);
    return out;
  };

  /** Proposes a membership change on the leader and waits until it is applied here. */
  const changeMembers = async (cc: ConfChange): Promise<MemberChangeResponse> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (node.role !== "leader") {
        const l = driver.leader;
        throw new RpcError(
          grpc.status.UNAVAILABLE,
          l === NONE ? "no leader" : `not the leader; node ${l} is`,
          l === NONE ? undefined : addressOf(l),
        );
      }
      const err = node.proposeConfChange(cc);
      if (err === undefined) break;
      if (err.kind !== "ConfChangePending" && err.kind !== "TransferInProgress") {
        throw new RpcError(
          grpc.status.FAILED_PRECONDITION,
          `membership change refused: ${err.kind}`,
        );
      }
      if (Date.now() > deadline) {
        throw new RpcError(
          grpc.status.FAILED_PRECONDITION,
          "another membership change is in progress",
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    driver.kick();
    await new Promise<void>((resolve, reject) => {
      const w = {
        type: cc.type,
        nodeId: cc.nodeId,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      };
      const t = setTimeout(() => {
        confWaiters.delete(w);
        reject(new RpcError(grpc.status.UNAVAILABLE, "membership change not applied in time"));
      }, Math.max(1000, deadline - Date.now()));
      confWaiters.add(w);
    });
    return { members: members(), index: sm.applied };
  };

  // Space quota, checked four times a second (not per write).
  const quota = new SpaceQuota(opts.quotaBytes, dbBytes, log);

  // GET /metrics (Prometheus text) and GET /health, plain HTTP/1.1 on the client port.
  const requests = new RequestCounts();
  const answered = (): Metric => {
    const values: Metric["values"] = [];
    for (const [method, counts] of requests.entries()) {
      counts.forEach((n, code) => {
        if (n > 0) {
          values.push({ labels: { method, code: grpc.status[code] ?? String(code) }, value: n });
        }
      });
    }
    return {
      name: "concordkv_grpc_requests_total",
      help: "Client API calls answered, by method and gRPC status.",
      type: "counter",
      values,
    };
  };
  const metrics = (): Metric[] => {
    const st = node.status();
    const es = engine.stats();
    const sync = store.syncStats;
    const mem = Deno.memoryUsage();
    const levels = (f: (lv: { tables: number; bytes: number }) => number) =>
      es.levels.map((lv, i) => ({ labels: { level: String(i) }, value: f(lv) }));
    return [
      gauge("concordkv_raft_term", "Current Raft term.", st.term),
      gauge(
        "concordkv_raft_is_leader",
        "1 if this node is the leader.",
        st.role === "leader" ? 1 : 0,
      ),
      gauge(
        "concordkv_raft_has_leader",
        "1 if this node knows a leader.",
        st.leader !== NONE ? 1 : 0,
      ),
      gauge("concordkv_raft_commit_index", "Highest log index known committed.", st.commit),
      gauge("concordkv_raft_applied_index", "Highest log index applied.", sm.applied),
      gauge(
        "concordkv_raft_log_first_index",
        "First index kept in the Raft log.",
        store.firstIndex(),
      ),
      gauge("concordkv_raft_log_last_index", "Last index in the Raft log.", store.lastIndex()),
      counter("concordkv_raft_log_fsyncs_total", "Raft log writes fsynced.", sync.syncs),
      counter(
        "concordkv_raft_log_inline_fsyncs_total",
        "Raft log fsyncs made on the event-loop thread.",
        sync.inlineSyncs,
      ),
      gauge("concordkv_db_bytes", "Bytes of this node's data (tables and memtables).", dbBytes()),
      gauge("concordkv_quota_bytes", "Space quota (--quota-bytes; 0: none).", opts.quotaBytes),
      gauge(
        "concordkv_quota_exceeded",
        "1 while puts are refused for space.",
        quota.refusal ? 1 : 0,
      ),
      {
        name: "concordkv_engine_level_tables",
        help: "SSTables per LSM level.",
        type: "gauge",
        values: levels((lv) => lv.tables),
      },
      {
        name: "concordkv_engine_level_bytes",
        help: "SSTable bytes per LSM level.",
        type: "gauge",
        values: levels((lv) => lv.bytes),
      },
      gauge("concordkv_engine_memtable_bytes", "Bytes in memtables.", es.memtableBytes),
      counter("concordkv_engine_flushes_total", "Memtable flushes.", es.workerFlushes),
      counter("concordkv_engine_compactions_total", "Compactions.", es.workerCompactions),
      counter(
        "concordkv_engine_defragmentations_total",
        "Full compactions asked for (Defragment, kv defrag) and completed.",
        es.manualCompactions,
      ),
      counter("concordkv_engine_block_cache_hits_total", "Block cache hits.", es.cacheHits),
      counter("concordkv_engine_block_cache_misses_total", "Block cache misses.", es.cacheMisses),
      gauge("concordkv_exactly_once_clients", "Clients in the exactly-once table.", sm.dedupSize),
      gauge("process_resident_memory_bytes", "Resident memory of the node process.", mem.rss),
      gauge("concordkv_js_heap_used_bytes", "V8 heap in use.", mem.heapUsed),
      answered(),
    ];
  };
  const http1 = (path: string): Http1Response | undefined => {
    if (path === "/metrics") {
      return {
        status: 200,
        contentType: "text/plain; version=0.0.4; charset=utf-8",
        body: renderMetrics(metrics()),
      };
    }
    if (path === "/health") {
      const ok = driver.leader !== NONE && !driver.failed;
      const reason = driver.failed ? "failed" : "no leader";
      return {
        status: ok ? 200 : 503,
        contentType: "application/json",
        body: ok ? `{"health":"true"}\n` : `{"health":"false","reason":"${reason}"}\n`,
      };
    }
    return undefined;
  };

  // gRPC server (server/h2: HTTP/2 on Deno.listen, frames coalesced into one write per turn).
  const server = new H2Server({
    maxReceiveMessageBytes: MAX_MESSAGE_BYTES,
    maxSendMessageBytes: MAX_MESSAGE_BYTES,
    http1,
  });
  server.addService(
    tolerantService(kvstorePackage().KVStore.service),
    kvstoreHandlers({
      id: opts.id,
      driver,
      sm,
      unsafeLocalReads: opts.unsafeLocalReads,
      maxDeleteRangeKeys: opts.maxDeleteRangeKeys,
      addressOf,
      spaceRefusal: () => quota.refusal,
      requests,
      backupView: async (timeoutMs) => {
        await driver.readBarrier(timeoutMs);
        // No await between the view and the index: both are as of the same applied entry.
        const view = engine.snapshot();
        return { index: sm.applied, view };
      },
      status,
      members,
      memberAdd: (req) => {
        const id = _memberId(req.id);
        const address = String(req.address ?? "").trim();
        if (!/^[^\s,=]+:\d{1,5}$/.test(address)) {
          throw new RpcError(
            grpc.status.INVALID_ARGUMENT,
            `bad member address "${address}" (host:port)`,
          );
        }
        const cs = node.confState();
        if (cs.voters.includes(id) || cs.learners.includes(id)) {
          throw new RpcError(grpc.status.ALREADY_EXISTS, `member ${id} already exists`);
        }
        return changeMembers({
          type: req.learner ? "addLearner" : "addVoter",
          nodeId: id,
          context: new TextEncoder().encode(address),
        });
      },
      memberPromote: (req) => {
        const id = _memberId(req.id);
        const cs = node.confState();
        if (cs.voters.includes(id)) {
          throw new RpcError(grpc.status.FAILED_PRECONDITION, `member ${id} is already a voter`);
        }
        if (!cs.learners.includes(id)) throw new RpcError(grpc.status.NOT_FOUND, `no member ${id}`);
        return changeMembers({ type: "addVoter", nodeId: id, context: new Uint8Array(0) });
      },
      memberRemove: (req) => {
        const id = _memberId(req.id);
        const cs = node.confState();
        if (!cs.voters.includes(id) && !cs.learners.includes(id)) {
          throw new RpcError(grpc.status.NOT_FOUND, `no member ${id}`);
        }
        if (cs.voters.length === 1 && cs.voters[0] === id) {
          throw new RpcError(grpc.status.FAILED_PRECONDITION, `cannot remove the last voter`);
        }
        return changeMembers({ type: "removeNode", nodeId: id, context: new Uint8Array(0) });
      },
      transferLeader: async (req) => {
        const to = Number(req.id);
        driver.transferLeader(to);
        const until = Date.now() + 3000;
        while (Date.now() < until && driver.leader !== to) {
          await new Promise((r) => setTimeout(r, 20));
        }
        return { leader_id: driver.leader };
      },
      defragment: async () => {
        const before = dbBytes();
        const t0 = performance.now();
        try {
          await engine.compactInBackground();
        } catch (e) {
          throw new RpcError(grpc.status.UNAVAILABLE, `defragment failed: ${e}`);
        }
        quota.check(); // writes resume at once if the compaction brought the data under the quota
        const after = dbBytes();
        log.info(
          `defragmented: ${_size(before)} → ${_size(after)} in ${
            Math.round(performance.now() - t0)
          } ms`,
        );
        return { member_id: opts.id, db_bytes_before: before, db_bytes_after: after };
      },
    }),
  );
  server.addService(raftPackage().Raft.service, peerHandlers(transport, driver, node, receiver));
  const bindAddr = opts.host.includes(":")
    ? `[${opts.host}]:${opts.port}`
    : `${opts.host}:${opts.port}`;
  try {
    await server.listen({ hostname: opts.host, port: opts.port });
  } catch (e) {
    quota.stop();
    transport.close();
    await store.close().catch(() => {});
    await engine.close().catch(() => {});
    const m = _errMsg(e);
    if (/EADDRINUSE|in use/i.test(m)) {
      throw new StartError(`port ${opts.port} on ${opts.host} is already in use`);
    }
    throw new StartError(`cannot listen on ${bindAddr}: ${m}`);
  }

  driver.start();
  log.info(
    `started on ${bindAddr}, cluster ${clusterId}, applied ${sm.applied}, log ` +
      `[${store.firstIndex()}, ${store.lastIndex()}], members ${node.confState().voters.join(",")}`,
  );

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    if (stopping !== undefined) return stopping;
    stopping = (async () => {
      // 1. Leader: hand leadership to the most caught-up voter, so no election timeout gap.
      if (node.role === "leader" && !driver.failed) {
        const st = node.status();
        let best = NONE;
        let bestMatch = -1;
        for (const v of st.confState.voters) {
          if (v === opts.id) continue;
          const pr = st.progress.get(v);
          if (pr !== undefined && pr.recentActive && pr.match > bestMatch) {
            best = v;
            bestMatch = pr.match;
          }
        }
        if (best !== NONE) {
          log.info(`shutting down: transferring leadership to ${best}`);
          driver.transferLeader(best);
          const until = Date.now() + Math.min(2000, opts.electionTimeoutMs * 2);
          while (Date.now() < until && node.role === "leader") {
            await new Promise((r) => setTimeout(r, 10));
          }
        }
      }
      // 2. Stop accepting; give in-flight calls a moment to finish.
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1500);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
        // Peer streams never end on their own: close them so tryShutdown can finish.
        setTimeout(() => transport.close(), 300);
      });
      transport.close();
      quota.stop();
      // 3. Stop the raft loop, fsync and close files.
      await driver.stop();
      try {
        await store.close();
      } catch (e) {
        log.error(`closing the raft log: ${_errMsg(e)}`);
      }
      try {
        await engine.close();
      } catch (e) {
        log.error(`closing the KV engine: ${_errMsg(e)}`);
      }
      log.info("stopped");
    })();
    return stopping;
  };

  return { id: opts.id, port: opts.port, clusterId, done, stop };
}

/**
 * A node's space quota (`--quota-bytes`, like etcd's `--quota-backend-bytes`): `used()` is
 * sampled every {@linkcode SpaceQuota.INTERVAL_MS}; over `limit`, `refusal` says why writes that
 * add data are refused. Not replicated state: each node checks its own data, which every replica
 * holds alike, and a write let through near the limit is not a fault.
 */
export class SpaceQuota {
  static readonly INTERVAL_MS = 250;
  #refusal: string | undefined;
  readonly #timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly limit: number,
    readonly used: () => number,
    readonly log: Pick<Logger, "warn" | "info">,
  ) {
    if (limit <= 0) return;
    this.check();
    this.#timer = setInterval(() => this.check(), SpaceQuota.INTERVAL_MS);
  }

  /** Why puts are refused now, or undefined. */
  get refusal(): string | undefined {
    return this.#refusal;
  }

  /** Samples the space used now. */
  check(): void {
    const used = this.used();
    if (used > this.limit) {
      const first = this.#refusal === undefined;
      this.#refusal = `space quota exceeded: this node's data takes ${_mib(used)} of its ` +
        `${_mib(this.limit)} quota (--quota-bytes); writes that add data are refused until ` +
        `deleted keys are compacted away (delete keys, then \`kv defrag\`), or the nodes ` +
        `restart with a larger quota`;
      if (first) this.log.warn(this.#refusal);
    } else if (this.#refusal !== undefined) {
      this.#refusal = undefined;
      this.log.info(
        `space back under the quota (${_mib(used)} of ${_mib(this.limit)}): writes resume`,
      );
    }
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}

function _mib(n: number): string {
  return `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

/** A byte count in KiB under a MiB, else in MiB. */
function _size(n: number): string {
  return n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : _mib(n);
}

/** The `raft.Raft` service: the stream (hot path) plus the typed unary RPCs. */
function peerHandlers(
  transport: Transport,
  driver: RaftDriver,
  node: RaftNode,
  receiver: SnapshotReceiver,
): grpc.UntypedServiceImplementation {
  const reject = (why: string): grpc.ServiceError =>
    Object.assign(new Error(why), {
      code: grpc.status.PERMISSION_DENIED,
      details: why,
      metadata: new grpc.Metadata(),
    }) as grpc.ServiceError;
  const base = (type: Message["type"], from: number, term: number): Message =>
    newMessage(type, { from, to: node.id, term });
  return {
    Stream: (call: grpc.ServerDuplexStream<PeerFrame, PeerFrame>) => transport.handleStream(call),
    // The typed RPCs step the request into the core, wait until its effects are persisted and
    // answer from the resulting state (the core's own reply also travels on the stream).
    RequestVote: (
      call: grpc.ServerUnaryCall<RequestVoteRequest, RequestVoteResponse>,
      cb: grpc.sendUnaryData<RequestVoteResponse>,
    ) => {
      const r = call.request;
      const why = transport.checkHeader(r.header);
      if (why !== undefined) return cb(reject(why));
      const m = base(r.pre_vote ? MessageType.PreVote : MessageType.Vote, r.header!.from, r.term);
      m.index = r.last_log_index;
      m.logTerm = r.last_log_term;
      driver.receive([m]);
      driver.idle().then(() => {
        const st = node.status();
        cb(null, {
          term: st.term,
          vote_granted: !r.pre_vote && st.term === r.term && st.vote === r.candidate_id,
        });
      });
    },
    AppendEntries: (
      call: grpc.ServerUnaryCall<AppendEntriesRequest, AppendEntriesResponse>,
      cb: grpc.sendUnaryData<AppendEntriesResponse>,
    ) => {
      const r = call.request;
      const why = transport.checkHeader(r.header);
      if (why !== undefined) return cb(reject(why));
      const m = base(MessageType.App, r.header!.from, r.term);
      m.index = r.prev_log_index;
      m.logTerm = r.prev_log_term;
      m.commit = r.leader_commit;
      m.entries = r.entries.map((e) => ({
        index: e.index,
        term: e.term,
        type: e.type === 1 ? 1 : 0,
        data: e.data,
      }));
      driver.receive([m]);
      driver.idle().then(() => {
        const st = node.status();
        const last = r.prev_log_index + r.entries.length;
        const ok = st.term === r.term &&
          node.termAt(last) === (r.entries.at(-1)?.term ?? r.prev_log_term);
        cb(null, {
          term: st.term,
          success: ok,
          match_index: ok ? last : 0,
          conflict_term: 0,
          conflict_index: 0,
        });
      });
    },
    InstallSnapshot: (
      call: grpc.ServerReadableStream<SnapshotChunk, InstallSnapshotResponse>,
      cb: grpc.sendUnaryData<InstallSnapshotResponse>,
    ) => receiver.handle(call, cb),
  };
}
