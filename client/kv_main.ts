/**
 * `deno task kv`: the ConcordKV command-line client.
 *
 * ```
 * deno task kv [--endpoints h:p,...] [--timeout-ms N] COMMAND
 *   put KEY VALUE            store VALUE under KEY                      prints OK
 *   get KEY [--serializable] print KEY's value; nothing and exit 1 if it is absent
 *   del KEY                  delete KEY                                 prints 1 (deleted) or 0
 *   del START END | del --prefix PREFIX | del --all
 *                            delete a range atomically                  prints how many
 *       [--batch N]          (--batch: in successive atomic parts of at most N keys)
 *   scan PREFIX [--limit N]  print KEY<TAB>VALUE for each key with PREFIX, in key order
 *   range START END [--limit N]  same for START <= key < END ("" END: unbounded)
 *   cas KEY EXPECTED NEW     set KEY to NEW if its value is EXPECTED; exit 1 if it is not
 *       [--absent]           (with --absent: `cas KEY NEW` sets KEY only if it is absent)
 *   status [--json]          table of the members: id, address, role, term, indexes, healthy
 *   member list | add ID HOST:PORT [--learner] | promote ID | remove ID | transfer-leader ID
 *   backup > FILE            a consistent copy of every key, to standard output
 *   restore < FILE           put every pair of a backup read from standard input into an
 *       [--replace|--merge]  empty cluster (--replace: any cluster, then delete the keys the
 *                            backup lacks; --merge: any cluster, keep them)
 *   defrag                   reclaim the space of deleted keys on every member, one at a time
 * ```
 *
 * Exit codes: 0 success, 1 key absent (get) or comparison failed (cas), 2 bad command line,
 * 3 the request failed (one line on stderr, e.g. "kv: unavailable: ...").
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  backupRecords,
  bytesToString,
  KVClient,
  KVError,
  type MemberInfo,
  type StatusInfo,
  toBytes,
} from "./client.ts";
import { crc32 } from "node:zlib";
import { keyString, prefixEnd } from "../storage/coding.ts";

/** The default endpoints: the default local cluster. */
export const DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053";

/** The usage text. */
export const KV_USAGE = `Usage: deno task kv [--endpoints H:P,...] [--timeout-ms N] COMMAND

Commands:
  put KEY VALUE                 store VALUE under KEY (prints OK)
  get KEY [--serializable]      print KEY's value; prints nothing and exits 1 if absent
  del KEY                       delete KEY (prints 1 if it existed, else 0)
  del START END                 delete every key in START <= KEY < END ("" = no end), at once
  del --prefix PREFIX           delete every key starting with PREFIX, at once
  del --all                     delete every key, at once (these three print how many; a
                                range over the nodes' limit, by default 100,000 keys,
                                is refused: use --batch)
  del ... --batch N             the same range in successive atomic parts of at most N keys
                                (any size of range; not atomic as a whole)
  scan PREFIX [--limit N]       print KEY<TAB>VALUE lines for keys starting with PREFIX
  range START END [--limit N]   print KEY<TAB>VALUE lines for START <= KEY < END ("" = no end)
  cas KEY EXPECTED NEW          set KEY to NEW only if its value is EXPECTED (exit 1 if not)
  cas --absent KEY NEW          set KEY to NEW only if KEY is absent
  status [--json]               table of the members: id, address, role, term, indexes, health
                                (--json: one JSON object, for scripts)
  member list [--json]          the members (id, address, voter/learner, match index, health)
  member add ID HOST:PORT [--learner]
  member promote ID             make learner ID a voter
  member remove ID
  member transfer-leader ID     hand leadership to ID
  backup > FILE                 write a consistent copy of every key (one linearizable point)
  restore < FILE [--replace | --merge]
                                put every pair of a backup (checked chunk by chunk) into an empty
                                cluster; --replace: into any, deleting the keys the backup lacks;
                                --merge: into any, keeping them
  defrag                        reclaim the disk space of deleted and overwritten keys on every
                                member, one member at a time (reads and writes go on)

Options:
  --endpoints LIST   nodes to contact (default ${DEFAULT_ENDPOINTS})
  --timeout-ms N     deadline of the operation, retries included (default 5000; backup 600000,
                     defrag 600000 a member)
  -h, --help         print this help

Exit codes: 0 ok, 1 absent key / failed comparison, 2 bad command line, 3 request failed.`;

