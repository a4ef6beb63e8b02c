import assert from "node:assert/strict";
import {
  type Command,
  DELETE_RANGE_DEFAULT_LIMIT,
  encodeBatch,
  encodeResult,
} from "../raft/command.ts";
import { encodeConfChange } from "../raft/codec.ts";
import { type Entry, EntryType } from "../raft/types.ts";
import { KVEngine, MemFs } from "../storage/mod.ts";
import { StateMachine } from "./state_machine.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const mine = { origin: 1, epoch: 5 };
let req = 0;

function cmd(c: Partial<Command> & Pick<Command, "op">): Command {
  return { origin: 1, epoch: 5, reqId: ++req, clientId: 0, seq: 0, ...c } as Command;
}
function entry(index: number, cmds: Command[], term = 1): Entry {
  return { index, term, type: EntryType.Normal, data: encodeBatch(cmds) };
}
async function open(fs: MemFs): Promise<{ sm: StateMachine; engine: KVEngine }> {
  const engine = await KVEngine.open("/sm", { fs, sync: "none" });
  return { sm: StateMachine.open(engine), engine };
}

Deno.test("state machine applies puts, deletes and cas with results", async () => {
  const { sm, engine } = await open(new MemFs());
  const { results } = await sm.apply([
    entry(1, [
      cmd({ op: "put", key: enc.encode("a"), value: enc.encode("1") }),
      cmd({ op: "delete", key: enc.encode("a") }),
      cmd({ op: "delete", key: enc.encode("a") }),
      cmd({
        op: "cas",
        key: enc.encode("b"),
        expected: new Uint8Array(0),
        expectAbsent: true,
        value: enc.encode("2"),
        del: false,
      }),
      cmd({
        op: "cas",
        key: enc.encode("b"),
        expected: enc.encode("x"),
        expectAbsent: false,
        value: enc.encode("3"),
        del: false,
      }),
    ]),
  ], mine);
  assert.deepEqual(results.map((r) => r.result.kind), ["ok", "delete", "delete", "cas", "cas"]);
  assert.deepEqual(results[1]!.result, { kind: "delete", existed: true });
  assert.deepEqual(results[2]!.result, { kind: "delete", existed: false });
  assert.equal(results[3]!.result.kind === "cas" && results[3]!.result.success, true);
  const failed = results[4]!.result;
  assert.ok(failed.kind === "cas" && !failed.success && dec.decode(failed.current) === "2");
  assert.equal(sm.get(enc.encode("a")), undefined);
  assert.equal(dec.decode(sm.get(enc.encode("b"))!), "2");
  assert.equal(sm.applied, 1);
  await engine.close();
});

Deno.test("state machine: reads in a batch see the batch's own earlier writes, before and after the first read", async () => {
  const { sm, engine } = await open(new MemFs());
  // Long keys differing only in their last byte (the read map keys by every byte).
  const long = (last: number) => {
    const k = new Uint8Array(10_000).fill(0x61);
    k[k.length - 1] = last;
    return k;
  };
  const [k1, k2, k3] = [long(1), long(2), long(3)];
  await sm.apply([entry(1, [cmd({ op: "put", key: k3, value: enc.encode("old") })])], mine);
  const cas = (key: Uint8Array, expected: string, value: string) =>
    cmd({
      op: "cas",
      key,
      expected: enc.encode(expected),
      expectAbsent: false,
      value: enc.encode(value),
      del: false,
    });
  const { results } = await sm.apply([
    entry(2, [
      cmd({ op: "put", key: k1, value: enc.encode("a") }),
      cmd({ op: "put", key: k1, value: enc.encode("b") }),
      cmd({ op: "put", key: k2, value: enc.encode("x") }),
    ]),
    entry(3, [
      cas(k1, "b", "c"), // first read of the batch: sees the second put, not the first
      cmd({ op: "put", key: k2, value: enc.encode("y") }), // after the first read
      cas(k2, "y", "z"),
      cas(k3, "old", "new"), // not written in this batch: read from the engine
      cmd({ op: "delete", key: k1 }),
      cas(k1, "c", "d"), // deleted earlier in the batch
    ]),
  ], mine);
  const r = results.map((x) => x.result);
  assert.deepEqual(r.slice(0, 3), [{ kind: "ok" }, { kind: "ok" }, { kind: "ok" }]);
  assert.ok(r[3]!.kind === "cas" && r[3]!.success);
  assert.ok(r[5]!.kind === "cas" && r[5]!.success);
  assert.ok(r[6]!.kind === "cas" && r[6]!.success);
  assert.deepEqual(r[7], { kind: "delete", existed: true });
  assert.ok(r[8]!.kind === "cas" && !r[8]!.success && !r[8]!.found);
  assert.deepEqual(results.map((x) => x.index), [2, 2, 2, 3, 3, 3, 3, 3, 3]);
  assert.equal(sm.get(k1), undefined);
  assert.equal(dec.decode(sm.get(k2)!), "z");
  assert.equal(dec.decode(sm.get(k3)!), "new");
  assert.equal(sm.applied, 3);
  await engine.close();
});

