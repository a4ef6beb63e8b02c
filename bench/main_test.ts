import { equal } from "node:assert/strict";
import { BENCHMARKS, main } from "./main.ts";

Deno.test("bench dispatcher knows cluster and storage and rejects other names", async () => {
  equal(BENCHMARKS.cluster, "./cluster_bench.ts");
  equal(BENCHMARKS.storage, "./storage_bench.ts");
  const error = console.error;
  console.error = () => {};
  try {
    equal(await main(["nope"]), 2);
  } finally {
    console.error = error;
  }
});
