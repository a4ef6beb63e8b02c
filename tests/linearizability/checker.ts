/**
 * A linearizability checker for a key-value store whose keys are registers with delete.
 *
 * The history is partitioned by key (linearizability is compositional: a history is linearizable
 * iff each key's sub-history is), and each key is checked with Wing & Gong's search as refined by
 * Lowe ("just-in-time linearization") and implemented by Porcupine: events sorted by time in a
 * doubly linked list; at each step either linearize a pending call whose model step is valid, or,
 * on reaching a return event whose call was not linearized yet, backtrack. Visited configurations
 * (set of linearized ops, model state) are memoised, so each is explored once.
 *
 * The model ({@linkcode step}): a register holding a string or nothing.
 * - `put(v)` → v; `delete` → absent;
 * - `get` must read the current value (or absent);
 * - `cas(expected, new)`: if current = expected (absent when `expected` is null) → new (absent when
 *   the new value is null), reported `success: true`; otherwise unchanged, `success: false` (and
 *   the reported `current`, if any, must be the current value).
 *
 * Outcomes: `fail` ops are left out; `unknown` ops return at +∞ (they may take effect at any point
 * after their invocation, or never — "never" is the same as "last"), with an unconstrained output.
 * An unknown `get` is therefore left out, and so is an unknown `put`/`cas` whose (unique) value no
 * other op ever observes: placing it last explains any history the op could explain.
 *
 * Memoisation uses a Zobrist hash of the linearized set (three 32-bit lanes, updated in O(1) per
 * step) plus the state, rather than copying a bitset: a 96-bit collision is what it would take
 * to prune a configuration wrongly.
 *
 * A time budget turns a search that would take too long into `unknown` instead of hanging.
 *
 * @example
 * ```ts
 * import { checkHistory } from "./checker.ts";
 * const r = checkHistory([
 *   { id: 0, client: 0, key: "x", f: "put", value: "1", invoke: 0, complete: 10, outcome: "ok" },
 *   { id: 1, client: 1, key: "x", f: "get", read: "1", invoke: 5, complete: 15, outcome: "ok" },
 * ]);
 * console.log(r.result); // "yes"
 * ```
 *
 * @module
 */
import { describeOp, type History, type Op } from "./history.ts";

/**
 * Model state: the value, `null` for absent, or `undefined` for "any written value or absent"
 * (used when checking a window cut out of a longer history, whose initial state is not known).
 */
export type State = string | null | undefined;

const INVALID = Symbol("invalid");

/**
 * The model's step: the state after `op` from `state`, or `INVALID` if `op`'s recorded output is
 * impossible from `state`. `written` (used only from the unknown state) holds every value some op
 * of the key writes, so a read of a value nobody wrote stays invalid.
 */
function step(state: State, op: Op, written: Set<string>): State | typeof INVALID {
  const known = op.outcome === "ok";
  const pin = (v: string | null): boolean => v === null || written.has(v);
  switch (op.f) {
    case "put":
      return op.value ?? null;
    case "delete":
      return null;
    case "get": {
      // Unknown gets are filtered out before the search; treat one as a no-op.
      if (!known) return state;
      const read = op.read ?? null;
      if (state === undefined) return pin(read) ? read : INVALID;
      return state === read ? state : INVALID;
    }
    case "cas": {
      const expected = op.expected ?? null;
      const next = op.value ?? null;
      if (!known) {
        if (state === undefined) return undefined;
        return state === expected ? next : state;
      }
      if (op.success) {
        if (state === undefined) return pin(expected) ? next : INVALID;
        return state === expected ? next : INVALID;
      }
      if (op.current !== undefined) {
        const cur = op.current;
        if (cur === expected) return INVALID;
        if (state === undefined) return pin(cur) ? cur : INVALID;
        return state === cur ? state : INVALID;
      }
      if (state === undefined) return undefined;
      return state !== expected ? state : INVALID;
    }
  }
}

/** The verdict of one key. */
export type Verdict = "ok" | "violation" | "unknown";

/** Where a key's search died, when it found a violation. */
export interface Violation {
  key: string;
  /** The op whose completion the deepest linearization attempt could not get past. */
  blocked: Op;
  /** The last ops of the deepest linearization found, in linearization order. */
  linearizedTail: Op[];
  /** The model state after `linearizedTail`. */
  stateBefore: string | null;
  /** The ops (of this key, not failed) overlapping the failing window, in invocation order. */
  window: Op[];
  /** A smallest subset of `window` that is not linearizable from any (written) initial state. */
  minimal: Op[];
  /** For context: the ops outside the window that wrote values the window's ops observed. */
  writers: Op[];
}