/** Where the command writes (and, for `restore`, reads). */
export interface KvIO {
  out(text: string): void;
  err(text: string): void;
  /** Binary output (`backup`). Default: standard output. */
  outBytes?(bytes: Uint8Array): void;
  /** Binary input (`restore`). Default: standard input. */
  input?(): AsyncIterable<Uint8Array>;
}

class _Usage extends Error {}

/** The boolean flags that only some commands take. */
const _FLAG_COMMANDS: [
  "json" | "prefix" | "all" | "merge" | "replace" | "learner" | "absent" | "serializable",
  string[],
][] = [
  ["json", ["status", "member"]],
  ["prefix", ["del", "delete"]],
  ["all", ["del", "delete"]],
  ["merge", ["restore"]],
  ["replace", ["restore"]],
  ["learner", ["member"]],
  ["absent", ["cas"]],
  ["serializable", ["get", "scan", "range"]],
];

const _stdio: KvIO = {
  out: (t) => _writeAll(Deno.stdout, t),
  err: (t) => _writeAll(Deno.stderr, t),
  outBytes: (b) => _writeAll(Deno.stdout, b),
  input: () => Deno.stdin.readable,
};

function _writeAll(w: { writeSync(p: Uint8Array): number }, text: string | Uint8Array): void {
  const b = typeof text === "string" ? new TextEncoder().encode(text) : text;
  let off = 0;
  while (off < b.length) off += w.writeSync(b.subarray(off));
}

function _id(text: string | undefined, what: string): number {
  if (text === undefined) throw new _Usage(`${what} is missing`);
  if (!/^\d+$/.test(text) || Number(text) <= 0 || !Number.isSafeInteger(Number(text))) {
    throw new _Usage(`${what} must be a positive integer, got "${text}"`);
  }
  return Number(text);
}

function _arity(pos: string[], n: number, usage: string): void {
  if (pos.length !== n) throw new _Usage(`usage: ${usage}`);
}

/** Renders rows as a left-aligned table with a header. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function _membersTable(members: MemberInfo[], leaderId: number): string {
  return formatTable(
    ["ID", "ADDRESS", "KIND", "ROLE", "MATCH", "HEALTHY"],
    members.map((m) => [
      String(m.id),
      m.address,
      m.kind,
      m.id === leaderId ? "leader" : (m.role || "-"),
      String(m.matchIndex),
      m.healthy ? "yes" : "no",
    ]),
  );
}

/**
 * What `kv status --json` prints: the cluster as the leader (or the best-informed node that
 * answered) sees it, and each member's own figures; null where a member did not answer, or where
 * only the leader would know (match index).
 */
export interface StatusReport {
  clusterId: string;
  /** 0: no leader known. */
  leaderId: number;
  term: number;
  members: {
    id: number;
    address: string;
    /** "leader", "follower", "candidate", "precandidate", "learner"… or "unreachable". */
    role: string;
    kind: string;
    term: number | null;
    commitIndex: number | null;
    appliedIndex: number | null;
    lastIndex: number | null;
    dbBytes: number | null;
    /** 0: no quota. */
    quotaBytes: number | null;
    matchIndex: number | null;
    healthy: boolean;
  }[];
}

