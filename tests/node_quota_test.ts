/**
 * The space quota (`--quota-bytes`, etcd's `--quota-backend-bytes`): past it a cluster refuses the
 * writes that add data with RESOURCE_EXHAUSTED, at every node, and keeps serving reads and
 * deletes; restarted with a larger quota it takes writes again, with nothing lost.
 */
import { equal, match, ok } from "node:assert/strict";
import { KVError } from "../client/client.ts";
import { waitFor, withCluster } from "./harness.ts";

Deno.test("past its space quota a cluster refuses puts, serves reads and deletes, and resumes with a larger quota", async () => {
  await withCluster({ nodes: 3, extraArgs: ["--quota-bytes", "1MiB"] }, async (c) => {
    await c.waitForLeader(5000);
    const kv = c.client({ timeoutMs: 10_000 });
    const value = (i: number) => `value-${i}-`.padEnd(4096, "x");
    const refusal = async (p: Promise<unknown>): Promise<KVError | undefined> => {
      try {
        await p;
        return undefined;
      } catch (e) {
        if (e instanceof KVError && e.kind === "resource_exhausted") return e;
        throw e;
      }
    };

    // 4 KiB values until the cluster refuses one (1 MiB holds about 250 of them).
    let acked = 0;
    let refused: KVError | undefined;
    while (refused === undefined) {
      ok(acked < 2000, "no put was refused");
      refused = await refusal(kv.put(`k${acked}`, value(acked)));
      if (refused === undefined) acked++;
    }
    ok(acked >= 200, `refused after ${acked} puts of 4 KiB, under the 1 MiB quota`);
    match(refused.message, /space quota exceeded: .* of its 1\.0 MiB quota \(--quota-bytes\)/);

    // Every node refuses (each checks its own copy of the data), compare-and-swap writes too.
    for (const n of c.nodes) {
      const own = c.nodeClient(n.id, { timeoutMs: 5000 });
      await waitFor(
        `node ${n.id} to refuse`,
        5000,
        async () => await refusal(own.put("more", "x")) !== undefined,
      );
      ok(await refusal(own.cas("k0", value(0), "changed")) !== undefined, `cas on ${n.id}`);
    }
    // Status says how far over: the data's bytes against the quota.
    const st = await c.status(c.nodes[0]!.id);
    equal(st.quotaBytes, 1024 ** 2);
    ok(st.dbBytes > st.quotaBytes, `${st.dbBytes} bytes of data`);
    // Reads and deletes go on.
    for (let i = 0; i < acked; i++) equal(await kv.getString(`k${i}`), value(i), `k${i}`);
    equal(await kv.delete("k0"), true);
    ok((await kv.cas("k1", value(1), null)).success, "a deleting compare-and-swap");
    equal(await kv.get("k1"), undefined);
    ok(c.nodes.some((n) => /WARN .*space quota exceeded/.test(n.log())), "logged");

    // A restart with a larger quota: writes again, and every acknowledged write is there.
    for (const n of c.nodes) {
      await n.stop();
      n.extraArgs[n.extraArgs.indexOf("--quota-bytes") + 1] = "64MiB";
    }
    for (const n of c.nodes) await n.restart();
    await c.waitForLeader(10_000);
    await kv.put("after", "room");
    equal(await kv.getString("after"), "room");
    for (let i = 2; i < acked; i++) equal(await kv.getString(`k${i}`), value(i), `k${i}`);
    equal(await kv.get("k0"), undefined);
  });
});
