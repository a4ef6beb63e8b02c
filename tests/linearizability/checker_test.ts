import assert, { deepStrictEqual as assertEquals } from "node:assert/strict";
import { checkHistory, formatViolation } from "./checker.ts";
import { historyToJson, type Op, parseHistory } from "./history.ts";
import { timelineSvg } from "./timeline.ts";

let nextId = 0;
type Extra = Partial<Op>;
function put(client: number, v: string, invoke: number, complete: number, x: Extra = {}): Op {
  return {
    id: nextId++,
    client,
    key: "x",
    f: "put",
    value: v,
    invoke,
    complete,
    outcome: "ok",
    ...x,
  };
}
function get(client: number, read: string | null, invoke: number, complete: number): Op {
  return { id: nextId++, client, key: "x", f: "get", read, invoke, complete, outcome: "ok" };
}
function del(client: number, invoke: number, complete: number, x: Extra = {}): Op {
  return { id: nextId++, client, key: "x", f: "delete", invoke, complete, outcome: "ok", ...x };
}
function cas(
  client: number,
  expected: string | null,
  value: string | null,
  success: boolean,
  invoke: number,
  complete: number,
  x: Extra = {},
): Op {
  return {
    id: nextId++,
    client,
    key: "x",
    f: "cas",
    expected,
    value,
    success,
    invoke,
    complete,
    outcome: "ok",
    ...x,
  };
}
const unknown = { outcome: "unknown" as const };

Deno.test("checker accepts an empty history and sequential ops", () => {
  assertEquals(checkHistory([]).result, "yes");
  const r = checkHistory([
    get(0, null, 0, 1),
    put(0, "a", 2, 3),
    get(1, "a", 4, 5),
    cas(1, "a", "b", true, 6, 7),
    cas(0, "a", "c", false, 8, 9, { current: "b" }),
    del(0, 10, 11),
    get(1, null, 12, 13),
    cas(0, null, "d", true, 14, 15),
    get(1, "d", 16, 17),
  ]);
  assertEquals(r.result, "yes");
});

Deno.test("checker accepts concurrent overlapping ops in either order", () => {
  // Two overlapping puts; reads during and after see either, but consistently afterwards.
  const r = checkHistory([
    put(0, "a", 0, 10),
    put(1, "b", 1, 9),
    get(2, "b", 2, 3),
    get(3, "a", 4, 12),
    get(2, "a", 13, 14),
  ]);
  assertEquals(r.result, "yes");
  // A read overlapping a write may see the old value.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), put(1, "b", 2, 10), get(2, "a", 3, 4), get(2, "b", 5, 6)])
      .result,
    "yes",
  );
});

Deno.test("checker accepts unknown writes that did and did not apply", () => {
  // Applied: a later read sees it (long after the client gave up).
  assertEquals(
    checkHistory([put(0, "a", 0, 1), put(1, "b", 2, 3, unknown), get(2, "b", 50, 51)]).result,
    "yes",
  );
  // Not applied: reads keep seeing the old value.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), put(1, "b", 2, 3, unknown), get(2, "a", 50, 51)]).result,
    "yes",
  );
  // Unknown delete applied late; unknown cas applied.
  assertEquals(
    checkHistory([
      put(0, "a", 0, 1),
      del(1, 2, 3, unknown),
      get(2, "a", 4, 5),
      get(2, null, 6, 7),
      cas(3, null, "c", false, 8, 9, unknown),
      get(2, "c", 10, 11),
    ]).result,
    "yes",
  );
  // Failed ops are ignored even if their values are bogus.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), put(1, "zzz", 2, 3, { outcome: "fail" }), get(2, "a", 4, 5)])
      .result,
    "yes",
  );
});

Deno.test("checker rejects a stale read", () => {
  const r = checkHistory([put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5)]);
  assertEquals(r.result, "no");
  if (r.violation === undefined) throw new Error("no violation");
  assert(r.violation.minimal.length <= 2, formatViolation(r.violation));
  assert(r.violation.minimal.some((o) => o.f === "get"));
});