async function _status(
  kv: KVClient,
  io: KvIO,
  timeoutMs: number,
  json: boolean,
): Promise<number> {
  // Ask the given endpoints, then every member they name, for their own view.
  const perAttempt = Math.min(timeoutMs, 1500);
  const seen = await kv.statusAll({ timeoutMs: perAttempt });
  const ok = seen.filter((s): s is StatusInfo => !(s instanceof KVError));
  if (ok.length === 0) {
    const e = seen.find((s): s is KVError => s instanceof KVError);
    throw e ?? new KVError("unavailable", "no endpoint answered");
  }
  // Prefer the leader's view of the membership (it knows match indexes and health).
  ok.sort((a, b) => b.term - a.term || Number(b.role === "leader") - Number(a.role === "leader"));
  let view = ok.find((s) => s.role === "leader") ?? ok[0]!;
  if (view.role !== "leader" && view.leaderId !== 0) {
    // Only the leader knows every member's match index and health: ask it.
    const addr = view.members.find((m) => m.id === view.leaderId)?.address;
    const l = addr
      ? await kv.statusOf(addr, { timeoutMs: perAttempt }).catch(() => undefined)
      : undefined;
    if (l?.role === "leader") {
      view = l;
      ok.push(l);
    }
  }
  const members: MemberInfo[] = view.members.length > 0 ? view.members : ok.map((s) => ({
    id: s.nodeId,
    address: kv.endpoints[seen.indexOf(s)] ?? "",
    kind: "voter",
    role: s.role,
    matchIndex: 0,
    healthy: true,
  }));
  const byId = new Map<number, StatusInfo>(ok.map((s) => [s.nodeId, s]));
  await Promise.all(members.map(async (m) => {
    if (byId.has(m.id)) return;
    const s = await kv.statusOf(m.address, { timeoutMs: perAttempt }).catch((e) => e as Error);
    if (!(s instanceof Error)) byId.set(s.nodeId, s);
  }));
  const report: StatusReport = {
    clusterId: view.clusterId,
    leaderId: view.leaderId,
    term: view.term,
    members: members.map((m) => {
      const s = byId.get(m.id);
      return {
        id: m.id,
        address: m.address,
        role: s?.role ?? "unreachable",
        kind: m.kind,
        term: s?.term ?? null,
        commitIndex: s?.commitIndex ?? null,
        appliedIndex: s?.appliedIndex ?? null,
        lastIndex: s?.lastIndex ?? null,
        dbBytes: s?.dbBytes ?? null,
        quotaBytes: s?.quotaBytes ?? null,
        // Only the leader knows every member's match index and health.
        matchIndex: view.role === "leader" ? m.matchIndex : null,
        healthy: s !== undefined && (view.role !== "leader" || m.id === view.nodeId || m.healthy),
      };
    }),
  };
  if (json) {
    io.out(JSON.stringify(report) + "\n");
    return 0;
  }
  const cell = (v: number | null) => v === null ? "-" : String(v);
  const rows = report.members.map((m) => [
    String(m.id),
    m.address,
    m.role,
    m.kind,
    cell(m.term),
    cell(m.commitIndex),
    cell(m.appliedIndex),
    cell(m.lastIndex),
    m.dbBytes === null ? "-" : _size(m.dbBytes) + (m.quotaBytes ? `/${_size(m.quotaBytes)}` : ""),
    cell(m.matchIndex),
    m.healthy ? "yes" : "no",
  ]);
  const leader = report.leaderId !== 0 ? String(report.leaderId) : "none";
  io.out(
    `cluster ${report.clusterId || "-"}  leader ${leader}  term ${report.term}\n` +
      formatTable(
        [
          "ID",
          "ADDRESS",
          "ROLE",
          "KIND",
          "TERM",
          "COMMIT",
          "APPLIED",
          "LAST",
          "DATA/QUOTA",
          "MATCH",
          "HEALTHY",
        ],
        rows,
      ),
  );
  return 0;
}

/** A byte count for a table cell, without spaces: "96B", "812KiB", "1.5MiB", "2.0GiB". */
function _size(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 ** 2) return `${Math.round(n / 1024)}KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}MiB`;
  return `${(n / 1024 ** 3).toFixed(1)}GiB`;
}

