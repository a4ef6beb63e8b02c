/**
 * Corruption tests: a flipped byte anywhere in a table, the manifest, CURRENT or the middle of
 * the WAL gives a typed Corruption error or correct data — never wrong data; a torn WAL tail is
 * truncated, logged and recovered.
 */
import assert from "node:assert/strict";
import { getU32 } from "./coding.ts";
import { MemFs } from "./fs.ts";
import { CorruptionError, KVEngine, type KVEngineOptions } from "./mod.ts";
import { FOOTER_SIZE } from "./sstable.ts";
import { b, collect, s } from "./test_util.ts";

const N = 300;
const key = (i: number) => b(`key-${String(i).padStart(5, "0")}`);
const val = (i: number) => `value-${i}-`.repeat(3);

function opts(fs: MemFs, extra: KVEngineOptions = {}): KVEngineOptions {
  return { fs, log: () => {}, ...extra };
}

/** A closed database whose data sits in one table (and an empty WAL). */
async function tableDb(): Promise<{ fs: MemFs; sst: string }> {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", opts(fs));
  for (let i = 0; i < N; i += 50) {
    await db.write(
      Array.from(
        { length: 50 },
        (_, j) => ({ type: "put" as const, key: key(i + j), value: b(val(i + j)) }),
      ),
    );
  }
  await db.compact();
  await db.close();
  const ssts = (await fs.list("/db")).filter((n) => n.endsWith(".sst"));
  assert.equal(ssts.length, 1);
  return { fs, sst: `/db/${ssts[0]}` };
}

/**
 * Opens and reads everything: "corrupt" when the open or every read failed with a Corruption
 * error (tables are opened on first use, so a bad footer, index or filter fails every read),
 * "partial" when some did, "ok" when every read was right.
 */
async function readAllOrCorrupt(fs: MemFs): Promise<"ok" | "corrupt" | "partial"> {
  let db: KVEngine;
  try {
    db = await KVEngine.open("/db", opts(fs));
  } catch (e) {
    if (e instanceof CorruptionError) return "corrupt";
    throw e;
  }
  let errors = 0;
  try {
    for (let i = 0; i < N; i++) {
      try {
        assert.equal(s(await db.get(key(i))), val(i), `wrong data for key ${i}`);
      } catch (e) {
        if (!(e instanceof CorruptionError)) throw e;
        errors++;
      }
    }
    try {
      const all = await collect(db.scan());
      assert.equal(all.length, N);
      all.forEach((kv, i) => assert.equal(s(kv.value), val(i)));
    } catch (e) {
      if (!(e instanceof CorruptionError)) throw e;
      errors++;
    }
  } finally {
    await db.close();
  }
  return errors === N + 1 ? "corrupt" : errors > 0 ? "partial" : "ok";
}

Deno.test("corruption: a flipped byte anywhere in a table never yields wrong data", async () => {
  const { fs, sst } = await tableDb();
  const raw = fs.raw(sst)!;
  const outcomes = { ok: 0, corrupt: 0, partial: 0 };
  for (let p = 0; p < raw.length; p += 13) {
    raw[p]! ^= 0x10;
    outcomes[await readAllOrCorrupt(fs)]++;
    raw[p]! ^= 0x10;
  }
  assert.equal(outcomes.ok, 0, "every flip is detected");
  assert.ok(outcomes.partial > 0 && outcomes.corrupt > 0);
  assert.equal(await readAllOrCorrupt(fs), "ok");
});

