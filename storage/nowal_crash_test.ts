/**
 * Crash test of the engine without a WAL (`wal: false`, as Raft nodes run it): a child process
 * writes tagged batches across many memtable switches, flushes now and then, and is SIGKILLed at
 * a random moment (from during open and recovery to thousands of batches in); the parent reopens
 * the directory and checks that the engine holds exactly batches 1..k, with k at least the last
 * batch a completed flush() covered, across rounds on the same directory.
 */
import assert from "node:assert/strict";
import { KVEngine } from "./mod.ts";
import { Rng, runWriterUntilKilled, withTempDir } from "./test_util.ts";
import { taggedPrefix } from "./testdata/tagged_batches.ts";

const ROUNDS = Number(Deno.env.get("CRASH_ROUNDS") ?? 16);
const WRITER = new URL("./testdata/nowal_writer.ts", import.meta.url).pathname;
const INFLIGHT = 8;

Deno.test(`crash test without a WAL: a SIGKILL leaves a prefix of the batches, all flushed ones kept (${ROUNDS} rounds)`, async () => {
  await withTempDir(async (dir) => {
    const rng = new Rng(Number(Deno.env.get("CRASH_SEED") ?? 20261129));
    let durable = 0; // batches known durable: a completed flush() or found by a reopen
    let lostUnflushed = 0; // rounds where acknowledged but unflushed batches were gone
    let flushes = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const killAfter = rng.int(5) === 0 ? rng.int(3) : rng.int(3000);
      let maxAck = 0;
      await runWriterUntilKilled(WRITER, dir, [String(rng.int(1e9))], killAfter, (what, arg) => {
        const i = Number(arg);
        if (what === "open") {
          assert.ok(i >= durable, `round ${round}: the writer found ${i} < ${durable} batches`);
          durable = i;
          maxAck = i;
        } else if (what === "ack") {
          maxAck = Math.max(maxAck, i);
          return true;
        } else if (what === "flushed") {
          durable = Math.max(durable, i);
          flushes++;
        }
        return false;
      });
      const db = await KVEngine.open(dir, { wal: false, log: () => {} });
      try {
        const k = await taggedPrefix(db); // throws on anything but batches 1..k
        assert.ok(k >= durable, `round ${round}: ${k} batches survived, ${durable} were flushed`);
        assert.ok(k <= maxAck + INFLIGHT, `round ${round}: ${k} batches, only ${maxAck} acked`);
        if (k < maxAck) lostUnflushed++;
        durable = k;
      } finally {
        await db.close(); // flushes nothing new: the reopened engine wrote nothing
      }
    }
    assert.ok(flushes > ROUNDS, `only ${flushes} flushes completed in all`);
    assert.ok(lostUnflushed > 0, "no round lost an unflushed batch: is the WAL really off?");
  });
});
