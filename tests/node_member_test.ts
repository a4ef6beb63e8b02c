/**
 * Membership and leadership through the user-facing `kv member ...` commands (issue 5), against
 * real clusters: transfer-leader; add a 4th node as a learner, start it with `--join`, promote it,
 * remove node 1, kill node 2: the cluster of {3, 4} still serves every acknowledged write.
 */
import { equal, match, ok } from "node:assert/strict";
import {
  freePorts,
  NodeProcess,
  runKvCli as kv,
  TestCluster,
  waitFor,
  withCluster,
} from "./harness.ts";

Deno.test("kv member transfer-leader hands leadership to the named node", async () => {
  await withCluster({ nodes: 3 }, async (c) => {
    const leader = await c.waitForLeader(5000);
    const target = c.nodes.find((n) => n.id !== leader)!.id;
    const r = await kv(c.addresses, "member", "transfer-leader", String(target));
    equal(r.code, 0, r.err);
    equal(r.out, `leader: ${target}\n`);
    equal(await c.waitForLeader(5000), target);
    // Writes go on under the new leader.
    const client = c.client();
    await client.put("after-transfer", "ok");
    equal(await client.getString("after-transfer"), "ok");
  });
});

Deno.test("kv member add learner, promote, remove 1, kill 2: {3,4} keep every write", async (t) => {
  const c = await TestCluster.start({ nodes: 3 });
  let fourth: NodeProcess | undefined;
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    if (!await t.step(name, fn)) failed = true;
  };
  try {
    await c.waitForLeader(5000);
    const eps = c.addresses;
    const client = c.client({ timeoutMs: 10_000 });
    const acked = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      await client.put(`m/${i}`, `v${i}`);
      acked.set(`m/${i}`, `v${i}`);
    }

    await step("member add --learner, then promote: node 4 joins and catches up", async () => {
      const [port] = await freePorts(1);
      const address = `127.0.0.1:${port}`;
      let r = await kv(eps, "member", "add", "4", address, "--learner");
      equal(r.code, 0, r.err);
      match(r.out, /added member 4 as a learner/);
      match(r.out, new RegExp(`^4\\s+${address.replaceAll(".", "\\.")}\\s+learner`, "m"));
      fourth = new NodeProcess({
        id: 4,
        port: port!,
        peers: `4=${address}`,
        dataDir: `${c.dataDirRoot}/node-4`,
        extraArgs: ["--join", eps.join(",")],
      });
      fourth.start();
      const leader = await c.waitForLeader(5000);
      await waitFor("node 4 to catch up", 15_000, async () => {
        const target = (await c.status(leader)).commitIndex;
        return (await client.statusOf(address, { timeoutMs: 500 })).appliedIndex >= target;
      });
      r = await kv(eps, "member", "promote", "4");
      equal(r.code, 0, r.err);
      match(r.out, /^4\s+\S+\s+voter/m);
      r = await kv(eps, "member", "list");
      equal(r.code, 0, r.err);
      for (const id of [1, 2, 3, 4]) match(r.out, new RegExp(`^${id}\\s+\\S+\\s+voter`, "m"));
    });

    await step(
      "member remove 1, kill node 2: nodes 3 and 4 serve every acknowledged write",
      async () => {
        let r = await kv(eps, "member", "remove", "1");
        equal(r.code, 0, r.err);
        ok(!/^1\s/m.test(r.out.split("\n").slice(1).join("\n")), r.out);
        await client.put("after-remove", "yes");
        acked.set("after-remove", "yes");
        c.node(1).kill("SIGKILL");
        c.node(2).kill("SIGKILL");
        await c.node(1).wait();
        await c.node(2).wait();
        const survivors = [c.node(3).address, fourth!.address];
        const kv34 = c.client({ endpoints: survivors, timeoutMs: 15_000 });
        for (const [k, v] of acked) equal(await kv34.getString(k), v, k);
        r = await kv(survivors, "member", "list");
        equal(r.code, 0, r.err);
        ok(!/^1\s/m.test(r.out), r.out);
      },
    );
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (failed) {
      console.error(c.dumpLogs(60));
      if (fourth) console.error(`===== node 4\n${fourth.tail(60)}`);
    }
    await fourth?.stop();
    await c.stop();
  }
});