Deno.test("state machine deletes a range atomically: only user keys in it, this batch's writes included", async () => {
  const fs = new MemFs();
  const { sm, engine } = await open(fs);
  const put = (k: string) => cmd({ op: "put", key: enc.encode(k), value: enc.encode(k) });
  const range = (start: string, end: string, extra: Partial<Command> = {}) =>
    cmd({
      op: "deleteRange",
      start: enc.encode(start),
      end: enc.encode(end),
      limit: DELETE_RANGE_DEFAULT_LIMIT,
      ...extra,
    });
  await sm.apply([entry(1, ["a", "b/1", "b/2", "b/3", "c", "d"].map(put))], mine);
  const { results } = await sm.apply([
    entry(2, [
      put("b/4"), // written in the same batch, before the range: deleted with it
      cmd({ op: "delete", key: enc.encode("b/2") }), // already gone: not counted
      put("b/1"), // in the engine and written again in this batch: counted once
      range("b/", "b0"),
      put("b/5"), // after the range: kept
    ]),
  ], mine);
  assert.deepEqual(results[3]!.result, { kind: "deleteRange", deleted: 3, overLimit: false });
  const keys = () => sm.scan({}).pairs.map((p) => dec.decode(p.key));
  assert.deepEqual(keys(), ["a", "b/5", "c", "d"]);
  // Open-ended: from "c" to the end of the user keys; the state machine's own records (applied
  // index, members, exactly-once table) are not user keys and stay.
  const r = await sm.apply([entry(3, [range("c", "", { clientId: 5, seq: 1 })])], mine);
  assert.deepEqual(r.results[0]!.result, { kind: "deleteRange", deleted: 2, overLimit: false });
  assert.deepEqual(keys(), ["a", "b/5"]);
  // Everything (an empty start): then a retry of seq 1 is answered as first, deleting nothing more.
  await sm.apply([entry(4, [put("c"), range("", "")])], mine);
  assert.deepEqual(keys(), []);
  await sm.apply([entry(5, [put("z")])], mine);
  const retry = await sm.apply([entry(6, [range("c", "", { clientId: 5, seq: 1 })])], mine);
  assert.deepEqual(retry.results[0]!.result, {
    kind: "deleteRange",
    deleted: 2,
    overLimit: false,
  });
  assert.deepEqual(keys(), ["z"]);
  assert.equal(sm.applied, 6);
  assert.equal(sm.dedupSize, 1);
  await engine.close();
  // After a reopen: the same keys, the applied index and the exactly-once record kept.
  const again = await open(fs);
  assert.deepEqual(again.sm.scan({}).pairs.map((p) => dec.decode(p.key)), ["z"]);
  assert.equal(again.sm.applied, 6);
  assert.equal(again.sm.dedupSize, 1);
  await again.engine.close();
});

Deno.test("state machine awaits beforeLongApply once per apply, before its first range is enumerated", async () => {
  const { sm, engine } = await open(new MemFs());
  const put = (k: string) => cmd({ op: "put", key: enc.encode(k), value: enc.encode(k) });
  const range = (start: string, end: string) =>
    cmd({ op: "deleteRange", start: enc.encode(start), end: enc.encode(end), limit: 10 });
  const seen: string[] = [];
  sm.beforeLongApply = async () => {
    await null;
    // Nothing of this apply is visible yet: the keys are all still there.
    seen.push(sm.scan({}).pairs.map((p) => dec.decode(p.key)).join(","));
  };
  await sm.apply([entry(1, ["a", "b", "c"].map(put))], mine);
  assert.deepEqual(seen, []); // no range: not called
  const r = await sm.apply([entry(2, [range("a", "b")]), entry(3, [range("b", "")])], mine);
  assert.deepEqual(seen, ["a,b,c"]); // two ranges in one apply: called once, before either
  assert.deepEqual(r.results.map((x) => x.result), [
    { kind: "deleteRange", deleted: 1, overLimit: false },
    { kind: "deleteRange", deleted: 2, overLimit: false },
  ]);
  assert.deepEqual(sm.scan({}).pairs, []);
  await engine.close();
});

