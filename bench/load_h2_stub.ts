/**
 * A measuring device, not a server to build on: the same in-memory `kvstore.KVStore` Put/Get stub
 * as load_stub_server.ts, but speaking HTTP/2 (h2c, prior knowledge) directly on `Deno.listen`
 * instead of through grpc-js and Deno's `node:http2`, with every frame produced while handling one
 * read coalesced into ONE socket write. `deno task bench cluster --systems stub,h2stub` compares
 * the two and shows what the gRPC server stack costs per call on this machine (bench/PROFILE.md).
 *
 * Deliberately minimal: it never decodes HPACK (request headers are skipped; Put and Get are told
 * apart by the request message: only a PutRequest has a length-delimited field 2), ignores
 * priorities, RST_STREAM and GOAWAY, and answers every request with status OK. The response header
 * block is constant: `:status: 200` (static index 8) and `content-type: application/grpc` as a
 * literal without indexing; the trailers carry `grpc-status: 0`.
 *
 * Run as `deno run --allow-net=127.0.0.1 bench/load_h2_stub.ts PORT`; prints `listening PORT`.
 *
 * @module
 */
import { type BenchCluster, ChildProcess, freePorts, waitFor } from "./load_cluster.ts";

const PREFACE_BYTES = 24;
const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_SETTINGS = 4;
const FRAME_PING = 6;
const FRAME_WINDOW_UPDATE = 8;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
/** SETTINGS_INITIAL_WINDOW_SIZE announced to the client, and the first connection window grant. */
const WINDOW = 16 * 1024 * 1024;

const encoder = new TextEncoder();
const RESPONSE_HEADERS = Uint8Array.of(0x88, 0x0f, 0x10, 16, ...encoder.encode("application/grpc"));
const TRAILERS = Uint8Array.of(0x00, 11, ...encoder.encode("grpc-status"), 1, 0x30);

