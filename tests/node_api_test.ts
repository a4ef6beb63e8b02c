/**
 * The client API of a real 3-node cluster: exactly-once writes, compare-and-swap, range scans,
 * Status, a client built only from the seed's proto, 1,000 calls then close, and bad inputs.
 * One cluster serves every step.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { TestCluster, waitFor } from "./harness.ts";
import { backupRecords, bytesToString, KVError } from "../client/client.ts";

const SEED_PROTO = new URL("./seed_proto/kvstore.proto", import.meta.url).pathname;

type Cb<T> = (err: grpc.ServiceError | null, res?: T) => void;
type Rpc<Q, R> = (req: Q, opts: grpc.CallOptions, cb: Cb<R>) => grpc.ClientUnaryCall;

/** What a client generated from the seed's proto alone can do. */
interface SeedStub extends grpc.Client {
  Ping: Rpc<{ message: string }, { reply: string }>;
  Put: Rpc<{ key: Uint8Array; value: Uint8Array }, { success: boolean }>;
  Get: Rpc<{ key: Uint8Array }, { value: Uint8Array; found: boolean }>;
  Delete: Rpc<{ key: Uint8Array }, { success: boolean }>;
  Scan: Rpc<{ prefix: Uint8Array }, { pairs: { key: Uint8Array; value: Uint8Array }[] }>;
}

function seedStub(address: string, options: grpc.ChannelOptions = {}): SeedStub {
  const def = protoLoader.loadSync(SEED_PROTO, {}); // a seed user's defaults
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    kvstore: { KVStore: grpc.ServiceClientConstructor };
  };
  return new pkg.kvstore.KVStore(
    address,
    grpc.credentials.createInsecure(),
    options,
  ) as unknown as SeedStub;
}

function call<Q, R>(stub: SeedStub, rpc: Rpc<Q, R>, req: Q, timeoutMs = 10_000): Promise<R> {
  return new Promise((resolve, reject) =>
    rpc.call(stub, req, { deadline: Date.now() + timeoutMs }, (e, r) => e ? reject(e) : resolve(r!))
  );
}

