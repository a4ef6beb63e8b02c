/**
 * Micro-benchmark of the HPACK module (server/h2/hpack.ts, server/h2/huffman.ts): the per-request
 * header work of the h2 gRPC server. Not a test; prints ns per operation.
 *
 * Run: `deno run bench/hpack_bench.ts [--seconds 1]` (under `flock /tmp/ckv-bench.lock` on a shared
 * machine). The header blocks imitate what a grpc-js client's nghttp2 sends: the first request of a
 * connection carries Huffman-coded literals with incremental indexing, later ones are mostly
 * dynamic-table indexes plus a fresh `grpc-timeout` literal.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { encodeHeaders, HpackDecoder } from "../server/h2/hpack.ts";
import { huffmanDecode, huffmanEncode } from "../server/h2/huffman.ts";

const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string" } } });
const seconds = Number(values.seconds ?? "1");

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** HPACK integer with an N-bit prefix and the given high flag bits. */
function int(value: number, prefix: number, flags: number): number[] {
  const max = (1 << prefix) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A Huffman-coded string literal. */
function hstr(s: string): number[] {
  const coded = huffmanEncode(latin1(s));
  return [...int(coded.length, 7, 0x80), ...coded];
}

/** Literal with incremental indexing: static name index, or a literal name when 0. */
function literalIndexed(nameIndex: number, name: string, value: string): number[] {
  return [...int(nameIndex, 6, 0x40), ...(nameIndex === 0 ? hstr(name) : []), ...hstr(value)];
}

const FIELDS: Array<[number, string, string]> = [
  [4, ":path", "/kvstore.KVStore/Put"],
  [1, ":authority", "127.0.0.1:50051"],
  [31, "content-type", "application/grpc"],
  [0, "te", "trailers"],
  [58, "user-agent", "grpc-node-js/1.14.3"],
  [0, "grpc-accept-encoding", "identity,deflate,gzip"],
  [16, "accept-encoding", "identity"],
];

/** First block of a connection: :method POST, :scheme http, then every field as a new literal. */
const firstBlock = new Uint8Array([
  0x83,
  0x86,
  ...FIELDS.flatMap(([i, n, v]) => literalIndexed(i, n, v)),
  ...literalIndexed(0, "grpc-timeout", "4999m"),
]);

/**
 * A later block: static :method/:scheme, the seven fields from the dynamic table, and a
 * grpc-timeout literal without indexing (so the table, and the indexes, stay the same).
 */
function steadyBlock(timeout: string): Uint8Array {
  const decoder = new HpackDecoder();
  decoder.decode(firstBlock);
  const entries = decoder.dynamicTableEntries();
  const indexes = FIELDS.map(([, n]) => 62 + entries.findIndex(([en]) => en === n));
  return new Uint8Array([
    0x83,
    0x86,
    ...indexes.flatMap((i) => int(i, 7, 0x80)),
    0x00,
    ...hstr("grpc-timeout"),
    ...hstr(timeout),
  ]);
}

function measure(name: string, fn: () => void, opsPerCall = 1): number {
  for (let i = 0; i < 20_000; i++) fn(); // warm-up
  let calls = 0;
  const deadline = performance.now() + seconds * 1000;
  const start = performance.now();
  while (performance.now() < deadline) {
    for (let i = 0; i < 1000; i++) fn();
    calls += 1000;
  }
  const ns = ((performance.now() - start) * 1e6) / (calls * opsPerCall);
  console.log(`${name.padEnd(58)} ${ns.toFixed(0).padStart(7)} ns/op`);
  return ns;
}

const steady = steadyBlock("4998m");
const decoder = new HpackDecoder();
decoder.decode(firstBlock);
const expectedFields = FIELDS.length + 3;
measure("decode steady-state gRPC request block (10 fields)", () => {
  if (decoder.decode(steady).length !== expectedFields) throw new Error("bad decode");
});

measure("decode first gRPC request block (Huffman literals, new table)", () => {
  const d = new HpackDecoder();
  if (d.decode(firstBlock).length !== expectedFields) throw new Error("bad decode");
});

const text = latin1(
  "the quick brown fox jumps over the lazy dog 0123456789 /kvstore.KVStore/Put ".repeat(14),
);
const coded = huffmanEncode(text);
const out = new Uint8Array(text.length * 2);
const hns = measure(`huffman decode ${coded.length} B → ${text.length} B`, () => {
  if (huffmanDecode(coded, 0, coded.length, out) !== text.length) throw new Error("bad");
});
console.log(
  `${"  = MB/s of decoded output".padEnd(58)} ${(text.length / hns * 1000).toFixed(0).padStart(7)}`,
);

const response: Array<[string, string]> = [[":status", "200"], [
  "content-type",
  "application/grpc",
]];
const trailers: Array<[string, string]> = [["grpc-status", "0"], ["grpc-message", ""]];
measure("encodeHeaders response headers + trailers (2 blocks)", () => {
  encodeHeaders(response);
  encodeHeaders(trailers);
});
