/**
 * Level-0 flushes on the compaction worker: the worker's flush job writes exactly the entries of
 * the memtable whose arena copy it was given, and an engine with a worker flushes there and keeps
 * every write readable through flushes, close and reopen.
 */
import assert from "node:assert/strict";
import { BlockCache } from "./block_cache.ts";
import {
  type CompactionReply,
  pooledTableBuffers,
  runCompaction,
  runFlush,
  runWarmUp,
  settleMemory,
} from "./compaction_worker.ts";
import { KVEngine, type KVEngineOptions } from "./engine.ts";
import { DenoFs, MemFs } from "./fs.ts";
import { KIND_DELETE, KIND_PUT } from "./iterator.ts";
import { MemTable } from "./memtable.ts";
import { type Block, Table } from "./sstable.ts";
import { b, collect, Rng, s, withTempDir } from "./test_util.ts";

Deno.test("the worker's flush job writes the memtable's entries, in order, to one table", async () => {
  await withTempDir(async (dir) => {
    const rng = new Rng(3);
    const m = new MemTable(0, { arenaBytes: 4096 });
    for (let seq = 1; seq <= 3000; seq++) {
      const kind = rng.int(6) === 0 ? KIND_DELETE : KIND_PUT;
      m.add(b(`k${rng.int(1000)}`), seq, kind, kind === KIND_PUT ? rng.bytes(rng.int(60)) : b(""));
    }
    const path = `${dir}/flush-1.tmp`;
    const reply = await runFlush({ kind: "flush", id: 1, arena: m.copyArena(), path });
    assert.ok(reply.ok, JSON.stringify(reply));
    assert.equal(reply.outputs.length, 1);
    assert.equal(reply.outputs[0]!.entries, 3000);
    const table = await Table.open(new DenoFs(), path, {
      number: 1,
      cache: new BlockCache<Block>(0),
    });
    try {
      const want = m.iterator();
      const got = table.iterator();
      want.seekToFirst();
      got.seekToFirst();
      assert.deepEqual(reply.outputs[0]!.smallest, want.key);
      let n = 0;
      for (; want.valid; want.next(), got.next(), n++) {
        assert.equal(got.valid, true);
        assert.deepEqual(got.key, want.key);
        assert.equal(got.seq, want.seq);
        assert.equal(got.kind, want.kind);
        assert.deepEqual(got.value, want.value);
      }
      assert.equal(got.valid, false);
      assert.equal(n, 3000);
    } finally {
      table.close();
    }
  });
});

