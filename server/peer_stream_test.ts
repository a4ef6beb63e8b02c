import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { type Message, MessageType, newMessage } from "../raft/types.ts";
import { Logger } from "./log.ts";
import {
  decodePeerFrame,
  encodePeerFrameMessage,
  PeerFrameDecodeError,
  PeerStream,
} from "./peer_stream.ts";
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

Deno.test("PeerStream: frames written while a write is in flight keep their own bytes", async () => {
  // Frames of many sizes (one byte to several DATA frames, and some above the initial 64 KiB
  // windows, which must wait for WINDOW_UPDATE), through writeFrame and write, with the header
  // changing along the way; sent in bursts from several turns, so that frames are encoded into
  // the output buffer while the previous buffer is still being written. The server must see
  // every frame in order with exactly its bytes.
  const got: { header: { cluster_id: string; from: number; to: number } | null; p: Uint8Array }[] =
    [];
  const server = new grpc.Server();
  server.addService(raftPackage().Raft.service, {
    // deno-lint-ignore no-explicit-any
    Stream: (call: any) => {
      // deno-lint-ignore no-explicit-any
      call.on("data", (f: any) => {
        const h = f.header === null || f.header === undefined ? null : {
          cluster_id: f.header.cluster_id,
          from: Number(f.header.from),
          to: Number(f.header.to),
        };
        got.push({ header: h, p: new Uint8Array(f.payload ?? []) });
      });
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? rej(e) : res(p),
    )
  );
  const closed: string[] = [];
  const stream = PeerStream.open({
    hostname: "127.0.0.1",
    port,
    authority: `127.0.0.1:${port}`,
    path: "/raft.Raft/Stream",
    metadata: [],
    onMessage: () => {},
    onDrain: () => {},
    onClose: (why) => closed.push(why),
  });
  const sizes = [1, 0, 300, 16_370, 16_384, 40_000, 5, 70_000, 200_000, 3, 4_500, 33_000];
  const want: typeof got = [];
  const fill = (n: number, seed: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
    return b;
  };
  try {
    let k = 0;
    for (let burst = 0; burst < 6; burst++) {
      for (const n of sizes) {
        const header = k % 5 === 4
          ? null
          : { cluster_id: k % 3 ? "c1" : "c2", from: 1, to: 2 + (k % 2) };
        const f = { header, payload: fill(n, k) };
        want.push({ header, p: f.payload.slice() });
        if (k % 4 === 3) stream.write(encodePeerFrameMessage(f));
        else stream.writeFrame(f);
        // The caller may reuse its payload buffer once the call returned.
        f.payload.fill(0xee);
        k++;
        // Let the flush start its write, so that the next frames are made while it is in flight.
        await null;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const end = Date.now() + 15_000;
    while (got.length < want.length && Date.now() < end && closed.length === 0) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(closed, []);
    assert.equal(got.length, want.length);
    for (let i = 0; i < want.length; i++) {
      assert.deepEqual(got[i]!.header, want[i]!.header, `frame ${i}`);
      assert.deepEqual(got[i]!.p, want[i]!.p, `frame ${i}`);
    }
  } finally {
    stream.close();
    server.forceShutdown();
  }
});

/** Reads HTTP/2 frames from a raw connection; yields the gRPC messages of stream 1's DATA. */
async function _readMessages(conn: Deno.Conn, count: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let buf = new Uint8Array(1 << 20);
  let len = 0;
  let off = 24; // the client preface
  let data = new Uint8Array(1 << 20);
  let dlen = 0;
  let doff = 0;
  while (out.length < count) {
    if (len === buf.length) {
      const b = new Uint8Array(buf.length * 2);
      b.set(buf);
      buf = b;
    }
    const n = await conn.read(buf.subarray(len));
    if (n === null) throw new Error(`EOF after ${out.length} messages`);
    len += n;
    while (len - off >= 9) {
      const flen = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
      if (len - off < 9 + flen) break;
      const sid = new DataView(buf.buffer, off + 5, 4).getUint32(0) & 0x7fffffff;
      if (buf[off + 3] === 0 && sid === 1) {
        if (dlen + flen > data.length) {
          const d = new Uint8Array(Math.max(data.length * 2, dlen + flen));
          d.set(data.subarray(0, dlen));
          data = d;
        }
        data.set(buf.subarray(off + 9, off + 9 + flen), dlen);
        dlen += flen;
      }
      off += 9 + flen;
    }
    buf.copyWithin(0, off, len);
    len -= off;
    off = 0;
    while (dlen - doff >= 5) {
      const mlen = new DataView(data.buffer, doff + 1, 4).getUint32(0);
      if (dlen - doff - 5 < mlen) break;
      out.push(data.slice(doff + 5, doff + 5 + mlen));
      doff += 5 + mlen;
    }
  }
  return out;
}

Deno.test("PeerStream: frames queued behind a write that cannot finish keep their own bytes", async () => {
  // A server that opens its windows wide and then does not read: the socket fills, the write
  // in flight cannot finish, and every later frame is made in the other output buffer (write()
  // returns false above the high-water mark). Once the server reads, every frame must arrive in
  // order with exactly its bytes, though the callers overwrote their payloads after each call.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept();
  const closed: string[] = [];
  const stream = PeerStream.open({
    hostname: "127.0.0.1",
    port,
    authority: `127.0.0.1:${port}`,
    path: "/raft.Raft/Stream",
    metadata: [],
    onMessage: () => {},
    onDrain: () => {},
    onClose: (why) => closed.push(why),
  });
  const conn = await accepted;
  try {
    // SETTINGS (INITIAL_WINDOW_SIZE 2^31-1), WINDOW_UPDATE on the connection to 2^31-1.
    const hello = new Uint8Array(9 + 6 + 9 + 4);
    hello.set([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff], 0);
    const inc = 0x7fffffff - 65535;
    hello.set([0, 0, 4, 8, 0, 0, 0, 0, 0], 15);
    new DataView(hello.buffer).setUint32(24, inc);
    await conn.write(hello);
    const sizes = [1, 0, 300, 16_370, 16_384, 40_000, 5, 70_000, 200_000, 3, 4_500, 1_000_000];
    const want: {
      header: { cluster_id: string; from: number; to: number } | null;
      p: Uint8Array;
    }[] = [];
    let refused = 0;
    let k = 0;
    for (let round = 0; round < 16; round++) {
      for (const n of sizes) {
        const header = k % 5 === 4 ? null : { cluster_id: k % 3 ? "c1" : "c2", from: 1, to: 2 };
        const payload = new Uint8Array(n);
        for (let i = 0; i < n; i++) payload[i] = (k * 31 + i * 7) & 0xff;
        want.push({ header, p: payload.slice() });
        const ok = k % 4 === 3
          ? stream.write(encodePeerFrameMessage({ header, payload }))
          : stream.writeFrame({ header, payload });
        if (!ok) refused++;
        payload.fill(0xee);
        k++;
        await null;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.ok(refused > 0, "the output never went above the high-water mark");
    const msgs = await _readMessages(conn, want.length);
    assert.deepEqual(closed, []);
    for (let i = 0; i < want.length; i++) {
      const f = decodePeerFrame(msgs[i]!);
      assert.deepEqual(f.header, want[i]!.header, `frame ${i}`);
      assert.deepEqual(f.payload, want[i]!.p, `frame ${i}`);
    }
  } finally {
    stream.close();
    conn.close();
    listener.close();
  }
});
