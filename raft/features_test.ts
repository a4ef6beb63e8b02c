/** Issue 5 core features: ReadIndex, membership with learners, leadership transfer, snapshots. */
import assert from "node:assert/strict";
import { TestNetwork } from "./testing.ts";
import { MessageType } from "./types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const noCtx = new Uint8Array(0);

function electedNetwork(ids = [1, 2, 3]): TestNetwork {
  const net = new TestNetwork(ids, { bootstrapPeers: true });
  net.campaign(1);
  assert.equal(net.node(1).role, "leader");
  return net;
}

Deno.test("ReadIndex on the leader answers after a heartbeat round with the commit index", () => {
  const net = electedNetwork();
  net.node(1).propose(enc.encode("w"));
  net.settle();
  const commit = net.node(1).status().commit;
  assert.equal(net.node(1).readIndex(enc.encode("r1")), undefined);
  // Nothing is answered before the quorum confirms leadership.
  const rd = net.node(1).ready();
  assert.deepEqual(rd.readStates, []);
  assert.ok(
    rd.messages.some((m) => m.type === MessageType.Heartbeat && dec.decode(m.context) === "r1"),
  );
  net.node(1).advance(rd);
  for (const m of rd.messages) net.deliver(m);
  net.settle();
  const rs = net.members.get(1)!.readStates;
  assert.equal(rs.length, 1);
  assert.equal(dec.decode(rs[0]!.context), "r1");
  assert.equal(rs[0]!.index, commit);
});

Deno.test("ReadIndex on a follower is forwarded to the leader and answered on the follower", () => {
  const net = electedNetwork();
  net.node(1).propose(enc.encode("w"));
  net.settle();
  assert.equal(net.node(3).readIndex(enc.encode("f1")), undefined);
  net.settle();
  const rs = net.members.get(3)!.readStates;
  assert.equal(rs.length, 1);
  assert.equal(dec.decode(rs[0]!.context), "f1");
  assert.equal(rs[0]!.index, net.node(1).status().commit);
  assert.deepEqual(net.members.get(1)!.readStates, []);
});

Deno.test("ReadIndex on a leader cut off from the majority is never answered", () => {
  const net = electedNetwork();
  net.isolate(1);
  assert.equal(net.node(1).readIndex(enc.encode("stale")), undefined);
  net.tickAll(30);
  assert.deepEqual(net.members.get(1)!.readStates, []);
});

Deno.test("ReadIndex waits until the new leader commits an entry of its term", () => {
  const net = electedNetwork();
  net.dropType(MessageType.AppResp);
  net.node(1).transferLeader(2); // node 2 wins at once but cannot commit its no-op yet
  net.settle();
  assert.equal(net.node(2).role, "leader");
  assert.equal(net.node(2).readIndex(enc.encode("early")), undefined);
  net.settle();
  assert.deepEqual(net.members.get(2)!.readStates, []);
  net.recover();
  net.tickAll(3);
  const rs = net.members.get(2)!.readStates;
  assert.equal(rs.length, 1);
  assert.equal(rs[0]!.index, net.node(2).status().commit);
  assert.equal(net.node(2).termAt(rs[0]!.index), net.node(2).term);
});

Deno.test("membership: a learner joins empty, catches up without voting, is promoted", () => {
  const net = electedNetwork();
  for (let i = 0; i < 5; i++) net.node(1).propose(enc.encode(`v${i}`));
  net.settle();
  net.addMember(4);
  assert.equal(
    net.node(1).proposeConfChange({ type: "addLearner", nodeId: 4, context: noCtx }),
    undefined,
  );
  // One change at a time.
  assert.deepEqual(
    net.node(1).proposeConfChange({ type: "addVoter", nodeId: 4, context: noCtx }),
    { kind: "ConfChangePending" },
  );
  net.tickAll(5);
  assert.deepEqual(net.node(1).status().confState, { voters: [1, 2, 3], learners: [4] });
  assert.equal(net.node(4).status().commit, net.node(1).status().commit, "learner caught up");
  assert.deepEqual(net.node(4).status().confState, { voters: [1, 2, 3], learners: [4] });
  // A learner never campaigns.
  net.isolate(4);
  net.tickAll(50);
  assert.equal(net.node(4).role, "follower");
  net.recover();
  net.tickAll(3);
  assert.equal(
    net.node(1).proposeConfChange({ type: "addVoter", nodeId: 4, context: noCtx }),
    undefined,
  );
  net.tickAll(3);
  for (const id of [1, 2, 3, 4]) {
    assert.deepEqual(net.node(id).status().confState, { voters: [1, 2, 3, 4], learners: [] });
  }
});

