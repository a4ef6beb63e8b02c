import assert from "node:assert/strict";
import { readSnapshotFile, type SnapKeyValue, snapshotChunks } from "./snapshot.ts";

async function* pairs(n: number): AsyncIterable<SnapKeyValue> {
  for (let i = 0; i < n; i++) {
    yield {
      key: new TextEncoder().encode(`k${String(i).padStart(5, "0")}`),
      value: new Uint8Array(i % 300).fill(i & 0xff),
    };
  }
}

Deno.test("snapshot chunks are bounded and a file of them reads back every pair in order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const chunks: Uint8Array[] = [];
    for await (const c of snapshotChunks(pairs(2000), 16 * 1024)) chunks.push(c);
    assert.ok(chunks.length > 5);
    for (const c of chunks) assert.ok(c.length < 16 * 1024 + 400);
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const buf = new Uint8Array(total);
    let p = 0;
    for (const c of chunks) {
      buf.set(c, p);
      p += c.length;
    }
    const path = `${dir}/x.snap`;
    await Deno.writeFile(path, buf);
    const back = [...readSnapshotFile(path, 64)];
    assert.deepEqual(back, [...readSnapshotFile(path)]);
    assert.equal(back.length, 2000);
    for (let i = 0; i < 2000; i++) {
      assert.equal(new TextDecoder().decode(back[i]!.key), `k${String(i).padStart(5, "0")}`);
      assert.equal(back[i]!.value.length, i % 300);
    }
    await Deno.writeFile(path, buf.subarray(0, buf.length - 3));
    assert.throws(() => [...readSnapshotFile(path)], /truncated/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
