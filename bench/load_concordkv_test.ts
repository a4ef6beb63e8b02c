import { deepEqual } from "node:assert/strict";
import { withRuntimeFlags } from "./load_concordkv.ts";

Deno.test("runtime flags go right after `run`, before the script and its flags", () => {
  deepEqual(
    withRuntimeFlags(["run", "--quiet", "node_main.ts", "--id", "1"], ["--cpu-prof"]),
    ["run", "--cpu-prof", "--quiet", "node_main.ts", "--id", "1"],
  );
  deepEqual(withRuntimeFlags(["run", "x.ts"], []), ["run", "x.ts"]);
  deepEqual(withRuntimeFlags(["x.ts"], ["--cpu-prof"]), ["x.ts"]);
});
