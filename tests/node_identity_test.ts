/**
 * Cluster identity across restarts: `--initial-cluster-token` and `--peers` are bootstrap-only
 * (as in etcd). A restarted node keeps the id persisted in its data directory, even when it is
 * started with another `--peers` list, and keeps its data.
 */
import { equal, notEqual, ok } from "node:assert/strict";
import { freePorts, NodeProcess, waitFor } from "./harness.ts";
import { KVClient } from "../client/client.ts";
import { deriveClusterId } from "../server/cluster_id.ts";

Deno.test("a restarted node keeps its cluster id, membership and data when --peers changes", async () => {
  const [port, unused] = await freePorts(2);
  const root = await Deno.makeTempDir({ prefix: "concordkv-test-" });
  const address = `127.0.0.1:${port}`;
  const dataDir = `${root}/node-1`;
  const started: NodeProcess[] = [];
  const clients: KVClient[] = [];
  const run = (peers: string, extraArgs: string[]) => {
    const n = new NodeProcess({ id: 1, port: port!, peers, dataDir, extraArgs });
    started.push(n);
    n.start();
    return n;
  };
  const client = () => {
    const c = new KVClient({ endpoints: [address], timeoutMs: 5000 });
    clients.push(c);
    return c;
  };
  try {
    const first = run(`1=${address}`, ["--initial-cluster-token", "alpha"]);
    const kv = client();
    await waitFor("node 1 to lead", 15_000, async () => {
      try {
        return (await kv.statusOf(address, { timeoutMs: 500 })).role === "leader";
      } catch {
        return false;
      }
    });
    const id = (await kv.statusOf(address)).clusterId;
    const peers = new Map([[1, address]]);
    equal(id, await deriveClusterId(peers, "alpha"), "the token is part of the cluster id");
    notEqual(id, await deriveClusterId(peers), "without the token the id would differ");
    await kv.put("identity/k", "v1");
    equal((await first.stop())?.code, 0);

    // Restart with another --peers list and no token: refused before; now the data directory's
    // identity stands and the bootstrap flags are ignored (with a log line saying so).
    const second = run(`1=${address},2=127.0.0.1:${unused}`, []);
    const kv2 = client();
    await waitFor("node 1 to lead again", 15_000, async () => {
      try {
        return (await kv2.statusOf(address, { timeoutMs: 500 })).role === "leader";
      } catch {
        return false;
      }
    });
    const after = await kv2.statusOf(address);
    equal(after.clusterId, id);
    // The Raft group is the log's ({1}), not the new --peers list ({1, 2}).
    equal(after.members.map((m) => `${m.id}:${m.kind}`).join(","), "1:voter");
    equal(await kv2.getString("identity/k"), "v1");
    ok(second.log().includes("bootstrap-only"), second.tail());
  } catch (e) {
    for (const n of started) console.error(n.tail());
    throw e;
  } finally {
    for (const c of clients) c.close();
    for (const n of started) await n.stop();
    await Deno.remove(root, { recursive: true });
  }
});
