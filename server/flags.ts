/**
 * Command-line flags of a ConcordKV node (DESIGN.md §3).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DELETE_RANGE_DEFAULT_LIMIT } from "../raft/command.ts";

/** The default cluster: three nodes on loopback. */
export const DEFAULT_PEERS = "1=127.0.0.1:50051,2=127.0.0.1:50052,3=127.0.0.1:50053";

/** Log verbosity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** How log lines look: `text` (one line, `LEVEL time node=N role term=T message`) or `json`. */
export type LogFormat = "text" | "json";

/** How the leader confirms it still leads before serving a linearizable read. */
export type ReadMode = "readindex" | "lease";

/** Validated node options. */
export interface NodeOptions {
  id: number;
  port: number;
  host: string;
  /** Member id → "host:port" (peers and this node). */
  peers: Map<number, string>;
  dataDir: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Base election timeout in ms (randomized in [t, 2t)). */
  electionTimeoutMs: number;
  /** Heartbeat interval in ms (also the tick length). */
  heartbeatMs: number;
  /** Snapshot (and truncate the log) after this many applied entries. */
  snapshotEntries: number;
  /**
   * Linearizable reads: `"readindex"` (a heartbeat round per batch of reads) or `"lease"` (no
   * round while the leader's lease holds; assumes bounded clock drift, see `--help`).
   */
  readMode: ReadMode;
  /**
   * Bootstrap-only: mixed into the cluster id so that two clusters created from the same
   * `--peers` list stay apart (etcd's `--initial-cluster-token`). Empty: derived from --peers only.
   */
  clusterToken: string;
  /**
   * Space quota of this node's KV engine in bytes (tables on disk plus memtables; 0: none). Over
   * it the node refuses puts (RESOURCE_EXHAUSTED) and still serves reads and deletes.
   */
  quotaBytes: number;
  /**
   * The most keys a DeleteRange this node proposes may delete; a range with more is refused whole.
   * The limit goes into the log entry, so every replica applies the proposer's.
   */
  maxDeleteRangeKeys: number;
  /** Addresses of members of a running cluster to join (empty: bootstrap from --peers). */
  join: string[];
  /** Self-test mode: reads served from local state with no leadership check. Hidden. */
  unsafeLocalReads: boolean;
  /** Stop when stdin reaches EOF (main.ts's launcher died). Hidden; set by main.ts. */
  exitWithParent: boolean;
}

