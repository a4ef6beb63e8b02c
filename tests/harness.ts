/**
 * Test harness: starts real ConcordKV node processes on free loopback ports.
 *
 * Used by the integration, chaos, linearizability and benchmark code. Every process it starts is
 * tracked; {@linkcode TestCluster.stop} kills them all (and an `unload` listener kills any that a
 * crashed test left behind). Nothing here sleeps to hide a race: waits poll with a deadline.
 *
 * API:
 *
 * - `freePorts(n)` → `number[]`: n distinct free TCP ports on 127.0.0.1 (below the ephemeral range;
 *   bound, then released).
 * - `freeConsecutivePorts(n)` → the first of n consecutive free ports (for `--base-port`).
 * - `new NodeProcess({ id, port, host?, peers, dataDir, extraArgs?, logPath? })`: one node.
 *   - `start()`: spawns it with `nodeCommand` of `server/launch.ts`; stdout and stderr are appended
 *     to `logPath` (default `<dataDir>.log`), across restarts.
 *   - `kill(signal = "SIGKILL")`, `wait()` → `Deno.CommandStatus`, `stop(graceMs = 3000)`
 *     (SIGTERM and SIGCONT, then SIGKILL after `graceMs`), `restart()` (after it exited: same id, port, data dir),
 *     `pid`, `running`, `address` ("127.0.0.1:port"), `exitStatus` (last exit, if any).
 *   - `log()` → the whole log text; `tail(lines = 40)` → its last lines.
 * - `TestCluster.start({ nodes = 3, extraArgs?, peerAddress?, dataDirRoot?, electionTimeoutMs?,
 *    heartbeatMs?, keepData?, ports? })`: starts a cluster and returns once every process was spawned
 *   (not yet elected: call `waitForLeader`).
 *   - `peerAddress(id)` → "host:port" goes into every node's `--peers` (the chaos tests point it at
 *     proxies); nodes still listen on `cluster.ports[id - 1]`.
 *   - `nodes` (`NodeProcess[]`, node i has id i + 1), `node(id)`, `ports`, `addresses`
 *     (the nodes' own listen addresses), `dataDirRoot`.
 *   - `waitForLeader(timeoutMs = 5000, { exclude? })` → leader id: polls `Status` on every running
 *     node until one that says it leads is acknowledged by a majority of the members
 *     (nodes reporting it as leader in the same term).
 *   - `leaderId()` → the last leader `waitForLeader` found (or undefined).
 *   - `status(id, timeoutMs?)` → that node's own view as a `StatusInfo` of client/client.ts (role,
 *     term, leaderId, commit/applied/first/last index, members); throws if it does not answer.
 *   - `client(opts?)` → a `KVClient` over all nodes' addresses (or `opts.endpoints`); closed by
 *     `stop()`. It follows the leader to the address members report for it, i.e. the `--peers`
 *     address: with `peerAddress` pointing at proxies, pass `{ followLeader: false }` to keep
 *     client traffic off them.
 *   - `nodeClient(id, opts?)` → a `KVClient` that talks to node `id` only (no leader following).
 *   - `dumpLogs(lines = 60)` → the tails of every node's log, labelled, for failure messages.
 *   - `stop()`: stops every node (SIGTERM, SIGKILL after a grace period), closes clients, and deletes
 *     the data directory it created unless `keepData` is set. Safe to call twice.
 * - `runKvCli(endpoints, ...args)` → `{ code, out, err }`: runs `deno task kv --endpoints … ARGS`
 *   as a user would, in its own process; `runKvCliBytes(endpoints, stdin, ...args)` the same with
 *   bytes on standard input and output (backup, restore).
 * - `waitFor(what, timeoutMs, fn)` → polls `fn` every 50 ms until it returns a value other than
 *   `undefined`/`false` (or throws its last error with `what` at the deadline).
 * - `withCluster(opts, fn)`: start, run `fn(cluster)`, print every node's log tail if `fn` throws,
 *   always stop. The usual shape of a test:
 *
 * @example
 * ```ts
 * import { withCluster } from "./harness.ts";
 * Deno.test("a put is readable", async () => {
 *   await withCluster({ nodes: 3 }, async (c) => {
 *     await c.waitForLeader(2000);
 *     const kv = c.client();
 *     await kv.put("k", "v");
 *   });
 * });
 * ```
 *
 * @module
 */
