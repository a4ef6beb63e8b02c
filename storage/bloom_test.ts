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

/** The filter as the format defines it: probe j of hash h sets bit (h + j·delta mod 2^32) mod bits. */
function referenceBloom(hashes: number[], bitsPerKey: number): Uint8Array {
  const k = Math.min(30, Math.max(1, Math.round(bitsPerKey * 0.69)));
  const bytes = (Math.max(64, hashes.length * bitsPerKey) + 7) >> 3;
  const bits = bytes * 8;
  const out = new Uint8Array(bytes + 1);
  out[bytes] = k;
  for (let h of hashes) {
    const delta = ((h >>> 17) | (h << 15)) >>> 0;
    for (let j = 0; j < k; j++) {
      const pos = h % bits;
      out[Math.floor(pos / 8)]! |= 1 << (pos % 8);
      h = (h + delta) >>> 0;
    }
  }
  return out;
}

Deno.test("bloom filter bytes match the format's probe definition (hashes across the u32 range)", () => {
  let seed = 12345;
  const next = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
  for (const n of [0, 1, 7, 100, 1001, 4096]) {
    for (const bitsPerKey of [1, 3, 10, 17]) {
      const hashes: number[] = [];
      for (let i = 0; i < n; i++) hashes.push(next());
      // The edges: 0, 2^31, near 2^32 (where the double-hashing sum wraps).
      hashes.push(0, 0x80000000, 0xffffffff, 0xfffffff0);
      const built = buildBloom(hashes, bitsPerKey);
      assert.deepEqual(built, referenceBloom(hashes, bitsPerKey), `n=${n} bits/key=${bitsPerKey}`);
      for (const h of hashes) assert.ok(bloomMayContain(built, h));
      // Lookups agree with the reference bits for keys not in the set too.
      const ref = referenceBloom(hashes, bitsPerKey);
      for (let i = 0; i < 200; i++) {
        const h = next();
        const bits = (ref.length - 1) * 8;
        const k = ref[ref.length - 1]!;
        let expect = true;
        let x = h;
        const delta = ((x >>> 17) | (x << 15)) >>> 0;
        for (let j = 0; j < k; j++) {
          const pos = x % bits;
          if ((ref[Math.floor(pos / 8)]! & (1 << (pos % 8))) === 0) expect = false;
          x = (x + delta) >>> 0;
        }
        assert.equal(bloomMayContain(built, h), expect);
      }
    }
  }
});
