/**
 * Cluster identity: derived from the initial member list and persisted in the data directory.
 *
 * The id is the first 16 hex digits of SHA-256 over the sorted `id=host:port` list of the
 * bootstrap `--peers`. It is written to `<dataDir>/CLUSTER_ID` on first start (write temp, fsync,
 * rename); afterwards the persisted id is the node's identity. A node whose data directory holds
 * another cluster's id refuses to start.
 *
 * @example
 * ```ts
 * import { deriveClusterId } from "./cluster_id.ts";
 * const id = await deriveClusterId(new Map([[1, "127.0.0.1:50051"]]));
 * console.log(id.length); // 16
 * ```
 *
 * @module
 */

/** The file holding the cluster id inside a data directory. Never change it. */
export const CLUSTER_ID_FILE = "CLUSTER_ID";

/** A data directory that belongs to another cluster. */
export class ClusterIdMismatch extends Error {
  override name = "ClusterIdMismatch";
}

/** Derives the cluster id of a bootstrap member list. */
export async function deriveClusterId(peers: Map<number, string>): Promise<string> {
  const text = [...peers].sort((a, b) => a[0] - b[0]).map(([id, a]) => `${id}=${a}`).join(",");
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
  return Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads the persisted cluster id, or undefined when the directory has none. */
export async function readClusterId(dataDir: string): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(`${dataDir}/${CLUSTER_ID_FILE}`)).trim();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Persists the cluster id durably (temp file, fsync, rename, fsync of the directory). */
export async function writeClusterId(dataDir: string, id: string): Promise<void> {
  const tmp = `${dataDir}/${CLUSTER_ID_FILE}.tmp`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await f.write(new TextEncoder().encode(id + "\n"));
    await f.syncData();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, `${dataDir}/${CLUSTER_ID_FILE}`);
  try {
    const d = await Deno.open(dataDir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // Directory fsync is not supported everywhere.
  }
}

/**
 * Returns the cluster id of `dataDir`: the persisted one if any (it must equal `expected` when
 * given), else `expected` persisted now.
 */
export async function ensureClusterId(dataDir: string, expected: string): Promise<string> {
  const have = await readClusterId(dataDir);
  if (have === undefined) {
    await writeClusterId(dataDir, expected);
    return expected;
  }
  if (have !== expected) {
    throw new ClusterIdMismatch(
      `data directory ${dataDir} belongs to cluster ${have}, but this node is configured for ` +
        `cluster ${expected} (another --peers list?); refusing to start`,
    );
  }
  return have;
}