import { nodeCommand } from "../server/launch.ts";
import { KVClient, type KVClientOptions, type StatusInfo } from "../client/client.ts";

/** Processes started by this module and not yet reaped; killed on `unload`. */
const _live = new Set<Deno.ChildProcess>();

globalThis.addEventListener("unload", () => {
  for (const child of _live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
});

/**
 * Returns `n` distinct TCP ports that are free on 127.0.0.1 right now.
 *
 * They are drawn at random from 10000–32767, below Linux's ephemeral range (32768–60999): a
 * port the kernel handed out for port 0 could meanwhile become the local end of some outgoing
 * connection and be taken before the node binds it. Each candidate is bound (all at once, so
 * they differ) and released.
 *
 * @example
 * ```ts
 * const [a, b] = await freePorts(2);
 * ```
 */
export function freePorts(n: number): Promise<number[]> {
  const listeners: Deno.Listener[] = [];
  try {
    for (let attempt = 0; listeners.length < n; attempt++) {
      const port = attempt < 1000 ? 10_000 + Math.floor(Math.random() * 22_768) : 0;
      try {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port }));
      } catch (e) {
        if (!(e instanceof Deno.errors.AddrInUse)) throw e;
      }
    }
    return Promise.resolve(listeners.map((l) => (l.addr as Deno.NetAddr).port));
  } finally {
    for (const l of listeners) l.close();
  }
}

/**
 * Returns a port `p` such that `p .. p+n-1` are all free on 127.0.0.1 right now (for commands
 * that take a base port).
 */
export function freeConsecutivePorts(n: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 10_000 + Math.floor(Math.random() * (22_768 - n));
    const listeners: Deno.Listener[] = [];
    try {
      for (let i = 0; i < n; i++) {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port: base + i }));
      }
      return Promise.resolve(base);
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    } finally {
      for (const l of listeners) l.close();
    }
  }
  throw new Error(`found no ${n} consecutive free ports`);
}

/** Options of one node process. */
export interface NodeProcessOptions {
  id: number;
  port: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** The `--peers` list: `id=host:port,...`. */
  peers: string;
  dataDir: string;
  /** More node flags, e.g. `["--log-level", "debug"]`. */
  extraArgs?: string[];
  /** Where stdout and stderr go (appended). Default `<dataDir>.log`. */
  logPath?: string;
}

/** A real node process. See the module documentation. */
export class NodeProcess {
  readonly id: number;
  readonly port: number;
  readonly host: string;
  readonly peers: string;
  readonly dataDir: string;
  readonly logPath: string;
  /** Extra flags used by the next `start()`/`restart()`; tests may change them between runs. */
  extraArgs: string[];
  #child: Deno.ChildProcess | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;
  #pumps: Promise<void>[] = [];
  #exit: Deno.CommandStatus | undefined;

  constructor(opts: NodeProcessOptions) {
    this.id = opts.id;
    this.port = opts.port;
    this.host = opts.host ?? "127.0.0.1";
    this.peers = opts.peers;
    this.dataDir = opts.dataDir;
    this.extraArgs = [...(opts.extraArgs ?? [])];
    this.logPath = opts.logPath ?? `${opts.dataDir}.log`;
  }

  /** "host:port" clients use to reach this node. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** The OS process id (undefined before the first start). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** True between `start()` and the process's exit. */
  get running(): boolean {
    return this.#child !== undefined && this.#exit === undefined;
  }