/** Result of one key. */
export interface KeyResult {
  key: string;
  verdict: Verdict;
  /** Ops searched (after dropping failed and unobservable unknown ops). */
  ops: number;
  /** Search steps taken. */
  steps: number;
  violation?: Violation;
}

/** Result of a whole history. */
export interface CheckResult {
  /** `yes` if every key is linearizable; `no` if some key is not; otherwise `unknown`. */
  result: "yes" | "no" | "unknown";
  keys: KeyResult[];
  /** The first violation found (keys are checked in name order). */
  violation?: Violation;
  elapsedMs: number;
}

/** Options of {@linkcode checkHistory}. */
export interface CheckOptions {
  /** Total time budget in ms for all keys (default 60 000). Past it a key's verdict is `unknown`. */
  timeBudgetMs?: number;
  /** Compute the window and minimal subset of a violation (default true). */
  explain?: boolean;
}

/**
 * Checks a history (or a list of ops) for linearizability.
 *
 * @example
 * ```ts
 * const r = checkHistory([
 *   { id: 0, client: 0, key: "x", f: "put", value: "1", invoke: 0, complete: 1, outcome: "ok" },
 *   { id: 1, client: 1, key: "x", f: "get", read: null, invoke: 2, complete: 3, outcome: "ok" },
 * ]);
 * console.log(r.result); // "no": a stale read
 * ```
 */
export function checkHistory(history: History | Op[], opts: CheckOptions = {}): CheckResult {
  const t0 = performance.now();
  const ops = Array.isArray(history) ? history : history.ops;
  const deadline = t0 + (opts.timeBudgetMs ?? 60_000);
  const byKey = new Map<string, Op[]>();
  for (const op of ops) {
    let list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, list = []);
    list.push(op);
  }
  const keys: KeyResult[] = [];
  let violation: Violation | undefined;
  for (const key of [...byKey.keys()].sort()) {
    const r = checkKey(key, byKey.get(key)!, deadline, opts.explain ?? true);
    keys.push(r);
    if (r.violation !== undefined && violation === undefined) violation = r.violation;
  }
  const result = keys.some((k) => k.verdict === "violation")
    ? "no"
    : keys.every((k) => k.verdict === "ok")
    ? "yes"
    : "unknown";
  return { result, keys, violation, elapsedMs: performance.now() - t0 };
}

/** The ops of one key that the search must consider (see the module documentation). */
export function relevantOps(ops: Op[]): Op[] {
  const live = ops.filter((o) => o.outcome !== "fail" && !(o.f === "get" && o.outcome !== "ok"));
  // Values observed by some op; values written by more than one op (then nothing is dropped).
  const observed = new Set<string>();
  const writers = new Map<string, number>();
  let casFailWithoutCurrent = false;
  for (const o of live) {
    if (o.f === "get" && typeof o.read === "string") observed.add(o.read);
    if (o.f === "cas" && typeof o.expected === "string") observed.add(o.expected);
    if (o.f === "cas" && o.outcome === "ok" && !o.success) {
      if (o.current === undefined) casFailWithoutCurrent = true;
      else if (o.current !== null) observed.add(o.current);
    }
    if ((o.f === "put" || o.f === "cas") && typeof o.value === "string") {
      writers.set(o.value, (writers.get(o.value) ?? 0) + 1);
    }
  }
  // A failed cas that did not report the current value observes "not expected", which an
  // unobserved write could explain: then keep every write.
  if (casFailWithoutCurrent) return live;
  return live.filter((o) =>
    !(o.outcome === "unknown" && (o.f === "put" || o.f === "cas") && typeof o.value === "string" &&
      writers.get(o.value) === 1 && !observed.has(o.value))
  );
}

interface Entry {
  op: number; // index into ops
  call: boolean;
  match: Entry | undefined; // for a call: its return
  prev: Entry | undefined;
  next: Entry | undefined;
}

/** Search outcome of {@linkcode search}. */
interface SearchResult {
  verdict: Verdict;
  steps: number;
  /** Deepest point reached (on violation). */
  blocked?: number;
  tail?: number[];
  stateBefore?: State;
}

/** A small deterministic PRNG (mulberry32) for Zobrist keys. */
function _mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function _stateKey(s: State): string {
  return s === null ? "\u0000" : s === undefined ? "\u0001" : "s" + s;
}

/**
 * Just-in-time linearization of `ops` (one key) from `init`. Returns `ok`, `violation` (with the
 * deepest point reached) or `unknown` (deadline passed).
 */