Deno.test("membership: removing the leader makes it step down and another member leads", () => {
  const net = electedNetwork();
  net.node(1).propose(enc.encode("x"));
  net.settle();
  assert.equal(
    net.node(1).proposeConfChange({ type: "removeNode", nodeId: 1, context: noCtx }),
    undefined,
  );
  net.tickAll(3);
  assert.notEqual(net.node(1).role, "leader");
  net.tickAll(30);
  const leaders = [2, 3].filter((id) => net.node(id).role === "leader");
  assert.equal(leaders.length, 1);
  const l = leaders[0]!;
  assert.deepEqual(net.node(l).status().confState, { voters: [2, 3], learners: [] });
  assert.equal(net.node(l).propose(enc.encode("after")), undefined);
  net.tickAll(2);
  const other = l === 2 ? 3 : 2;
  assert.equal(dec.decode(net.members.get(other)!.applied.at(-1)!.data), "after");
});

Deno.test("membership changes wait for an entry of the leader's term to be applied", () => {
  const net = electedNetwork();
  net.dropType(MessageType.AppResp);
  net.node(1).transferLeader(2);
  net.settle();
  assert.equal(net.node(2).role, "leader");
  assert.deepEqual(
    net.node(2).proposeConfChange({ type: "addLearner", nodeId: 9, context: noCtx }),
    { kind: "ConfChangePending" },
  );
});

Deno.test("leadership transfer: TimeoutNow hands over without an election timeout", () => {
  const net = electedNetwork();
  net.node(1).propose(enc.encode("x"));
  net.settle();
  const term = net.node(1).term;
  net.node(1).transferLeader(3);
  net.settle();
  assert.equal(net.node(3).role, "leader");
  assert.equal(net.node(3).term, term + 1);
  assert.equal(net.node(1).leader, 3);
  // Transfer to a lagging follower: it is caught up first; proposals wait meanwhile.
  net.cut(3, 2);
  net.node(3).propose(enc.encode("y"));
  net.settle();
  net.recover();
  net.dropType(MessageType.App);
  net.node(3).transferLeader(2);
  net.settle();
  assert.deepEqual(net.node(3).propose(enc.encode("z")), {
    kind: "TransferInProgress",
    leaderHint: 2,
  });
  net.recover();
  net.tickAll(2);
  assert.equal(net.node(2).role, "leader");
});

Deno.test("snapshots: a follower behind the compacted log gets the leader's snapshot", () => {
  const net = electedNetwork();
  net.isolate(3);
  for (let i = 0; i < 20; i++) net.node(1).propose(enc.encode(`e${i}`));
  net.settle();
  const leader = net.members.get(1)!;
  const applied = leader.applied.at(-1)!.index;
  leader.storage.createSnapshot(applied, net.node(1).confState(), enc.encode("state"));
  leader.storage.compact(applied - 2);
  net.recover();
  net.tickAll(5);
  const f = net.members.get(3)!;
  assert.deepEqual(f.snapshots, [applied]);
  assert.equal(f.storage.firstIndex(), applied + 1);
  assert.equal(net.node(3).status().commit, net.node(1).status().commit);
  assert.equal(net.node(3).status().applied, net.node(1).status().applied);
  assert.equal(net.node(1).status().progress.get(3)!.state, "replicate");
  // Replication continues normally after the snapshot.
  net.node(1).propose(enc.encode("post"));
  net.tickAll(2);
  assert.equal(dec.decode(f.applied.at(-1)!.data), "post");
});
