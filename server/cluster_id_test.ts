import assert from "node:assert/strict";
import { deriveClusterId, ensureClusterId, readClusterId } from "./cluster_id.ts";

Deno.test("cluster id is derived from the sorted member list", async () => {
  const a = await deriveClusterId(new Map([[1, "h:1"], [2, "h:2"]]));
  const b = await deriveClusterId(new Map([[2, "h:2"], [1, "h:1"]]));
  const c = await deriveClusterId(new Map([[1, "h:1"], [2, "h:3"]]));
  assert.equal(a, b);
  assert.notEqual(a, c);
  assert.match(a, /^[0-9a-f]{16}$/);
});

Deno.test("a token gives clusters with the same member list different ids", async () => {
  const peers = new Map([[1, "h:1"], [2, "h:2"]]);
  const plain = await deriveClusterId(peers);
  const a = await deriveClusterId(peers, "alpha");
  const b = await deriveClusterId(peers, "beta");
  assert.notEqual(a, b);
  assert.notEqual(a, plain);
  assert.equal(await deriveClusterId(peers, ""), plain);
  assert.equal(await deriveClusterId(peers, "alpha"), a);
});

Deno.test("the persisted cluster id wins over the bootstrap flags on restart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await readClusterId(dir), undefined);
    assert.deepEqual(await ensureClusterId(dir, "aaaa"), { id: "aaaa", created: true });
    assert.deepEqual(await ensureClusterId(dir, "aaaa"), { id: "aaaa", created: false });
    // Restarted with another --peers list: the directory keeps its identity.
    assert.deepEqual(await ensureClusterId(dir, "bbbb"), { id: "aaaa", created: false });
    assert.equal(await readClusterId(dir), "aaaa");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
