/**
 * `deno task kv`: the ConcordKV command-line client.
 *
 * ```
 * deno task kv [--endpoints h:p,...] [--timeout-ms N] COMMAND
 *   put KEY VALUE            store VALUE under KEY                      prints OK
 *   get KEY [--serializable] print KEY's value; nothing and exit 1 if it is absent
 *   del KEY                  delete KEY                                 prints 1 (deleted) or 0
 *   scan PREFIX [--limit N]  print KEY<TAB>VALUE for each key with PREFIX, in key order
 *   range START END [--limit N]  same for START <= key < END ("" END: unbounded)
 *   cas KEY EXPECTED NEW     set KEY to NEW if its value is EXPECTED; exit 1 if it is not
 *       [--absent]           (with --absent: `cas KEY NEW` sets KEY only if it is absent)
 *   status                   table of the members: id, address, role, term, indexes, healthy
 *   member list | add ID HOST:PORT [--learner] | promote ID | remove ID | transfer-leader ID
 * ```
 *
 * Exit codes: 0 success, 1 key absent (get) or comparison failed (cas), 2 bad command line,
 * 3 the request failed (one line on stderr, e.g. "kv: unavailable: ...").
 *
 * @module
 */
import { parseArgs } from "node:util";
import { bytesToString, KVClient, KVError, type MemberInfo, type StatusInfo } from "./client.ts";

/** The default endpoints: the default local cluster. */
export const DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053";

/** The usage text. */
export const KV_USAGE = `Usage: deno task kv [--endpoints H:P,...] [--timeout-ms N] COMMAND

Commands:
  put KEY VALUE                 store VALUE under KEY (prints OK)
  get KEY [--serializable]      print KEY's value; prints nothing and exits 1 if absent
  del KEY                       delete KEY (prints 1 if it existed, else 0)
  scan PREFIX [--limit N]       print KEY<TAB>VALUE lines for keys starting with PREFIX
  range START END [--limit N]   print KEY<TAB>VALUE lines for START <= KEY < END ("" = no end)
  cas KEY EXPECTED NEW          set KEY to NEW only if its value is EXPECTED (exit 1 if not)
  cas --absent KEY NEW          set KEY to NEW only if KEY is absent
  status                        table of the members: id, address, role, term, indexes, health
  member list                   the members (id, address, voter/learner, match index, health)
  member add ID HOST:PORT [--learner]
  member promote ID             make learner ID a voter
  member remove ID
  member transfer-leader ID     hand leadership to ID

Options:
  --endpoints LIST   nodes to contact (default ${DEFAULT_ENDPOINTS})
  --timeout-ms N     deadline of the operation, retries included (default 5000)
  -h, --help         print this help

Exit codes: 0 ok, 1 absent key / failed comparison, 2 bad command line, 3 request failed.`;

/** Where the command writes. */
export interface KvIO {
  out(text: string): void;
  err(text: string): void;
}

class _Usage extends Error {}

const _stdio: KvIO = {
  out: (t) => _writeAll(Deno.stdout, t),
  err: (t) => _writeAll(Deno.stderr, t),
};

function _writeAll(w: { writeSync(p: Uint8Array): number }, text: string): void {
  const b = new TextEncoder().encode(text);
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

async function _status(kv: KVClient, io: KvIO, timeoutMs: number): Promise<number> {
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
  const rows = members.map((m) => {
    const s = byId.get(m.id);
    const healthy = s !== undefined &&
      (view.role !== "leader" || m.id === view.nodeId || m.healthy);
    return [
      String(m.id),
      m.address,
      s?.role ?? "unreachable",
      m.kind,
      s ? String(s.term) : "-",
      s ? String(s.commitIndex) : "-",
      s ? String(s.appliedIndex) : "-",
      s ? String(s.lastIndex) : "-",
      s ? _size(s.dbBytes) + (s.quotaBytes > 0 ? `/${_size(s.quotaBytes)}` : "") : "-",
      view.role === "leader" ? String(m.matchIndex) : "-",
      healthy ? "yes" : "no",
    ];
  });
  const leader = view.leaderId !== 0 ? String(view.leaderId) : "none";
  io.out(
    `cluster ${view.clusterId || "-"}  leader ${leader}  term ${view.term}\n` +
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
        "timeout-ms": { type: "string", default: "5000" },
        limit: { type: "string" },
        learner: { type: "boolean", default: false },
        absent: { type: "boolean", default: false },
        serializable: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.out(KV_USAGE + "\n");
      return 0;
    }
    const [cmd, ...pos] = positionals;
    if (cmd === undefined) throw new _Usage("no command given (try --help)");
    const timeoutMs = _id(values["timeout-ms"], "--timeout-ms");
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
        _arity(pos, 1, "del KEY");
        io.out((await kv.delete(pos[0]!)) ? "1\n" : "0\n");
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
        return await _status(kv, io, timeoutMs);
      case "member":
        return await _member(kv, pos, values.learner, io);
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

async function _member(kv: KVClient, pos: string[], learner: boolean, io: KvIO): Promise<number> {
  const [sub, ...rest] = pos;
  switch (sub) {
    case "list": {
      _arity(rest, 0, "member list");
      const l = await kv.memberList();
      io.out(_membersTable(l.members, l.leaderId));
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