/**
 * Runs the `kv` command with `args`; returns the exit code. Never throws for a user's mistake
 * or a failed request: it prints one line to `io.err`.
 *
 * @example
 * ```ts
 * const code = await runKv(["--endpoints", "127.0.0.1:50051", "get", "k"]);
 * ```
 */
export async function runKv(args: string[], io: KvIO = _stdio): Promise<number> {
  let kv: KVClient | undefined;
  try {
    const { values, positionals } = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        endpoints: { type: "string", default: DEFAULT_ENDPOINTS },
        "timeout-ms": { type: "string" },
        limit: { type: "string" },
        batch: { type: "string" },
        learner: { type: "boolean", default: false },
        absent: { type: "boolean", default: false },
        serializable: { type: "boolean", default: false },
        merge: { type: "boolean", default: false },
        replace: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        prefix: { type: "boolean", default: false },
        all: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.out(KV_USAGE + "\n");
      return 0;
    }
    const [cmd, ...pos] = positionals;
    if (cmd === undefined) throw new _Usage("no command given (try --help)");
    // A flag given to a command that does not take it is a mistake, not something to ignore.
    for (const [flag, commands] of _FLAG_COMMANDS) {
      if (values[flag] === true && !commands.includes(cmd)) {
        throw new _Usage(`--${flag} is for ${commands.filter((c) => c !== "delete").join(", ")}`);
      }
    }
    if (values.batch !== undefined && cmd !== "del" && cmd !== "delete") {
      throw new _Usage("--batch is for del");
    }
    const given = values["timeout-ms"];
    const timeoutMs = given === undefined ? 5000 : _id(given, "--timeout-ms");
    const limit = values.limit === undefined ? 0 : _id(values.limit, "--limit");
    const endpoints = values.endpoints.split(",").map((s) => s.trim()).filter((s) => s !== "");
    if (endpoints.length === 0) throw new _Usage("--endpoints is empty");
    kv = new KVClient({ endpoints, timeoutMs });
    switch (cmd) {
      case "put":
        _arity(pos, 2, "put KEY VALUE");
        await kv.put(pos[0]!, pos[1]!);
        io.out("OK\n");
        return 0;
      case "get": {
        _arity(pos, 1, "get KEY");
        const v = await kv.get(pos[0]!, { serializable: values.serializable });
        if (v === undefined) return 1;
        io.out(bytesToString(v) + "\n");
        return 0;
      }
      case "del":
      case "delete": {
        const usage = "del KEY | del START END | del --prefix PREFIX | del --all [--batch N]";
        let range: { start: Uint8Array; end: Uint8Array } | undefined;
        if (values.all) {
          _arity(pos, 0, usage);
          range = { start: new Uint8Array(0), end: new Uint8Array(0) };
        } else if (values.prefix) {
          _arity(pos, 1, usage);
          if (pos[0] === "") throw new _Usage("--prefix is empty (to delete every key: --all)");
          const start = toBytes(pos[0]!);
          range = { start, end: prefixEnd(start) ?? new Uint8Array(0) };
        } else if (pos.length === 2) {
          if (pos[0] === "") throw new _Usage("START is empty (to delete every key: --all)");
          range = { start: toBytes(pos[0]!), end: toBytes(pos[1]!) };
        } else {
          _arity(pos, 1, usage);
          if (values.batch !== undefined) throw new _Usage("--batch is for deleting a range");
          io.out((await kv.delete(pos[0]!)) ? "1\n" : "0\n");
          return 0;
        }
        if (values.batch !== undefined) {
          const batch = _id(values.batch, "--batch");
          const done = { deleted: 0 };
          try {
            await deleteInBatches(kv, range.start, range.end, batch, done);
          } catch (e) {
            if (!(e instanceof KVError)) throw e;
            io.err(`kv: ${e.kind}: ${e.message} (stopped after deleting ${done.deleted} keys)\n`);
            return 3;
          }
          io.out(`${done.deleted}\n`);
        } else {
          let deleted: number;
          try {
            // A prefix is the range [prefix, prefixEnd); only "every key" has no start.
            deleted = values.all
              ? await kv.deleteAll()
              : await kv.deleteRange(range.start, range.end);
          } catch (e) {
            if (!(e instanceof KVError) || e.kind !== "resource_exhausted") throw e;
            io.err(`kv: ${e.kind}: ${e.message}; --batch N deletes it in parts of N keys\n`);
            return 3;
          }
          io.out(`${deleted}\n`);
        }
        return 0;
      }
      case "scan":
      case "range": {
        const r = cmd === "scan"
          ? (_arity(pos, 1, "scan PREFIX [--limit N]"),
            await kv.scan(pos[0]!, { limit, serializable: values.serializable }))
          : (_arity(pos, 2, "range START END [--limit N]"),
            await kv.range(pos[0]!, pos[1]!, { limit, serializable: values.serializable }));
        io.out(
          r.pairs.map((p) => `${bytesToString(p.key)}\t${bytesToString(p.value)}\n`).join(""),
        );
        if (r.more) io.err("kv: more keys follow (limit reached)\n");
        return 0;
      }
      case "cas": {
        let res;
        if (values.absent) {
          _arity(pos, 2, "cas --absent KEY NEW");
          res = await kv.cas(pos[0]!, null, pos[1]!);
        } else {
          _arity(pos, 3, "cas KEY EXPECTED NEW");
          res = await kv.cas(pos[0]!, pos[1]!, pos[2]!);
        }
        if (res.success) {
          io.out("OK\n");
          return 0;
        }
        io.err(
          res.current === undefined
            ? "kv: comparison failed: the key is absent\n"
            : `kv: comparison failed: current value is ${
              JSON.stringify(bytesToString(res.current))
            }\n`,
        );
        return 1;
      }
      case "status":
        _arity(pos, 0, "status");
        return await _status(kv, io, timeoutMs, values.json);
      case "member":
        return await _member(kv, pos, values.learner, values.json, io);
      case "backup":
        _arity(pos, 0, "backup");
        // A backup streams the whole store: ten minutes unless --timeout-ms says otherwise.
        return await _backup(kv, io, given === undefined ? 600_000 : timeoutMs);
      case "restore":
        _arity(pos, 0, "restore [--replace | --merge]");
        if (values.merge && values.replace) {
          throw new _Usage("restore takes --replace or --merge, not both");
        }
        return await _restore(
          kv,
          io,
          values.replace ? "replace" : values.merge ? "merge" : "empty",
        );
      case "defrag":
        _arity(pos, 0, "defrag");
        return await _defrag(kv, io, given === undefined ? 600_000 : timeoutMs);
      default:
        throw new _Usage(`unknown command "${cmd}" (try --help)`);
    }
  } catch (e) {
    if (e instanceof _Usage) {
      io.err(`kv: ${e.message}\n`);
      return 2;
    }
    if (e instanceof KVError) {
      if (e.kind === "usage") {
        io.err(`kv: ${e.message}\n`);
        return 2;
      }
      io.err(`kv: ${e.kind}: ${e.message}\n`);
      return 3;
    }
    if (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS")) {
      io.err(`kv: ${e.message}\n`);
      return 2;
    }
    io.err(`kv: ${e instanceof Error ? e.message : String(e)}\n`);
    return 3;
  } finally {
    kv?.close();
  }
}

