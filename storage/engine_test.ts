import assert from "node:assert/strict";
import { DenoFs, MemFs } from "./fs.ts";
import {
  ClosedError,
  InvalidArgumentError,
  KVEngine,
  type KVEngineOptions,
  LockedError,
  StorageError,
} from "./mod.ts";
import { b, collect, s, withTempDir } from "./test_util.ts";
import { taggedBatch, taggedPrefix } from "./testdata/tagged_batches.ts";

function memOpts(fs: MemFs, extra: KVEngineOptions = {}): KVEngineOptions {
  return { fs, log: () => {}, ...extra };
}

async function strings(it: AsyncIterable<{ key: Uint8Array; value: Uint8Array }>) {
  return (await collect(it)).map((kv) => `${s(kv.key)}=${s(kv.value)}`);
}

Deno.test("engine puts, gets, deletes and survives reopen on the real file system", async () => {
  await withTempDir(async (dir) => {
    let db = await KVEngine.open(dir, { log: () => {} });
    await db.put(b("a"), b("1"));
    await db.put(b("b"), b("2"));
    await db.delete(b("a"));
    await db.put(b("c"), new Uint8Array(0));
    assert.equal(await db.get(b("a")), undefined);
    assert.equal(s(await db.get(b("b"))), "2");
    assert.deepEqual(await db.get(b("c")), new Uint8Array(0));
    await db.close();
    db = await KVEngine.open(dir, { log: () => {} });
    assert.equal(await db.get(b("a")), undefined);
    assert.equal(s(await db.get(b("b"))), "2");
    assert.deepEqual(await strings(db.scan()), ["b=2", "c="]);
    await db.close();
  });
});

Deno.test("engine rejects bad keys and values with InvalidArgument", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { maxValueBytes: 1000 }));
  const invalid = (e: unknown) => e instanceof InvalidArgumentError && e.kind === "InvalidArgument";
  await assert.rejects(db.put(new Uint8Array(0), b("x")), invalid);
  await assert.rejects(db.put(new Uint8Array(65537), b("x")), invalid);
  await assert.rejects(db.put(b("k"), new Uint8Array(1001)), invalid);
  await assert.rejects(db.get(new Uint8Array(0)), invalid);
  // deno-lint-ignore no-explicit-any
  await assert.rejects(db.write([{ type: "put", key: b("k") } as any]), invalid);
  // A bad op anywhere rejects the whole batch.
  await assert.rejects(
    db.write([{ type: "put", key: b("ok"), value: b("1") }, {
      type: "delete",
      key: new Uint8Array(0),
    }]),
    invalid,
  );
  assert.equal(await db.get(b("ok")), undefined);
  await db.put(new Uint8Array(65536), new Uint8Array(1000)); // limits are inclusive
  await db.close();
  await assert.rejects(db.get(b("k")), ClosedError);
  await assert.rejects(
    db.put(b("k"), b("v")),
    (e) => e instanceof StorageError && e.kind === "Closed",
  );
});

Deno.test("engine applies a batch atomically, later ops on a key winning", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs));
  await db.write([
    { type: "put", key: b("x"), value: b("1") },
    { type: "put", key: b("y"), value: b("2") },
    { type: "delete", key: b("x") },
    { type: "put", key: b("applied"), value: b("42") },
  ]);
  assert.equal(await db.get(b("x")), undefined);
  assert.equal(s(await db.get(b("applied"))), "42");
  await db.close();
});

Deno.test("engine refuses a second opener of the same directory with Locked", async () => {
  await withTempDir(async (dir) => {
    const db = await KVEngine.open(dir, { log: () => {} });
    await assert.rejects(
      KVEngine.open(dir, { log: () => {} }),
      (e) => e instanceof LockedError && e.kind === "Locked",
    );
    // Another process gets the same error.
    const code = `import { KVEngine } from ${
      JSON.stringify(new URL("./mod.ts", import.meta.url).href)
    };
      try { await KVEngine.open(${
      JSON.stringify(dir)
    }); console.log("opened"); } catch (e) { console.log(e.kind); }`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdout: "piped",
      stderr: "piped",
      env: { RUST_BACKTRACE: "0" },
    }).output();
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "Locked");
    await db.close();
    const again = await KVEngine.open(dir, { log: () => {} });
    await again.close();
  });
});