function search(ops: Op[], init: State, written: Set<string>, deadline: number): SearchResult {
  const n = ops.length;
  if (n === 0) return { verdict: "ok", steps: 0 };
  // Events: calls at invoke, returns at complete (+∞ for unknown); at equal times calls first, so
  // touching ops count as concurrent (the lenient reading).
  type Ev = { t: number; call: boolean; op: number };
  const evs: Ev[] = [];
  for (let i = 0; i < n; i++) {
    const o = ops[i]!;
    evs.push({ t: o.invoke, call: true, op: i });
    evs.push({ t: o.outcome === "unknown" ? Infinity : o.complete, call: false, op: i });
  }
  evs.sort((a, b) => a.t - b.t || (a.call === b.call ? a.op - b.op : a.call ? -1 : 1));
  const head: Entry = { op: -1, call: false, match: undefined, prev: undefined, next: undefined };
  const returns = new Array<Entry | undefined>(n);
  const calls = new Array<Entry | undefined>(n);
  let last = head;
  for (const ev of evs) {
    const e: Entry = { op: ev.op, call: ev.call, match: undefined, prev: last, next: undefined };
    last.next = e;
    last = e;
    if (ev.call) calls[ev.op] = e;
    else returns[ev.op] = e;
  }
  for (let i = 0; i < n; i++) calls[i]!.match = returns[i];

  const rnd = _mulberry32(0x9e3779b9 ^ n);
  const z1 = new Uint32Array(n), z2 = new Uint32Array(n), z3 = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    z1[i] = rnd();
    z2[i] = rnd();
    z3[i] = rnd();
  }
  // Unknown deletes are interchangeable (same effect, no output, completion +∞): any
  // linearization can be reordered so they take effect in invocation order, so only that order
  // is searched. prevUnknownDelete[i] is the unknown delete invoked just before op i (-1: none).
  const prevUnknownDelete = new Int32Array(n).fill(-1);
  {
    let prev = -1;
    const order = [...ops.keys()].sort((a, b) => ops[a]!.invoke - ops[b]!.invoke || a - b);
    for (const i of order) {
      const o = ops[i]!;
      if (o.f === "delete" && o.outcome === "unknown") {
        prevUnknownDelete[i] = prev;
        prev = i;
      }
    }
  }
  const linearized = new Uint8Array(n);
  let h1 = 0, h2 = 0, h3 = 0;
  const seen = new Set<string>();
  const stack: { entry: Entry; state: State }[] = [];
  let state: State = init;
  let entry = head.next;
  let steps = 0;
  let deepest = -1;
  let blocked = -1;
  let tail: number[] = [];
  let stateBefore: State = init;

  const lift = (e: Entry) => {
    e.prev!.next = e.next;
    if (e.next) e.next.prev = e.prev;
    const m = e.match!;
    m.prev!.next = m.next;
    if (m.next) m.next.prev = m.prev;
  };
  const unlift = (e: Entry) => {
    const m = e.match!;
    m.prev!.next = m;
    if (m.next) m.next.prev = m;
    e.prev!.next = e;
    if (e.next) e.next.prev = e;
  };

  while (head.next !== undefined) {
    if ((++steps & 0xfff) === 0 && performance.now() > deadline) {
      return { verdict: "unknown", steps };
    }
    if (entry === undefined) {
      // Unreachable: the list always ends with a return entry.
      throw new Error("checker: ran off the event list");
    }
    if (entry.call) {
      const i = entry.op;
      const before = prevUnknownDelete[i]!;
      const next = before >= 0 && linearized[before] === 0
        ? INVALID
        : step(state, ops[i]!, written);
      if (next !== INVALID) {
        const n1 = h1 ^ z1[i]!, n2 = h2 ^ z2[i]!, n3 = h3 ^ z3[i]!;
        const key = `${n1},${n2},${n3},${_stateKey(next)}`;
        if (!seen.has(key)) {
          seen.add(key);
          stack.push({ entry, state });
          state = next;
          h1 = n1;
          h2 = n2;
          h3 = n3;
          linearized[i] = 1;
          lift(entry);
          entry = head.next;
          continue;
        }
      }
      entry = entry.next;
    } else {
      // A return whose call is not linearized yet: this configuration is a dead end.
      if (stack.length >= deepest) {
        deepest = stack.length;
        blocked = entry.op;
        tail = stack.slice(-12).map((s) => s.entry.op);
        stateBefore = state;
      }
      const top = stack.pop();
      if (top === undefined) {
        return { verdict: "violation", steps, blocked, tail, stateBefore };
      }
      const i = top.entry.op;
      h1 ^= z1[i]!;
      h2 ^= z2[i]!;
      h3 ^= z3[i]!;
      linearized[i] = 0;
      state = top.state;
      unlift(top.entry);
      entry = top.entry.next;
    }
  }
  return { verdict: "ok", steps };
}

