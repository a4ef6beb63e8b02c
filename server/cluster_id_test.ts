import assert from "node:assert/strict";
import {
  ClusterIdMismatch,
  deriveClusterId,
  ensureClusterId,
  readClusterId,
} from "./cluster_id.ts";

Deno.test("cluster id is derived from the sorted member list", async () => {
  const a = await deriveClusterId(new Map([[1, "h:1"], [2, "h:2"]]));
  const b = await deriveClusterId(new Map([[2, "h:2"], [1, "h:1"]]));
  const c = await deriveClusterId(new Map([[1, "h:1"], [2, "h:3"]]));
  assert.equal(a, b);
  assert.notEqual(a, c);
  assert.match(a, /^[0-9a-f]{16}$/);
});

Deno.test("a data directory of another cluster refuses the node", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await readClusterId(dir), undefined);
    assert.equal(await ensureClusterId(dir, "aaaa"), "aaaa");
    assert.equal(await ensureClusterId(dir, "aaaa"), "aaaa");
    await assert.rejects(() => ensureClusterId(dir, "bbbb"), ClusterIdMismatch);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
