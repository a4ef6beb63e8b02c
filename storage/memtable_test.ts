import assert from "node:assert/strict";
import { compareBytes, compareInternal } from "./coding.ts";
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

/** One entry of the sorted-array model. */
interface _ModelEntry {
  key: Uint8Array;
  seq: number;
  kind: number;
  value: Uint8Array;
}

function _sortModel(model: _ModelEntry[]): void {
  model.sort((x, y) => compareInternal(x.key, x.seq, y.key, y.seq));
}

/** Index of the first model entry at or after (`key`, `seq`) in internal order. */
function _lowerBound(model: _ModelEntry[], key: Uint8Array, seq: number): number {
  let lo = 0;
  let hi = model.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = model[mid]!;
    if (compareInternal(e.key, e.seq, key, seq) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Keys of 1–40 bytes from a small alphabet, so long shared prefixes and equal keys are common. */
function _randomKey(rng: Rng): Uint8Array {
  const len = 1 + rng.int(rng.int(4) === 0 ? 40 : 9);
  const k = new Uint8Array(len);
  for (let i = 0; i < len; i++) k[i] = i < 6 && rng.int(3) > 0 ? 0x61 : 0x61 + rng.int(3);
  if (rng.int(20) === 0) k[len - 1] = 0xff; // bytes above 0x7f compare unsigned
  return k;
}

Deno.test("memtable matches a sorted-array model: iteration, point lookups and seeks", () => {
  for (const seed of [1, 2, 3]) {
    const rng = new Rng(seed);
    // A tiny arena, so the table grows (copies) many times along the way.
    const m = new MemTable(7, { arenaBytes: 256 });
    const model: _ModelEntry[] = [];
    const n = 3000;
    // Sequence numbers are unique but not added in order (a replay adds them in order; the
    // table must not depend on it).
    const seqs = Array.from({ length: n }, (_, i) => i + 1);
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [seqs[i], seqs[j]] = [seqs[j]!, seqs[i]!];
    }
    let bytes = 0;
    for (const seq of seqs) {
      const key = _randomKey(rng);
      const kind = rng.int(5) === 0 ? KIND_DELETE : KIND_PUT;
      const value = kind === KIND_PUT ? rng.bytes(rng.int(50)) : new Uint8Array(0);
      m.add(key, seq, kind, value);
      model.push({ key, seq, kind, value });
      bytes += key.length + value.length;
    }
    _sortModel(model);
    assert.equal(m.count, n);
    assert.equal(m.logNumber, 7);
    assert.ok(m.bytes >= bytes + n * 20, `bytes ${m.bytes} counts keys, values and node headers`);
    assert.ok(m.bytes <= m.arenaBytes);

    const it = m.iterator();
    let i = 0;
    for (it.seekToFirst(); it.valid; it.next(), i++) {
      const e = model[i]!;
      assert.deepEqual(it.key, e.key);
      assert.equal(it.seq, e.seq);
      assert.equal(it.kind, e.kind);
      assert.deepEqual(it.value, e.value);
    }
    assert.equal(i, n);

    for (let q = 0; q < 2000; q++) {
      const key = rng.int(2) === 0 ? model[rng.int(n)]!.key : _randomKey(rng);
      const seq = rng.int(n + 2);
      const at = _lowerBound(model, key, seq);
      const want = model[at];
      const hit = m.get(key, seq);
      if (want !== undefined && compareBytes(want.key, key) === 0) {
        assert.ok(hit !== undefined, `get finds a version of a present key (seed ${seed})`);
        assert.equal(hit.kind, want.kind);
        assert.deepEqual(hit.value, want.value);
      } else {
        assert.equal(hit, undefined);
      }
      it.seek(key, seq);
      if (want === undefined) assert.equal(it.valid, false);
      else {
        assert.equal(it.valid, true);
        assert.deepEqual(it.key, want.key);
        assert.equal(it.seq, want.seq);
      }
    }
  }
});

Deno.test("memtable copies keys and values in: later changes to the caller's buffers do not show", () => {
  const m = new MemTable();
  const key = b("key-0001");
  const value = b("value-one");
  m.add(key, 1, KIND_PUT, value);
  key.fill(0x7a);
  value.fill(0x7a);
  assert.equal(s(m.get(b("key-0001"), 1)?.value), "value-one");
  assert.equal(m.get(key, 1), undefined);
});

Deno.test("memtable holds keys and values at the engine's limits (64 KiB keys, 4 MiB values)", () => {
  const rng = new Rng(11);
  const m = new MemTable(0, { arenaBytes: 1024 });
  const bigKey = (fill: number, last: number) => {
    const k = new Uint8Array(64 * 1024).fill(fill);
    k[k.length - 1] = last; // differs only in the last byte: the whole prefix is compared
    return k;
  };
  const k1 = bigKey(0x41, 1);
  const k2 = bigKey(0x41, 2);
  const v1 = rng.bytes(4 * 1024 * 1024);
  const v2 = rng.bytes(4 * 1024 * 1024);
  m.add(k2, 2, KIND_PUT, v2);
  m.add(k1, 3, KIND_PUT, v1);
  m.add(b("small"), 4, KIND_PUT, b("v"));
  m.add(k1, 5, KIND_DELETE, new Uint8Array(0));
  assert.ok(m.bytes >= 2 * (64 * 1024 + 4 * 1024 * 1024));
  assert.ok(m.arenaBytes >= m.bytes);
  assert.deepEqual(m.get(k1, 4)?.value, v1);
  assert.equal(m.get(k1, 5)?.kind, KIND_DELETE);
  assert.deepEqual(m.get(k2, 9)?.value, v2);
  assert.equal(m.get(k2, 1), undefined);
  const it = m.iterator();
  const seen: number[] = [];
  for (it.seekToFirst(); it.valid; it.next()) seen.push(it.seq);
  assert.deepEqual(seen, [5, 3, 2, 4]); // k1 (newest first), k2, then "small"
});

Deno.test("memtable orders and finds sequence numbers above 2^32 exactly", () => {
  const m = new MemTable();
  const base = 2 ** 40;
  const big = [base + 1, base + 2, 2 ** 32 + 5, 2 ** 53 - 1, 2 ** 32 - 1, 3];
  for (const seq of big) m.add(b("k"), seq, KIND_PUT, b(String(seq)));
  const it = m.iterator();
  const order: number[] = [];
  for (it.seekToFirst(); it.valid; it.next()) order.push(it.seq);
  assert.deepEqual(order, [...big].sort((x, y) => y - x));
  assert.equal(s(m.get(b("k"), base + 1)?.value), String(base + 1));
  assert.equal(s(m.get(b("k"), base)?.value), String(2 ** 32 + 5));
  assert.equal(s(m.get(b("k"), 2 ** 53 - 1)?.value), String(2 ** 53 - 1));
  assert.equal(s(m.get(b("k"), 2 ** 32 + 4)?.value), String(2 ** 32 - 1));
  it.seek(b("k"), 2 ** 32 + 4);
  assert.equal(it.seq, 2 ** 32 - 1);
});

Deno.test("memtable iterators stay valid while writes continue and the arena grows", () => {
  const rng = new Rng(5);
  const m = new MemTable(0, { arenaBytes: 512 });
  let seq = 0;
  const key = (i: number) => b(`k${String(i).padStart(5, "0")}`);
  for (let i = 0; i < 200; i += 2) m.add(key(i), ++seq, KIND_PUT, b(`v${i}`));
  const it = m.iterator();
  it.seek(key(100), Number.MAX_SAFE_INTEGER);
  const heldKey = it.key;
  const heldValue = it.value;
  const arenaBefore = m.arenaBytes;
  // Odd keys (some before, some after the iterator) and big values force the arena to grow.
  for (let i = 1; i < 200; i += 2) m.add(key(i), ++seq, KIND_PUT, rng.bytes(300));
  assert.ok(m.arenaBytes > arenaBefore, "the arena grew");
  // Views taken before the growth still read the same bytes.
  assert.equal(s(heldKey), "k00100");
  assert.equal(s(heldValue), "v100");
  // The iterator continues from where it was and sees the entries added after its position.
  const rest: string[] = [];
  for (; it.valid; it.next()) rest.push(s(it.key)!);
  assert.deepEqual(rest, Array.from({ length: 100 }, (_, i) => s(key(100 + i))!));
  // A fresh pass sees everything in order.
  let n = 0;
  for (it.seekToFirst(); it.valid; it.next()) assert.equal(s(it.key), s(key(n++)));
  assert.equal(n, 200);
});

Deno.test("memtable with no entries finds nothing; an empty key and value are stored", () => {
  const m = new MemTable();
  assert.equal(m.empty, true);
  const it = m.iterator();
  it.seekToFirst();
  assert.equal(it.valid, false);
  it.seek(b("a"), 1);
  assert.equal(it.valid, false);
  assert.equal(m.get(b("a"), 1), undefined);
  m.add(new Uint8Array(0), 1, KIND_PUT, new Uint8Array(0)); // the engine never adds an empty key
  assert.equal(m.empty, false);
  assert.equal(m.get(new Uint8Array(0), 1)?.kind, KIND_PUT);
  assert.equal(m.get(new Uint8Array(0), 1)?.value.length, 0);
});

Deno.test("memtable arena copies read back through fromArena, which refuses writes", () => {
  const rng = new Rng(9);
  const m = new MemTable(0, { arenaBytes: 512 });
  const added: Array<[Uint8Array, number]> = [];
  for (let seq = 1; seq <= 500; seq++) {
    const key = rng.bytes(1 + rng.int(30));
    m.add(key, seq, KIND_PUT, rng.bytes(rng.int(40)));
    added.push([key, seq]);
  }
  const copy = m.copyArena();
  assert.ok(copy.byteLength <= m.arenaBytes);
  const r = MemTable.fromArena(copy);
  const a = m.iterator();
  const c = r.iterator();
  let n = 0;
  for (a.seekToFirst(), c.seekToFirst(); a.valid; a.next(), c.next(), n++) {
    assert.equal(c.valid, true);
    assert.deepEqual(c.key, a.key);
    assert.equal(c.seq, a.seq);
    assert.deepEqual(c.value, a.value);
  }
  assert.equal(c.valid, false);
  assert.equal(n, 500);
  m.add(b("added later"), 501, KIND_PUT, b("not in the copy"));
  assert.equal(s(m.get(b("added later"), 501)?.value), "not in the copy");
  assert.equal(r.get(b("added later"), 501), undefined);
  const [key, seq] = added[123]!;
  assert.deepEqual(r.get(key, seq)?.value, m.get(key, seq)?.value);
  assert.throws(() => r.add(b("x"), 999, KIND_PUT, b("y")), TypeError);
});

Deno.test("a memtable on a released arena holds only its own entries; the released table is empty", () => {
  const rng = new Rng(11);
  const old = new MemTable(0, { arenaBytes: 64 * 1024 });
  // Tall towers in the old table: the new head must not keep any of their links.
  for (let seq = 1; seq <= 2000; seq++) old.add(b(`old${rng.int(100000)}`), seq, KIND_PUT, b("o"));
  const arenaBytes = old.arenaBytes;
  const arena = old.releaseArena();
  assert.equal(arena.byteLength, arenaBytes);
  assert.equal(old.count, 0);
  const it0 = old.iterator();
  it0.seekToFirst();
  assert.equal(it0.valid, false);
  assert.throws(() => old.add(b("x"), 1, KIND_PUT, b("x")));

  const m = new MemTable(1, { arena });
  assert.equal(m.arenaBytes, arenaBytes);
  const want = new Map<string, string>();
  for (let seq = 1; seq <= 300; seq++) {
    const k = `new${rng.int(1000)}`;
    m.add(b(k), seq, KIND_PUT, b(`v${seq}`));
    want.set(k, `v${seq}`);
  }
  const it = m.iterator();
  const seen: string[] = [];
  for (it.seekToFirst(); it.valid; it.next()) seen.push(s(it.key)!);
  assert.equal(seen.length, 300);
  assert.ok(seen.every((k) => k.startsWith("new")), "an old entry is still linked");
  for (const [k, v] of want) assert.equal(s(m.get(b(k), 1000)?.value), v);
  assert.equal(m.get(b("old1"), 1000), undefined);
  // The worker's copy sees the same (its height comes from the head's links).
  const copy = MemTable.fromArena(m.copyArena());
  const ci = copy.iterator();
  let n = 0;
  for (ci.seekToFirst(); ci.valid; ci.next()) n++;
  assert.equal(n, 300);
});
