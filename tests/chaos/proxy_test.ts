import assert, { deepStrictEqual as assertEquals } from "node:assert/strict";
import { NodeProxy, ProxyMesh, type SourceIdentifier, ssSourceIdentifier } from "./proxy.ts";

/** A TCP echo server on a free loopback port. */
function echoServer(): { addr: string; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for (;;) {
      let c: Deno.Conn;
      try {
        c = await listener.accept();
      } catch {
        return;
      }
      conns.add(c);
      (async () => {
        const buf = new Uint8Array(4096);
        try {
          for (;;) {
            const n = await c.read(buf);
            if (n === null) break;
            await c.write(buf.subarray(0, n));
          }
        } catch {
          // Closed.
        } finally {
          conns.delete(c);
          try {
            c.close();
          } catch {
            // Already closed.
          }
        }
      })();
    }
  })();
  return {
    addr: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await loop;
    },
  };
}

/** Writes `text` and reads the echo, or returns "timeout" / "closed" / "error". */
async function roundTrip(conn: Deno.Conn, text: string, timeoutMs = 300): Promise<string> {
  const enc = new TextEncoder();
  try {
    await conn.write(enc.encode(text));
  } catch {
    return "error";
  }
  const buf = new Uint8Array(4096);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs));
  const read = conn.read(buf).then((n) =>
    n === null ? "closed" : new TextDecoder().decode(buf.subarray(0, n))
  )
    .catch(() => "error");
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Source identification by a registry the test fills right after dialing. */
function registry(): {
  identify: SourceIdentifier;
  dial: (port: number, source: number) => Promise<Deno.Conn>;
} {
  const sources = new Map<number, number>();
  return {
    identify: async (sourcePort) => {
      for (let i = 0; i < 100; i++) {
        const s = sources.get(sourcePort);
        if (s !== undefined) return s;
        await new Promise((r) => setTimeout(r, 2));
      }
      return undefined;
    },
    dial: async (port, source) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      sources.set((c.localAddr as Deno.NetAddr).port, source);
      return c;
    },
  };
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch {
    // Already closed.
  }
}

Deno.test("proxy forwards, cuts existing connections, black-holes new ones, heals", async () => {
  const echo = echoServer();
  const reg = registry();
  const proxy = NodeProxy.start({ target: echo.addr, identify: reg.identify });
  const conns: Deno.Conn[] = [];
  try {
    const a = await reg.dial(proxy.port, 1);
    const other = await reg.dial(proxy.port, 2);
    conns.push(a, other);
    assertEquals(await roundTrip(a, "hello"), "hello");
    assertEquals(await roundTrip(other, "hi"), "hi");
    proxy.cut(1);
    const r = await roundTrip(a, "after cut");
    assert(r === "closed" || r === "error", `existing connection survived the cut: ${r}`);
    assertEquals(await roundTrip(other, "still"), "still");
    const b = await reg.dial(proxy.port, 1);
    conns.push(b);
    assertEquals(await roundTrip(b, "into the hole"), "timeout");
    proxy.heal(1);
    const rb = await roundTrip(b, "x");
    assert(rb === "closed" || rb === "error", `black-holed connection survived heal: ${rb}`);
    const c = await reg.dial(proxy.port, 1);
    conns.push(c);
    assertEquals(await roundTrip(c, "healed"), "healed");
  } finally {
    conns.forEach(closeQuietly);
    await proxy.close();
    await echo.close();
  }
});

Deno.test("proxy in reset style closes new connections while cut", async () => {
  const echo = echoServer();
  const reg = registry();
  const proxy = NodeProxy.start({ target: echo.addr, identify: reg.identify, dropStyle: "reset" });
  const conns: Deno.Conn[] = [];
  try {
    proxy.cut(1);
    const a = await reg.dial(proxy.port, 1);
    conns.push(a);
    const r = await roundTrip(a, "x", 1000);
    assert(r === "closed" || r === "error", r);
    proxy.heal(1);
    const b = await reg.dial(proxy.port, 1);
    conns.push(b);
    assertEquals(await roundTrip(b, "ok"), "ok");
  } finally {
    conns.forEach(closeQuietly);
    await proxy.close();
    await echo.close();
  }
});

Deno.test("proxy mesh partitions by direction", async () => {
  const echoes = [echoServer(), echoServer(), echoServer()];
  const reg = registry();
  const mesh = ProxyMesh.start(new Map(echoes.map((e, i) => [i + 1, e.addr])), {
    identify: reg.identify,
  });
  const conns: Deno.Conn[] = [];
  const via = async (from: number, to: number, text: string) => {
    const c = await reg.dial(mesh.proxy(to).port, from);
    conns.push(c);
    return await roundTrip(c, text);
  };
  try {
    const peers = mesh.peersArg().split(",");
    assertEquals(peers[1], `2=${mesh.proxy(2).address}`);
    assertEquals(await via(1, 2, "a"), "a");

    mesh.cutOneWay(1, 2);
    assertEquals(await via(1, 2, "b"), "timeout");
    assertEquals(await via(3, 2, "b2"), "b2");
    assertEquals(await via(2, 1, "c"), "c");
    assertEquals(mesh.cutLinks(), ["1→2"]);

    mesh.isolate(3);
    assertEquals(await via(1, 2, "d"), "d");
    assertEquals(await via(1, 3, "e"), "timeout");
    assertEquals(await via(3, 2, "f"), "timeout");

    const [left, right] = mesh.bridge(2);
    assertEquals([left, right], [[1], [3]]);
    assertEquals(await via(1, 2, "g"), "g");
    assertEquals(await via(3, 2, "h"), "h");
    assertEquals(await via(1, 3, "i"), "timeout");

    mesh.healAll();
    assertEquals(mesh.cutLinks(), []);
    assertEquals(await via(1, 3, "j"), "j");
  } finally {
    conns.forEach(closeQuietly);
    await mesh.close();
    await Promise.all(echoes.map((e) => e.close()));
  }
});

Deno.test("proxy identifies the process that opened a connection with ss", async () => {
  const echo = echoServer();
  const identify = ssSourceIdentifier(() => new Map([[7, Deno.pid]]));
  const proxy = NodeProxy.start({ target: echo.addr, identify });
  const conns: Deno.Conn[] = [];
  try {
    const a = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    conns.push(a);
    assertEquals(await roundTrip(a, "who"), "who");
    assertEquals(proxy.accepted.get(7), 1);
    proxy.cut(7);
    const r = await roundTrip(a, "cut");
    assert(r === "closed" || r === "error", r);
  } finally {
    conns.forEach(closeQuietly);
    await proxy.close();
    await echo.close();
  }
});
