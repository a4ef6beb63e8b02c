import assert from "node:assert/strict";
import { LogCorruptionError } from "./errors.ts";
import { RaftLogStore } from "./log_store.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { mulberry32 } from "./testing.ts";
import { type Entry, EntryType } from "./types.ts";

const enc = new TextEncoder();

function ents(from: number, to: number, term: number, size = 8): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) {
    const data = new Uint8Array(size).fill(i & 0xff);
    out.push({ index: i, term, type: EntryType.Normal, data });
  }
  return out;
}

function dump(s: RaftLogStore): string[] {
  if (s.lastIndex() < s.firstIndex()) return [];
  return s.entries(s.firstIndex(), s.lastIndex() + 1).map((e) =>
    `${e.index}@${e.term}:${e.data[0]}`
  );
}

async function segFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".rlog")) out.push(e.name);
  return out.sort();
}

Deno.test("log store recovers synced entries and hard state exactly", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 100, 1));
  s.append([{ index: 101, term: 2, type: EntryType.ConfChange, data: enc.encode("cc") }]);
  s.setHardState({ term: 2, vote: 3, commit: 90 });
  await s.sync();
  const before = dump(s);
  await s.close();
  const r = await RaftLogStore.open(dir);
  assert.deepEqual(dump(r), before);
  assert.deepEqual(r.initialState().hardState, { term: 2, vote: 3, commit: 90 });
  assert.equal(r.entries(101, 102)[0]!.type, EntryType.ConfChange);
  assert.equal(r.term(101), 2);
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store loses only the unsynced tail on a crash", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 10, 1));
  s.setHardState({ term: 1, vote: 1, commit: 5 });
  await s.sync();
  s.append(ents(11, 20, 1));
  s.setHardState({ term: 2, vote: 2, commit: 15 });
  s.closeWithoutSync();
  const r = await RaftLogStore.open(dir);
  assert.equal(r.lastIndex(), 10);
  assert.deepEqual(r.initialState().hardState, { term: 1, vote: 1, commit: 5 });
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store truncates a torn tail and keeps appending after it", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 10, 1));
  await s.sync();
  await s.close();
  const [seg] = await segFiles(dir);
  const path = `${dir}/${seg}`;
  const goodSize = (await Deno.stat(path)).size;
  // A torn append: half of a record, then zeros (as a file system may leave it).
  const torn = new Uint8Array(40);
  torn.set([1, 2, 3, 4, 200, 0, 0, 0, 2, 9, 9]);
  await Deno.writeFile(path, torn, { append: true });
  const r = await RaftLogStore.open(dir);
  assert.equal(r.lastIndex(), 10);
  assert.equal((await Deno.stat(path)).size, goodSize, "tail truncated");
  r.append(ents(11, 12, 1));
  await r.sync();
  await r.close();
  const r2 = await RaftLogStore.open(dir);
  assert.equal(r2.lastIndex(), 12);
  await r2.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store reports mid-log corruption with file and offset", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 50, 1));
  await s.sync();
  await s.close();
  const [seg] = await segFiles(dir);
  const path = `${dir}/${seg}`;
  const buf = await Deno.readFile(path);
  const at = Math.floor(buf.length / 2);
  buf[at] = buf[at]! ^ 0xff;
  await Deno.writeFile(path, buf);
  await assert.rejects(() => RaftLogStore.open(dir), (e: unknown) => {
    assert.ok(e instanceof LogCorruptionError);
    assert.equal(e.file, path);
    assert.ok(e.offset > 0 && e.offset <= at, `offset ${e.offset} near ${at}`);
    return true;
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store truncates a conflicting suffix, durably", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 5, 1));
  await s.sync();
  s.append(ents(3, 4, 2));
  assert.equal(s.lastIndex(), 4);
  await s.sync();
  await s.close();
  const r = await RaftLogStore.open(dir);
  assert.deepEqual(dump(r), ["1@1:1", "2@1:2", "3@2:3", "4@2:4"]);
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store compaction drops whole segments and recovers the new first index", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir, { segmentBytes: 2048 });
  for (let i = 1; i <= 400; i += 20) {
    s.append(ents(i, i + 19, 1 + Math.floor(i / 100), 64));
    s.setHardState({ term: 1 + Math.floor(i / 100), vote: 1, commit: i + 19 });
    await s.sync();
  }
  const segsBefore = (await segFiles(dir)).length;
  assert.ok(segsBefore > 5, `rolled segments: ${segsBefore}`);
  s.createSnapshot(300, { voters: [1, 2, 3], learners: [4] });
  s.compact(300);
  await s.sync();
  const segsAfter = (await segFiles(dir)).length;
  assert.ok(segsAfter < segsBefore / 2, `${segsAfter} < ${segsBefore}/2`);
  assert.equal(s.firstIndex(), 301);
  const expected = dump(s);
  const termAt300 = s.term(300);
  await s.close();
  const r = await RaftLogStore.open(dir, { segmentBytes: 2048 });
  assert.equal(r.firstIndex(), 301);
  assert.equal(r.lastIndex(), 400);
  assert.equal(r.term(300), termAt300);
  assert.deepEqual(dump(r), expected);
  assert.deepEqual(r.snapshot().meta, {
    index: 300,
    term: termAt300,
    confState: { voters: [1, 2, 3], learners: [4] },
  });
  assert.deepEqual(r.initialState().hardState, { term: 4, vote: 1, commit: 400 });
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store installs a leader snapshot, replacing the log", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir, { segmentBytes: 4096 });
  s.append(ents(1, 30, 1));
  await s.sync();
  const meta = { index: 1000, term: 7, confState: { voters: [1, 2, 3], learners: [] } };
  s.applySnapshot({ meta, data: new Uint8Array(0) });
  s.append(ents(1001, 1003, 7));
  s.setHardState({ term: 7, vote: 0, commit: 1001 });
  await s.sync();
  assert.equal((await segFiles(dir)).length, 1, "pre-snapshot segment deleted");
  await s.close();
  const r = await RaftLogStore.open(dir);
  assert.equal(r.firstIndex(), 1001);
  assert.equal(r.lastIndex(), 1003);
  assert.equal(r.term(1000), 7);
  assert.deepEqual(r.snapshot().meta, meta);
  assert.deepEqual(r.initialState().confState, meta.confState);
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store group commit: concurrent syncs all resolve durable", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  const ps: Promise<void>[] = [];
  for (let i = 1; i <= 20; i++) {
    s.append(ents(i, i, 1));
    ps.push(s.sync());
  }
  await Promise.all(ps);
  assert.equal(s.pendingBytes, 0);
  s.closeWithoutSync();
  const r = await RaftLogStore.open(dir);
  assert.equal(r.lastIndex(), 20);
  await r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store drops a segment whose creation was interrupted", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir);
  s.append(ents(1, 5, 1));
  await s.sync();
  await s.close();
  // A crash while rolling: the next segment exists but its start record is incomplete.
  await Deno.writeFile(`${dir}/0000000002.rlog`, new Uint8Array([9, 9, 9]));
  const r = await RaftLogStore.open(dir);
  assert.equal(r.lastIndex(), 5);
  assert.deepEqual(await segFiles(dir), ["0000000001.rlog"]);
  r.append(ents(6, 6, 1));
  await r.sync();
  await r.close();
  const r2 = await RaftLogStore.open(dir);
  assert.equal(r2.lastIndex(), 6);
  await r2.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store reports a missing segment as corruption", async () => {
  const dir = await Deno.makeTempDir();
  const s = await RaftLogStore.open(dir, { segmentBytes: 512 });
  for (let i = 1; i <= 60; i += 10) {
    s.append(ents(i, i + 9, 1, 32));
    await s.sync();
  }
  await s.close();
  const segs = await segFiles(dir);
  assert.ok(segs.length >= 3);
  await Deno.remove(`${dir}/${segs[1]}`);
  await assert.rejects(() => RaftLogStore.open(dir), LogCorruptionError);
  await Deno.remove(dir, { recursive: true });
});

