/**
 * `deno task cluster` as a user runs it: it prints each node's address and the leader, serves
 * clients, reports a node that dies (exit code and last log lines), and Ctrl-C (SIGINT to its
 * process group, as a terminal sends it) stops every node.
 */
import { equal, match, ok } from "node:assert/strict";
import { freeConsecutivePorts, waitFor } from "./harness.ts";
import { KVClient } from "../client/client.ts";
import { runCluster } from "../server/cluster.ts";

const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/** `p`'s value, or "timeout" after `ms` (the timer is cleared either way). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("deno task cluster: names the leader, reports a dead node, Ctrl-C stops all", async () => {
  const base = await freeConsecutivePorts(3);
  const dir = await Deno.makeTempDir({ prefix: "concordkv-cluster-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "task",
      "-q",
      "--config",
      CONFIG,
      "cluster",
      "--base-port",
      String(base),
      "--data-dir",
      dir,
      "--quiet",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true, // its own process group, like a job in a terminal
    env: { NO_COLOR: "1" },
  }).spawn();
  let out = "";
  let err = "";
  const dec = new TextDecoder();
  const pumps = [
    (async () => {
      for await (const b of child.stdout) out += dec.decode(b, { stream: true });
    })(),
    (async () => {
      for await (const b of child.stderr) err += dec.decode(b, { stream: true });
    })(),
  ];
  /** Signals the task's process group (as a terminal does); by pid where that is not allowed. */
  const signalGroup = (signal: Deno.Signal) => {
    try {
      Deno.kill(-child.pid, signal); // needs --allow-run without a list
    } catch {
      try {
        child.kill(signal); // `deno task` forwards it to the launcher
      } catch {
        // Gone already.
      }
    }
  };
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const kv = new KVClient({
    endpoints: [0, 1, 2].map((i) => `127.0.0.1:${base + i}`),
    timeoutMs: 10_000,
  });
  try {
    await waitFor("the cluster to print its leader", 15_000, () => {
      if (exited) throw new Error(`cluster exited early:\n${out}\n${err}`);
      return /^leader: node \d/m.test(out);
    });
    for (let i = 0; i < 3; i++) {
      match(out, new RegExp(`node ${i + 1}: 127\\.0\\.0\\.1:${base + i}`));
    }
    await kv.put("launched", "yes");
    equal(await kv.getString("launched"), "yes");
    kv.close();
    // A node that dies is reported with its exit code and last log lines (needs the right to
    // signal any pid: --allow-run without a list).
    const nodeDies = Deno.permissions.querySync({ name: "run" }).state === "granted";
    if (nodeDies) {
      const pid3 = Number(/node 3: \S+ {2}pid (\d+)/.exec(out)?.[1]);
      Deno.kill(pid3, "SIGKILL");
      const report = new RegExp(
        String.raw`node 3 \(127\.0\.0\.1:\d+\) exited on its own with code 137 ` +
          String.raw`\(signal SIGKILL\); its last log lines:\n  \| `,
      );
      await waitFor("the launcher to report node 3's death", 10_000, () => report.test(err));
    }
    // Ctrl-C: SIGINT to the whole foreground process group.
    signalGroup("SIGINT");
    const s = await within(status, 15_000);
    ok(s !== "timeout", `cluster did not stop within 15 s:\n${out}\n${err}`);
    await Promise.all(pumps);
    match(out, /cluster stopped/);
    // Exit 0 when every node stopped cleanly; 1 when one had died on its own.
    equal(s.code, nodeDies ? 1 : 0, `exit ${s.code}\n${out}\n${err}`);
    // Every node is gone: nothing answers on the ports.
    for (let i = 0; i < 3; i++) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: base + i });
      l.close();
    }
  } finally {
    kv.close();
    if (!exited) {
      // Let the launcher stop its nodes; if it cannot, kill everything it printed.
      signalGroup("SIGTERM");
      await within(status, 12_000);
    }
    if (!exited) {
      const pids = [...out.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Gone already, or no permission to signal by pid.
        }
      }
      signalGroup("SIGKILL");
    }
    await status;
    await Promise.allSettled(pumps);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("cluster refuses a bad command line with exit 2", async () => {
  for (
    const args of [
      ["--nodes", "0"],
      ["--nodes", "x"],
      ["--base-port", "70000"],
      ["--base-port", "65535", "--nodes", "3"],
      ["--frob"],
    ]
  ) {
    equal(await runCluster(args), 2, args.join(" "));
  }
  equal(await runCluster(["--help"]), 0);
});
