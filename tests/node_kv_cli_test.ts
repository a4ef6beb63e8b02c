/**
 * `deno task kv` end to end against a real 3-node cluster: put, get, a missing get (exit 1, no
 * output), del, scan, cas, status, member list, and errors (one line on stderr, non-zero exit).
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { freePorts, runKvCli as kv, runKvCliBytes as kvBytes, TestCluster } from "./harness.ts";
import { bytesToString } from "../client/client.ts";

Deno.test("kv command: put, get, missing get, del, scan, cas, status, errors", async (t) => {
  const c = await TestCluster.start({ nodes: 3 });
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    if (!await t.step(name, fn)) failed = true;
  };
  try {
    await c.waitForLeader(5000);
    const eps = c.addresses;

    await step("put prints OK; get prints the value", async () => {
      let r = await kv(eps, "put", "cli/a", "hello world");
      equal(r.code, 0, r.err);
      equal(r.out, "OK\n");
      r = await kv(eps, "put", "cli/b", "2");
      equal(r.code, 0, r.err);
      r = await kv([eps[2]!], "get", "cli/a");
      equal(r.code, 0, r.err);
      equal(r.out, "hello world\n");
    });

    await step("get of a missing key prints nothing and exits 1", async () => {
      const r = await kv(eps, "get", "cli/none");
      equal(r.code, 1);
      equal(r.out, "");
      equal(r.err, "");
    });

    await step("scan prints key<TAB>value lines in key order; --limit cuts", async () => {
      let r = await kv(eps, "scan", "cli/");
      equal(r.code, 0, r.err);
      equal(r.out, "cli/a\thello world\ncli/b\t2\n");
      r = await kv(eps, "scan", "cli/", "--limit", "1");
      equal(r.code, 0, r.err);
      equal(r.out, "cli/a\thello world\n");
    });

    await step("cas swaps on a match and exits 1 otherwise", async () => {
      let r = await kv(eps, "cas", "cli/b", "2", "3");
      equal(r.code, 0, r.err);
      equal(r.out, "OK\n");
      r = await kv(eps, "cas", "cli/b", "2", "4");
      equal(r.code, 1);
      match(r.err, /comparison failed: current value is "3"/);
      r = await kv(eps, "cas", "--absent", "cli/c", "new");
      equal(r.code, 0, r.err);
    });

    await step("del deletes; a deleted key is missing", async () => {
      let r = await kv(eps, "del", "cli/a");
      equal(r.code, 0, r.err);
      equal(r.out, "1\n");
      r = await kv(eps, "get", "cli/a");
      equal(r.code, 1);
      equal(r.out, "");
    });

    await step("status prints a table of the members", async () => {
      const r = await kv([eps[0]!], "status");
      equal(r.code, 0, r.err);
      const lines = r.out.trimEnd().split("\n");
      match(lines[0]!, /leader \d/);
      match(
        lines[1]!,
        /^ID\s+ADDRESS\s+ROLE\s+KIND\s+TERM\s+COMMIT\s+APPLIED\s+LAST\s+DATA\/QUOTA\s+MATCH\s+HEALTHY/,
      );
      equal(lines.length, 2 + 3, r.out);
      for (const n of c.nodes) {
        const row = lines.find((l) => l.startsWith(`${n.id} `));
        ok(row, `row of node ${n.id} in\n${r.out}`);
        ok(row.includes(n.address), row);
        match(row, /\b(leader|follower)\b/);
        match(row, /\byes$/);
      }
      const rows = lines.slice(2);
      equal(rows.filter((l) => l.split(/\s+/)[2] === "leader").length, 1, r.out);
      // The leader's view fills in the match index of every member; each node its data size
      // against its quota (2 GiB by default).
      for (const row of rows) {
        match(row.split(/\s+/)[9] ?? "", /^\d+$/, r.out);
        match(row.split(/\s+/)[8] ?? "", /^\d+(\.\d)?([KMG]i)?B\/2\.0GiB$/, r.out);
      }
    });

    await step(
      "backup copies every key; restore puts them back; a damaged backup is refused",
      async () => {
        const kv = c.client({ timeoutMs: 10_000 });
        // About 1.2 MB in all: more than one 1 MiB chunk.
        const value = (i: number) => `bk-${i}-`.padEnd(i % 2 === 0 ? 9000 : 40, "v");
        for (let i = 0; i < 300; i++) await kv.put(`bk/${String(i).padStart(3, "0")}`, value(i));
        for (let i = 0; i < 300; i += 7) await kv.delete(`bk/${String(i).padStart(3, "0")}`);
        const want = (await kv.scan("bk/", { limit: 1000 })).pairs.map((p) =>
          `${bytesToString(p.key)}=${bytesToString(p.value)}`
        );
        equal(want.length, 300 - 43);

        const b = await kvBytes(eps, undefined, "backup");
        equal(b.code, 0, b.err);
        ok(b.out.length > 1024 * 1024, `${b.out.length} bytes: one chunk only`);
        match(b.err, /backup of \d+ pairs at log index \d+/);
        const wipe = async () => {
          for (const p of (await kv.scan("bk/", { limit: 1000 })).pairs) await kv.delete(p.key);
          equal((await kv.scan("bk/")).pairs.length, 0);
        };
        await wipe();

        // A damaged byte, a cut-off end, or something else entirely: refused, nothing written.
        const damaged = b.out.slice();
        damaged[100] = damaged[100]! ^ 0xff;
        for (
          const [bad, why] of [
            [damaged, /chunk 0 at byte 8 fails its checksum; 0 pairs before it were written/],
            [b.out.slice(0, 60), /truncated/],
            [new TextEncoder().encode("hello"), /not a ConcordKV backup/],
          ] as const
        ) {
          const r = await kvBytes(eps, bad, "restore");
          equal(r.code, 3, r.err);
          match(r.err, why);
        }
        equal((await kv.scan("bk/")).pairs.length, 0);

        const r = await kvBytes(eps, b.out, "restore");
        equal(r.code, 0, r.err);
        match(
          new TextDecoder().decode(r.out),
          /^restored \d+ pairs \(backup of log index \d+\)\n$/,
        );
        const got = (await kv.scan("bk/", { limit: 1000 })).pairs.map((p) =>
          `${bytesToString(p.key)}=${bytesToString(p.value)}`
        );
        deepEqual(got, want);
      },
    );

    await step("member list names every member", async () => {
      const r = await kv(eps, "member", "list");
      equal(r.code, 0, r.err);
      for (const n of c.nodes) match(r.out, new RegExp(`^${n.id}\\s+${n.address}\\s`, "m"));
    });

    await step("errors: one line on stderr and a non-zero exit", async () => {
      let r = await kv(eps, "put", "only-key");
      equal(r.code, 2);
      equal(r.err.trimEnd().split("\n").length, 1, r.err);
      r = await kv(eps, "put", "", "v");
      equal(r.code, 3);
      match(r.err, /^kv: invalid_argument: /);
      equal(r.err.trimEnd().split("\n").length, 1, r.err);
      r = await kv(eps, "frobnicate");
      equal(r.code, 2);
      match(r.err, /unknown command/);
      const [dead] = await freePorts(1);
      r = await kv([`127.0.0.1:${dead}`], "--timeout-ms", "300", "get", "k");
      equal(r.code, 3);
      match(r.err, /^kv: unavailable: /);
      equal(r.err.trimEnd().split("\n").length, 1, r.err);
      ok(!r.err.includes("backtrace") && !r.err.includes("    at "), r.err);
    });
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (failed) console.error(c.dumpLogs(60));
    await c.stop();
  }
});
