/**
 * A fault-injecting TCP proxy for peer links, used by the chaos nemesis to partition a cluster.
 *
 * Every node j gets one proxy listener P_j forwarding to its real address, and the `--peers` list
 * every node is started with names each node j at P_j (one list for all nodes, so all nodes
 * derive the same cluster id and replicate the same member addresses). The proxy tells which node
 * opened a connection (see {@linkcode ssSourceIdentifier}: the owner of the connection's source
 * port), so it can treat each directed link i→j separately:
 *
 * - node i's connections to j (i's RPCs to j and j's answers to them) form link i→j;
 * - cutting link i→j stops i from reaching j (a one-way partition at the RPC level); cutting
 *   both directions separates i and j. Connections from anything that is not a node (a client
 *   following a leader hint) always pass.
 *
 * A cut link:
 * - destroys every connection it carries (gRPC keeps long-lived HTTP/2 connections, so cutting
 *   only new connections would change nothing);
 * - black-holes new connections (`"blackhole"`, the default: accepted, bytes read and discarded,
 *   nothing forwarded — like packets dropped by a firewall, the dialler sees silence and times
 *   out) or resets them (`"reset"`: closed at once, the dialler sees a connection error).
 * Healing lets new connections through and closes the black-holed ones, so diallers reconnect.
 *
 * {@linkcode ProxyMesh} offers the partitions a nemesis wants: groups (majority/minority, isolate
 * a node), a bridge, one-way cuts, heal.
 *
 * @example
 * ```ts
 * import { ProxyMesh } from "./proxy.ts";
 * const mesh = ProxyMesh.start(new Map([[1, "127.0.0.1:7001"], [2, "127.0.0.1:7002"]]), {
 *   identify: () => Promise.resolve(undefined),
 * });
 * const peers = mesh.peersArg(); // "1=127.0.0.1:<proxy of 1>,2=127.0.0.1:<proxy of 2>"
 * mesh.partition([[1], [2]]);
 * mesh.healAll();
 * await mesh.close();
 * ```
 *
 * @module
 */

/** How a cut link treats new connections. */
export type DropStyle = "blackhole" | "reset";

/**
 * Tells which node opened a connection, from the connection's source (remote) port and the
 * proxy's port; undefined for "not a node".
 */
export type SourceIdentifier = (
  sourcePort: number,
  proxyPort: number,
) => Promise<number | undefined>;

interface _Pair {
  source: number | undefined;
  client: Deno.TcpConn;
  upstream: Deno.TcpConn | undefined;
}

function _close(c: Deno.Conn | undefined): void {
  if (c === undefined) return;
  try {
    c.close();
  } catch {
    // Already closed.
  }
}

/** Options of {@linkcode NodeProxy.start}. */
export interface NodeProxyOptions {
  /** "host:port" to forward to. */
  target: string;
  identify: SourceIdentifier;
  dropStyle?: DropStyle;
}

/** The proxy in front of one node: a loopback listener forwarding to it, cut per source. */
export class NodeProxy {
  readonly target: string;
  readonly port: number;
  dropStyle: DropStyle;
  #identify: SourceIdentifier;
  #listener: Deno.TcpListener;
  #cutFrom = new Set<number>();
  #pairs = new Set<_Pair>();
  #holes = new Map<Deno.TcpConn, number | undefined>();
  #closed = false;
  #accepting: Promise<void>;
  /** Connections accepted, per source (`-1`: not a node). */
  readonly accepted = new Map<number, number>();

  private constructor(listener: Deno.TcpListener, opts: NodeProxyOptions) {
    this.#listener = listener;
    this.target = opts.target;
    this.#identify = opts.identify;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.dropStyle = opts.dropStyle ?? "blackhole";
    this.#accepting = this.#acceptLoop();
  }