function checkKey(key: string, all: Op[], deadline: number, explain: boolean): KeyResult {
  const ops = relevantOps(all);
  const written = new Set<string>();
  for (const o of ops) {
    if ((o.f === "put" || o.f === "cas") && typeof o.value === "string") written.add(o.value);
  }
  const r = search(ops, null, written, deadline);
  const result: KeyResult = { key, verdict: r.verdict, ops: ops.length, steps: r.steps };
  if (r.verdict === "violation") {
    const blocked = ops[r.blocked!]!;
    const v: Violation = {
      key,
      blocked,
      linearizedTail: r.tail!.map((i) => ops[i]!),
      stateBefore: r.stateBefore ?? null,
      window: [],
      minimal: [],
      writers: [],
    };
    if (explain) _explain(v, ops, written, deadline);
    result.violation = v;
  }
  return result;
}

/**
 * Fills `window` and `minimal`: the ops overlapping the interval that ends at the blocked op's
 * completion (grown backwards until the window alone is not linearizable from any written initial
 * state), then greedily shrunk to a subset that still is not.
 */
function _explain(v: Violation, ops: Op[], written: Set<string>, deadline: number): void {
  const end = v.blocked.complete;
  const sorted = [...ops].sort((a, b) => a.invoke - b.invoke);
  const firstInvoke = sorted[0]?.invoke ?? 0;
  const fails = (sub: Op[], init: State) =>
    search(sub, init, written, Math.min(deadline, performance.now() + 2000)).verdict ===
      "violation";
  let start = Math.min(v.blocked.invoke, ...v.linearizedTail.slice(-2).map((o) => o.invoke));
  let window: Op[] = [];
  let init: State = undefined;
  for (let span = Math.max(1, end - start);; span *= 2) {
    start = end - span;
    window = sorted.filter((o) =>
      o.invoke <= end && (o.outcome === "unknown" || o.complete >= start)
    );
    init = start <= firstInvoke ? null : undefined;
    if (fails(window, init) || start <= firstInvoke) break;
    if (performance.now() > deadline) break;
  }
  v.window = window;
  const inWindow = new Set(window.map((o) => o.id));
  const seenValues = new Set<string>();
  for (const o of window) {
    if (o.f === "get" && typeof o.read === "string") seenValues.add(o.read);
    if (o.f === "cas" && typeof o.expected === "string") seenValues.add(o.expected);
    if (o.f === "cas" && typeof o.current === "string") seenValues.add(o.current);
  }
  v.writers = ops.filter((o) =>
    !inWindow.has(o.id) && (o.f === "put" || o.f === "cas") && typeof o.value === "string" &&
    seenValues.has(o.value)
  ).sort((a, b) => a.invoke - b.invoke);
  if (window.length > 200 || !fails(window, init)) {
    v.minimal = window;
    return;
  }
  let minimal = window;
  for (let i = minimal.length - 1; i >= 0; i--) {
    if (performance.now() > deadline) break;
    const candidate = minimal.filter((_, j) => j !== i);
    if (fails(candidate, init)) minimal = candidate;
  }
  v.minimal = minimal;
}

/** A multi-line human report of a violation. */
export function formatViolation(v: Violation, t0 = 0): string {
  const at = (o: Op) =>
    `[${(o.invoke - t0).toFixed(1)}, ${
      o.outcome === "unknown" ? "∞" : (o.complete - t0).toFixed(1)
    }] ms`;
  const line = (o: Op) => `    #${o.id} client ${o.client} ${at(o)} ${describeOp(o)}`;
  const s = v.stateBefore === null ? "absent" : JSON.stringify(v.stateBefore);
  return [
    `key ${JSON.stringify(v.key)} is not linearizable.`,
    `  the search could not linearize past the completion of #${v.blocked.id}: ${
      describeOp(v.blocked)
    } ${at(v.blocked)}`,
    `  deepest linearization ended with (state then: ${s}):`,
    ...v.linearizedTail.map(line),
    `  failing window (${v.window.length} ops):`,
    ...v.window.slice(0, 40).map(line),
    ...(v.window.length > 40 ? [`    … ${v.window.length - 40} more`] : []),
    `  minimal non-linearizable subset of the window (${v.minimal.length} ops):`,
    ...v.minimal.slice(0, 40).map(line),
    `  earlier writes of values the window observed (${v.writers.length} ops):`,
    ...v.writers.slice(-20).map(line),
  ].join("\n");
}
