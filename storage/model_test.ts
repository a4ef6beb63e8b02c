/**
 * Seeded model test: random operations against the engine and a `Map`, with a tiny memtable
 * (forcing flushes and compactions), clean reopens and simulated power cuts at random points.
 * A failure prints its seed; rerun with `MODEL_SEED=<seed>` to replay it.
 */
import assert from "node:assert/strict";
import { compareBytes, hasPrefix } from "./coding.ts";
import { MemFs } from "./fs.ts";
import { type BatchOp, KVEngine, type KVEngineOptions, type Snapshot } from "./mod.ts";
import { collect, Rng, withTempDir } from "./test_util.ts";

const _hex = (k: Uint8Array) => Array.from(k, (x) => x.toString(16).padStart(2, "0")).join("");

function modelScan(
  model: Map<string, { key: Uint8Array; value: Uint8Array }>,
  o: { prefix?: Uint8Array; start?: Uint8Array; end?: Uint8Array; limit?: number },
) {
  let out = [...model.values()]
    .filter((kv) =>
      (o.prefix === undefined || hasPrefix(kv.key, o.prefix)) &&
      (o.start === undefined || compareBytes(kv.key, o.start) >= 0) &&
      (o.end === undefined || compareBytes(kv.key, o.end) < 0)
    )
    .sort((a, b) => compareBytes(a.key, b.key));
  if (o.limit !== undefined) out = out.slice(0, Math.max(0, o.limit));
  return out;
}

async function runModel(seed: number, ops: number, realDir?: string): Promise<void> {
  const rng = new Rng(seed);
  let fs = new MemFs();
  const dbDir = realDir ?? "/db";
  // On the real file system (realDir), compactions run on the worker thread and a "crash" is a
  // clean reopen.
  const opts = (): KVEngineOptions => ({
    ...(realDir === undefined ? { fs } : { compactionWorker: true, workerMinBytes: 0 }),
    log: () => {},
    sync: realDir === undefined ? "always" : "none",
    memtableBytes: 1024 + rng.int(4096),
    tableBytes: 2048 + rng.int(4096),
    level1Bytes: 8192,
    l0CompactionTrigger: 2 + rng.int(3),
    blockCacheBytes: rng.int(3) === 0 ? 0 : 64 * 1024,
  });
  let db = await KVEngine.open(dbDir, opts());
  const model = new Map<string, { key: Uint8Array; value: Uint8Array }>();
  const snaps: Array<
    { snap: Snapshot; model: Map<string, { key: Uint8Array; value: Uint8Array }> }
  > = [];
  // Small alphabet so keys collide, prefixes share, and ranges are meaningful.
  const key = () => {
    const len = 1 + rng.int(4);
    const k = new Uint8Array(len);
    for (let i = 0; i < len; i++) k[i] = 97 + rng.int(6);
    return k;
  };
  const value = () => rng.bytes(rng.int(4) === 0 ? rng.int(600) : rng.int(20));
  const apply = (op: BatchOp) => {
    if (op.type === "put") model.set(_hex(op.key), { key: op.key, value: op.value! });
    else model.delete(_hex(op.key));
  };
  const where = (i: number) => `seed ${seed}, op ${i}`;
  for (let i = 0; i < ops; i++) {
    const r = rng.int(100);
    if (r < 30) {
      const op: BatchOp = { type: "put", key: key(), value: value() };
      await db.put(op.key, op.value!);
      apply(op);
    } else if (r < 40) {
      const k = key();
      await db.delete(k);
      apply({ type: "delete", key: k });
    } else if (r < 50) {
      const batch: BatchOp[] = [];
      for (let j = rng.int(20); j >= 0; j--) {
        batch.push(
          rng.int(3) === 0
            ? { type: "delete", key: key() }
            : { type: "put", key: key(), value: value() },
        );
      }
      await db.write(batch);
      for (const op of batch) apply(op);
    } else if (r < 53) {
      // Concurrent writers: one group commit, applied in call order.
      const batches: BatchOp[][] = [];
      for (let j = 0; j < 5; j++) batches.push([{ type: "put", key: key(), value: value() }]);
      await Promise.all(batches.map((bt) => db.write(bt)));
      for (const bt of batches) for (const op of bt) apply(op);
    } else if (r < 78) {
      const k = key();
      const got = await db.get(k);
      assert.deepEqual(got, model.get(_hex(k))?.value, `${where(i)}: get ${_hex(k)}`);
    } else if (r < 86) {
      const o: { prefix?: Uint8Array; start?: Uint8Array; end?: Uint8Array; limit?: number } = {};
      if (rng.int(2) === 0) o.prefix = key().subarray(0, 1 + rng.int(2));
      if (rng.int(3) === 0) o.start = key();
      if (rng.int(3) === 0) o.end = key();
      if (rng.int(3) === 0) o.limit = rng.int(10);
      const got = await collect(db.scan(o));
      assert.deepEqual(got, modelScan(model, o), `${where(i)}: scan ${JSON.stringify(o)}`);
    } else if (r < 89) {
      if (snaps.length < 3) snaps.push({ snap: db.snapshot(), model: new Map(model) });
      else {
        const { snap, model: m } = snaps.splice(rng.int(snaps.length), 1)[0]!;
        assert.deepEqual(
          await collect(snap.scan()),
          modelScan(m, {}),
          `${where(i)}: snapshot scan`,
        );
        const k = key();
        assert.deepEqual(await snap.get(k), m.get(_hex(k))?.value, `${where(i)}: snapshot get`);
        snap.release();
      }
    } else if (r < 90) {
      await db.compact();
    } else if (r < 92 || r >= 97) {
      // keep going: most ops are reads and writes
    } else {
      for (const { snap } of snaps.splice(0)) snap.release();
      if (r < 95 || realDir !== undefined) {
        await db.close();
      } else {
        // Power cut: only synced state survives; every acknowledged write was synced.
        fs = fs.crash();
      }
      db = await KVEngine.open(dbDir, opts());
      assert.deepEqual(await collect(db.scan()), modelScan(model, {}), `${where(i)}: after reopen`);
    }
  }
  assert.deepEqual(await collect(db.scan()), modelScan(model, {}), `seed ${seed}: final`);
  for (const { snap } of snaps) snap.release();
  await db.close();
}

const envSeed = Deno.env.get("MODEL_SEED");
const seeds = envSeed ? [Number(envSeed)] : [1, 2, 3, 4];

Deno.test("model test on the real file system with compactions on the worker thread", async () => {
  await withTempDir((dir) => runModel(99, 700, dir));
});

for (const seed of seeds) {
  Deno.test(`model test matches a Map through flushes, compactions, reopens and crashes (seed ${seed})`, async () => {
    await runModel(seed, 3000);
  });
}
