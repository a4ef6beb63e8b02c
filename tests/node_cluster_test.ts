/**
 * A real 3-node cluster: election, forwarding through a follower, kill -9 of the leader, catch-up
 * of a restarted node, kill -9 of every node. One cluster runs through the steps in order.
 */
import { equal, ok } from "node:assert/strict";
import { TestCluster, waitFor } from "./harness.ts";
import { KVError } from "../client/client.ts";

Deno.test("3-node cluster: election, follower writes, leader crash, restart, total crash", async (t) => {
  const started = Date.now();
  const c = await TestCluster.start({ nodes: 3 });
  /** Every acknowledged write: key → value. */
  const acked = new Map<string, string>();
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    const passed = await t.step(name, fn);
    if (!passed) failed = true;
  };
  const checkAll = async (what: string) => {
    const kv = c.client({ timeoutMs: 10_000 });
    for (const [k, v] of acked) equal(await kv.getString(k), v, `${what}: ${k}`);
  };
  try {
    await step("a leader is elected within 2 s of the nodes being up", async () => {
      // Process start-up (Deno, grpc-js, opening the data directory) is not election time:
      // the clock starts when every node answers Status.
      await waitFor("every node to answer Status", 15_000, async () => {
        await Promise.all(c.nodes.map((n) => c.status(n.id, 500)));
        return true;
      });
      const up = Date.now();
      const leader = await c.waitForLeader(2000);
      ok(leader >= 1 && leader <= 3);
      console.log(
        `leader ${leader} elected ${Date.now() - up} ms after every node was up ` +
          `(${Date.now() - started} ms after spawning the processes)`,
      );
    });

    await step("a put through a follower is readable from every node", async () => {
      const leader = await c.waitForLeader(5000);
      const follower = c.nodes.find((n) => n.id !== leader)!.id;
      const kv = c.nodeClient(follower);
      await kv.put("follower/k", "v1");
      acked.set("follower/k", "v1");
      for (const n of c.nodes) {
        equal(await c.nodeClient(n.id).getString("follower/k"), "v1", `node ${n.id}`);
      }
      // And, eventually, from each node's own state without a leader round trip.
      for (const n of c.nodes) {
        await waitFor(
          `node ${n.id} to apply the put`,
          5000,
          async () =>
            (await c.nodeClient(n.id).getString("follower/k", { serializable: true })) === "v1",
        );
      }
      const s = await c.client().scan("follower/");
      equal(s.pairs.length, 1);
    });

    await step("kill -9 of the leader: a new leader, every acknowledged write kept", async () => {
      const kv = c.client({ timeoutMs: 10_000 });
      for (let i = 0; i < 50; i++) {
        await kv.put(`before/${i}`, `v${i}`);
        acked.set(`before/${i}`, `v${i}`);
      }
      // A writer keeps going while the leader dies; what it gets acknowledged must survive.
      let stop = false;
      let n = 0;
      const writer = (async () => {
        const w = c.client({ timeoutMs: 8000 });
        while (!stop) {
          const k = `during/${n++}`;
          try {
            await w.put(k, k);
            acked.set(k, k);
          } catch (e) {
            if (!(e instanceof KVError)) throw e;
          }
        }
      })();
      try {
        const old = await c.waitForLeader(5000);
        c.node(old).kill("SIGKILL");
        await c.node(old).wait();
        const fresh = await c.waitForLeader(5000, { exclude: [old] });
        ok(fresh !== old, `new leader ${fresh} differs from ${old}`);
        // Writes are acknowledged again under the new leader.
        const before = acked.size;
        await waitFor(
          "writes to be acknowledged by the new leader",
          8000,
          () => acked.size >= before + 20,
        );
      } finally {
        stop = true;
        await writer;
      }
      await checkAll("after the leader crash");
    });

    await step("the killed node restarts and catches up", async () => {
      const dead = c.nodes.find((n) => !n.running)!;
      await dead.restart();
      const kv = c.client({ timeoutMs: 10_000 });
      await kv.put("after-restart", "yes");
      acked.set("after-restart", "yes");
      const leader = await c.waitForLeader(5000);
      const target = (await c.status(leader)).commitIndex;
      await waitFor(
        `node ${dead.id} to apply up to ${target}`,
        10_000,
        async () => (await c.status(dead.id)).appliedIndex >= target,
      );
      const local = c.nodeClient(dead.id);
      for (const [k, v] of acked) {
        equal(await local.getString(k, { serializable: true }), v, `node ${dead.id}: ${k}`);
      }
    });

    await step("kill -9 of every node, restart: every acknowledged write is there", async () => {
      for (const n of c.nodes) n.kill("SIGKILL");
      for (const n of c.nodes) await n.wait();
      for (const n of c.nodes) await n.restart();
      await c.waitForLeader(10_000);
      await checkAll("after restarting every node");
    });
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (failed) console.error(c.dumpLogs(80));
    await c.stop();
  }
});
