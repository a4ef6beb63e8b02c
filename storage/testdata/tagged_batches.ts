/**
 * Tagged batches for the prefix tests of the engine without a WAL (engine_test.ts,
 * nowal_crash_test.ts): batch `i` puts three keys of its own, sets `last` to `i` and deletes key 0
 * of batch `i - 3`, so the content after batches 1..k is known exactly and any mix of batches
 * (a later one without an earlier one, a delete without its batch) is visible.
 *
 * @module
 */
import type { BatchOp, KVEngine } from "../mod.ts";

const _enc = new TextEncoder();
const _dec = new TextDecoder();

function _key(i: number, j: number): string {
  return `b${String(i).padStart(6, "0")}/${j}`;
}

/** The operations of batch `i` (i ≥ 1). */
export function taggedBatch(i: number): BatchOp[] {
  const ops: BatchOp[] = [];
  for (let j = 0; j < 3; j++) {
    ops.push({ type: "put", key: _enc.encode(_key(i, j)), value: _enc.encode(`${i}`.repeat(30)) });
  }
  ops.push({ type: "put", key: _enc.encode("last"), value: _enc.encode(String(i)) });
  if (i > 3) ops.push({ type: "delete", key: _enc.encode(_key(i - 3, 0)) });
  return ops;
}

/**
 * The `k` such that `db` holds exactly batches 1..k (0: none); throws naming the first
 * difference when it holds anything else.
 */
export async function taggedPrefix(db: KVEngine): Promise<number> {
  const lastRaw = await db.get(_enc.encode("last"));
  const k = lastRaw === undefined ? 0 : Number(_dec.decode(lastRaw));
  const want: string[] = [];
  for (let i = 1; i <= k; i++) {
    for (let j = 0; j < 3; j++) {
      if (j === 0 && i + 3 <= k) continue; // deleted by batch i + 3
      want.push(`${_key(i, j)}=${`${i}`.repeat(30)}`);
    }
  }
  if (k > 0) want.push(`last=${k}`);
  let n = 0;
  for await (const kv of db.scan()) {
    const got = `${_dec.decode(kv.key)}=${_dec.decode(kv.value)}`;
    if (got !== want[n]) {
      throw new Error(`not exactly batches 1..${k}: entry ${n} is ${got}, expected ${want[n]}`);
    }
    n++;
  }
  if (n !== want.length) {
    throw new Error(`not exactly batches 1..${k}: ${n} entries, expected ${want.length}`);
  }
  return k;
}
