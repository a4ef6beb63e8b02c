/**
 * Helpers shared by the storage tests: a seeded PRNG, byte helpers, temp directories and the
 * crash tests' child-writer harness.
 *
 * @module
 */
import assert from "node:assert/strict";

/**
 * A small seeded PRNG (mulberry32) so every randomized test can be replayed from its seed.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * rng.int(10); // 0..9
 * ```
 */
export class Rng {
  #s: number;
  /** Creates a generator from `seed`. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

const _enc = new TextEncoder();
const _dec = new TextDecoder();

/** UTF-8 bytes of `s`. */
export function b(s: string): Uint8Array {
  return _enc.encode(s);
}

/** UTF-8 text of `u` (or undefined). */
export function s(u: Uint8Array | undefined): string | undefined {
  return u === undefined ? undefined : _dec.decode(u);
}

/** Runs `fn` with a fresh temporary directory, removed afterwards even on failure. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "concordkv-storage-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Collects an async iterable into an array. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/**
 * Runs the crash-test writer `writer` (a script under storage/testdata/) on `dir` with `args`,
 * hands each line it prints to `onLine` (which returns true when the line acknowledges a write),
 * and SIGKILLs it once `killAfter` writes were acknowledged (at once when 0: during open and
 * recovery). Fails if the writer exited by itself.
 */
export async function runWriterUntilKilled(
  writer: string,
  dir: string,
  args: string[],
  killAfter: number,
  onLine: (what: string, arg: string) => boolean,
): Promise<void> {
  // Read access to storage/ lets the writer run compactions on its worker thread.
  const storageDir = new URL(".", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      `--allow-read=${dir},${storageDir}`,
      `--allow-write=${dir}`,
      writer,
      dir,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { RUST_BACKTRACE: "0" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const dec = new TextDecoder();
  let acks = 0;
  let killed = false;
  const kill = () => {
    if (!killed) {
      killed = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
  };
  try {
    if (killAfter === 0) kill();
    let buf = "";
    for await (const chunk of child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const [what, arg] = buf.slice(0, nl).split(" ");
        buf = buf.slice(nl + 1);
        if (onLine(what!, arg ?? "")) acks++;
        if (acks >= killAfter) kill();
      }
    }
  } finally {
    kill();
    const status = await child.status;
    const err = await stderr;
    assert.equal(status.signal, "SIGKILL", `writer died on its own: ${err}`);
  }
}
