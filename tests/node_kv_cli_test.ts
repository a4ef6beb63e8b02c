/**
 * `deno task kv` end to end against a real 3-node cluster: put, get, a missing get (exit 1, no
 * output), del, scan, cas, status, member list, and errors (one line on stderr, non-zero exit).
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  freePorts,
  runKvCli as kv,
  runKvCliBytes as kvBytes,
  TestCluster,
  waitFor,
} from "./harness.ts";
import { bytesToString, KVError } from "../client/client.ts";
import { deleteKeysNotIn, type StatusReport } from "../client/kv_main.ts";
import { keyString } from "../storage/coding.ts";

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
      "backup copies every key; restore refuses a non-empty cluster, --replace makes it hold " +
        "exactly the backup, --merge keeps other keys; a damaged backup is refused",
      async () => {
        const kv = c.client({ timeoutMs: 10_000 });
        // About 1.2 MB in all: more than one 1 MiB chunk.
        const value = (i: number) => `bk-${i}-`.padEnd(i % 2 === 0 ? 9000 : 40, "v");
        for (let i = 0; i < 300; i++) await kv.put(`bk/${String(i).padStart(3, "0")}`, value(i));
        for (let i = 0; i < 300; i += 7) await kv.delete(`bk/${String(i).padStart(3, "0")}`);
        // A key with bytes that are not UTF-8, to be kept as it is by --replace.
        await kv.put(new Uint8Array([0x62, 0x6b, 0xff, 0x00, 0x80]), "binary");
        // Every pair in the cluster, sorted, keys as their byte values.
        const everything = async () =>
          (await kv.range("", "", { limit: 1000 })).pairs.map((p) =>
            `${Array.from(p.key).join(".")}=${bytesToString(p.value)}`
          ).sort();
        const want = await everything();
        equal(want.length, 300 - 43 + 1 + 2, want.join("\n").slice(0, 500)); // + cli/b, cli/c

        const b = await kvBytes(eps, undefined, "backup");
        equal(b.code, 0, b.err);
        ok(b.out.length > 1024 * 1024, `${b.out.length} bytes: one chunk only`);
        match(b.err, /backup of \d+ pairs at log index \d+/);

        // After the backup: a key deleted, one overwritten, two new ones.
        await kv.delete("bk/001");
        await kv.put("bk/002", "changed");
        await kv.put("bk/new", "after the backup");
        await kv.put("zz-new", "after the backup");
        const changed = await everything();

        // Into a cluster that holds keys, a plain restore is refused and writes nothing.
        let r = await kvBytes(eps, b.out, "restore");
        equal(r.code, 3, r.err);
        match(
          r.err,
          /^kv: restore refused: the cluster is not empty \(it holds "bk\/002".*--replace/,
        );
        equal(r.err.trimEnd().split("\n").length, 1, r.err);
        deepEqual(await everything(), changed);

        // A damaged byte, a cut-off end, or something else entirely: refused, nothing written
        // and, with --replace, nothing deleted.
        const damaged = b.out.slice();
        damaged[100] = damaged[100]! ^ 0xff;
        for (
          const [bad, why] of [
            [damaged, /chunk 0 at byte 8 fails its checksum; 0 pairs before it were written/],
            [b.out.slice(0, 60), /truncated/],
            [b.out.slice(0, b.out.length - 24), /truncated .* no end record.*no key was deleted/],
            [new TextEncoder().encode("hello"), /not a ConcordKV backup/],
          ] as const
        ) {
          r = await kvBytes(eps, bad, "restore", "--replace");
          equal(r.code, 3, r.err);
          match(r.err, why);
        }
        ok((await kv.get("bk/new")) !== undefined, "a damaged backup made restore delete a key");
        ok((await kv.get("zz-new")) !== undefined, "a damaged backup made restore delete a key");

        // --replace: the cluster holds exactly what the backup holds.
        r = await kvBytes(eps, b.out, "restore", "--replace");
        equal(r.code, 0, r.err);
        match(
          new TextDecoder().decode(r.out),
          /^restored 260 pairs \(backup of log index \d+\); deleted 2 keys not in it\n$/,
        );
        deepEqual(await everything(), want);

        // The deletion pass reads the key space page by page: keys between and after pages go.
        for (let i = 0; i < 300; i += 13) await kv.put(`bk/${String(i).padStart(3, "0")}x`, "x");
        const keep = new Set(
          (await kv.range("", "", { limit: 1000 })).pairs.map((p) => keyString(p.key))
            .filter((k) => !k.endsWith("x")),
        );
        equal(await deleteKeysNotIn(kv, keep, 4), 24);
        deepEqual(await everything(), want);

        // --merge keeps the keys the backup does not have; into an empty cluster a plain restore
        // is enough.
        await kv.put("bk/new", "after the backup");
        r = await kvBytes(eps, b.out, "restore", "--merge");
        equal(r.code, 0, r.err);
        deepEqual(await everything(), [...want, "98.107.47.110.101.119=after the backup"].sort());
        for (const p of (await kv.range("", "", { limit: 1000 })).pairs) await kv.delete(p.key);
        r = await kvBytes(eps, b.out, "restore");
        equal(r.code, 0, r.err);
        match(
          new TextDecoder().decode(r.out),
          /^restored 260 pairs \(backup of log index \d+\)\n$/,
        );
        deepEqual(await everything(), want);
        r = await kvBytes(eps, b.out, "restore", "--merge", "--replace");
        equal(r.code, 2, r.err);
      },
    );

    await step(
      "del START END, del --prefix and del --all delete ranges at once, on every node",
      async () => {
        const cl = c.client({ timeoutMs: 10_000 });
        for (let i = 0; i < 300; i++) await cl.put(`dr/${String(i).padStart(3, "0")}`, "v");
        await cl.put("dr0", "just past the prefix");
        // Scans while the prefix goes: each sees all 300 keys or none (one log entry).
        let deleting = true;
        const seen = new Set<number>();
        const scanner = (async () => {
          while (deleting) seen.add((await cl.scan("dr/", { limit: 1000 })).pairs.length);
        })();
        let r = await kv(eps, "del", "--prefix", "dr/");
        deleting = false;
        await scanner;
        equal(r.code, 0, r.err);
        equal(r.out, "300\n");
        for (const n of seen) ok(n === 300 || n === 0, `a scan saw ${n} of the 300 keys`);
        ok(seen.has(300), "the scans began after the deletion"); // the command takes ~0.3 s to start
        equal(await cl.getString("dr0"), "just past the prefix");
        // Every node applied it: a serializable read of each finds none once caught up.
        const leader = await c.status(c.leaderId()!);
        for (const node of c.nodes) {
          await waitFor(
            `node ${node.id} to apply`,
            10_000,
            async () => (await c.status(node.id)).appliedIndex >= leader.commitIndex,
          );
          const local = c.nodeClient(node.id);
          equal(
            (await local.scan("dr/", { serializable: true })).pairs.length,
            0,
            `node ${node.id}`,
          );
        }
        await cl.put("dr/a", "1");
        await cl.put("dr/b", "2");
        await cl.put("dr/c", "3");
        r = await kv(eps, "del", "dr/a", "dr/c");
        equal(r.code, 0, r.err);
        equal(r.out, "2\n");
        deepEqual(
          (await cl.scan("dr")).pairs.map((p) => bytesToString(p.key)),
          ["dr/c", "dr0"],
        );
        // Through a follower: forwarded to the leader like any write.
        await cl.put("fw/1", "x");
        await cl.put("fw/2", "y");
        const follower = c.nodes.find((n) => n.id !== c.leaderId())!;
        equal(await c.nodeClient(follower.id).deletePrefix("fw/"), 2);
        equal((await cl.scan("fw/")).pairs.length, 0);
        // A range must be asked for in one of its forms; nothing is deleted otherwise.
        r = await kv(eps, "del", "", "zz");
        equal(r.code, 2, r.err);
        const bad = await cl.deleteRange("", "").then(() => "deleted", (e) => e);
        ok(bad instanceof KVError && bad.kind === "invalid_argument", String(bad));
        const backwards = await cl.deleteRange("b", "a").then(() => "deleted", (e) => e);
        ok(
          backwards instanceof KVError && backwards.kind === "invalid_argument",
          String(backwards),
        );
        // A retry (same client id and seq) is answered as the first time and deletes nothing new.
        const once = { clientId: 4242, seq: 1 };
        equal(await cl.deleteRange("dr/", "dr0", once), 1);
        await cl.put("dr/new", "after");
        equal(await cl.deleteRange("dr/", "dr0", once), 1);
        equal(await cl.getString("dr/new"), "after");
        // --all: every key; the cluster keeps working.
        const before = (await cl.range("", "", { limit: 10_000 })).pairs.length;
        r = await kv(eps, "del", "--all");
        equal(r.code, 0, r.err);
        equal(r.out, `${before}\n`);
        equal((await cl.range("", "", { limit: 10 })).pairs.length, 0);
        await cl.put("after-all", "ok");
        equal(await cl.getString("after-all"), "ok");
      },
    );

    await step(
      "del --batch N deletes a range of any size in atomic parts of at most N keys",
      async () => {
        const cl = c.client({ timeoutMs: 10_000 });
        const keys = Array.from({ length: 250 }, (_, i) => `bt/${String(i).padStart(3, "0")}`);
        for (let i = 0; i < keys.length; i += 25) {
          await Promise.all(keys.slice(i, i + 25).map((k) => cl.put(k, "v")));
        }
        await cl.put("bt0", "just past the prefix");
        // A scanner meanwhile sees whole parts go: 64 keys at a time, then the last 58.
        let deleting = true;
        const seen = new Set<number>();
        const scanner = (async () => {
          while (deleting) seen.add((await cl.scan("bt/", { limit: 1000 })).pairs.length);
        })();
        let r = await kv(eps, "del", "--prefix", "bt/", "--batch", "64");
        deleting = false;
        await scanner;
        equal(r.code, 0, r.err);
        equal(r.out, "250\n");
        for (const n of seen) ok([250, 186, 122, 58, 0].includes(n), `a scan saw ${n} keys`);
        ok(seen.has(250), "the scans began after the deletion"); // the command takes ~0.3 s to start
        equal((await cl.scan("bt/")).pairs.length, 0);
        equal(await cl.getString("bt0"), "just past the prefix");
        // START END, one key a part.
        r = await kv(eps, "del", "bt", "bt1", "--batch", "1");
        equal(r.code, 0, r.err);
        equal(r.out, "1\n");
        // --all, three keys a part: every key, whatever its first byte.
        for (let i = 0; i < 10; i++) await cl.put(`${i}/z`, "v");
        await cl.put(new Uint8Array([0]), "zero");
        const before = (await cl.range("", "", { limit: 10_000 })).pairs.length;
        r = await kv(eps, "del", "--all", "--batch", "3");
        equal(r.code, 0, r.err);
        equal(r.out, `${before}\n`);
        equal((await cl.range("", "", { limit: 10 })).pairs.length, 0);
        // --batch is for ranges only, and N must be a positive whole number.
        for (
          const args of [
            ["del", "k", "--batch", "2"],
            ["get", "k", "--batch", "2"],
            ["del", "--prefix", "x", "--batch", "0"],
            ["del", "--prefix", "x", "--batch", "many"],
          ]
        ) {
          r = await kv(eps, ...args);
          equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
          match(r.err, /^kv: .*\n$/);
        }
      },
    );

    await step("member list names every member", async () => {
      const r = await kv(eps, "member", "list");
      equal(r.code, 0, r.err);
      for (const n of c.nodes) match(r.out, new RegExp(`^${n.id}\\s+${n.address}\\s`, "m"));
    });

    await step("status --json and member list --json: the same facts for scripts", async () => {
      let r = await kv([eps[1]!], "status", "--json");
      equal(r.code, 0, r.err);
      equal(r.out.trimEnd().split("\n").length, 1, r.out);
      const st = JSON.parse(r.out) as StatusReport;
      const leader = st.leaderId;
      deepEqual(st.members.filter((m) => m.role === "leader").map((m) => m.id), [leader]);
      equal(st.clusterId, (await c.status(1)).clusterId);
      deepEqual(st.members.map((m) => [m.id, m.address]), c.nodes.map((n) => [n.id, n.address]));
      for (const m of st.members) {
        if (m.id !== leader) equal(m.role, "follower");
        equal(m.healthy, true);
        equal(m.kind, "voter");
        equal(m.term, st.term);
        ok(m.commitIndex! > 0 && m.appliedIndex! <= m.lastIndex!, JSON.stringify(m));
        ok(m.dbBytes! > 0 && m.quotaBytes === 2 * 1024 ** 3, JSON.stringify(m));
        ok(typeof m.matchIndex === "number", JSON.stringify(m));
      }
      r = await kv(eps, "member", "list", "--json");
      equal(r.code, 0, r.err);
      const l = JSON.parse(r.out) as { leaderId: number; members: { id: number }[] };
      ok(l.members.some((m) => m.id === l.leaderId), r.out);
      deepEqual(l.members.map((m) => m.id), [1, 2, 3]);
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
