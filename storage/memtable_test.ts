import assert from "node:assert/strict";
import { compareInternal } from "./coding.ts";
import { KIND_DELETE, KIND_PUT } from "./iterator.ts";
import { MemTable } from "./memtable.ts";
import { b, Rng, s } from "./test_util.ts";

Deno.test("memtable returns the newest version visible at a sequence number", () => {
  const m = new MemTable();
  m.add(b("k"), 1, KIND_PUT, b("v1"));
  m.add(b("k"), 3, KIND_PUT, b("v3"));
  m.add(b("k"), 5, KIND_DELETE, new Uint8Array(0));
  m.add(b("j"), 2, KIND_PUT, b("j2"));
  assert.equal(s(m.get(b("k"), 2)?.value), "v1");
  assert.equal(s(m.get(b("k"), 4)?.value), "v3");
  assert.equal(m.get(b("k"), 9)?.kind, KIND_DELETE);
  assert.equal(m.get(b("k"), 0), undefined);
  assert.equal(m.get(b("zz"), 9), undefined);
  assert.equal(m.count, 4);
});

Deno.test("memtable iterator walks internal keys in order and seeks", () => {
  const rng = new Rng(7);
  const m = new MemTable();
  const added: Array<[Uint8Array, number]> = [];
  for (let seq = 1; seq <= 2000; seq++) {
    const key = b(`k${rng.int(300)}`);
    m.add(key, seq, KIND_PUT, b(`${seq}`));
    added.push([key, seq]);
  }
  added.sort((x, y) => compareInternal(x[0], x[1], y[0], y[1]));
  const it = m.iterator();
  let i = 0;
  for (it.seekToFirst(); it.valid; it.next()) {
    assert.deepEqual(it.key, added[i]![0]);
    assert.equal(it.seq, added[i]![1]);
    i++;
  }
  assert.equal(i, added.length);
  const target = added[777]!;
  it.seek(target[0], target[1]);
  assert.equal(it.seq, target[1]);
});
