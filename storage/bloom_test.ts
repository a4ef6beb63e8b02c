import assert from "node:assert/strict";
import { bloomHash, bloomMayContain, buildBloom } from "./bloom.ts";
import { b } from "./test_util.ts";

Deno.test("bloom filter has no false negatives and about 1% false positives at 10 bits/key", () => {
  const n = 10000;
  const hashes = [];
  for (let i = 0; i < n; i++) hashes.push(bloomHash(b(`key-${i}`)));
  const filter = buildBloom(hashes, 10);
  assert.ok(filter.length <= Math.ceil((n * 10) / 8) + 1);
  for (const h of hashes) assert.ok(bloomMayContain(filter, h));
  let fp = 0;
  for (let i = 0; i < n; i++) if (bloomMayContain(filter, bloomHash(b(`other-${i}`)))) fp++;
  assert.ok(fp / n < 0.03, `false positive rate ${fp / n}`);
});

Deno.test("bloomHash is stable (it reaches the disk)", () => {
  assert.equal(bloomHash(new Uint8Array(0)), bloomHash(new Uint8Array(0)));
  assert.equal(bloomHash(b("hello")), 4153775694);
});
