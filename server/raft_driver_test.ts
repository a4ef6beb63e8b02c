import assert from "node:assert/strict";
import { type Command, decodeBatch, encodeBatch } from "../raft/command.ts";
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

/** Holds calls of one method (`gate.on`) until `open()`; the held calls then proceed. */
function gate() {
  const g = {
    on: false,
    held: 0,
    waiters: [] as (() => void)[],
    wait(): Promise<void> {
      g.held++;
      return new Promise((r) => g.waiters.push(r));
    },
    open(): void {
      g.on = false;
      for (const r of g.waiters.splice(0)) r();
    },
  };
  return g;
}

/** `obj` with `method` held by `g` while `g.on`. */
function gated<T extends object>(obj: T, method: string, g: ReturnType<typeof gate>): T {
  return new Proxy(obj, {
    get(t, p) {
      const v = Reflect.get(t, p, t);
      if (typeof v !== "function") return v;
      const f = v.bind(t);
      if (p !== method) return f;
      return async (...args: unknown[]) => {
        if (g.on) await g.wait();
        return await f(...args);
      };
    },
  });
}

/** A follower (node 2 of 1..3) over a real log in `dir` and an in-memory engine. */
async function follower(
  dir: string,
  hangSyncs: { on: boolean },
  opts: {
    applyGate?: ReturnType<typeof gate>;
    flushGate?: ReturnType<typeof gate>;
    keepEntries?: number;
    keepBytes?: number;
  } = {},
) {
  const store = await RaftLogStore.open(dir);
  const engine = await KVEngine.open("/sm", { fs: new MemFs(), sync: "none" });
  const realSm = StateMachine.open(engine);
  const sm = opts.applyGate === undefined ? realSm : gated(realSm, "apply", opts.applyGate);
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
    snapshots: opts.flushGate === undefined ? undefined : {
      engine: gated(engine, "flush", opts.flushGate),
      dir,
      entries: 3,
      keepEntries: opts.keepEntries ?? 1,
      keepBytes: opts.keepBytes,
      send: () => Promise.reject(new Error("not in this test")),
    },
  });
  return { store, sm: realSm, node, driver, sent };
}

/** The highest index node 2 acknowledged to the leader. */
function acked(sent: Message[]): number {
  let max = 0;
  for (const m of sent) {
    if (m.type === MessageType.AppResp && !m.reject) max = Math.max(max, m.index);
  }
  return max;
}

