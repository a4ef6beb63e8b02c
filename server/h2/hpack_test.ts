import assert, {
  deepStrictEqual as assertEquals,
  throws as assertThrows,
} from "node:assert/strict";
import {
  encodeHeaders,
  HeaderListTooLargeError,
  HpackDecoder,
  HpackError,
  STATIC_TABLE,
} from "./hpack.ts";
import { HUFFMAN_CODES, HUFFMAN_LENGTHS, huffmanDecode, huffmanEncode } from "./huffman.ts";

/** Bytes from a hex dump as printed in RFC 7541 Appendix C (spaces and newlines ignored). */
function hex(dump: string): Uint8Array {
  const clean = dump.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A literal with incremental indexing and a literal name (no Huffman), short strings only. */
function encodeIndexedLiteral(name: string, value: string): Uint8Array {
  return new Uint8Array([
    0x40,
    name.length,
    ...latin1Bytes(name),
    value.length,
    ...latin1Bytes(value),
  ]);
}

function latin1Bytes(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** Parses the "[  1] (s =  55) name: value" table dumps of Appendix C (value after the first ": "). */
type Step = {
  block: string;
  headers: Array<[string, string]>;
  table: Array<[string, string]>;
  size: number;
};

function runSteps(decoder: HpackDecoder, steps: Step[]): void {
  for (const [i, step] of steps.entries()) {
    assertEquals(decoder.decode(hex(step.block)), step.headers, `block ${i + 1}: header list`);
    assertEquals(decoder.dynamicTableEntries(), step.table, `block ${i + 1}: dynamic table`);
    assertEquals(decoder.dynamicTableSize, step.size, `block ${i + 1}: table size`);
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 7541 Appendix C known answers.

Deno.test("hpack C.2.1 literal with indexing adds to the dynamic table", () => {
  runSteps(new HpackDecoder(), [{
    block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    headers: [["custom-key", "custom-header"]],
    table: [["custom-key", "custom-header"]],
    size: 55,
  }]);
});

Deno.test("hpack C.2.2 literal without indexing leaves the table empty", () => {
  runSteps(new HpackDecoder(), [{
    block: "040c 2f73 616d 706c 652f 7061 7468",
    headers: [[":path", "/sample/path"]],
    table: [],
    size: 0,
  }]);
});

Deno.test("hpack C.2.3 literal never indexed leaves the table empty", () => {
  runSteps(new HpackDecoder(), [{
    block: "1008 7061 7373 776f 7264 0673 6563 7265 74",
    headers: [["password", "secret"]],
    table: [],
    size: 0,
  }]);
});

Deno.test("hpack C.2.4 indexed static field", () => {
  runSteps(new HpackDecoder(), [{
    block: "82",
    headers: [[":method", "GET"]],
    table: [],
    size: 0,
  }]);
});

const C3_C4_HEADERS: Array<Array<[string, string]>> = [
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
  [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
    ["cache-control", "no-cache"],
  ],
  [
    [":method", "GET"],
    [":scheme", "https"],
    [":path", "/index.html"],
    [":authority", "www.example.com"],
    ["custom-key", "custom-value"],
  ],
];
const C3_C4_TABLES: Array<Array<[string, string]>> = [
  [[":authority", "www.example.com"]],
  [["cache-control", "no-cache"], [":authority", "www.example.com"]],
  [["custom-key", "custom-value"], ["cache-control", "no-cache"], [
    ":authority",
    "www.example.com",
  ]],
];
const C3_C4_SIZES = [57, 110, 164];

Deno.test("hpack C.3 request sequence without Huffman", () => {
  const blocks = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
  ];
  runSteps(
    new HpackDecoder(),
    blocks.map((block, i) => ({
      block,
      headers: C3_C4_HEADERS[i]!,
      table: C3_C4_TABLES[i]!,
      size: C3_C4_SIZES[i]!,
    })),
  );
});

Deno.test("hpack C.4 request sequence with Huffman", () => {
  const blocks = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
  ];
  runSteps(
    new HpackDecoder(),
    blocks.map((block, i) => ({
      block,
      headers: C3_C4_HEADERS[i]!,
      table: C3_C4_TABLES[i]!,
      size: C3_C4_SIZES[i]!,
    })),
  );
});

const DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC = "https://www.example.com";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const C5_C6_HEADERS: Array<Array<[string, string]>> = [
  [[":status", "302"], ["cache-control", "private"], ["date", DATE1], ["location", LOC]],
  [[":status", "307"], ["cache-control", "private"], ["date", DATE1], ["location", LOC]],
  [
    [":status", "200"],
    ["cache-control", "private"],
    ["date", DATE2],
    ["location", LOC],
    ["content-encoding", "gzip"],
    ["set-cookie", COOKIE],
  ],
];
const C5_C6_TABLES: Array<Array<[string, string]>> = [
  [["location", LOC], ["date", DATE1], ["cache-control", "private"], [":status", "302"]],
  [[":status", "307"], ["location", LOC], ["date", DATE1], ["cache-control", "private"]],
  [["set-cookie", COOKIE], ["content-encoding", "gzip"], ["date", DATE2]],
];
const C5_C6_SIZES = [222, 222, 215];

Deno.test("hpack C.5 responses without Huffman evict at table size 256", () => {
  const blocks = [
    `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
     6c65 2e63 6f6d`,
    "4803 3330 37c1 c0bf",
    `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
     3d31`,
  ];
  runSteps(
    new HpackDecoder({ maxTableSize: 256 }),
    blocks.map((block, i) => ({
      block,
      headers: C5_C6_HEADERS[i]!,
      table: C5_C6_TABLES[i]!,
      size: C5_C6_SIZES[i]!,
    })),
  );
});

Deno.test("hpack C.6 responses with Huffman evict at table size 256", () => {
  const blocks = [
    `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
    "4883 640e ffc1 c0bf",
    `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
  ];
  runSteps(
    new HpackDecoder({ maxTableSize: 256 }),
    blocks.map((block, i) => ({
      block,
      headers: C5_C6_HEADERS[i]!,
      table: C5_C6_TABLES[i]!,
      size: C5_C6_SIZES[i]!,
    })),
  );
});

// ---------------------------------------------------------------------------------------------
// Huffman.

Deno.test("huffman round-trips every byte value and random byte strings", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const rng = mulberry32(7);
  const inputs = [all, new Uint8Array(0), latin1Bytes("a"), latin1Bytes("\xff\x00\xfe")];
  for (let i = 0; i < 500; i++) {
    inputs.push(Uint8Array.from({ length: Math.floor(rng() * 64) }, () => Math.floor(rng() * 256)));
  }
  for (const input of inputs) {
    const coded = huffmanEncode(input);
    const out = new Uint8Array(Math.floor((coded.length * 8) / 5));
    const n = huffmanDecode(coded, 0, coded.length, out);
    assertEquals(Array.from(out.subarray(0, n)), Array.from(input));
  }
});

Deno.test("huffman table: 'a' is 00011 (5 bits), '/' is 011000 (6 bits), EOS is 30 ones", () => {
  assertEquals([HUFFMAN_CODES[97], HUFFMAN_LENGTHS[97]], [0x3, 5]);
  assertEquals([HUFFMAN_CODES[47], HUFFMAN_LENGTHS[47]], [0x18, 6]);
  assertEquals([HUFFMAN_CODES[256], HUFFMAN_LENGTHS[256]], [0x3fffffff, 30]);
});

Deno.test("huffman rejects EOS in the string, padding over 7 bits and padding with a zero", () => {
  const out = new Uint8Array(64);
  // EOS (30 ones) padded with two ones: 0xff 0xff 0xff 0xff.
  assertEquals(huffmanDecode(hex("ffffffff"), 0, 4, out), -1);
  // "0" is 00000 (5 bits); 0x07 = 00000 111: valid 3-bit padding.
  assertEquals(huffmanDecode(hex("07"), 0, 1, out), 1);
  // 00000 111 11111111: 11 bits of ones after the symbol (over 7).
  assertEquals(huffmanDecode(hex("07ff"), 0, 2, out), -1);
  // A lone 0xff: 8 bits of padding.
  assertEquals(huffmanDecode(hex("ff"), 0, 1, out), -1);
  // 00000 110: padding with a zero bit.
  assertEquals(huffmanDecode(hex("06"), 0, 1, out), -1);
  // "00" = 00000 00000, then 111111: a 6-bit all-ones padding in the second byte is fine.
  assertEquals(huffmanDecode(hex("003f"), 0, 2, out), 2);
  // 00000 00000 011111: '9' (011111) decodes, no padding left.
  assertEquals(huffmanDecode(hex("001f"), 0, 2, out), 3);
});

// ---------------------------------------------------------------------------------------------
// Malformed blocks.

function assertHpackError(decoder: HpackDecoder, block: Uint8Array, pattern?: RegExp): void {
  assertThrows(() => decoder.decode(block), (e: Error) => {
    assert(e instanceof HpackError, `expected HpackError, got ${e}`);
    if (pattern) assert(pattern.test(e.message), `message "${e.message}" !~ ${pattern}`);
    return true;
  });
}

Deno.test("hpack rejects truncated and oversized integers", () => {
  // Indexed field with a 7-bit prefix of all ones and no continuation byte.
  assertHpackError(new HpackDecoder(), hex("ff"), /truncated integer/);
  // Continuation bit set on the last byte.
  assertHpackError(new HpackDecoder(), hex("ff80"), /truncated integer/);
  // 127 + 0x7f * 2^0 + ... larger than 2^31 - 1.
  assertHpackError(new HpackDecoder(), hex("ffffffffff0f"), /31 bits/);
  // Too many continuation bytes even with zero payload.
  assertHpackError(new HpackDecoder(), hex("ff8080808080800"), /too long|truncated/);
  assertHpackError(new HpackDecoder(), hex("ff808080808000"), /too long/);
  // The largest allowed value decodes as an integer (then fails as an index past the table).
  assertHpackError(new HpackDecoder(), hex("ff80feffff07"), /past the table/);
});

Deno.test("hpack rejects index 0 and indexes past the tables", () => {
  assertHpackError(new HpackDecoder(), hex("80"), /index 0/);
  assertHpackError(new HpackDecoder(), hex("be"), /index 62 is past the table/);
  // Literal with indexed name 62 (empty dynamic table).
  assertHpackError(new HpackDecoder(), hex("7e0161"), /name index 62/);
  assertHpackError(new HpackDecoder(), hex("0f2f0161"), /name index 62/);
  // After one insert, 62 is valid and 63 is not.
  const d = new HpackDecoder();
  d.decode(hex("400161 0162"));
  assertEquals(d.decode(hex("be")), [["a", "b"]]);
  assertHpackError(d, hex("bf"), /index 63/);
});

Deno.test("hpack rejects strings that run past the block", () => {
  assertHpackError(new HpackDecoder(), hex("0405 6162"), /past the end/);
  assertHpackError(new HpackDecoder(), hex("40"), /truncated string length/);
  assertHpackError(new HpackDecoder(), hex("4001 61"), /truncated string length/);
  assertHpackError(new HpackDecoder(), hex("047f"), /truncated integer/);
});

Deno.test("hpack rejects bad Huffman padding and EOS inside a header block", () => {
  // Value "0" with a zero in the padding.
  assertHpackError(new HpackDecoder(), hex("0481 06"), /Huffman/);
  // 8 bits of padding.
  assertHpackError(new HpackDecoder(), hex("0482 07ff"), /Huffman/);
  // EOS.
  assertHpackError(new HpackDecoder(), hex("0484 ffffffff"), /Huffman/);
  // Huffman-coded literal name with bad padding.
  assertHpackError(new HpackDecoder(), hex("0081 06 0161"), /Huffman/);
});

Deno.test("hpack table size updates: only at the start of a block, never above the limit", () => {
  const d = new HpackDecoder({ maxTableSize: 256 });
  d.decode(hex("400161 0162")); // a: b (34 bytes)
  // Update in the middle of a block.
  assertHpackError(new HpackDecoder(), hex("82 3f e1 01"), /after a header field/);
  // Update above the advertised limit (256 + 1 = 257 = 31 + 226).
  assertHpackError(new HpackDecoder({ maxTableSize: 256 }), hex("3f e2 01"), /above the limit/);
  // Update to 0 evicts everything, then back to 256 (two updates at the start are allowed).
  assertEquals(d.decode(hex("20 3f e1 01 82")), [[":method", "GET"]]);
  assertEquals(d.dynamicTableEntries(), []);
  assertEquals(d.dynamicTableLimit, 256);
  // A smaller limit evicts down to it; then an entry bigger than the limit empties the table.
  d.decode(hex("400161 0162 400163 0164")); // two 34-byte entries
  assertEquals(d.dynamicTableSize, 68);
  d.decode(hex("3f 14")); // 31 + 20 = 51: only the newest entry remains
  assertEquals(d.dynamicTableEntries(), [["c", "d"]]);
  assertEquals(d.dynamicTableSize, 34);
  d.decode(encodeIndexedLiteral("e", "x".repeat(19))); // 32 + 1 + 19 = 52 > 51
  assertEquals(d.dynamicTableEntries(), []);
  assertEquals(d.dynamicTableSize, 0);
});

Deno.test("hpack dynamic table grows past its initial ring and keeps index order", () => {
  const d = new HpackDecoder({ maxTableSize: 1 << 20, maxHeaderListSize: 1 << 20 });
  const blocks: Uint8Array[] = [];
  for (let i = 0; i < 1000; i++) blocks.push(encodeIndexedLiteral(`k${i}`, `v${i}`));
  // Half in one block, half one per block, with lookups of the oldest and newest in between.
  d.decode(new Uint8Array(blocks.slice(0, 500).flatMap((b) => [...b])));
  assertEquals(d.decode(new Uint8Array([0xbe])), [["k499", "v499"]]);
  for (const b of blocks.slice(500)) d.decode(b);
  const entries = d.dynamicTableEntries();
  assertEquals(entries.length, 1000);
  assertEquals(entries[0], ["k999", "v999"]);
  assertEquals(entries[999], ["k0", "v0"]);
  // Index 62 + 999 (a multi-byte integer) is the oldest entry.
  assertEquals(d.decode(new Uint8Array([0xff, ...intBytes(62 + 999 - 127)])), [["k0", "v0"]]);
  // Shrinking evicts the oldest: keep the newest ten (each 32 + 2 × len).
  const tenSize = entries.slice(0, 10).reduce((s, [n, v]) => s + n.length + v.length + 32, 0);
  d.decode(new Uint8Array([0x3f, ...intBytes(tenSize - 31)]));
  assertEquals(d.dynamicTableEntries(), entries.slice(0, 10));
  assertEquals(d.dynamicTableSize, tenSize);
});

/** The continuation bytes of an HPACK integer (the value after the prefix was subtracted). */
function intBytes(rest: number): number[] {
  const out: number[] = [];
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

Deno.test("hpack header list over maxHeaderListSize is refused after the block is decoded", () => {
  const d = new HpackDecoder({ maxHeaderListSize: 100 });
  // 60 + 32 = 92 fits.
  const fits = encodeHeaders([["x", "v".repeat(59)]]);
  assertEquals(d.decode(fits).length, 1);
  // Two such fields: 184 > 100. The block also inserts "n: m" into the dynamic table after the
  // limit was crossed: the table must still get it.
  const block = new Uint8Array([...fits, ...fits, ...hex("40016e 016d"), ...fits]);
  assertThrows(() => d.decode(block), (e: HeaderListTooLargeError) => {
    assert(e instanceof HeaderListTooLargeError && e instanceof HpackError);
    assertEquals(e.limit, 100);
    assertEquals(e.size, 92 * 3 + 34);
    return true;
  });
  assertEquals(d.dynamicTableEntries(), [["n", "m"]]);
  assertEquals(d.decode(hex("be")), [["n", "m"]]);
  // An HPACK bomb: one 4,000-byte entry referenced 16,000 times (a 16 KB block that would
  // expand to 64 MB): refused, with the size the list would have had.
  const bomb = new HpackDecoder();
  const entry = encodeIndexedLiteral("b", "x".repeat(100));
  const bigEntry = new Uint8Array([
    0x40,
    1,
    0x62,
    0x7f,
    ...[4000 - 127].flatMap((v) => [
      (v % 128) | 0x80,
      v >> 7,
    ]),
    ...latin1Bytes("y".repeat(4000)),
  ]);
  assertEquals(bomb.decode(entry).length, 1);
  assertEquals(bomb.decode(bigEntry), [["b", "y".repeat(4000)]]);
  assertThrows(
    () => bomb.decode(new Uint8Array(16_000).fill(0xbe)),
    (e: HeaderListTooLargeError) => e.size === 16_000 * (1 + 4000 + 32),
  );
  // Many indexed fields (no literal bytes at all) still count: 2,000 × ":method: GET".
  const big = new HpackDecoder();
  assertThrows(() => big.decode(new Uint8Array(2000).fill(0x82)), HeaderListTooLargeError);
});

// ---------------------------------------------------------------------------------------------
// Fuzz.

/** Small seeded PRNG (mulberry32) so failures replay. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("hpack fuzz: 20,000 random and mutated blocks raise only HpackError", () => {
  const rng = mulberry32(0xc0ffee);
  const int = (n: number) => Math.floor(rng() * n);
  // Valid seeds to mutate: the Appendix C blocks and a few encoder outputs with Huffman literals.
  const seeds = [
    hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
    hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"),
    hex("3fe1 01 400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572 be"),
    encodeHeaders([[":path", "/kvstore.KVStore/Put"], ["te", "trailers"], ["x-bin", "\0\xff"]]),
  ];
  const decoder = new HpackDecoder({ maxTableSize: 512, maxHeaderListSize: 4096 });
  let errors = 0;
  let ok = 0;
  for (let i = 0; i < 20_000; i++) {
    let block: Uint8Array;
    if (i % 2 === 0) {
      block = Uint8Array.from({ length: int(48) }, () => int(256));
    } else {
      const seed = seeds[int(seeds.length)]!;
      block = seed.slice();
      const edits = 1 + int(4);
      for (let e = 0; e < edits; e++) {
        const op = int(3);
        if (op === 0 && block.length > 0) block[int(block.length)] = int(256);
        else if (op === 1 && block.length > 0) block = block.subarray(0, int(block.length));
        else block = new Uint8Array([...block, ...seed.subarray(0, int(seed.length))]);
      }
    }
    try {
      const headers = decoder.decode(block);
      for (const [n, v] of headers) assert(typeof n === "string" && typeof v === "string");
      ok++;
    } catch (e) {
      if (!(e instanceof HpackError)) {
        throw new Error(`iteration ${i}: non-HpackError ${e} for block ${Array.from(block)}`);
      }
      errors++;
    }
    assert(decoder.dynamicTableSize <= 512);
  }
  assert(errors > 1000 && ok > 1000, `errors=${errors} ok=${ok}: both paths exercised`);
  // Still usable: a fresh well-formed block decodes (static entries and a new literal).
  assertEquals(decoder.decode(hex("3f e1 03 82 0001 7a 0179")), [[":method", "GET"], ["z", "y"]]);
});

// ---------------------------------------------------------------------------------------------
// Encoder.

Deno.test("encodeHeaders round-trips through HpackDecoder, including -bin bytes", () => {
  const bin = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
  const headers: Array<[string, string]> = [
    [":status", "200"], // exact static match → one byte
    [":status", "503"], // static name
    ["content-type", "application/grpc"],
    ["grpc-status", "0"],
    ["grpc-message", ""],
    ["x-long", "v".repeat(70_000)],
    ["x-bin", bin],
    ["a".repeat(200), "b"],
  ];
  const block = encodeHeaders(headers);
  assertEquals(block[0], 0x88);
  const d = new HpackDecoder({ maxHeaderListSize: 1 << 20 });
  assertEquals(d.decode(block), headers);
  assertEquals(d.dynamicTableSize, 0);
});

Deno.test("encodeHeaders uses the static table and refuses chars above 255 and uppercase", () => {
  assertEquals(Array.from(encodeHeaders([[":method", "GET"]])), [0x82]);
  // :path (index 4) with a literal value, not indexed.
  assertEquals(
    Array.from(encodeHeaders([[":path", "/a"]])),
    [0x04, 0x02, 0x2f, 0x61],
  );
  // www-authenticate is index 61: 4-bit prefix 15 + 46.
  assertEquals(Array.from(encodeHeaders([["www-authenticate", ""]])), [0x0f, 46, 0x00]);
  assertEquals(STATIC_TABLE[61]![0], "www-authenticate");
  assertThrows(() => encodeHeaders([["x", "\u0100"]]), RangeError);
  assertThrows(() => encodeHeaders([["X-Up", "v"]]), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Cross-check against nghttp2: a node:http2 client (Huffman, dynamic table, never-indexed fields)
// talks to a raw TCP listener that parses just enough HTTP/2 to collect the header blocks.

const PREFACE_TEXT = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/** A 9-byte frame header followed by `payload`. */
function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >>> 16;
  out[1] = (payload.length >>> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

/** A SETTINGS payload from [id, value] pairs. */
function settingsPayload(pairs: Array<[number, number]>): Uint8Array {
  const out = new Uint8Array(pairs.length * 6);
  const view = new DataView(out.buffer);
  pairs.forEach(([id, value], i) => {
    view.setUint16(i * 6, id);
    view.setUint32(i * 6 + 2, value);
  });
  return out;
}

/**
 * Reads frames from `conn` after the client preface, answers SETTINGS with an ACK, and decodes every
 * complete header block with `decoder` until `want` blocks arrived. Returns them keyed by stream id
 * with the raw block sizes.
 */
async function collectHeaderBlocks(
  conn: Deno.Conn,
  decoder: HpackDecoder,
  want: number,
  serverSettings: Array<[number, number]>,
): Promise<{ blocks: Map<number, Array<[string, string]>>; wireBytes: number; census: Census }> {
  const census: Census = {
    dynamicHits: 0,
    huffmanStrings: 0,
    neverIndexed: 0,
    incremental: 0,
    sizeUpdates: 0,
  };
  await conn.write(frame(4, 0, 0, settingsPayload(serverSettings)));
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  const blocks = new Map<number, Array<[string, string]>>();
  let wireBytes = 0;
  let prefaceSeen = false;
  let pending: { stream: number; parts: Uint8Array[] } | undefined;
  while (blocks.size < want) {
    const n = await conn.read(chunk);
    if (n === null) throw new Error(`connection closed after ${blocks.size}/${want} blocks`);
    const merged = new Uint8Array(buf.length + n);
    merged.set(buf);
    merged.set(chunk.subarray(0, n), buf.length);
    buf = merged;
    let pos = 0;
    if (!prefaceSeen) {
      if (buf.length < 24) continue;
      assertEquals(new TextDecoder().decode(buf.subarray(0, 24)), PREFACE_TEXT);
      prefaceSeen = true;
      pos = 24;
    }
    while (buf.length - pos >= 9) {
      const len = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
      if (buf.length - pos < 9 + len) break;
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const stream = new DataView(buf.buffer, buf.byteOffset + pos + 5, 4).getUint32(0) &
        0x7fffffff;
      let payload = buf.subarray(pos + 9, pos + 9 + len);
      pos += 9 + len;
      if (type === 4 && (flags & 1) === 0) {
        await conn.write(frame(4, 1, 0, new Uint8Array(0)));
      } else if (type === 1) {
        assert(pending === undefined, "HEADERS while a header block is open");
        if (flags & 0x8) {
          const pad = payload[0]!;
          payload = payload.subarray(1, payload.length - pad);
        }
        if (flags & 0x20) payload = payload.subarray(5);
        pending = { stream, parts: [payload.slice()] };
      } else if (type === 9) {
        assert(pending !== undefined && pending.stream === stream, "stray CONTINUATION");
        pending.parts.push(payload.slice());
      } else {
        assert(pending === undefined, `frame type ${type} inside a header block`);
      }
      if ((type === 1 || type === 9) && (flags & 0x4) && pending) {
        const total = pending.parts.reduce((s, p) => s + p.length, 0);
        const block = new Uint8Array(total);
        let o = 0;
        for (const p of pending.parts) {
          block.set(p, o);
          o += p.length;
        }
        wireBytes += total;
        blocks.set(pending.stream, decoder.decode(block));
        countRepresentations(block, census);
        pending = undefined;
      }
    }
    buf = buf.slice(pos);
  }
  return { blocks, wireBytes, census };
}

/** How many of each HPACK representation a peer used (test-only walk over a valid block). */
interface Census {
  dynamicHits: number;
  huffmanStrings: number;
  neverIndexed: number;
  incremental: number;
  sizeUpdates: number;
}

function countRepresentations(block: Uint8Array, census: Census): void {
  let pos = 0;
  const int = (prefix: number): number => {
    const mask = (1 << prefix) - 1;
    let v = block[pos++]! & mask;
    if (v < mask) return v;
    for (let shift = 0;; shift += 7) {
      const b = block[pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
    }
  };
  const str = () => {
    if (block[pos]! & 0x80) census.huffmanStrings++;
    const len = int(7);
    pos += len;
  };
  while (pos < block.length) {
    const b = block[pos]!;
    if (b & 0x80) {
      if (int(7) > 61) census.dynamicHits++;
    } else if ((b & 0xe0) === 0x20) {
      int(5);
      census.sizeUpdates++;
    } else {
      const incremental = (b & 0xc0) === 0x40;
      if (incremental) census.incremental++;
      else if (b & 0x10) census.neverIndexed++;
      if (int(incremental ? 6 : 4) === 0) str();
      str();
    }
  }
}

/** Random header lists: random printable values, long values, repeats, a base64 `-bin` value. */
function randomRequests(seed: number, count: number): Array<Array<[string, string]>> {
  const rng = mulberry32(seed);
  const int = (n: number) => Math.floor(rng() * n);
  const nameChars = "abcdefghijklmnopqrstuvwxyz0123456789-_";
  const randomName = () =>
    "x-" + Array.from({ length: 1 + int(24) }, () => nameChars[int(38)]).join("");
  const printable = (len: number) =>
    Array.from({ length: len }, () => String.fromCharCode(0x21 + int(0x5e))).join("");
  const recurring: Array<[string, string]> = Array.from(
    { length: 12 },
    () => [randomName(), printable(1 + int(40))],
  );
  const lists: Array<Array<[string, string]>> = [];
  for (let i = 0; i < count; i++) {
    const list: Array<[string, string]> = [];
    const fields = 1 + int(12);
    const seen = new Set<string>();
    const add = (name: string, value: string) => {
      if (seen.has(name)) return;
      seen.add(name);
      list.push([name, value]);
    };
    for (let f = 0; f < fields; f++) {
      const kind = int(5);
      if (kind <= 1) add(...recurring[int(recurring.length)]!);
      else if (kind === 2) add(randomName(), printable(int(100)));
      else if (kind === 3) add(randomName(), printable(int(3) === 0 ? 200 + int(3000) : int(10)));
      else {
        const bytes = Uint8Array.from({ length: int(300) }, () => int(256));
        add(`${randomName()}-bin`, btoa(String.fromCharCode(...bytes)));
      }
    }
    if (i % 50 === 7) add("x-huge", printable(40_000)); // several CONTINUATION frames
    list.push(["x-seq", String(i)]);
    lists.push(list);
  }
  return lists;
}

async function crossCheck(tableSize: number | undefined): Promise<void> {
  const http2 = await import("node:http2");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const requests = randomRequests(tableSize ?? 1, 300);
  const decoder = new HpackDecoder({ maxHeaderListSize: 1 << 20 });
  const settings: Array<[number, number]> = [[6, 1 << 20], [4, 1 << 20]];
  if (tableSize !== undefined) settings.push([1, tableSize]);
  const client = http2.connect(`http://127.0.0.1:${port}`, { maxSendHeaderBlockLength: 1 << 20 });
  client.on("error", () => {}); // the raw server never answers; errors on close are expected
  const clientClosed = new Promise<void>((resolve) => client.on("close", () => resolve()));
  let conn: Deno.Conn | undefined;
  try {
    const accepted = listener.accept();
    // Send every request; each stream is ended at once and never gets a response.
    for (const list of requests) {
      const headers: Record<string | symbol, string | string[]> = { ":path": "/kv/" + list.length };
      for (const [name, value] of list) headers[name] = value;
      headers["x-secret"] = "hunter2"; // sent never-indexed
      headers[http2.sensitiveHeaders] = ["x-secret"];
      const req = client.request(headers, { endStream: true });
      req.on("error", () => {});
    }
    conn = await accepted;
    const { blocks, wireBytes, census } = await collectHeaderBlocks(
      conn,
      decoder,
      requests.length,
      settings,
    );
    let plainBytes = 0;
    requests.forEach((list, i) => {
      const got = blocks.get(1 + 2 * i);
      assert(got !== undefined, `no header block for request ${i}`);
      const pseudo = got.filter(([n]) => n.startsWith(":"));
      const regular = got.filter(([n]) => !n.startsWith(":"));
      assertEquals(
        pseudo.find(([n]) => n === ":path"),
        [":path", "/kv/" + list.length],
        `request ${i}`,
      );
      assertEquals(
        pseudo.find(([n]) => n === ":authority"),
        [":authority", `127.0.0.1:${port}`],
      );
      assertEquals(regular, [...list, ["x-secret", "hunter2"]], `request ${i}`);
      for (const [n, v] of got) plainBytes += n.length + v.length;
    });
    // nghttp2 used every representation the decoder has: dynamic-table hits, Huffman strings,
    // never-indexed literals (x-secret), literals added to the table.
    assert(census.dynamicHits > 100, `dynamic table hits: ${census.dynamicHits}`);
    assert(census.huffmanStrings > 300, `Huffman strings: ${census.huffmanStrings}`);
    assert(census.neverIndexed >= 300, `never-indexed fields: ${census.neverIndexed}`);
    assert(census.incremental > 100, `incrementally indexed fields: ${census.incremental}`);
    assert(wireBytes < plainBytes, `wire ${wireBytes} vs plain ${plainBytes}`);
    assert(decoder.dynamicTableSize > 0);
    if (tableSize !== undefined) assert(census.sizeUpdates >= 1, "no table size update seen");
    if (tableSize !== undefined) assert(decoder.dynamicTableLimit <= tableSize);
  } finally {
    client.destroy();
    conn?.close();
    listener.close();
    await clientClosed;
  }
}

Deno.test("hpack decodes what nghttp2 (node:http2 client) encodes: 300 varied requests", async () => {
  await crossCheck(undefined);
});

Deno.test("hpack follows nghttp2's table size update to a 256-byte table", async () => {
  await crossCheck(256);
});

Deno.test("encodeHeaders output is accepted by nghttp2 (a node:http2 server)", async () => {
  const http2 = await import("node:http2");
  const rng = mulberry32(99);
  const printable = (len: number) =>
    Array.from({ length: len }, () => String.fromCharCode(0x20 + Math.floor(rng() * 0x5f)))
      .join("").trim();
  const sent: Array<[string, string]> = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/kvstore.KVStore/Put"],
    [":authority", "127.0.0.1"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["grpc-timeout", "4999m"],
    ["user-agent", "grpc-node-js/1.14.3"],
    ["x-trace-bin", btoa(String.fromCharCode(...Array.from({ length: 64 }, (_, i) => i * 4)))],
    ["x-long", printable(5000)],
    ["x-empty", ""],
    ["accept-encoding", "gzip, deflate"], // exact static match: one indexed byte
  ];
  const received = Promise.withResolvers<Record<string, string | string[] | undefined>>();
  const server = http2.createServer();
  server.on("stream", (stream: import("node:http2").ServerHttp2Stream, headers) => {
    received.resolve(headers);
    stream.respond({ ":status": 200 }, { endStream: true });
  });
  server.on("sessionError", (e) => received.reject(e));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const block = encodeHeaders(sent);
    await conn.write(
      new Uint8Array([
        ...new TextEncoder().encode(PREFACE_TEXT),
        ...frame(4, 0, 0, new Uint8Array(0)),
        ...frame(1, 0x4 | 0x1, 1, block),
      ]),
    );
    const got = await received.promise;
    for (const [name, value] of sent) assertEquals(got[name], value, name);
  } finally {
    conn.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
});

Deno.test("hpack: decodeFlat reads only [start, end) of a larger buffer", () => {
  const fields: Array<[string, string]> = [
    [":method", "POST"],
    [":path", "/kvstore.KVStore/Put"],
    ["grpc-timeout", "4999m"],
    ["x-custom", "some value"],
  ];
  const block = encodeHeaders(fields);
  const big = new Uint8Array(block.length + 20).fill(0xff);
  big.set(block, 7);
  const d = new HpackDecoder();
  assert.deepEqual(d.decodeFlat(big, 7, 7 + block.length), fields.flat());
  // A block cut inside its last string is truncated although more bytes follow in the buffer.
  const d2 = new HpackDecoder();
  big.set(block, 7);
  big[7 + block.length] = 0x61; // a byte the cut-off string could wrongly take
  assert.throws(() => d2.decodeFlat(big, 7, 7 + block.length - 1), HpackError);
  // The pair form is the same list.
  assert.deepEqual(new HpackDecoder().decode(block), fields);
});
