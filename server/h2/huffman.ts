/**
 * The static Huffman code of HPACK (RFC 7541 section 5.2 and Appendix B): a table-driven decoder
 * that consumes four bits per step, and an encoder.
 *
 * The code table is Appendix B as data: for each symbol 0..255 and EOS (256), its code (aligned to
 * the least significant bit) and its length in bits. At module load the table is checked to be the
 * canonical, complete prefix code the RFC describes (so a mistyped row fails at import, not in
 * production), and the decoder's state table is built from it:
 *
 * - the states are the 256 internal nodes of the code tree (257 leaves → 256 internal nodes),
 *   state 0 is the root;
 * - `TRANSITIONS[state * 16 + nibble]` packs the state reached after those four bits (bits 0–7), the
 *   symbol emitted on the way (bits 8–15; no code is shorter than 5 bits, so at most one symbol is
 *   completed per nibble), an "emits" flag (bit 16) and a "fails" flag (bit 17: the nibble completes
 *   EOS, which must never appear inside a string);
 * - `ACCEPTING[state]` is 1 when a string may end in that state: the bits read since the last
 *   complete symbol are a prefix of EOS (all ones) of at most 7 bits (RFC 7541 section 5.2).
 *
 * @module
 */

/**
 * RFC 7541 Appendix B: `[code, length]` for symbols 0..255 and 256 (EOS); code aligned to the LSB.
 * Never change these values: they are the wire format.
 */
