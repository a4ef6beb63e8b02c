/**
 * Child process of `worker_permission_test.ts`: opens an engine in `Deno.args[0]` (run with a
 * node's permissions), writes until a background compaction has run and prints one JSON line
 * `{ usesWorker, workerCompactions }`.
 *
 * @module
 */
import { KVEngine } from "../mod.ts";

const dir = Deno.args[0]!;
const notes: string[] = [];
const db = await KVEngine.open(dir, {
  sync: "none",
  memtableBytes: 32 * 1024,
  workerMinBytes: 1,
  log: (m) => notes.push(m),
});
const value = new Uint8Array(100).fill(7);
const enc = new TextEncoder();
for (let round = 0; round < 40 && db.stats().workerCompactions === 0; round++) {
  const batch = [];
  for (let i = 0; i < 400; i++) {
    batch.push({ type: "put" as const, key: enc.encode(`k${(i * 7919 + round) % 5000}`), value });
  }
  await db.write(batch);
  // Let background flushes and compactions run.
  await new Promise((r) => setTimeout(r, 5));
}
const stats = db.stats();
await db.close();
console.log(JSON.stringify({
  usesWorker: db.usesCompactionWorker,
  workerCompactions: stats.workerCompactions,
  notes,
}));
