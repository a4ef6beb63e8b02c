import { equal, ok } from "node:assert/strict";
import { cpuSnapshot } from "./load_cluster.ts";

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
