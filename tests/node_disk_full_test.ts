/**
 * A full disk, for real: every node's data directory is a small tmpfs, and one is filled to the
 * last byte while the cluster takes writes, first the leader's, then a follower's. The node must
 * stop with a clear error rather than acknowledge what it could not write; the two others go on
 * (a new leader, the client retrying with the same client id and seq); once there is room again
 * the node restarts from its own data and catches up, and no acknowledged write is missing.
 *
 * Mounting a tmpfs needs root (CI runs as root); elsewhere the test is ignored.
 */
import { equal, match, notEqual, ok } from "node:assert/strict";
import { bytesToString } from "../client/client.ts";
import { TestCluster, waitFor } from "./harness.ts";

async function _run(cmd: string, args: string[]): Promise<boolean> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
    return r.success;
  } catch {
    return false;
  }
}

/** Whether this process may mount a tmpfs (tried once on a scratch directory). */
async function _canMount(): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "concordkv-mount-probe-" });
  try {
    if (!await _run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir])) return false;
    return await _run("umount", [dir]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const canMount = await _canMount();

Deno.test({
  name: "a node whose disk fills stops with a clear error; after space is freed it catches up",
  ignore: !canMount,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "concordkv-disk-full-" });
    const mounted: string[] = [];
    let c: TestCluster | undefined;
    try {
      for (let id = 1; id <= 3; id++) {
        const dir = `${root}/node-${id}`;
        await Deno.mkdir(dir);
        ok(await _run("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", dir]), "mount");
        mounted.push(dir);
      }
      c = await TestCluster.start({ nodes: 3, dataDirRoot: root });
      const cluster = c;
      await cluster.waitForLeader(5000);
      const kv = cluster.client({ timeoutMs: 15_000 });
      const value = (i: number) => `value-${i}-`.padEnd(1000, "x");
      const acked: number[] = [];
      let next = 0;
      const write = async (n: number) => {
        for (const end = next + n; next < end; next++) {
          await kv.put(`k${next}`, value(next));
          acked.push(next);
        }
      };

      const fillAndRecover = async (id: number, what: string) => {
        const dir = `${root}/node-${id}`;
        const filler = await Deno.open(`${dir}/filler`, { write: true, create: true });
        const chunk = new Uint8Array(64 * 1024).fill(1);
        let filled = 0;
        try {
          for (;;) filled += await filler.write(chunk);
        } catch (e) {
          match(String(e), /No space left on device/);
        } finally {
          filler.close();
        }
        ok(filled > 0);

        // Writes go on: the node fails its next log write and stops; a leader's in-flight writes
        // are retried by the client at the new leader (the same client id and seq: applied once).
        await write(300);
        const node = cluster.node(id);
        await waitFor(`${what} to stop`, 10_000, () => !node.running);
        equal(node.exitStatus?.code, 1, `${what} exits non-zero`);
        match(
          node.log(),
          /fatal: No space left on device.*; stopping \(the disk holding \S+ is full: free space/,
        );
        for (const i of acked) equal(await kv.getString(`k${i}`), value(i), `k${i}`);

        // Room again: the node restarts from its own data and catches up.
        await Deno.remove(`${dir}/filler`);
        await node.restart();
        const leader = await cluster.waitForLeader(10_000);
        const commit = (await cluster.status(leader)).commitIndex;
        await waitFor(`${what} to catch up`, 20_000, async () => {
          const s = await cluster.status(id).catch(() => undefined);
          return s !== undefined && s.appliedIndex >= commit;
        });
        const own = cluster.nodeClient(id, { timeoutMs: 5000 });
        for (const i of acked) {
          const v = await own.get(`k${i}`, { serializable: true });
          notEqual(v, undefined, `k${i} on ${what}`);
          equal(bytesToString(v!), value(i), `k${i} on ${what}`);
        }
        // And it takes part again: a new write reaches it.
        await kv.put(`after-${id}`, "room");
        await waitFor(`${what} to apply a new write`, 10_000, async () => {
          const v = await own.get(`after-${id}`, { serializable: true });
          return v !== undefined && bytesToString(v) === "room";
        });
      };

      await write(100);
      const leader = await cluster.waitForLeader(5000);
      await fillAndRecover(leader, `leader ${leader}`);
      const now = await cluster.waitForLeader(5000);
      const follower = [1, 2, 3].find((id) => id !== now)!;
      await fillAndRecover(follower, `follower ${follower}`);
    } catch (e) {
      if (c !== undefined) console.error(c.dumpLogs(60));
      throw e;
    } finally {
      await c?.stop();
      for (const dir of mounted) await _run("umount", [dir]);
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
