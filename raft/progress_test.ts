import assert from "node:assert/strict";
import { Inflights, Progress } from "./progress.ts";

Deno.test("inflights: a bounded window freed by acknowledgements", () => {
  const inf = new Inflights(3);
  inf.add(5);
  inf.add(9);
  inf.add(12);
  assert.equal(inf.full(), true);
  assert.throws(() => inf.add(13));
  inf.freeLE(9);
  assert.equal(inf.count, 1);
  inf.add(15);
  inf.add(20);
  inf.freeFirstOne();
  assert.equal(inf.count, 2);
  inf.freeLE(100);
  assert.equal(inf.count, 0);
});

Deno.test("progress: probe sends one message at a time, replicate pipelines", () => {
  const pr = new Progress({ next: 11, maxInflight: 2 });
  assert.equal(pr.isPaused(), false);
  pr.probeSent = true;
  assert.equal(pr.isPaused(), true);
  assert.equal(pr.maybeUpdate(10), true);
  assert.equal(pr.isPaused(), false, "an ack unpauses");
  pr.becomeReplicate();
  assert.equal(pr.next, 11);
  pr.optimisticUpdate(15);
  pr.inflights.add(15);
  pr.optimisticUpdate(20);
  pr.inflights.add(20);
  assert.equal(pr.isPaused(), true, "window full");
  assert.equal(pr.next, 21);
});

Deno.test("progress: rejections back off, stale ones are ignored", () => {
  const pr = new Progress({ next: 11, maxInflight: 4 });
  assert.equal(pr.maybeDecrTo(5, 5), false, "stale: not the index we probed");
  assert.equal(pr.maybeDecrTo(10, 4), true);
  assert.equal(pr.next, 5, "jumps to the hint + 1");
  pr.match = 3;
  assert.equal(pr.maybeDecrTo(4, 0), true);
  assert.equal(pr.next, 4, "never below match + 1");
  pr.becomeReplicate();
  pr.optimisticUpdate(30);
  assert.equal(pr.maybeDecrTo(2, 0), false, "rejection at or below match is stale");
  assert.equal(pr.maybeDecrTo(20, 0), true);
  assert.equal(pr.next, 4);
});

Deno.test("progress: snapshot state pauses until the snapshot is acknowledged", () => {
  const pr = new Progress({ next: 2, maxInflight: 4 });
  pr.becomeSnapshot(100);
  assert.equal(pr.isPaused(), true);
  pr.becomeProbe();
  assert.equal(pr.next, 101, "probe resumes after the snapshot");
});
