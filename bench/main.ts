/**
 * `deno task bench <name> [flags]`: the benchmark dispatcher.
 *
 * - `cluster`: ConcordKV against etcd, 3 nodes each ({@link ./cluster_bench.ts}).
 * - `storage`: the storage engine against LevelDB (`bench/storage_bench.ts`).
 *
 * Each benchmark module exports `main(args: string[]): Promise<number | void>` (the exit code);
 * it is imported only when chosen, so one benchmark's dependencies never stop the other.
 *
 * @example
 * ```sh
 * deno task bench cluster --quick
 * deno task bench storage
 * ```
 *
 * @module
 */

/** The usage text. */
export const BENCH_USAGE = `Usage: deno task bench <cluster|storage> [flags]

  cluster   ConcordKV vs etcd, 3-node clusters on loopback (deno task bench cluster --help)
  storage   the storage engine vs LevelDB (deno task bench storage --help)`;

/** Module of each benchmark, relative to this file. */
export const BENCHMARKS: Record<string, string> = {
  cluster: "./cluster_bench.ts",
  storage: "./storage_bench.ts",
};

/** Runs the benchmark named by `args[0]`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    console.log(BENCH_USAGE);
    return name === undefined ? 2 : 0;
  }
  const path = BENCHMARKS[name];
  if (path === undefined) {
    console.error(`bench: unknown benchmark "${name}"\n\n${BENCH_USAGE}`);
    return 2;
  }
  const mod = await import(new URL(path, import.meta.url).href);
  if (typeof mod.main !== "function") {
    console.error(`bench: ${path} does not export main(args)`);
    return 1;
  }
  const code = await mod.main(rest);
  return typeof code === "number" ? code : 0;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    code = 1;
  }
  Deno.exit(code);
}
