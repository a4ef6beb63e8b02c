/**
 * Hostile HTTP/2 input against a real node's port (the server of server/h2): each step opens raw
 * TCP connections, sends one kind of malformed or abusive input, and checks that the node answers
 * the way RFC 9113 asks (GOAWAY or RST_STREAM with the right error code, or closing that
 * connection), that it stays up, and that a normal grpc-js client still gets correct answers.
 *
 * The raw client below speaks just enough HTTP/2 for that: the preface, frames, an HPACK block
 * for a gRPC request (server/h2/hpack.ts encodes and decodes), and a reader that collects frames.
 * One single-node cluster serves every step.
 */
import assert from "node:assert/strict";
import { TestCluster } from "./harness.ts";
import type { KVClient } from "../client/client.ts";
import { encodeHeaders, HpackDecoder } from "../server/h2/hpack.ts";

// Frame types, flags, settings and error codes (RFC 9113 §6, §7), spelled out independently of
// the server's own constants.
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PROTOCOL_ERROR = 0x1;
const FLOW_CONTROL_ERROR = 0x3;
const STREAM_CLOSED = 0x5;
const FRAME_SIZE_ERROR = 0x6;
const REFUSED_STREAM = 0x7;
const COMPRESSION_ERROR = 0x9;
const ENHANCE_YOUR_CALM = 0xb;
const ERROR_NAMES: Record<number, string> = {
  0: "NO_ERROR",
  1: "PROTOCOL_ERROR",
  2: "INTERNAL_ERROR",
  3: "FLOW_CONTROL_ERROR",
  5: "STREAM_CLOSED",
  6: "FRAME_SIZE_ERROR",
  7: "REFUSED_STREAM",
  8: "CANCEL",
  9: "COMPRESSION_ERROR",
  11: "ENHANCE_YOUR_CALM",
};

const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** How long a step waits for the node's answer before failing. */
const ANSWER_MS = 5_000;

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Uint8Array;
}