  /** Starts listening on a free port of 127.0.0.1. */
  static start(opts: NodeProxyOptions): NodeProxy {
    return new NodeProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), opts);
  }

  /** "127.0.0.1:port" of the listener. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Whether connections from node `from` are cut. */
  isCut(from: number): boolean {
    return this.#cutFrom.has(from);
  }

  /** Connections currently forwarded from `from` (all sources when undefined). */
  activeConnections(from?: number): number {
    return [...this.#pairs].filter((p) => from === undefined || p.source === from).length;
  }

  /** Cuts node `from`'s link to this node: destroys its connections, drops new ones. */
  cut(from: number): void {
    this.#cutFrom.add(from);
    for (const p of this.#pairs) {
      if (p.source !== from) continue;
      this.#pairs.delete(p);
      _close(p.client);
      _close(p.upstream);
    }
  }

  /** Heals node `from`'s link: new connections pass; its black-holed ones are closed. */
  heal(from: number): void {
    this.#cutFrom.delete(from);
    for (const [c, source] of this.#holes) {
      if (source !== from) continue;
      this.#holes.delete(c);
      _close(c);
    }
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const p of this.#pairs) {
      _close(p.client);
      _close(p.upstream);
    }
    this.#pairs.clear();
    for (const c of this.#holes.keys()) _close(c);
    this.#holes.clear();
    await this.#accepting;
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // Listener closed.
      }
      if (this.#closed) {
        _close(conn);
        continue;
      }
      void this.#handle(conn);
    }
  }

  async #handle(conn: Deno.TcpConn): Promise<void> {
    try {
      conn.setNoDelay(true);
    } catch {
      // Not fatal.
    }
    let source: number | undefined;
    try {
      source = await this.#identify((conn.remoteAddr as Deno.NetAddr).port, this.port);
    } catch {
      source = undefined;
    }
    const k = source ?? -1;
    this.accepted.set(k, (this.accepted.get(k) ?? 0) + 1);
    if (this.#closed) {
      _close(conn);
      return;
    }
    if (source !== undefined && this.#cutFrom.has(source)) {
      if (this.dropStyle === "reset") {
        _close(conn);
        return;
      }
      this.#holes.set(conn, source);
      await this.#discard(conn);
      return;
    }
    const pair: _Pair = { source, client: conn, upstream: undefined };
    this.#pairs.add(pair);
    await this.#forward(pair);
  }

  async #discard(conn: Deno.TcpConn): Promise<void> {
    const buf = new Uint8Array(16 * 1024);
    try {
      while ((await conn.read(buf)) !== null) {
        // Black hole.
      }
    } catch {
      // Closed by heal().
    } finally {
      this.#holes.delete(conn);
      _close(conn);
    }
  }

  async #forward(pair: _Pair): Promise<void> {
    const i = this.target.lastIndexOf(":");
    try {
      pair.upstream = await Deno.connect({
        hostname: this.target.slice(0, i),
        port: Number(this.target.slice(i + 1)),
      });
      pair.upstream.setNoDelay(true);
    } catch {
      this.#pairs.delete(pair);
      _close(pair.client);
      return;
    }
    if (!this.#pairs.has(pair)) {
      // Cut while connecting.
      _close(pair.upstream);
      return;
    }
    const done = () => {
      this.#pairs.delete(pair);
      _close(pair.client);
      _close(pair.upstream);
    };
    await Promise.allSettled([
      _pump(pair.client, pair.upstream).finally(done),
      _pump(pair.upstream, pair.client).finally(done),
    ]);
  }
}

async function _pump(src: Deno.Conn, dst: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) return;
      let off = 0;
      while (off < n) off += await dst.write(buf.subarray(off, n));
    }
  } catch {
    // A side closed (or was closed by cut()).
  }
}

/** A view of one directed link i→j of a {@linkcode ProxyMesh}. */
export interface Link {
  cut(): void;
  heal(): void;
  readonly isCut: boolean;
  /** The proxy address node i dials to reach j. */
  readonly address: string;
}

/** Options of {@linkcode ProxyMesh.start}. */
export interface ProxyMeshOptions {
  identify: SourceIdentifier;
  dropStyle?: DropStyle;
}

/** A proxy in front of every node, and directed links between them. */
export class ProxyMesh {
  /** Member id → the node's real "host:port". */
  readonly nodes: Map<number, string>;
  #proxies = new Map<number, NodeProxy>();

  private constructor(nodes: Map<number, string>) {
    this.nodes = nodes;
  }

