import assert from "node:assert/strict";
import { parseNodeFlags, UsageError } from "./flags.ts";

Deno.test("node flags: defaults of DESIGN §3", () => {
  const o = parseNodeFlags(["--id", "2", "--port", "50052"]);
  assert.ok(o !== "help");
  assert.equal(o.host, "127.0.0.1");
  assert.equal(o.dataDir, "data/node-2");
  assert.equal(o.peers.size, 3);
  assert.equal(o.electionTimeoutMs, 500);
  assert.equal(o.heartbeatMs, 100);
  assert.equal(o.snapshotEntries, 10000);
  assert.deepEqual(o.join, []);
  assert.equal(o.unsafeLocalReads, false);
  assert.equal(o.readMode, "readindex");
});

Deno.test("node flags: --read-mode lease is accepted, anything else is a usage error", () => {
  const o = parseNodeFlags(["--id", "1", "--read-mode", "lease"]);
  assert.ok(o !== "help");
  assert.equal(o.readMode, "lease");
  assert.throws(() => parseNodeFlags(["--id", "1", "--read-mode", "fast"]), /--read-mode/);
});

Deno.test("node flags: bad values are usage errors", () => {
  for (
    const args of [
      ["--id", "0"],
      ["--id", "9"],
      ["--id", "1", "--heartbeat-ms", "300", "--election-timeout-ms", "500"],
      ["--id", "1", "--join", "nohost"],
      ["--id", "1", "--bogus"],
      ["--id", "1", "--log-level", "loud"],
    ]
  ) {
    assert.throws(() => parseNodeFlags(args), UsageError, args.join(" "));
  }
  const j = parseNodeFlags(["--id", "4", "--port", "1", "--peers", "4=h:1", "--join", "a:1,b:2"]);
  assert.ok(j !== "help");
  assert.deepEqual(j.join, ["a:1", "b:2"]);
});