/** One frame: 9-byte header + payload. */
function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >>> 16;
  out[1] = (payload.length >>> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The request header list of a gRPC call to `path`. */
function requestHeaders(path: string, extra: Array<[string, string]> = []): Uint8Array {
  return encodeHeaders([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "127.0.0.1"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ...extra,
  ]);
}

/** A gRPC-framed `PingRequest{message}` (field 1, length-delimited). */
function pingMessage(message: string): Uint8Array {
  const m = new TextEncoder().encode(message);
  return new Uint8Array([0, 0, 0, 0, m.length + 2, 0x0a, m.length, ...m]);
}

/** A raw HTTP/2 client connection that records every frame the node sends. */
class RawConn {
  readonly conn: Deno.TcpConn;
  readonly frames: Frame[] = [];
  /** The node closed the connection (EOF or reset). */
  closed = false;
  readonly hpack = new HpackDecoder({ maxHeaderListSize: 1 << 20 });
  #buf = new Uint8Array(0);
  #wake: (() => void) | undefined;
  #reading: Promise<void> | undefined;
  #writes: Promise<void> = Promise.resolve();
  #discard = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects; unless `raw`, sends the preface and an empty SETTINGS, and starts reading. */
  static async open(port: number, opts: { raw?: boolean; read?: boolean } = {}): Promise<RawConn> {
    const c = new RawConn(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (!opts.raw) await c.send(PREFACE, frame(SETTINGS, 0, 0));
    if (opts.read !== false) c.#reading = c.#readLoop();
    return c;
  }

  /** Writes the frames in order after every earlier `send` (including automatic ACKs). */
  send(...parts: Uint8Array[]): Promise<void> {
    const b = concat(parts);
    const write = async () => {
      let o = 0;
      while (o < b.length) o += await this.conn.write(b.subarray(o));
    };
    const p = this.#writes.then(write);
    this.#writes = p.catch(() => {});
    return p;
  }

  /**
   * Starts reading (for a connection opened with `read: false`) and discards what arrives: lets a
   * node that stopped reading because we did not read go on.
   */
  drain(): void {
    this.#discard = true;
    this.#reading ??= this.#readLoop();
  }

  async #readLoop(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      let n: number | null;
      try {
        n = await this.conn.read(chunk);
      } catch {
        n = null;
      }
      if (n === null) break;
      if (this.#discard) continue;
      const merged = new Uint8Array(this.#buf.length + n);
      merged.set(this.#buf);
      merged.set(chunk.subarray(0, n), this.#buf.length);
      let pos = 0;
      while (merged.length - pos >= 9) {
        const len = (merged[pos]! << 16) | (merged[pos + 1]! << 8) | merged[pos + 2]!;
        if (merged.length - pos < 9 + len) break;
        const f: Frame = {
          type: merged[pos + 3]!,
          flags: merged[pos + 4]!,
          stream: new DataView(merged.buffer, pos + 5, 4).getUint32(0) & 0x7fffffff,
          payload: merged.slice(pos + 9, pos + 9 + len),
        };
        pos += 9 + len;
        if (f.type === SETTINGS && (f.flags & ACK) === 0) {
          this.send(frame(SETTINGS, ACK, 0)).catch(() => {});
        }
        this.frames.push(f);
      }
      this.#buf = merged.slice(pos);
      this.#wake?.();
    }
    this.closed = true;
    this.#wake?.();
  }

  /**
   * Waits for the first recorded frame matching `pred` (or for EOF, then `undefined`). Fails after
   * `ms` with the frames seen so far.
   */
  async waitFor(
    what: string,
    pred: (f: Frame) => boolean,
    ms = ANSWER_MS,
  ): Promise<Frame | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const f = this.frames.find(pred);
      if (f !== undefined) return f;
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${this.describe()}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
  }

  /** Waits for EOF from the node. */
  async waitClosed(ms = ANSWER_MS): Promise<void> {
    await this.waitFor("the connection to close", () => false, ms);
  }

  /** Expects GOAWAY with `code`, then the connection closed. */
  async expectGoaway(code: number): Promise<void> {
    const g = await this.waitFor("GOAWAY", (f) => f.type === GOAWAY);
    assert.ok(g !== undefined, `connection closed without GOAWAY; got ${this.describe()}`);
    const got = new DataView(g.payload.buffer).getUint32(4);
    assert.equal(
      ERROR_NAMES[got] ?? got,
      ERROR_NAMES[code],
      `GOAWAY code (${new TextDecoder().decode(g.payload.subarray(8))})`,
    );
    await this.waitClosed();
  }

  /** Expects RST_STREAM on `stream`; returns its error code. */
  async rstCode(stream: number): Promise<number> {
    const r = await this.waitFor(
      `RST_STREAM on ${stream}`,
      (f) => f.type === RST_STREAM && f.stream === stream,
    );
    assert.ok(r !== undefined, `closed without RST_STREAM on ${stream}; got ${this.describe()}`);
    return new DataView(r.payload.buffer).getUint32(0);
  }

  /** A PING round trip: proves the node still reads and answers on this connection. */
  async ping(): Promise<void> {
    const data = crypto.getRandomValues(new Uint8Array(8));
    await this.send(frame(PING, 0, 0, data));
    const ack = await this.waitFor(
      "PING ACK",
      (f) => f.type === PING && (f.flags & ACK) !== 0 && f.payload.every((b, i) => b === data[i]),
    );
    assert.ok(ack !== undefined, `closed instead of answering PING; got ${this.describe()}`);
  }

  /**
   * A whole unary Ping call on `stream`; returns the reply text, after checking the response
   * (headers, one message, trailers with grpc-status 0).
   */
  async grpcPing(stream: number, message: string): Promise<string> {
    await this.send(
      frame(HEADERS, END_HEADERS, stream, requestHeaders("/kvstore.KVStore/Ping")),
      frame(DATA, END_STREAM, stream, pingMessage(message)),
    );
    return await this.pingReply(stream);
  }

  /** Reads the response of a Ping call on `stream`: the reply text, grpc-status 0 required. */
  async pingReply(stream: number): Promise<string> {
    const trailers = await this.waitFor(
      `trailers on ${stream}`,
      (f) => f.type === HEADERS && f.stream === stream && (f.flags & END_STREAM) !== 0,
    );
    assert.ok(trailers !== undefined, `closed before the call on ${stream} ended`);
    const blocks = this.frames.filter((f) => f.type === HEADERS && f.stream === stream);
    const lists = blocks.map((f) => this.hpack.decode(f.payload));
    const status = lists.at(-1)!.find(([n]) => n === "grpc-status");
    assert.deepEqual(status, ["grpc-status", "0"], `trailers: ${JSON.stringify(lists)}`);
    const data = concat(
      this.frames.filter((f) => f.type === DATA && f.stream === stream).map((f) => f.payload),
    );
    // gRPC frame: flag, length, PingResponse{reply=1}.
    assert.equal(data[0], 0);
    assert.equal(data[5], 0x0a);
    return new TextDecoder().decode(data.subarray(7, 7 + data[6]!));
  }

  describe(): string {
    const fs = this.frames.map((f) => {
      if (f.type === GOAWAY) {
        const code = new DataView(f.payload.buffer).getUint32(4);
        return `GOAWAY(${ERROR_NAMES[code] ?? code})`;
      }
      if (f.type === RST_STREAM) {
        const code = new DataView(f.payload.buffer).getUint32(0);
        return `RST_STREAM(${f.stream}, ${ERROR_NAMES[code] ?? code})`;
      }
      return `type${f.type}/${f.flags}@${f.stream}`;
    });
    const shown = fs.length > 12 ? [...fs.slice(0, 6), "…", ...fs.slice(-6)] : fs;
    return `[${shown.join(" ")}]${this.closed ? " EOF" : ""}`;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    await this.#reading;
  }
}

/**
 * Resident memory of a process in KiB, from Linux /proc. Deno refuses /proc/<pid> without
 * --allow-all, so python3 (which `deno task test` may run) reads it.
 */
async function rssKiB(pid: number): Promise<number> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(open('/proc/%s/status' % sys.argv[1]).read())", String(pid)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const m = /VmRSS:\s+(\d+) kB/.exec(new TextDecoder().decode(out.stdout));
  assert.ok(out.success && m, `could not read the node's VmRSS (pid ${pid})`);
  return Number(m[1]);
}

/** The largest RSS growth over `before` seen while polling every 100 ms for `ms`. */
async function peakGrowth(pid: number, before: number, ms: number): Promise<number> {
  let peak = 0;
  for (const end = Date.now() + ms; Date.now() < end;) {
    peak = Math.max(peak, (await rssKiB(pid)) - before);
    await new Promise((r) => setTimeout(r, 100));
  }
  return peak;
}

Deno.test("a node's HTTP/2 port survives hostile input and keeps serving", async (t) => {
  const cluster = await TestCluster.start({ nodes: 1 });
  const conns: RawConn[] = [];
  const open = async (opts?: { raw?: boolean; read?: boolean }) => {
    const c = await RawConn.open(port, opts);
    conns.push(c);
    return c;
  };
  let port = 0;
  let kv: KVClient;
  let round = 0;
  /** The node is up and a grpc-js client gets correct answers. */
  const stillServes = async () => {
    assert.ok(cluster.node(1).running, "the node process exited");
    const key = `after-${round++}`;
    await kv.put(key, `v${round}`);
    assert.equal(await kv.getString(key), `v${round}`);
  };
  try {
    port = cluster.ports[0]!;
    await cluster.waitForLeader(10_000);
    kv = cluster.client();
    await stillServes();

    await t.step("a well-formed raw request is answered (the raw client works)", async () => {
      const c = await open();
      assert.equal(await c.grpcPing(1, "hello"), "hello");
      assert.equal(await c.grpcPing(3, "again"), "again");
      await c.ping();
      await c.close();
    });

    await t.step("garbage instead of the preface: GOAWAY PROTOCOL_ERROR, closed", async () => {
      const c = await open({ raw: true });
      // (A plain GET is answered over HTTP/1.1: /metrics and /health, tests/node_api_test.ts.)
      await c.send(new TextEncoder().encode("POST / HTTP/1.1\r\nHost: x\r\n\r\n"));
      await c.expectGoaway(PROTOCOL_ERROR);
      await c.close();
      await stillServes();
    });

    await t.step("a frame over SETTINGS_MAX_FRAME_SIZE: GOAWAY FRAME_SIZE_ERROR", async () => {
      const c = await open();
      await c.send(frame(HEADERS, END_HEADERS, 1, requestHeaders("/kvstore.KVStore/Ping")));
      await c.send(frame(DATA, 0, 1, new Uint8Array(16_385)));
      await c.expectGoaway(FRAME_SIZE_ERROR);
      await c.close();
      await stillServes();
    });

    await t.step("a header block that does not decode: GOAWAY COMPRESSION_ERROR", async () => {
      for (const bad of [[0x80], [0xff], [0x82, 0x84, 0x3f, 0xe1, 0x1f], [0x04, 0x85, 0xff]]) {
        const c = await open();
        await c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, new Uint8Array(bad)));
        await c.expectGoaway(COMPRESSION_ERROR);
        await c.close();
      }
      await stillServes();
    });

    await t.step("CONTINUATION without HEADERS: GOAWAY PROTOCOL_ERROR", async () => {
      const c = await open();
      await c.send(frame(CONTINUATION, END_HEADERS, 1, requestHeaders("/kvstore.KVStore/Ping")));
      await c.expectGoaway(PROTOCOL_ERROR);
      await c.close();
      // A frame of another type in the middle of a header block.
      const d = await open();
      await d.send(
        frame(HEADERS, 0, 1, requestHeaders("/kvstore.KVStore/Ping")),
        frame(DATA, 0, 1, pingMessage("x")),
      );
      await d.expectGoaway(PROTOCOL_ERROR);
      await d.close();
      await stillServes();
    });

    await t.step("frames on the wrong stream or of the wrong size: connection errors", async () => {
      const cases: Array<[string, Uint8Array[], number]> = [
        [
          "HEADERS on an even stream",
          [frame(HEADERS, END_HEADERS, 2, requestHeaders("/x"))],
          PROTOCOL_ERROR,
        ],
        ["PING on a stream", [frame(PING, 0, 1, new Uint8Array(8))], PROTOCOL_ERROR],
        ["PING of 7 bytes", [frame(PING, 0, 0, new Uint8Array(7))], FRAME_SIZE_ERROR],
        ["SETTINGS of 5 bytes", [frame(SETTINGS, 0, 0, new Uint8Array(5))], FRAME_SIZE_ERROR],
        ["SETTINGS on a stream", [frame(SETTINGS, 0, 1)], PROTOCOL_ERROR],
        [
          "PUSH_PROMISE from a client",
          [frame(0x5, END_HEADERS, 1, new Uint8Array(4))],
          PROTOCOL_ERROR,
        ],
        [
          "WINDOW_UPDATE of 0 on the connection",
          [frame(WINDOW_UPDATE, 0, 0, u32(0))],
          PROTOCOL_ERROR,
        ],
        ["RST_STREAM on stream 0", [frame(RST_STREAM, 0, 0, u32(8))], PROTOCOL_ERROR],
      ];
      for (const [what, frames, code] of cases) {
        const c = await open();
        await c.send(...frames);
        try {
          await c.expectGoaway(code);
        } catch (e) {
          throw new Error(`${what}: ${e instanceof Error ? e.message : e}`);
        }
        await c.close();
      }
      // The first frame after the preface must be SETTINGS.
      const c = await open({ raw: true });
      await c.send(PREFACE, frame(PING, 0, 0, new Uint8Array(8)));
      await c.expectGoaway(PROTOCOL_ERROR);
      await c.close();
      await stillServes();
    });

    await t.step("DATA on closed and idle streams", async () => {
      const c = await open();
      assert.equal(await c.grpcPing(1, "first"), "first");
      // Stream 1 is closed on both sides now. RFC 9113 §5.1 lets the node answer RST_STREAM or
      // GOAWAY STREAM_CLOSED, or ignore it (§5.1 "closed": frames may still be in flight).
      await c.send(frame(DATA, END_STREAM, 1, pingMessage("late")));
      await c.ping();
      const late = c.frames.find((f) =>
        (f.type === RST_STREAM && f.stream === 1) ||
        f.type === GOAWAY
      );
      if (late !== undefined) {
        const code = new DataView(late.payload.buffer).getUint32(late.type === GOAWAY ? 4 : 0);
        assert.equal(code, STREAM_CLOSED, c.describe());
      } else {
        assert.equal(await c.grpcPing(3, "second"), "second");
      }
      await c.close();
      // DATA on a stream the client never opened: a connection error (§5.1 "idle").
      const d = await open();
      await d.send(frame(DATA, 0, 7, pingMessage("idle")));
      await d.expectGoaway(PROTOCOL_ERROR);
      await d.close();
      await stillServes();
    });

    await t.step("WINDOW_UPDATE overflowing a window: FLOW_CONTROL_ERROR", async () => {
      // Connection window: 65,535 + 2^31 - 1 > 2^31 - 1 → GOAWAY.
      const c = await open();
      await c.send(frame(WINDOW_UPDATE, 0, 0, u32(0x7fffffff)));
      await c.expectGoaway(FLOW_CONTROL_ERROR);
      await c.close();
      // Stream window (stream open, request not finished) → RST_STREAM; the connection lives.
      const d = await open();
      await d.send(
        frame(HEADERS, END_HEADERS, 1, requestHeaders("/kvstore.KVStore/Ping")),
        frame(WINDOW_UPDATE, 0, 1, u32(0x7fffffff)),
      );
      assert.equal(ERROR_NAMES[await d.rstCode(1)], "FLOW_CONTROL_ERROR");
      assert.equal(await d.grpcPing(3, "still"), "still");
      await d.close();
      await stillServes();
    });

    await t.step(
      "5,000 streams opened at once: the excess is refused, the rest served",
      async () => {
        const c = await open();
        const n = 5_000;
        const block = requestHeaders("/kvstore.KVStore/Ping");
        const frames: Uint8Array[] = [];
        for (let i = 0; i < n; i++) frames.push(frame(HEADERS, END_HEADERS, 1 + 2 * i, block));
        await c.send(...frames);
        const last = 1 + 2 * (n - 1);
        await c.waitFor(
          "the last stream's answer",
          (f) => f.type === RST_STREAM && f.stream === last,
          10_000,
        );
        const refused = c.frames.filter((f) =>
          f.type === RST_STREAM && new DataView(f.payload.buffer).getUint32(0) === REFUSED_STREAM
        );
        // The node announced SETTINGS_MAX_CONCURRENT_STREAMS; everything above it is refused.
        const settings = c.frames.find((f) => f.type === SETTINGS && (f.flags & ACK) === 0)!;
        let maxStreams = Infinity;
        for (let p = 0; p < settings.payload.length; p += 6) {
          const v = new DataView(settings.payload.buffer, p, 6);
          if (v.getUint16(0) === 3) maxStreams = v.getUint32(2);
        }
        assert.ok(maxStreams < n, `max concurrent streams ${maxStreams}`);
        assert.equal(refused.length, n - maxStreams, c.describe());
        assert.ok(!c.closed);
        // The accepted streams still work: finish the first one.
        await c.send(frame(DATA, END_STREAM, 1, pingMessage("one of many")));
        assert.equal(await c.pingReply(1), "one of many");
        await c.close();
        await stillServes();
      },
    );

    await t.step(
      "a header list over the limit: that stream reset, HPACK kept in sync",
      async () => {
        const c = await open();
        // ~80 KiB of headers (limit 64 KiB), over HEADERS + CONTINUATION frames; the block also
        // adds "x-sync: 1" to the dynamic table, which the next request uses by index (62).
        const big = concat([
          requestHeaders("/kvstore.KVStore/Ping", [
            ["x-a", "a".repeat(16_000)],
            ["x-b", "b".repeat(16_000)],
            ["x-c", "c".repeat(16_000)],
            ["x-d", "d".repeat(16_000)],
            ["x-e", "e".repeat(16_000)],
          ]),
          new Uint8Array([0x40, 6, ...new TextEncoder().encode("x-sync"), 1, 0x31]),
        ]);
        const parts: Uint8Array[] = [];
        for (let o = 0; o < big.length; o += 16_384) {
          const frag = big.subarray(o, Math.min(big.length, o + 16_384));
          const last = o + 16_384 >= big.length;
          parts.push(
            frame(o === 0 ? HEADERS : CONTINUATION, last ? END_HEADERS | END_STREAM : 0, 1, frag),
          );
        }
        await c.send(...parts);
        const r = await c.waitFor(
          "an answer to the oversized request",
          (f) => f.stream === 1 && (f.type === RST_STREAM || f.type === HEADERS),
        );
        assert.ok(r !== undefined, `connection closed: ${c.describe()}`);
        if (r.type === HEADERS) {
          assert.deepEqual(c.hpack.decode(r.payload)[0], [":status", "431"]);
        } else {
          const code = new DataView(r.payload.buffer).getUint32(0);
          assert.ok(
            [ENHANCE_YOUR_CALM, REFUSED_STREAM, PROTOCOL_ERROR].includes(code),
            `RST_STREAM code ${ERROR_NAMES[code] ?? code}`,
          );
        }
        // Next request refers to dynamic entry 62 ("x-sync: 1"): decodes only if the node's table
        // took the entry from the rejected block.
        await c.send(
          frame(
            HEADERS,
            END_HEADERS,
            3,
            concat([requestHeaders("/kvstore.KVStore/Ping"), new Uint8Array([0xbe])]),
          ),
          frame(DATA, END_STREAM, 3, pingMessage("in sync")),
        );
        assert.equal(await c.pingReply(3), "in sync");
        await c.close();
        await stillServes();
      },
    );

    await t.step("rapid reset: 20,000 streams opened and reset", async () => {
      const c = await open();
      const block = requestHeaders("/kvstore.KVStore/Ping");
      const batch: Uint8Array[] = [];
      for (let i = 0; i < 20_000; i++) {
        const sid = 1 + 2 * i;
        batch.push(frame(HEADERS, END_HEADERS, sid, block), frame(RST_STREAM, 0, sid, u32(8)));
      }
      await c.send(...batch);
      await c.ping();
      assert.equal(await c.grpcPing(40_001, "after resets"), "after resets");
      await c.close();
      await stillServes();
    });

    await t.step({
      name: "CONTINUATION floods (empty and 1-byte frames) do not pile up in memory",
      fn: async () => {
        // CVE-2024-27316 style: a header block that never ends, in as many frames as possible.
        // Empty frames add no bytes to the block; 1-byte frames stay under any block-size cap for
        // a long time. Either way the node may cut the connection, but must not keep an object
        // per frame.
        const pid = cluster.node(1).pid!;
        for (
          const [what, payload, count] of [
            ["empty", new Uint8Array(0), 300_000],
            ["1-byte", new Uint8Array([0x82]), 200_000],
          ] as const
        ) {
          const before = await rssKiB(pid);
          const c = await open();
          await c.ping(); // the node's SETTINGS arrived and were acknowledged before the block
          await c.send(frame(HEADERS, 0, 1, requestHeaders("/kvstore.KVStore/Ping")));
          const one = frame(CONTINUATION, 0, 1, payload);
          const chunk = concat(Array.from({ length: 50_000 }, () => one));
          let sent = 0;
          try {
            for (; sent < count && !c.closed; sent += 50_000) await c.send(chunk);
          } catch {
            // the node closed the connection: fine
          }
          const grew = await peakGrowth(pid, before, 2_000);
          const seen = c.describe();
          await c.close();
          assert.ok(
            grew < 32 * 1024,
            `node RSS grew by ${(grew / 1024).toFixed(0)} MiB after ${sent} ${what} ` +
              `CONTINUATION frames (${seen})`,
          );
        }
        await stillServes();
      },
    });

    await t.step({
      name: "a client that never reads: the node's memory stays bounded",
      fn: async () => {
        // A PING flood (CVE-2019-9512 style): every frame asks for an answer the client never
        // reads. The node must stop reading (TCP backpressure) or drop the connection, not queue
        // answers without bound.
        const pid = cluster.node(1).pid!;
        const before = await rssKiB(pid);
        const c = await open({ read: false });
        const ping = frame(PING, 0, 0, new Uint8Array(8));
        const chunk = concat(Array.from({ length: 60_000 }, () => ping)); // ~1 MiB
        const total = 64; // chunks: ~64 MiB of PINGs
        let sent = 0;
        let stop = false;
        let refused = false;
        const writer = (async () => {
          try {
            for (; sent < total && !stop; sent++) await c.send(chunk);
          } catch {
            refused = true; // the node closed the connection
          }
        })();
        let writerDone = false;
        writer.then(() => writerDone = true);
        // Either every chunk goes out (the node kept reading), the writes stall (the node stopped
        // reading: no progress for 3 s), or the node closes the connection.
        let stalled = false;
        for (let last = -1, since = Date.now(); !writerDone;) {
          if (sent !== last) [last, since] = [sent, Date.now()];
          else if (Date.now() - since > 3_000) {
            stalled = true;
            break;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        // The node may still be working through what it read: watch its memory for 2 s more.
        const grew = await peakGrowth(pid, before, 2_000);
        // Read at last: a node that stopped reading resumes, and the pending write completes.
        stop = true;
        c.drain();
        await writer;
        await c.close();
        assert.ok(
          grew < 32 * 1024,
          `node RSS grew by ${
            (grew / 1024).toFixed(0)
          } MiB after ${sent} MiB of unanswered PINGs ` +
            `(stalled=${stalled}, closed by node=${refused})`,
        );
        await stillServes();
      },
    });
  } catch (e) {
    console.error(cluster.dumpLogs(40));
    throw e;
  } finally {
    for (const c of conns) await c.close();
    await cluster.stop();
  }
});
