/**
 * A 3-node ConcordKV cluster for the cluster benchmark: node command lines from
 * `server/launch.ts` (`nodeCommand`, the same scoped-permission command the harness and
 * `deno task cluster` use), free loopback ports, a temporary data directory, logs beside the data,
 * leader found through `kvstore.KVStore/Status`. Optionally runs every node under `--cpu-prof`
 * (Deno writes the profile when the node exits on SIGTERM).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { nodeCommand } from "../server/launch.ts";
import { KVSTORE_PROTO, loadProto } from "./load_adapters.ts";
import { type BenchCluster, ChildProcess, freePorts, waitFor } from "./load_cluster.ts";

interface StatusResponse {
  node_id?: string;
  role?: string;
  term?: string;
  leader_id?: string;
}

/** `kvstore.KVStore/Status` of one node (no forwarding). */
export function concordStatus(endpoint: string, timeoutMs = 1000): Promise<StatusResponse> {
  const ctor = loadProto(KVSTORE_PROTO).kvstore.KVStore;
  const client = new ctor(endpoint, grpc.credentials.createInsecure());
  return new Promise<StatusResponse>((resolve, reject) => {
    client.Status(
      {},
      { deadline: Date.now() + timeoutMs },
      (err: grpc.ServiceError | null, res: StatusResponse) => {
        client.close();
        if (err) reject(err);
        else resolve(res);
      },
    );
  });
}

/**
 * Inserts Deno runtime flags (e.g. `--cpu-prof`) into a `deno run …` command line, right after
 * `run`; returns the args unchanged when they do not start with `run`.
 */
export function withRuntimeFlags(args: string[], flags: string[]): string[] {
  const i = args.indexOf("run");
  if (i < 0 || flags.length === 0) return args;
  return [...args.slice(0, i + 1), ...flags, ...args.slice(i + 1)];
}

/** The shape of `nodeCommand` of server/launch.ts. */
export type NodeCommand = typeof nodeCommand;

/** Options of {@linkcode ConcordKvCluster.start}. */
export interface ConcordKvClusterOptions {
  /** Builds a node's command line (default: this checkout's `nodeCommand`). */
  nodeCommand?: NodeCommand;
  nodes?: number;
  /** Parent of the data directories (default: a new temporary directory, removed on stop). */
  dir?: string;
  /** Node flags added to every node (after the script). */
  extraArgs?: string[];
  /** When set, every node runs with `--cpu-prof --cpu-prof-dir=<cpuProfDir>/node-<id>`. */
  cpuProfDir?: string;
}

/** A running ConcordKV cluster. */
export class ConcordKvCluster implements BenchCluster {
  readonly processes: ChildProcess[];
  readonly dir: string;
  readonly #ownsDir: boolean;
  readonly #endpoints: string[];
  #leaderIndex = 0;

  private constructor(dir: string, ownsDir: boolean, processes: ChildProcess[], eps: string[]) {
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.processes = processes;
    this.#endpoints = eps;
  }

  /** Starts the nodes and waits for a leader that a majority acknowledges. */
  static async start(opts: ConcordKvClusterOptions = {}): Promise<ConcordKvCluster> {
    const n = opts.nodes ?? 3;
    const ownsDir = opts.dir === undefined;
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "concordkv-bench-" });
    const ports = freePorts(n);
    const endpoints = ports.map((p) => `127.0.0.1:${p}`);
    const peers = endpoints.map((e, i) => `${i + 1}=${e}`).join(",");
    const processes: ChildProcess[] = [];
    const cluster = new ConcordKvCluster(dir, ownsDir, processes, endpoints);
    try {
      for (let i = 0; i < n; i++) {
        const id = i + 1;
        const dataDir = `${dir}/node-${id}`;
        const { cmd, args } = (opts.nodeCommand ?? nodeCommand)({
          id,
          port: ports[i]!,
          host: "127.0.0.1",
          peers,
          dataDir,
          extraArgs: opts.extraArgs,
        });
        const flags = opts.cpuProfDir === undefined
          ? []
          : ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}/node-${id}`];
        processes.push(
          await ChildProcess.spawn(
            `concordkv ${id}`,
            { cmd, args: withRuntimeFlags(args, flags) },
            `${dir}/node-${id}.log`,
          ),
        );
      }
      await cluster.refreshLeader();
    } catch (e) {
      const tails = await Promise.all(processes.map(async (p) => `${p.name}:\n${await p.tail(8)}`));
      await cluster.stop();
      throw new Error(
        `ConcordKV cluster did not start: ${(e as Error).message}\n${tails.join("\n")}`,
      );
    }
    return cluster;
  }

  /** Client endpoints, leader first. */
  get endpoints(): string[] {
    const l = this.#leaderIndex;
    return [this.#endpoints[l]!, ...this.#endpoints.filter((_, i) => i !== l)];
  }

  get leader(): string {
    return this.#endpoints[this.#leaderIndex]!;
  }

  get leaderProcess(): ChildProcess {
    return this.processes[this.#leaderIndex]!;
  }

  /** Polls Status until a node says it leads and a majority agrees (same term). */
  async refreshLeader(): Promise<void> {
    await waitFor("a ConcordKV leader", async () => {
      for (const p of this.processes) {
        if (p.exited) throw new Error(`${p.name} exited`);
      }
      const answers = await Promise.all(
        this.#endpoints.map((e) => concordStatus(e).catch(() => undefined)),
      );
      const idx = answers.findIndex((s) => s?.role === "leader");
      const l = answers[idx];
      if (l === undefined) return false;
      const acks = answers.filter((s) =>
        s !== undefined && (s === l || (s.leader_id === l.node_id && s.term === l.term))
      ).length;
      if (acks <= answers.length / 2) {
        return false;
      }
      this.#leaderIndex = idx;
      return true;
    }, { timeoutMs: 30_000, intervalMs: 100 });
  }

  /** Stops every node (SIGTERM, so that CPU profiles get written) and removes its own dir. */
  async stop(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop(10_000)));
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
