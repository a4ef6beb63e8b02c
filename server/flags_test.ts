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
  assert.equal(o.quotaBytes, 2 * 1024 ** 3);
  assert.equal(o.maxDeleteRangeKeys, 100_000);
});

Deno.test("node flags: --max-delete-range-keys is a whole number from 1 to 100,000", () => {
  const m = (v: string) => {
    const o = parseNodeFlags(["--id", "1", "--max-delete-range-keys", v]);
    assert.ok(o !== "help");
    return o.maxDeleteRangeKeys;
  };
  assert.equal(m("1"), 1);
  assert.equal(m("100000"), 100_000);
  for (const bad of ["0", "-5", "1.5", "lots", "100001"]) {
    assert.throws(() => m(bad), UsageError, bad);
  }
});

Deno.test("node flags: --quota-bytes takes bytes, KiB, MiB or GiB, and 0 for none", () => {
  const q = (v: string) => {
    const o = parseNodeFlags(["--id", "1", `--quota-bytes=${v}`]);
    assert.ok(o !== "help");
    return o.quotaBytes;
  };
  assert.equal(q("0"), 0);
  assert.equal(q("1500000"), 1_500_000);
  assert.equal(q("512KiB"), 512 * 1024);
  assert.equal(q("64MiB"), 64 * 1024 ** 2);
  assert.equal(q("8GiB"), 8 * 1024 ** 3);
  for (const bad of ["", "-1", "1.5GiB", "1GB", "2 GiB", "99999999999999999999"]) {
    assert.throws(() => q(bad), /--quota-bytes must be a byte count/, bad);
  }
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

Deno.test("--log-format: text by default, json on request, anything else refused", () => {
  const text = parseNodeFlags(["--id", "1"]);
  assert.ok(text !== "help");
  assert.equal(text.logFormat, "text");
  const json = parseNodeFlags(["--id", "1", "--log-format", "json"]);
  assert.ok(json !== "help");
  assert.equal(json.logFormat, "json");
  assert.throws(
    () => parseNodeFlags(["--id", "1", "--log-format", "yaml"]),
    /--log-format must be text or json, got "yaml"/,
  );
});