// deno-fmt-ignore
const CODE_TABLE: ReadonlyArray<readonly [number, number]> = [
  /*   0 */ [0x1ff8, 13], [0x7fffd8, 23], [0xfffffe2, 28], [0xfffffe3, 28],
  /*   4 */ [0xfffffe4, 28], [0xfffffe5, 28], [0xfffffe6, 28], [0xfffffe7, 28],
  /*   8 */ [0xfffffe8, 28], [0xffffea, 24], [0x3ffffffc, 30], [0xfffffe9, 28],
  /*  12 */ [0xfffffea, 28], [0x3ffffffd, 30], [0xfffffeb, 28], [0xfffffec, 28],
  /*  16 */ [0xfffffed, 28], [0xfffffee, 28], [0xfffffef, 28], [0xffffff0, 28],
  /*  20 */ [0xffffff1, 28], [0xffffff2, 28], [0x3ffffffe, 30], [0xffffff3, 28],
  /*  24 */ [0xffffff4, 28], [0xffffff5, 28], [0xffffff6, 28], [0xffffff7, 28],
  /*  28 */ [0xffffff8, 28], [0xffffff9, 28], [0xffffffa, 28], [0xffffffb, 28],
  /*  32 */ [0x14, 6], [0x3f8, 10], [0x3f9, 10], [0xffa, 12],
  /*  36 */ [0x1ff9, 13], [0x15, 6], [0xf8, 8], [0x7fa, 11],
  /*  40 */ [0x3fa, 10], [0x3fb, 10], [0xf9, 8], [0x7fb, 11],
  /*  44 */ [0xfa, 8], [0x16, 6], [0x17, 6], [0x18, 6],
  /*  48 */ [0x0, 5], [0x1, 5], [0x2, 5], [0x19, 6],
  /*  52 */ [0x1a, 6], [0x1b, 6], [0x1c, 6], [0x1d, 6],
  /*  56 */ [0x1e, 6], [0x1f, 6], [0x5c, 7], [0xfb, 8],
  /*  60 */ [0x7ffc, 15], [0x20, 6], [0xffb, 12], [0x3fc, 10],
  /*  64 */ [0x1ffa, 13], [0x21, 6], [0x5d, 7], [0x5e, 7],
  /*  68 */ [0x5f, 7], [0x60, 7], [0x61, 7], [0x62, 7],
  /*  72 */ [0x63, 7], [0x64, 7], [0x65, 7], [0x66, 7],
  /*  76 */ [0x67, 7], [0x68, 7], [0x69, 7], [0x6a, 7],
  /*  80 */ [0x6b, 7], [0x6c, 7], [0x6d, 7], [0x6e, 7],
  /*  84 */ [0x6f, 7], [0x70, 7], [0x71, 7], [0x72, 7],
  /*  88 */ [0xfc, 8], [0x73, 7], [0xfd, 8], [0x1ffb, 13],
  /*  92 */ [0x7fff0, 19], [0x1ffc, 13], [0x3ffc, 14], [0x22, 6],
  /*  96 */ [0x7ffd, 15], [0x3, 5], [0x23, 6], [0x4, 5],
  /* 100 */ [0x24, 6], [0x5, 5], [0x25, 6], [0x26, 6],
  /* 104 */ [0x27, 6], [0x6, 5], [0x74, 7], [0x75, 7],
  /* 108 */ [0x28, 6], [0x29, 6], [0x2a, 6], [0x7, 5],
  /* 112 */ [0x2b, 6], [0x76, 7], [0x2c, 6], [0x8, 5],
  /* 116 */ [0x9, 5], [0x2d, 6], [0x77, 7], [0x78, 7],
  /* 120 */ [0x79, 7], [0x7a, 7], [0x7b, 7], [0x7ffe, 15],
  /* 124 */ [0x7fc, 11], [0x3ffd, 14], [0x1ffd, 13], [0xffffffc, 28],
  /* 128 */ [0xfffe6, 20], [0x3fffd2, 22], [0xfffe7, 20], [0xfffe8, 20],
  /* 132 */ [0x3fffd3, 22], [0x3fffd4, 22], [0x3fffd5, 22], [0x7fffd9, 23],
  /* 136 */ [0x3fffd6, 22], [0x7fffda, 23], [0x7fffdb, 23], [0x7fffdc, 23],
  /* 140 */ [0x7fffdd, 23], [0x7fffde, 23], [0xffffeb, 24], [0x7fffdf, 23],
  /* 144 */ [0xffffec, 24], [0xffffed, 24], [0x3fffd7, 22], [0x7fffe0, 23],
  /* 148 */ [0xffffee, 24], [0x7fffe1, 23], [0x7fffe2, 23], [0x7fffe3, 23],
  /* 152 */ [0x7fffe4, 23], [0x1fffdc, 21], [0x3fffd8, 22], [0x7fffe5, 23],
  /* 156 */ [0x3fffd9, 22], [0x7fffe6, 23], [0x7fffe7, 23], [0xffffef, 24],
  /* 160 */ [0x3fffda, 22], [0x1fffdd, 21], [0xfffe9, 20], [0x3fffdb, 22],
  /* 164 */ [0x3fffdc, 22], [0x7fffe8, 23], [0x7fffe9, 23], [0x1fffde, 21],
  /* 168 */ [0x7fffea, 23], [0x3fffdd, 22], [0x3fffde, 22], [0xfffff0, 24],
  /* 172 */ [0x1fffdf, 21], [0x3fffdf, 22], [0x7fffeb, 23], [0x7fffec, 23],
  /* 176 */ [0x1fffe0, 21], [0x1fffe1, 21], [0x3fffe0, 22], [0x1fffe2, 21],
  /* 180 */ [0x7fffed, 23], [0x3fffe1, 22], [0x7fffee, 23], [0x7fffef, 23],
  /* 184 */ [0xfffea, 20], [0x3fffe2, 22], [0x3fffe3, 22], [0x3fffe4, 22],
  /* 188 */ [0x7ffff0, 23], [0x3fffe5, 22], [0x3fffe6, 22], [0x7ffff1, 23],
  /* 192 */ [0x3ffffe0, 26], [0x3ffffe1, 26], [0xfffeb, 20], [0x7fff1, 19],
  /* 196 */ [0x3fffe7, 22], [0x7ffff2, 23], [0x3fffe8, 22], [0x1ffffec, 25],
  /* 200 */ [0x3ffffe2, 26], [0x3ffffe3, 26], [0x3ffffe4, 26], [0x7ffffde, 27],
  /* 204 */ [0x7ffffdf, 27], [0x3ffffe5, 26], [0xfffff1, 24], [0x1ffffed, 25],
  /* 208 */ [0x7fff2, 19], [0x1fffe3, 21], [0x3ffffe6, 26], [0x7ffffe0, 27],
  /* 212 */ [0x7ffffe1, 27], [0x3ffffe7, 26], [0x7ffffe2, 27], [0xfffff2, 24],
  /* 216 */ [0x1fffe4, 21], [0x1fffe5, 21], [0x3ffffe8, 26], [0x3ffffe9, 26],
  /* 220 */ [0xffffffd, 28], [0x7ffffe3, 27], [0x7ffffe4, 27], [0x7ffffe5, 27],
  /* 224 */ [0xfffec, 20], [0xfffff3, 24], [0xfffed, 20], [0x1fffe6, 21],
  /* 228 */ [0x3fffe9, 22], [0x1fffe7, 21], [0x1fffe8, 21], [0x7ffff3, 23],
  /* 232 */ [0x3fffea, 22], [0x3fffeb, 22], [0x1ffffee, 25], [0x1ffffef, 25],
  /* 236 */ [0xfffff4, 24], [0xfffff5, 24], [0x3ffffea, 26], [0x7ffff4, 23],
  /* 240 */ [0x3ffffeb, 26], [0x7ffffe6, 27], [0x3ffffec, 26], [0x3ffffed, 26],
  /* 244 */ [0x7ffffe7, 27], [0x7ffffe8, 27], [0x7ffffe9, 27], [0x7ffffea, 27],
  /* 248 */ [0x7ffffeb, 27], [0xffffffe, 28], [0x7ffffec, 27], [0x7ffffed, 27],
  /* 252 */ [0x7ffffee, 27], [0x7ffffef, 27], [0x7fffff0, 27], [0x3ffffee, 26],
  /* 256 */ [0x3fffffff, 30],
];

