/**
 * Tests of the h2 gRPC server: through the grpc-js client (what nodes, the client library and the
 * load generator use) and through a raw HTTP/2 client that writes frames by hand (framing,
 * CONTINUATION, flow control with a stalled reader, protocol errors).
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { ServerCall } from "./call.ts";
import { encodeHeaders, HpackDecoder } from "./hpack.ts";
import { H2Server, type H2ServerOptions } from "./server.ts";
import {
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FrameWriter,
  H2_COMPRESSION_ERROR,
  H2_FLOW_CONTROL_ERROR,
  H2_FRAME_SIZE_ERROR,
  H2_PROTOCOL_ERROR,
  H2_REFUSED_STREAM,
  PREFACE,
  SETTINGS_INITIAL_WINDOW_SIZE,
} from "./wire.ts";

const id = (x: Buffer) => x;

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return {
    path: `/test.T/${name}`,
    requestStream,
    responseStream,
    requestSerialize: id,
    requestDeserialize: id,
    responseSerialize: id,
    responseDeserialize: id,
    originalName: name.toLowerCase(),
  };
}

/** A service over raw bytes: every message is a Buffer. */
const DEF = {
  Echo: method("Echo", false, false),
  Big: method("Big", false, false),
  Hang: method("Hang", false, false),
  Fail: method("Fail", false, false),
  Sum: method("Sum", true, false),
  Chat: method("Chat", true, true),
} as unknown as grpc.ServiceDefinition;

// deno-lint-ignore no-explicit-any
type Any = any;
type Client = grpc.Client & Record<string, Any>;
const ClientCtor = grpc.makeGenericClientConstructor(DEF as Any, "T");

interface Fixture {
  server: H2Server;
  port: number;
  client: Client;
  /** Calls seen by the Hang handler. */
  hung: ServerCall[];
  close(): Promise<void>;
}

async function start(opts: H2ServerOptions = {}): Promise<Fixture> {
  const server = new H2Server(opts);
  const hung: ServerCall[] = [];
  server.addService(DEF, {
    Echo: (call: Any, cb: Any) => {
      const md = call.metadata.get("x-echo")[0];
      const trailer = new grpc.Metadata();
      if (md !== undefined) trailer.set("x-echo", md);
      cb(null, call.request, trailer);
    },
    Big: (call: Any, cb: Any) => {
      const n = call.request.readUInt32BE(0);
      const out = Buffer.alloc(n);
      for (let i = 0; i < n; i++) out[i] = i & 0xff;
      cb(null, out);
    },
    Hang: (call: Any, cb: Any) => {
      hung.push(call);
      call.on("cancelled", () => (call.sawCancelled = true));
      const ms = call.request.length > 0 ? call.request[0] * 10 : 0;
      if (ms > 0) setTimeout(() => cb(null, Buffer.from("late")), ms);
    },
    Fail: (_call: Any, cb: Any) => {
      const md = new grpc.Metadata();
      md.set("concordkv-leader", "127.0.0.1:9");
      md.set("x-bin", Buffer.from([0, 1, 255]));
      cb({ code: grpc.status.UNAVAILABLE, details: "not the leader: 100% ü", metadata: md });
    },
    Sum: (call: Any, cb: Any) => {
      let sum = 0;
      call.on("data", (m: Buffer) => sum += m.length);
      call.on("end", () => cb(null, Buffer.from(String(sum))));
    },
    Chat: (call: Any) => {
      const from = call.metadata.get("x-from")[0];
      call.write(Buffer.from(`hello ${from}`));
      call.on("data", (m: Buffer) => {
        if (m.toString() === "fail") call.emit("error", { code: 7, details: "go away" });
        else call.write(m);
      });
      call.on("end", () => call.end());
    },
  });
  const port = await server.listen({ hostname: "127.0.0.1", port: 0 });
  const client = new ClientCtor(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  ) as unknown as Client;
  return {
    server,
    port,
    client,
    hung,
    close: async () => {
      client.close();
      server.forceShutdown();
      await new Promise((r) => setTimeout(r, 10));
    },
  };
}

