/**
 * `deno task sim --seeds N [--from S] [--nodes 3|5] [--steps T] [--bug B] [--trace SEED]`:
 * runs the deterministic simulator over seeds and prints one line per failing seed (seed,
 * property, step) and a summary line. Exit status 1 if any seed failed.
 *
 * Overnight: `deno task sim --seeds 100000 --from 1000000` runs 100,000 seeds (about 30–70
 * seeds/s on one core of this machine, so roughly 30–60 minutes); run several processes with
 * disjoint `--from` ranges to use more cores, e.g.
 * `for i in 0 1; do deno task sim --seeds 50000 --from $((1000000 + i*50000)) & done; wait`.
 * Longer histories per seed: `--steps 30000`. Replay a failure bit-for-bit with
 * `deno task sim --seeds 1 --from SEED [--nodes N] --trace`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runSim, type SimBug } from "./sim.ts";

const USAGE =
  `Usage: deno task sim --seeds N [--from S] [--nodes 3|5] [--steps T] [--harsh] [--bug B] [--trace]

  --seeds N    number of seeds to run (default 100)
  --from S     first seed (default 1)
  --nodes 3|5  initial cluster size (default: alternate 3 and 5 by seed)
  --steps T    virtual-time steps of the faulty phase per seed (default 3000)
  --bug B      inject a bug to see it caught: commitByCount | skipElectionRestriction | forgetVote
  --harsh      shorter fault regimes, frequent crashes, quick restarts
  --trace      print the trace of failing seeds
  --verbose    print a line per seed`;

function main(): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        seeds: { type: "string", default: "100" },
        from: { type: "string", default: "1" },
        nodes: { type: "string" },
        steps: { type: "string", default: "3000" },
        bug: { type: "string" },
        trace: { type: "boolean", default: false },
        harsh: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    console.error(`sim: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const seeds = Number(values.seeds);
  const from = Number(values.from);
  const steps = Number(values.steps);
  const nodes = values.nodes === undefined ? undefined : Number(values.nodes);
  const bugs = ["commitByCount", "skipElectionRestriction", "forgetVote"];
  if (
    !Number.isSafeInteger(seeds) || seeds < 1 || !Number.isSafeInteger(from) ||
    !Number.isSafeInteger(steps) || steps < 1 ||
    (nodes !== undefined && nodes !== 3 && nodes !== 5) ||
    (values.bug !== undefined && !bugs.includes(values.bug))
  ) {
    console.error(`sim: bad arguments\n\n${USAGE}`);
    return 2;
  }
  const started = performance.now();
  let failed = 0;
  let applied = 0;
  for (let seed = from; seed < from + seeds; seed++) {
    const r = runSim({
      seed,
      nodes: nodes ?? (seed % 2 === 0 ? 5 : 3),
      steps,
      bug: values.bug as SimBug | undefined,
      harsh: values.harsh,
      trace: values.trace,
    });
    applied += r.stats.applied;
    if (r.violation) {
      failed++;
      const v = r.violation;
      console.log(
        `FAIL seed=${seed} property="${v.property}" step=${v.step} ${v.detail.split("\n")[0]}`,
      );
      if (values.trace) { for (const line of r.trace) console.log(`  ${line}`); }
    } else if (values.verbose) {
      console.log(`ok seed=${seed} digest=${r.digest} ${JSON.stringify(r.stats)}`);
    }
  }
  const secs = (performance.now() - started) / 1000;
  console.log(
    `sim: ${seeds} seeds from ${from}: ${seeds - failed} passed, ${failed} failed ` +
      `(${applied} entries applied, ${secs.toFixed(1)}s)`,
  );
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(main());
