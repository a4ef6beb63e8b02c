/**
 * The space quota (`--quota-bytes`, etcd's `--quota-backend-bytes`): past it a cluster refuses the
 * writes that add data with RESOURCE_EXHAUSTED, at every node, and keeps serving reads and
 * deletes; restarted with a larger quota it takes writes again, with nothing lost. Or, as with
 * etcd's defragmentation: delete keys, run `kv defrag`, and writes resume at once.
 */
import { equal, match, ok } from "node:assert/strict";
import { KVError } from "../client/client.ts";
import { runKvCli, type TestCluster, waitFor, withCluster } from "./harness.ts";

const value = (i: number) => `value-${i}-`.padEnd(4096, "x");

/** Whether `p` is refused for the space quota (other errors are rethrown). */
async function refusal(p: Promise<unknown>): Promise<KVError | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    if (e instanceof KVError && e.kind === "resource_exhausted") return e;
    throw e;
  }
}

/** Puts 4 KiB values `k0`, `k1`, … until the cluster refuses one; returns how many it took. */
async function fillToQuota(c: TestCluster): Promise<{ acked: number; refused: KVError }> {
  const kv = c.client({ timeoutMs: 10_000 });
  let acked = 0;
  for (;;) {
    ok(acked < 2000, "no put was refused");
    const refused = await refusal(kv.put(`k${acked}`, value(acked)));
    if (refused !== undefined) return { acked, refused };
    acked++;
  }
}

Deno.test("past its space quota a cluster refuses puts, serves reads and deletes, and resumes with a larger quota", async () => {
  await withCluster({ nodes: 3, extraArgs: ["--quota-bytes", "1MiB"] }, async (c) => {
    await c.waitForLeader(5000);
    const kv = c.client({ timeoutMs: 10_000 });

    // 4 KiB values until the cluster refuses one (1 MiB holds about 250 of them).
    const { acked, refused } = await fillToQuota(c);
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

Deno.test("past its space quota a cluster takes writes again once keys are deleted and `kv defrag` has run", async () => {
  await withCluster({ nodes: 3, extraArgs: ["--quota-bytes", "1MiB"] }, async (c) => {
    await c.waitForLeader(5000);
    const kv = c.client({ timeoutMs: 10_000 });
    const { acked } = await fillToQuota(c);
    // Deleting keys alone frees nothing yet: their space is reclaimed only by compaction.
    for (let i = 20; i < acked; i++) equal(await kv.delete(`k${i}`), true, `delete k${i}`);
    ok(await refusal(kv.put("more", "x")) !== undefined, "still refused right after the deletes");

    const { code, out, err } = await runKvCli(c.addresses, "defrag");
    equal(code, 0, err);
    // One line a member, its data before and after.
    const lines = out.trim().split("\n");
    equal(lines.length, 3, out);
    for (const n of c.nodes) {
      const line = lines.find((l) => l.startsWith(`member ${n.id} (${n.address}): `));
      ok(line !== undefined, `no line for node ${n.id} in:\n${out}`);
      const m = /: ([\d.]+)(KiB|MiB) → ([\d.]+)(B|KiB|MiB)$/.exec(line)!;
      ok(m !== null, line);
      const bytes = (v: string, u: string) =>
        Number(v) * (u === "MiB" ? 1024 ** 2 : u === "KiB" ? 1024 : 1);
      // Over the 1 MiB quota, printed to a tenth of a MiB.
      ok(bytes(m[1]!, m[2]!) >= 1024 ** 2, `over the quota before: ${line}`);
      ok(bytes(m[3]!, m[4]!) < 256 * 1024, `20 keys of 4 KiB after: ${line}`);
    }
    // Writes resume at every node at once (each checked its quota when its compaction ended),
    // and nothing acknowledged is lost.
    for (const n of c.nodes) {
      const own = c.nodeClient(n.id, { timeoutMs: 5000 });
      equal(await refusal(own.put(`after-${n.id}`, value(n.id))), undefined, `put at ${n.id}`);
      const st = await c.status(n.id);
      ok(st.dbBytes < st.quotaBytes, `node ${n.id}: ${st.dbBytes} bytes`);
    }
    for (let i = 0; i < 20; i++) equal(await kv.getString(`k${i}`), value(i), `k${i}`);
    equal(await kv.get(`k${acked - 1}`), undefined);
    ok(
      c.nodes.every((n) => /defragmented: [\d.]+ MiB → [\d.]+ KiB in \d+ ms/.test(n.log())),
      "logged",
    );
    for (const n of c.nodes) {
      const text = await (await fetch(`http://${n.address}/metrics`)).text();
      match(text, /^concordkv_engine_defragmentations_total 1$/m, `node ${n.id}`);
    }
  });
});