/** The EOS symbol: padding is its most significant bits; decoding it is an error. */
const EOS = 256;

/** Code of each symbol, aligned to the LSB (`HUFFMAN_CODES[sym]`). */
export const HUFFMAN_CODES: Uint32Array = new Uint32Array(257);
/** Length in bits of each symbol's code (`HUFFMAN_LENGTHS[sym]`). */
export const HUFFMAN_LENGTHS: Uint8Array = new Uint8Array(257);

for (let sym = 0; sym <= EOS; sym++) {
  const row = CODE_TABLE[sym];
  if (row === undefined) throw new Error(`huffman: table row ${sym} missing`);
  HUFFMAN_CODES[sym] = row[0];
  HUFFMAN_LENGTHS[sym] = row[1];
}

/**
 * Checks that the table is the canonical complete prefix code of RFC 7541 Appendix B: ordered by
 * (length, symbol), each code is the previous code plus one, shifted left by the growth in length;
 * the first is all zeros and the last (EOS) is all ones.
 */
function _checkCanonical(): void {
  if (CODE_TABLE.length !== 257) throw new Error("huffman: table must have 257 rows");
  const order = Array.from({ length: 257 }, (_, i) => i).sort((a, b) =>
    (HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]!) || a - b
  );
  let expected = 0;
  let prevLen = HUFFMAN_LENGTHS[order[0]!]!;
  for (let i = 0; i < order.length; i++) {
    const sym = order[i]!;
    const len = HUFFMAN_LENGTHS[sym]!;
    if (i > 0) expected = (expected + 1) * 2 ** (len - prevLen);
    if (HUFFMAN_CODES[sym] !== expected || len < 5 || len > 30) {
      throw new Error(`huffman: table row ${sym} is not the canonical code`);
    }
    prevLen = len;
  }
  if (expected !== 2 ** 30 - 1 || order[256] !== EOS) {
    throw new Error("huffman: the code is not complete (EOS must be 30 ones)");
  }
}
_checkCanonical();

/** Packed decoder transitions, see the module comment. */
const TRANSITIONS = new Uint32Array(256 * 16);
/** 1 when a string may end in this state (valid EOS-prefix padding of ≤ 7 bits, or nothing). */
const ACCEPTING = new Uint8Array(256);
const FLAG_EMIT = 1 << 16;
const FLAG_FAIL = 1 << 17;