Deno.test("checker rejects a lost write", () => {
  // An acknowledged put, then reads of the older value.
  const r = checkHistory([
    put(0, "a", 0, 1),
    get(1, "a", 2, 3),
    put(0, "b", 4, 5),
    get(1, "b", 6, 7),
    get(2, "a", 8, 9),
  ]);
  assertEquals(r.result, "no");
  // An acknowledged write never seen: the key reads absent after it.
  assertEquals(checkHistory([put(0, "a", 0, 1), get(1, null, 2, 3)]).result, "no");
});

Deno.test("checker rejects a read of a value never written", () => {
  assertEquals(checkHistory([get(0, "ghost", 0, 1)]).result, "no");
  assertEquals(checkHistory([put(0, "a", 0, 10), get(1, "ghost", 1, 2)]).result, "no");
  // A failed put's value must not be readable.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), put(0, "b", 2, 3, { outcome: "fail" }), get(1, "b", 4, 5)])
      .result,
    "no",
  );
});

Deno.test("checker rejects cas violations", () => {
  // Two cas from the same expected value cannot both succeed.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), cas(1, "a", "b", true, 2, 5), cas(2, "a", "c", true, 3, 6)])
      .result,
    "no",
  );
  // A cas that fails although the value was the expected one.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), cas(1, "a", "b", false, 2, 3)]).result,
    "no",
  );
  // A failed cas reporting a current value that is not current.
  assertEquals(
    checkHistory([
      put(0, "a", 0, 1),
      put(0, "b", 2, 3),
      cas(1, "z", "c", false, 4, 5, {
        current: "a",
      }),
    ]).result,
    "no",
  );
  // A cas that succeeds on an absent key that was written.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), cas(1, null, "b", true, 2, 3)]).result,
    "no",
  );
  // Order: cas a→b succeeded, then a read still sees a.
  assertEquals(
    checkHistory([put(0, "a", 0, 1), cas(1, "a", "b", true, 2, 3), get(2, "a", 4, 5)]).result,
    "no",
  );
});

Deno.test("checker partitions by key", () => {
  const a = put(0, "1", 0, 1);
  const b = { ...get(1, null, 2, 3), key: "y" };
  const c = { ...get(1, "1", 4, 5) };
  assertEquals(checkHistory([a, b, c]).result, "yes");
  const r = checkHistory([a, b, { ...get(1, "1", 6, 7), key: "y" }]);
  assertEquals(r.result, "no");
  assertEquals(r.violation?.key, "y");
  assertEquals(r.keys.find((k) => k.key === "x")?.verdict, "ok");
});

Deno.test("checker reports unknown when the time budget runs out", () => {
  // Many concurrent unknown writes each observed by a read that overlaps all of them: a large
  // search space (the reads must be ordered consistently with the writes).
  const ops: Op[] = [];
  const n = 14;
  for (let i = 0; i < n; i++) ops.push(put(i, `v${i}`, 0, 1, unknown));
  for (let i = 0; i < n; i++) ops.push(del(100 + i, 0, 1, unknown));
  for (let i = 0; i < n; i++) ops.push(get(200 + i, `v${(i * 7) % n}`, 2 + i, 1000));
  // Make it unsatisfiable at the very end, so the whole space must be explored.
  ops.push(get(300, "never", 2000, 2001));
  const r = checkHistory(ops, { timeBudgetMs: 50, explain: false });
  assertEquals(r.result, "unknown");
});

Deno.test("checker handles a long, mostly sequential history quickly", () => {
  const ops: Op[] = [];
  let t = 0;
  for (let i = 0; i < 20_000; i++) {
    const c = i % 10;
    ops.push(put(c, `v${i}`, t, t + 15));
    ops.push(get((c + 1) % 10, `v${i}`, t + 16, t + 20));
    t += 10;
  }
  const start = performance.now();
  const r = checkHistory(ops, { timeBudgetMs: 20_000 });
  assertEquals(r.result, "yes");
  assert(performance.now() - start < 10_000);
});

Deno.test("history JSON round-trips and a timeline renders", () => {
  const ops = [put(0, "a", 0, 1), get(1, "a", 0.5, 3), put(2, "b", 1, 2, unknown)];
  const h = parseHistory(
    historyToJson({
      version: 1,
      meta: { seed: 1 },
      ops,
      events: [{ time: 1, kind: "fault", text: "kill 2" }],
    }),
  );
  assertEquals(h.ops, ops);
  assertEquals(h.events.length, 1);
  const svg = timelineSvg(h.ops, { title: "t", highlight: [ops[1]!.id], events: h.events });
  assert(svg.startsWith("<svg"));
  assert(svg.includes("kill 2"));
});

