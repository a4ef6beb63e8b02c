import assert from "node:assert/strict";
import { decodeConfChange } from "./codec.ts";
import { RaftLogStore } from "./log_store.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { RaftNode } from "./node.ts";
import { mulberry32, TestNetwork } from "./testing.ts";
import { type Entry, EntryType, MessageType, newMessage } from "./types.ts";

const enc = new TextEncoder();

function ent(index: number, term: number): Entry {
  return { index, term, type: EntryType.Normal, data: enc.encode(`${index}@${term}`) };
}

Deno.test("a single node elects itself and commits proposals", () => {
  const storage = new MemoryStorage({ confState: { voters: [1], learners: [] } });
  const n = new RaftNode({ id: 1, storage, random: mulberry32(1) });
  for (let i = 0; i < 30 && n.role !== "leader"; i++) n.tick();
  assert.deepEqual(n.role, "leader");
  assert.deepEqual(n.propose(enc.encode("a")), undefined);
  const applied: Entry[] = [];
  while (n.hasReady()) {
    const rd = n.ready();
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    applied.push(...rd.committedEntries);
    n.advance(rd);
  }
  assert.deepEqual(applied.map((e) => e.index), [1, 2]);
  assert.deepEqual(applied[0]!.data.length, 0, "leader no-op");
  assert.deepEqual(new TextDecoder().decode(applied[1]!.data), "a");
  assert.deepEqual(storage.hardState(), { term: 1, vote: 1, commit: 2 });
});

Deno.test("three nodes elect one leader and replicate a proposal to all", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.campaign(1);
  assert.deepEqual(net.node(1).role, "leader");
  assert.deepEqual(net.node(2).leader, 1);
  assert.deepEqual(net.node(3).leader, 1);
  assert.deepEqual(net.node(1).propose(enc.encode("x")), undefined);
  net.settle();
  net.tickAll(); // heartbeat carries the new commit index to followers
  for (const id of [1, 2, 3]) {
    const applied = net.members.get(id)!.applied;
    assert.deepEqual(applied.map((e) => e.index), [1, 2], `node ${id}`);
    assert.deepEqual(new TextDecoder().decode(applied[1]!.data), "x");
  }
});

Deno.test("a follower rejects proposals with the leader as hint", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.campaign(2);
  assert.deepEqual(net.node(1).propose(enc.encode("x")), { kind: "NotLeader", leaderHint: 2 });
});

Deno.test("elections happen by ticking alone", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.tickAll(40);
  const leaders = [1, 2, 3].filter((id) => net.node(id).role === "leader");
  assert.deepEqual(leaders.length, 1);
  const term = net.node(leaders[0]!).term;
  for (const id of [1, 2, 3]) assert.deepEqual(net.node(id).leader, leaders[0]);
  for (const id of [1, 2, 3]) assert.deepEqual(net.node(id).term, term);
});

Deno.test("vote rules: one vote per term, and only for an up-to-date log", () => {
  const s = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  s.append([ent(1, 1), ent(2, 2)]);
  s.setHardState({ term: 2, vote: 0, commit: 0 });
  const n = new RaftNode({ id: 1, storage: s, random: mulberry32(3), preVote: false });
  const vote = (from: number, term: number, index: number, logTerm: number) => {
    n.step(newMessage(MessageType.Vote, { from, to: 1, term, logTerm, index }));
    const rd = n.ready();
    n.advance(rd);
    const resp = rd.messages.find((m) => m.type === MessageType.VoteResp)!;
    return !resp.reject;
  };
  assert.deepEqual(vote(2, 3, 5, 1), false, "older last term loses despite a longer log");
  assert.deepEqual(vote(2, 3, 1, 2), false, "same last term, shorter log");
  assert.deepEqual(vote(2, 3, 2, 2), true, "at least as up to date");
  assert.deepEqual(vote(3, 3, 9, 3), false, "already voted in term 3");
  assert.deepEqual(vote(2, 3, 2, 2), true, "repeat vote for the same candidate");
  assert.ok(n.term === 3);
});