Deno.test("state machine refuses a range over its entry's key limit whole, counting this batch's writes", async () => {
  const engine = await KVEngine.open("/sm", { fs: new MemFs(), sync: "none" });
  const sm = StateMachine.open(engine);
  const put = (k: string) => cmd({ op: "put", key: enc.encode(k), value: enc.encode(k) });
  const range = (start: string, end: string, limit = 3) =>
    cmd({ op: "deleteRange", start: enc.encode(start), end: enc.encode(end), limit });
  const over = { kind: "deleteRange", deleted: 0, overLimit: true };
  await sm.apply([entry(1, ["a", "b", "c", "d"].map(put))], mine);
  const { results } = await sm.apply([
    entry(2, [
      range("a", ""), // 4 keys: refused, nothing deleted
      range("a", "d"), // 3 keys: deleted
      put("x"),
      put("y"),
      put("z"),
      put("zz"),
      range("x", ""), // 4 keys, all written in this batch: refused
    ]),
  ], mine);
  const r = results.map((x) => x.result);
  assert.deepEqual(r[0], over);
  assert.deepEqual(r[1], { kind: "deleteRange", deleted: 3, overLimit: false });
  assert.deepEqual(r[6], over);
  assert.deepEqual(sm.scan({}).pairs.map((p) => dec.decode(p.key)), ["d", "x", "y", "z", "zz"]);
  // The limit is the entry's, not the node's: the same range with a larger one goes.
  const more = await sm.apply([entry(3, [range("x", "", 4)])], mine);
  assert.deepEqual(more.results[0]!.result, { kind: "deleteRange", deleted: 4, overLimit: false });
  assert.deepEqual(sm.scan({}).pairs.map((p) => dec.decode(p.key)), ["d"]);
  await engine.close();
});

Deno.test("state machine applies a retried (client id, seq) once and answers the first result", async () => {
  const { sm, engine } = await open(new MemFs());
  const key = enc.encode("k");
  const c1 = cmd({ op: "delete", key, clientId: 77, seq: 1 });
  await sm.apply([entry(1, [cmd({ op: "put", key, value: enc.encode("v") })])], mine);
  const r1 = await sm.apply([entry(2, [c1])], mine);
  assert.deepEqual(r1.results[0]!.result, { kind: "delete", existed: true });
  await sm.apply([entry(3, [cmd({ op: "put", key, value: enc.encode("again") })])], mine);
  // The retry of seq 1 must not delete the new value, and answers "existed: true" again.
  const r2 = await sm.apply([entry(4, [{ ...c1, reqId: ++req }])], mine);
  assert.deepEqual(r2.results[0]!.result, { kind: "delete", existed: true });
  assert.equal(dec.decode(sm.get(key)!), "again");
  assert.equal(sm.dedupSize, 1);
  await engine.close();
});

Deno.test("state machine persists applied index and dedup table atomically across restart", async () => {
  const fs = new MemFs();
  let { sm, engine } = await open(fs);
  await sm.apply([
    entry(1, [
      cmd({ op: "put", key: enc.encode("x"), value: enc.encode("1"), clientId: 9, seq: 4 }),
    ]),
    entry(2, [cmd({ op: "put", key: enc.encode("y"), value: enc.encode("2") })]),
  ], mine);
  await engine.close();
  ({ sm, engine } = await open(fs));
  assert.equal(sm.applied, 2);
  assert.equal(sm.dedupSize, 1);
  // Entries at or below the applied index are skipped on replay.
  const r = await sm.apply([
    entry(2, [cmd({ op: "put", key: enc.encode("y"), value: enc.encode("stale") })]),
    entry(3, [
      cmd({ op: "put", key: enc.encode("x"), value: enc.encode("dup"), clientId: 9, seq: 4 }),
    ]),
  ], mine);
  assert.equal(dec.decode(sm.get(enc.encode("y"))!), "2");
  assert.equal(dec.decode(sm.get(enc.encode("x"))!), "1");
  assert.equal(r.results.length, 1);
  assert.equal(sm.applied, 3);
  await engine.close();
});