function unary(
  c: Client,
  name: string,
  req: Uint8Array,
  opts: { md?: grpc.Metadata; deadlineMs?: number } = {},
): Promise<{ value: Buffer; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let trailers = new grpc.Metadata();
    const call = c[name](
      Buffer.from(req),
      opts.md ?? new grpc.Metadata(),
      { deadline: Date.now() + (opts.deadlineMs ?? 5000) },
      (err: grpc.ServiceError | null, v: Buffer) => {
        if (err) reject(err);
        else setTimeout(() => resolve({ value: v, trailers }), 0);
      },
    );
    call.on("status", (s: grpc.StatusObject) => trailers = s.metadata);
  });
}

async function rejects(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error("expected the call to fail");
}

Deno.test("unary calls answer with the value, custom trailers and error statuses", async () => {
  const f = await start();
  try {
    const md = new grpc.Metadata();
    md.set("x-echo", "abc");
    const r = await unary(f.client, "echo", Uint8Array.of(1, 2, 3), { md });
    assert.deepEqual([...r.value], [1, 2, 3]);
    assert.deepEqual(r.trailers.get("x-echo"), ["abc"]);
    // Empty message.
    assert.equal((await unary(f.client, "echo", new Uint8Array(0))).value.length, 0);
    // Trailers-Only error with metadata and a percent-encoded message.
    const e = await rejects(unary(f.client, "fail", new Uint8Array(0)));
    assert.equal(e.code, grpc.status.UNAVAILABLE);
    assert.equal(e.details, "not the leader: 100% ü");
    assert.deepEqual(e.metadata.get("concordkv-leader"), ["127.0.0.1:9"]);
    assert.deepEqual([...(e.metadata.get("x-bin")[0] as Buffer)], [0, 1, 255]);
    // Many concurrent calls on one connection.
    const many = await Promise.all(
      Array.from({ length: 300 }, (_, i) => unary(f.client, "echo", Uint8Array.of(i & 255, 7))),
    );
    many.forEach((x, i) => assert.deepEqual([...x.value], [i & 255, 7]));
  } finally {
    await f.close();
  }
});

Deno.test("an unknown method answers UNIMPLEMENTED", async () => {
  const f = await start();
  try {
    const Other = grpc.makeGenericClientConstructor({
      Nope: { ...method("Nope", false, false), path: "/test.T/Nope" },
    } as Any, "T");
    const c = new Other(`127.0.0.1:${f.port}`, grpc.credentials.createInsecure()) as Client;
    const e = await rejects(unary(c, "nope", new Uint8Array(1)));
    c.close();
    assert.equal(e.code, grpc.status.UNIMPLEMENTED);
    assert.match(e.details, /\/test\.T\/Nope/);
    // On the wire: Trailers-Only, one HEADERS frame with END_STREAM and no DATA.
    const raw = await RawClient.connect(f.port);
    raw.request(1, "/test.T/Nope", { data: grpcMsg(Uint8Array.of(1)) });
    const t = await raw.trailersOf(1);
    raw.close();
    assert.equal(t.get(":status"), "200");
    assert.equal(t.get("content-type"), "application/grpc");
    assert.equal(t.get("grpc-status"), String(grpc.status.UNIMPLEMENTED));
    assert.equal(raw.headerBlocks(1).length, 1);
    assert.equal(raw.dataBytes(1), 0);
  } finally {
    await f.close();
  }
});

Deno.test("a response larger than the client's windows arrives whole (send-side flow control)", async () => {
  const f = await start();
  try {
    for (const n of [70_000, 3 * 1024 * 1024 + 17]) {
      const req = Buffer.alloc(4);
      req.writeUInt32BE(n);
      const [a, b] = await Promise.all([
        unary(f.client, "big", req),
        unary(f.client, "big", req),
      ]);
      for (const r of [a, b]) {
        assert.equal(r.value.length, n);
        assert.equal(r.value[n - 1], (n - 1) & 0xff);
        assert.equal(r.value[65_536], 65_536 & 0xff);
      }
    }
  } finally {
    await f.close();
  }
});

