import assert from "node:assert/strict";
import { encodeGrpcMessage, FRAME_DATA, FrameWriter, parseGrpcTimeout } from "./wire.ts";

Deno.test("grpc-timeout values parse in every unit; malformed ones are refused", () => {
  assert.equal(parseGrpcTimeout("2H"), 7_200_000);
  assert.equal(parseGrpcTimeout("3M"), 180_000);
  assert.equal(parseGrpcTimeout("5S"), 5000);
  assert.equal(parseGrpcTimeout("250m"), 250);
  assert.equal(parseGrpcTimeout("1500u"), 1.5);
  assert.equal(parseGrpcTimeout("2000000n"), 2);
  assert.equal(parseGrpcTimeout("99999999m"), 99_999_999);
  assert.equal(parseGrpcTimeout("0S"), 0);
  for (const bad of ["", "5", "S", "123456789S", "5s", "-1S", "1.5S", "5X", " 5S", "5 S", "/S"]) {
    assert.equal(parseGrpcTimeout(bad), undefined, bad);
  }
});

Deno.test("grpc-message percent-encodes non-printable bytes, UTF-8 and %", () => {
  assert.equal(encodeGrpcMessage("plain text"), "plain text");
  assert.equal(encodeGrpcMessage("100% ü\n"), "100%25 %C3%BC%0A");
});

Deno.test("FrameWriter lays out frame headers big-endian and grows past its capacity", () => {
  const w = new FrameWriter();
  w.header(0x012345, FRAME_DATA, 0x1, 0x7abcdef1);
  assert.deepEqual([...w.bytes()], [0x01, 0x23, 0x45, 0, 1, 0x7a, 0xbc, 0xde, 0xf1]);
  w.reset();
  const big = new Uint8Array(200_000).fill(7);
  w.frame(FRAME_DATA, 0, 3, big);
  w.grpcPrefix(258);
  assert.equal(w.length, 9 + 200_000 + 5);
  assert.deepEqual([...w.bytes().subarray(-5)], [0, 0, 0, 1, 2]);
  assert.equal(w.bytes()[9 + 199_999], 7);
  w.reset();
  assert.equal(w.length, 0);
});