function drive(n: RaftNode, s: { append(e: Entry[]): void; setHardState(h: never): void }) {
  const applied: Entry[] = [];
  while (n.hasReady()) {
    const rd = n.ready();
    s.append(rd.entries);
    if (rd.hardState) s.setHardState(rd.hardState as never);
    applied.push(...rd.committedEntries);
    for (const e of rd.committedEntries) {
      if (e.type === EntryType.ConfChange) n.applyConfChange(decodeConfChange(e.data));
    }
    n.advance(rd);
  }
  return applied;
}

Deno.test("a node on the durable log store restarts with its term, vote and log", async () => {
  const dir = await Deno.makeTempDir();
  let store = await RaftLogStore.open(dir);
  let n = new RaftNode({ id: 1, storage: store, random: mulberry32(5), peers: [1] });
  for (let i = 0; i < 30 && n.role !== "leader"; i++) {
    n.tick();
    drive(n, store);
    await store.sync();
  }
  assert.equal(n.role, "leader");
  n.propose(enc.encode("durable"));
  drive(n, store);
  await store.sync();
  const { term, commit } = n.status();
  const last = n.lastIndex();
  await store.close();

  store = await RaftLogStore.open(dir);
  n = new RaftNode({ id: 1, storage: store, random: mulberry32(6), peers: [1] });
  assert.equal(n.term, term);
  assert.equal(n.status().vote, 1);
  assert.equal(n.status().commit, commit);
  assert.equal(n.lastIndex(), last);
  const replayed = drive(n, store);
  assert.equal(new TextDecoder().decode(replayed.at(-1)!.data), "durable");
  for (let i = 0; i < 30 && n.role !== "leader"; i++) {
    n.tick();
    drive(n, store);
  }
  assert.equal(n.term, term + 1);
  await store.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bootstrap: initial members write identical config entries; restart with applied keeps config", () => {
  const a = new MemoryStorage();
  const b = new MemoryStorage();
  const na = new RaftNode({ id: 1, storage: a, random: mulberry32(1), peers: [3, 1, 2] });
  const nb = new RaftNode({ id: 2, storage: b, random: mulberry32(2), peers: [1, 2, 3] });
  const ea = drive(na, a);
  const eb = drive(nb, b);
  assert.deepEqual(ea, eb);
  assert.equal(ea.length, 3);
  assert.ok(ea.every((e) => e.type === EntryType.ConfChange && e.term === 1));
  assert.deepEqual(na.confState(), { voters: [1, 2, 3], learners: [] });

  // A single-member cluster adds a learner; a restart at `applied` still knows the learner.
  const s = new MemoryStorage();
  let n = new RaftNode({ id: 1, storage: s, random: mulberry32(3), peers: [1] });
  drive(n, s);
  for (let i = 0; i < 30 && n.role !== "leader"; i++) {
    n.tick();
    drive(n, s);
  }
  assert.equal(
    n.proposeConfChange({ type: "addLearner", nodeId: 7, context: new Uint8Array() }),
    undefined,
  );
  drive(n, s);
  assert.deepEqual(n.confState(), { voters: [1], learners: [7] });
  const applied = n.status().applied;
  n = new RaftNode({ id: 1, storage: s, random: mulberry32(4), peers: [1], applied });
  assert.deepEqual(n.confState(), { voters: [1], learners: [7] });
  assert.equal(n.hasReady(), false, "nothing re-delivered");
});

Deno.test("restart raises a commit index recorded below the latest snapshot", () => {
  const s = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  s.append(Array.from({ length: 12 }, (_, i) => ent(i + 1, 1)));
  s.createSnapshot(10, { voters: [1, 2, 3], learners: [] }, new Uint8Array());
  s.setHardState({ term: 1, vote: 1, commit: 5 }); // the hard state after it was lost
  const n = new RaftNode({ id: 1, storage: s, random: mulberry32(9) });
  assert.equal(n.status().commit, 10);
  assert.equal(n.status().applied, 10);
  assert.equal(n.hasReady(), true, "the raised commit is persisted");
  const rd = n.ready();
  assert.deepEqual(rd.committedEntries, []);
  assert.equal(rd.hardState?.commit, 10);
});