Deno.test("a request message over the limit gets RESOURCE_EXHAUSTED; a compressed one UNIMPLEMENTED", async () => {
  const f = await start({ maxReceiveMessageBytes: 1000 });
  try {
    const e = await rejects(unary(f.client, "echo", new Uint8Array(1001)));
    assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(e.details, /larger than max \(1001 vs 1000\)/);
    // The connection still works.
    assert.equal((await unary(f.client, "echo", new Uint8Array(1000))).value.length, 1000);
    const raw = await RawClient.connect(f.port);
    raw.request(1, "/test.T/Echo", { data: Uint8Array.of(1, 0, 0, 0, 1, 9) });
    const t = await raw.trailersOf(1);
    assert.equal(t.get("grpc-status"), String(grpc.status.UNIMPLEMENTED));
    raw.close();
  } finally {
    await f.close();
  }
});

Deno.test("the deadline ends a call with DEADLINE_EXCEEDED and cancels it on the server", async () => {
  const f = await start();
  try {
    const e = await rejects(unary(f.client, "hang", new Uint8Array(0), { deadlineMs: 150 }));
    assert.equal(e.code, grpc.status.DEADLINE_EXCEEDED);
    const call = f.hung[0] as Any;
    await waitFor(() => call.cancelled === true);
    assert.equal(call.sawCancelled, true);
    const d = call.getDeadline();
    assert.ok(d instanceof Date && Math.abs(d.getTime() - Date.now()) < 2000);
    // Raw: a server-side deadline answers even when the client's own timer is not running.
    const raw = await RawClient.connect(f.port);
    raw.request(1, "/test.T/Hang", { data: Uint8Array.of(0, 0, 0, 0, 0), timeout: "100m" });
    const t = await raw.trailersOf(1);
    assert.equal(t.get("grpc-status"), String(grpc.status.DEADLINE_EXCEEDED));
    raw.close();
  } finally {
    await f.close();
  }
});

Deno.test("a client cancel (RST_STREAM) cancels the server call", async () => {
  const f = await start();
  try {
    const call = f.client.hang(Buffer.alloc(0), () => {});
    await waitFor(() => f.hung.length === 1);
    call.cancel();
    const sc = f.hung[0] as Any;
    await waitFor(() => sc.cancelled === true);
    assert.equal(sc.sawCancelled, true);
    // Still serving.
    assert.equal((await unary(f.client, "echo", Uint8Array.of(5))).value[0], 5);
  } finally {
    await f.close();
  }
});

Deno.test("client-streaming and bidi-streaming calls", async () => {
  const f = await start();
  try {
    const sum = await new Promise<string>((resolve, reject) => {
      const call = f.client.sum((err: Any, v: Buffer) => err ? reject(err) : resolve(v.toString()));
      for (let i = 0; i < 50; i++) call.write(Buffer.alloc(1000 + i));
      call.end();
    });
    assert.equal(sum, String(50 * 1000 + (49 * 50) / 2));

    const md = new grpc.Metadata();
    md.set("x-from", "node-2");
    const chat = f.client.chat(md);
    const got: string[] = [];
    chat.on("data", (m: Buffer) => got.push(m.toString()));
    const ended = new Promise<grpc.StatusObject>((r) => chat.on("status", r));
    chat.write(Buffer.from("one"));
    chat.write(Buffer.alloc(200_000, 1)); // bigger than the client's initial windows
    chat.write(Buffer.from("two"));
    chat.end();
    const st = await ended;
    assert.equal(st.code, grpc.status.OK);
    assert.deepEqual(got.filter((s) => s.length < 100), ["hello node-2", "one", "two"]);
    assert.equal(got.length, 4);

    const chat2 = f.client.chat(new grpc.Metadata());
    chat2.on("data", () => {});
    const err = new Promise<grpc.ServiceError>((r) => chat2.on("error", r));
    chat2.write(Buffer.from("fail"));
    const e = await err;
    assert.equal(e.code, grpc.status.PERMISSION_DENIED);
    assert.equal(e.details, "go away");
  } finally {
    await f.close();
  }
});