/** Calls until the cluster has a leader that answers (UNAVAILABLE retried until the deadline). */
async function callRetrying<Q, R>(stub: SeedStub, rpc: Rpc<Q, R>, req: Q): Promise<R> {
  return await waitFor("an answer that is not UNAVAILABLE", 10_000, async () => {
    try {
      return await call(stub, rpc, req);
    } catch (e) {
      if ((e as grpc.ServiceError).code === grpc.status.UNAVAILABLE) return undefined;
      throw e;
    }
  });
}

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("client API of a 3-node cluster", async (t) => {
  const c = await TestCluster.start({ nodes: 3 });
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    if (!await t.step(name, fn)) failed = true;
  };
  try {
    await c.waitForLeader(5000);
    const kv = c.client({ timeoutMs: 10_000 });

    await step("a retried put with the same client id and seq applies once", async () => {
      const clientId = 123_456_789_012;
      await kv.put("dedup", "first", { clientId, seq: 1 });
      await kv.put("dedup", "second", { clientId, seq: 2 });
      // A late retry of seq 1 (as after a lost reply) must not revert the key.
      await kv.put("dedup", "first", { clientId, seq: 1 });
      equal(await kv.getString("dedup"), "second");
      // Through a follower too.
      const leader = await c.waitForLeader(5000);
      const follower = c.nodes.find((n) => n.id !== leader)!.id;
      await c.nodeClient(follower).put("dedup", "first", { clientId, seq: 1 });
      await c.nodeClient(follower).put("dedup", "second", { clientId, seq: 2 });
      equal(await kv.getString("dedup"), "second");
      // A delete retried after a newer put does not delete it.
      await kv.delete("dedup", { clientId, seq: 3 });
      await kv.put("dedup", "third", { clientId, seq: 4 });
      await kv.delete("dedup", { clientId, seq: 3 });
      equal(await kv.getString("dedup"), "third");
    });

    await step("client ids equal in their top 53 bits are two clients", async () => {
      // Any uint64 is a client id (e.g. a snowflake id); these two are one number as doubles.
      const a = 2n ** 62n + 1n, b = 2n ** 62n + 2n;
      const ia = await kv.put("dedup-wide-a", "a1", { clientId: a, seq: 1 });
      const ib = await kv.put("dedup-wide-b", "b1", { clientId: b, seq: 1 });
      ok(ib > ia, `b's put was applied at its own index (${ia}, ${ib})`);
      equal(await kv.getString("dedup-wide-b"), "b1");
      // Each is still deduplicated on its own: late retries change nothing.
      await kv.put("dedup-wide-b", "b2");
      await kv.put("dedup-wide-b", "b1", { clientId: b, seq: 1 });
      const r = await kv.cas("dedup-wide-a", "a1", "a2", { clientId: a, seq: 2 });
      ok(r.success);
      ok(!(await kv.cas("dedup-wide-a", "a1", "a3", { clientId: a + 1n, seq: 2 })).success);
      ok(
        (await kv.cas("dedup-wide-a", "a1", "a2", { clientId: a, seq: 2 })).success,
        "retry answered",
      );
      equal(await kv.getString("dedup-wide-a"), "a2");
      equal(await kv.getString("dedup-wide-b"), "b2");
    });

    await step("GET /metrics and /health over plain HTTP on the client port", async () => {
      const leader = await c.waitForLeader(5000);
      await kv.put("metrics-probe", "1");
      const res = await fetch(`http://${c.node(leader).address}/metrics`);
      equal(res.status, 200);
      match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      match(text, /^# HELP concordkv_raft_term /m);
      match(text, /^# TYPE concordkv_raft_applied_index gauge$/m);
      match(text, /^concordkv_raft_is_leader 1$/m);
      match(text, /^concordkv_engine_level_bytes\{level="0"\} \d+$/m);
      // The put above, counted by method and status.
      match(text, /^concordkv_grpc_requests_total\{method="Put",code="OK"\} [1-9]\d*$/m);
      const applied = Number(/^concordkv_raft_applied_index (\d+)$/m.exec(text)?.[1]);
      ok(applied >= (await c.status(leader)).appliedIndex - 1 && applied > 3, `applied ${applied}`);
      for (const n of c.nodes) {
        const h = await fetch(`http://${n.address}/health`);
        equal(h.status, 200, `node ${n.id}`);
        deepEqual(await h.json(), { health: "true" });
      }
      const missing = await fetch(`http://${c.node(leader).address}/nope`);
      equal(missing.status, 404);
      await missing.body?.cancel();
      // gRPC on the same port goes on.
      equal(await kv.getString("metrics-probe"), "1");
    });

    await step(
      "a backup taken from a follower holds every write acknowledged before it",
      async () => {
        // The follower is paused while the writes commit on the other two, and is asked for
        // the backup before it resumes: it has appended none of them, so only its read barrier
        // (the leader's commit index, then waiting to apply up to it) puts them in the backup.
        const leader = await c.waitForLeader(5000);
        const follower = c.nodes.find((n) => n.id !== leader)!;
        const client = c.nodeClient(follower.id, { timeoutMs: 10_000 });
        await client.status(); // connected before the pause
        follower.kill("SIGSTOP");
        let resumed = false;
        try {
          for (let i = 0; i < 50; i++) await kv.put(`bf/${i}`, `v${i}`);
          const got = new Map<string, string>();
          let index = 0;
          const backup = (async () => {
            for await (const chunk of client.backup()) {
              index = chunk.index;
              for (const p of backupRecords(chunk.data)) {
                got.set(bytesToString(p.key), bytesToString(p.value));
              }
            }
          })();
          await new Promise((r) => setTimeout(r, 200)); // the request waits in the socket
          follower.kill("SIGCONT");
          resumed = true;
          await backup;
          for (let i = 0; i < 50; i++) equal(got.get(`bf/${i}`), `v${i}`, `bf/${i}`);
          ok(index >= 50, `backup of log index ${index}`);
        } finally {
          if (!resumed) follower.kill("SIGCONT");
        }
      },
    );

    await step("compare-and-swap swaps only on a match", async () => {
      let r = await kv.cas("cas", null, "a");
      ok(r.success, "absent → a");
      r = await kv.cas("cas", null, "b");
      ok(!r.success, "not absent any more");
      equal(bytesToString(r.current!), "a");
      r = await kv.cas("cas", "x", "b");
      ok(!r.success);
      r = await kv.cas("cas", "a", "b");
      ok(r.success);
      equal(await kv.getString("cas"), "b");
      r = await kv.cas("cas", "b", null);
      ok(r.success, "delete on match");
      equal(await kv.get("cas"), undefined);
    });

    await step("scan by prefix and range, with a limit", async () => {
      for (const k of ["r/a", "r/b", "r/c", "r/d", "s/a"]) await kv.put(k, k.toUpperCase());
      const all = await kv.scan("r/");
      deepEqual(all.pairs.map((p) => bytesToString(p.key)), ["r/a", "r/b", "r/c", "r/d"]);
      deepEqual(all.pairs.map((p) => bytesToString(p.value)), ["R/A", "R/B", "R/C", "R/D"]);
      equal(all.more, false);
      const two = await kv.scan("r/", { limit: 2 });
      deepEqual(two.pairs.map((p) => bytesToString(p.key)), ["r/a", "r/b"]);
      equal(two.more, true);
      const range = await kv.range("r/b", "r/d");
      deepEqual(range.pairs.map((p) => bytesToString(p.key)), ["r/b", "r/c"]);
      const open = await kv.range("r/c", "");
      deepEqual(open.pairs.map((p) => bytesToString(p.key)), ["r/c", "r/d", "s/a"]);
    });

    await step("Status reports the node, its role, term, indexes and members", async () => {
      const leader = await c.waitForLeader(5000);
      const s = await c.status(leader);
      equal(s.nodeId, leader);
      equal(s.role, "leader");
      equal(s.leaderId, leader);
      ok(s.term >= 1);
      ok(s.commitIndex >= 1, `commit index ${s.commitIndex}`);
      ok(s.appliedIndex >= 1 && s.appliedIndex <= s.commitIndex, `applied ${s.appliedIndex}`);
      ok(s.lastIndex >= s.commitIndex);
      deepEqual(s.members.map((m) => m.id).sort(), [1, 2, 3]);
      for (const m of s.members) equal(m.address, c.node(m.id).address);
    });

    await step("a client built only from the seed's proto works", async () => {
      const leader = await c.waitForLeader(5000);
      const follower = c.nodes.find((n) => n.id !== leader)!;
      const stub = seedStub(follower.address);
      try {
        const pong = await callRetrying(stub, stub.Ping, { message: "hi" });
        equal(typeof pong.reply, "string");
        ok((await callRetrying(stub, stub.Put, { key: enc("seed/a"), value: enc("1") })).success);
        ok((await callRetrying(stub, stub.Put, { key: enc("seed/b"), value: enc("2") })).success);
        const g = await callRetrying(stub, stub.Get, { key: enc("seed/a") });
        ok(g.found);
        equal(bytesToString(g.value), "1");
        const missing = await callRetrying(stub, stub.Get, { key: enc("seed/none") });
        equal(missing.found, false);
        const s = await callRetrying(stub, stub.Scan, { prefix: enc("seed/") });
        deepEqual(s.pairs.map((p) => bytesToString(p.key)), ["seed/a", "seed/b"]);
        ok((await callRetrying(stub, stub.Delete, { key: enc("seed/a") })).success);
        equal((await callRetrying(stub, stub.Get, { key: enc("seed/a") })).found, false);
      } finally {
        stub.close();
      }
    });

    await step(
      "a client that makes 1,000 calls (16 in flight) and closes leaves the node up",
      async () => {
        const leader = await c.waitForLeader(5000);
        const stub = seedStub(c.node(leader).address);
        let next = 0;
        const worker = async () => {
          while (next < 1000) {
            const i = next++;
            if (i % 2 === 0) await call(stub, stub.Put, { key: enc(`many/${i}`), value: enc("x") });
            else await call(stub, stub.Get, { key: enc(`many/${i - 1}`) });
          }
        };
        try {
          await Promise.all(Array.from({ length: 16 }, worker));
        } finally {
          stub.close();
        }
        // The node survives the close (DESIGN.md §1: the Deno node:http2 regression).
        for (const n of c.nodes) {
          ok(n.running, `node ${n.id} still running`);
          const s = await c.status(n.id, 2000);
          equal(s.nodeId, n.id);
        }
        equal(await kv.getString("many/998"), "x");
      },
    );

    await step("bad inputs get INVALID_ARGUMENT / RESOURCE_EXHAUSTED", async () => {
      const expectKind = async (what: string, p: Promise<unknown>, kinds: string[]) => {
        try {
          await p;
          ok(false, `${what}: accepted`);
        } catch (e) {
          ok(e instanceof KVError, `${what}: ${e}`);
          ok(kinds.includes(e.kind), `${what}: got ${e.kind} (${e.message})`);
          ok(e.message.length > 0);
        }
      };
      const leader = await c.waitForLeader(5000);
      const follower = c.nodes.find((n) => n.id !== leader)!.id;
      for (const [who, client] of [["leader", kv], ["follower", c.nodeClient(follower)]] as const) {
        await expectKind(`${who}: empty key put`, client.put("", "v"), ["invalid_argument"]);
        await expectKind(`${who}: empty key get`, client.get(""), ["invalid_argument"]);
        await expectKind(`${who}: empty key delete`, client.delete(""), ["invalid_argument"]);
        await expectKind(
          `${who}: key > 64 KiB`,
          client.put(new Uint8Array(64 * 1024 + 1).fill(107), "v"),
          ["invalid_argument"],
        );
        await expectKind(
          `${who}: value > 4 MiB`,
          client.put("big", new Uint8Array(4 * 1024 * 1024 + 1)),
          ["invalid_argument", "resource_exhausted"],
        );
        await expectKind(
          `${who}: message over the gRPC limit`,
          client.put("huge", new Uint8Array(17 * 1024 * 1024)),
          ["resource_exhausted", "invalid_argument"],
        );
      }
      // The limits are inclusive: a 64 KiB key and a 4 MiB value are fine.
      await kv.put(new Uint8Array(64 * 1024).fill(107), "v");
      await kv.put("big-ok", new Uint8Array(4 * 1024 * 1024).fill(1));
      equal((await kv.get("big-ok"))?.length, 4 * 1024 * 1024);
      // Malformed bytes on the wire, and a seq past 2^53 (the node could not tell it from its
      // neighbours, so it would not deduplicate it): an error, and the node keeps running.
      const raw = new grpc.Client(c.node(leader).address, grpc.credentials.createInsecure());
      const rawPut = (bytes: number[]) =>
        new Promise<number>((resolve) =>
          raw.makeUnaryRequest(
            "/kvstore.KVStore/Put",
            (b: Uint8Array) => Buffer.from(b),
            (b: Buffer) => b,
            new Uint8Array(bytes),
            { deadline: Date.now() + 5000 },
            (e) => resolve(e ? e.code : grpc.status.OK),
          )
        );
      try {
        const code = await rawPut([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
        equal(code, grpc.status.INVALID_ARGUMENT, `malformed request: code ${code}`);
        // key "s", value "v", client_id 5, seq 2^53 + 1
        const seq = [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        const big = await rawPut([0x0a, 1, 0x73, 0x12, 1, 0x76, 0x18, 5, 0x20, ...seq]);
        equal(big, grpc.status.INVALID_ARGUMENT, `seq past 2^53: code ${big}`);
        equal(await kv.get("s"), undefined);
      } finally {
        raw.close();
      }
      for (const n of c.nodes) ok(n.running, `node ${n.id} still running`);
      await kv.put("still", "up");
      equal(await kv.getString("still"), "up");
    });
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (failed) console.error(c.dumpLogs(80));
    await c.stop();
  }
});
