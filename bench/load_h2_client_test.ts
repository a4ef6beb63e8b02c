import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Buffer } from "node:buffer";
import { withCluster } from "../tests/harness.ts";
import {
  ConcordKvAdapter,
  ConcordKvH2Adapter,
  createAdapter,
  ETCD_PROTO,
  EtcdH2Adapter,
  KVSTORE_PROTO,
  loadProto,
} from "./load_adapters.ts";
import {
  encodeConcordGet,
  encodeEtcdRange,
  encodePut,
  GRPC_DEADLINE_EXCEEDED,
  GRPC_UNAVAILABLE,
  GrpcCallError,
  H2Channel,
  scanFields,
} from "./load_h2_client.ts";

const enc = new TextEncoder();
// The generated (protobufjs) codecs of both services: what the servers decode with, in effect.
// deno-lint-ignore no-explicit-any
const kv: any = loadProto(KVSTORE_PROTO).kvstore.KVStore.service;
// deno-lint-ignore no-explicit-any
const etcdKv: any = loadProto(ETCD_PROTO).etcdserverpb.KV.service;

function bytes(x: unknown): number[] {
  return [...(x as Uint8Array)];
}

Deno.test("h2 client: request messages decode as the protos say", () => {
  const key = enc.encode("k/00000042");
  const value = new Uint8Array(300).map((_, i) => i & 0xff); // a two-byte length
  const put = kv.Put.requestDeserialize(Buffer.from(encodePut(key, value)));
  deepEqual([bytes(put.key), bytes(put.value)], [bytes(key), bytes(value)]);
  const get = kv.Get.requestDeserialize(Buffer.from(encodeConcordGet(key, true)));
  deepEqual([bytes(get.key), get.serializable], [bytes(key), true]);
  equal(
    kv.Get.requestDeserialize(Buffer.from(encodeConcordGet(key, false))).serializable,
    undefined,
  );
  const ePut = etcdKv.Put.requestDeserialize(Buffer.from(encodePut(key, value)));
  deepEqual([bytes(ePut.key), bytes(ePut.value)], [bytes(key), bytes(value)]);
  const range = etcdKv.Range.requestDeserialize(Buffer.from(encodeEtcdRange(key, true)));
  deepEqual([bytes(range.key), range.serializable, range.range_end], [bytes(key), true, undefined]);
});

Deno.test("h2 client: what the adapters read of the replies", () => {
  const value = new Uint8Array(4096).fill(9);
  const found = kv.Get.responseSerialize({ value, found: true });
  equal(scanFields(found, 2).value, 1);
  ok(scanFields(kv.Get.responseSerialize({ found: false }), 2).value !== 1);
  equal(scanFields(kv.Get.responseSerialize({}), 2).value, undefined);
  equal(scanFields(kv.Put.responseSerialize({ success: true, index: 300 }), 1).value, 1);
  const header = {
    cluster_id: "18446744073709551615",
    member_id: "1",
    revision: "7",
    raft_term: "2",
  };
  const one = etcdKv.Range.responseSerialize({
    header,
    kvs: [{ key: enc.encode("k"), value, create_revision: "3", mod_revision: "7", version: "2" }],
    count: "1",
  });
  equal(scanFields(one, -1, 2).count, 1);
  equal(scanFields(etcdKv.Range.responseSerialize({ header, count: "0" }), -1, 2).count, 0);
  // A truncated message is an error, not a silent miss.
  let threw = false;
  try {
    scanFields(one.subarray(0, one.length - 100), -1, 2);
  } catch {
    threw = true;
  }
  ok(threw);
});

Deno.test("h2 client: a call to a server that closes the connection fails UNAVAILABLE", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const c of l) c.close();
  })();
  const ch = await H2Channel.connect(`127.0.0.1:${(l.addr as Deno.NetAddr).port}`);
  try {
    await rejects(
      ch.unary("/kvstore.KVStore/Get", encodeConcordGet(enc.encode("k"), false), 5000),
      (e) => e instanceof GrpcCallError && e.code === GRPC_UNAVAILABLE,
    );
  } finally {
    ch.close();
    l.close();
    await accepting.catch(() => {});
  }
});

Deno.test("h2 client: a call the server never answers fails DEADLINE_EXCEEDED", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of l) held.push(c); // reads nothing, answers nothing
  })();
  const ch = await H2Channel.connect(`127.0.0.1:${(l.addr as Deno.NetAddr).port}`);
  try {
    const t0 = performance.now();
    await rejects(
      ch.unary("/kvstore.KVStore/Get", encodeConcordGet(enc.encode("k"), false), 200),
      (e) => e instanceof GrpcCallError && e.code === GRPC_DEADLINE_EXCEEDED,
    );
    ok(performance.now() - t0 >= 200);
  } finally {
    ch.close();
    for (const c of held) c.close();
    l.close();
    await accepting.catch(() => {});
  }
});

Deno.test("h2 client: against a real cluster, the same answers as grpc-js", async () => {
  await withCluster({ nodes: 3 }, async (c) => {
    const leader = await c.waitForLeader(10_000);
    const endpoints = [c.node(leader).address];
    const h2 = new ConcordKvH2Adapter({ endpoints, channelsPerEndpoint: 2 });
    const grpc = new ConcordKvAdapter({ endpoints, channelsPerEndpoint: 1 });
    try {
      await h2.ready();
      await grpc.ready();
      const key = enc.encode("h2/a");
      equal(await h2.get(key, false), false);
      await h2.put(key, enc.encode("v1"));
      equal(await h2.get(key, false), true);
      equal(await h2.get(key, true), true);
      equal(await grpc.get(key, false), true);
      // 64 puts of 8 KiB at once on two connections: 256 KiB each way, beyond the server's
      // initial 64 KiB connection window, so the client must wait for its WINDOW_UPDATEs.
      const big = new Uint8Array(8192).fill(1);
      await Promise.all(
        Array.from({ length: 64 }, (_, i) => h2.put(enc.encode(`h2/big/${i}`), big)),
      );
      const seen = await Promise.all(
        Array.from({ length: 64 }, (_, i) => grpc.get(enc.encode(`h2/big/${i}`), false)),
      );
      equal(seen.filter((x) => x).length, 64);
      // A server error comes back as the gRPC status: an empty key is INVALID_ARGUMENT (3).
      await rejects(
        h2.put(new Uint8Array(0), enc.encode("v")),
        (e) => (e as GrpcCallError).code === 3,
      );
    } finally {
      h2.close();
      grpc.close();
    }
  });
});

Deno.test("h2 client: createAdapter picks the client", () => {
  const opts = { endpoints: ["127.0.0.1:1"] };
  ok(createAdapter("etcd", { ...opts, client: "h2" }) instanceof EtcdH2Adapter);
  ok(createAdapter("concordkv", { ...opts, client: "h2" }) instanceof ConcordKvH2Adapter);
  ok(createAdapter("concordkv", opts) instanceof ConcordKvAdapter);
});