Deno.test("engine scans by prefix, range and limit, in key order", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { memtableBytes: 2048 }));
  for (let i = 0; i < 300; i++) await db.put(b(`k${String(i).padStart(3, "0")}`), b(`${i}`));
  await db.put(b("j"), b("before"));
  await db.put(b("l"), b("after"));
  await db.delete(b("k150"));
  assert.equal((await collect(db.scan({ prefix: b("k") }))).length, 299);
  assert.deepEqual(await strings(db.scan({ prefix: b("k14"), limit: 3 })), [
    "k140=140",
    "k141=141",
    "k142=142",
  ]);
  assert.deepEqual(await strings(db.scan({ start: b("k148"), end: b("k152") })), [
    "k148=148",
    "k149=149",
    "k151=151",
  ]);
  assert.deepEqual(await strings(db.scan({ start: b("k299") })), ["k299=299", "l=after"]);
  assert.deepEqual(await strings(db.scan({ prefix: b("k2"), start: b("k298"), end: b("k299") })), [
    "k298=298",
  ]);
  assert.deepEqual(await strings(db.scan({ limit: 1 })), ["j=before"]);
  // Keys only: the same keys, every value empty.
  const keys = db.scanSync({ start: b("k148"), end: b("k152"), keysOnly: true });
  assert.deepEqual(keys.map((kv) => s(kv.key)), ["k148", "k149", "k151"]);
  assert.ok(keys.every((kv) => kv.value.length === 0));
  assert.ok(db.stats().levels.some((l) => l.tables > 0), "data reached tables");
  await db.close();
});

Deno.test("snapshot reads a point in time while writes, flushes and compactions go on", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open(
    "/db",
    memOpts(fs, { memtableBytes: 4096, l0CompactionTrigger: 2 }),
  );
  for (let i = 0; i < 200; i++) await db.put(b(`k${i}`), b(`old${i}`));
  const snap = db.snapshot();
  for (let i = 0; i < 200; i++) {
    if (i % 2 === 0) await db.delete(b(`k${i}`));
    else await db.put(b(`k${i}`), b(`new${i}`));
  }
  await db.put(b("zz"), b("later"));
  await db.compact();
  assert.equal(s(await snap.get(b("k0"))), "old0");
  assert.equal(s(await snap.get(b("k1"))), "old1");
  assert.equal(await snap.get(b("zz")), undefined);
  const seen = await collect(snap.scan());
  assert.equal(seen.length, 200);
  assert.ok(seen.every((kv) => s(kv.value)!.startsWith("old")));
  assert.equal(await db.get(b("k0")), undefined);
  assert.equal(s(await db.get(b("k1"))), "new1");
  snap.release();
  await assert.rejects(snap.get(b("k1")), ClosedError);
  await db.compact();
  assert.equal((await collect(db.scan())).length, 101);
  await db.close();
});

Deno.test("a scan keeps its view while writes continue", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { memtableBytes: 4096 }));
  for (let i = 0; i < 100; i++) await db.put(b(`k${String(i).padStart(3, "0")}`), b("v"));
  let n = 0;
  for await (const kv of db.scan()) {
    n++;
    await db.put(b(`k${s(kv.key)!.slice(1)}x`), b("new")); // inserted behind and ahead of the cursor
  }
  assert.equal(n, 100);
  assert.equal((await collect(db.scan())).length, 200);
  await db.close();
});