Deno.test("receive windows are replenished: a 1 MB upload through 64 KiB windows completes", async () => {
  const f = await start({ streamWindow: 65_535, connectionWindow: 65_535 });
  try {
    const sum = await new Promise<string>((resolve, reject) => {
      const call = f.client.sum(
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (err: Any, v: Buffer) => err ? reject(err) : resolve(v.toString()),
      );
      for (let i = 0; i < 50; i++) call.write(Buffer.alloc(20_000));
      call.end();
    });
    assert.equal(sum, String(50 * 20_000));
  } finally {
    await f.close();
  }
});

Deno.test("tryShutdown lets the call in flight finish, then closes", async () => {
  const f = await start();
  try {
    const p = unary(f.client, "hang", Uint8Array.of(20)); // answers after 200 ms
    await waitFor(() => f.hung.length === 1);
    let shut = false;
    const done = new Promise<void>((r) =>
      f.server.tryShutdown(() => {
        shut = true;
        r();
      })
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(shut, false);
    assert.equal((await p).value.toString(), "late");
    await done;
    assert.equal(shut, true);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: f.port }));
  } finally {
    await f.close();
  }
});

Deno.test("listen on a used port throws AddrInUse", async () => {
  const f = await start();
  try {
    const s2 = new H2Server();
    await assert.rejects(
      () => s2.listen({ hostname: "127.0.0.1", port: f.port }),
      (e: unknown) => e instanceof Deno.errors.AddrInUse && /in use/i.test(String(e)),
    );
  } finally {
    await f.close();
  }
});

