import assert from "node:assert/strict";
import { BlockCache } from "./block_cache.ts";
import { CorruptionError } from "./errors.ts";
import { MemFs } from "./fs.ts";
import { KIND_DELETE, KIND_PUT } from "./iterator.ts";
import {
  type Block,
  bloomHash,
  LevelIterator,
  recycleBlock,
  Table,
  TableBuilder,
  writeTableFile,
} from "./sstable.ts";
import { b, Rng, s } from "./test_util.ts";

async function buildTable(fs: MemFs, path: string, n: number, number = 1) {
  const builder = new TableBuilder();
  for (let i = 0; i < n; i++) {
    const key = b(`key-${String(i).padStart(6, "0")}`);
    // Two versions for every key: seq 2i+2 (newest) then 2i+1.
    builder.add(
      key,
      2 * i + 2,
      i % 10 === 0 ? KIND_DELETE : KIND_PUT,
      i % 10 === 0 ? new Uint8Array(0) : b(`new-${i}`),
    );
    builder.add(key, 2 * i + 1, KIND_PUT, b(`old-${i}`));
  }
  const { bytes, info } = builder.finish();
  await writeTableFile(fs, path, bytes);
  const cache = new BlockCache<Block>(1 << 20);
  return { table: await Table.open(fs, path, { number, cache }), info, cache };
}

Deno.test("sstable point lookups find the right version with one block read", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { table, info, cache } = await buildTable(fs, "/t/000001.sst", 5000);
  assert.equal(info.entries, 10000);
  assert.equal(s(info.smallest), "key-000000");
  assert.equal(s(info.largest), "key-004999");
  assert.ok(table.blockCount > 50);
  for (let i = 0; i < 5000; i += 7) {
    const key = b(`key-${String(i).padStart(6, "0")}`);
    const before = cache.misses + cache.hits;
    const newest = table.get(key, Number.MAX_SAFE_INTEGER, bloomHash(key));
    assert.ok(cache.misses + cache.hits - before <= 1, "at most one block per lookup");
    if (i % 10 === 0) assert.equal(newest?.kind, KIND_DELETE);
    else assert.equal(s(newest?.value), `new-${i}`);
    assert.equal(s(table.get(key, 2 * i + 1, bloomHash(key))?.value), `old-${i}`);
    assert.equal(table.get(key, 2 * i, bloomHash(key)), undefined);
  }
  const missing = b("key-999999x");
  assert.equal(table.get(missing, Number.MAX_SAFE_INTEGER, bloomHash(missing)), undefined);
  table.close();
});

Deno.test("sstable iterator and level iterator scan and seek in order", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { table } = await buildTable(fs, "/t/000001.sst", 1000);
  const it = table.iterator();
  let n = 0;
  let prev = "";
  for (it.seekToFirst(); it.valid; it.next()) {
    const k = s(it.key)!;
    assert.ok(k >= prev);
    prev = k;
    n++;
  }
  assert.equal(n, 2000);
  it.seek(b("key-000500"), Number.MAX_SAFE_INTEGER);
  assert.equal(s(it.key), "key-000500");
  assert.equal(it.seq, 1002);
  const level = new LevelIterator([table], [b("key-000000")], [b("key-000999")]);
  level.seek(b("key-000999x"), 0);
  assert.equal(level.valid, false);
  level.seek(b("a"), 0);
  assert.equal(s(level.key), "key-000000");
  table.close();
});

Deno.test("sstable open rejects a bad magic or footer with a Corruption error", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { table } = await buildTable(fs, "/t/000001.sst", 100);
  table.close();
  const raw = fs.raw("/t/000001.sst")!;
  raw[raw.length - 1]! ^= 0xff;
  await assert.rejects(
    Table.open(fs, "/t/000001.sst", { number: 1, cache: new BlockCache(0) }),
    (e) => e instanceof CorruptionError && e.file === "/t/000001.sst",
  );
  raw[raw.length - 1]! ^= 0xff;
  raw[raw.length - 20]! ^= 0x01; // inside the footer's checksummed part
  await assert.rejects(
    Table.open(fs, "/t/000001.sst", { number: 1, cache: new BlockCache(0) }),
    CorruptionError,
  );
  // The synchronous open (lazy table opening) runs the same checks.
  assert.throws(
    () => Table.openSync(fs, "/t/000001.sst", { number: 1, cache: new BlockCache(0) }),
    (e) => e instanceof CorruptionError && e.file === "/t/000001.sst",
  );
  raw[raw.length - 20]! ^= 0x01;
  const t = Table.openSync(fs, "/t/000001.sst", { number: 1, cache: new BlockCache(0) });
  assert.equal(t.entries, 200); // two versions per key
  t.close();
  assert.throws(
    () => Table.openSync(fs, "/t/missing.sst", { number: 2, cache: new BlockCache(0) }),
    Deno.errors.NotFound,
  );
});

Deno.test("sequential iterator reads the same entries as the block iterator, in chunks of blocks", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { table } = await buildTable(fs, "/t/000001.sst", 3000);
  const expected: string[] = [];
  const it = table.iterator();
  for (it.seekToFirst(); it.valid; it.next()) {
    expected.push(`${s(it.key)}@${it.seq}:${it.kind}:${s(it.value)}`);
  }
  // One block per read, a few blocks per read, and the whole table in one read.
  for (const chunk of [1, 10_000, 256 * 1024]) {
    const seqIt = table.sequentialIterator(chunk);
    const got: string[] = [];
    for (seqIt.seekToFirst(); seqIt.valid; seqIt.next()) {
      got.push(`${s(seqIt.key)}@${seqIt.seq}:${seqIt.kind}:${s(seqIt.value)}`);
    }
    assert.deepEqual(got, expected, `chunk ${chunk}`);
    seqIt.seek(b("key-001500"), Number.MAX_SAFE_INTEGER);
    assert.equal(s(seqIt.key), "key-001500");
    assert.equal(seqIt.seq, 3002);
    seqIt.next();
    assert.equal(seqIt.seq, 3001);
    seqIt.seek(b("key-999999"), 0);
    assert.equal(seqIt.valid, false);
  }
  // A level iterator in sequential mode sees the same entries.
  const level = new LevelIterator([table], [b("key-000000")], [b("key-002999")], true);
  let n = 0;
  for (level.seekToFirst(); level.valid; level.next()) n++;
  assert.equal(n, expected.length);
  table.close();
});

