/**
 * A 3-node etcd (Debian's `etcd-server`, 3.4) on free loopback ports for the cluster benchmark:
 * separate temporary data directories, default durability (etcd fsyncs its WAL on every commit
 * batch), logs in the data directory, leader found through `Maintenance.Status`.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { ETCD_PROTO, loadProto } from "./load_adapters.ts";
import { type BenchCluster, ChildProcess, freePorts, waitFor } from "./load_cluster.ts";

/** Finds `etcd` on PATH; returns its path or undefined. */
export async function findEtcd(): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/usr/local/bin").split(":")) {
    const path = `${dir}/etcd`;
    try {
      const st = await Deno.stat(path);
      if (st.isFile) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Returns the path of `etcd`, installing Debian's `etcd-server` with apt-get when it is missing
 * (prints what it does; needs root).
 */
export async function ensureEtcd(log: (line: string) => void = console.error): Promise<string> {
  const found = await findEtcd();
  if (found !== undefined) return found;
  log("etcd not found: installing Debian's etcd-server (apt-get update && apt-get install -y)");
  for (const args of [["update"], ["install", "-y", "etcd-server"]]) {
    const out = await new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join("\n");
      throw new Error(`apt-get ${args.join(" ")} failed:\n${err}`);
    }
  }
  const path = await findEtcd();
  if (path === undefined) throw new Error("etcd-server installed but no etcd on PATH");
  return path;
}

interface StatusResponse {
  header?: { member_id?: string };
  leader?: string;
  version?: string;
}

// deno-lint-ignore no-explicit-any
function maintenanceClient(endpoint: string): any {
  const ctor = loadProto(ETCD_PROTO).etcdserverpb.Maintenance;
  return new ctor(endpoint, grpc.credentials.createInsecure());
}

/** `Maintenance.Status` of one member. */
export function etcdStatus(endpoint: string, timeoutMs = 2000): Promise<StatusResponse> {
  const client = maintenanceClient(endpoint);
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

/** Options of {@linkcode EtcdCluster.start}. */
export interface EtcdClusterOptions {
  /** Members (default 3). */
  nodes?: number;
  /** Parent of the data directories (default: a new temporary directory). */
  dir?: string;
  /** The etcd binary (default: found or installed). */
  etcd?: string;
}

/** A running etcd cluster. */
export class EtcdCluster implements BenchCluster {
  readonly processes: ChildProcess[];
  readonly dir: string;
  readonly #clientEndpoints: string[];
  #leaderIndex = 0;

  private constructor(dir: string, processes: ChildProcess[], clientEndpoints: string[]) {
    this.dir = dir;
    this.processes = processes;
    this.#clientEndpoints = clientEndpoints;
  }

  /** Starts the members and waits until they agree on a leader. */
  static async start(opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const n = opts.nodes ?? 3;
    const etcd = opts.etcd ?? await ensureEtcd();
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "concordkv-bench-etcd-" });
    const ports = freePorts(2 * n);
    const peerUrl = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
    const clientEndpoints = Array.from({ length: n }, (_, i) => `127.0.0.1:${ports[2 * i]}`);
    const initialCluster = Array.from({ length: n }, (_, i) => `n${i + 1}=${peerUrl(i)}`).join(",");
    const token = `bench-${crypto.randomUUID().slice(0, 8)}`;
    const processes: ChildProcess[] = [];
    const cluster = new EtcdCluster(dir, processes, clientEndpoints);
    try {
      for (let i = 0; i < n; i++) {
        const data = `${dir}/n${i + 1}`;
        await Deno.mkdir(data, { recursive: true });
        processes.push(
          await ChildProcess.spawn(`etcd n${i + 1}`, {
            cmd: etcd,
            args: [
              "--name",
              `n${i + 1}`,
              "--data-dir",
              data,
              "--listen-client-urls",
              `http://${clientEndpoints[i]}`,
              "--advertise-client-urls",
              `http://${clientEndpoints[i]}`,
              "--listen-peer-urls",
              peerUrl(i),
              "--initial-advertise-peer-urls",
              peerUrl(i),
              "--initial-cluster",
              initialCluster,
              "--initial-cluster-token",
              token,
              "--initial-cluster-state",
              "new",
              "--quota-backend-bytes",
              String(8 * 1024 ** 3),
              "--logger",
              "zap",
              "--log-level",
              "warn",
            ],
          }, `${dir}/n${i + 1}.log`),
        );
      }
      await cluster.refreshLeader();
    } catch (e) {
      const tails = await Promise.all(processes.map(async (p) => `${p.name}:\n${await p.tail(5)}`));
      await cluster.stop();
      throw new Error(`etcd cluster did not start: ${(e as Error).message}\n${tails.join("\n")}`);
    }
    return cluster;
  }

  /** Client endpoints, leader first. */
  get endpoints(): string[] {
    const l = this.#leaderIndex;
    return [this.#clientEndpoints[l]!, ...this.#clientEndpoints.filter((_, i) => i !== l)];
  }

  get leader(): string {
    return this.#clientEndpoints[this.#leaderIndex]!;
  }

  get leaderProcess(): ChildProcess {
    return this.processes[this.#leaderIndex]!;
  }

  /** Polls every member's status until all report the same leader, and records it. */
  async refreshLeader(): Promise<void> {
    await waitFor("an etcd leader", async () => {
      for (const p of this.processes) {
        if (p.exited) throw new Error(`${p.name} exited`);
      }
      const statuses = await Promise.all(this.#clientEndpoints.map((e) => etcdStatus(e)));
      const leader = String(statuses[0]?.leader ?? "0");
      if (leader === "0" || !statuses.every((s) => String(s.leader) === leader)) return false;
      const idx = statuses.findIndex((s) => String(s.header?.member_id) === leader);
      if (idx < 0) return false;
      this.#leaderIndex = idx;
      return true;
    }, { timeoutMs: 30_000, intervalMs: 200 });
  }

  /** Stops all members and removes the data directory. */
  async stop(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop()));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