Deno.test("replaceAll swaps the content atomically and restoreFrom builds an engine from pairs", async () => {
  const fs = new MemFs();
  const src = await KVEngine.open("/src", memOpts(fs, { memtableBytes: 8192 }));
  for (let i = 0; i < 2000; i++) await src.put(b(`key${String(i).padStart(5, "0")}`), b(`v${i}`));
  const dst = await KVEngine.open("/dst", memOpts(fs, { memtableBytes: 8192 }));
  for (let i = 0; i < 50; i++) await dst.put(b(`stale${i}`), b("x"));
  const oldSnap = dst.snapshot();
  const snap = src.snapshot();
  await dst.replaceAll(snap.scan());
  snap.release();
  assert.equal(await dst.get(b("stale1")), undefined);
  assert.equal(s(await dst.get(b("key01234"))), "v1234");
  assert.equal(s(await oldSnap.get(b("stale1"))), "x", "older snapshots keep the old content");
  oldSnap.release();
  await dst.put(b("after"), b("1"));
  await dst.close();
  const crashed = fs.crash();
  const reopened = await KVEngine.open("/dst", memOpts(crashed));
  assert.equal((await collect(reopened.scan())).length, 2001);
  assert.equal(await reopened.get(b("stale3")), undefined);
  await reopened.close();
  await assert.rejects(dst.replaceAll([]), ClosedError);

  const restored = await KVEngine.restoreFrom("/r", [{ key: b("a"), value: b("1") }, {
    key: b("b"),
    value: b("2"),
  }], memOpts(fs));
  assert.deepEqual(await strings(restored.scan()), ["a=1", "b=2"]);
  await assert.rejects(
    restored.replaceAll([{ key: b("b"), value: b("1") }, { key: b("a"), value: b("2") }]),
    InvalidArgumentError,
  );
  assert.deepEqual(
    await strings(restored.scan()),
    ["a=1", "b=2"],
    "a failed replace changes nothing",
  );
  await restored.close();
  await src.close();
});

Deno.test("replaceAll is all-or-nothing across a crash at any point", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs));
  await db.put(b("old"), b("1"));
  const pairs = Array.from(
    { length: 500 },
    (_, i) => ({ key: b(`n${String(i).padStart(4, "0")}`), value: b("x") }),
  );
  // Crash after every durable step of replaceAll: snapshot the durable state on each sync.
  const states: MemFs[] = [];
  fs.failOn((op) => {
    if (op === "sync" || op === "syncDir") states.push(fs.crash());
    return false;
  });
  await db.replaceAll(pairs);
  fs.failOn(undefined);
  states.push(fs.crash());
  await db.close();
  assert.ok(states.length >= 4);
  let sawOld = false;
  let sawNew = false;
  for (const st of states) {
    const r = await KVEngine.open("/db", memOpts(st));
    const all = await collect(r.scan());
    const isOld = all.length === 1 && s(all[0]!.key) === "old";
    const isNew = all.length === 500 && s(all[0]!.key) === "n0000";
    assert.ok(isOld || isNew, `mixed state with ${all.length} keys`);
    sawOld ||= isOld;
    sawNew ||= isNew;
    await r.close();
  }
  assert.ok(sawOld && sawNew);
});

Deno.test("compaction drops tombstones and shadowed versions, keeping disk within 2x of live data", async () => {
  await withTempDir(async (dir) => {
    // Deletes that finish a little late (as on a loaded disk): compact() must still
    // resolve only after the replaced tables are gone.
    class SlowRemoveFs extends DenoFs {
      override async remove(path: string): Promise<void> {
        await new Promise((r) => setTimeout(r, 5));
        await super.remove(path);
      }
    }
    const db = await KVEngine.open(dir, {
      memtableBytes: 64 * 1024,
      sync: "none",
      log: () => {},
      fs: new SlowRemoveFs(),
      compactionWorker: true,
    });
    const value = new Uint8Array(100).fill(7);
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 4000; i += 100) {
        const batch = [];
        for (let j = i; j < i + 100; j++) {
          batch.push({ type: "put" as const, key: b(`key${String(j).padStart(8, "0")}`), value });
        }
        await db.write(batch);
      }
    }
    for (let i = 2000; i < 4000; i++) await db.delete(b(`key${String(i).padStart(8, "0")}`));
    await db.compact();
    const live = 2000 * (11 + 100);
    let disk = 0;
    let tableFiles = 0;
    for await (const e of Deno.readDir(dir)) {
      disk += (await Deno.stat(`${dir}/${e.name}`)).size;
      if (e.name.endsWith(".sst")) tableFiles++;
    }
    assert.ok(disk <= 2 * live, `disk ${disk} > 2 x live ${live}`);
    const stats = db.stats();
    const liveTables = stats.levels.reduce((n, l) => n + l.tables, 0);
    assert.equal(
      tableFiles,
      liveTables,
      "compact() resolved before the replaced tables were deleted",
    );
    assert.equal(stats.levels[0]!.tables, 0);
    assert.equal((await collect(db.scan())).length, 2000);
    await db.close();
  });
});

