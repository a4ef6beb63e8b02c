import assert from "node:assert/strict";
import { DenoFs, MemFs } from "./fs.ts";
import { b, s, withTempDir } from "./test_util.ts";

Deno.test("MemFs crash keeps synced data and dir-synced names only", async () => {
  const fs = new MemFs();
  await fs.mkdir("/d");
  const a = await fs.openAppend("/d/a");
  await a.append(b("hello"));
  await a.sync();
  await a.append(b(" world"));
  await fs.syncDir("/d");
  const c = await fs.openAppend("/d/c");
  await c.append(b("never named"));
  await c.sync();
  const after = fs.crash();
  assert.equal(s(await after.readFile("/d/a")), "hello");
  assert.equal(await after.exists("/d/c"), false);
  // A rename is durable only after syncDir.
  await after.rename("/d/a", "/d/b");
  const again = after.crash();
  assert.equal(await again.exists("/d/a"), true);
  assert.equal(await again.exists("/d/b"), false);
});

Deno.test("DenoFs reads at offsets, appends, truncates and locks exclusively", async () => {
  await withTempDir(async (dir) => {
    const fs = new DenoFs();
    const f = await fs.openAppend(`${dir}/x`);
    await f.append(b("0123456789"));
    await f.sync();
    const r = await fs.openRead(`${dir}/x`);
    const buf = new Uint8Array(4);
    assert.equal(r.readAt(buf, 3), 4);
    assert.equal(s(buf), "3456");
    assert.equal(r.readAt(buf, 8), 2);
    await f.truncate(5);
    assert.equal(s(await fs.readFile(`${dir}/x`)), "01234");
    f.close();
    r.close();
    const l1 = await fs.tryLock(`${dir}/LOCK`);
    assert.ok(l1 !== null);
    assert.equal(await fs.tryLock(`${dir}/LOCK`), null);
    l1.release();
    const l2 = await fs.tryLock(`${dir}/LOCK`);
    assert.ok(l2 !== null);
    l2.release();
    await fs.syncDir(dir);
    assert.deepEqual((await fs.list(dir)).sort(), ["LOCK", "x"]);
  });
});
