import assert from "node:assert/strict";
import { runSim, type SimBug, type SimResult } from "./sim.ts";

function sweep(from: number, count: number, nodes: number, harsh = false): SimResult[] {
  const failures: SimResult[] = [];
  for (let seed = from; seed < from + count; seed++) {
    const r = runSim({ seed, nodes, harsh });
    if (r.violation) failures.push(r);
  }
  return failures;
}

function describe(failures: SimResult[]): string {
  return failures.map((f) =>
    `seed ${f.seed}: ${f.violation!.property} at step ${f.violation!.step}: ${f.violation!.detail}`
  ).join("\n");
}

Deno.test("simulator: 300 seeds of 3-member clusters under faults keep every property", () => {
  const failures = sweep(1, 300, 3);
  assert.equal(failures.length, 0, describe(failures));
});

Deno.test("simulator: 220 seeds of 5-member clusters under faults keep every property", () => {
  const failures = sweep(10_001, 220, 5);
  assert.equal(failures.length, 0, describe(failures));
});

Deno.test("simulator: 100 seeds of harsh faults (frequent crashes, short partitions)", () => {
  const failures = [...sweep(20_001, 60, 3, true), ...sweep(30_001, 40, 5, true)];
  assert.equal(failures.length, 0, describe(failures));
});

Deno.test("simulator: a seed replays bit-for-bit, and seeds differ", () => {
  const a = runSim({ seed: 4242, nodes: 5 });
  const b = runSim({ seed: 4242, nodes: 5 });
  assert.equal(a.digest, b.digest);
  assert.deepEqual(a.stats, b.stats);
  const c = runSim({ seed: 4243, nodes: 5 });
  assert.notEqual(a.digest, c.digest);
  // The run did real work: elections, crashes, membership changes, snapshots, reads.
  const s = a.stats;
  assert.ok(s.elections >= 2 && s.crashes >= 1 && s.applied > 500, JSON.stringify(s));
});

Deno.test("simulator: seeds exercise snapshots, membership changes and reads", () => {
  let snaps = 0;
  let confs = 0;
  let reads = 0;
  for (let seed = 1; seed <= 10; seed++) {
    const r = runSim({ seed, nodes: 3 + 2 * (seed % 2) });
    snaps += r.stats.snapshotsSent;
    confs += r.stats.confChanges;
    reads += r.stats.reads;
  }
  assert.ok(snaps > 10 && confs > 10 && reads > 100, JSON.stringify({ snaps, confs, reads }));
});

function firstCaught(bug: SimBug, limit: number, nodes: number): SimResult | undefined {
  for (let seed = 1; seed <= limit; seed++) {
    const r = runSim({ seed, nodes, bug });
    if (r.violation) return r;
  }
  return undefined;
}

Deno.test("simulator catches votes granted without the election restriction", () => {
  const r = firstCaught("skipElectionRestriction", 100, 3);
  assert.ok(r, "no violation found in 100 seeds");
  assert.match(r.violation!.property, /leader completeness|state machine safety|log matching/);
});

Deno.test("simulator catches a driver that does not persist the vote", () => {
  const r = firstCaught("forgetVote", 300, 3);
  assert.ok(r, "no violation found in 300 seeds");
  assert.match(r.violation!.property, /election safety|leader completeness|state machine safety/);
});

Deno.test("simulator: 150 seeds with lease reads (every node leased) keep every property", () => {
  const failures: SimResult[] = [];
  for (let seed = 40_001; seed < 40_151; seed++) {
    const r = runSim({ seed, nodes: 3 + 2 * (seed % 2), lease: true, harsh: seed % 3 === 0 });
    if (r.violation) failures.push(r);
  }
  assert.equal(failures.length, 0, describe(failures));
});

Deno.test("simulator catches a lease that outlasts the followers' election timeout", () => {
  let caught: SimResult | undefined;
  for (let seed = 1; seed <= 200 && caught === undefined; seed++) {
    const r = runSim({ seed, nodes: 3, lease: true, bug: "longLease" });
    if (r.violation) caught = r;
  }
  assert.ok(caught, "no violation found in 200 seeds");
  assert.match(caught.violation!.property, /read linearizability/);
});