Deno.test("state machine keeps apart client ids equal in their top 53 bits, across a restart", async () => {
  const fs = new MemFs();
  let { sm, engine } = await open(fs);
  const a = 2n ** 60n + 1n, b = 2n ** 60n + 2n;
  const ka = enc.encode("a"), kb = enc.encode("b");
  await sm.apply([
    entry(1, [cmd({ op: "put", key: ka, value: enc.encode("1"), clientId: a, seq: 1 })]),
    entry(2, [cmd({ op: "put", key: kb, value: enc.encode("2"), clientId: b, seq: 1 })]),
  ], mine);
  // As doubles both ids were one: b's write was taken for a retry of a's, answered, not applied.
  assert.equal(dec.decode(sm.get(kb)!), "2");
  assert.equal(sm.dedupSize, 2);
  await engine.close();
  ({ sm, engine } = await open(fs));
  assert.equal(sm.dedupSize, 2);
  await sm.apply([entry(3, [cmd({ op: "put", key: ka, value: enc.encode("3") })])], mine);
  // Retries of both, after the restart: neither applies again.
  await sm.apply([
    entry(4, [cmd({ op: "put", key: ka, value: enc.encode("1"), clientId: a, seq: 1 })]),
    entry(5, [cmd({ op: "put", key: kb, value: enc.encode("retry"), clientId: b, seq: 1 })]),
  ], mine);
  assert.equal(dec.decode(sm.get(ka)!), "3");
  assert.equal(dec.decode(sm.get(kb)!), "2");
  await engine.close();
});

Deno.test("state machine loads a large client id's record written as a double before", async () => {
  const fs = new MemFs();
  let { sm, engine } = await open(fs);
  // 0x00 "d" id:f64le → seq:v result, as a node before the u64 records wrote it for id 2^60.
  const key = new Uint8Array(10);
  key.set([0x00, 0x64], 0);
  new DataView(key.buffer).setFloat64(2, 2 ** 60, true);
  const result = encodeResult({ kind: "ok" });
  const value = new Uint8Array(1 + result.length);
  value[0] = 5;
  value.set(result, 1);
  await engine.write([{ type: "put", key, value }]);
  await engine.close();
  ({ sm, engine } = await open(fs));
  assert.equal(sm.dedupSize, 1);
  const k = enc.encode("k");
  const r = await sm.apply([
    entry(1, [cmd({ op: "put", key: k, value: enc.encode("dup"), clientId: 2n ** 60n, seq: 5 })]),
    entry(2, [cmd({ op: "put", key: k, value: enc.encode("new"), clientId: 2n ** 60n, seq: 6 })]),
  ], mine);
  assert.deepEqual(r.results.map((x) => x.index), [1, 2]);
  assert.equal(dec.decode(sm.get(k)!), "new");
  await sm.apply([entry(3, [cmd({ op: "delete", key: k, clientId: 2n ** 60n, seq: 5 })])], mine);
  assert.equal(dec.decode(sm.get(k)!), "new");
  assert.equal(sm.dedupSize, 1);
  // The update replaced the old record: a restart does not bring seq 5 back.
  assert.equal(engine.scanSync({ prefix: new Uint8Array([0x00, 0x64]) }).length, 0);
  await engine.close();
  ({ sm, engine } = await open(fs));
  assert.equal(sm.dedupSize, 1);
  await sm.apply([entry(4, [cmd({ op: "delete", key: k, clientId: 2n ** 60n, seq: 6 })])], mine);
  assert.equal(dec.decode(sm.get(k)!), "new", "seq 6 is still recognised");
  await engine.close();
});

Deno.test("state machine expires exactly-once records at the same log index, however it batches", async () => {
  const window = { dedupWindow: 10, dedupSweepEvery: 4 };
  const x = enc.encode("x"), y = enc.encode("y");
  const put = (key: Uint8Array, v: string, clientId = 0, seq = 0) =>
    cmd({ op: "put", key, value: enc.encode(v), clientId, seq });
  const entries: Entry[] = [];
  for (let i = 1; i <= 21; i++) {
    let c = put(enc.encode(`f${i}`), "filler");
    if (i === 1) c = put(x, "1", 5, 1);
    if (i === 9) c = put(y, "1", 6, 1);
    if (i === 11) c = put(x, "retry before expiry", 5, 1);
    if (i === 13) c = put(x, "retry after expiry", 5, 1);
    if (i === 17) c = put(y, "retry kept", 6, 1);
    entries.push(entry(i, [c]));
  }
  // Sweeps before entries 4, 8, 12, 16, 20 drop records written at or below index - 10: client
  // 5's (index 1) before entry 12, so its retry at 11 is answered and the one at 13 applied;
  // client 6's (index 9) before entry 20, after its retry at 17 was answered.
  const fsA = new MemFs();
  const a = await open(fsA);
  const smA = StateMachine.open(a.engine, window);
  await smA.apply(entries, mine);
  assert.equal(dec.decode(smA.get(x)!), "retry after expiry");
  assert.equal(dec.decode(smA.get(y)!), "1");
  assert.equal(smA.dedupSize, 1);

  // The same entries one at a time, with restarts: the same state, byte for byte.
  const fsB = new MemFs();
  let b = await open(fsB);
  let smB = StateMachine.open(b.engine, window);
  for (const e of entries) {
    await smB.apply([e], mine);
    if (e.index % 5 === 0) {
      await b.engine.close();
      b = await open(fsB);
      smB = StateMachine.open(b.engine, window);
    }
  }
  const all = (e: KVEngine) => e.scanSync({}).map((kv) => [[...kv.key], [...kv.value]]);
  assert.deepEqual(all(b.engine), all(a.engine));
  assert.equal(smB.dedupSize, 1);
  await a.engine.close();
  await b.engine.close();
});

