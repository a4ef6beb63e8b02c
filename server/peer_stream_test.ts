import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { type Message, MessageType, newMessage } from "../raft/types.ts";
import { Logger } from "./log.ts";
import { decodePeerFrame, encodePeerFrameMessage, PeerFrameDecodeError } from "./peer_stream.ts";
import { raftPackage } from "./proto.ts";
import { Transport } from "./transport.ts";

const log = new Logger({ node: 0, level: "error", write: () => {} });

Deno.test("PeerFrame: the hand encoding is what protobufjs decodes, and back", () => {
  const svc = raftPackage().Raft.service.Stream!;
  for (
    const f of [
      { header: { cluster_id: "c1", from: 1, to: 2 }, payload: new Uint8Array([1, 2, 3]) },
      { header: { cluster_id: "cluster-é", from: 300, to: 70000 }, payload: new Uint8Array(0) },
      { header: null, payload: new Uint8Array(200).fill(7) },
    ]
  ) {
    const m = encodePeerFrameMessage(f);
    assert.equal(m[0], 0);
    assert.equal(new DataView(m.buffer).getUint32(1), m.length - 5);
    // deno-lint-ignore no-explicit-any
    const viaPb = svc.requestDeserialize(Buffer.from(m.subarray(5))) as any;
    assert.equal(viaPb.header?.cluster_id ?? null, f.header?.cluster_id ?? null);
    assert.equal(Number(viaPb.header?.from ?? 0), f.header?.from ?? 0);
    assert.equal(Number(viaPb.header?.to ?? 0), f.header?.to ?? 0);
    assert.deepEqual(new Uint8Array(viaPb.payload), f.payload);
    const back = decodePeerFrame(new Uint8Array(svc.requestSerialize(viaPb)));
    assert.deepEqual(back.header, f.header);
    assert.deepEqual(back.payload, f.payload);
  }
  assert.throws(() => decodePeerFrame(new Uint8Array([0x0a, 5, 0x0a])), PeerFrameDecodeError);
  assert.throws(() => decodePeerFrame(new Uint8Array([0x12, 0x80])), PeerFrameDecodeError);
});

async function serve(t: () => Transport): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(raftPackage().Raft.service, {
    // deno-lint-ignore no-explicit-any
    Stream: (call: any) => t().handleStream(call),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? rej(e) : res(p),
    )
  );
  return { server, port };
}

for (const raw of [true, false]) {
  Deno.test(`transport (${raw ? "raw HTTP/2" : "grpc-js"} dialer) carries 24 MB in order through flow control`, async () => {
    const got: Message[] = [];
    const ref: { b?: Transport } = {};
    const sb = await serve(() => ref.b!);
    const b = new Transport({
      id: 2,
      clusterId: "c1",
      peers: new Map(),
      isMember: () => true,
      onMessages: (msgs) => got.push(...msgs),
      onUnreachable: () => {},
      log,
    });
    ref.b = b;
    const a = new Transport({
      id: 1,
      clusterId: "c1",
      peers: new Map([[2, `127.0.0.1:${sb.port}`]]),
      isMember: () => true,
      onMessages: () => {},
      onUnreachable: () => {},
      log,
      rawPeerStreams: raw,
    });
    try {
      const n = 120;
      for (let i = 0; i < n; i++) {
        const data = new Uint8Array(200_000).fill(i & 0xff);
        data[0] = i >> 8;
        a.send([newMessage(MessageType.App, {
          from: 1,
          to: 2,
          term: 1,
          index: i,
          entries: [{ index: i + 1, term: 1, type: 0, data }],
        })]);
      }
      const end = Date.now() + 20_000;
      while (got.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(got.length, n);
      got.forEach((m, i) => {
        assert.equal(m.index, i);
        const d = m.entries[0]!.data;
        assert.equal(d.length, 200_000);
        assert.equal(d[0], i >> 8);
        assert.equal(d[199_999], i & 0xff);
      });
      assert.ok(a.isUp(2));
    } finally {
      a.close();
      b.close();
      sb.server.forceShutdown();
    }
  });
}