/** Lets the driver's promise chains run (no timers involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
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

Deno.test("driver: a follower acknowledges new entries while its apply is held", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const applyGate = gate();
  try {
    const a = await follower(dir, { on: false }, { applyGate });
    a.driver.receive([app(1, 2, [3, 1], [4, 5, 6].map((i) => entry(i, 2, `a${i}`)), 3)]);
    await a.driver.idle();
    assert.equal(acked(a.sent), 6);
    // 4..6 commit (durable here: applied beside the next fsync) while 7 arrives; the engine
    // write of that apply is held (as a memtable switch holds it).
    applyGate.on = true;
    a.driver.receive([app(1, 2, [6, 2], [entry(7, 2, "a7")], 6)]);
    await settle();
    assert.equal(applyGate.held, 1, "the apply of 4..6 is in progress");
    assert.equal(a.sm.applied, 3);
    assert.equal(acked(a.sent), 7, "7 is acknowledged once durable, before 4..6 are applied");
    applyGate.open();
    await a.driver.idle();
    assert.equal(a.sm.applied, 6);
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: the engine flush of a local snapshot does not hold the Ready loop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const flushGate = gate();
  try {
    const a = await follower(dir, { on: false }, { flushGate });
    flushGate.on = true;
    // Entries 4..6 committed: applied reaches 6, 3 past the last snapshot (threshold 3).
    a.driver.receive([app(1, 2, [3, 1], [4, 5, 6].map((i) => entry(i, 2, `a${i}`)), 6)]);
    await a.driver.idle();
    await settle();
    assert.equal(a.sm.applied, 6);
    assert.equal(flushGate.held, 1, "the snapshot's engine flush started");
    assert.equal(a.store.snapshot().meta.index, 0, "no snapshot recorded before the flush");
    // The loop goes on meanwhile: 7..8 are persisted, acknowledged and applied.
    a.driver.receive([app(1, 2, [6, 2], [7, 8].map((i) => entry(i, 2, `a${i}`)), 8)]);
    await a.driver.idle();
    assert.equal(acked(a.sent), 8);
    assert.equal(a.sm.applied, 8);
    // Once durable, the snapshot is recorded at the index its view was taken at (6, not 8),
    // and the log is compacted behind it (keepEntries 1).
    flushGate.open();
    await settle();
    assert.equal(a.store.snapshot().meta.index, 6);
    assert.equal(a.store.firstIndex(), 6);
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: a node's first snapshot waits by its id, so replicas do not all flush at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const flushGate = gate();
  try {
    // Node 2, snapshots every 3 entries: its first one waits for 4 (×4/3), later ones for 3.
    const a = await follower(dir, { on: false }, { flushGate });
    const step = async (prev: [number, number], idx: number[], commit: number) => {
      a.driver.receive([app(1, 2, prev, idx.map((i) => entry(i, 2, `a${i}`)), commit)]);
      await a.driver.idle();
      await settle();
      assert.equal(a.sm.applied, commit);
    };
    await step([3, 1], [], 3);
    assert.equal(a.store.snapshot().meta.index, 0, "node 1's threshold (3) would snapshot here");
    await step([3, 1], [4], 4);
    assert.equal(a.store.snapshot().meta.index, 4);
    await step([4, 2], [5, 6], 6);
    assert.equal(a.store.snapshot().meta.index, 4);
    await step([6, 2], [7], 7);
    assert.equal(a.store.snapshot().meta.index, 7, "after the first, every 3 entries");
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: the log kept behind a snapshot is capped in bytes as well as in entries", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const flushGate = gate();
  try {
    const size = entry(4, 2, "a4").data.length;
    // Keep up to 5 entries, but only two entries' worth of bytes.
    const a = await follower(dir, { on: false }, {
      flushGate,
      keepEntries: 5,
      keepBytes: 2 * size,
    });
    flushGate.on = true;
    a.driver.receive([app(1, 2, [3, 1], [4, 5, 6].map((i) => entry(i, 2, `a${i}`)), 6)]);
    await a.driver.idle();
    await settle();
    assert.equal(a.sm.applied, 6);
    assert.equal(a.store.firstIndex(), 1);
    flushGate.open();
    await settle();
    assert.equal(a.store.snapshot().meta.index, 6);
    // 5 entries by count would keep 2..6; the byte cap keeps 5 and 6.
    assert.equal(a.store.firstIndex(), 5);
    assert.equal(a.store.entries(5, 7).map((e) => e.index).join(), "5,6");
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: proposals carry every field of their command and are answered with their own result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  try {
    const a = await follower(dir, { on: false });
    a.driver.receive([app(1, 2, [3, 1], [], 3)]); // learn the leader
    await a.driver.idle();
    const k = enc.encode("k");
    // An id that is not in its one form (2^60 as a number) fails its request, not the loop.
    await assert.rejects(
      () => a.driver.propose({ op: "delete", key: k, clientId: 2 ** 60, seq: 1 }, 5000),
      RangeError,
    );
    const answers = [
      a.driver.propose({ op: "put", key: k, value: enc.encode("v1"), clientId: 4, seq: 1 }, 5000),
      a.driver.propose({
        op: "cas",
        key: k,
        expected: enc.encode("v1"),
        expectAbsent: false,
        value: enc.encode("v2"),
        del: false,
        clientId: 4,
        seq: 2,
      }, 5000),
      a.driver.propose({
        op: "cas",
        key: enc.encode("gone"),
        expected: new Uint8Array(0),
        expectAbsent: true,
        value: new Uint8Array(0),
        del: true,
        clientId: 0,
        seq: 0,
      }, 5000),
      a.driver.propose({ op: "delete", key: k, clientId: 0, seq: 0 }, 5000),
    ];
    await a.driver.idle();
    const props = a.sent.filter((m) => m.type === MessageType.Prop);
    assert.equal(props.length, 1);
    assert.equal(props[0]!.to, 1);
    const cmds = props[0]!.entries.flatMap((e) => decodeBatch(e.data));
    const reqIds = cmds.map((c) => c.reqId);
    assert.equal(new Set(reqIds).size, 4);
    assert.deepEqual(
      cmds.map((c) => ({ ...c, reqId: 0 })),
      [
        {
          op: "put",
          origin: 2,
          epoch: 1,
          reqId: 0,
          clientId: 4,
          seq: 1,
          key: k,
          value: enc.encode("v1"),
        },
        {
          op: "cas",
          origin: 2,
          epoch: 1,
          reqId: 0,
          clientId: 4,
          seq: 2,
          key: k,
          expected: enc.encode("v1"),
          expectAbsent: false,
          value: enc.encode("v2"),
          del: false,
        },
        {
          op: "cas",
          origin: 2,
          epoch: 1,
          reqId: 0,
          clientId: 0,
          seq: 0,
          key: enc.encode("gone"),
          expected: new Uint8Array(0),
          expectAbsent: true,
          value: new Uint8Array(0),
          del: true,
        },
        { op: "delete", origin: 2, epoch: 1, reqId: 0, clientId: 0, seq: 0, key: k },
      ],
    );
    // The leader appends the forwarded batch at 4 and commits it.
    a.driver.receive([app(1, 2, [3, 1], [{
      index: 4,
      term: 2,
      type: EntryType.Normal,
      data: props[0]!.entries[0]!.data,
    }], 4)]);
    const got = await Promise.all(answers);
    assert.deepEqual(got.map((g) => g.index), [4, 4, 4, 4]);
    assert.deepEqual(got.map((g) => g.result), [
      { kind: "ok" },
      { kind: "cas", success: true, found: true, current: new Uint8Array(0) },
      { kind: "cas", success: true, found: false, current: new Uint8Array(0) },
      { kind: "delete", existed: true },
    ]);
    assert.equal(a.sm.get(k), undefined);
    await a.driver.stop();
    await a.store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Node 1 of 1..3 made leader (votes from 2), over a real log whose syncs `syncs` can hold. */
