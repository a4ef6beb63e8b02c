/** Lease reads (`readOnly: "lease"`): answered without a round, and never by a deposed leader. */
import assert from "node:assert/strict";
import { MemoryStorage } from "./memory_storage.ts";
import { RaftNode } from "./node.ts";
import { mulberry32, TestNetwork } from "./testing.ts";
import { MessageType, newMessage } from "./types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function leaseNetwork(): TestNetwork {
  const net = new TestNetwork([1, 2, 3], { bootstrapPeers: true, readOnly: "lease" });
  net.campaign(1);
  assert.equal(net.node(1).role, "leader");
  net.node(1).propose(enc.encode("w"));
  net.settle();
  net.tickAll(1); // a heartbeat round: the quorum echoes tick 1
  return net;
}

/** Asks `id` for a read index and reports whether it was answered without any message sent. */
function readWithoutRound(net: TestNetwork, id: number, ctx: string): boolean {
  const node = net.node(id);
  assert.equal(node.readIndex(enc.encode(ctx)), undefined);
  if (!node.hasReady()) return false;
  const rd = node.ready();
  node.advance(rd);
  for (const m of rd.messages) net.deliver(m);
  return rd.readStates.some((rs) => dec.decode(rs.context) === ctx) &&
    !rd.messages.some((m) => m.type === MessageType.Heartbeat);
}

Deno.test("lease: the leader answers a read at once with the commit index, no heartbeat round", () => {
  const net = leaseNetwork();
  const leader = net.node(1);
  assert.ok(leader.leaseStartTick() > 0);
  const commit = leader.status().commit;
  assert.equal(leader.readIndex(enc.encode("r1")), undefined);
  const rd = leader.ready();
  assert.deepEqual(rd.readStates.map((r) => [dec.decode(r.context), r.index]), [["r1", commit]]);
  assert.ok(!rd.messages.some((m) => m.type === MessageType.Heartbeat));
  leader.advance(rd);
});

Deno.test("lease: a follower's read is answered by the leader without a round", () => {
  const net = leaseNetwork();
  const before = net.delivered.length;
  assert.equal(net.node(3).readIndex(enc.encode("f1")), undefined);
  net.settle();
  const rs = net.members.get(3)!.readStates;
  assert.deepEqual(rs.map((r) => dec.decode(r.context)), ["f1"]);
  const types = net.delivered.slice(before).map((m) => m.type);
  assert.deepEqual(types, [MessageType.ReadIndex, MessageType.ReadIndexResp]);
});

Deno.test("lease: heartbeats echo the leader's tick; safe mode leaves the field 0", () => {
  const net = leaseNetwork();
  net.tickAll(2);
  const hb = net.delivered.filter((m) => m.type === MessageType.Heartbeat);
  const resp = net.delivered.filter((m) => m.type === MessageType.HeartbeatResp);
  assert.ok(hb.length > 0 && hb.every((m) => m.index > 0));
  assert.deepEqual(resp.map((m) => m.index).sort(), hb.map((m) => m.index).sort());
  const safe = new TestNetwork([1, 2, 3], { bootstrapPeers: true });
  safe.campaign(1);
  safe.tickAll(2);
  assert.ok(safe.delivered.some((m) => m.type === MessageType.Heartbeat));
  assert.ok(safe.delivered.every((m) => m.type !== MessageType.Heartbeat || m.index === 0));
  assert.equal(safe.node(1).leaseStartTick(), 0);
});

