/**
 * A stub `kvstore.KVStore` server: Put and Get on an in-memory `Map`, no Raft, no disk. It is
 * the ceiling of any grpc-js node in Deno on this machine (and of the load client against it):
 * `deno task bench cluster --systems stub,concordkv,etcd` shows how far ConcordKV is from it.
 *
 * Run as `deno run … bench/load_stub_server.ts PORT`; prints `listening PORT` when bound.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { KVSTORE_PROTO, loadProto } from "./load_adapters.ts";
import { type BenchCluster, ChildProcess, freePorts, waitFor } from "./load_cluster.ts";
import { REPO_ROOT } from "../server/launch.ts";

/** Starts the stub server on `port` (in this process). */
export function serveStub(port: number): Promise<grpc.Server> {
  const data = new Map<string, Uint8Array>();
  const keyOf = (k: Uint8Array) => new TextDecoder().decode(k);
  const server = new grpc.Server();
  server.addService(loadProto(KVSTORE_PROTO).kvstore.KVStore.service, {
    Put(
      call: grpc.ServerUnaryCall<{ key: Uint8Array; value: Uint8Array }, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) {
      data.set(keyOf(call.request.key), call.request.value);
      cb(null, { success: true });
    },
    Get(call: grpc.ServerUnaryCall<{ key: Uint8Array }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      const v = data.get(keyOf(call.request.key));
      cb(null, v === undefined ? { found: false } : { value: v, found: true });
    },
    Status(_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      cb(null, { node_id: 1, role: "leader", leader_id: 1, term: 1 });
    },
  });
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve(server);
    });
  });
}

/** One stub server process, as a {@linkcode BenchCluster}. */
export class StubCluster implements BenchCluster {
  readonly processes: ChildProcess[];
  readonly leader: string;
  readonly #dir: string;

  private constructor(dir: string, p: ChildProcess, endpoint: string) {
    this.#dir = dir;
    this.processes = [p];
    this.leader = endpoint;
  }

  /** Spawns the stub and waits until it listens. */
  static async start(): Promise<StubCluster> {
    const dir = await Deno.makeTempDir({ prefix: "concordkv-bench-stub-" });
    const [port] = freePorts(1);
    const p = await ChildProcess.spawn("stub", {
      cmd: Deno.execPath(),
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        `--config=${REPO_ROOT}/deno.json`,
        `--allow-net=127.0.0.1:${port}`,
        `--allow-read=${REPO_ROOT}`,
        "--allow-env",
        new URL("./load_stub_server.ts", import.meta.url).pathname,
        String(port),
      ],
    }, `${dir}/stub.log`);
    const c = new StubCluster(dir, p, `127.0.0.1:${port}`);
    try {
      await waitFor("the stub server", async () => {
        if (p.exited) throw new Error(`stub exited: ${await p.tail(5)}`);
        return (await p.tail(1)).includes("listening");
      });
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  get endpoints(): string[] {
    return [this.leader];
  }

  get leaderProcess(): ChildProcess {
    return this.processes[0]!;
  }

  refreshLeader(): Promise<void> {
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    await this.processes[0]!.stop();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const port = Number(Deno.args[0]);
  await serveStub(port);
  console.log(`listening ${port}`);
  const stop = () => Deno.exit(0);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
