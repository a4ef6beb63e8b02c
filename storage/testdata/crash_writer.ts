/**
 * Child process of `crash_test.ts`: writes to the engine in `Deno.args[0]` with `sync: "always"`
 * from several concurrent writers, printing a line for each acknowledged write, until killed.
 *
 * Lines: `put <key>` after a put is acknowledged, `del? <key>` before a delete is issued,
 * `del <key>` after it is acknowledged. The value of `<key>` is always `value-of-<key>`.
 *
 * @module
 */
import { KVEngine } from "../mod.ts";

const [dir, seedArg, roundArg] = Deno.args;
if (dir === undefined) throw new Error("usage: crash_writer.ts DIR SEED ROUND");
let seed = Number(seedArg ?? 1) >>> 0;
const rand = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
};
const enc = new TextEncoder();
const out = (line: string) => Deno.stdout.writeSync(enc.encode(line + "\n"));

const db = await KVEngine.open(dir, {
  sync: "always",
  memtableBytes: 16 * 1024,
  tableBytes: 16 * 1024,
  level1Bytes: 64 * 1024,
  workerMinBytes: 0, // exercise the compaction worker too
  log: () => {},
});
out("open");

async function writer(w: number): Promise<never> {
  const mine: string[] = [];
  for (let i = 0;; i++) {
    if (mine.length > 0 && rand(5) === 0) {
      const k = mine.splice(rand(mine.length), 1)[0]!;
      out(`del? ${k}`);
      await db.delete(enc.encode(k));
      out(`del ${k}`);
      continue;
    }
    const n = 1 + rand(3);
    const keys = Array.from({ length: n }, (_, j) => `r${roundArg}-w${w}-${i}-${j}`);
    const value = (k: string) => enc.encode(`value-of-${k}`.repeat(1 + rand(8)).slice(0, 200));
    await db.write(
      keys.map((k) => ({ type: "put" as const, key: enc.encode(k), value: value(k) })),
    );
    for (const k of keys) {
      out(`put ${k}`);
      mine.push(k);
    }
  }
}

await Promise.all([0, 1, 2, 3].map(writer));
