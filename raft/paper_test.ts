/**
 * One test per claim of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
 * Consensus Algorithm"), replayed on the real core over an in-memory network.
 */
import assert from "node:assert/strict";
import { MemoryStorage } from "./memory_storage.ts";
import { TestNetwork } from "./testing.ts";
import {
  type Entry,
  EntryType,
  type Message,
  MessageType,
  newMessage,
  type NodeId,
} from "./types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function storageWith(
  voters: NodeId[],
  terms: number[],
  term: number,
  commit = 0,
): MemoryStorage {
  const s = new MemoryStorage({ confState: { voters, learners: [] } });
  s.append(terms.map((t, i) => ({
    index: i + 1,
    term: t,
    type: EntryType.Normal,
    data: enc.encode(`${i + 1}@${t}`),
  })));
  s.setHardState({ term, vote: 0, commit });
  return s;
}

function logTerms(net: TestNetwork, id: NodeId): number[] {
  const n = net.node(id);
  return (n.entries(1, n.lastIndex() + 1) ?? []).map((e) => e.term);
}

function msg(type: Message["type"], from: NodeId, to: NodeId, fields: Partial<Message>): Message {
  return newMessage(type, { from, to, ...fields });
}

Deno.test("Figure 7: every divergent follower log converges to the new leader's", () => {
  const ids = [1, 2, 3, 4, 5, 6, 7];
  const logs: Record<number, number[]> = {
    1: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6], // the leader for term 8
    2: [1, 1, 1, 4, 4, 5, 5, 6, 6], // (a) missing an entry
    3: [1, 1, 1, 4], // (b) missing many
    4: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], // (c) an extra uncommitted entry
    5: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
    6: [1, 1, 1, 4, 4, 4, 4], // (e) extra entries of an old term
    7: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], // (f) a whole divergent history
  };
  const storages = new Map(ids.map((id) => [id, storageWith(ids, logs[id]!, 7)]));
  const net = new TestNetwork(ids, { storages });
  net.campaign(1);
  assert.equal(net.node(1).role, "leader");
  assert.equal(net.node(1).term, 8);
  net.tickAll(2);
  const want = [...logs[1]!, 8];
  for (const id of ids) assert.deepEqual(logTerms(net, id), want, `node ${id}`);
  // Fast backtracking: a rejection skips a whole term, so no follower needs more than 3 probes.
  for (const id of ids.slice(1)) {
    const rejects = net.delivered.filter((m) =>
      m.type === MessageType.AppResp && m.reject && m.from === id
    ).length;
    assert.ok(rejects <= 3, `node ${id} rejected ${rejects} times`);
  }
  for (const id of ids) {
    assert.equal(net.members.get(id)!.applied.length, 11, `node ${id} applied everything`);
  }
});

function figure8(unsafeCommitByCount: boolean) {
  // S1..S5. Index 1 (term 1) is everywhere. S1 and S2 hold 2@2; S5 holds 2@3 (Figure 8 (b)).
  const ids = [1, 2, 3, 4, 5];
  const storages = new Map<NodeId, MemoryStorage>([
    [1, storageWith(ids, [1, 2], 3, 1)],
    [2, storageWith(ids, [1, 2], 3, 1)],
    [3, storageWith(ids, [1], 3, 1)],
    [4, storageWith(ids, [1], 3, 1)],
    [5, storageWith(ids, [1, 3], 3, 1)],
  ]);
  const net = new TestNetwork(ids, { storages, unsafeCommitByCount });
  // (c) S1 wins term 4 (votes of S2, S3, S4) but its appends are lost...
  net.dropType(MessageType.App);
  net.campaign(1);
  assert.equal(net.node(1).role, "leader");
  assert.equal(net.node(1).term, 4);
  net.recover();
  net.isolate(1);
  // ...except that 2@2 reaches S3, so a majority (S1, S2, S3) holds the term-2 entry.
  net.members.get(3)!.storage.append([{
    index: 2,
    term: 2,
    type: EntryType.Normal,
    data: enc.encode("2@2"),
  }]);
  for (const from of [2, 3]) {
    net.node(1).step(msg(MessageType.AppResp, from, 1, { term: 4, index: 2 }));
  }
  net.settle();
  const s1Commit = net.node(1).status().commit;
  // (d) S1 crashes; S5 (last term 3) is elected by S2, S3, S4 and commits its 2@3.
  net.campaign(5);
  net.tickAll(2);
  return { net, s1Commit };
}