Deno.test("sync none writes become durable with flush()", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { sync: "none" }));
  await db.put(b("a"), b("1"));
  const lost = await KVEngine.open("/db", memOpts(fs.crash()));
  assert.equal(await lost.get(b("a")), undefined, "not synced yet");
  await lost.close();
  await db.flush();
  const kept = await KVEngine.open("/db", memOpts(fs.crash()));
  assert.equal(s(await kept.get(b("a"))), "1");
  await kept.close();
  await db.close();
});

Deno.test("sync none syncs the WAL in the background: a crash loses at most ~512 KiB, and a prefix", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { sync: "none", memtableBytes: 64 << 20 }));
  const value = new Uint8Array(1000).fill(7);
  const n = 3000; // ~3 MiB of WAL, one segment (no memtable switch)
  for (let i = 0; i < n; i++) await db.put(b(`k${String(i).padStart(5, "0")}`), value);
  const crashed = await KVEngine.open("/db", memOpts(fs.crash()));
  let kept = 0;
  while (kept < n && (await crashed.get(b(`k${String(kept).padStart(5, "0")}`))) !== undefined) {
    kept++;
  }
  // What survived is a prefix of the writes...
  assert.equal((await collect(crashed.scan())).length, kept);
  await crashed.close();
  // ...and all but the last ~512 KiB (plus one record) of it.
  assert.ok(kept >= n - 530, `kept ${kept} of ${n}`);
  assert.ok(kept < n, "the tail after the last background sync is not durable");
  await db.close();
});

Deno.test("concurrent writes share group commits and all become durable", async () => {
  const fs = new MemFs();
  let syncs = 0;
  fs.failOn((op, path) => {
    if (op === "sync" && path.endsWith(".log")) syncs++;
    return false;
  });
  const db = await KVEngine.open("/db", memOpts(fs, { sync: "batch" }));
  syncs = 0;
  await Promise.all(Array.from({ length: 500 }, (_, i) => db.put(b(`k${i}`), b(`${i}`))));
  assert.ok(syncs < 50, `${syncs} syncs for 500 concurrent writes`);
  const after = await KVEngine.open("/db", memOpts(fs.crash()));
  for (let i = 0; i < 500; i++) assert.equal(s(await after.get(b(`k${i}`))), `${i}`);
  await after.close();
  await db.close();
});

Deno.test("a failed WAL write rejects the write and stops the engine", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs));
  await db.put(b("a"), b("1"));
  fs.failOn((op, path) => op === "sync" && path.endsWith(".log"));
  await assert.rejects(db.put(b("b"), b("2")), (e) => e instanceof StorageError && e.kind === "IO");
  await assert.rejects(db.put(b("c"), b("3")), ClosedError);
  assert.equal(s(await db.get(b("a"))), "1", "reads keep working");
  assert.equal(await db.get(b("b")), undefined, "the failed write is not visible");
  fs.failOn(undefined);
  await db.close();
});

Deno.test("block buffers recycled by point lookups never corrupt a running scan", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open(
    "/db",
    memOpts(fs, { blockCacheBytes: 16 * 1024, memtableBytes: 16 * 1024 }),
  );
  const key = (i: number) => b(`key-${String(i).padStart(5, "0")}`);
  for (let i = 0; i < 3000; i += 100) {
    await db.write(
      Array.from(
        { length: 100 },
        (_, j) => ({ type: "put" as const, key: key(i + j), value: b(`v${i + j}`) }),
      ),
    );
  }
  await db.compact();
  let n = 0;
  for await (const kv of db.scan()) {
    assert.equal(s(kv.key), s(key(n)));
    assert.equal(s(kv.value), `v${n}`);
    for (let j = 0; j < 5; j++) {
      const r = (n * 7919 + j * 104729) % 3000;
      assert.equal(s(await db.get(key(r))), `v${r}`);
    }
    n++;
  }
  assert.equal(n, 3000);
  const stats = db.stats();
  assert.ok(stats.cacheMisses > 100, "the cache was too small to hold the table");
  await db.close();
});

/** Names and sizes of the files in `dir`, sorted: a change in either means something wrote. */
async function _listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const st = await Deno.stat(`${dir}/${e.name}`).catch(() => undefined);
    out.push(`${e.name}:${st?.size ?? "gone"}`);
  }
  return out.sort();
}

