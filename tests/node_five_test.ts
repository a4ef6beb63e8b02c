/**
 * A real 5-node cluster: it keeps taking writes with two nodes down (the leader one of them),
 * refuses to answer writes and linearizable reads without a majority (and does not answer them
 * with stale data), and once the nodes are back every node holds every acknowledged write. Its
 * nodes log in JSON (`--log-format json`), and every line they wrote is checked.
 */
import { equal, ok } from "node:assert/strict";
import { runKvCli, TestCluster, waitFor } from "./harness.ts";
import type { StatusReport } from "../client/kv_main.ts";
import { KVClient, KVError } from "../client/client.ts";

Deno.test("5-node cluster: two nodes down is fine, three is no quorum, all back converge", async (t) => {
  // The nodes log in JSON here (the other tests use the text format).
  const c = await TestCluster.start({ nodes: 5, extraArgs: ["--log-format", "json"] });
  /** Every acknowledged write: key → value. */
  const acked = new Map<string, string>();
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    if (!await t.step(name, fn)) failed = true;
  };
  const clients = new Map<number, KVClient>();
  /** A client of node `id` alone (a follower forwards to the leader). */
  const via = (id: number) => {
    if (!clients.has(id)) clients.set(id, c.nodeClient(id, { timeoutMs: 10_000 }));
    return clients.get(id)!;
  };
  const write = async (prefix: string, n: number, ids: number[]) => {
    for (let i = 0; i < n; i++) {
      const id = ids[i % ids.length]!;
      const k = `${prefix}/${i}`;
      const v = `${prefix}-${i}-via-${id}`;
      await via(id).put(k, v);
      acked.set(k, v);
    }
  };
  const up = () => c.nodes.filter((n) => n.running).map((n) => n.id);
  try {
    await step("a leader is elected; writes through every node are acknowledged", async () => {
      await c.waitForLeader(15_000);
      await write("a", 50, [1, 2, 3, 4, 5]);
      const s = await c.status(c.leaderId()!);
      equal(s.members.length, 5);
    });

    await step("kill -9 of the leader and one follower: a new leader, writes go on", async () => {
      const old = c.leaderId()!;
      const other = old === 1 ? 2 : 1;
      c.node(old).kill();
      c.node(other).kill();
      await Promise.all([c.node(old).wait(), c.node(other).wait()]);
      const leader = await c.waitForLeader(10_000, { exclude: [old, other] });
      ok(leader !== old && leader !== other, `new leader ${leader}`);
      await write("b", 50, up());
      // `kv status` shows the two dead members as unreachable and unhealthy.
      const r = await runKvCli(c.addresses, "status", "--json");
      equal(r.code, 0, r.err);
      const st = JSON.parse(r.out) as StatusReport;
      equal(st.leaderId, leader);
      for (const m of st.members) {
        const dead = m.id === old || m.id === other;
        equal(m.role === "unreachable", dead, JSON.stringify(m));
        equal(m.healthy, !dead, JSON.stringify(m));
        equal(m.appliedIndex === null, dead, JSON.stringify(m));
      }
      const kv = c.client({ endpoints: up().map((id) => c.node(id).address), timeoutMs: 10_000 });
      for (const [k, v] of acked) equal(await kv.getString(k), v, k);
    });

    await step("a third node down: no quorum, writes and linearizable reads fail", async () => {
      const victim = up().find((id) => id !== c.leaderId())!;
      c.node(victim).kill();
      await c.node(victim).wait();
      const left = up();
      equal(left.length, 2);
      for (const id of left) {
        const kv = c.nodeClient(id, { timeoutMs: 1500 });
        const put = await kv.put(`c/${id}`, "no quorum").then(() => "acknowledged", (e) => e);
        ok(put instanceof KVError, `a put through node ${id} with 2 of 5 up: ${put}`);
        ok(["unavailable", "deadline_exceeded"].includes(put.kind), `${put.kind}: ${put.message}`);
        const get = await kv.getString("a/0").then((v) => `read ${v}`, (e) => e);
        ok(get instanceof KVError, `a linearizable get through node ${id} with 2 of 5 up: ${get}`);
        // A serializable read is the operator's way to look at a node's (possibly stale) state.
        equal(await kv.getString("a/0", { serializable: true }), acked.get("a/0"));
      }
    });

    await step(
      "every node back: a leader, and every node holds every acknowledged write",
      async () => {
        for (const n of c.nodes) if (!n.running) await n.restart();
        const leader = await c.waitForLeader(15_000);
        await write("d", 20, [1, 2, 3, 4, 5]);
        const s = await c.status(leader);
        for (const n of c.nodes) {
          const kv = via(n.id);
          await waitFor(`node ${n.id} to apply ${s.commitIndex}`, 15_000, async () => {
            return (await c.status(n.id)).appliedIndex >= s.commitIndex;
          });
          for (const [k, v] of acked) {
            equal(await kv.getString(k, { serializable: true }), v, `node ${n.id}: ${k}`);
          }
        }
        // The writes that failed without a quorum may or may not have been applied (their outcome
        // was unknown to the client), but every node must agree on each of them.
        for (const id of [1, 2, 3, 4, 5]) {
          const seen = new Set<string | undefined>();
          for (const n of c.nodes) {
            seen.add(await via(n.id).getString(`c/${id}`, { serializable: true }));
          }
          equal(seen.size, 1, `nodes disagree on c/${id}: ${[...seen]}`);
        }
      },
    );
    await step("every line of every node's log is one JSON object (--log-format json)", () => {
      for (const n of c.nodes) {
        const lines = n.log().split("\n").filter((l) => l !== "" && !l.startsWith("--- harness"));
        ok(lines.length > 5, `node ${n.id}: ${lines.length} lines`);
        for (const l of lines) {
          const o = JSON.parse(l);
          equal(o.node, n.id, l);
          ok(["debug", "info", "warn", "error"].includes(o.level), l);
          ok(typeof o.msg === "string" && typeof o.term === "number" && o.ts, l);
        }
      }
      ok(
        c.nodes.some((n) => n.log().split("\n").some((l) => l.includes('"msg":"became leader"'))),
        "no node logged that it became leader",
      );
      return Promise.resolve();
    });
  } finally {
    if (failed) console.error(c.dumpLogs());
    await c.stop();
  }
});
