import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { type Message, MessageType, newMessage } from "../raft/types.ts";
import { Logger } from "./log.ts";
import { raftPackage } from "./proto.ts";
import { Transport } from "./transport.ts";

const lines: string[] = [];
const log = new Logger({ node: 0, level: "info", write: (l) => lines.push(l) });

function msg(from: number, to: number, i: number, data = new Uint8Array(0)): Message {
  return newMessage(MessageType.App, {
    from,
    to,
    term: 1,
    index: i,
    entries: data.length > 0 ? [{ index: i + 1, term: 1, type: 0, data }] : [],
  });
}

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

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("transport delivers batches in order and rejects other clusters and non-members", async () => {
  const got: Message[] = [];
  const ref: { b?: Transport } = {};
  const sb = await serve(() => ref.b!);
  const b = new Transport({
    id: 2,
    clusterId: "c1",
    peers: new Map(),
    isMember: (id) => id === 1 || id === 3,
    onMessages: (msgs, from) => {
      for (const m of msgs) assert.equal(m.from, from);
      got.push(...msgs);
    },
    onUnreachable: () => {},
    log,
  });
  ref.b = b;
  const mk = (id: number, clusterId: string) =>
    new Transport({
      id,
      clusterId,
      peers: new Map([[2, `127.0.0.1:${sb.port}`]]),
      isMember: () => true,
      onMessages: () => {},
      onUnreachable: () => {},
      log,
    });
  const a = mk(1, "c1");
  const stranger = mk(3, "other-cluster");
  const outsider = mk(9, "c1");
  try {
    // Many tiny messages (the smallest encodings) and a few with data, in one batch each.
    for (let round = 0; round < 5; round++) {
      const batch: Message[] = [];
      for (let i = 0; i < 20; i++) {
        batch.push(msg(1, 2, round * 20 + i, i % 7 === 0 ? new Uint8Array(300) : undefined));
      }
      a.send(batch);
    }
    stranger.send([msg(3, 2, 1000)]);
    outsider.send([msg(9, 2, 2000)]);
    await until(() => got.length >= 100);
    await until(() => lines.filter((l) => l.includes("rejected")).length >= 2);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 100);
    assert.deepEqual(got.map((m) => m.index), Array.from({ length: 100 }, (_, i) => i));
    assert.ok(got.every((m) => m.from === 1));
    assert.ok(lines.some((l) => l.includes("other-cluster")), lines.join("\n"));
    assert.ok(lines.some((l) => l.includes("node 9 is not a member")), lines.join("\n"));
    assert.ok(a.isUp(2));
  } finally {
    a.close();
    stranger.close();
    outsider.close();
    b.close();
    sb.server.forceShutdown();
  }
});

Deno.test("transport: back-to-back batches on an open stream arrive with their own bytes", async () => {
  const got: Message[] = [];
  const ref: { b?: Transport } = {};
  const sb = await serve(() => ref.b!);
  const b = new Transport({
    id: 2,
    clusterId: "c1",
    peers: new Map(),
    isMember: (id) => id === 1,
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
  });
  try {
    a.send([msg(1, 2, 0)]);
    await until(() => a.isUp(2) && got.length === 1);
    // Sizes below and above one DATA frame, the first payload buffer and the flow-control
    // window; each batch is encoded while the previous ones may still wait to be written.
    const sizes = [10, 3_000, 20_000, 70_000, 5, 200_000, 1_000, 40_000];
    const data = sizes.map((n, i) => new Uint8Array(n).map((_, j) => (j * 31 + i * 7) & 0xff));
    for (let i = 0; i < sizes.length; i++) a.send([msg(1, 2, i + 1, data[i])]);
    await until(() => got.length === 1 + sizes.length);
    for (let i = 0; i < sizes.length; i++) {
      const m = got[i + 1]!;
      assert.equal(m.index, i + 1);
      const d = m.entries[0]!.data; // a Buffer on the grpc-js server side
      assert.deepEqual(
        new Uint8Array(d.buffer, d.byteOffset, d.length),
        data[i],
        `batch ${i + 1} (${sizes[i]} bytes)`,
      );
    }
  } finally {
    a.close();
    b.close();
    sb.server.forceShutdown();
  }
});

Deno.test("transport drops messages to a down peer and reports it unreachable", async () => {
  let unreachable = 0;
  const a = new Transport({
    id: 1,
    clusterId: "c1",
    peers: new Map([[2, "127.0.0.1:1"]]),
    isMember: () => true,
    onMessages: () => {},
    onUnreachable: () => unreachable++,
    log,
  });
  try {
    a.send([msg(1, 2, 1)]);
    await until(() => unreachable > 0);
    // While in backoff, sends are dropped at once (no queue grows).
    const before = unreachable;
    for (let i = 0; i < 1000; i++) a.send([msg(1, 2, i, new Uint8Array(1000))]);
    assert.ok(unreachable > before);
    assert.equal(a.isUp(2), false);
  } finally {
    a.close();
  }
});