async function _member(
  kv: KVClient,
  pos: string[],
  learner: boolean,
  json: boolean,
  io: KvIO,
): Promise<number> {
  const [sub, ...rest] = pos;
  switch (sub) {
    case "list": {
      _arity(rest, 0, "member list");
      const l = await kv.memberList();
      io.out(json ? JSON.stringify(l) + "\n" : _membersTable(l.members, l.leaderId));
      return 0;
    }
    case "add": {
      _arity(rest, 2, "member add ID HOST:PORT [--learner]");
      const id = _id(rest[0], "ID");
      if (!/^.+:\d+$/.test(rest[1]!)) throw new _Usage(`bad address "${rest[1]}" (host:port)`);
      const members = await kv.memberAdd(id, rest[1]!, { learner });
      io.out(`added member ${id}${learner ? " as a learner" : ""}\n`);
      io.out(_membersTable(members, 0));
      return 0;
    }
    case "promote": {
      _arity(rest, 1, "member promote ID");
      const id = _id(rest[0], "ID");
      const members = await kv.memberPromote(id);
      io.out(`promoted member ${id} to voter\n`);
      io.out(_membersTable(members, 0));
      return 0;
    }
    case "remove": {
      _arity(rest, 1, "member remove ID");
      const id = _id(rest[0], "ID");
      const members = await kv.memberRemove(id);
      io.out(`removed member ${id}\n`);
      io.out(_membersTable(members, 0));
      return 0;
    }
    case "transfer-leader": {
      _arity(rest, 1, "member transfer-leader ID");
      const id = _id(rest[0], "ID");
      const leader = await kv.transferLeader(id);
      io.out(`leader: ${leader}\n`);
      return 0;
    }
    case undefined:
      throw new _Usage("usage: member list|add|promote|remove|transfer-leader ...");
    default:
      throw new _Usage(`unknown member command "${sub}"`);
  }
}