for (const electionTick of [3, 5, 10]) {
  Deno.test(`lease: a partitioned leader stops serving before a new leader exists (electionTick ${electionTick})`, () => {
    const net = new TestNetwork([1, 2, 3], {
      bootstrapPeers: true,
      readOnly: "lease",
      electionTick,
    });
    net.campaign(1);
    net.node(1).propose(enc.encode("w"));
    net.settle();
    net.tickAll(1);
    assert.ok(net.node(1).leaseStartTick() > 0);
    net.isolate(1);
    let leaseEnded = -1;
    let newLeader = -1;
    for (let t = 1; t <= 20 * electionTick && newLeader < 0; t++) {
      // Every node ticks once per round, as with equal clock rates.
      for (const id of [1, 2, 3]) net.node(id).tick();
      net.settle();
      if (leaseEnded < 0 && !readWithoutRound(net, 1, `r${t}`)) leaseEnded = t;
      if (net.node(2).role === "leader" || net.node(3).role === "leader") newLeader = t;
    }
    assert.ok(newLeader > 0, "the majority elected a new leader");
    assert.ok(leaseEnded > 0 && leaseEnded < newLeader, `lease ${leaseEnded}, leader ${newLeader}`);
    // The old leader answers no read any more, lease or round.
    const answered = net.members.get(1)!.readStates.length;
    for (let t = 0; t < 5 * electionTick; t++) {
      net.node(1).readIndex(enc.encode(`late${t}`));
      net.tickAll(1);
    }
    const late = net.members.get(1)!.readStates.slice(answered);
    assert.ok(late.every((rs) => !dec.decode(rs.context).startsWith("late")));
  });
}

Deno.test("lease: electionTick 2 leaves no lease (every read takes a round)", () => {
  const net = new TestNetwork([1, 2, 3], {
    bootstrapPeers: true,
    readOnly: "lease",
    electionTick: 2,
  });
  net.campaign(1);
  net.tickAll(1);
  assert.equal(net.node(1).leaseStartTick(), 0);
});

Deno.test("lease: expireLease ends the lease until a quorum echoes a newer heartbeat", () => {
  const net = leaseNetwork();
  const leader = net.node(1);
  leader.expireLease();
  assert.equal(leader.leaseStartTick(), 0);
  assert.equal(readWithoutRound(net, 1, "x"), false);
  net.settle(); // the round answers it
  assert.ok(net.members.get(1)!.readStates.some((r) => dec.decode(r.context) === "x"));
  net.tickAll(1);
  assert.ok(leader.leaseStartTick() > 0);
});

Deno.test("lease: sending TimeoutNow (leadership transfer) ends the lease for the term", () => {
  const net = leaseNetwork();
  net.dropType(MessageType.TimeoutNow); // the target never campaigns: node 1 stays leader
  net.node(1).transferLeader(2);
  net.settle();
  assert.equal(net.node(1).role, "leader");
  assert.equal(net.node(1).leaseStartTick(), 0);
  net.tickAll(3); // heartbeats are still echoed, but the forced election may be under way
  assert.equal(net.node(1).role, "leader");
  assert.equal(net.node(1).leaseStartTick(), 0);
  assert.equal(readWithoutRound(net, 1, "t"), false);
});

Deno.test("lease: a restarted member refuses votes for one election timeout, a fresh one does not", () => {
  const storage = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  storage.setHardState({ term: 5, vote: 0, commit: 0 });
  const opts = {
    id: 2,
    storage,
    random: mulberry32(2),
    electionTick: 4,
    readOnly: "lease" as const,
  };
  const vote = (n: RaftNode, term: number) => {
    n.step(newMessage(MessageType.Vote, { from: 3, to: 2, term, index: 10, logTerm: 5 }));
    const rd = n.ready();
    n.advance(rd);
    return rd.messages.find((m) => m.type === MessageType.VoteResp);
  };
  const restarted = new RaftNode(opts);
  assert.equal(vote(restarted, 6), undefined, "ignored while quiet");
  for (let i = 0; i < 4; i++) restarted.tick();
  const granted = vote(restarted, 7);
  assert.ok(granted !== undefined && !granted.reject);
  const safe = new RaftNode({ ...opts, readOnly: "safe" });
  assert.ok(vote(safe, 6) !== undefined);
  const fresh = new RaftNode({ ...opts, storage: new MemoryStorage(), readOnly: "lease" });
  const r = vote(fresh, 1);
  assert.ok(r !== undefined && !r.reject);
});