interface _Captured {
  base: { index: number; term: number };
  entries: Entry[];
  hs: { term: number; vote: number; commit: number };
  snap: { index: number; term: number; confState: { voters: number[]; learners: number[] } };
}

function capture(s: MemoryStorage | RaftLogStore): _Captured {
  const first = s.firstIndex();
  return {
    base: { index: first - 1, term: s.term(first - 1) },
    entries: s.lastIndex() >= first ? s.entries(first, s.lastIndex() + 1).slice() : [],
    hs: s.initialState().hardState,
    snap: structuredClone(s.snapshot().meta),
  };
}

Deno.test("log store matches an in-memory model across random ops, crashes and reopens", async () => {
  const rand = mulberry32(Number(Deno.env.get("LOG_MODEL_SEED") ?? 7));
  const int = (n: number) => Math.floor(rand() * n);
  const dir = await Deno.makeTempDir();
  let store = await RaftLogStore.open(dir, { segmentBytes: 400 });
  let model = new MemoryStorage();
  let durable = capture(model);
  let term = 1;
  let reopens = 0;
  for (let step = 0; step < 1500; step++) {
    const r = rand();
    const first = model.firstIndex();
    const last = model.lastIndex();
    if (r < 0.4) {
      if (rand() < 0.2) term++;
      const start = first + int(last - first + 2);
      const es = ents(start, start + int(5), term, 1 + int(40));
      store.append(es);
      model.append(es);
    } else if (r < 0.55) {
      const hs = { term, vote: int(4), commit: int(last + 1) };
      store.setHardState(hs);
      model.setHardState(hs);
    } else if (r < 0.62) {
      const snapIndex = model.snapshot().meta.index;
      if (last > snapIndex && last >= first) {
        const at = Math.max(snapIndex + 1, first) + int(last - Math.max(snapIndex + 1, first) + 1);
        const cs = { voters: [1, 2, 3], learners: [int(9)] };
        store.createSnapshot(at, cs);
        model.createSnapshot(at, cs, new Uint8Array(0));
        const to = Math.max(first - 1, at - int(4));
        store.compact(to);
        model.compact(to);
      }
    } else if (r < 0.64) {
      const meta = {
        index: last + 1 + int(20),
        term: term,
        confState: { voters: [1, 2, 3], learners: [] },
      };
      store.applySnapshot({ meta, data: new Uint8Array(0) });
      model.applySnapshot({ meta, data: new Uint8Array(0) });
    } else if (r < 0.9) {
      const p = store.sync();
      const c = capture(model);
      if (rand() < 0.5) {
        // Mutations while the sync is in flight belong to the next sync.
        const es = ents(model.lastIndex() + 1, model.lastIndex() + 1, term);
        store.append(es);
        model.append(es);
      }
      await p;
      durable = c;
    } else {
      store.closeWithoutSync();
      store = await RaftLogStore.open(dir, { segmentBytes: 400 });
      reopens++;
      assert.deepEqual(capture(store), durable, `state after reopen #${reopens} (step ${step})`);
      model = new MemoryStorage();
      model._reset(durable.base.index, durable.base.term, {
        meta: structuredClone(durable.snap),
        data: new Uint8Array(0),
      }, durable.hs);
      model.append(durable.entries);
    }
  }
  assert.ok(reopens > 50, `reopens: ${reopens}`);
  assert.ok(store.segmentCount < 40, `segments bounded by compaction: ${store.segmentCount}`);
  await store.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("log store: back-to-back syncs through its reused write buffer keep every record intact", async () => {
  // Each sync lays its records out in one buffer the store reuses; syncs started before the
  // previous one finished, batches larger than the kept buffer (it grows, then a one-off buffer
  // is used above 4 MiB) and small ones after them must all come back byte for byte.
  const dir = await Deno.makeTempDir();
  try {
    const s = await RaftLogStore.open(dir, { segmentBytes: 8 * 1024 * 1024 });
    const rnd = mulberry32(5);
    const want = new Map<number, Uint8Array>();
    const syncs: Promise<void>[] = [];
    let index = 0;
    for (let round = 0; round < 40; round++) {
      const batch: Entry[] = [];
      const n = 1 + Math.floor(rnd() * 6);
      for (let k = 0; k < n; k++) {
        const big = round % 13 === 5 && k === 0;
        const size = big ? 5 * 1024 * 1024 : Math.floor(rnd() * 20_000);
        const data = new Uint8Array(size);
        for (let i = 0; i < size; i += 97) data[i] = (index * 7 + i) & 0xff;
        index++;
        want.set(index, data.slice());
        batch.push({ index, term: 1, type: EntryType.Normal, data });
      }
      s.append(batch);
      s.setHardState({ term: 1, vote: 1, commit: index - 1 });
      syncs.push(s.sync());
      if (round % 3 === 0) await syncs[syncs.length - 1];
    }
    await Promise.all(syncs);
    await s.close();
    const r = await RaftLogStore.open(dir);
    assert.equal(r.lastIndex(), index);
    assert.deepEqual(r.hardState(), { term: 1, vote: 1, commit: index - 1 });
    for (const e of r.entries(1, index + 1)) {
      assert.deepEqual(e.data, want.get(e.index), `entry ${e.index}`);
    }
    await r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("log store fsyncs a small write inline, without an event-loop turn, and a large one on the thread pool", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = await RaftLogStore.open(dir, { inlineSyncBytes: 1024 });
    s.append(ents(1, 2, 1));
    let turned = false;
    const timer = setTimeout(() => turned = true, 0);
    await s.sync();
    // A timer runs only on an event-loop turn; an inline fsync resolves within microtasks.
    assert.equal(turned, false);
    clearTimeout(timer);
    assert.deepEqual(s.syncStats, { syncs: 1, inlineSyncs: 1 });
    s.append(ents(3, 4, 1, 2048));
    await s.sync();
    assert.deepEqual(s.syncStats, { syncs: 2, inlineSyncs: 1 });
    s.closeWithoutSync();
    const r = await RaftLogStore.open(dir);
    assert.deepEqual(dump(r), ["1@1:1", "2@1:2", "3@1:3", "4@1:4"]);
    await r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