Deno.test("Figure 8: an entry of a previous term is not committed by counting replicas", () => {
  const { net, s1Commit } = figure8(false);
  assert.equal(s1Commit, 1, "S1 must not commit 2@2");
  assert.equal(net.node(5).role, "leader");
  assert.equal(net.node(2).termAt(2), 3, "2@3 replaced the uncommitted 2@2");
  assert.ok(net.node(2).status().commit >= 2);
});

Deno.test("Figure 8 with commit-by-count (broken on purpose) commits two values at index 2", () => {
  const { net, s1Commit } = figure8(true);
  assert.equal(s1Commit, 2, "the broken rule commits 2@2 on S1");
  assert.equal(net.node(5).role, "leader");
  assert.ok(net.node(2).status().commit >= 2);
  assert.equal(net.node(2).termAt(2), 3, "... and S5's majority commits 2@3 at the same index");
});

Deno.test("a stale leader's proposals are never committed", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.campaign(1);
  assert.equal(net.node(1).propose(enc.encode("before")), undefined);
  net.settle();
  net.isolate(1);
  // Nodes 2 and 3 time out (node 1 does not tick, so it keeps believing it leads).
  let newLeader = 0;
  for (let i = 0; i < 100 && newLeader === 0; i++) {
    for (const id of [2, 3]) net.node(id).tick();
    net.settle();
    newLeader = [2, 3].find((id) => net.node(id).role === "leader") ?? 0;
  }
  assert.ok(newLeader !== 0);
  assert.ok(net.node(newLeader).term > net.node(1).term);
  assert.equal(net.node(1).role, "leader");
  for (let i = 0; i < 5; i++) assert.equal(net.node(1).propose(enc.encode(`stale${i}`)), undefined);
  net.settle();
  assert.equal(net.node(newLeader).propose(enc.encode("after")), undefined);
  net.settle();
  net.recover();
  net.tickAll(5);
  assert.equal(net.node(1).role, "follower");
  assert.equal(net.node(1).leader, newLeader);
  for (const id of [1, 2, 3]) {
    const applied = net.members.get(id)!.applied.map((e) => dec.decode(e.data));
    assert.ok(!applied.some((d) => d.startsWith("stale")), `node ${id} applied a stale proposal`);
    assert.ok(applied.includes("before") && applied.includes("after"), `node ${id}: ${applied}`);
    const log = net.node(id).entries(1, net.node(id).lastIndex() + 1)!;
    assert.ok(!log.some((e: Entry) => dec.decode(e.data).startsWith("stale")));
  }
});

Deno.test("election restriction: a candidate missing committed entries cannot win", () => {
  // No PreVote/CheckQuorum lease here, so only the log comparison decides the votes.
  const net = new TestNetwork([1, 2, 3], { preVote: false, checkQuorum: false });
  net.campaign(1);
  net.cut(1, 3);
  assert.equal(net.node(1).propose(enc.encode("x")), undefined);
  net.settle();
  assert.equal(net.node(1).status().commit, 2, "committed by nodes 1 and 2");
  assert.equal(net.node(3).lastIndex(), 1, "node 3 missed it");
  net.isolate(1);
  net.campaign(3);
  assert.notEqual(net.node(3).role, "leader", "node 3's log is behind node 2's");
  const resp = net.delivered.find((m) =>
    m.type === MessageType.VoteResp && m.from === 2 && m.to === 3
  );
  assert.ok(resp?.reject, "node 2 rejected node 3 for its log");
  net.campaign(2);
  assert.equal(net.node(2).role, "leader");
  assert.equal(net.node(2).termAt(2), net.node(1).termAt(2));
});

Deno.test("PreVote: a partitioned node rejoining does not bump the term or depose the leader", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.campaign(1);
  const term = net.node(1).term;
  net.isolate(3);
  net.tickAll(100); // node 3 times out again and again
  assert.equal(net.node(3).term, term, "pre-votes do not raise the term");
  net.recover();
  net.tickAll(20);
  assert.equal(net.node(1).role, "leader");
  assert.equal(net.node(1).term, term);
  assert.equal(net.node(3).leader, 1);
});

Deno.test("CheckQuorum: a leader cut off from the majority steps down within an election timeout", () => {
  const net = new TestNetwork([1, 2, 3]);
  net.campaign(1);
  net.isolate(1);
  let ticks = 0;
  while (net.node(1).role === "leader" && ticks < 100) {
    net.node(1).tick();
    net.settle();
    ticks++;
  }
  assert.equal(net.node(1).role, "follower");
  assert.ok(ticks <= 2 * 10, `stepped down after ${ticks} ticks`);
});
