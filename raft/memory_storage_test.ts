import assert from "node:assert/strict";
import { RaftError } from "./errors.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { type Entry, EntryType } from "./types.ts";

function ents(from: number, to: number, term: number, size = 10): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) {
    out.push({ index: i, term, type: EntryType.Normal, data: new Uint8Array(size) });
  }
  return out;
}

Deno.test("memory storage: append truncates a conflicting suffix", () => {
  const s = new MemoryStorage();
  s.append(ents(1, 5, 1));
  s.append(ents(3, 3, 2));
  assert.equal(s.lastIndex(), 3);
  assert.equal(s.term(3), 2);
  assert.throws(() => s.append(ents(6, 6, 2)), RaftError, "gaps are refused");
});

Deno.test("memory storage: entries honour maxBytes but return at least one", () => {
  const s = new MemoryStorage();
  s.append(ents(1, 10, 1, 100));
  assert.equal(s.entries(1, 11, 250).length, 2);
  assert.equal(s.entries(1, 11, 1).length, 1);
  assert.equal(s.entries(1, 11).length, 10);
  assert.throws(() => s.entries(1, 12), (e: unknown) => (e as RaftError).kind === "LogUnavailable");
});

Deno.test("memory storage: snapshots and compaction move the first index", () => {
  const s = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  s.append(ents(1, 10, 1));
  s.append(ents(11, 20, 2));
  s.createSnapshot(15, { voters: [1, 2, 3], learners: [4] }, new Uint8Array([7]));
  s.compact(12);
  assert.equal(s.firstIndex(), 13);
  assert.equal(s.term(12), 2);
  assert.throws(() => s.term(11), (e: unknown) => (e as RaftError).kind === "LogCompacted");
  assert.throws(() => s.entries(12, 14), (e: unknown) => (e as RaftError).kind === "LogCompacted");
  assert.deepEqual(s.snapshot().meta, {
    index: 15,
    term: 2,
    confState: { voters: [1, 2, 3], learners: [4] },
  });
  s.applySnapshot({
    meta: { index: 50, term: 5, confState: { voters: [1], learners: [] } },
    data: new Uint8Array(),
  });
  assert.equal(s.firstIndex(), 51);
  assert.equal(s.lastIndex(), 50);
  assert.equal(s.term(50), 5);
  assert.deepEqual(s.initialState().confState, { voters: [1], learners: [] });
});
