/**
 * The KV engine of a node runs without a WAL (server/node.ts): after a crash it holds a prefix of
 * the applied batches and the node re-applies the rest from the Raft log, which must therefore
 * never be compacted past the engine's durable applied index. This test kills every node with
 * SIGKILL right after the leader's engine wrote a level-0 table (a memtable switch), while writers
 * are running and local snapshots compact the log every few dozen entries, restarts them, and
 * checks that every node starts, catches up, and holds every acknowledged write; twice.
 */
import assert from "node:assert/strict";
import { TestCluster, waitFor } from "./harness.ts";
import { KVError } from "../client/client.ts";

async function _tables(dir: string): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".sst")) out.add(e.name);
  } catch {
    // not created yet
  }
  return out;
}

Deno.test("kill -9 of every node right after a memtable switch: every node restarts with every acknowledged write", async () => {
  const c = await TestCluster.start({ nodes: 3, extraArgs: ["--snapshot-entries", "50"] });
  let ok = false;
  try {
    const acked = new Map<string, string>();
    const pad = "x".repeat(40_000);
    let seq = 0;
    for (let round = 0; round < 2; round++) {
      const leader = await c.waitForLeader(10_000);
      const kvDir = `${c.node(leader).dataDir}/kv`;
      let stop = false;
      let bytes = 0;
      const writers = Array.from({ length: 4 }, async () => {
        const w = c.client({ timeoutMs: 5000 });
        while (!stop) {
          const k = `r${round}/${seq++}`;
          const v = `${k}:${pad}`;
          try {
            await w.put(k, v);
            acked.set(k, v);
            bytes += v.length;
          } catch (e) {
            if (!(e instanceof KVError)) throw e; // the nodes were killed under it
          }
        }
      });
      try {
        // Past 6 MiB every node switched memtables by size at least once (3-5 MiB each), and
        // local snapshots every 50 entries have flushed and compacted the logs many times.
        await waitFor("6 MiB of acknowledged writes", 60_000, () => bytes >= 6 << 20);
        const before = await _tables(kvDir);
        let fresh = false;
        await waitFor("a new level-0 table on the leader", 30_000, async () => {
          for (const t of await _tables(kvDir)) if (!before.has(t)) fresh = true;
          return fresh;
        });
        for (const n of c.nodes) n.kill("SIGKILL");
      } finally {
        stop = true;
        await Promise.all(writers);
      }
      for (const n of c.nodes) await n.wait();
      for (const n of c.nodes) await n.restart();
      const again = await c.waitForLeader(20_000);
      const kv = c.client({ timeoutMs: 10_000 });
      for (const [k, v] of acked) assert.equal(await kv.getString(k), v, `round ${round}: ${k}`);
      const target = (await c.status(again)).commitIndex;
      for (const n of c.nodes) {
        await waitFor(`node ${n.id} to apply up to ${target}`, 20_000, async () => {
          const st = await c.status(n.id, 1000);
          return st.appliedIndex >= target;
        });
        assert.doesNotMatch(n.log(), /unusable|cannot open/);
        const local = c.nodeClient(n.id, { timeoutMs: 10_000 });
        for (const [k, v] of acked) {
          assert.equal(await local.getString(k, { serializable: true }), v, `node ${n.id}: ${k}`);
        }
      }
      assert.ok(acked.size > 150, `only ${acked.size} writes acknowledged`);
    }
    ok = true;
  } finally {
    if (!ok) console.error(c.dumpLogs(40));
    await c.stop();
  }
});