Deno.test("the worker's flush job reports a bad arena as a failed reply and leaves no file", async () => {
  await withTempDir(async (dir) => {
    // A head node whose first link points past the end of the buffer.
    const arena = new ArrayBuffer(256);
    new Int32Array(arena)[5] = 1 << 20;
    const path = `${dir}/flush-2.tmp`;
    const reply = await runFlush({ kind: "flush", id: 2, arena, path });
    assert.equal(reply.ok, false);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("an engine with a worker flushes memtables there and keeps every write", async () => {
  await withTempDir(async (dir) => {
    const opts = { memtableBytes: 64 * 1024, sync: "none" as const, log: () => {} };
    const db = await KVEngine.open(dir, opts);
    assert.equal(db.usesCompactionWorker, true);
    const rng = new Rng(17);
    const model = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      const batch = [];
      for (let j = 0; j < 100; j++) {
        const k = `key${rng.int(3000).toString().padStart(5, "0")}`;
        const v = `v${i}-${j}-${"x".repeat(rng.int(200))}`;
        batch.push({ type: "put" as const, key: b(k), value: b(v) });
        model.set(k, v);
      }
      await db.write(batch);
    }
    // Reads while flushes may still be running see everything.
    for (const [k, v] of model) assert.equal(s(await db.get(b(k))), v);
    await db.close();
    const stats = db.stats();
    assert.ok(stats.workerFlushes > 0, `no flush ran on the worker: ${JSON.stringify(stats)}`);

    await assertReopensTo(dir, opts, model, () => {
      // A flush cut short by close() leaves its output as a *.tmp file, which open deletes.
      const names = [...Deno.readDirSync(dir)].map((e) => e.name);
      assert.deepEqual(names.filter((n) => n.startsWith("flush-")), []);
    });
  });
});

Deno.test("flush jobs reuse one pooled output buffer, and a reused buffer writes a correct table", async () => {
  await withTempDir(async (dir) => {
    const make = (tag: string) => {
      const m = new MemTable(0, { arenaBytes: 64 << 10 });
      for (let i = 0; i < 500; i++) {
        m.add(b(`${tag}${1000 + i}`), i + 1, KIND_PUT, b(`v${tag}${i}`));
      }
      return m;
    };
    const before = pooledTableBuffers().length;
    for (const tag of ["a", "b", "c"]) {
      const path = `${dir}/flush-${tag}.tmp`;
      const reply = await runFlush({ kind: "flush", id: 1, arena: make(tag).copyArena(), path });
      assert.ok(reply.ok, JSON.stringify(reply));
      // The last table was built in a buffer that held an earlier one: it must still read back
      // exactly (no stale bytes from the previous table).
      const table = await Table.open(new DenoFs(), path, {
        number: 1,
        cache: new BlockCache<Block>(0),
      });
      try {
        const it = table.iterator();
        let n = 0;
        for (it.seekToFirst(); it.valid; it.next(), n++) {
          assert.equal(s(it.key), `${tag}${1000 + n}`);
          assert.equal(s(it.value), `v${tag}${n}`);
        }
        assert.equal(n, 500);
      } finally {
        table.close();
      }
    }
    // Three sequential flushes took one buffer from the pool each time and gave it back.
    assert.equal(pooledTableBuffers().length, Math.max(before, 1));
  });
});

Deno.test("a flush from a reused, larger arena buffer writes only the new memtable's entries", async () => {
  await withTempDir(async (dir) => {
    const big = new MemTable(0, { arenaBytes: 64 << 10 });
    for (let i = 0; i < 800; i++) big.add(b(`old${1000 + i}`), i + 1, KIND_PUT, b(`x${i}`));
    const spare = big.copyArena();
    const small = new MemTable(0, { arenaBytes: 64 << 10 });
    for (let i = 0; i < 50; i++) small.add(b(`new${1000 + i}`), i + 1, KIND_PUT, b(`y${i}`));
    const arena = small.copyArenaInto(spare);
    // The spare is large enough: reused, its tail still holding the old table's nodes.
    assert.equal(arena, spare);
    const path = `${dir}/flush-r.tmp`;
    const reply = await runFlush({ kind: "flush", id: 7, arena, path });
    assert.ok(reply.ok, JSON.stringify(reply));
    assert.equal(reply.arena, arena);
    assert.equal(reply.outputs[0]!.entries, 50);
    const table = await Table.open(new DenoFs(), path, {
      number: 1,
      cache: new BlockCache<Block>(0),
    });
    try {
      const it = table.iterator();
      let n = 0;
      for (it.seekToFirst(); it.valid; it.next(), n++) {
        assert.equal(s(it.key), `new${1000 + n}`);
        assert.equal(s(it.value), `y${n}`);
      }
      assert.equal(n, 50);
    } finally {
      table.close();
    }
    // Too small a spare is not used.
    const tiny = small.copyArena();
    assert.notEqual(big.copyArenaInto(tiny), tiny);
  });
});

/** Writes 40 batches of 100 random puts (keys of 3000) and returns what the store must hold. */
/** Reopens `dir` (after `check`, run once it is open) and asserts it holds exactly `model`. */
async function assertReopensTo(
  dir: string,
  opts: KVEngineOptions,
  model: Map<string, string>,
  check?: () => void,
): Promise<void> {
  const again = await KVEngine.open(dir, opts);
  try {
    check?.();
    const all = await collect(again.scan());
    assert.equal(all.length, model.size);
    for (const { key, value } of all) assert.equal(s(value), model.get(s(key)!));
  } finally {
    await again.close();
  }
}

async function writeSome(db: KVEngine, seed: number, model = new Map<string, string>()) {
  const rng = new Rng(seed);
  for (let i = 0; i < 40; i++) {
    const batch = [];
    for (let j = 0; j < 100; j++) {
      const k = `key${rng.int(3000).toString().padStart(5, "0")}`;
      const v = `v${seed}-${i}-${j}-${"x".repeat(rng.int(200))}`;
      batch.push({ type: "put" as const, key: b(k), value: b(v) });
      model.set(k, v);
    }
    await db.write(batch);
  }
  return model;
}

Deno.test("a worker past workerRecycleBytes is replaced between jobs and no write is lost", async () => {
  await withTempDir(async (dir) => {
    // Any heap is past 1 byte: every reply with no other job outstanding replaces the worker.
    const opts = {
      memtableBytes: 64 * 1024,
      sync: "none" as const,
      log: () => {},
      workerRecycleBytes: 1,
    };
    const db = await KVEngine.open(dir, opts);
    const model = await writeSome(db, 23);
    await db.compact();
    for (const [k, v] of model) assert.equal(s(await db.get(b(k))), v);
    await db.close();
    const stats = db.stats();
    assert.ok(stats.workerRestarts >= 2, `worker never replaced: ${JSON.stringify(stats)}`);
    assert.ok(stats.workerFlushes + stats.workerCompactions > stats.workerRestarts);
    await assertReopensTo(dir, opts, model);
  });
});

Deno.test("a worker over the limit collects its garbage before replying, when it can; the reply says so", () => {
  const reply = (): CompactionReply => ({ id: 1, ok: true, outputs: [] });
  const readings = (...ms: number[]) => {
    let i = 0;
    return () => ({ heapTotal: ms[Math.min(i++, ms.length - 1)]!, external: 1 });
  };
  let collections = 0;
  const gc = () => void collections++;
  // Over the limit: one collection, and the size after it is what the engine judges.
  const over = reply();
  settleMemory(over, 50, gc, readings(100, 40));
  assert.deepEqual([over.collected, over.heapBytes, collections], [true, 41, 1]);
  // Under the limit: no collection.
  const under = reply();
  settleMemory(under, 50, gc, readings(30, 10));
  assert.deepEqual([under.collected, under.heapBytes, collections], [undefined, 31, 1]);
  // No gc in this process (no --expose-gc), or no limit given: the size as it is.
  const noGc = reply();
  settleMemory(noGc, 50, undefined, readings(100, 40));
  assert.deepEqual([noGc.collected, noGc.heapBytes], [undefined, 101]);
  const noLimit = reply();
  settleMemory(noLimit, undefined, gc, readings(100, 40));
  assert.deepEqual([noLimit.collected, noLimit.heapBytes, collections], [undefined, 101, 1]);
});

Deno.test("in a process with --expose-gc the engine's worker collects its garbage past workerRecycleBytes", async () => {
  await withTempDir(async (dir) => {
    const engine = new URL("./engine.ts", import.meta.url).href;
    // 1 byte is below any heap: every job ends with a collection, and the worker is still
    // replaced because collecting cannot get it under that.
    const script = `
      import { KVEngine } from ${JSON.stringify(engine)};
      const db = await KVEngine.open(${JSON.stringify(dir)}, {
        memtableBytes: 64 * 1024, sync: "none", log: () => {}, keepWorker: true,
        workerRecycleBytes: 1,
      });
      const v = new Uint8Array(1000).fill(7);
      for (let i = 0; i < 300; i++) await db.put(new TextEncoder().encode("k" + i), v);
      await db.flush();
      const got = await db.get(new TextEncoder().encode("k299"));
      await db.close();
      console.log(JSON.stringify({ ...db.stats(), got: got?.length, gc: typeof globalThis.gc }));
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--v8-flags=--expose-gc", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const stats = JSON.parse(text.split("\n").pop()!);
    assert.equal(stats.gc, "function");
    assert.equal(stats.got, 1000);
    assert.ok(stats.workerFlushes >= 2, `too few flushes: ${text}`);
    assert.ok(stats.workerCollections >= stats.workerFlushes, `no collections: ${text}`);
    assert.ok(stats.workerRestarts >= 1, text);
  });
});

Deno.test("reads terminate a worker idle for a second even when timers cannot run; the next job starts one", async () => {
  await withTempDir(async (dir) => {
    const opts = { memtableBytes: 64 * 1024, sync: "none" as const, log: () => {} };
    const db = await KVEngine.open(dir, opts);
    try {
      const model = await writeSome(db, 29);
      await db.compact();
      assert.equal(db.stats().workerRunning, true);
      // Back-to-back synchronous reads for over a second: the idle timer cannot fire, the
      // read path's check must.
      const keys = [...model.keys()].map(b);
      const t0 = performance.now();
      for (let i = 0; performance.now() - t0 < 1200; i++) db.getSync(keys[i % keys.length]!);
      assert.equal(db.stats().workerRunning, false);
      const flushes = db.stats().workerFlushes;
      await writeSome(db, 31, model);
      await db.flush();
      assert.ok(db.stats().workerFlushes > flushes, "no flush ran on a new worker");
      for (const [k, v] of model) assert.equal(s(await db.get(b(k))), v);
    } finally {
      await db.close();
    }
  });
});

Deno.test("keepWorker starts the worker at open and keeps it through idle time; flushes start none", async () => {
  await withTempDir(async (dir) => {
    const opts = {
      memtableBytes: 64 * 1024,
      sync: "none" as const,
      log: () => {},
      keepWorker: true,
    };
    const db = await KVEngine.open(dir, opts);
    try {
      assert.equal(db.stats().workerRunning, true);
      assert.equal(db.stats().workerStarts, 1);
      // Its first job is the warm-up, queued at start; its reply arrives within seconds.
      const until = Date.now() + 10_000;
      while (db.stats().workerWarmUps === 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(db.stats().workerWarmUps, 1);
      const model = await writeSome(db, 37);
      await db.compact();
      const flushes = db.stats().workerFlushes;
      assert.ok(flushes > 0, "no flush ran on the worker");
      // Past the idle timeout (one second), then a read burst that runs the read-path reaper.
      await new Promise((r) => setTimeout(r, 1100));
      const keys = [...model.keys()].map(b);
      for (let i = 0; i < 4096; i++) db.getSync(keys[i % keys.length]!);
      assert.equal(db.stats().workerRunning, true);
      await writeSome(db, 41, model);
      await db.flush();
      assert.ok(db.stats().workerFlushes > flushes, "no flush after the idle time");
      assert.equal(db.stats().workerStarts, 1);
      for (const [k, v] of model) assert.equal(s(await db.get(b(k))), v);
    } finally {
      await db.close();
    }
    assert.equal(db.stats().workerRunning, false);
  });
});

Deno.test("the worker's warm-up job flushes and compacts synthetic tables in memory only", async () => {
  const fs = new MemFs();
  const n = 1000;
  const reply = await runWarmUp({ kind: "warm", id: 9, entries: n }, fs);
  assert.ok(reply.ok, JSON.stringify(reply));
  assert.equal(reply.id, 9);
  assert.equal(reply.outputs.length, 1);
  // Keys 0..1499: the compaction kept one version of each, the newer one where both tables had it.
  assert.equal(reply.outputs[0]!.entries, n + n / 2);
  const table = await Table.open(fs, reply.outputs[0]!.path, {
    number: 1,
    cache: new BlockCache<Block>(0),
  });
  try {
    const it = table.iterator();
    let k = 0;
    for (it.seekToFirst(); it.valid; it.next(), k++) {
      assert.equal(s(it.key), String(k).padStart(16, "0"));
      assert.equal(it.kind, KIND_PUT);
      const t = k >= n / 2 ? 1 : 0;
      assert.deepEqual(it.value, new Uint8Array(256).fill((k + t) & 0xff));
    }
    assert.equal(k, n + n / 2);
  } finally {
    table.close();
  }
  await assert.rejects(Deno.stat("/warm-out-0.tmp"), Deno.errors.NotFound);
});

Deno.test("a cancelled compaction stops, removes the tables it wrote and says so", async () => {
  const fs = new MemFs();
  await fs.mkdir("/db");
  // Two overlapping 5,000-entry tables: merged, ~10,000 entries (past the 4,096-entry pause).
  const inputs: Array<{ path: string; number: number }> = [];
  for (let t = 0; t < 2; t++) {
    const m = new MemTable(0, { arenaBytes: 1 << 20 });
    for (let i = 0; i < 5000; i++) {
      m.add(b(`k${String(t * 2500 + i).padStart(6, "0")}`), t * 5000 + i + 1, KIND_PUT, b("v"));
    }
    const path = `/db/in-${t}.sst`;
    const flushed = await runFlush({ kind: "flush", id: t, arena: m.copyArena(), path }, fs);
    assert.ok(flushed.ok, JSON.stringify(flushed));
    inputs.unshift({ path, number: t + 1 });
  }
  const req = {
    id: 5,
    inputs,
    smallestSnapshot: 10_000,
    deeper: [],
    // One output table per ~256 entries: several are written before the first pause.
    splitBytes: 4096,
    tmpPrefix: "/db/compaction-5-",
  };
  let polls = 0;
  const reply = await runCompaction(req, fs, () => ++polls > 3);
  assert.equal(reply.ok, false);
  if (reply.ok) return;
  assert.equal(reply.kind, "Cancelled");
  assert.equal(reply.id, 5);
  assert.ok(polls > 3, `polled ${polls} times`);
  assert.deepEqual((await fs.list("/db")).filter((n) => n.startsWith("compaction-")), []);
  // Not cancelled, the same job writes its tables.
  const done = await runCompaction(req, fs, () => false);
  assert.ok(done.ok, JSON.stringify(done));
  assert.ok(done.outputs.length > 3, `${done.outputs.length} outputs`);
  assert.equal(done.outputs.reduce((n, o) => n + o.entries, 0), 7500);
  const listed = (await fs.list("/db")).filter((n) => n.startsWith("compaction-"));
  assert.equal(listed.length, done.outputs.length);
});

Deno.test("close during worker compactions leaves no compaction file behind and loses no write", async () => {
  await withTempDir(async (dir) => {
    const opts = {
      memtableBytes: 512 * 1024,
      tableBytes: 256 * 1024,
      level1Bytes: 8 << 20,
      sync: "none" as const,
      keepWorker: true,
      log: () => {},
    };
    const model = new Map<string, string>();
    let workerCompactions = 0;
    const value = "x".repeat(2000);
    // Each round writes 2.5 MiB through 512 KiB memtables: every fourth level-0 table starts a
    // merge of them all with level 1 on the worker, and the round closes right after its last
    // write, so a merge is usually running: it is cancelled or dropped, never left behind.
    for (let round = 0; round < 4; round++) {
      const db = await KVEngine.open(dir, opts);
      for (let i = 0; i < 1250; i++) {
        const k = `key${String((i * 7919 + round * 313) % 5000).padStart(5, "0")}`;
        const v = `${round}-${i}-${value}`;
        await db.put(b(k), b(v));
        model.set(k, v);
      }
      workerCompactions += db.stats().workerCompactions;
      await db.close();
      const left = [];
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("compaction-")) left.push(e.name);
      }
      assert.deepEqual(left, [], `round ${round}`);
    }
    assert.ok(workerCompactions > 0, "no compaction ran on the worker");
    const db = await KVEngine.open(dir, opts);
    try {
      for (const [k, v] of model) assert.equal(s(await db.get(b(k))), v, k);
    } finally {
      await db.close();
    }
  });
});
