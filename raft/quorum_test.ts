import assert from "node:assert/strict";
import { committedIndex, hasQuorum, voteResult } from "./quorum.ts";

Deno.test("quorum: committed index is the highest index a majority holds", () => {
  const m = (xs: Record<number, number>) => (id: number) => xs[id] ?? 0;
  assert.equal(committedIndex([1], m({ 1: 7 })), 7);
  assert.equal(committedIndex([1, 2], m({ 1: 7, 2: 3 })), 3);
  assert.equal(committedIndex([1, 2, 3], m({ 1: 7, 2: 3, 3: 5 })), 5);
  assert.equal(committedIndex([1, 2, 3, 4], m({ 1: 9, 2: 8, 3: 2, 4: 1 })), 2);
  assert.equal(committedIndex([1, 2, 3, 4, 5], m({ 1: 9, 2: 8, 3: 7, 4: 1 })), 7);
  assert.equal(committedIndex([], m({})), 0);
});

Deno.test("quorum: vote results for odd and even configurations", () => {
  const v = (xs: [number, boolean][]) => new Map(xs);
  assert.equal(voteResult([1, 2, 3], v([[1, true]])), "pending");
  assert.equal(voteResult([1, 2, 3], v([[1, true], [2, true]])), "won");
  assert.equal(voteResult([1, 2, 3], v([[1, true], [2, false], [3, false]])), "lost");
  assert.equal(voteResult([1, 2, 3, 4], v([[1, true], [2, true]])), "pending");
  assert.equal(voteResult([1, 2, 3, 4], v([[1, true], [2, false], [3, false]])), "lost");
  assert.equal(voteResult([1, 2, 3], v([[1, true], [9, true]])), "pending", "non-voters ignored");
});

Deno.test("quorum: hasQuorum counts only voters", () => {
  assert.equal(hasQuorum([1, 2, 3], (id) => id === 1), false);
  assert.equal(hasQuorum([1, 2, 3], (id) => id !== 3), true);
  assert.equal(hasQuorum([1, 2, 3, 4, 5], (id) => id <= 2), false);
});