function _buildDecoder(): void {
  // Binary tree: internal nodes 0..255 (0 = root). child[node*2+bit] >= 0 is an internal node,
  // < 0 is a leaf holding symbol -(child+1).
  const child = new Int32Array(512).fill(0x7fffffff);
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    const code = HUFFMAN_CODES[sym]!;
    const len = HUFFMAN_LENGTHS[sym]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = (code >>> i) & 1;
      const slot = node * 2 + bit;
      if (i === 0) {
        child[slot] = -(sym + 1);
      } else {
        if (child[slot] === 0x7fffffff) child[slot] = nodes++;
        node = child[slot]!;
      }
    }
  }
  if (nodes !== 256) throw new Error(`huffman: tree has ${nodes} internal nodes, expected 256`);
  // Accepting states: the all-ones path from the root, depth 0..7.
  let node = 0;
  for (let depth = 0; depth <= 7; depth++) {
    ACCEPTING[node] = 1;
    node = child[node * 2 + 1]!;
  }
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let cur = state;
      let entry = 0;
      for (let i = 3; i >= 0; i--) {
        const next = child[cur * 2 + ((nibble >>> i) & 1)]!;
        if (next >= 0) {
          cur = next;
          continue;
        }
        const sym = -(next + 1);
        if (sym === EOS) {
          entry = FLAG_FAIL;
          cur = 0;
          break;
        }
        entry = FLAG_EMIT | (sym << 8);
        cur = 0;
      }
      TRANSITIONS[state * 16 + nibble] = entry | cur;
    }
  }
}
_buildDecoder();

/**
 * Decodes Huffman-coded `src[start, end)` into `out` from index 0 and returns the number of bytes
 * written, or -1 when the input is invalid (EOS inside the string, padding longer than 7 bits, or
 * padding that is not all ones). `out` must have room for `Math.floor((end - start) * 8 / 5)`
 * bytes, the longest possible output (no code is shorter than 5 bits).
 *
 * @example
 * ```ts
 * const out = new Uint8Array(8);
 * const n = huffmanDecode(new Uint8Array([0x9b, 0xd9, 0xab]), 0, 3, out);
 * console.log(n === 4 && String.fromCharCode(...out.subarray(0, n)) === "gzip"); // true
 * ```
 */
export function huffmanDecode(
  src: Uint8Array,
  start: number,
  end: number,
  out: Uint8Array,
): number {
  let state = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const byte = src[i]!;
    let t = TRANSITIONS[(state << 4) | (byte >>> 4)]!;
    if (t & FLAG_EMIT) out[n++] = (t >>> 8) & 0xff;
    else if (t & FLAG_FAIL) return -1;
    state = t & 0xff;
    t = TRANSITIONS[(state << 4) | (byte & 0xf)]!;
    if (t & FLAG_EMIT) out[n++] = (t >>> 8) & 0xff;
    else if (t & FLAG_FAIL) return -1;
    state = t & 0xff;
  }
  return ACCEPTING[state] === 1 ? n : -1;
}

/**
 * The length in bytes of `src` Huffman-coded (padding included).
 *
 * @example
 * ```ts
 * console.log(huffmanEncodedLength(new TextEncoder().encode("no-cache"))); // 6
 * ```
 */
export function huffmanEncodedLength(src: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < src.length; i++) bits += HUFFMAN_LENGTHS[src[i]!]!;
  return (bits + 7) >>> 3;
}

/**
 * Huffman-codes `src` (RFC 7541 section 5.2), padded to a byte boundary with the most significant
 * bits of EOS (ones).
 *
 * @example
 * ```ts
 * const coded = huffmanEncode(new TextEncoder().encode("no-cache"));
 * console.log(Array.from(coded, (b) => b.toString(16)).join(" ")); // "a8 eb 10 64 9c bf"
 * ```
 */
export function huffmanEncode(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(src));
  let acc = 0; // pending bits, right-aligned; fewer than 8 after each flush
  let accBits = 0;
  let o = 0;
  for (let i = 0; i < src.length; i++) {
    const sym = src[i]!;
    let len = HUFFMAN_LENGTHS[sym]!;
    const code = HUFFMAN_CODES[sym]!;
    // Feed the code in chunks of at most 16 bits so `acc` stays below 2^24 (plain int math).
    while (len > 0) {
      const take = len > 16 ? len - 16 : len;
      len -= take;
      acc = (acc << take) | ((code >>> len) & ((1 << take) - 1));
      accBits += take;
      while (accBits >= 8) {
        accBits -= 8;
        out[o++] = (acc >>> accBits) & 0xff;
      }
      acc &= (1 << accBits) - 1;
    }
  }
  if (accBits > 0) out[o++] = ((acc << (8 - accBits)) | (0xff >>> accBits)) & 0xff;
  return out;
}