Deno.test("checker finds a violation despite many pending unknown deletes", () => {
  const ops: Op[] = [put(0, "a", 0, 1)];
  for (let i = 0; i < 40; i++) ops.push(del(10 + i, 2 + i, 3 + i, unknown));
  ops.push(get(1, null, 100, 101)); // explained by an unknown delete
  ops.push(put(0, "b", 102, 103));
  ops.push(get(1, "a", 104, 105)); // stale: a was overwritten by b
  const r = checkHistory(ops, { timeBudgetMs: 5000 });
  assertEquals(r.result, "no");
  assertEquals(checkHistory(ops.slice(0, -1), { timeBudgetMs: 5000 }).result, "yes");
});

/** The model, applied sequentially; null when an op's output is impossible. */
function runSequential(seq: Op[]): boolean {
  let s: string | null = null;
  for (const o of seq) {
    switch (o.f) {
      case "put":
        s = o.value!;
        break;
      case "delete":
        s = null;
        break;
      case "get":
        if (o.outcome === "ok" && o.read !== s) return false;
        break;
      case "cas": {
        const match = s === (o.expected ?? null);
        if (o.outcome !== "ok") {
          if (match) s = o.value ?? null;
          break;
        }
        if (o.success !== match) return false;
        if (!o.success && o.current !== undefined && o.current !== s) return false;
        if (match) s = o.value ?? null;
        break;
      }
    }
  }
  return true;
}

/** Brute force: some order respecting real time (unknown ops may be left out) is valid. */
function bruteForce(ops: Op[]): boolean {
  const live = ops.filter((o) => o.outcome !== "fail");
  const done = (o: Op) => (o.outcome === "unknown" ? Infinity : o.complete);
  const rec = (rest: Op[], seq: Op[]): boolean => {
    if (rest.every((o) => o.outcome === "unknown")) {
      if (runSequential(seq)) return true;
    }
    for (let i = 0; i < rest.length; i++) {
      const o = rest[i]!;
      // o can go next only if no remaining op completed before o was invoked.
      if (rest.some((p) => p !== o && done(p) < o.invoke)) continue;
      if (rec(rest.filter((_, j) => j !== i), [...seq, o])) return true;
    }
    return false;
  };
  return rec(live, []);
}

Deno.test("checker agrees with brute force on random small histories", () => {
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 4294967296;
  };
  const vals = ["a", "b", "c"];
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
  let disagreements = 0, violations = 0;
  for (let round = 0; round < 1500; round++) {
    const n = 2 + Math.floor(rnd() * 5);
    const ops: Op[] = [];
    for (let i = 0; i < n; i++) {
      const invoke = Math.floor(rnd() * 10);
      const complete = invoke + 1 + Math.floor(rnd() * 5);
      const outcome = rnd() < 0.75 ? "ok" : rnd() < 0.5 ? "unknown" : "fail";
      const f = pick(["put", "get", "delete", "cas"] as const);
      const o: Op = { id: i, client: i, key: "x", f, invoke, complete, outcome };
      if (f === "put") o.value = pick(vals);
      if (f === "get") o.read = rnd() < 0.3 ? null : pick(vals);
      if (f === "cas") {
        o.expected = rnd() < 0.3 ? null : pick(vals);
        o.value = pick(vals);
        o.success = rnd() < 0.5;
        if (!o.success && rnd() < 0.5) o.current = rnd() < 0.3 ? null : pick(vals);
      }
      if (outcome !== "ok") {
        delete o.read;
        delete o.success;
        delete o.current;
      }
      ops.push(o);
    }
    const expected = bruteForce(ops);
    const got = checkHistory(ops).result;
    if (!expected) violations++;
    if ((got === "yes") !== expected) {
      disagreements++;
      console.error(JSON.stringify(ops), { expected, got });
    }
  }
  assertEquals(disagreements, 0);
  assert(violations > 100, `only ${violations} violating histories generated`);
});