/** A bad command line; `main.ts` prints the message and the usage and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The usage text of `deno task node`. */
export const NODE_USAGE = `Usage: deno task node --id N [--port P] [options]

Starts one ConcordKV node. Clients and peers use the same port.

Options:
  --id N            this node's member id (required, a positive integer)
  --port P          port to listen on (default: this id's port in --peers)
  --host H          listen address (default 127.0.0.1)
  --peers LIST      the cluster, id=host:port,... (default ${DEFAULT_PEERS})
  --data-dir D      data directory (default ./data/node-<id>)
  --log-level L     debug | info | warn | error (default info)
  --log-format F    text (default): LEVEL time node=N role term=T message, or json: one
                    object a line, {"level","ts","node","role","term","msg"}, for log shippers
  --election-timeout-ms T
                    base election timeout, randomized in [T, 2T) (default 500)
  --heartbeat-ms H  leader heartbeat interval and tick length (default 100)
  --snapshot-entries N
                    snapshot and truncate the Raft log every N applied entries (default 10000)
                    or 32 MiB of them, keeping up to N/2 (at most 5000) entries and 16 MiB
                    behind the snapshot for lagging followers (a leader keeps up to 64 MiB
                    for a follower it is streaming to); a node's first snapshot after start
                    waits ×1, ×4/3 or ×5/3 as long by id, so replicas flush at different times
  --read-mode M     how linearizable reads confirm leadership (default readindex):
                    readindex  a heartbeat round to a quorum per batch of reads
                    lease      no round while the leader holds a lease: a quorum echoed a
                               heartbeat it sent less than (election ticks - 2) ticks ago.
                               Assumes every node's clock runs at the same rate to within
                               one tick in (election ticks - 1), i.e. 25% with the defaults,
                               and that the leader notices its own stalls (it checks the
                               real time since that heartbeat before each read). A wall-clock
                               jump does not matter; a clock running slow on the leader
                               (or fast on a follower) beyond that margin can serve a stale
                               read. A restarted node waits one election timeout before voting.
  --initial-cluster-token T
                    bootstrap only: mixed into the cluster id, so clusters created from the
                    same --peers list refuse each other's messages (default: none). On restart
                    the data directory's cluster id is used and --peers/this flag are ignored.
  --quota-bytes N   space quota of the node's data (tables and memtables), in bytes, or with a
                    KiB, MiB or GiB suffix (default 2GiB, as etcd's; 0: none). Over it the node
                    refuses puts and writing compare-and-swaps with RESOURCE_EXHAUSTED and
                    serves reads and deletes; writes resume once compaction has brought the
                    data under it (delete keys), or after a restart with a larger quota
  --max-delete-range-keys N
                    the most keys one DeleteRange may delete (default and most 100000); a
                    larger range is refused whole with RESOURCE_EXHAUSTED (kv del --batch
                    deletes it in parts). Applying a range holds every replica's event loop
                    for a few ms per thousand keys (2-8 here), so a lower limit shortens the
                    longest stall a DeleteRange can cause
  --join H:P[,...]  join a running cluster through these members (start empty; the member
                    must have been added with \`kv member add\` first)
  -h, --help        print this help`;

/** Parses a `--peers` list: `1=host:port,2=host:port`. */
export function parsePeers(text: string): Map<number, string> {
  const peers = new Map<number, string>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const m = /^(\d+)=(.+):(\d+)$/.exec(part);
    if (!m) throw new UsageError(`bad --peers entry "${part}" (expected id=host:port)`);
    const id = parsePositive(m[1]!, "--peers id");
    parsePort(m[3]!, `--peers port of ${id}`);
    if (peers.has(id)) throw new UsageError(`--peers names id ${id} twice`);
    peers.set(id, `${m[2]}:${m[3]}`);
  }
  if (peers.size === 0) throw new UsageError("--peers is empty");
  return peers;
}

function parsePositive(text: string, what: string): number {
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`${what} must be a positive integer, got "${text}"`);
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`${what} must be a positive integer, got "${text}"`);
  }
  return n;
}