/**
 * The backup file: {@linkcode BACKUP_MAGIC}, then the Backup RPC's chunks as
 * `length:u32le crc32:u32le data`, then `0:u32le crc32:u32le pairs:u64le index:u64le` (the CRC
 * over the 16 bytes after it).
 */
export const BACKUP_MAGIC: Uint8Array = new TextEncoder().encode("CKVBAK01");

async function _backup(kv: KVClient, io: KvIO, timeoutMs: number): Promise<number> {
  const write = io.outBytes ?? ((b: Uint8Array) => _writeAll(Deno.stdout, b));
  write(BACKUP_MAGIC);
  let pairs = 0;
  let index = 0;
  for await (const c of kv.backup({ timeoutMs })) {
    const head = new Uint8Array(8);
    const v = new DataView(head.buffer);
    v.setUint32(0, c.data.length, true);
    v.setUint32(4, crc32(c.data) >>> 0, true);
    write(head);
    write(c.data);
    pairs += c.pairs;
    index = c.index;
  }
  const end = new Uint8Array(24);
  const v = new DataView(end.buffer);
  v.setBigUint64(8, BigInt(pairs), true);
  v.setBigUint64(16, BigInt(index), true);
  v.setUint32(4, crc32(end.subarray(8)) >>> 0, true);
  write(end);
  io.err(`kv: backup of ${pairs} pairs at log index ${index}\n`);
  return 0;
}

