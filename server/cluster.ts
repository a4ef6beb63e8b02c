/**
 * `deno task cluster`: runs a local ConcordKV cluster, one child process per node.
 *
 * Starts `--nodes N` nodes (default 3) on ports `--base-port P` .. P+N-1 (default 50051) with
 * data in `--data-dir D`/node-<id> (default ./data), each in its own process group. Prints each
 * node's address, then the leader once one is elected (and every later change of leader). Node
 * logs are shown on stderr, prefixed with the node id. A node that exits on its own is reported
 * with its exit code and its last log lines. Ctrl-C or SIGTERM stops every node (SIGTERM, then
 * SIGKILL after `--stop-timeout-ms`); another Ctrl-C a second or more later kills them at once.
 *
 * Flags after `--` are passed to every node (e.g. `-- --log-level debug`).
 *
 * @example
 * ```sh
 * deno task cluster --nodes 5 --base-port 6001 --data-dir /tmp/ckv
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { nodeCommand } from "./launch.ts";
import { KVClient } from "../client/client.ts";

/** The usage text. */
export const CLUSTER_USAGE = `Usage: deno task cluster [options] [-- node flags...]

Starts a local ConcordKV cluster, one child process per node; Ctrl-C stops them all.

Options:
  --nodes N            number of nodes (default 3)
  --base-port P        node i listens on P+i-1 (default 50051)
  --host H             listen and peer address (default 127.0.0.1)
  --data-dir D         node i keeps its data in D/node-i (default ./data)
  --quiet              do not echo the nodes' logs
  --stop-timeout-ms N  grace period after SIGTERM before SIGKILL (default 10000)
  -h, --help           print this help`;

const TAIL_LINES = 20;

class _Usage extends Error {}

function _int(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new _Usage(`${what} must be an integer in ${min}..${max}, got "${text}"`);
  }
  return n;
}

/** One child node. */
interface _Node {
  id: number;
  address: string;
  dataDir: string;
  child: Deno.ChildProcess;
  tail: string[];
  status: Promise<Deno.CommandStatus>;
  exited: Deno.CommandStatus | undefined;
  /** Its exit was already reported. */
  reported: boolean;
  pumps: Promise<void>[];
}

/** Writes a line; a closed stdout/stderr (the terminal went away) must not stop the shutdown. */
function _write(w: { writeSync(p: Uint8Array): number }, text: string): void {
  try {
    const b = new TextEncoder().encode(text + "\n");
    let off = 0;
    while (off < b.length) off += w.writeSync(b.subarray(off));
  } catch {
    // Broken pipe: nobody is reading any more.
  }
}

function _say(text: string): void {
  _write(Deno.stdout, text);
}

function _warn(text: string): void {
  _write(Deno.stderr, text);
}

async function _pump(
  stream: ReadableStream<Uint8Array>,
  node: _Node,
  echo: boolean,
): Promise<void> {
  let pending = "";
  const line = (l: string) => {
    node.tail.push(l);
    if (node.tail.length > TAIL_LINES) node.tail.shift();
    if (echo) _warn(`[node ${node.id}] ${l}`);
  };
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const l of lines) line(l);
    }
  } catch {
    // The child's pipe broke; what was read is kept.
  }
  if (pending !== "") line(pending);
}

function _killGroup(node: _Node, signal: Deno.Signal): void {
  if (node.exited !== undefined) return;
  try {
    // The node is this process itself (no children of its own), so signalling its pid reaches
    // the whole group; Deno.kill(-pgid) would need unscoped --allow-run.
    node.child.kill(signal);
  } catch {
    // Already gone.
  }
}

/**
 * Runs the cluster until it is stopped; returns the exit code (0 when every node stopped
 * cleanly after Ctrl-C/SIGTERM).
 */