for (const worker of [false, true]) {
  Deno.test(
    `close waits for every background task: nothing changes in the directory afterwards (worker ${worker})`,
    async () => {
      await withTempDir(async (dir) => {
        const opts: KVEngineOptions = {
          log: () => {},
          sync: "none",
          memtableBytes: 2048,
          tableBytes: 4096,
          level1Bytes: 8192,
          l0CompactionTrigger: 2,
          compactionWorker: worker,
          workerMinBytes: 0,
        };
        const db = await KVEngine.open(dir, opts);
        const acked = new Map<string, string>();
        const pending: Promise<void>[] = [];
        let refused = 0;
        const put = (k: string, v: string) => {
          pending.push(
            db.put(b(k), b(v)).then(() => {
              acked.set(k, v);
            }, (e) => {
              assert.ok(e instanceof ClosedError, `${e}`);
              refused++;
            }),
          );
        };
        let round = 0;
        const batch = () => {
          for (let i = 0; i < 50; i++) {
            put(`k${(round * 50 + i) % 700}`, `r${round}-${i}-${"x".repeat(40)}`);
          }
          round++;
        };
        // Write until tables exist on two levels (so compactions run), then close with no await
        // between the last writes and close(): a memtable switch, a flush and a compaction are
        // underway when close() begins.
        for (; round < 200;) {
          batch();
          await Promise.all(pending.splice(0));
          const st = db.stats();
          if (round > 20 && st.levels[1]!.tables > 0) break;
        }
        assert.ok(db.stats().levels[1]!.tables > 0);
        batch();
        batch();
        const closing = db.close();
        batch(); // issued after close() began: refused
        await closing;
        await Promise.all(pending);
        assert.equal(refused, 50);
        const before = await _listing(dir);
        for (let i = 0; i < 50; i++) await new Promise((r) => setTimeout(r, 0));
        assert.deepEqual(await _listing(dir), before);
        const again = await KVEngine.open(dir, opts);
        try {
          for (const [k, v] of acked) assert.equal(s(await again.get(b(k))), v, k);
        } finally {
          await again.close();
        }
      });
    },
  );
}

// ---------------------------------------------------------------- without a WAL (`wal: false`)

Deno.test("without a WAL: a crash at any durable step leaves a prefix of the batches, flush() makes all durable", async () => {
  const fs = new MemFs();
  let walOps = 0;
  // Record the durable state at every sync (each is a possible crash point) and whether a
  // completed flush() acknowledged a batch before it.
  const states: Array<{ fs: MemFs; flushed: number }> = [];
  let flushed = 0;
  fs.failOn((op, path) => {
    if (path.endsWith(".log")) walOps++;
    if (op === "sync" || op === "syncDir") states.push({ fs: fs.crash(), flushed });
    return false;
  });
  const db = await KVEngine.open("/db", memOpts(fs, { wal: false, memtableBytes: 8192 }));
  const n = 400;
  for (let i = 1; i <= n; i++) {
    await db.write(taggedBatch(i));
    if (i % 97 === 0) {
      await db.flush();
      flushed = i;
    }
  }
  const unflushed = fs.crash();
  await db.flush();
  fs.failOn(undefined);
  const all = fs.crash();
  assert.equal(walOps, 0, "no WAL segment was written or synced");
  assert.ok(db.stats().levels.some((l) => l.tables > 1), "memtables were switched");
  await db.close();
  assert.ok(states.length > 20, `only ${states.length} crash points`);
  let shorter = 0;
  for (const st of states) {
    const r = await KVEngine.open("/db", memOpts(st.fs, { wal: false }));
    const k = await taggedPrefix(r);
    assert.ok(
      k >= st.flushed,
      `crash kept ${k} batches, but flush() had acknowledged ${st.flushed}`,
    );
    if (k < n) shorter++;
    await r.close();
  }
  assert.ok(shorter > 0);
  const r1 = await KVEngine.open("/db", memOpts(unflushed, { wal: false }));
  const k1 = await taggedPrefix(r1);
  assert.ok(k1 >= 388 && k1 < n, `before the last flush() the crash kept ${k1} batches`);
  await r1.close();
  const r2 = await KVEngine.open("/db", memOpts(all, { wal: false }));
  assert.equal(await taggedPrefix(r2), n, "flush() made every batch durable");
  await r2.close();
});

