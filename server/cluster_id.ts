/**
 * Cluster identity: derived from the initial member list and persisted in the data directory.
 *
 * The id is the first 16 hex digits of SHA-256 over the sorted `id=host:port` list of the
 * bootstrap `--peers`, preceded by the `--initial-cluster-token` when one is given (as in etcd, the
 * token tells apart two clusters bootstrapped from the same member list). It is written to
 * `<dataDir>/CLUSTER_ID` on first start (write temp, fsync, rename); afterwards the persisted id is
 * the node's identity and the bootstrap flags no longer matter (membership lives in the Raft log),
 * so a node can restart with another `--peers` list, for example after members moved.
 * Peers check the id on every stream, so a node started on another cluster's data directory is
 * refused by its peers rather than mixing the two.
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

/**
 * Derives the cluster id of a bootstrap member list and optional token. Without a token the id is
 * the one earlier versions derived, so existing data directories keep their identity.
 */
export async function deriveClusterId(peers: Map<number, string>, token = ""): Promise<string> {
  const list = [...peers].sort((a, b) => a[0] - b[0]).map(([id, a]) => `${id}=${a}`).join(",");
  const text = token === "" ? list : `token=${token}\n${list}`;
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

/** What {@linkcode ensureClusterId} found. */
export interface ClusterIdentity {
  /** The node's cluster id: the persisted one, or the bootstrap one just persisted. */
  id: string;
  /** True when the directory was new and `bootstrap` was written. */
  created: boolean;
}

/**
 * Returns the cluster id of `dataDir`: the persisted one if any, else `bootstrap` persisted now.
 * A persisted id wins over `bootstrap` (the caller may log the difference).
 */
export async function ensureClusterId(
  dataDir: string,
  bootstrap: string,
): Promise<ClusterIdentity> {
  const have = await readClusterId(dataDir);
  if (have !== undefined && have !== "") return { id: have, created: false };
  await writeClusterId(dataDir, bootstrap);
  return { id: bootstrap, created: true };
}