  /** Starts a proxy for every node. */
  static start(nodes: Map<number, string>, opts: ProxyMeshOptions): ProxyMesh {
    const mesh = new ProxyMesh(new Map(nodes));
    for (const [j, addr] of nodes) {
      mesh.#proxies.set(
        j,
        NodeProxy.start({ target: addr, identify: opts.identify, dropStyle: opts.dropStyle }),
      );
    }
    return mesh;
  }

  /** The proxy in front of node `id`. */
  proxy(id: number): NodeProxy {
    const p = this.#proxies.get(id);
    if (p === undefined) throw new Error(`no node ${id}`);
    return p;
  }

  /** The directed link from → to. */
  link(from: number, to: number): Link {
    if (from === to || !this.nodes.has(from)) throw new Error(`no link ${from}→${to}`);
    const p = this.proxy(to);
    return {
      cut: () => p.cut(from),
      heal: () => p.heal(from),
      get isCut() {
        return p.isCut(from);
      },
      address: p.address,
    };
  }

  /** The `--peers` value every node is started with: each node at its proxy. */
  peersArg(): string {
    return [...this.nodes.keys()].map((j) => `${j}=${this.proxy(j).address}`).join(",");
  }

  /** Cuts from → to only (`from` can no longer reach `to`; `to` may still reach `from`). */
  cutOneWay(from: number, to: number): void {
    this.link(from, to).cut();
  }

  /** Cuts both directions between a and b. */
  cutBoth(a: number, b: number): void {
    this.link(a, b).cut();
    this.link(b, a).cut();
  }

  /** Separates the groups from each other (both directions); links inside a group are healed. */
  partition(groups: number[][]): void {
    const groupOf = new Map<number, number>();
    groups.forEach((g, k) => g.forEach((id) => groupOf.set(id, k)));
    for (const i of this.nodes.keys()) {
      for (const j of this.nodes.keys()) {
        if (i === j) continue;
        const gi = groupOf.get(i), gj = groupOf.get(j);
        const l = this.link(i, j);
        if (gi === undefined || gj === undefined || gi !== gj) l.cut();
        else l.heal();
      }
    }
  }

  /** Isolates `id` from every other node (both directions). */
  isolate(id: number): void {
    this.partition([[id], [...this.nodes.keys()].filter((j) => j !== id)]);
  }

  /**
   * A bridge: `bridge` keeps its links to everyone; the other nodes are split into two halves
   * that cannot reach each other (each half plus the bridge is a majority in a 3- or 5-node
   * cluster). Returns the halves.
   */
  bridge(bridge: number): [number[], number[]] {
    const others = [...this.nodes.keys()].filter((j) => j !== bridge).sort((a, b) => a - b);
    const left = others.slice(0, Math.ceil(others.length / 2));
    const right = others.slice(left.length);
    this.healAll();
    for (const a of left) for (const b of right) this.cutBoth(a, b);
    return [left, right];
  }

  /** Heals every link. */
  healAll(): void {
    for (const i of this.nodes.keys()) {
      for (const j of this.nodes.keys()) if (i !== j) this.link(i, j).heal();
    }
  }

  /** The cut links, as "i→j" strings (for logs). */
  cutLinks(): string[] {
    const out: string[] = [];
    for (const i of this.nodes.keys()) {
      for (const j of this.nodes.keys()) {
        if (i !== j && this.link(i, j).isCut) out.push(`${i}→${j}`);
      }
    }
    return out;
  }

  /** Closes every proxy. */
  async close(): Promise<void> {
    await Promise.all([...this.#proxies.values()].map((p) => p.close()));
  }
}

/**
 * A {@linkcode SourceIdentifier} for processes on this machine: asks `ss` (iproute2, Linux) which
 * process holds the socket 127.0.0.1:sourcePort → 127.0.0.1:proxyPort, and maps its pid to a node
 * with `pids()` (each node's current process id). Deno refuses to read /proc without `-A`, so the
 * chaos run needs `--allow-run=ss` instead. Returns undefined when `ss` is missing or the socket
 * is gone.
 */
export function ssSourceIdentifier(pids: () => Map<number, number | undefined>): SourceIdentifier {
  return async (sourcePort: number, proxyPort: number) => {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 10));
      let text: string;
      try {
        const out = await new Deno.Command("ss", {
          args: [
            "-Htnp",
            "state",
            "established",
            `( sport = :${sourcePort} and dport = :${proxyPort} )`,
          ],
          stdin: "null",
          stdout: "piped",
          stderr: "null",
        }).output();
        text = new TextDecoder().decode(out.stdout);
      } catch {
        return undefined; // No ss.
      }
      const m = /pid=(\d+)/.exec(text);
      if (m === null) continue;
      const pid = Number(m[1]);
      for (const [id, p] of pids()) if (p === pid) return id;
      return undefined;
    }
    return undefined;
  };
}