Deno.test("without a WAL: close() leaves every write durable, and the directory reopens with the WAL on", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { wal: false }));
  for (let i = 1; i <= 50; i++) await db.write(taggedBatch(i));
  await db.close();
  assert.deepEqual((await fs.list("/db")).filter((f) => f.endsWith(".log")), []);
  const withWal = await KVEngine.open("/db", memOpts(fs.crash()));
  assert.equal(await taggedPrefix(withWal), 50);
  await withWal.close();
});

Deno.test("without a WAL: opening a directory with WAL segments replays them, then deletes them", async () => {
  const fs = new MemFs();
  const old = await KVEngine.open("/db", memOpts(fs, { sync: "always", memtableBytes: 4096 }));
  for (let i = 1; i <= 60; i++) await old.write(taggedBatch(i));
  const crashed = fs.crash(); // a SIGKILL: the memtable's writes are only in the WAL
  await old.close();
  assert.ok((await crashed.list("/db")).some((f) => f.endsWith(".log")));
  const notes: string[] = [];
  const db = await KVEngine.open("/db", { fs: crashed, wal: false, log: (m) => notes.push(m) });
  assert.equal(await taggedPrefix(db), 60, "acknowledged WAL writes replayed");
  assert.deepEqual((await crashed.list("/db")).filter((f) => f.endsWith(".log")), []);
  assert.ok(notes.some((m) => m.includes("the WAL is off now")), notes.join("; "));
  for (let i = 61; i <= 70; i++) await db.write(taggedBatch(i));
  // A crash now loses the unflushed writes, never the migrated ones.
  const again = await KVEngine.open("/db", memOpts(crashed.crash(), { wal: false }));
  assert.equal(await taggedPrefix(again), 60);
  await again.close();
  await db.close();
});

Deno.test("without a WAL: replaceAll is durable when it resolves and all-or-nothing before", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs, { wal: false, memtableBytes: 4096 }));
  for (let i = 1; i <= 40; i++) await db.write(taggedBatch(i));
  await db.flush();
  for (let i = 41; i <= 45; i++) await db.write(taggedBatch(i)); // in the memtable only
  const pairs = Array.from(
    { length: 300 },
    (_, i) => ({ key: b(`n${String(i).padStart(4, "0")}`), value: b("x") }),
  );
  const states: MemFs[] = [];
  fs.failOn((op) => {
    if (op === "sync" || op === "syncDir") states.push(fs.crash());
    return false;
  });
  await db.replaceAll(pairs);
  fs.failOn(undefined);
  const after = fs.crash();
  await db.put(b("later"), b("1"));
  await db.close();
  assert.ok(states.length >= 3);
  for (const st of states) {
    const r = await KVEngine.open("/db", memOpts(st, { wal: false }));
    const all = await collect(r.scan());
    if (all.length !== 300) assert.equal(await taggedPrefix(r), 40, "old content, as flushed");
    else assert.equal(s(all[0]!.key), "n0000");
    await r.close();
  }
  const r = await KVEngine.open("/db", memOpts(after, { wal: false }));
  assert.equal((await collect(r.scan())).length, 300, "durable when replaceAll resolved");
  await r.close();
});

for (const op of ["compact", "replaceAll"] as const) {
  Deno.test(`without a WAL: flush() finishes when a ${op} pauses the background flush it waits for`, async () => {
    const fs = new MemFs();
    const db = await KVEngine.open(
      "/db",
      memOpts(fs, { wal: false, memtableBytes: 4096, l0CompactionTrigger: 2 }),
    );
    for (let i = 1; i <= 100; i++) await db.write(taggedBatch(i));
    // No await between: the flush seals the memtable and waits for the background loop, which
    // the exclusive operation issued right after pauses before the level-0 table is written.
    const flushing = db.flush();
    const other = op === "compact"
      ? db.compact()
      : db.replaceAll([{ key: b("new"), value: b("1") }]);
    await Promise.all([flushing, other]);
    const r = await KVEngine.open("/db", memOpts(fs.crash(), { wal: false }));
    if (op === "compact") assert.equal(await taggedPrefix(r), 100);
    else assert.deepEqual(await strings(r.scan()), ["new=1"]);
    await r.close();
    await db.close();
  });
}

