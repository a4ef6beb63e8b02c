import assert from "node:assert/strict";
import { CorruptionError } from "./errors.ts";
import { MemFs } from "./fs.ts";
import { KIND_DELETE, KIND_PUT } from "./iterator.ts";
import { readWalSegment, WalEncoder } from "./wal.ts";
import { b, s } from "./test_util.ts";

async function writeGroups(fs: MemFs, path: string, groups: number): Promise<number[]> {
  const f = await fs.openAppend(path);
  const enc = new WalEncoder();
  const offsets: number[] = [];
  let seq = 1;
  for (let g = 0; g < groups; g++) {
    offsets.push(f.size());
    enc.begin(seq);
    enc.add(KIND_PUT, b(`k${g}`), b(`v${g}`));
    enc.add(KIND_DELETE, b(`d${g}`), new Uint8Array(0));
    seq += 2;
    await f.append(enc.finish());
  }
  await f.sync();
  return offsets;
}

Deno.test("wal replays every entry of every group in order", async () => {
  const fs = new MemFs();
  await fs.mkdir("/w");
  await writeGroups(fs, "/w/000001.log", 10);
  const seen: string[] = [];
  const res = await readWalSegment(fs, "/w/000001.log", (seq, kind, key, value) => {
    seen.push(`${seq}:${kind}:${s(key)}:${s(value)}`);
  });
  assert.equal(res.tornAt, undefined);
  assert.equal(seen.length, 20);
  assert.equal(seen[0], "1:1:k0:v0");
  assert.equal(seen[1], "2:0:d0:");
  assert.equal(seen[19], "20:0:d9:");
});

Deno.test("wal recovers a torn tail", async () => {
  const fs = new MemFs();
  await fs.mkdir("/w");
  const offsets = await writeGroups(fs, "/w/000001.log", 5);
  const f = await fs.openAppend("/w/000001.log");
  await f.truncate(f.size() - 3);
  let n = 0;
  const res = await readWalSegment(fs, "/w/000001.log", () => n++);
  assert.equal(n, 8);
  assert.equal(res.tornAt?.offset, offsets[4]);
  assert.equal(res.validEnd, offsets[4]);
});

Deno.test("wal reports mid-log corruption with file and offset", async () => {
  const fs = new MemFs();
  await fs.mkdir("/w");
  const offsets = await writeGroups(fs, "/w/000001.log", 5);
  fs.raw("/w/000001.log")![offsets[2]! + 12]! ^= 0x40;
  await assert.rejects(
    readWalSegment(fs, "/w/000001.log", () => {}),
    (e) => e instanceof CorruptionError && e.file === "/w/000001.log" && e.offset === offsets[2],
  );
});

Deno.test("wal encoder reuses its scratch buffer across small and oversized groups", async () => {
  const fs = new MemFs();
  await fs.mkdir("/w");
  const f = await fs.openAppend("/w/000001.log");
  const enc = new WalEncoder();
  // Sizes straddle the scratch limit (1 MiB): the big group grows the buffer, the next one
  // shrinks it again; every record must be intact once appended.
  const sizes = [10, 2 * 1024 * 1024, 10, 300 * 1024, 10];
  const records: Uint8Array[] = [];
  for (let g = 0; g < sizes.length; g++) {
    enc.begin(g + 1);
    enc.add(KIND_PUT, b(`k${g}`), new Uint8Array(sizes[g]!).fill(g + 1));
    const rec = enc.finish();
    records.push(rec);
    await f.append(rec);
  }
  // Returned records are views of one reused buffer (no per-group allocation)...
  assert.equal(records[3]!.buffer, records[4]!.buffer);
  // ...yet the file holds every group intact.
  await f.sync();
  const seen: string[] = [];
  const res = await readWalSegment(fs, "/w/000001.log", (seq, kind, key, value) => {
    assert.ok(value.every((x) => x === seq), `value bytes of group ${seq}`);
    seen.push(`${seq}:${kind}:${s(key)}:${value.length}`);
  });
  assert.equal(res.tornAt, undefined);
  assert.deepEqual(seen, sizes.map((n, g) => `${g + 1}:${KIND_PUT}:k${g}:${n}`));
});