export async function runCluster(args: string[]): Promise<number> {
  let values;
  let rest: string[];
  try {
    const sep = args.indexOf("--");
    rest = sep >= 0 ? args.slice(sep + 1) : [];
    ({ values } = parseArgs({
      args: sep >= 0 ? args.slice(0, sep) : args,
      strict: true,
      allowPositionals: false,
      options: {
        nodes: { type: "string", default: "3" },
        "base-port": { type: "string", default: "50051" },
        host: { type: "string", default: "127.0.0.1" },
        "data-dir": { type: "string", default: "./data" },
        quiet: { type: "boolean", default: false },
        "stop-timeout-ms": { type: "string", default: "10000" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    _warn(`cluster: ${e instanceof Error ? e.message : String(e)}\n\n${CLUSTER_USAGE}`);
    return 2;
  }
  if (values.help) {
    _say(CLUSTER_USAGE);
    return 0;
  }
  let n: number, basePort: number, stopTimeout: number;
  try {
    n = _int(values.nodes, "--nodes", 1, 99);
    basePort = _int(values["base-port"], "--base-port", 1, 65535 - n + 1);
    stopTimeout = _int(values["stop-timeout-ms"], "--stop-timeout-ms", 0, 600_000);
  } catch (e) {
    _warn(`cluster: ${(e as Error).message}`);
    return 2;
  }
  const host = values.host;
  const root = values["data-dir"].replace(/\/+$/, "") || ".";
  const addresses = Array.from({ length: n }, (_, i) => `${host}:${basePort + i}`);
  const peers = addresses.map((a, i) => `${i + 1}=${a}`).join(",");

  const nodes: _Node[] = [];
  let stopping = false;
  let stopSignals = 0;
  let resolveStop!: () => void;
  const stopRequested = new Promise<void>((r) => resolveStop = r);
  let resolveAllDead!: () => void;
  const allDead = new Promise<void>((r) => resolveAllDead = r);

  let firstSignalAt = 0;
  const onSignal = () => {
    // Ctrl-C in a terminal reaches this process twice: from the terminal (to the foreground
    // process group) and forwarded by `deno task`. Only a later one means "kill them now".
    if (stopSignals > 0 && Date.now() - firstSignalAt < 1000) return;
    stopSignals++;
    if (stopSignals === 1) {
      firstSignalAt = Date.now();
      stopping = true;
      _say("stopping the cluster...");
      resolveStop();
    } else {
      _say("killing the cluster (SIGKILL)...");
      for (const node of nodes) _killGroup(node, "SIGKILL");
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const status = new KVClient({ endpoints: addresses, maxRetries: 0, followLeader: false });
  try {
    for (let i = 0; i < n; i++) {
      const id = i + 1;
      const dataDir = `${root}/node-${id}`;
      const { cmd, args: nodeArgs } = nodeCommand({
        id,
        port: basePort + i,
        host,
        peers,
        dataDir,
        extraArgs: rest,
      });
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(cmd, {
          args: nodeArgs,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          detached: true,
        }).spawn();
      } catch (e) {
        _warn(`cluster: cannot start node ${id}: ${e instanceof Error ? e.message : String(e)}`);
        stopping = true;
        resolveStop();
        break;
      }
      const node: _Node = {
        id,
        address: addresses[i]!,
        dataDir,
        child,
        tail: [],
        status: child.status,
        exited: undefined,
        reported: false,
        pumps: [],
      };
      node.pumps = [
        _pump(child.stdout, node, !values.quiet),
        _pump(child.stderr, node, !values.quiet),
      ];
      node.status = child.status.then(async (s) => {
        node.exited = s;
        await Promise.allSettled(node.pumps);
        if (!stopping) {
          node.reported = true;
          _warn(
            `cluster: node ${id} (${node.address}) exited on its own with code ${s.code}` +
              `${s.signal ? ` (signal ${s.signal})` : ""}; its last log lines:\n` +
              node.tail.map((l) => `  | ${l}`).join("\n"),
          );
        }
        if (nodes.every((x) => x.exited !== undefined)) resolveAllDead();
        return s;
      });
      nodes.push(node);
      _say(`node ${id}: ${node.address}  pid ${child.pid}  data ${dataDir}`);
    }

    // Report the leader as it changes, until asked to stop or every node is gone.
    let leader = 0;
    let term = 0;
    while (!stopping && nodes.some((x) => x.exited === undefined)) {
      const live = nodes.filter((x) => x.exited === undefined);
      const seen = await Promise.all(
        live.map((x) => status.statusOf(x.address, { timeoutMs: 500 }).catch(() => undefined)),
      );
      const l = seen.filter((s) => s?.role === "leader").sort((a, b) => b!.term - a!.term)[0];
      if (l !== undefined && (l.nodeId !== leader || l.term !== term)) {
        leader = l.nodeId;
        term = l.term;
        _say(`leader: node ${leader} (${addresses[leader - 1] ?? "?"}) term ${term}`);
      } else if (l === undefined && leader !== 0) {
        leader = 0;
        _say("leader: none (election in progress or no quorum)");
      }
      await Promise.race([
        new Promise((r) => setTimeout(r, 500)),
        stopRequested,
        allDead,
      ]);
    }
    if (!stopping) _warn("cluster: every node has exited");
  } catch (e) {
    // Whatever went wrong here, the nodes must not be left running.
    _warn(`cluster: ${e instanceof Error ? e.message : String(e)}; stopping the nodes`);
  } finally {
    status.close();
  }
  const clean = await _shutdown(nodes, stopTimeout, stopSignals > 0);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  return stopSignals > 0 && clean ? 0 : 1;
}

/** SIGTERM to every node, SIGKILL after `stopTimeout`; true if every node exited with 0. */
async function _shutdown(nodes: _Node[], stopTimeout: number, report: boolean): Promise<boolean> {
  for (const node of nodes) _killGroup(node, "SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const all = Promise.all(nodes.map((x) => x.status));
  const timedOut = await Promise.race([
    all.then(() => false),
    new Promise<boolean>((r) => timer = setTimeout(() => r(true), stopTimeout)),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    _warn(`cluster: nodes still running after ${stopTimeout} ms; killing them`);
    for (const node of nodes) _killGroup(node, "SIGKILL");
  }
  const statuses = await all;
  let clean = true;
  statuses.forEach((s, i) => {
    const node = nodes[i]!;
    if (s.code !== 0) {
      clean = false;
      if (report && !node.reported) {
        _warn(
          `cluster: node ${node.id} stopped with code ${s.code}` +
            `${s.signal ? ` (signal ${s.signal})` : ""}; its last log lines:\n` +
            node.tail.map((l) => `  | ${l}`).join("\n"),
        );
      }
    }
  });
  if (report) _say(clean ? "cluster stopped" : "cluster stopped (not every node cleanly)");
  return clean;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await runCluster(Deno.args);
  } catch (e) {
    _warn(`cluster: ${e instanceof Error ? e.message : String(e)}`);
    code = 1;
  }
  Deno.exit(code);
}