const _UNITS = { "": 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const;

/**
 * Parses a byte count: digits, optionally followed by KiB, MiB or GiB (0 allowed).
 *
 * @example
 * ```ts
 * console.log(parseBytes("2GiB", "--quota-bytes")); // 2147483648
 * ```
 */
export function parseBytes(text: string, what: string): number {
  const m = /^(\d+)(KiB|MiB|GiB)?$/.exec(text);
  const n = m === null ? NaN : Number(m[1]) * _UNITS[(m[2] ?? "") as keyof typeof _UNITS];
  if (!Number.isSafeInteger(n)) {
    throw new UsageError(`${what} must be a byte count such as 1073741824 or 1GiB, got "${text}"`);
  }
  return n;
}

function parsePort(text: string, what: string): number {
  const n = parsePositive(text, what);
  if (n > 65535) throw new UsageError(`${what} must be at most 65535, got ${n}`);
  return n;
}

/**
 * Parses and validates node flags; throws {@linkcode UsageError} on a bad command line and
 * returns `"help"` for `--help`.
 *
 * @example
 * ```ts
 * const opts = parseNodeFlags(["--id", "2", "--port", "50052"]);
 * if (opts !== "help") console.log(opts.dataDir); // "data/node-2"
 * ```
 */
export function parseNodeFlags(args: string[]): NodeOptions | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        id: { type: "string" },
        port: { type: "string" },
        host: { type: "string", default: "127.0.0.1" },
        peers: { type: "string", default: DEFAULT_PEERS },
        "data-dir": { type: "string" },
        "log-level": { type: "string", default: "info" },
        "log-format": { type: "string", default: "text" },
        "election-timeout-ms": { type: "string", default: "500" },
        "heartbeat-ms": { type: "string", default: "100" },
        "snapshot-entries": { type: "string", default: "10000" },
        "read-mode": { type: "string", default: "readindex" },
        "quota-bytes": { type: "string", default: "2GiB" },
        "max-delete-range-keys": { type: "string", default: String(DELETE_RANGE_DEFAULT_LIMIT) },
        "initial-cluster-token": { type: "string", default: "" },
        join: { type: "string" },
        "unsafe-local-reads": { type: "boolean", default: false },
        "exit-with-parent": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  if (values.help) return "help";
  if (values.id === undefined) throw new UsageError("--id is required");
  const id = parsePositive(values.id, "--id");
  const peers = parsePeers(values.peers);
  const own = peers.get(id);
  let port: number;
  if (values.port !== undefined) port = parsePort(values.port, "--port");
  else if (own !== undefined) port = Number(own.slice(own.lastIndexOf(":") + 1));
  else throw new UsageError(`--id ${id} is not in --peers; give --port`);
  const logLevel = values["log-level"];
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new UsageError(`--log-level must be debug, info, warn or error, got "${logLevel}"`);
  }
  const logFormat = values["log-format"];
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`--log-format must be text or json, got "${logFormat}"`);
  }
  if (values.host === "") throw new UsageError("--host is empty");
  const electionTimeoutMs = parsePositive(values["election-timeout-ms"], "--election-timeout-ms");
  const heartbeatMs = parsePositive(values["heartbeat-ms"], "--heartbeat-ms");
  if (electionTimeoutMs < 2 * heartbeatMs) {
    throw new UsageError(
      `--election-timeout-ms (${electionTimeoutMs}) must be at least twice --heartbeat-ms (${heartbeatMs})`,
    );
  }
  const snapshotEntries = parsePositive(values["snapshot-entries"], "--snapshot-entries");
  const readMode = values["read-mode"];
  if (readMode !== "readindex" && readMode !== "lease") {
    throw new UsageError(`--read-mode must be readindex or lease, got "${readMode}"`);
  }
  const quotaBytes = parseBytes(values["quota-bytes"], "--quota-bytes");
  const maxDeleteRangeKeys = parsePositive(
    values["max-delete-range-keys"],
    "--max-delete-range-keys",
  );
  if (maxDeleteRangeKeys > DELETE_RANGE_DEFAULT_LIMIT) {
    throw new UsageError(
      `--max-delete-range-keys must be at most ${DELETE_RANGE_DEFAULT_LIMIT} (a DeleteRange ` +
        `holds every replica for a few ms per thousand keys), got ${maxDeleteRangeKeys}`,
    );
  }
  const join = (values.join ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const a of join) {
    const m = /^(.+):(\d+)$/.exec(a);
    if (!m) throw new UsageError(`bad --join address "${a}" (expected host:port)`);
    parsePort(m[2]!, "--join port");
  }
  if (join.length === 0 && own === undefined) {
    throw new UsageError(`--id ${id} is not in --peers (give --join to join a running cluster)`);
  }
  return {
    id,
    port,
    host: values.host,
    peers,
    dataDir: values["data-dir"] ?? `data/node-${id}`,
    logLevel: logLevel as LogLevel,
    logFormat,
    electionTimeoutMs,
    heartbeatMs,
    snapshotEntries,
    readMode,
    clusterToken: values["initial-cluster-token"],
    quotaBytes,
    maxDeleteRangeKeys,
    join,
    unsafeLocalReads: values["unsafe-local-reads"],
    exitWithParent: values["exit-with-parent"],
  };
}