Deno.test("corruption: data block, index and bloom filter flips give typed errors naming the table", async () => {
  const { fs, sst } = await tableDb();
  const raw = fs.raw(sst)!;
  const footer = raw.length - FOOTER_SIZE;
  const indexOffset = getU32(raw, footer);
  const bloomOffset = getU32(raw, footer + 12);
  // Data block 0: open works, a lookup in that block fails with the table and block offset.
  raw[20]! ^= 1;
  const db = await KVEngine.open("/db", opts(fs));
  await assert.rejects(
    db.get(key(0)),
    (e) => e instanceof CorruptionError && e.file === sst && e.offset === 0,
  );
  assert.equal(s(await db.get(key(N - 1))), val(N - 1), "other blocks still read");
  await db.close();
  raw[20]! ^= 1;
  // Index and filter: the table is opened on its first use, which fails (and so does every
  // later one: the failed open is not cached).
  for (const [what, offset] of [["index", indexOffset + 3], ["bloom", bloomOffset + 3]] as const) {
    raw[offset]! ^= 1;
    const db = await KVEngine.open("/db", opts(fs));
    try {
      for (const k of [key(0), key(N - 1)]) {
        await assert.rejects(
          db.get(k),
          (e) => e instanceof CorruptionError && e.file === sst && e.message.includes(what),
        );
      }
    } finally {
      await db.close();
    }
    raw[offset]! ^= 1;
  }
  assert.equal(await readAllOrCorrupt(fs), "ok");
});

Deno.test("corruption: a flipped manifest or CURRENT byte is a typed error; a missing table too", async () => {
  const { fs, sst } = await tableDb();
  const manifest = `/db/${(await fs.list("/db")).find((n) => n.startsWith("MANIFEST-"))}`;
  const raw = fs.raw(manifest)!;
  for (let p = 0; p < raw.length; p += 5) {
    raw[p]! ^= 0x04;
    // Mostly the manifest is named; a flipped length in the last edit reads as a torn append,
    // and then the rolled-back state names a table that compaction already deleted.
    await assert.rejects(
      KVEngine.open("/db", opts(fs)),
      (e) => e instanceof CorruptionError && (e.file === manifest || e.file.endsWith(".sst")),
    );
    raw[p]! ^= 0x04;
  }
  const current = fs.raw("/db/CURRENT")!;
  current[3]! ^= 0x20;
  await assert.rejects(KVEngine.open("/db", opts(fs)), CorruptionError);
  current[3]! ^= 0x20;
  await fs.remove(sst);
  await assert.rejects(
    KVEngine.open("/db", opts(fs)),
    (e) => e instanceof CorruptionError && e.file === sst,
  );
});

async function walDb(): Promise<{ fs: MemFs; wal: string; offsets: number[] }> {
  const fs = new MemFs();
  const db = await KVEngine.open("/db", opts(fs, { memtableBytes: 1 << 20, flushOnClose: false }));
  const wal = `/db/${(await fs.list("/db")).find((n) => n.endsWith(".log"))}`;
  const offsets: number[] = [];
  for (let i = 0; i < 10; i++) {
    offsets.push(fs.raw(wal)!.length);
    await db.write(
      Array.from(
        { length: 30 },
        (_, j) => ({ type: "put" as const, key: key(i * 30 + j), value: b(val(i * 30 + j)) }),
      ),
    );
  }
  await db.close(); // the writes stay in the WAL only
  return { fs, wal, offsets };
}

Deno.test("corruption: a bad record in the middle of the WAL fails open with file and offset", async () => {
  const { fs, wal, offsets } = await walDb();
  for (const rec of [0, 4, 8]) {
    const at = offsets[rec]! + 30;
    fs.raw(wal)![at]! ^= 0x01;
    await assert.rejects(
      KVEngine.open("/db", opts(fs)),
      (e) => e instanceof CorruptionError && e.file === wal && e.offset === offsets[rec],
    );
    fs.raw(wal)![at]! ^= 0x01;
  }
  assert.equal(await readAllOrCorrupt(fs), "ok");
});

Deno.test("corruption: a torn WAL tail is truncated, logged and the rest recovered", async () => {
  const { fs, wal, offsets } = await walDb();
  const f = await fs.openAppend(wal);
  await f.truncate(f.size() - 7);
  const logs: string[] = [];
  const db = await KVEngine.open("/db", { fs, log: (m) => logs.push(m) });
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, new RegExp(`torn tail at offset ${offsets[9]}`));
  for (let i = 0; i < 270; i++) assert.equal(s(await db.get(key(i))), val(i));
  for (let i = 270; i < 300; i++) assert.equal(await db.get(key(i)), undefined);
  await db.put(b("after"), b("1"));
  await db.close();
  const again = await KVEngine.open("/db", opts(fs));
  assert.equal(s(await again.get(b("after"))), "1");
  assert.equal(s(await again.get(key(269))), val(269));
  await again.close();
});
