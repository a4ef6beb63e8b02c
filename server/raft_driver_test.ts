import assert from "node:assert/strict";
import { type Command, encodeBatch } from "../raft/command.ts";
import { RaftLogStore } from "../raft/log_store.ts";
import { RaftNode } from "../raft/node.ts";
import { type Entry, EntryType, type Message, MessageType, newMessage } from "../raft/types.ts";
import { KVEngine, MemFs } from "../storage/mod.ts";
import { Logger } from "./log.ts";
import { DriverError, RaftDriver } from "./raft_driver.ts";
import { StateMachine } from "./state_machine.ts";

const enc = new TextEncoder();

function put(k: string, reqId: number): Command {
  return {
    op: "put",
    key: enc.encode(k),
    value: enc.encode("v"),
    origin: 9,
    epoch: 9,
    reqId,
    clientId: 0,
    seq: 0,
  } as Command;
}

function entry(index: number, term: number, key: string): Entry {
  return { index, term, type: EntryType.Normal, data: encodeBatch([put(key, index)]) };
}

function app(from: number, term: number, prev: [number, number], ents: Entry[], commit: number) {
  return newMessage(MessageType.App, {
    from,
    to: 2,
    term,
    index: prev[0],
    logTerm: prev[1],
    entries: ents,
    commit,
  });
}

/** A follower (node 2 of 1..3) over a real log in `dir` and an in-memory engine. */
async function follower(dir: string, hangSyncs: { on: boolean }) {
  const store = await RaftLogStore.open(dir);
  const engine = await KVEngine.open("/sm", { fs: new MemFs(), sync: "none" });
  const sm = StateMachine.open(engine);
  const node = new RaftNode({
    id: 2,
    storage: store,
    random: () => 0.5,
    electionTick: 10,
    peers: [1, 2, 3],
    applied: sm.applied,
  });
  // The log store as the driver sees it: while `hangSyncs.on`, a sync never completes and
  // nothing reaches the file (the process "crashes" before its fsync).
  const viewed = new Proxy(store, {
    get(t, p) {
      if (p === "sync" && hangSyncs.on) return () => new Promise<void>(() => {});
      const v = Reflect.get(t, p, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  const sent: Message[] = [];
  const driver = new RaftDriver({
    id: 2,
    node,
    store: viewed,
    sm,
    log: new Logger({ node: 2, level: "error", write: () => {} }),
    send: (msgs) => sent.push(...msgs),
    tickMs: 100,
    epoch: 1,
  });
  return { store, sm, node, driver, sent };
}

Deno.test("driver: a log suffix overwritten in one Ready is not applied before it is durable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  try {
    const hang = { on: false };
    const a = await follower(dir, hang);
    // Leader 1, term 2: entries 4..6 (after the bootstrap entries 1..3), commit 3.
    a.driver.receive([app(1, 2, [3, 1], [4, 5, 6].map((i) => entry(i, 2, `a${i}`)), 3)]);
    await a.driver.idle();
    assert.equal(a.store.lastIndex(), 6);
    assert.equal(a.sm.applied, 3);
    // Leader 3, term 3, overwrites 5..6 and commits through 7, all in one Ready; the fsync of
    // that Ready never completes.
    hang.on = true;
    a.driver.receive([app(3, 3, [4, 2], [5, 6, 7].map((i) => entry(i, 3, `b${i}`)), 7)]);
    // Let the Ready run up to its (hung) fsync: apply of durable entries happens before it.
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
    const appliedIndex = a.sm.applied;
    const appliedTerm = a.sm.appliedTerm;
    assert.ok(appliedIndex >= 3);
    // "Restart": what the disk holds must contain what the state machine applied.
    a.store.closeWithoutSync();
    const again = await RaftLogStore.open(dir);
    try {
      assert.ok(again.lastIndex() >= appliedIndex);
      assert.equal(
        again.term(appliedIndex),
        appliedTerm,
        `applied ${appliedIndex}@${appliedTerm} but the durable log has term ` +
          `${again.term(appliedIndex)} there`,
      );
    } finally {
      await again.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: a write that times out after it was forwarded fails as a timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  try {
    const a = await follower(dir, { on: false });
    a.driver.receive([app(1, 2, [3, 1], [], 3)]); // learn the leader
    await a.driver.idle();
    assert.equal(a.driver.leader, 1);
    const started = Date.now();
    const err = await a.driver.propose({
      op: "put",
      key: enc.encode("k"),
      value: enc.encode("v"),
      clientId: 0,
      seq: 0,
    }, 30).then(() => undefined, (e) => e);
    assert.ok(err instanceof DriverError);
    assert.equal(err.kind, "timeout"); // forwarded: it may still commit
    assert.ok(Date.now() - started < 1000, "expired by its deadline, not a tick much later");
    assert.ok(a.sent.some((m) => m.type === MessageType.Prop && m.to === 1));
    // Without a leader, a write that was never proposed fails as unavailable.
    const b = await follower(await Deno.makeTempDir({ prefix: "ckv-driver-" }), { on: false });
    const e2 = await b.driver.propose({
      op: "put",
      key: enc.encode("k"),
      value: enc.encode("v"),
      clientId: 0,
      seq: 0,
    }, 30).then(() => undefined, (e) => e);
    assert.ok(e2 instanceof DriverError);
    assert.equal(e2.kind, "unavailable");
    const e3 = await b.driver.readBarrier(30).then(() => undefined, (e) => e);
    assert.ok(e3 instanceof DriverError && e3.kind === "unavailable");
    await b.driver.stop();
    await b.store.close();
    await Deno.remove(b.store.dir, { recursive: true });
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
