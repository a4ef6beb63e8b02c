/**
 * KVClient against in-process fake KVStore servers: leader hints, retries that keep their
 * exactly-once id, deadlines and error kinds. (The real node is exercised by tests/node_*_test.ts.)
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { kvstorePackage } from "../server/proto.ts";
import { bytesToString, KVClient, KVError } from "./client.ts";

type Handler = (
  call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
  cb: grpc.sendUnaryData<unknown>,
) => void;

interface Fake {
  address: string;
  calls: { method: string; req: Record<string, unknown> }[];
  stop(): Promise<void>;
}

/** Starts a fake node answering `handlers` (others: UNIMPLEMENTED). */
async function fake(handlers: Record<string, Handler>): Promise<Fake> {
  const server = new grpc.Server();
  const calls: Fake["calls"] = [];
  const impl: Record<string, Handler> = {};
  for (const method of Object.keys(kvstorePackage().KVStore.service)) {
    impl[method] = (call, cb) => {
      calls.push({ method, req: call.request });
      const h = handlers[method];
      if (h) h(call, cb);
      else cb({ code: grpc.status.UNIMPLEMENTED, details: `${method} not in this fake` });
    };
  }
  server.addService(kvstorePackage().KVStore.service, impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  return {
    address: `127.0.0.1:${port}`,
    calls,
    stop: () => new Promise<void>((r) => server.tryShutdown(() => r())),
  };
}

function unavailable(leader?: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (leader !== undefined) metadata.set("concordkv-leader", leader);
  return Object.assign(new Error("not the leader"), {
    code: grpc.status.UNAVAILABLE,
    details: "not the leader",
    metadata,
  });
}

const opts = { sanitizeOps: false, sanitizeResources: false };

/** A fake leader with an in-memory map. */
function store(): Record<string, Handler> {
  const data = new Map<string, Uint8Array>();
  let index = 0;
  return {
    Put: (c, cb) => {
      data.set(bytesToString(c.request.key as Uint8Array), c.request.value as Uint8Array);
      cb(null, { success: true, index: ++index });
    },
    Get: (c, cb) => {
      const v = data.get(bytesToString(c.request.key as Uint8Array));
      cb(null, { value: v ?? new Uint8Array(0), found: v !== undefined });
    },
    Delete: (c, cb) => {
      const existed = data.delete(bytesToString(c.request.key as Uint8Array));
      cb(null, { success: true, existed, index: ++index });
    },
    Scan: (c, cb) => {
      const prefix = bytesToString(c.request.prefix as Uint8Array);
      const pairs = [...data.entries()].filter(([k]) => k.startsWith(prefix)).sort()
        .map(([k, v]) => ({ key: new TextEncoder().encode(k), value: v }));
      cb(null, { pairs, more: false });
    },
  };
}

Deno.test("client puts, gets, deletes and scans with string or byte keys", opts, async () => {
  const node = await fake(store());
  const kv = new KVClient({ endpoints: [node.address] });
  try {
    equal(await kv.put("a/1", "x"), 1);
    await kv.put(new Uint8Array([97, 47, 50]), new Uint8Array([0, 255]));
    await kv.put("b", "y");
    equal(await kv.getString("a/1"), "x");
    deepEqual(await kv.get("a/2"), new Uint8Array([0, 255]));
    equal(await kv.get("zzz"), undefined);
    const r = await kv.scan("a/");
    deepEqual(r.pairs.map((p) => bytesToString(p.key)), ["a/1", "a/2"]);
    equal(await kv.delete("b"), true);
    equal(await kv.delete("b"), false);
    // Sequential writes share one session: one client id, increasing seq.
    const writes = node.calls.filter((c) => c.method === "Put" || c.method === "Delete");
    equal(new Set(writes.map((w) => w.req.client_id)).size, 1);
    deepEqual(writes.map((w) => w.req.seq), [1, 2, 3, 4, 5]);
    ok((writes[0]!.req.client_id as number) > 0);
  } finally {
    kv.close();
    await node.stop();
  }
});

Deno.test("client follows the concordkv-leader hint of an UNAVAILABLE answer", opts, async () => {
  const leader = await fake(store());
  const follower = await fake({
    Put: (_c, cb) => cb(unavailable(leader.address)),
    Status: (_c, cb) => cb(unavailable()),
  });
  const kv = new KVClient({ endpoints: [follower.address] });
  try {
    await kv.put("k", "v");
    equal(kv.leader, leader.address);
    equal(await kv.getString("k"), "v");
    equal(follower.calls.filter((c) => c.method === "Get").length, 0);
  } finally {
    kv.close();
    await leader.stop();
    await follower.stop();
  }
});

Deno.test("client retries UNAVAILABLE with the same client id and seq", opts, async () => {
  let failures = 2;
  const inner = store();
  const node = await fake({
    ...inner,
    Put: (c, cb) => failures-- > 0 ? cb(unavailable()) : inner.Put!(c, cb),
  });
  const kv = new KVClient({ endpoints: [node.address], initialBackoffMs: 1 });
  try {
    await kv.put("k", "v");
    const puts = node.calls.filter((c) => c.method === "Put");
    equal(puts.length, 3);
    equal(new Set(puts.map((p) => `${p.req.client_id}/${p.req.seq}`)).size, 1);
  } finally {
    kv.close();
    await node.stop();
  }
});

Deno.test("concurrent writes use distinct client ids", opts, async () => {
  const node = await fake(store());
  const kv = new KVClient({ endpoints: [node.address] });
  try {
    await Promise.all(Array.from({ length: 8 }, (_, i) => kv.put(`k${i}`, "v")));
    const ids = node.calls.filter((c) => c.method === "Put").map((p) =>
      `${p.req.client_id}/${p.req.seq}`
    );
    equal(new Set(ids).size, 8);
  } finally {
    kv.close();
    await node.stop();
  }
});

Deno.test("client errors carry a kind and are not retried when final", opts, async () => {
  const node = await fake({
    Put: (_c, cb) => cb({ code: grpc.status.INVALID_ARGUMENT, details: "empty key" }),
  });
  const kv = new KVClient({ endpoints: [node.address] });
  try {
    await rejects(kv.put("", "v"), (e) => e instanceof KVError && e.kind === "invalid_argument");
    equal(node.calls.filter((c) => c.method === "Put").length, 1);
  } finally {
    kv.close();
    await node.stop();
  }
});

Deno.test("client gives up at its deadline when no node answers", opts, async () => {
  const node = await fake({ Get: () => {} }); // never answers
  const kv = new KVClient({ endpoints: [node.address], attemptTimeoutMs: 100 });
  const t0 = Date.now();
  try {
    await rejects(
      kv.get("k", { timeoutMs: 400 }),
      (e) => e instanceof KVError && e.kind === "deadline_exceeded",
    );
    const took = Date.now() - t0;
    ok(took >= 350 && took < 2000, `took ${took} ms`);
  } finally {
    kv.close();
    await node.stop();
  }
  const dead = new KVClient({ endpoints: ["127.0.0.1:1"], initialBackoffMs: 5 });
  try {
    await rejects(
      dead.put("k", "v", { timeoutMs: 300 }),
      (e) => e instanceof KVError && e.kind === "unavailable",
    );
  } finally {
    dead.close();
  }
});

Deno.test("client rejects a bad endpoint as a usage error", () => {
  try {
    new KVClient({ endpoints: ["nope"] });
    ok(false, "expected an error");
  } catch (e) {
    ok(e instanceof KVError && e.kind === "usage");
  }
});