/** One HTTP/2 frame: 9-byte header and payload. */
export function h2Frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array,
): Uint8Array {
  const f = new Uint8Array(9 + payload.length);
  const dv = new DataView(f.buffer);
  dv.setUint32(0, payload.length << 8);
  f[3] = type;
  f[4] = flags;
  dv.setUint32(5, stream & 0x7fff_ffff);
  f.set(payload, 9);
  return f;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function readVarint(b: Uint8Array, pos: number): [number, number] {
  let x = 0;
  for (let shift = 0;; shift += 7) {
    const c = b[pos++];
    if (c === undefined) throw new RangeError("truncated varint");
    x += (c & 0x7f) * 2 ** shift;
    if (c < 0x80) return [x, pos];
  }
}

function writeVarint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** Answers one PutRequest or GetRequest message with the response message bytes. */
export function handleKv(store: Map<string, Uint8Array>, msg: Uint8Array): Uint8Array {
  let key: Uint8Array = new Uint8Array(0);
  let value: Uint8Array | undefined;
  let pos = 0;
  while (pos < msg.length) {
    const [tag, p1] = readVarint(msg, pos);
    const field = tag >>> 3, wire = tag & 7;
    if (wire === 2) {
      const [len, p2] = readVarint(msg, p1);
      pos = p2 + len;
      if (field === 1) key = msg.subarray(p2, pos);
      else if (field === 2) value = msg.slice(p2, pos);
    } else if (wire === 0) {
      pos = readVarint(msg, p1)[1];
    } else {
      break;
    }
  }
  let k = "";
  for (let i = 0; i < key.length; i++) k += String.fromCharCode(key[i]!);
  if (value !== undefined) {
    store.set(k, value);
    return Uint8Array.of(0x08, 0x01); // PutResponse{success: true}
  }
  const v = store.get(k);
  if (v === undefined) return new Uint8Array(0); // GetResponse{found: false}
  const out: number[] = [0x0a];
  writeVarint(out, v.length);
  const head = Uint8Array.from(out);
  const res = new Uint8Array(head.length + v.length + 2);
  res.set(head);
  res.set(v, head.length);
  res.set([0x10, 0x01], head.length + v.length); // found: true
  return res;
}

/** Serves one connection until it closes. */
async function serveConn(conn: Deno.TcpConn, store: Map<string, Uint8Array>): Promise<void> {
  conn.setNoDelay(true);
  const bodies = new Map<number, Uint8Array[]>();
  let out: Uint8Array[] = [];
  let writing = Promise.resolve();
  let consumed = 0;
  const flush = () => {
    if (out.length === 0) return;
    let size = 0;
    for (const c of out) size += c.length;
    const all = new Uint8Array(size);
    let o = 0;
    for (const c of out) {
      all.set(c, o);
      o += c.length;
    }
    out = [];
    writing = writing.then(async () => {
      for (let w = 0; w < all.length;) w += await conn.write(all.subarray(w));
    });
  };
  // Our preface: SETTINGS (INITIAL_WINDOW_SIZE = 16 MiB) and a connection window grant.
  out.push(
    h2Frame(FRAME_SETTINGS, 0, 0, Uint8Array.of(0x00, 0x04, ...u32(WINDOW))),
    h2Frame(FRAME_WINDOW_UPDATE, 0, 0, u32(WINDOW)),
  );
  flush();
  const chunk = new Uint8Array(256 * 1024);
  let buf = new Uint8Array(0);
  let prefaceSeen = false;
  try {
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) break;
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      buf = joined;
      let pos = 0;
      if (!prefaceSeen) {
        if (buf.length < PREFACE_BYTES) continue;
        pos = PREFACE_BYTES;
        prefaceSeen = true;
      }
      while (buf.length - pos >= 9) {
        const len = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
        if (buf.length - pos < 9 + len) break;
        const type = buf[pos + 3]!, flags = buf[pos + 4]!;
        const sid = new DataView(buf.buffer, buf.byteOffset + pos + 5, 4).getUint32(0) &
          0x7fff_ffff;
        let payload = buf.subarray(pos + 9, pos + 9 + len);
        pos += 9 + len;
        if (type === FRAME_SETTINGS) {
          if (!(flags & FLAG_ACK)) {
            out.push(h2Frame(FRAME_SETTINGS, FLAG_ACK, 0, new Uint8Array(0)));
          }
        } else if (type === FRAME_PING) {
          if (!(flags & FLAG_ACK)) out.push(h2Frame(FRAME_PING, FLAG_ACK, 0, payload.slice()));
        } else if (type === FRAME_HEADERS) {
          bodies.set(sid, []);
        } else if (type === FRAME_DATA) {
          consumed += len;
          if (flags & FLAG_PADDED) payload = payload.subarray(1, payload.length - payload[0]!);
          const parts = bodies.get(sid) ?? [];
          parts.push(payload.slice());
          bodies.set(sid, parts);
          if (flags & FLAG_END_STREAM) {
            bodies.delete(sid);
            let size = 0;
            for (const p of parts) size += p.length;
            const body = new Uint8Array(size);
            let o = 0;
            for (const p of parts) {
              body.set(p, o);
              o += p.length;
            }
            const res = handleKv(store, body.subarray(5)); // skip the gRPC length prefix
            const data = new Uint8Array(5 + res.length);
            new DataView(data.buffer).setUint32(1, res.length);
            data.set(res, 5);
            out.push(
              h2Frame(FRAME_HEADERS, FLAG_END_HEADERS, sid, RESPONSE_HEADERS),
              h2Frame(FRAME_DATA, 0, sid, data),
              h2Frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid, TRAILERS),
            );
          }
        }
      }
      buf = buf.subarray(pos);
      if (consumed > 1024 * 1024) {
        out.push(h2Frame(FRAME_WINDOW_UPDATE, 0, 0, u32(consumed)));
        consumed = 0;
      }
      flush(); // everything this read produced: one write
    }
    await writing;
  } catch {
    // the peer went away
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** The h2 stub process, as a {@linkcode BenchCluster}. */
export class H2StubCluster implements BenchCluster {
  readonly processes: ChildProcess[];
  readonly leader: string;
  readonly #dir: string;

  private constructor(dir: string, p: ChildProcess, endpoint: string) {
    this.#dir = dir;
    this.processes = [p];
    this.leader = endpoint;
  }

  /** Spawns the stub and waits until it listens. */
  static async start(): Promise<H2StubCluster> {
    const dir = await Deno.makeTempDir({ prefix: "concordkv-bench-h2stub-" });
    const [port] = freePorts(1);
    const p = await ChildProcess.spawn("h2stub", {
      cmd: Deno.execPath(),
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        `--allow-net=127.0.0.1:${port}`,
        new URL("./load_h2_stub.ts", import.meta.url).pathname,
        String(port),
      ],
    }, `${dir}/h2stub.log`);
    const c = new H2StubCluster(dir, p, `127.0.0.1:${port}`);
    try {
      await waitFor("the h2 stub server", async () => {
        if (p.exited) throw new Error(`h2 stub exited: ${await p.tail(5)}`);
        return (await p.tail(1)).includes("listening");
      });
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  get endpoints(): string[] {
    return [this.leader];
  }

  get leaderProcess(): ChildProcess {
    return this.processes[0]!;
  }

  refreshLeader(): Promise<void> {
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    await this.processes[0]!.stop();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const port = Number(Deno.args[0]);
  const store = new Map<string, Uint8Array>();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  console.log(`listening ${port}`);
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  Deno.addSignalListener("SIGINT", () => Deno.exit(0));
  for await (const conn of listener) void serveConn(conn, store);
}
