/**
 * Guards the Deno node:http2 regression of DESIGN.md §1 (denoland/deno#36788): on Deno
 * 2.9.4–2.9.6 a grpc-js server aborts inside nghttp2 when a client that made a few hundred calls
 * closes its connection. The server runs in a child process so that the abort is observed as a
 * dead server, not a dead test runner.
 */
import { equal, ok } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const protoPath = new URL("../protos/kvstore.proto", import.meta.url).pathname;
const definition = protoLoader.loadSync(protoPath, { longs: Number, defaults: true });
// deno-lint-ignore no-explicit-any
const pkg = grpc.loadPackageDefinition(definition) as any;

type PingClient = grpc.Client & {
  Ping(
    req: { message: string },
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { reply: string }) => void,
  ): void;
};

function ping(client: PingClient, message: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    client.Ping({ message }, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res!.reply);
    });
  });
}

async function readPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited before listening; stdout: ${text}`);
    text += value;
    const m = /listening (\d+)/.exec(text);
    if (m) {
      reader.releaseLock();
      return Number(m[1]);
    }
  }
}

Deno.test("grpc server survives a client that made 1,000 calls and closed", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-env",
      new URL("./fixtures/ping_server.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { RUST_BACKTRACE: "0" },
  }).spawn();
  const stderrText = new Response(child.stderr).text();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  try {
    const port = await readPort(child.stdout);
    const address = `127.0.0.1:${port}`;
    const first = new pkg.kvstore.KVStore(address, grpc.credentials.createInsecure()) as PingClient;
    let next = 0;
    let answered = 0;
    const worker = async () => {
      while (next < 1000) {
        const i = next++;
        equal(await ping(first, String(i)), `pong ${i}`);
        answered++;
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    equal(answered, 1000);
    first.close();

    // The crash happens shortly after the close; a fresh client must still be answered, and
    // keep being answered for a while after the first connection is gone.
    const second = new pkg.kvstore.KVStore(
      address,
      grpc.credentials.createInsecure(),
    ) as PingClient;
    try {
      for (let i = 0; i < 50; i++) {
        equal(await ping(second, `again ${i}`), `pong again ${i}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      second.close();
    }
    if (exited) ok(false, `server process died: ${await stderrText}`);
  } finally {
    if (!exited) child.kill("SIGKILL");
    await status;
    await stderrText.catch(() => "");
  }
});
