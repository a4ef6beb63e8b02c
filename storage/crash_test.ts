/**
 * Crash test: a child process writes with `sync: "always"` and reports every acknowledged
 * write; the parent SIGKILLs it at a random moment (after a random number of acks, from zero —
 * killing it during open and recovery — to hundreds), reopens the directory and checks every
 * acknowledged write, across rounds on the same directory.
 */
import assert from "node:assert/strict";
import { KVEngine } from "./mod.ts";
import { Rng, runWriterUntilKilled, withTempDir } from "./test_util.ts";

const ROUNDS = Number(Deno.env.get("CRASH_ROUNDS") ?? 24);
const WRITER = new URL("./testdata/crash_writer.ts", import.meta.url).pathname;

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
      let acks = 0;
      await runWriterUntilKilled(
        WRITER,
        dir,
        [String(rng.int(1e9)), String(round)],
        killAfter,
        (op, key) => {
          if (op === "put") {
            present.add(key);
            acks++;
            return true;
          } else if (op === "del?") {
            present.delete(key);
            unsure.add(key);
          } else if (op === "del") {
            unsure.delete(key);
            absent.add(key);
            acks++;
            return true;
          }
          return false;
        },
      );
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
