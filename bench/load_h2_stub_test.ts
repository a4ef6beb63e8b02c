import { deepEqual, equal } from "node:assert/strict";
import { h2Frame, handleKv } from "./load_h2_stub.ts";

Deno.test("h2 frames have a 9-byte header with length, type, flags and stream id", () => {
  const f = h2Frame(1, 0x5, 3, Uint8Array.of(0xaa, 0xbb));
  deepEqual([...f], [0, 0, 2, 1, 0x5, 0, 0, 0, 3, 0xaa, 0xbb]);
});

Deno.test("the h2 stub stores a put and answers a get of it", () => {
  const store = new Map<string, Uint8Array>();
  // PutRequest{key: "k", value: "vv"}
  deepEqual([...handleKv(store, Uint8Array.of(0x0a, 1, 0x6b, 0x12, 2, 0x76, 0x76))], [0x08, 0x01]);
  // GetRequest{key: "k", serializable: true} → GetResponse{value: "vv", found: true}
  deepEqual(
    [...handleKv(store, Uint8Array.of(0x0a, 1, 0x6b, 0x10, 1))],
    [0x0a, 2, 0x76, 0x76, 0x10, 0x01],
  );
  // GetRequest{key: "x"} → GetResponse{} (not found)
  equal(handleKv(store, Uint8Array.of(0x0a, 1, 0x78)).length, 0);
});
