import assert from "node:assert/strict";
import { MemFs } from "./fs.ts";
import { KVEngine } from "./mod.ts";
import { b, collect, s } from "./test_util.ts";

Deno.test("between the level-0 slowdown and stop counts, writes are delayed once each, never stopped", async () => {
  const fs = new MemFs();
  // No level-0 compaction below 50 tables: level 0 only grows, as when compaction lags behind.
  const db = await KVEngine.open("/db", {
    fs,
    log: () => {},
    memtableBytes: 4096,
    l0CompactionTrigger: 50,
    l0SlowdownWrites: 3,
    l0StopWrites: 60,
  });
  try {
    const value = new Uint8Array(200).fill(9);
    let expectedAtLeast = 0;
    let writes = 0;
    for (let i = 0; db.stats().levels[0]!.tables < 10; i++) {
      assert.ok(i < 2000, "level 0 never grew");
      if (db.stats().levels[0]!.tables >= 3) expectedAtLeast++;
      // One write at a time: each is its own write group.
      await db.write([{ type: "put", key: b(`k${String(i).padStart(6, "0")}`), value }]);
      writes++;
    }
    const st = db.stats();
    assert.ok(st.levels[0]!.tables >= 10 && st.levels[0]!.tables < 60);
    assert.ok(expectedAtLeast > 0);
    assert.ok(
      st.slowdowns >= expectedAtLeast && st.slowdowns <= writes,
      `slowdowns ${st.slowdowns}, writes at or past the soft limit ${expectedAtLeast}, writes ${writes}`,
    );
    assert.equal((await collect(db.scan())).length, writes);
  } finally {
    await db.close();
  }
});

Deno.test("below the level-0 slowdown count no write is delayed", async () => {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", { fs, log: () => {}, memtableBytes: 4096 });
  try {
    for (let i = 0; i < 300; i++) {
      await db.write([{ type: "put", key: b(`k${i % 50}`), value: new Uint8Array(100) }]);
    }
    // The default soft limit is 8 level-0 tables; compaction (trigger 4) keeps level 0 below it.
    assert.ok(db.stats().levels[0]!.tables < 8);
    assert.equal(db.stats().slowdowns, 0);
    assert.equal(s(await db.get(b("k7"))), "\0".repeat(100));
  } finally {
    await db.close();
  }
});

Deno.test("background compaction advances while a writer runs without ever waiting for I/O", async () => {
  const fs = new MemFs();
  const opts = { fs, log: () => {}, memtableBytes: 64 * 1024 };
  // Six level-0 tables of ~1500 entries each, left uncompacted (trigger 100)...
  let db = await KVEngine.open("/db", { ...opts, l0CompactionTrigger: 100 });
  const value = new Uint8Array(20).fill(1);
  for (let i = 0; db.stats().levels[0]!.tables < 6; i++) {
    assert.ok(i < 100_000);
    await db.put(b(`k${String(i % 20_000).padStart(6, "0")}`), value);
  }
  await db.close();
  // ...then reopened with the default trigger (4): a compaction of 9000+ entries starts, which
  // yields to the event loop every few thousand entries. The writer below never waits for I/O
  // (the in-memory file system resolves at once), so only its own yields let the compaction go on.
  db = await KVEngine.open("/db", { ...opts, memtableBytes: 4 * 1024 * 1024 });
  try {
    assert.ok(db.stats().levels[0]!.tables >= 6); // (the replayed WAL adds one)
    let writes = 0;
    const start = performance.now();
    while (db.stats().levels[0]!.tables >= 4 && performance.now() - start < 10_000) {
      await db.put(b(`w${writes++}`), value);
    }
    assert.ok(
      db.stats().levels[0]!.tables < 4,
      `level 0 still has ${db.stats().levels[0]!.tables} tables after ${writes} writes`,
    );
    assert.equal(db.stats().memtableBytes > 0, true);
  } finally {
    await db.close();
  }
});