/** Reads exactly n bytes from a byte stream (undefined at a clean end before any byte). */
class _Reader {
  #buf = new Uint8Array(0);
  #it: AsyncIterator<Uint8Array>;
  offset = 0;
  constructor(src: AsyncIterable<Uint8Array>) {
    this.#it = src[Symbol.asyncIterator]();
  }
  async read(n: number): Promise<Uint8Array | undefined> {
    while (this.#buf.length < n) {
      const r = await this.#it.next();
      if (r.done) {
        if (this.#buf.length === 0) return undefined;
        throw new Error(`backup is truncated at byte ${this.offset + this.#buf.length}`);
      }
      const b = new Uint8Array(this.#buf.length + r.value.length);
      b.set(this.#buf);
      b.set(r.value, this.#buf.length);
      this.#buf = b;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    this.offset += n;
    return out;
  }
}

/**
 * `kv defrag`: a full compaction of every member's engine, one member after the other (as etcd
 * advises for its defragmentation), so that at most one node is busy with it at a time.
 */
async function _defrag(kv: KVClient, io: KvIO, timeoutMs: number): Promise<number> {
  const list = await kv.memberList({ timeoutMs: Math.min(timeoutMs, 5000) }).catch(() => undefined);
  const targets = list !== undefined && list.members.length > 0
    ? list.members.map((m) => ({ label: `member ${m.id} (${m.address})`, address: m.address }))
    : kv.endpoints.map((e) => ({ label: e, address: e }));
  let failed = 0;
  for (const t of targets) {
    try {
      const r = await kv.defragment(t.address, { timeoutMs });
      io.out(`${t.label}: ${_size(r.dbBytesBefore)} → ${_size(r.dbBytesAfter)}\n`);
    } catch (e) {
      failed++;
      io.err(
        `kv: ${t.label}: ${e instanceof KVError ? `${e.kind}: ` : ""}${
          e instanceof Error ? e.message : String(e)
        }\n`,
      );
    }
  }
  return failed === 0 ? 0 : 3;
}

/**
 * How `restore` treats keys already in the cluster: "empty" refuses a cluster that holds any key,
 * "merge" puts the backup's pairs over what is there, "replace" also deletes every key the backup
 * does not have, once the whole backup has been read, checked and written.
 */
type RestoreMode = "empty" | "merge" | "replace";

async function _restore(kv: KVClient, io: KvIO, mode: RestoreMode): Promise<number> {
  if (mode === "empty") {
    const first = (await kv.range("", "", { limit: 1 })).pairs[0];
    if (first !== undefined) {
      io.err(
        `kv: restore refused: the cluster is not empty (it holds ${
          JSON.stringify(bytesToString(first.key))
        }, maybe more); restore into an empty cluster, or pass --replace to make the cluster ` +
          `hold exactly the backup (keys it does not have are deleted), or --merge to put the ` +
          `backup's pairs over the keys already there\n`,
      );
      return 3;
    }
  }
  const r = new _Reader(io.input?.() ?? Deno.stdin.readable);
  // With --replace: every key of the backup, as a binary string, to know which others to delete.
  const keys = mode === "replace" ? new Set<string>() : undefined;
  let pairs = 0;
  const fail = (why: string): number => {
    io.err(
      `kv: restore stopped: ${why}; ${pairs} pairs before it were written` +
        (keys !== undefined ? ", no key was deleted" : "") + "\n",
    );
    return 3;
  };
  const magic = await r.read(BACKUP_MAGIC.length).catch(() => undefined);
  if (magic === undefined || !magic.every((b, i) => b === BACKUP_MAGIC[i])) {
    return fail("the input is not a ConcordKV backup (kv backup writes one)");
  }
  for (let chunk = 0;; chunk++) {
    let head;
    try {
      head = await r.read(8);
    } catch (e) {
      return fail((e as Error).message);
    }
    if (head === undefined) return fail(`backup is truncated at byte ${r.offset}: no end record`);
    const v = new DataView(head.buffer);
    const len = v.getUint32(0, true);
    const crc = v.getUint32(4, true);
    let data;
    try {
      data = await r.read(len === 0 ? 16 : len);
    } catch (e) {
      return fail((e as Error).message);
    }
    if (data === undefined || (crc32(data) >>> 0) !== crc) {
      return fail(`chunk ${chunk} at byte ${r.offset - len - 8} fails its checksum`);
    }
    if (len === 0) {
      const t = new DataView(data.buffer);
      const want = Number(t.getBigUint64(0, true));
      if (want !== pairs) return fail(`the backup says ${want} pairs, ${pairs} were read`);
      let deleted = "";
      if (keys !== undefined) {
        try {
          deleted = `; deleted ${await deleteKeysNotIn(kv, keys)} keys not in it`;
        } catch (e) {
          if (!(e instanceof KVError)) throw e;
          io.err(
            `kv: restore stopped while deleting the keys the backup does not have: ${e.kind}: ` +
              `${e.message}; all ${pairs} pairs were written (run it again to finish)\n`,
          );
          return 3;
        }
      }
      io.out(
        `restored ${pairs} pairs (backup of log index ${t.getBigUint64(8, true)})${deleted}\n`,
      );
      return 0;
    }
    let records;
    try {
      records = [...backupRecords(data)];
    } catch (e) {
      return fail(`chunk ${chunk}: ${(e as Error).message}`);
    }
    // Up to 32 puts in flight; each is exactly-once, so a retried one is applied once.
    for (let i = 0; i < records.length; i += 32) {
      try {
        await Promise.all(records.slice(i, i + 32).map((p) => kv.put(p.key, p.value)));
      } catch (e) {
        if (!(e instanceof KVError)) throw e;
        const again = mode === "empty" && pairs > 0
          ? " (to finish, run it again with --merge)"
          : "";
        return fail(`${e.kind}: ${e.message}${again}`);
      }
      pairs += Math.min(32, records.length - i);
    }
    if (keys !== undefined) { for (const p of records) keys.add(keyString(p.key)); }
  }
}

/**
 * Deletes every key of the cluster that is not in `keep` (keys as {@linkcode keyString} strings),
 * reading the key space `pageSize` keys at a time; returns how many it deleted.
 */
export async function deleteKeysNotIn(
  kv: KVClient,
  keep: Set<string>,
  pageSize = 1000,
): Promise<number> {
  let deleted = 0;
  let start: Uint8Array = new Uint8Array(0);
  for (;;) {
    const page = await kv.range(start, "", { limit: pageSize });
    const others = page.pairs.filter((p) => !keep.has(keyString(p.key)));
    for (let i = 0; i < others.length; i += 32) {
      const existed = await Promise.all(others.slice(i, i + 32).map((p) => kv.delete(p.key)));
      deleted += existed.filter((e) => e).length;
    }
    const last = page.pairs.at(-1)?.key;
    if (!page.more || last === undefined) return deleted;
    start = _keyAfter(last);
  }
}

/** The smallest key after `key`: `key` followed by a zero byte. */
function _keyAfter(key: Uint8Array): Uint8Array {
  const after = new Uint8Array(key.length + 1);
  after.set(key);
  return after;
}

/**
 * Deletes every key with `start <= key < end` (empty `start`: from the first key; empty `end`: no
 * bound) as successive atomic DeleteRanges of at most `batch` keys each: it reads the next `batch`
 * keys, deletes from the read's start to just past its last key, and goes on until a read finds
 * nothing. A part the nodes refuse as too large (over their `--max-delete-range-keys`) is read and
 * tried again at half the size. Not atomic as a whole: a reader meanwhile may see part of the range
 * gone, and a key written behind the cursor survives. `done.deleted` counts as it goes, so a
 * caller whose request fails can tell how far it got.
 */
export async function deleteInBatches(
  kv: KVClient,
  start: Uint8Array,
  end: Uint8Array,
  batch: number,
  done: { deleted: number } = { deleted: 0 },
): Promise<number> {
  let from = start;
  let size = batch;
  for (;;) {
    const page = await kv.range(from, end, { limit: size });
    const first = page.pairs[0]?.key;
    if (first === undefined) return done.deleted;
    // [from, after) held exactly the page's keys when it was read (a DeleteRange needs a
    // non-empty start: `first` for --all).
    const after = _keyAfter(page.pairs.at(-1)!.key);
    try {
      done.deleted += await kv.deleteRange(from.length > 0 ? from : first, after);
    } catch (e) {
      // More keys than the nodes' --max-delete-range-keys: the same part again, half as large.
      if (!(e instanceof KVError) || e.kind !== "resource_exhausted" || size === 1) throw e;
      size = Math.max(1, Math.floor(size / 2));
      continue;
    }
    from = after;
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await runKv(Deno.args);
  } catch (e) {
    console.error(`kv: ${e instanceof Error ? e.message : String(e)}`);
    code = 3;
  }
  Deno.exit(code);
}
