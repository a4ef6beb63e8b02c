/**
 * An independent gRPC implementation against a real cluster: Python's grpcio (Debian
 * `python3-grpcio`, stubs generated at test time by `python3-grpc-tools`) runs
 * tests/python/kv_client_test.py, which does put/get/delete/scan.
 *
 * Skipped, with a message saying why, only when no Python 3 on this machine can import grpc and
 * grpc_tools (CI installs them, so it runs there).
 */
import { equal } from "node:assert/strict";
import { withCluster } from "./harness.ts";

const SCRIPT = new URL("./python/kv_client_test.py", import.meta.url).pathname;

/** The first Python 3 that imports grpc and grpc_tools (Debian's lives in /usr/bin). */
function findPython(): string | undefined {
  for (const py of ["python3", "/usr/bin/python3"]) {
    try {
      const o = new Deno.Command(py, {
        args: ["-c", "import grpc, grpc_tools.protoc"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (o.success) return py;
    } catch {
      // Not installed or not runnable.
    }
  }
  return undefined;
}

const python = findPython();
if (python === undefined) {
  console.warn(
    "SKIPPED python grpcio client test: no python3 can import grpc and grpc_tools " +
      "(apt-get install -y python3-grpcio python3-grpc-tools)",
  );
}

Deno.test({
  name: "python grpcio client does put/get/delete/scan against a 3-node cluster",
  ignore: python === undefined,
  fn: async () => {
    await withCluster({ nodes: 3 }, async (c) => {
      await c.waitForLeader(5000);
      const o = await new Deno.Command(python!, {
        args: [SCRIPT, c.addresses.join(",")],
        stdin: "null",
        env: { PYTHONDONTWRITEBYTECODE: "1" },
      }).output();
      const dec = new TextDecoder();
      const out = dec.decode(o.stdout) + dec.decode(o.stderr);
      if (o.code !== 0) console.error(out);
      equal(o.code, 0, `python client failed:\n${out}`);
    });
  },
});
