/**
 * DeleteRange's limit end to end, at its real size: a 3-node cluster holding 100,001 keys under one
 * prefix refuses to delete the prefix at once (`kv del --prefix`: exit 3, RESOURCE_EXHAUSTED, a
 * hint to use `--batch`, and nothing deleted on any node), then deletes a range of exactly 100,000
 * of them in one step, leaving the one outside it.
 */
import { equal, match } from "node:assert/strict";
import { bytesToString } from "../client/client.ts";
import { DELETE_RANGE_LIMIT } from "../server/state_machine.ts";
import { runKvCli as kv, waitFor, withCluster } from "./harness.ts";

Deno.test("DeleteRange: a range over 100,000 keys is refused whole; one of 100,000 goes at once", async () => {
  await withCluster({ nodes: 3 }, async (c) => {
    await c.waitForLeader(5000);
    const cl = c.client({ timeoutMs: 60_000 });
    const key = (i: number) => `lim/${String(i).padStart(6, "0")}`;
    const n = DELETE_RANGE_LIMIT + 1;
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
    const leader = await c.status(c.leaderId()!);
    for (const node of c.nodes) {
      await waitFor(
        `node ${node.id} to apply`,
        30_000,
        async () => (await c.status(node.id)).appliedIndex >= leader.commitIndex,
      );
      const local = c.nodeClient(node.id, { timeoutMs: 30_000 });
      for (const i of [0, 50_000, n - 1]) {
        equal(await local.getString(key(i), { serializable: true }), "v", `node ${node.id}`);
      }
    }

    // Exactly the limit: [lim/000000, lim/100000) holds 100,000 keys, deleted in one entry.
    equal(await cl.deleteRange(key(0), key(n - 1)), DELETE_RANGE_LIMIT);
    const left = await cl.scan("lim/", { limit: 10 });
    equal(left.pairs.map((p) => bytesToString(p.key)).join(","), key(n - 1));
    // Under the limit now, the prefix goes at once.
    equal(await cl.deletePrefix("lim/"), 1);
    equal((await cl.scan("lim/")).pairs.length, 0);
  });
});
