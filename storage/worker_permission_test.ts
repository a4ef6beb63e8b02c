/**
 * The compaction worker under a node's real permissions: a child process started with exactly
 * the `--allow-read`/`--allow-write` flags {@linkcode nodeCommand} gives a node opens an engine
 * and must run its compactions on the worker; with `storage/` not readable it must say (once)
 * that it falls back to in-thread compaction.
 */
import assert from "node:assert/strict";
import { nodeCommand, REPO_ROOT } from "../server/launch.ts";
import { withTempDir } from "./test_util.ts";

const PROBE = new URL("./testdata/worker_probe.ts", import.meta.url).pathname;

interface ProbeResult {
  usesWorker: boolean;
  workerCompactions: number;
  notes: string[];
}

async function probe(readFlag: string, writeFlag: string, dir: string): Promise<ProbeResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-prompt", readFlag, writeFlag, PROBE, dir],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { RUST_BACKTRACE: "0" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `probe failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim()) as ProbeResult;
}

function flag(args: string[], name: string): string {
  const f = args.find((a) => a.startsWith(`${name}=`));
  assert.ok(f !== undefined, `nodeCommand gives no ${name}`);
  return f;
}

Deno.test("a node's permissions let its engine compact on the worker thread", async () => {
  await withTempDir(async (dir) => {
    const { args } = nodeCommand({ id: 1, port: 1, peers: "1=127.0.0.1:1", dataDir: dir });
    const r = await probe(flag(args, "--allow-read"), flag(args, "--allow-write"), dir);
    assert.equal(r.usesWorker, true);
    assert.ok(r.workerCompactions > 0, `no compaction ran on the worker: ${JSON.stringify(r)}`);
    assert.deepEqual(r.notes.filter((n) => n.includes("in-thread")), []);
  });
});

Deno.test("without read access to storage/ the engine logs its in-thread fallback once", async () => {
  await withTempDir(async (dir) => {
    const r = await probe(`--allow-read=${dir},${REPO_ROOT}/protos`, `--allow-write=${dir}`, dir);
    assert.equal(r.usesWorker, false);
    assert.equal(r.workerCompactions, 0);
    assert.equal(r.notes.filter((n) => n.includes("compacting in-thread")).length, 1);
  });
});
