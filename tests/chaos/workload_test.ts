import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { kvstorePackage } from "../../server/proto.ts";
import { compareBytes } from "../../storage/coding.ts";
import { checkHistory } from "../linearizability/checker.ts";
import type { History } from "../linearizability/history.ts";
import { classifyWriteError, RawClient } from "./raw_client.ts";
import { Rng } from "./rng.ts";
import { finalReads, LeaderGuess, runWorkload } from "./workload.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/**
 * An in-process single-node KVStore. `staleMs > 0` makes Get answer from a copy of the map that
 * is refreshed only every `staleMs` (a stale replica); otherwise it is linearizable.
 */
async function fakeServer(staleMs = 0): Promise<{ address: string; stop: () => Promise<void> }> {
  const data = new Map<string, Uint8Array>();
  let snapshot = new Map(data);
  const timer = staleMs > 0 ? setInterval(() => snapshot = new Map(data), staleMs) : undefined;
  const k = (b: Uint8Array) => dec.decode(b);
  const server = new grpc.Server();
  // deno-lint-ignore no-explicit-any
  type Cb = (err: any, res?: any) => void;
  // deno-lint-ignore no-explicit-any
  type Call = { request: any };
  server.addService(kvstorePackage().KVStore.service, {
    Put: (call: Call, cb: Cb) => {
      data.set(k(call.request.key), call.request.value);
      cb(null, { success: true, index: 0 });
    },
    Get: (call: Call, cb: Cb) => {
      const v = (staleMs > 0 ? snapshot : data).get(k(call.request.key));
      cb(null, v === undefined ? { found: false } : { found: true, value: v });
    },
    Delete: (call: Call, cb: Cb) => {
      const existed = data.delete(k(call.request.key));
      cb(null, { success: true, existed });
    },
    DeleteRange: (call: Call, cb: Cb) => {
      // The workload's ranges are [key, key + 0x00): the key itself.
      const { start, end } = call.request;
      let deleted = 0;
      for (const key of [...data.keys()]) {
        const b = enc.encode(key);
        if (compareBytes(b, start) >= 0 && compareBytes(b, end) < 0 && data.delete(key)) deleted++;
      }
      cb(null, { deleted, index: 0 });
    },
    CompareAndSwap: (call: Call, cb: Cb) => {
      const r = call.request;
      const cur = data.get(k(r.key));
      const match = r.expect_absent
        ? cur === undefined
        : cur !== undefined && k(cur) === k(r.expected);
      if (match) data.set(k(r.key), r.value);
      cb(null, {
        success: match,
        found: cur !== undefined,
        current: match ? new Uint8Array(0) : cur ?? new Uint8Array(0),
      });
    },
    Status: (_call: Call, cb: Cb) =>
      cb(null, { node_id: 1, role: "leader", term: 1, leader_id: 1 }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  return {
    address: `127.0.0.1:${port}`,
    stop: async () => {
      if (timer !== undefined) clearInterval(timer);
      await new Promise<void>((r) => server.tryShutdown(() => r()));
    },
  };
}

async function record(staleMs: number): Promise<History> {
  const srv = await fakeServer(staleMs);
  const client = new RawClient(new Map([[1, srv.address]]));
  const history: History = { version: 1, meta: {}, ops: [], events: [] };
  const t0 = performance.now();
  const leader = new LeaderGuess(() => 1);
  leader.id = 1;
  try {
    const stop = new AbortController();
    const done = runWorkload({
      client,
      nodeIds: [1],
      history,
      t0,
      rng: new Rng(7),
      leader,
      clients: 5,
      keys: 2,
      signal: stop.signal,
    });
    await new Promise((r) => setTimeout(r, 1500));
    stop.abort();
    await done;
    const unread = await finalReads({ client, history, t0, leader, nodeIds: [1] }, 5000);
    assert.deepEqual(unread, []);
  } finally {
    client.close();
    await srv.stop();
  }
  return history;
}

Deno.test("workload records a linearizable history against a linearizable store", async () => {
  const h = await record(0);
  assert.ok(h.ops.length > 200, `only ${h.ops.length} ops`);
  assert.ok(
    h.ops.every((o) => o.outcome === "ok"),
    JSON.stringify(h.ops.find((o) => o.outcome !== "ok")),
  );
  for (const f of ["put", "get", "delete", "cas"]) assert.ok(h.ops.some((o) => o.f === f), f);
  assert.ok(h.ops.some((o) => o.f === "cas" && o.success), "no successful cas");
  assert.ok(h.ops.some((o) => o.f === "get" && typeof o.read === "string"), "no read of a value");
  assert.equal(checkHistory(h).result, "yes");
});

Deno.test("workload against a stale store yields a non-linearizable history", async () => {
  const h = await record(100);
  assert.equal(checkHistory(h).result, "no");
});

Deno.test("write errors are failures only when the write certainly was not applied", () => {
  const s = grpc.status;
  assert.equal(
    classifyWriteError(s.UNAVAILABLE, "No connection established. Last error: x"),
    "fail",
  );
  assert.equal(classifyWriteError(s.INVALID_ARGUMENT, "key too large"), "fail");
  assert.equal(classifyWriteError(s.RESOURCE_EXHAUSTED, "command over 1 bytes"), "fail");
  // A node's UNAVAILABLE may come after it queued or forwarded the write.
  assert.equal(
    classifyWriteError(s.UNAVAILABLE, "no leader: timed out waiting for the write to commit"),
    "unknown",
  );
  assert.equal(classifyWriteError(s.UNAVAILABLE, "Connection dropped"), "unknown");
  assert.equal(classifyWriteError(s.DEADLINE_EXCEEDED, "Deadline exceeded"), "unknown");
  assert.equal(classifyWriteError(s.CANCELLED, "Cancelled"), "unknown");
  assert.equal(classifyWriteError(s.INTERNAL, "boom"), "unknown");
});
