#!/usr/bin/env python3
"""ConcordKV through an independent gRPC implementation: Python's grpcio (Debian python3-grpcio).

Generates stubs from protos/kvstore.proto into a temporary directory with grpc_tools (Debian
python3-grpc-tools), then does put/get/delete/scan against the given nodes.

Usage: kv_client_test.py HOST:PORT[,HOST:PORT...]
Exit status 0 when every check passed; otherwise the failed check is printed to stderr.
Run by tests/node_python_client_test.ts, which starts the cluster.
"""

import importlib
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "protos"))


def generate_stubs(out_dir):
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        "-I" + PROTO_DIR,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        os.path.join(PROTO_DIR, "kvstore.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + os.path.join(PROTO_DIR, "kvstore.proto"))
    sys.path.insert(0, out_dir)
    return importlib.import_module("kvstore_pb2"), importlib.import_module("kvstore_pb2_grpc")


def call_with_retry(fn, request, deadline_s=10.0):
    """Calls fn(request), retrying UNAVAILABLE (no leader yet) until the deadline."""
    import grpc

    end = time.monotonic() + deadline_s
    while True:
        try:
            return fn(request, timeout=max(0.1, min(2.0, end - time.monotonic())))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= end:
                raise
            time.sleep(0.05)


def check(cond, what):
    if not cond:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)
    print("ok: " + what)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import grpc

    endpoints = [e for e in sys.argv[1].split(",") if e]
    with tempfile.TemporaryDirectory(prefix="concordkv-py-") as out:
        pb, pb_grpc = generate_stubs(out)
        channels = [grpc.insecure_channel(e) for e in endpoints]
        try:
            stubs = [pb_grpc.KVStoreStub(c) for c in channels]
            first = stubs[0]
            run = "py-%d-" % os.getpid()
            k1 = (run + "alpha").encode()
            k2 = (run + "beta").encode()
            other = (run[:-1] + "x-gamma").encode()

            reply = call_with_retry(first.Ping, pb.PingRequest(message="hello"))
            check(isinstance(reply.reply, str), "Ping answers")

            r = call_with_retry(first.Put, pb.PutRequest(key=k1, value=b"one"))
            check(r.success, "Put alpha")
            r = call_with_retry(first.Put, pb.PutRequest(key=k2, value=b"\x00two\xff"))
            check(r.success, "Put beta (binary value)")
            call_with_retry(first.Put, pb.PutRequest(key=other, value=b"not in the scan"))

            # Every node answers a linearizable Get with the acknowledged value.
            for i, stub in enumerate(stubs):
                g = call_with_retry(stub.Get, pb.GetRequest(key=k1))
                check(g.found and g.value == b"one", "Get alpha from node %d" % (i + 1))

            g = call_with_retry(first.Get, pb.GetRequest(key=k2))
            check(g.found and g.value == b"\x00two\xff", "Get beta returns the exact bytes")

            s = call_with_retry(first.Scan, pb.ScanRequest(prefix=run.encode()))
            keys = [p.key for p in s.pairs]
            check(keys == [k1, k2], "Scan prefix returns alpha, beta in order (got %r)" % keys)

            d = call_with_retry(first.Delete, pb.DeleteRequest(key=k1))
            check(d.success, "Delete alpha")
            g = call_with_retry(stubs[-1].Get, pb.GetRequest(key=k1))
            check(not g.found, "Get alpha after delete: not found")

            s = call_with_retry(first.Scan, pb.ScanRequest(prefix=run.encode()))
            check([p.key for p in s.pairs] == [k2], "Scan after delete returns beta only")

            try:
                first.Put(pb.PutRequest(key=b"", value=b"x"), timeout=5)
                check(False, "Put with an empty key is refused")
            except grpc.RpcError as e:
                check(
                    e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                    "Put with an empty key gets INVALID_ARGUMENT (got %s)" % e.code(),
                )
        finally:
            for c in channels:
                c.close()
    print("all python grpcio checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
