/**
 * Child process of `nowal_crash_test.ts`: opens the engine in `Deno.args[0]` with `wal: false`
 * and a small memtable, continues the tagged batches (testdata/tagged_batches.ts) after the last
 * one it finds, with up to 8 writes in flight and a flush() every few dozen batches, until
 * killed.
 *
 * Lines: `open <k>` (batches 1..k found), `ack <i>` when the write of batch i resolved,
 * `flushed <i>` when a flush() issued after batch i was issued resolved.
 *
 * @module
 */
import { KVEngine } from "../mod.ts";
import { taggedBatch, taggedPrefix } from "./tagged_batches.ts";

const [dir, seedArg] = Deno.args;
if (dir === undefined) throw new Error("usage: nowal_writer.ts DIR SEED");
let seed = Number(seedArg ?? 1) >>> 0;
const rand = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
};
const enc = new TextEncoder();
const out = (line: string) => Deno.stdout.writeSync(enc.encode(line + "\n"));

const db = await KVEngine.open(dir, {
  wal: false,
  memtableBytes: 16 * 1024,
  tableBytes: 16 * 1024,
  level1Bytes: 64 * 1024,
  workerMinBytes: 0, // exercise the compaction worker too
  log: () => {},
});
const start = await taggedPrefix(db);
out(`open ${start}`);

const inflight = new Set<Promise<void>>();
let nextFlush = start + 1 + rand(80);
for (let i = start + 1;; i++) {
  const w = db.write(taggedBatch(i)).then(() => {
    out(`ack ${i}`);
    inflight.delete(w);
  });
  inflight.add(w);
  if (i >= nextFlush) {
    nextFlush = i + 1 + rand(80);
    db.flush().then(() => out(`flushed ${i}`));
  }
  if (inflight.size >= 8) await Promise.race(inflight);
}