Deno.test("state machine stops at an entry it cannot decode, and changes nothing", async () => {
  const fs = new MemFs();
  let { sm, engine } = await open(fs);
  const k = enc.encode("k");
  await sm.apply([
    entry(1, [cmd({ op: "put", key: k, value: enc.encode("1"), clientId: 3, seq: 1 })]),
  ], mine);
  const newer = { index: 3, term: 1, type: EntryType.Normal, data: new Uint8Array([9, 0]) };
  const batch = [
    entry(2, [cmd({ op: "put", key: k, value: enc.encode("2"), clientId: 3, seq: 2 })]),
    newer,
  ];
  await assert.rejects(() => sm.apply(batch, mine), (e: Error) => {
    assert.equal(e.name, "StateMachineError");
    assert.match(e.message, /entry 3 \(commands\) does not decode: .*version 9.*upgrade this node/);
    return true;
  });
  // Nothing of the batch was applied, in memory or on disk.
  assert.equal(sm.applied, 1);
  assert.equal(dec.decode(sm.get(k)!), "1");
  const badCc = { index: 2, term: 1, type: EntryType.ConfChange, data: new Uint8Array([0xff]) };
  await assert.rejects(() => sm.apply([badCc], mine), /membership change/);
  assert.deepEqual(sm.members, []);
  await engine.close();
  ({ sm, engine } = await open(fs));
  assert.equal(sm.applied, 1);
  // The retry of seq 2 after a restart is new: it was never applied.
  await sm.apply([batch[0]!], mine);
  assert.equal(dec.decode(sm.get(k)!), "2");
  await engine.close();
});

Deno.test("state machine answers only its own commands and records membership changes", async () => {
  const { sm, engine } = await open(new MemFs());
  const other = { ...cmd({ op: "put", key: enc.encode("o"), value: enc.encode("1") }), origin: 2 };
  const cc: Entry = {
    index: 2,
    term: 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({ type: "addLearner", nodeId: 4, context: enc.encode("h:4") }),
  };
  const r = await sm.apply([entry(1, [other]), cc], mine);
  assert.equal(r.results.length, 0);
  assert.equal(r.confChanges.length, 1);
  assert.deepEqual(sm.members, [{ id: 4, address: "h:4", learner: true }]);
  assert.equal(sm.applied, 2);
  await engine.close();
});

Deno.test("state machine scan respects prefix, range, limit and hides internal keys", async () => {
  const { sm, engine } = await open(new MemFs());
  const puts = ["a/1", "a/2", "a/3", "b/1"].map((k) =>
    cmd({ op: "put", key: enc.encode(k), value: enc.encode(k), clientId: 1, seq: 0 })
  );
  await sm.apply([entry(1, puts)], mine);
  const all = sm.scan({});
  assert.deepEqual(all.pairs.map((p) => dec.decode(p.key)), ["a/1", "a/2", "a/3", "b/1"]);
  const lim = sm.scan({ prefix: enc.encode("a/"), limit: 2 });
  assert.deepEqual(lim.pairs.map((p) => dec.decode(p.key)), ["a/1", "a/2"]);
  assert.equal(lim.more, true);
  const range = sm.scan({ start: enc.encode("a/2"), end: enc.encode("b") });
  assert.deepEqual(range.pairs.map((p) => dec.decode(p.key)), ["a/2", "a/3"]);
  assert.equal(range.more, false);
  await engine.close();
});
