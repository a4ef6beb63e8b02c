/**
 * A cluster of real node processes whose peer links all go through a {@linkcode ProxyMesh}.
 *
 * Every node gets the same `--peers` list, naming each node at its proxy (so all derive the same
 * cluster id); the proxies tell the nodes' connections apart with `ss` (see `proxy.ts`). Nodes
 * are the harness's {@linkcode NodeProcess}es; this class adds SIGSTOP/SIGCONT bookkeeping,
 * leader discovery over a single-attempt client, and hint resolution.
 *
 * @example
 * ```ts
 * import { ChaosCluster } from "./cluster.ts";
 * const c = await ChaosCluster.start({ nodes: 3 });
 * try {
 *   const leader = await c.waitForLeader(10_000);
 * } finally {
 *   await c.stop();
 * }
 * ```
 *
 * @module
 */
import { freePorts, NodeProcess } from "../harness.ts";
import { ProxyMesh, ssSourceIdentifier } from "./proxy.ts";
import { RawClient } from "./raw_client.ts";

/** Options of {@linkcode ChaosCluster.start}. */
export interface ChaosClusterOptions {
  nodes?: number;
  /** Flags for every node (e.g. `["--unsafe-local-reads"]`). */
  extraArgs?: string[];
  electionTimeoutMs?: number;
  heartbeatMs?: number;
  /** Parent of the data directories; default a new temporary directory (removed by stop()). */
  dataDirRoot?: string;
  /** Keep the data directories after stop(). */
  keepData?: boolean;
}

/** Nodes, proxies and a raw client. */
export class ChaosCluster {
  readonly nodes: Map<number, NodeProcess>;
  readonly mesh: ProxyMesh;
  readonly client: RawClient;
  readonly dataDirRoot: string;
  /** Nodes currently stopped with SIGSTOP. */
  readonly paused: Set<number> = new Set();
  #removeDir: boolean;
  #stopped = false;

  private constructor(
    nodes: Map<number, NodeProcess>,
    mesh: ProxyMesh,
    root: string,
    removeDir: boolean,
  ) {
    this.nodes = nodes;
    this.mesh = mesh;
    this.dataDirRoot = root;
    this.#removeDir = removeDir;
    this.client = new RawClient(new Map([...nodes].map(([id, n]) => [id, n.address])));
  }

  /** Starts the proxies and the nodes (not yet elected: see {@linkcode waitForLeader}). */
  static async start(opts: ChaosClusterOptions = {}): Promise<ChaosCluster> {
    const n = opts.nodes ?? 3;
    const ports = await freePorts(n);
    const removeDir = opts.dataDirRoot === undefined && !opts.keepData;
    const root = opts.dataDirRoot ?? await Deno.makeTempDir({ prefix: "concordkv-chaos-" });
    await Deno.mkdir(root, { recursive: true });
    const real = new Map(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`]));
    const nodes = new Map<number, NodeProcess>();
    const pids = () => new Map([...nodes].map(([id, n]) => [id, n.running ? n.pid : undefined]));
    const mesh = ProxyMesh.start(real, { identify: ssSourceIdentifier(pids) });
    const extra = [...(opts.extraArgs ?? [])];
    if (opts.electionTimeoutMs !== undefined) {
      extra.push("--election-timeout-ms", String(opts.electionTimeoutMs));
    }
    if (opts.heartbeatMs !== undefined) extra.push("--heartbeat-ms", String(opts.heartbeatMs));
    for (let id = 1; id <= n; id++) {
      nodes.set(
        id,
        new NodeProcess({
          id,
          port: ports[id - 1]!,
          peers: mesh.peersArg(),
          dataDir: `${root}/node-${id}`,
          extraArgs: extra,
        }),
      );
    }
    const cluster = new ChaosCluster(nodes, mesh, root, removeDir);
    try {
      for (const node of nodes.values()) node.start();
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** Member ids in order. */
  get ids(): number[] {
    return [...this.nodes.keys()];
  }

  /** The node with id `id`. */
  node(id: number): NodeProcess {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /**
   * Maps a leader hint to a member id: an id, a node's address, or a proxy address (a node names
   * its peers by the proxy addresses in its `--peers`).
   */
  resolveHint(hint: string): number | undefined {
    if (/^\d+$/.test(hint)) {
      const id = Number(hint);
      return this.nodes.has(id) ? id : undefined;
    }
    for (const [id, n] of this.nodes) if (n.address === hint) return id;
    for (const j of this.ids) if (this.mesh.proxy(j).address === hint) return j;
    return undefined;
  }

  /**
   * The current leader: a running, unpaused node that says it leads and that a majority of the
   * members (itself included) acknowledge in the same term; undefined if there is none now.
   */
  async leader(timeoutMs = 500): Promise<number | undefined> {
    const live = this.ids.filter((id) => this.node(id).running && !this.paused.has(id));
    const statuses = (await Promise.all(live.map((id) => this.client.status(id, timeoutMs))))
      .filter((s) => s !== undefined);
    const leaders = statuses.filter((s) => s.role === "leader").sort((a, b) => b.term - a.term);
    for (const l of leaders) {
      const acks = statuses.filter((s) =>
        s.node_id === l.node_id || (s.leader_id === l.node_id && s.term === l.term)
      ).length;
      if (acks > this.nodes.size / 2) {
        return Number(l.node_id);
      }
    }
    return undefined;
  }

  /** Polls {@linkcode leader} until there is one; throws after `timeoutMs`. */
  async waitForLeader(timeoutMs: number, signal?: AbortSignal): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const l = await this.leader();
      if (l !== undefined) return l;
      if (performance.now() > deadline || signal?.aborted) {
        throw new Error(`no leader within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Throws unless the proxies have told apart connections from nodes (at least one connection
   * from a node identified): without it, partitions would cut nothing.
   */
  checkProxiesIdentifyNodes(): void {
    let identified = 0, anonymous = 0;
    for (const id of this.ids) {
      for (const [source, count] of this.mesh.proxy(id).accepted) {
        if (source === -1) anonymous += count;
        else identified += count;
      }
    }
    if (identified === 0) {
      throw new Error(
        `the peer-link proxies could not tell which node opened a connection (${anonymous} ` +
          "connections, none identified): partitions need `ss` (iproute2) on PATH",
      );
    }
  }

  /** SIGSTOPs node `id`. */
  pause(id: number): void {
    this.node(id).kill("SIGSTOP");
    this.paused.add(id);
  }

  /** SIGCONTs node `id`. */
  resume(id: number): void {
    this.node(id).kill("SIGCONT");
    this.paused.delete(id);
  }

  /** The last `lines` log lines of every node, labelled. */
  dumpLogs(lines = 40): string {
    return this.ids.map((id) => {
      const n = this.node(id);
      return `===== node ${id} (${n.address}) log ${n.logPath}\n${n.tail(lines)}`;
    }).join("\n");
  }

  /** Resumes paused nodes, stops every node and proxy, closes the client. Idempotent. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const id of [...this.paused]) this.resume(id);
    this.client.close();
    await Promise.allSettled([...this.nodes.values()].map((n) => n.stop(graceMs)));
    await this.mesh.close();
    if (this.#removeDir) await Deno.remove(this.dataDirRoot, { recursive: true }).catch(() => {});
  }
}