  /** The status of the last exit, if the process has exited. */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#exit;
  }

  /** Spawns the node. Throws if it is already running. */
  start(): void {
    if (this.running) throw new Error(`node ${this.id} is already running`);
    const { cmd, args } = nodeCommand({
      id: this.id,
      port: this.port,
      host: this.host,
      peers: this.peers,
      dataDir: this.dataDir,
      extraArgs: this.extraArgs,
    });
    const log = Deno.openSync(this.logPath, { create: true, append: true });
    const stamp = new Date().toISOString();
    log.writeSync(new TextEncoder().encode(`--- harness: start node ${this.id} at ${stamp}\n`));
    const child = new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
    }).spawn();
    _live.add(child);
    this.#child = child;
    this.#exit = undefined;
    this.#pumps = [_pump(child.stdout, log), _pump(child.stderr, log)];
    const pumps = this.#pumps;
    this.#status = child.status.then(async (status) => {
      _live.delete(child);
      await Promise.allSettled(pumps);
      try {
        log.writeSync(
          new TextEncoder().encode(
            `--- harness: node ${this.id} exited code=${status.code} signal=${status.signal}\n`,
          ),
        );
      } finally {
        log.close();
      }
      if (this.#child === child) this.#exit = status;
      return status;
    });
  }

  /** Sends `signal` (default SIGKILL) to the process; a no-op if it is not running. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (!this.running) return;
    try {
      this.#child!.kill(signal);
    } catch (e) {
      if (!(e instanceof TypeError) && !(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  /** Resolves when the process has exited (and its output is flushed to the log). */
  async wait(): Promise<Deno.CommandStatus> {
    if (this.#status === undefined) throw new Error(`node ${this.id} was never started`);
    return await this.#status;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. Returns the exit status. */
  async stop(graceMs = 3000): Promise<Deno.CommandStatus | undefined> {
    if (this.#status === undefined) return undefined;
    if (!this.running) return await this.#status;
    this.kill("SIGTERM");
    this.kill("SIGCONT"); // a paused (SIGSTOP) node handles the SIGTERM instead of hanging on

    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), graceMs);
    });
    try {
      const r = await Promise.race([this.#status, timeout]);
      if (r !== "timeout") return r;
    } finally {
      clearTimeout(timer);
    }
    this.kill("SIGKILL");
    return await this.#status;
  }

  /** Starts the node again with the same id, port and data directory (it must have exited). */
  async restart(): Promise<void> {
    if (this.running) throw new Error(`node ${this.id} is still running; kill and wait first`);
    if (this.#status !== undefined) await this.#status;
    this.start();
  }

  /** The whole log (stdout and stderr of every run). */
  log(): string {
    try {
      return Deno.readTextFileSync(this.logPath);
    } catch {
      return "";
    }
  }

  /** The last `lines` lines of the log. */
  tail(lines = 40): string {
    return this.log().trimEnd().split("\n").slice(-lines).join("\n");
  }
}

async function _pump(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  try {
    for await (const chunk of stream) {
      let off = 0;
      while (off < chunk.length) off += file.writeSync(chunk.subarray(off));
    }
  } catch {
    // The log file was closed or the stream broke; nothing more to record.
  }
}

/** Options of {@linkcode TestCluster.start}. */
export interface TestClusterOptions {
  /** Number of nodes (ids 1..n). Default 3. */
  nodes?: number;
  /** Flags added to every node's command line. */
  extraArgs?: string[];
  /** Address node `id` is reached at by its peers (`--peers`); default its own listen address. */
  peerAddress?: (id: number) => string;
  /** Parent of `node-<id>` data directories and logs; default a new temporary directory. */
  dataDirRoot?: string;
  /** Passed as `--election-timeout-ms` when set. */
  electionTimeoutMs?: number;
  /** Passed as `--heartbeat-ms` when set. */
  heartbeatMs?: number;
  /** Keep the data directory after `stop()` (a directory given in `dataDirRoot` is always kept). */
  keepData?: boolean;
  /** Listen ports, one per node; default `freePorts(nodes)`. */
  ports?: number[];
}

/** A cluster of real node processes. See the module documentation. */
export class TestCluster {
  readonly nodes: NodeProcess[];
  readonly ports: number[];
  readonly dataDirRoot: string;
  #ownsDir: boolean;
  #clients: KVClient[] = [];
  #leader: number | undefined;
  #admin: Map<number, KVClient> = new Map();
  #stopped = false;

  private constructor(nodes: NodeProcess[], ports: number[], root: string, ownsDir: boolean) {
    this.nodes = nodes;
    this.ports = ports;
    this.dataDirRoot = root;
    this.#ownsDir = ownsDir;
  }

  /** Allocates ports and data directories and spawns every node. */
  static async start(opts: TestClusterOptions = {}): Promise<TestCluster> {
    const n = opts.nodes ?? 3;
    const ports = opts.ports ?? await freePorts(n);
    if (ports.length !== n) throw new Error(`need ${n} ports, got ${ports.length}`);
    const ownsDir = opts.dataDirRoot === undefined && !opts.keepData;
    const root = opts.dataDirRoot ?? await Deno.makeTempDir({ prefix: "concordkv-test-" });
    await Deno.mkdir(root, { recursive: true });
    const own = (id: number) => `127.0.0.1:${ports[id - 1]}`;
    const peerAddr = opts.peerAddress ?? own;
    const peers = Array.from({ length: n }, (_, i) => `${i + 1}=${peerAddr(i + 1)}`).join(",");
    const extra = [...(opts.extraArgs ?? [])];
    if (opts.electionTimeoutMs !== undefined) {
      extra.push("--election-timeout-ms", String(opts.electionTimeoutMs));
    }
    if (opts.heartbeatMs !== undefined) extra.push("--heartbeat-ms", String(opts.heartbeatMs));
    const nodes = Array.from({ length: n }, (_, i) =>
      new NodeProcess({
        id: i + 1,
        port: ports[i]!,
        peers,
        dataDir: `${root}/node-${i + 1}`,
        extraArgs: extra,
      }));
    const cluster = new TestCluster(nodes, ports, root, ownsDir);
    try {
      for (const node of nodes) node.start();
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** The node with member id `id`. */
  node(id: number): NodeProcess {
    const node = this.nodes[id - 1];
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** The nodes' own listen addresses, in id order. */
  get addresses(): string[] {
    return this.nodes.map((n) => n.address);
  }

  /** The leader found by the last `waitForLeader`. */
  leaderId(): number | undefined {
    return this.#leader;
  }

  /** A client over every node (or `opts.endpoints`); `stop()` closes it. */
  client(opts: Partial<KVClientOptions> = {}): KVClient {
    const c = new KVClient({ endpoints: this.addresses, ...opts });
    this.#clients.push(c);
    return c;
  }

  /** A client that talks to node `id` only (no leader following); `stop()` closes it. */
  nodeClient(id: number, opts: Partial<KVClientOptions> = {}): KVClient {
    return this.client({ endpoints: [this.node(id).address], followLeader: false, ...opts });
  }

  #adminClient(id: number): KVClient {
    let c = this.#admin.get(id);
    if (c === undefined) {
      c = new KVClient({ endpoints: [this.node(id).address], maxRetries: 0 });
      this.#admin.set(id, c);
    }
    return c;
  }

  /** Node `id`'s own Status (no forwarding, no retries). */
  async status(id: number, timeoutMs = 1000): Promise<StatusInfo> {
    return await this.#adminClient(id).statusOf(this.node(id).address, { timeoutMs });
  }

  /**
   * Polls Status on every running node until a node that reports itself leader is acknowledged by
   * a majority of members (itself included) in the same term; returns its id.
   */
  async waitForLeader(timeoutMs = 5000, opts: { exclude?: number[] } = {}): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    const exclude = new Set(opts.exclude ?? []);
    let last = "";
    for (;;) {
      const running = this.nodes.filter((n) => n.running && !exclude.has(n.id));
      const answers = await Promise.all(
        running.map((n) => this.status(n.id, 500).catch((e) => e as Error)),
      );
      const statuses = answers.filter((a): a is StatusInfo => !(a instanceof Error));
      const leaders = statuses.filter((s) => s.role === "leader");
      leaders.sort((a, b) => b.term - a.term);
      const l = leaders[0];
      if (l !== undefined) {
        const members = l.members.filter((m) => m.kind !== "learner").length || this.nodes.length;
        const acks = statuses.filter((s) =>
          s.nodeId === l.nodeId || (s.leaderId === l.nodeId && s.term === l.term)
        ).length;
        if (acks > members / 2) {
          this.#leader = l.nodeId;
          return l.nodeId;
        }
      }
      last = answers.map((a, i) =>
        a instanceof Error
          ? `node ${running[i]!.id}: ${a.message}`
          : `node ${a.nodeId}: ${a.role} term ${a.term} leader ${a.leaderId}`
      ).join("; ");
      if (Date.now() >= deadline) {
        throw new Error(`no leader within ${timeoutMs} ms (${last})\n${this.dumpLogs(30)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The last `lines` lines of every node's log, labelled. */
  dumpLogs(lines = 60): string {
    return this.nodes.map((n) =>
      `===== node ${n.id} (${n.address}, ${
        n.running ? `pid ${n.pid}` : `exited ${JSON.stringify(n.exitStatus ?? null)}`
      }) log ${n.logPath}\n${n.tail(lines)}`
    ).join("\n");
  }

  /** Stops every node and client; removes a temporary data directory. Idempotent. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const c of [...this.#clients, ...this.#admin.values()]) {
      try {
        c.close();
      } catch {
        // Closing is best effort.
      }
    }
    await Promise.allSettled(this.nodes.map((n) => n.stop(graceMs)));
    if (this.#ownsDir) {
      await Deno.remove(this.dataDirRoot, { recursive: true }).catch(() => {});
    }
  }
}

const _CONFIG = new URL("../deno.json", import.meta.url).pathname;

/** What a `deno task kv` run printed, and its exit code. */
export interface KvCliRun {
  code: number;
  out: string;
  err: string;
}

/** Runs `deno task kv --endpoints ENDPOINTS ARGS` in its own process, as a user would. */
export async function runKvCli(endpoints: string[], ...args: string[]): Promise<KvCliRun> {
  const r = await runKvCliBytes(endpoints, undefined, ...args);
  return { code: r.code, out: new TextDecoder().decode(r.out), err: r.err };
}

/** {@linkcode runKvCli} with bytes on standard input (when given) and output (backup, restore). */
export async function runKvCliBytes(
  endpoints: string[],
  stdin: Uint8Array | undefined,
  ...args: string[]
): Promise<{ code: number; out: Uint8Array; err: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "--config", _CONFIG, "kv", "--endpoints", endpoints.join(","), ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const output = child.output();
  if (stdin !== undefined) {
    // The command may stop reading early (a refused restore): its input is then cut off.
    const w = child.stdin.getWriter();
    await w.write(stdin).then(() => w.close()).catch((e) => {
      if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
    });
  }
  const o = await output;
  return { code: o.code, out: o.stdout, err: new TextDecoder().decode(o.stderr) };
}

/**
 * Polls `fn` every 50 ms until it returns something other than `undefined` or `false`; returns
 * that. At the deadline, throws an error naming `what` and `fn`'s last error, if any.
 *
 * @example
 * ```ts
 * const s = await waitFor("node 2 to catch up", 5000, async () => {
 *   const st = await cluster.status(2);
 *   return st.appliedIndex >= 10 ? st : undefined;
 * });
 * ```
 */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const why = lastError === undefined
        ? ""
        : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a cluster, runs `fn` with it, prints every node's log tail to stderr when `fn` throws,
 * and always stops the cluster.
 */
export async function withCluster<T>(
  opts: TestClusterOptions,
  fn: (cluster: TestCluster) => Promise<T>,
): Promise<T> {
  const cluster = await TestCluster.start(opts);
  try {
    return await fn(cluster);
  } catch (e) {
    console.error(cluster.dumpLogs());
    throw e;
  } finally {
    await cluster.stop();
  }
}
