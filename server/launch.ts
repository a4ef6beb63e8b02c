/**
 * How to run one node as a child process with the narrowest Deno permissions that work.
 *
 * Used by `main.ts` (`deno task node` re-executes itself through it), `server/cluster.ts` and
 * the test harness. The node gets:
 *
 * - `--allow-net` = the hosts of its own listen address, its peers and its `--join` members (any
 *   port on those hosts: members added at run time get new ports; a member on a new host needs
 *   that host in `extraNetHosts`);
 * - `--allow-read` = its data directory, the repository's `protos/` (read by proto-loader at
 *   start-up) and `storage/` (the storage engine starts its compaction worker from
 *   `storage/compaction_worker.ts`; without it compactions run on the node's main thread);
 * - `--allow-write` = its data directory;
 * - `--allow-env` = the few variables grpc-js reads ({@linkcode NODE_ENV_VARS});
 * - `--allow-sys` = the host facts Node's `os`/`net` modules ask for ({@linkcode NODE_SYS}).
 *
 * @example
 * ```ts
 * import { nodeCommand } from "./launch.ts";
 * const { cmd, args } = nodeCommand({
 *   id: 2,
 *   port: 50052,
 *   peers: "1=127.0.0.1:50051,2=127.0.0.1:50052,3=127.0.0.1:50053",
 *   dataDir: "data/node-2",
 * });
 * const child = new Deno.Command(cmd, { args }).spawn();
 * child.kill("SIGTERM");
 * await child.status;
 * ```
 *
 * @module
 */

/** Environment variables a node may read (grpc-js tracing and proxy settings, Deno's own). */
export const NODE_ENV_VARS: readonly string[] = [
  "GRPC_TRACE",
  "GRPC_VERBOSITY",
  "GRPC_NODE_TRACE",
  "GRPC_NODE_VERBOSITY",
  "GRPC_NODE_USE_ALTERNATIVE_RESOLVER",
  "GRPC_NODE_DEBUG_SEND_ERROR_DETAILS",
  "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
  "GRPC_SSL_CIPHER_SUITES",
  "GRPC_EXPERIMENTAL_ENABLE_OUTLIER_DETECTION",
  "grpc_proxy",
  "https_proxy",
  "http_proxy",
  "no_grpc_proxy",
  "no_proxy",
  "NODE_DEBUG",
  "NODE_EXTRA_CA_CERTS",
  "NO_COLOR",
];

/**
 * The V8 flags a node runs with:
 * - a young generation of 4 MiB semispaces (V8 grows them to 16 MiB by default, and a node's
 *   garbage rate keeps them there). Measured 2026-12-05: the storage benchmark's peak RSS fell
 *   from 285–307 to 200 MiB with every row as fast or faster; a cluster A/B (both orders) gave
 *   puts 0.98–1.03× and linearizable gets 1.02–1.08× of the default.
 * - `--expose-gc`, so that the engine's compaction worker collects its garbage (on its own
 *   thread) when its heap passes the recycle limit instead of being replaced: starting a Worker
 *   blocks the node's event loop (storage/engine.ts `workerRecycleBytes`). Measured 2026-12-06,
 *   an engine taking 4 KiB writes for 25 s, two runs each: 3–4 replacements and event-loop stalls
 *   of up to 38–44 ms without it; none, and at most 21–25 ms, with it. Nothing in a node's
 *   isolate calls `gc`.
 */
export const NODE_V8_FLAGS = "--v8-flags=--max-semi-space-size=4,--expose-gc";

/** `--allow-sys` kinds a node needs (none so far; kept explicit). */
export const NODE_SYS: readonly string[] = [];

/** Options of {@linkcode nodeCommand}. */
export interface NodeCommandOptions {
  id: number;
  port: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** The `--peers` list (`id=host:port,...`) or a map id → "host:port". */
  peers: string | Map<number, string>;
  dataDir: string;
  /** More node flags (e.g. `--log-level debug`, `--join h:p`, `--election-timeout-ms 300`). */
  extraArgs?: string[];
  /** More hosts the node may connect to (members added later on other hosts). */
  extraNetHosts?: string[];
}

/** The repository root (where deno.json lives). */
export const REPO_ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

function _peerList(peers: string | Map<number, string>): string {
  if (typeof peers === "string") return peers;
  return [...peers].map(([id, a]) => `${id}=${a}`).join(",");
}

function _addresses(list: string): string[] {
  const out: string[] = [];
  for (const part of list.split(",")) {
    const p = part.trim();
    if (p === "") continue;
    const eq = p.indexOf("=");
    out.push(eq >= 0 ? p.slice(eq + 1) : p);
  }
  return out;
}

function _host(address: string): string {
  const i = address.lastIndexOf(":");
  return i > 0 ? address.slice(0, i) : address;
}

function _flagValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === name) return args[i + 1];
    if (a.startsWith(name + "=")) return a.slice(name.length + 1);
  }
  return undefined;
}

/**
 * Builds the command line that runs one node (`server/node_main.ts`) with scoped permissions.
 * `cmd` is the running Deno (`Deno.execPath()`).
 */
export function nodeCommand(opts: NodeCommandOptions): { cmd: string; args: string[] } {
  const host = opts.host ?? "127.0.0.1";
  const peers = _peerList(opts.peers);
  const extra = opts.extraArgs ?? [];
  const net = new Set<string>([host.includes(":") ? `[${host}]` : host]);
  // A node also dials peers and --join members (on any port of their hosts).
  for (const a of _addresses(peers)) net.add(_host(a));
  const join = _flagValue(extra, "--join");
  if (join !== undefined) { for (const a of _addresses(join)) net.add(_host(a)); }
  for (const h of opts.extraNetHosts ?? []) net.add(h);
  const read = [opts.dataDir, `${REPO_ROOT}/protos`, `${REPO_ROOT}/storage`];
  const args = [
    "run",
    "--quiet",
    NODE_V8_FLAGS,
    "--no-prompt",
    `--config=${REPO_ROOT}/deno.json`,
    `--allow-net=${[...net].join(",")}`,
    `--allow-read=${read.join(",")}`,
    `--allow-write=${opts.dataDir}`,
    `--allow-env=${NODE_ENV_VARS.join(",")}`,
  ];
  if (NODE_SYS.length > 0) args.push(`--allow-sys=${NODE_SYS.join(",")}`);
  args.push(
    `${REPO_ROOT}/server/node_main.ts`,
    "--id",
    String(opts.id),
    "--port",
    String(opts.port),
    "--host",
    host,
    "--peers",
    peers,
    "--data-dir",
    opts.dataDir,
    ...extra,
  );
  return { cmd: Deno.execPath(), args };
}
