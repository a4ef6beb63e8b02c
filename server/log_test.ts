import assert from "node:assert/strict";
import { Logger } from "./log.ts";

function capture(format?: "text" | "json") {
  const lines: string[] = [];
  const log = new Logger({
    node: 3,
    level: "info",
    format,
    state: () => ({ role: "leader", term: 7 }),
    write: (l) => lines.push(l),
  });
  return { log, lines };
}

Deno.test("text log lines: level, time, node, role, term, message", () => {
  const { log, lines } = capture();
  log.debug("not shown");
  log.info("became leader");
  log.error("disk full");
  assert.equal(lines.length, 2);
  assert.match(
    lines[0]!,
    /^INFO \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z node=3 leader term=7 became leader$/,
  );
  assert.match(lines[1]!, /^ERROR \S+ node=3 leader term=7 disk full$/);
});

Deno.test("json log lines: one object a line, any message kept exactly", () => {
  const { log, lines } = capture("json");
  const msg = 'peer 2 down: "connection reset"\nsecond line \u00e9';
  log.debug("not shown");
  log.warn(msg);
  assert.equal(lines.length, 1);
  assert.ok(!lines[0]!.includes("\n"), lines[0]!);
  const o = JSON.parse(lines[0]!);
  assert.deepEqual(Object.keys(o), ["level", "ts", "node", "role", "term", "msg"]);
  assert.equal(o.level, "warn");
  assert.ok(Math.abs(Date.parse(o.ts) - Date.now()) < 60_000, o.ts);
  assert.equal(o.node, 3);
  assert.equal(o.role, "leader");
  assert.equal(o.term, 7);
  assert.equal(o.msg, msg);
});