Deno.test("values returned by get and scan stay intact while later reads copy more values", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs));
  try {
    // 100-byte values are copied into shared slabs: each must be its own range, never reused.
    const val = (i: number, round: number) => new Uint8Array(100).fill((i * 7 + round) & 0xff);
    for (let i = 0; i < 400; i++) await db.put(b(`k${1000 + i}`), val(i, 0));
    const kept = (await collect(db.scan({}))).map((kv) => kv.value);
    const got = await db.get(b("k1005"));
    for (let i = 0; i < 400; i++) await db.put(b(`k${1000 + i}`), val(i, 1));
    const again = await collect(db.scan({}));
    assert.equal(kept.length, 400);
    for (let i = 0; i < 400; i++) {
      assert.deepEqual(kept[i], val(i, 0));
      assert.deepEqual(again[i]!.value, val(i, 1));
    }
    assert.deepEqual(got, val(5, 0));
    // A caller may write into a returned copy without touching another one or the store.
    kept[0]!.fill(0);
    assert.deepEqual(kept[1], val(1, 0));
    assert.deepEqual(await db.get(b("k1000")), val(0, 1));
  } finally {
    await db.close();
  }
});

Deno.test("close writes the memtables to tables: the next open replays nothing, a crash during close loses nothing", async () => {
  const fs = new MemFs();
  const key = (i: number) => b(`c${String(i).padStart(4, "0")}`);
  // A small memtable: close finds one sealed memtable possibly still flushing and a live one.
  let db = await KVEngine.open("/db", memOpts(fs, { memtableBytes: 4096 }));
  for (let i = 0; i < 300; i++) await db.put(key(i), b(`v${i}`));
  await db.delete(key(3));
  const states: MemFs[] = [];
  fs.failOn((op) => {
    if (op === "sync" || op === "syncDir") states.push(fs.crash());
    return false;
  });
  await db.close();
  fs.failOn(undefined);
  states.push(fs.crash());
  // Every segment left holds no record: the open that follows has nothing to replay.
  const logs = (await fs.list("/db")).filter((n) => n.endsWith(".log"));
  assert.ok(logs.length >= 1);
  for (const n of logs) assert.equal(fs.raw(`/db/${n}`)!.length, 0, n);
  assert.ok(states.length >= 4);
  for (const st of [fs, ...states]) {
    db = await KVEngine.open("/db", memOpts(st));
    const all = await strings(db.scan());
    assert.equal(all.length, 299);
    assert.equal(all[3], `${s(key(4))}=v4`);
    await db.close();
  }
});

Deno.test("close flushes the memtable but starts no compaction (its level-0 table waits for the next open)", async () => {
  const fs = new MemFs();
  // Any level-0 table is worth a compaction here, so the close's own flush would start one.
  let db = await KVEngine.open("/db", memOpts(fs, { l0CompactionTrigger: 1 }));
  for (let i = 0; i < 20; i++) await db.put(b(`k${i}`), b(`${i}`));
  assert.deepEqual(db.stats().levels.slice(0, 2).map((l) => l.tables), [0, 0]);
  await db.close();
  db = await KVEngine.open("/db", memOpts(fs, { l0CompactionTrigger: 1 }));
  assert.deepEqual(db.stats().levels.slice(0, 2).map((l) => l.tables), [1, 0]);
  assert.equal(s(await db.get(b("k7"))), "7");
  await db.compact();
  assert.deepEqual(db.stats().levels[0]!.tables, 0);
  await db.close();
});

Deno.test("a flush that fails at close is logged and the synced WAL still holds every write", async () => {
  const fs = new MemFs();
  const logs: string[] = [];
  const db = await KVEngine.open("/db", { fs, log: (m) => logs.push(m), compactionWorker: false });
  for (let i = 0; i < 50; i++) await db.put(b(`k${i}`), b(`${i}`));
  // The level-0 table cannot be written: close still closes, and says why the WAL stays.
  fs.failOn((_op, path) => path.endsWith(".sst") || path.endsWith(".tmp"));
  await db.close();
  fs.failOn(undefined);
  assert.ok(logs.some((m) => m.includes("flush at close failed")), logs.join("\n"));
  const again = await KVEngine.open("/db", memOpts(fs));
  for (let i = 0; i < 50; i++) assert.equal(s(await again.get(b(`k${i}`))), `${i}`);
  await again.close();
});

