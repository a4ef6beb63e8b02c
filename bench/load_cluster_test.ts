import { equal, ok } from "node:assert/strict";
import { cpuSnapshot, waitQuiet } from "./load_cluster.ts";

Deno.test("cpuSnapshot reads a live process's CPU time and resident memory, NaN for a gone one", async () => {
  // Touch 32 MiB so that this process's resident set is surely above it.
  const ballast = new Uint8Array(32 * 1024 * 1024).fill(1);
  const s = await cpuSnapshot([Deno.pid, 0x7ffffff0]);
  ok(s.procs[0]! > 0, `cpu ${s.procs[0]}`);
  ok(s.rssBytes[0]! > 32 * 1024 * 1024, `rss ${s.rssBytes[0]}`);
  ok(s.rssBytes[0]! < 64 * 1024 * 1024 * 1024, `rss ${s.rssBytes[0]}`);
  equal(Number.isNaN(s.procs[1]), true);
  equal(Number.isNaN(s.rssBytes[1]), true);
  ok(s.machineBusy > 0);
  equal(ballast[ballast.length - 1], 1);
});

Deno.test("waitQuiet waits for a window with the machine under the limit, and gives up at the timeout", async () => {
  // A machine busy 1 core (1 busy second per second of windows), then idle from the third read.
  const machine = (busyReads: number) => {
    let reads = 0;
    let busy = 0;
    let at = performance.now();
    return () => {
      const now = performance.now();
      if (reads++ < busyReads) busy += (now - at) / 1000;
      at = now;
      return Promise.resolve(busy);
    };
  };
  const opts = { maxCores: 0.25, windowMs: 20, timeoutMs: 5000 };
  const waited = await waitQuiet(opts, machine(3));
  // Windows 1 and 2 were busy; window 3 (from the third to the fourth read) was quiet.
  ok(waited >= 3 * 20, `returned after ${waited} ms`);
  ok(waited < 5000, `waited for the timeout: ${waited} ms`);
  const quiet = await waitQuiet(opts, machine(0));
  ok(quiet < 5000, `a quiet machine still waited ${quiet} ms`);
  // Never quiet: returns at the timeout.
  const never = await waitQuiet({ ...opts, timeoutMs: 100 }, machine(Infinity));
  ok(never >= 100, `returned early from a busy machine: ${never} ms`);
});