async function leader(
  dir: string,
  syncs: ReturnType<typeof gate>,
  snap?: { entries: number; keepEntries: number; keepBytes: number },
) {
  const store = await RaftLogStore.open(dir);
  const engine = await KVEngine.open("/sm", { fs: new MemFs(), sync: "none" });
  const sm = StateMachine.open(engine);
  const node = new RaftNode({
    id: 1,
    storage: store,
    random: () => 0.5,
    electionTick: 10,
    preVote: false,
    peers: [1, 2, 3],
    applied: sm.applied,
  });
  const sent: Message[] = [];
  const driver = new RaftDriver({
    id: 1,
    node,
    store: gated(store, "sync", syncs),
    sm,
    log: new Logger({ node: 1, level: "error", write: () => {} }),
    send: (msgs) => sent.push(...msgs),
    tickMs: 100,
    epoch: 1,
    snapshots: snap === undefined ? undefined : {
      engine,
      dir,
      ...snap,
      send: () => Promise.reject(new Error("not in this test")),
    },
  });
  driver.kick(); // applies the bootstrap membership entries (a node campaigns only after)
  await driver.idle();
  for (let i = 0; i < 30 && node.role !== "candidate"; i++) node.tick();
  driver.kick();
  await driver.idle();
  driver.receive([newMessage(MessageType.VoteResp, { from: 2, to: 1, term: node.term })]);
  await driver.idle();
  assert.equal(node.role, "leader");
  // Both followers take the leader's first entry (its no-op), which commits and applies.
  const last = node.lastIndex();
  const ack = (from: number, index: number) =>
    newMessage(MessageType.AppResp, { from, to: 1, term: node.term, index });
  driver.receive([ack(2, last), ack(3, last)]);
  await driver.idle();
  assert.equal(sm.applied, last);
  return { store, sm, node, driver, ack, sent };
}

