/**
 * Jepsen-style operation histories: what each client asked, when, and what it saw.
 *
 * A history is a list of {@linkcode Op}s on keys of a register-with-delete store, plus the nemesis
 * {@linkcode HistoryEvent}s (faults and heals) that happened meanwhile. Times are milliseconds of a
 * monotonic clock (`performance.now()`) relative to the start of the run.
 *
 * Outcomes:
 * - `ok`: the operation took effect exactly once between `invoke` and `complete`; its result is known.
 * - `fail`: the operation definitely did not take effect (the checker ignores it).
 * - `unknown`: the client gave up (a timeout, a dropped connection after sending); the operation may
 *   take effect at any time after `invoke`, or never. `complete` is when the client gave up (drawn
 *   in timelines); the checker treats the completion as +∞ and the output as unconstrained.
 *
 * Values are strings; `null` means "absent".
 *
 * JSON format (`version: 1`): `{ version, meta, ops, events }` exactly as the TypeScript types below.
 *
 * @example
 * ```ts
 * import { saveHistory, loadHistory, type History } from "./history.ts";
 * const h: History = { version: 1, meta: {}, events: [], ops: [
 *   { id: 0, client: 0, key: "k", f: "put", value: "1", invoke: 0, complete: 2, outcome: "ok" },
 * ] };
 * await saveHistory("/tmp/h.json", h);
 * const back = await loadHistory("/tmp/h.json");
 * ```
 *
 * @module
 */

/** Operation kinds of the register-with-delete model. */
export type OpKind = "put" | "get" | "delete" | "cas";

/** What the client learned about an operation. */
export type Outcome = "ok" | "fail" | "unknown";

/** One client operation. */
export interface Op {
  /** Unique within the history. */
  id: number;
  /** The client (process) that ran it; a client runs one operation at a time. */
  client: number;
  key: string;
  f: OpKind;
  /** `put`: the value written; `cas`: the new value (`null`: the swap deletes the key). */
  value?: string | null;
  /** `cas`: the expected current value (`null`: expect the key absent). */
  expected?: string | null;
  /** Invocation time (ms, monotonic). */
  invoke: number;
  /** Completion time (ms); for `unknown` ops, when the client gave up. */
  complete: number;
  outcome: Outcome;
  /** `get` (ok): the value read (`null`: absent). */
  read?: string | null;
  /** `cas` (ok): whether the swap happened. */
  success?: boolean;
  /** `cas` (ok, not successful): the current value the store reported, if it reported one. */
  current?: string | null;
  /** The node the request was sent to (informational). */
  node?: number;
  /** The error text, for `fail` and `unknown` ops (informational). */
  error?: string;
}

/** A nemesis action or note, with its time (same clock as ops). */
export interface HistoryEvent {
  time: number;
  kind: "fault" | "heal" | "info";
  text: string;
}

/** A recorded run. */
export interface History {
  version: 1;
  /** Free-form run information: seed, nodes, nemesis, ports, start wall time, ... */
  meta: Record<string, unknown>;
  ops: Op[];
  events: HistoryEvent[];
}

/** Writes `history` as JSON (ops one per line, so diffs and `grep` work). */
export async function saveHistory(path: string, history: History): Promise<void> {
  await Deno.writeTextFile(path, historyToJson(history));
}

/** The JSON text of a history (ops and events one per line). */
export function historyToJson(history: History): string {
  const lines = [
    "{",
    `"version": 1,`,
    `"meta": ${JSON.stringify(history.meta)},`,
    `"events": [`,
    history.events.map((e) => JSON.stringify(e)).join(",\n"),
    `],`,
    `"ops": [`,
    history.ops.map((o) => JSON.stringify(o)).join(",\n"),
    "]",
    "}",
  ];
  return lines.join("\n") + "\n";
}

/** Reads a history written by {@linkcode saveHistory}; throws on a malformed file. */
export async function loadHistory(path: string): Promise<History> {
  return parseHistory(await Deno.readTextFile(path));
}

/** Parses and validates history JSON. */
export function parseHistory(text: string): History {
  const raw = JSON.parse(text) as Partial<History>;
  if (raw.version !== 1) throw new Error(`unsupported history version ${raw.version}`);
  if (!Array.isArray(raw.ops)) throw new Error("history has no ops array");
  for (const op of raw.ops) validateOp(op);
  return {
    version: 1,
    meta: raw.meta ?? {},
    ops: raw.ops,
    events: Array.isArray(raw.events) ? raw.events : [],
  };
}

/** Throws if `op` is not a well-formed {@linkcode Op}. */
export function validateOp(op: Op): void {
  const where = `op ${JSON.stringify(op)}`;
  if (typeof op.id !== "number" || typeof op.key !== "string") {
    throw new Error(`${where}: bad id/key`);
  }
  if (!["put", "get", "delete", "cas"].includes(op.f)) throw new Error(`${where}: bad f`);
  if (!["ok", "fail", "unknown"].includes(op.outcome)) throw new Error(`${where}: bad outcome`);
  if (typeof op.invoke !== "number" || typeof op.complete !== "number") {
    throw new Error(`${where}: bad times`);
  }
  if (op.complete < op.invoke) throw new Error(`${where}: completes before it is invoked`);
  if (op.f === "put" && typeof op.value !== "string") throw new Error(`${where}: put needs value`);
  if (op.f === "cas" && op.expected === undefined) throw new Error(`${where}: cas needs expected`);
  if (op.outcome === "ok") {
    if (op.f === "get" && op.read === undefined) throw new Error(`${where}: ok get needs read`);
    if (op.f === "cas" && typeof op.success !== "boolean") {
      throw new Error(`${where}: ok cas needs success`);
    }
  }
}

/** A short human description of an operation, e.g. `put k=v3`, `get k→absent`, `cas k v1→v2 ✗`. */
export function describeOp(op: Op): string {
  const v = (x: string | null | undefined) => (x === null ? "∅" : x === undefined ? "?" : x);
  let s: string;
  switch (op.f) {
    case "put":
      s = `put ${op.key}=${v(op.value)}`;
      break;
    case "delete":
      s = `del ${op.key}`;
      break;
    case "get":
      s = `get ${op.key}` + (op.outcome === "ok" ? `→${v(op.read)}` : "");
      break;
    case "cas":
      s = `cas ${op.key} ${v(op.expected)}→${v(op.value ?? null)}`;
      if (op.outcome === "ok") {
        s += op.success ? " ✓" : " ✗" + (op.current !== undefined ? `(${v(op.current)})` : "");
      }
      break;
  }
  if (op.outcome !== "ok") s += ` [${op.outcome}]`;
  return s;
}