Deno.test("plain HTTP/1.1 GETs on the same port get the http1 hook's answer, gRPC goes on", async () => {
  const f = await start({
    http1: (path) =>
      path === "/x" ? { status: 200, contentType: "text/plain", body: "hi ü" } : undefined,
  });
  const raw = async (...parts: string[]): Promise<string> => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
    try {
      for (const p of parts) {
        await c.write(new TextEncoder().encode(p));
        await new Promise((r) => setTimeout(r, 20));
      }
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(4096);
      for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
        chunks.push(buf.slice(0, n));
      }
      return new TextDecoder().decode(new Uint8Array(chunks.flatMap((x) => [...x])));
    } finally {
      c.close();
    }
  };
  try {
    // The whole answer and nothing before it (no SETTINGS frame), then the connection closes;
    // a request head that arrives in pieces is waited for.
    assert.equal(
      await raw("GET /x HT", "TP/1.1\r\nHost: a\r\n", "\r\n"),
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhi ü",
    );
    assert.match(await raw("GET /nope HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(await raw("GET nonsense\r\n\r\n"), /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(await raw("GET /" + "x".repeat(9000)), /^HTTP\/1\.1 431 /);
    const res = await fetch(`http://127.0.0.1:${f.port}/x`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hi ü");
    // gRPC on the same port is unaffected.
    const { value } = await unary(f.client, "Echo", new TextEncoder().encode("still"));
    assert.equal(value.toString(), "still");
  } finally {
    await f.close();
  }
});

Deno.test("a connection that never finishes the preface is closed; one that did is kept", async () => {
  const f = await start({ prefaceTimeoutMs: 200 });
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
  const good = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
  try {
    const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    await slow.write(preface.subarray(0, 10)); // a slow opener stops mid-preface
    // The good one sends the whole preface and an empty SETTINGS frame.
    await good.write(Uint8Array.of(...preface, 0, 0, 0, 4, 0, 0, 0, 0, 0));
    const t0 = performance.now();
    const buf = new Uint8Array(4096);
    let gaveUp = false;
    const guard = setTimeout(() => {
      gaveUp = true;
      slow.close();
    }, 5_000);
    try {
      while ((await slow.read(buf)) !== null) { /* the server's SETTINGS, then EOF */ }
    } catch (e) {
      if (!gaveUp) throw e;
    } finally {
      clearTimeout(guard);
    }
    const waited = performance.now() - t0;
    assert.ok(!gaveUp, "the server kept a connection that never finished the preface");
    assert.ok(waited >= 150, `closed after ${waited.toFixed(0)} ms, before the timeout`);
    // Well past the timeout, the good connection still answers a PING.
    await new Promise((r) => setTimeout(r, 400));
    await good.write(Uint8Array.of(0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8));
    let got = new Uint8Array(0);
    let ack = false;
    while (!ack) {
      const n = await good.read(buf);
      assert.ok(n !== null, "the connection that sent the preface was closed");
      const all = new Uint8Array(got.length + n);
      all.set(got);
      all.set(buf.subarray(0, n), got.length);
      got = all;
      for (let o = 0; o + 9 <= got.length;) {
        const len = (got[o]! << 16) | (got[o + 1]! << 8) | got[o + 2]!;
        if (got[o + 3] === 6 && (got[o + 4]! & 1) === 1) ack = true;
        o += 9 + len;
      }
    }
  } finally {
    try {
      slow.close();
    } catch {
      // closed by the guard
    }
    good.close();
    await f.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 client

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Uint8Array;
}

class RawClient {
  readonly conn: Deno.TcpConn;
  readonly frames: Frame[] = [];
  readonly #hpack = new HpackDecoder();
  closed = false;
  #waiters: (() => void)[] = [];

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#readLoop();
  }

  /** Connects, sends the preface and a SETTINGS frame (optionally with our window). */
  static async connect(port: number, initialWindow?: number, preface = true): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new RawClient(conn);
    if (preface) {
      const w = new FrameWriter();
      w.put(PREFACE);
      w.settings(
        initialWindow === undefined ? [] : [[SETTINGS_INITIAL_WINDOW_SIZE, initialWindow]],
      );
      await c.send(w);
    }
    return c;
  }

  async send(w: FrameWriter): Promise<void> {
    const b = w.bytes();
    for (let o = 0; o < b.length;) o += await this.conn.write(b.subarray(o));
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(1 << 20);
    let have = 0;
    try {
      for (;;) {
        const n = await this.conn.read(buf.subarray(have));
        if (n === null) break;
        have += n;
        let p = 0;
        while (have - p >= 9) {
          const len = (buf[p]! << 16) | (buf[p + 1]! << 8) | buf[p + 2]!;
          if (have - p < 9 + len) break;
          this.frames.push({
            type: buf[p + 3]!,
            flags: buf[p + 4]!,
            stream: new DataView(buf.buffer, p + 5, 4).getUint32(0) & 0x7fffffff,
            payload: buf.slice(p + 9, p + 9 + len),
          });
          p += 9 + len;
        }
        buf.copyWithin(0, p, have);
        have -= p;
        this.#wake();
      }
    } catch {
      // closed
    }
    this.closed = true;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Waits until `pred` holds over the frames received (or fails after 3 s). */
  async until(pred: (frames: Frame[]) => boolean, what: string): Promise<void> {
    const end = Date.now() + 3000;
    while (!pred(this.frames)) {
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends a gRPC request: HEADERS (optionally split into CONTINUATIONs, padded) and DATA. */
  request(
    stream: number,
    path: string,
    o: {
      data?: Uint8Array;
      end?: boolean;
      timeout?: string;
      split?: number;
      pad?: number;
      priority?: boolean;
      extra?: [string, string][];
    } = {},
  ): void {
    const h: [string, string][] = [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...(o.timeout !== undefined ? [["grpc-timeout", o.timeout] as [string, string]] : []),
      ...(o.extra ?? []),
    ];
    const block = encodeHeaders(h);
    const w = new FrameWriter();
    const endOnHeaders = o.data === undefined && o.end !== false;
    const first = o.split !== undefined ? block.subarray(0, o.split) : block;
    let flags = (o.split === undefined ? FLAG_END_HEADERS : 0) |
      (endOnHeaders ? FLAG_END_STREAM : 0);
    const parts: Uint8Array[] = [];
    if (o.pad !== undefined) {
      flags |= FLAG_PADDED;
      parts.push(Uint8Array.of(o.pad));
    }
    if (o.priority) {
      flags |= FLAG_PRIORITY;
      parts.push(Uint8Array.of(0, 0, 0, 0, 16));
    }
    parts.push(first);
    if (o.pad !== undefined) parts.push(new Uint8Array(o.pad));
    w.frame(FRAME_HEADERS, flags, stream, concat(parts));
    if (o.split !== undefined) {
      for (let p = o.split; p < block.length; p += o.split) {
        const last = p + o.split >= block.length;
        w.frame(
          FRAME_CONTINUATION,
          last ? FLAG_END_HEADERS : 0,
          stream,
          block.subarray(p, p + o.split),
        );
      }
    }
    if (o.data !== undefined) {
      w.frame(FRAME_DATA, o.end === false ? 0 : FLAG_END_STREAM, stream, o.data);
    }
    void this.send(w);
  }

  /** Decoded header blocks received on a stream, in order. */
  headerBlocks(stream: number): Map<string, string>[] {
    const out: Map<string, string>[] = [];
    for (const f of this.frames) {
      if (f.stream !== stream || f.type !== FRAME_HEADERS) continue;
      out.push(new Map(this.#decode(f.payload)));
    }
    return out;
  }

  #decoded = new Map<Uint8Array, [string, string][]>();
  #decode(p: Uint8Array): [string, string][] {
    let d = this.#decoded.get(p);
    if (d === undefined) {
      d = this.#hpack.decode(p);
      this.#decoded.set(p, d);
    }
    return d;
  }

  /** Waits for the stream's END_STREAM header block and returns it. */
  async trailersOf(stream: number): Promise<Map<string, string>> {
    await this.until(
      (fs) => fs.some((f) => f.stream === stream && f.type === FRAME_HEADERS && f.flags & 1),
      `trailers of stream ${stream}`,
    );
    // Decode every header block in order (HPACK state), then pick the last of the stream.
    for (const f of this.frames) if (f.type === FRAME_HEADERS) this.#decode(f.payload);
    return this.headerBlocks(stream).at(-1)!;
  }

  dataBytes(stream: number): number {
    let n = 0;
    for (const f of this.frames) {
      if (f.stream === stream && f.type === FRAME_DATA) n += f.payload.length;
    }
    return n;
  }

  async goaway(): Promise<number> {
    await this.until((fs) => fs.some((f) => f.type === FRAME_GOAWAY), "GOAWAY");
    const g = this.frames.find((f) => f.type === FRAME_GOAWAY)!;
    return new DataView(g.payload.buffer).getUint32(4);
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function grpcMsg(body: Uint8Array): Uint8Array {
  const m = new Uint8Array(5 + body.length);
  new DataView(m.buffer).setUint32(1, body.length);
  m.set(body, 5);
  return m;
}

async function waitFor(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("raw: SETTINGS are acknowledged, PING answered, HEADERS+CONTINUATION with padding and priority served", async () => {
  const f = await start();
  const raw = await RawClient.connect(f.port);
  try {
    const w = new FrameWriter();
    w.frame(FRAME_PING, 0, 0, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    await raw.send(w);
    await raw.until(
      (fs) =>
        fs.some((x) => x.type === FRAME_SETTINGS && x.flags === FLAG_ACK) &&
        fs.some((x) => x.type === FRAME_PING && x.flags === FLAG_ACK && x.payload[7] === 8),
      "SETTINGS ACK and PING ACK",
    );
    const server = raw.frames.find((x) => x.type === FRAME_SETTINGS && x.flags === 0)!;
    assert.ok(server.payload.length % 6 === 0 && server.payload.length > 0);
    raw.request(1, "/test.T/Echo", {
      data: grpcMsg(Uint8Array.of(42)),
      split: 7,
      pad: 3,
      priority: true,
      extra: [["x-echo", "v".repeat(100)]],
    });
    const t = await raw.trailersOf(1);
    assert.equal(t.get("grpc-status"), "0");
    assert.equal(t.get("x-echo"), "v".repeat(100));
    const data = raw.frames.filter((x) => x.stream === 1 && x.type === FRAME_DATA);
    assert.deepEqual([...data[0]!.payload], [0, 0, 0, 0, 1, 42]);
    // Request split across DATA frames, the message prefix itself split.
    const w2 = new FrameWriter();
    const blk = encodeHeaders([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/test.T/Echo"],
      ["content-type", "application/grpc"],
    ]);
    w2.frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, blk);
    const msg = grpcMsg(new Uint8Array(300).fill(9));
    w2.frame(FRAME_DATA, 0, 3, msg.subarray(0, 2));
    w2.frame(
      FRAME_DATA,
      FLAG_PADDED,
      3,
      concat([Uint8Array.of(4), msg.subarray(2, 100), new Uint8Array(4)]),
    );
    w2.frame(FRAME_DATA, FLAG_END_STREAM, 3, msg.subarray(100));
    await raw.send(w2);
    assert.equal((await raw.trailersOf(3)).get("grpc-status"), "0");
    assert.equal(raw.dataBytes(3), 305);
  } finally {
    raw.close();
    await f.close();
  }
});

Deno.test("raw: a stalled reader gets no more DATA than its window; WINDOW_UPDATE releases the rest", async () => {
  const f = await start();
  const raw = await RawClient.connect(f.port, 1000);
  try {
    const req = new Uint8Array(4);
    new DataView(req.buffer).setUint32(0, 50_000);
    raw.request(1, "/test.T/Big", { data: grpcMsg(req) });
    await raw.until((fs) => fs.some((x) => x.stream === 1 && x.type === FRAME_DATA), "first DATA");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(raw.dataBytes(1), 1000);
    assert.equal(raw.headerBlocks(1).length, 1); // headers, no trailers yet
    // Open the stream window: the rest and the trailers follow.
    const w = new FrameWriter();
    w.windowUpdate(1, 1_000_000);
    await raw.send(w);
    assert.equal((await raw.trailersOf(1)).get("grpc-status"), "0");
    assert.equal(raw.dataBytes(1), 50_005);
  } finally {
    raw.close();
    await f.close();
  }
});

Deno.test("raw: a stream over the connection window waits for a connection WINDOW_UPDATE", async () => {
  const f = await start();
  const raw = await RawClient.connect(f.port, 10_000_000);
  try {
    const req = new Uint8Array(4);
    new DataView(req.buffer).setUint32(0, 100_000);
    raw.request(1, "/test.T/Big", { data: grpcMsg(req) });
    await raw.until(() => raw.dataBytes(1) === 65_535, "DATA up to the connection window");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(raw.dataBytes(1), 65_535);
    for (const x of raw.frames) if (x.type === FRAME_DATA) assert.ok(x.payload.length <= 16_384);
    const w = new FrameWriter();
    w.windowUpdate(0, 100_000);
    await raw.send(w);
    assert.equal((await raw.trailersOf(1)).get("grpc-status"), "0");
    assert.equal(raw.dataBytes(1), 100_005);
  } finally {
    raw.close();
    await f.close();
  }
});

Deno.test("raw: streams beyond MAX_CONCURRENT_STREAMS are refused", async () => {
  const f = await start({ maxConcurrentStreams: 1 });
  const raw = await RawClient.connect(f.port);
  try {
    raw.request(1, "/test.T/Hang", { data: grpcMsg(new Uint8Array(0)) });
    raw.request(3, "/test.T/Echo", { data: grpcMsg(new Uint8Array(0)) });
    await raw.until((fs) => fs.some((x) => x.type === FRAME_RST_STREAM && x.stream === 3), "RST");
    const rst = raw.frames.find((x) => x.type === FRAME_RST_STREAM && x.stream === 3)!;
    assert.equal(new DataView(rst.payload.buffer).getUint32(0), H2_REFUSED_STREAM);
  } finally {
    raw.close();
    await f.close();
  }
});

Deno.test("raw: protocol errors end the connection with GOAWAY and the right code; the server lives on", async () => {
  const f = await start();
  try {
    const cases: [string, (w: FrameWriter) => void, number][] = [
      ["DATA on stream 0", (w) => w.frame(FRAME_DATA, 0, 0, Uint8Array.of(1)), H2_PROTOCOL_ERROR],
      [
        "oversized frame",
        (w) => w.frame(FRAME_DATA, 0, 1, new Uint8Array(20_000)),
        H2_FRAME_SIZE_ERROR,
      ],
      ["PING of 7 bytes", (w) => w.frame(FRAME_PING, 0, 0, new Uint8Array(7)), H2_FRAME_SIZE_ERROR],
      ["WINDOW_UPDATE of 0", (w) => w.windowUpdate(0, 0), H2_PROTOCOL_ERROR],
      ["window overflow", (w) => w.windowUpdate(0, 0x7fffffff), H2_FLOW_CONTROL_ERROR],
      [
        "even stream id",
        (w) => w.frame(FRAME_HEADERS, FLAG_END_HEADERS, 2, Uint8Array.of(0x82)),
        H2_PROTOCOL_ERROR,
      ],
      [
        "bad HPACK",
        (w) =>
          w.frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f),
          ),
        H2_COMPRESSION_ERROR,
      ],
      ["HEADERS without CONTINUATION", (w) => {
        w.frame(FRAME_HEADERS, 0, 1, Uint8Array.of(0x83));
        w.frame(FRAME_DATA, 0, 1, new Uint8Array(1));
      }, H2_PROTOCOL_ERROR],
      [
        "SETTINGS of 5 bytes",
        (w) => w.frame(FRAME_SETTINGS, 0, 0, new Uint8Array(5)),
        H2_FRAME_SIZE_ERROR,
      ],
      [
        "DATA on an idle stream",
        (w) => w.frame(FRAME_DATA, 0, 9, new Uint8Array(1)),
        H2_PROTOCOL_ERROR,
      ],
    ];
    for (const [what, build, code] of cases) {
      const raw = await RawClient.connect(f.port);
      const w = new FrameWriter();
      build(w);
      await raw.send(w);
      assert.equal(await raw.goaway(), code, what);
      await raw.until(() => raw.closed, `close after ${what}`);
      raw.close();
    }
    const bad = await RawClient.connect(f.port, undefined, false);
    const w = new FrameWriter();
    w.put(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await bad.send(w);
    assert.equal(await bad.goaway(), H2_PROTOCOL_ERROR);
    bad.close();
    // The server still serves.
    assert.equal((await unary(f.client, "echo", Uint8Array.of(3))).value[0], 3);
  } finally {
    await f.close();
  }
});

Deno.test("fuzz: mutated frame streams never crash the server", async () => {
  const f = await start({ maxReceiveMessageBytes: 64 * 1024 });
  try {
    // A valid conversation: preface, SETTINGS, two requests (one split by CONTINUATION), PING,
    // WINDOW_UPDATE, RST_STREAM.
    const w = new FrameWriter();
    w.put(PREFACE);
    w.settings([[SETTINGS_INITIAL_WINDOW_SIZE, 100]]);
    const blk = encodeHeaders([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/test.T/Echo"],
      ["content-type", "application/grpc"],
      ["grpc-timeout", "1S"],
    ]);
    w.frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, blk);
    w.frame(FRAME_DATA, FLAG_END_STREAM, 1, grpcMsg(new Uint8Array(300).fill(1)));
    w.frame(FRAME_HEADERS, 0, 3, blk.subarray(0, 5));
    w.frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, blk.subarray(5));
    w.frame(FRAME_DATA, 0, 3, grpcMsg(Uint8Array.of(2, 3)));
    w.frame(FRAME_PING, 0, 0, new Uint8Array(8));
    w.windowUpdate(0, 1000);
    w.windowUpdate(3, 1000);
    w.rstStream(3, 8);
    const valid = w.bytes().slice();
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const one = async (b: Uint8Array) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
      // Read whatever comes back until the server closes or goes quiet.
      const quiet = setTimeout(() => conn.close(), 60);
      try {
        await conn.write(b);
        const buf = new Uint8Array(65536);
        while ((await conn.read(buf)) !== null) { /* drain */ }
      } catch {
        // closed by the timer, or reset by the server
      } finally {
        clearTimeout(quiet);
        try {
          conn.close();
        } catch {
          // closed
        }
      }
    };
    for (let round = 0; round < 20; round++) {
      const batch: Promise<void>[] = [];
      for (let k = 0; k < 15; k++) {
        const b = valid.slice();
        const edits = 1 + rnd(8);
        for (let i = 0; i < edits; i++) {
          // Keep the preface intact so the frame layer gets exercised.
          b[PREFACE.length + rnd(b.length - PREFACE.length)] = rnd(256);
        }
        batch.push(one(b));
      }
      await Promise.all(batch);
    }
    assert.equal((await unary(f.client, "echo", Uint8Array.of(9))).value[0], 9);
  } finally {
    await f.close();
  }
});