Deno.test("driver: a leader answers a write both followers hold durably while its own fsync still runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const syncs = gate();
  try {
    const a = await leader(dir, syncs);
    syncs.on = true; // the leader's own fsyncs from now on hang until open()
    let answered = false;
    const put = a.driver.propose({
      op: "put",
      key: enc.encode("k"),
      value: enc.encode("v"),
      clientId: 0,
      seq: 0,
    }, 5000).then((r) => {
      answered = true;
      return r;
    });
    await settle();
    const index = a.node.lastIndex();
    assert.equal(syncs.held, 1, "the Ready appending the write waits for its fsync");
    // One follower's copy and the leader's unsynced one are not a majority of durable copies.
    a.driver.receive([a.ack(2, index)]);
    await settle();
    assert.equal(answered, false);
    assert.equal(a.node.committed, index - 1);
    // The second follower's copy makes a durable majority: the write is applied and answered
    // while the leader's fsync is still held.
    a.driver.receive([a.ack(3, index)]);
    await settle();
    assert.equal(answered, true, "answered before the leader's own fsync completed");
    assert.equal(syncs.waiters.length, 1);
    assert.equal(a.sm.applied, index);
    assert.deepEqual(a.sm.get(enc.encode("k")), enc.encode("v"));
    assert.deepEqual((await put).index, index);
    syncs.open();
    await a.driver.idle();
    assert.equal(a.sm.applied, index, "the next Ready's copy of the entry is skipped");
    await a.driver.stop();
    await a.store.close();
  } finally {
    syncs.open();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: a leader's commit-only appends wait for the next append to carry the commit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const syncs = gate();
  try {
    const a = await leader(dir, syncs);
    const put = (v: string) =>
      a.driver.propose(
        { op: "put", key: enc.encode("k"), value: enc.encode(v), clientId: 0, seq: 0 },
        5000,
      );
    const apps = () => a.sent.filter((m) => m.type === MessageType.App);
    const timer = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // Let the commit-only appends of the no-op's commit go out, then start counting.
    await timer(10);
    a.sent.length = 0;
    const first = put("1");
    await a.driver.idle();
    const i1 = a.node.lastIndex();
    assert.deepEqual(apps().map((m) => [m.to, m.entries.length]), [[2, 1], [3, 1]]);
    a.driver.receive([a.ack(2, i1), a.ack(3, i1)]);
    await a.driver.idle();
    assert.equal((await first).index, i1);
    assert.equal(a.node.committed, i1);
    // Committed and answered; the followers have not been told yet.
    assert.equal(apps().length, 2, "no commit-only append sent at once");
    const second = put("2");
    await a.driver.idle();
    const i2 = a.node.lastIndex();
    // The next entries carry the commit index and replace the held appends, which never leave.
    const next = apps().slice(2);
    assert.deepEqual(next.map((m) => [m.to, m.entries.length, m.commit]), [[2, 1, i1], [3, 1, i1]]);
    await timer(10);
    assert.equal(apps().length, 4, "a replaced commit-only append was sent anyway");
    // With nothing more to send, the commit of the second write goes out on its own, shortly.
    a.driver.receive([a.ack(2, i2), a.ack(3, i2)]);
    await a.driver.idle();
    assert.equal((await second).index, i2);
    assert.equal(apps().length, 4);
    await timer(10);
    const held = apps().slice(4);
    assert.deepEqual(held.map((m) => [m.to, m.entries.length, m.commit]), [[2, 0, i2], [3, 0, i2]]);
    await a.driver.stop();
    await a.store.close();
  } finally {
    syncs.open();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver: a leader keeps the log a recently active follower still needs, up to 4x the byte cap", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckv-driver-" });
  const syncs = gate();
  try {
    const value = new Uint8Array(1000).fill(7);
    const size = 1100; // an entry with one 1000-byte put is a little over 1000 bytes
    // Snapshot every 3 entries; keep up to 100 entries but only 2 entries' worth of bytes.
    const a = await leader(dir, syncs, { entries: 3, keepEntries: 100, keepBytes: 2 * size });
    const put = async (ackers: number[]) => {
      const p = a.driver.propose(
        { op: "put", key: enc.encode("k"), value, clientId: 0, seq: 0 },
        5000,
      );
      await a.driver.idle();
      const i = a.node.lastIndex();
      a.driver.receive(ackers.map((f) => a.ack(f, i)));
      await a.driver.idle();
      assert.equal((await p).index, i);
      return i;
    };
    // Node 3 acknowledges the first write, then falls behind (still answering: recently active).
    const behind = await put([2, 3]);
    const entrySize = a.store.entries(behind, behind + 1)[0]!.data.length;
    assert.ok(entrySize > 978 && entrySize <= size, `entry size ${entrySize}`); // 2 fit in the cap, 3 do not; 8 in 4x, 9 do not
    for (let k = 0; k < 5; k++) await put([2]);
    a.driver.receive([a.ack(3, behind)]);
    await a.driver.idle();
    await settle();
    const snapAt = a.store.snapshot().meta.index;
    assert.ok(snapAt >= behind + 3, `no snapshot after the writes (at ${snapAt})`);
    // The byte cap alone would keep 2 entries; node 3 still needs everything after `behind`.
    assert.equal(a.store.firstIndex(), behind + 1);
    // Further behind than 4x the cap (8 entries): the log is not kept for it.
    for (let k = 0; k < 12; k++) await put([2]);
    a.driver.receive([a.ack(3, behind)]);
    await a.driver.idle();
    await settle();
    const applied = a.sm.applied;
    assert.ok(a.store.firstIndex() > behind + 1, `log kept from ${a.store.firstIndex()}`);
    assert.ok(
      a.store.firstIndex() >= a.store.snapshot().meta.index - 8 + 1,
      `kept more than 4x the cap: first ${a.store.firstIndex()}, applied ${applied}`,
    );
    // Node 3 catches up to 3 entries behind, then its stream breaks (the transport reports it
    // unreachable): the log is no longer kept for it, although it was heard from recently.
    const near = a.node.lastIndex() - 3;
    a.driver.receive([a.ack(3, near)]);
    await a.driver.idle();
    a.driver.reportUnreachable(3);
    for (let k = 0; k < 3; k++) await put([2]);
    await settle();
    const snap = a.store.snapshot().meta.index;
    assert.ok(snap > near + 3, `no snapshot after the writes (at ${snap})`);
    assert.equal(a.store.firstIndex(), snap - 1, "the byte cap alone applies");
    await a.driver.stop();
    await a.store.close();
  } finally {
    syncs.open();
    await Deno.remove(dir, { recursive: true });
  }
});