Deno.test("sequential iterator returns the blocks before a corrupt one, then a Corruption error naming it", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { table } = await buildTable(fs, "/t/000001.sst", 2000);
  const blocks = table.blockCount;
  table.close();
  // Flip a byte in the middle of the file's data blocks.
  const raw = fs.raw("/t/000001.sst")!;
  const sizeOfData = raw.length / 2; // well inside the data blocks
  raw[Math.floor(sizeOfData)]! ^= 0x55;
  const cache = new BlockCache<Block>(0);
  const t = await Table.open(fs, "/t/000001.sst", { number: 1, cache });
  // The block iterator tells how many entries precede the bad block.
  let before = 0;
  const plain = t.iterator();
  assert.throws(() => {
    for (plain.seekToFirst(); plain.valid; plain.next()) before++;
  }, CorruptionError);
  assert.ok(before > 0 && blocks > 2);
  const seqIt = t.sequentialIterator(64 * 1024);
  let n = 0;
  assert.throws(
    () => {
      for (seqIt.seekToFirst(); seqIt.valid; seqIt.next()) n++;
    },
    (e) => e instanceof CorruptionError && e.file === "/t/000001.sst" && e.offset > 0,
  );
  assert.equal(n, before);
  t.close();
});

Deno.test("point lookups recycle evicted blocks; an iterator's blocks are neither cached nor recycled", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const { bytes } = (() => {
    const builder = new TableBuilder();
    for (let i = 0; i < 5000; i++) {
      builder.add(b(`key-${String(i).padStart(6, "0")}`), 1, KIND_PUT, b(`value-${i}-`.repeat(3)));
    }
    return builder.finish();
  })();
  await writeTableFile(fs, "/t/000007.sst", bytes);
  // Room for two blocks: nearly every lookup evicts one, whose buffer the next read reuses.
  const cache = new BlockCache<Block>(2 * 4200, recycleBlock);
  const table = await Table.open(fs, "/t/000007.sst", { number: 7, cache });
  assert.ok(table.blockCount > 20);
  const it = table.iterator();
  it.seek(b("key-001000"), Number.MAX_SAFE_INTEGER);
  const heldKey = it.key;
  const heldValue = it.value;
  const used = cache.used;
  const rng = new Rng(5);
  for (let n = 0; n < 2000; n++) {
    const i = rng.int(5000);
    const key = b(`key-${String(i).padStart(6, "0")}`);
    const got = table.get(key, Number.MAX_SAFE_INTEGER, bloomHash(key));
    assert.equal(s(got?.value), `value-${i}-`.repeat(3));
    if (n === 0) assert.ok(cache.used > used, "a lookup's block is cached");
  }
  // The iterator's block was read for it alone: still intact after all that recycling.
  assert.equal(s(heldKey), "key-001000");
  assert.equal(s(heldValue), "value-1000-".repeat(3));
  const before = cache.used;
  let i = 1000;
  for (; it.valid; it.next(), i++) {
    assert.equal(s(it.key), `key-${String(i).padStart(6, "0")}`);
    assert.equal(s(it.value), `value-${i}-`.repeat(3));
  }
  assert.equal(i, 5000);
  assert.equal(cache.used, before, "an iterator's reads do not fill the cache");
  table.close();
});

Deno.test("table builders built interleaved keep their own bloom hashes", async () => {
  const fs = new MemFs();
  await fs.mkdir("/t");
  const a = new TableBuilder();
  const c = new TableBuilder();
  // More keys than a pooled hash buffer's first size, so both grow.
  for (let i = 0; i < 40000; i++) {
    a.add(b(`a-${String(i).padStart(6, "0")}`), 1, KIND_PUT, b("x"));
    c.add(b(`c-${String(i).padStart(6, "0")}`), 1, KIND_PUT, b("y"));
  }
  await writeTableFile(fs, "/t/000001.sst", a.finish().bytes);
  // A third builder takes the buffer `a` gave back while `c` is still being built.
  const d = new TableBuilder();
  for (let i = 0; i < 100; i++) d.add(b(`d-${String(i).padStart(6, "0")}`), 1, KIND_PUT, b("z"));
  await writeTableFile(fs, "/t/000002.sst", c.finish().bytes);
  await writeTableFile(fs, "/t/000003.sst", d.finish().bytes);
  const cache = new BlockCache<Block>(0);
  const tables = [
    { t: await Table.open(fs, "/t/000001.sst", { number: 1, cache }), p: "a", n: 40000 },
    { t: await Table.open(fs, "/t/000002.sst", { number: 2, cache }), p: "c", n: 40000 },
    { t: await Table.open(fs, "/t/000003.sst", { number: 3, cache }), p: "d", n: 100 },
  ];
  for (const { t, p, n } of tables) {
    for (let i = 0; i < n; i++) {
      const key = b(`${p}-${String(i).padStart(6, "0")}`);
      assert.ok(t.mayContain(bloomHash(key)), `${s(key)} filtered out`);
    }
    t.close();
  }
});
