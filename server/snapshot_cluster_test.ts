/**
 * Process-level snapshot test (issue 5): a node that is down while 3× the snapshot threshold is
 * written catches up by InstallSnapshot when it restarts, and the log stays bounded.
 */
import assert from "node:assert/strict";
import { TestCluster, waitFor } from "../tests/harness.ts";

Deno.test("a node down for 3x the snapshot threshold catches up by snapshot", async () => {
  const c = await TestCluster.start({ nodes: 3, extraArgs: ["--snapshot-entries", "40"] });
  let ok = false;
  try {
    const leader = await c.waitForLeader(10_000);
    const down = c.nodes.find((n) => n.id !== leader)!;
    down.kill("SIGKILL");
    await down.wait();
    const kv = c.client({
      endpoints: c.nodes.filter((n) => n !== down).map((n) => n.address),
      timeoutMs: 10_000,
    });
    for (let i = 0; i < 150; i++) await kv.put(`s/${i}`, `v${i}`);
    const st = await c.status(leader);
    assert.ok(st.snapshotIndex >= 120, `leader snapshot index ${st.snapshotIndex}`);
    assert.ok(st.firstIndex > 40, `leader log still starts at ${st.firstIndex}`);
    down.restart();
    await waitFor(`node ${down.id} to catch up`, 20_000, async () => {
      const s = await c.status(down.id, 1000);
      return s.appliedIndex >= st.commitIndex;
    });
    assert.match(down.log(), /installed snapshot at \d+/);
    const direct = c.client({ endpoints: [down.address], timeoutMs: 10_000 });
    for (const i of [0, 77, 149]) {
      assert.equal(await direct.getString(`s/${i}`, { serializable: true }), `v${i}`);
    }
    ok = true;
  } finally {
    if (!ok) console.error(c.dumpLogs(40));
    await c.stop();
  }
});
