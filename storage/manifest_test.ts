import assert from "node:assert/strict";
import { compareBytes } from "./coding.ts";
import { CorruptionError } from "./errors.ts";
import { MemFs } from "./fs.ts";
import {
  applyEdit,
  decodeEdit,
  editRecord,
  emptyState,
  encodeEdit,
  readManifest,
  snapshotEdit,
  type TableMeta,
} from "./manifest.ts";
import { b } from "./test_util.ts";

function meta(level: number, number: number, lo: string, hi: string): TableMeta {
  return { level, number, size: 100, entries: 3, smallest: b(lo), largest: b(hi) };
}

Deno.test("manifest edits round-trip and apply in order", () => {
  const edit = {
    logNumber: 4,
    nextFile: 9,
    lastSeq: 77,
    add: [meta(1, 5, "a", "c")],
    del: [[0, 2]] as Array<[number, number]>,
  };
  assert.deepEqual(decodeEdit(encodeEdit(edit)), edit);
  const st = emptyState();
  applyEdit(
    st,
    { add: [meta(0, 2, "a", "z"), meta(1, 3, "m", "p"), meta(1, 4, "a", "b")] },
    compareBytes,
  );
  applyEdit(st, edit, compareBytes);
  assert.deepEqual(st.levels[0], []);
  assert.deepEqual(st.levels[1]!.map((t) => t.number), [4, 5, 3]);
  assert.equal(st.nextFile, 9);
  applyEdit(st, { nextFile: 3, lastSeq: 1 }, compareBytes);
  assert.equal(st.nextFile, 9, "counters never go back");
  assert.equal(st.lastSeq, 77);
  assert.throws(() => decodeEdit(b("{nope")), RangeError);
});

Deno.test("manifest ignores a torn last edit and rejects a corrupt middle edit", async () => {
  const fs = new MemFs();
  await fs.mkdir("/m");
  const st = emptyState();
  const recs = [
    editRecord(snapshotEdit(st)),
    editRecord({ add: [meta(0, 7, "a", "b")], nextFile: 8 }),
    editRecord({ add: [meta(0, 8, "c", "d")], nextFile: 9 }),
  ];
  const f = await fs.openAppend("/m/MANIFEST-000001");
  for (const r of recs) await f.append(r);
  const c = await fs.openAppend("/m/CURRENT");
  await c.append(b("MANIFEST-000001\n"));
  const logs: string[] = [];
  const opts = { compare: compareBytes, log: (m: string) => logs.push(m) };
  const full = await readManifest(fs, "/m", opts);
  assert.deepEqual(full!.state.levels[0]!.map((t) => t.number), [7, 8]);
  await f.truncate(f.size() - 5);
  const torn = await readManifest(fs, "/m", opts);
  assert.deepEqual(torn!.state.levels[0]!.map((t) => t.number), [7]);
  assert.equal(logs.length, 1);
  await f.append(recs[2]!.subarray(recs[2]!.length - 5)); // whole again
  // A complete last record with a bad checksum is corruption, not a torn append.
  const last = recs[0]!.length + recs[1]!.length + 12;
  fs.raw("/m/MANIFEST-000001")![last]! ^= 1;
  await assert.rejects(readManifest(fs, "/m", opts), CorruptionError);
  fs.raw("/m/MANIFEST-000001")![last]! ^= 1;
  fs.raw("/m/MANIFEST-000001")![recs[0]!.length + 10]! ^= 1;
  await assert.rejects(
    readManifest(fs, "/m", opts),
    (e) => e instanceof CorruptionError && e.offset === recs[0]!.length,
  );
});

Deno.test("manifest is absent for a new directory", async () => {
  const fs = new MemFs();
  await fs.mkdir("/m");
  assert.equal(await readManifest(fs, "/m", { compare: compareBytes, log: () => {} }), undefined);
});
