/**
 * The `kv` command's parsing and output without a cluster (tests/node_kv_cli_test.ts runs it
 * end to end against real nodes).
 */
import { equal, match } from "node:assert/strict";
import { formatTable, type KvIO, runKv } from "./kv_main.ts";

function capture(): KvIO & { out_: string; err_: string } {
  const io = {
    out_: "",
    err_: "",
    out(t: string) {
      io.out_ += t;
    },
    err(t: string) {
      io.err_ += t;
    },
  };
  return io;
}

Deno.test("kv --help prints the usage and exits 0", async () => {
  const io = capture();
  equal(await runKv(["--help"], io), 0);
  match(io.out_, /^Usage: deno task kv/);
  match(io.out_, /member add ID HOST:PORT \[--learner\]/);
  match(io.out_, /^ {2}defrag {2,}reclaim the disk space of deleted/m);
});

Deno.test("kv rejects bad command lines with one line and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /no command given/],
    [["put", "k"], /usage: put KEY VALUE/],
    [["get"], /usage: get KEY/],
    [["frobnicate"], /unknown command "frobnicate"/],
    [["scan", "p", "--limit", "x"], /--limit must be a positive integer/],
    [["--bogus", "get", "k"], /bogus/],
    [["--endpoints", "nohostport", "get", "k"], /bad endpoint "nohostport"/],
    [["--endpoints", "", "get", "k"], /--endpoints is empty/],
    [["member"], /usage: member list\|add/],
    [["member", "add", "x", "h:1"], /ID must be a positive integer/],
    [["member", "add", "4", "nohost"], /bad address "nohost"/],
    [["member", "promote"], /usage: member promote ID/],
    [["member", "dance"], /unknown member command "dance"/],
    [["defrag", "now"], /usage: defrag/],
    [["get", "k", "--json"], /--json is for status, member/],
    [["scan", "p", "--prefix"], /--prefix is for del/],
    [["put", "k", "v", "--all"], /--all is for del/],
    [["backup", "--replace"], /--replace is for restore/],
    [["del", "k", "--serializable"], /--serializable is for get, scan, range/],
    [["del", "--prefix", ""], /--prefix is empty \(to delete every key: --all\)/],
    [["del", "", "z"], /START is empty/],
    [["del", "--all", "k"], /usage: del KEY \| del START END/],
    [["restore", "--merge", "--replace"], /--replace or --merge, not both/],
  ];
  for (const [args, want] of cases) {
    const io = capture();
    equal(await runKv(args, io), 2, `${args.join(" ")}: ${io.err_}`);
    match(io.err_, want, args.join(" "));
    match(io.err_, /^kv: [^\n]*\n$/, `one line for ${args.join(" ")}`);
    equal(io.out_, "");
  }
});

Deno.test("formatTable aligns columns under a header", () => {
  equal(
    formatTable(["ID", "ADDRESS"], [["1", "127.0.0.1:50051"], ["10", "h:1"]]),
    "ID  ADDRESS\n1   127.0.0.1:50051\n10  h:1\n",
  );
});
