/**
 * DeleteRange's limit end to end. At its real size: a 3-node cluster holding 100,001 keys under one
 * prefix refuses to delete the prefix at once (`kv del --prefix`: exit 3, RESOURCE_EXHAUSTED, a
 * hint to use `--batch`, and nothing deleted on any node), then deletes a range of exactly 100,000
 * of them in one step, leaving the one outside it. And set per node (`--max-delete-range-keys`):
 * the limit of the node that proposes the range travels in its log entry, so nodes with different
 * limits still apply every range alike.
 */
import { equal, match, ok } from "node:assert/strict";
import { bytesToString, KVError } from "../client/client.ts";
import { DELETE_RANGE_DEFAULT_LIMIT } from "../raft/command.ts";
import { runKvCli as kv, type TestCluster, waitFor, withCluster } from "./harness.ts";

/** Waits until every node applied what the leader has committed. */
async function allApplied(c: TestCluster): Promise<void> {
  const leader = await c.status(c.leaderId()!);
  for (const node of c.nodes) {
    await waitFor(
      `node ${node.id} to apply`,
      30_000,
      async () => (await c.status(node.id)).appliedIndex >= leader.commitIndex,
    );
  }
}

Deno.test("DeleteRange: a range over 100,000 keys is refused whole; one of 100,000 goes at once", async () => {
  await withCluster({ nodes: 3 }, async (c) => {
    await c.waitForLeader(5000);
    const cl = c.client({ timeoutMs: 60_000 });
    const key = (i: number) => `lim/${String(i).padStart(6, "0")}`;
    const n = DELETE_RANGE_DEFAULT_LIMIT + 1;
    let next = 0;
    await Promise.all(
      Array.from({ length: 256 }, async () => {
        for (let i = next++; i < n; i = next++) await cl.put(key(i), "v");
      }),
    );

    const r = await kv(c.addresses, "--timeout-ms", "60000", "del", "--prefix", "lim/");
    equal(r.code, 3, r.err);
    match(r.err, /^kv: resource_exhausted: .*more than 100000 keys.*--batch N/);
    equal(r.out, "");
    // Refused on every replica alike: each still holds the first and the last key.
    await allApplied(c);
    for (const node of c.nodes) {
      const local = c.nodeClient(node.id, { timeoutMs: 30_000 });
      for (const i of [0, 50_000, n - 1]) {
        equal(await local.getString(key(i), { serializable: true }), "v", `node ${node.id}`);
      }
    }

    // Exactly the limit: [lim/000000, lim/100000) holds 100,000 keys, deleted in one entry.
    equal(await cl.deleteRange(key(0), key(n - 1)), DELETE_RANGE_DEFAULT_LIMIT);
    const left = await cl.scan("lim/", { limit: 10 });
    equal(left.pairs.map((p) => bytesToString(p.key)).join(","), key(n - 1));
    // Under the limit now, the prefix goes at once.
    equal(await cl.deletePrefix("lim/"), 1);
    equal((await cl.scan("lim/")).pairs.length, 0);
  });
});

Deno.test("DeleteRange: the proposing node's --max-delete-range-keys holds on every replica", async () => {
  await withCluster({ nodes: 3, extraArgs: ["--max-delete-range-keys", "5"] }, async (c) => {
    await c.waitForLeader(5000);
    // Nodes 2 and 3 restart with the default limit (100,000), one at a time so that a quorum
    // stays up; node 1 keeps 5 and is then made the leader.
    for (const node of c.nodes.filter((n) => n.id !== 1)) {
      await node.stop();
      node.extraArgs = [];
      node.start();
      await c.waitForLeader(10_000);
    }
    const leaderId = 1;
    const cl = c.client({ timeoutMs: 10_000 });
    if (c.leaderId() !== leaderId) await cl.transferLeader(leaderId);
    equal(await c.waitForLeader(10_000), leaderId);
    const put6 = async () => {
      for (let i = 1; i <= 6; i++) await cl.put(`m/${i}`, "v");
    };
    const everywhere = async () => {
      await allApplied(c);
      const counts = [];
      for (const node of c.nodes) {
        const local = c.nodeClient(node.id);
        counts.push((await local.scan("m/", { serializable: true })).pairs.length);
      }
      return counts.join(",");
    };
    await put6();
    // Through the leader: its limit, 5, refuses the 6 keys, and every replica keeps them.
    const refused = await c.nodeClient(leaderId).deletePrefix("m/").then((n) => n, (e) => e);
    ok(refused instanceof KVError && refused.kind === "resource_exhausted", String(refused));
    match(refused.message, /more than 5 keys/);
    equal(await everywhere(), "6,6,6");
    equal(await c.nodeClient(leaderId).deleteRange("m/1", "m/6"), 5);
    equal(await everywhere(), "1,1,1");
    // kv del --batch with parts larger than the leader's limit: refused parts are halved (8, 4).
    await put6();
    const leaderAddr = c.node(leaderId).address;
    const r = await kv([leaderAddr], "del", "--prefix", "m/", "--batch", "8");
    equal(r.code, 0, r.err);
    equal(r.out, "6\n");
    equal(await everywhere(), "0,0,0");
    // Through a follower: its limit (the default) goes with the entry, and the leader applies it.
    await put6();
    const follower = c.nodes.find((n) => n.id !== leaderId)!;
    equal(await c.nodeClient(follower.id).deletePrefix("m/"), 6);
    equal(await everywhere(), "0,0,0");
  });
});
