/**
 * Crash test: a child process writes with `sync: "always"` and reports every acknowledged
 * write; the parent SIGKILLs it at a random moment (after a random number of acks, from zero —
 * killing it during open and recovery — to hundreds), reopens the directory and checks every
 * acknowledged write, across rounds on the same directory.
 */
import assert from "node:assert/strict";
import { KVEngine } from "./mod.ts";
import { Rng, withTempDir } from "./test_util.ts";

const ROUNDS = Number(Deno.env.get("CRASH_ROUNDS") ?? 24);
const WRITER = new URL("./testdata/crash_writer.ts", import.meta.url).pathname;
// Read access to storage/ lets the writer run compactions on its worker thread.
const STORAGE_DIR = new URL(".", import.meta.url).pathname;

Deno.test(`crash test: every acknowledged write survives SIGKILL (${ROUNDS} rounds)`, async () => {
  await withTempDir(async (dir) => {
    const rng = new Rng(Number(Deno.env.get("CRASH_SEED") ?? 20261129));
    const present = new Set<string>(); // acknowledged puts not deleted since
    const absent = new Set<string>(); // acknowledged deletes
    const unsure = new Set<string>(); // deletes in flight when killed
    const dec = new TextDecoder();
    let totalAcks = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const killAfter = rng.int(5) === 0 ? rng.int(3) : rng.int(600);
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          `--allow-read=${dir},${STORAGE_DIR}`,
          `--allow-write=${dir}`,
          WRITER,
          dir,
          String(rng.int(1e9)),
          String(round),
        ],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
        env: { RUST_BACKTRACE: "0" },
      }).spawn();
      const stderr = new Response(child.stderr).text();
      let acks = 0;
      let killed = false;
      const kill = () => {
        if (!killed) {
          killed = true;
          try {
            child.kill("SIGKILL");
          } catch {
            // already exited
          }
        }
      };
      try {
        if (killAfter === 0) kill();
        let buf = "";
        for await (const chunk of child.stdout) {
          buf += dec.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            const [op, key] = line.split(" ");
            if (op === "put") {
              present.add(key!);
              acks++;
            } else if (op === "del?") {
              present.delete(key!);
              unsure.add(key!);
            } else if (op === "del") {
              unsure.delete(key!);
              absent.add(key!);
              acks++;
            }
            if (acks >= killAfter) kill();
          }
        }
      } finally {
        kill();
        const status = await child.status;
        const err = await stderr;
        assert.equal(status.signal, "SIGKILL", `writer died on its own: ${err}`);
      }
      totalAcks += acks;
      // Reopen and check every acknowledged write so far.
      const db = await KVEngine.open(dir, { log: () => {} });
      try {
        const enc = new TextEncoder();
        for (const k of present) {
          const v = await db.get(enc.encode(k));
          assert.ok(v !== undefined, `round ${round}: acknowledged key ${k} lost`);
          const text = dec.decode(v);
          assert.ok(
            `value-of-${k}`.repeat(8).startsWith(text) && text.length > 0,
            `round ${round}: bad value for ${k}`,
          );
        }
        for (const k of absent) {
          assert.equal(
            await db.get(enc.encode(k)),
            undefined,
            `round ${round}: deleted ${k} is back`,
          );
        }
      } finally {
        await db.close();
      }
    }
    assert.ok(totalAcks > ROUNDS * 50, `only ${totalAcks} writes acknowledged in all`);
  });
});
