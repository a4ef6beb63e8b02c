/**
 * Majority quorum arithmetic, pure and tiny: the committed index of a configuration and the
 * outcome of a vote. Learners never count; only the voters passed in do.
 *
 * @module
 */
import type { NodeId } from "./types.ts";

/** Outcome of a vote so far. */
export type VoteResult = "won" | "lost" | "pending";

/**
 * The largest index that a majority of `voters` have matched (`match(id)` per voter). An empty
 * configuration commits nothing (0).
 *
 * @example
 * ```ts
 * import { committedIndex } from "./quorum.ts";
 * const match = new Map([[1, 5], [2, 3], [3, 9]]);
 * console.log(committedIndex([1, 2, 3], (id) => match.get(id) ?? 0)); // 5
 * ```
 */
export function committedIndex(
  voters: Iterable<NodeId>,
  match: (id: NodeId) => number,
): number {
  const idx: number[] = [];
  for (const id of voters) idx.push(match(id));
  if (idx.length === 0) return 0;
  idx.sort((a, b) => b - a);
  // With n voters, the (⌊n/2⌋+1)-th largest value is held by a majority.
  return idx[Math.floor(idx.length / 2)]!;
}

/**
 * Tallies `votes` (true = granted) of `voters`; votes of non-voters are ignored.
 *
 * @example
 * ```ts
 * import { voteResult } from "./quorum.ts";
 * console.log(voteResult([1, 2, 3], new Map([[1, true], [2, true]]))); // "won"
 * console.log(voteResult([1, 2, 3], new Map([[1, true], [2, false]]))); // "pending"
 * ```
 */
export function voteResult(
  voters: Iterable<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  let n = 0;
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    n++;
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  if (n === 0) return "won";
  const q = Math.floor(n / 2) + 1;
  if (granted >= q) return "won";
  if (n - rejected >= q) return "pending";
  return "lost";
}

/**
 * Whether the members for which `active(id)` holds form a majority of `voters`.
 *
 * @example
 * ```ts
 * import { hasQuorum } from "./quorum.ts";
 * console.log(hasQuorum([1, 2, 3], (id) => id !== 3)); // true
 * ```
 */
export function hasQuorum(voters: Iterable<NodeId>, active: (id: NodeId) => boolean): boolean {
  let n = 0;
  let yes = 0;
  for (const id of voters) {
    n++;
    if (active(id)) yes++;
  }
  return yes >= Math.floor(n / 2) + 1;
}
