import { deepEqual, equal } from "node:assert/strict";
import { areaOf, type CpuProfile, summarizeProfile } from "./load_profile.ts";

const frame = (functionName: string, url = "") => ({
  functionName,
  url,
  lineNumber: 0,
  columnNumber: 0,
});

Deno.test("profile areas come from script URLs", () => {
  equal(
    areaOf(
      "file:///x/node_modules/.deno/@grpc+grpc-js@1.14.7/node_modules/@grpc/grpc-js/build/src/call.js",
      "f",
    ),
    "grpc-js",
  );
  equal(areaOf("file:///work/main/raft/node.ts", "step"), "raft/");
  equal(areaOf("ext:deno_node/internal/http2/core.ts", "f"), "Deno node:http2");
  equal(areaOf("", "(garbage collector)"), "GC");
  equal(areaOf("", "(idle)"), "idle");
});

Deno.test("self and inclusive times add up over a small call tree", () => {
  // root → main → {leaf (raft), grpc}; samples: leaf, leaf, grpc, idle.
  const p: CpuProfile = {
    nodes: [
      { id: 1, callFrame: frame("(root)"), children: [2, 5] },
      { id: 2, callFrame: frame("main", "file:///r/server/node.ts"), children: [3, 4] },
      { id: 3, callFrame: frame("leaf", "file:///r/raft/node.ts") },
      { id: 4, callFrame: frame("write", "file:///r/node_modules/@grpc/grpc-js/x.js") },
      { id: 5, callFrame: frame("(idle)") },
    ],
    startTime: 0,
    endTime: 4000,
    samples: [3, 3, 4, 5],
    timeDeltas: [1000, 1000, 1000, 1000],
  };
  const s = summarizeProfile(p);
  equal(s.wallMs, 4);
  equal(s.busyMs, 3);
  deepEqual(s.areas, [["raft/", 2], ["grpc-js", 1], ["idle", 1]]);
  const main = s.functions.find((f) => f.name === "main")!;
  equal(main.selfMs, 0);
  equal(main.totalMs, 3);
  equal(s.functions[0]!.name, "leaf");
  equal(s.functions[0]!.where, "raft/node.ts:1");
});