Deno.test("open keeps a replayed WAL in memory until a background flush; a crash at any point loses nothing", async () => {
  const fs = new MemFs();
  const key = (i: number) => b(`r${String(i).padStart(4, "0")}`);
  let db = await KVEngine.open("/db", memOpts(fs, { sync: "always", flushOnClose: false }));
  for (let i = 0; i < 300; i++) await db.put(key(i), b(`v${i}`));
  await db.close();
  const logs = (await fs.list("/db")).filter((n) => n.endsWith(".log"));
  assert.equal(logs.length, 1);
  // Snapshot the durable state at every sync of the reopen and of the flush that follows.
  const states: MemFs[] = [];
  fs.failOn((op) => {
    if (op === "sync" || op === "syncDir") states.push(fs.crash());
    return false;
  });
  db = await KVEngine.open("/db", memOpts(fs));
  // The open wrote no table and kept the replayed segment (background work starts a turn later).
  let names = await fs.list("/db");
  assert.equal(names.filter((n) => n.endsWith(".sst")).length, 0);
  assert.ok(names.includes(logs[0]!));
  assert.equal(s(await db.get(key(7))), "v7");
  await db.compact();
  fs.failOn(undefined);
  states.push(fs.crash());
  names = await fs.list("/db");
  assert.ok(!names.includes(logs[0]!), "the replayed segment is deleted once flushed");
  assert.ok(names.some((n) => n.endsWith(".sst")));
  await db.close();
  assert.ok(states.length >= 4);
  for (const st of states) {
    const r = await KVEngine.open("/db", memOpts(st));
    const all = await collect(r.scan());
    assert.equal(all.length, 300);
    all.forEach((kv, i) => assert.equal(s(kv.value), `v${i}`));
    await r.close();
  }
});

for (const worker of [false, true]) {
  Deno.test(`compactInBackground reclaims the space of deleted keys while writes go on (worker ${worker})`, async () => {
    await withTempDir(async (dir) => {
      const db = await KVEngine.open(dir, {
        log: () => {},
        wal: false,
        memtableBytes: 64 * 1024,
        compactionWorker: worker,
        workerMinBytes: 0,
        // No automatic compaction: the deleted keys' space stays taken until the manual one.
        l0CompactionTrigger: 1000,
        l0SlowdownWrites: 1000,
        l0StopWrites: 2000,
      });
      const key = (i: number) => b(`k${String(i).padStart(5, "0")}`);
      const value = new Uint8Array(1000).fill(7);
      for (let i = 0; i < 2000; i++) await db.put(key(i), value);
      for (let i = 0; i < 2000; i++) if (i % 10 !== 0) await db.delete(key(i));
      await db.flush();
      const bytes = () => db.stats().levels.reduce((t, l) => t + l.bytes, 0);
      const before = bytes();
      assert.ok(before > 1_500_000, `${before} bytes on disk after the deletes`);
      // Writes issued meanwhile go through, and two requests share one pass.
      const during = (async () => {
        for (let i = 0; i < 300; i++) await db.put(b(`n${i}`), b(`v${i}`));
      })();
      await Promise.all([db.compactInBackground(), db.compactInBackground(), during]);
      const after = bytes();
      assert.ok(after < 400_000, `${after} bytes after compacting (${before} before)`);
      assert.equal(db.stats().manualCompactions, 1);
      const kept = await collect(db.scan({ prefix: b("k") }));
      assert.deepEqual(
        kept.map((kv) => s(kv.key)),
        Array.from({ length: 200 }, (_, j) => s(key(j * 10))),
      );
      for (let i = 0; i < 300; i++) assert.equal(s(await db.get(b(`n${i}`))), `v${i}`);
      // Only the bottom level is left, with no tombstone in it.
      const levels = db.stats().levels;
      assert.equal(levels.filter((l) => l.tables > 0).length <= 2, true, JSON.stringify(levels));
      await db.close();
      const again = await KVEngine.open(dir, { log: () => {}, wal: false });
      assert.equal((await collect(again.scan({ prefix: b("k") }))).length, 200);
      await again.close();
    });
  });
}

Deno.test("compactInBackground is refused once the engine is closing, and by a closed engine", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", memOpts(fs));
  await db.put(b("a"), b("1"));
  const closing = db.close();
  await assert.rejects(db.compactInBackground(), ClosedError);
  await closing;
  await assert.rejects(db.compactInBackground(), ClosedError);
});
