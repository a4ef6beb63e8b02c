/**
 * A load worker (Web Worker entry): holds one adapter and runs its share of each load with
 * {@linkcode runLoops}. Protocol: {@linkcode WorkerRequest} in, {@linkcode WorkerReply} out.
 *
 * @module
 */
import { createAdapter, type KvAdapter } from "./load_adapters.ts";
import { runLoops, type WorkerReply, type WorkerRequest } from "./load.ts";

// deno-lint-ignore no-explicit-any
const scope = self as any;
let adapter: KvAdapter | undefined;

function reply(msg: WorkerReply): void {
  scope.postMessage(msg);
}

scope.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const req = e.data;
  try {
    switch (req.type) {
      case "connect": {
        const a = createAdapter(req.system, req.adapter);
        adapter = a;
        await a.ready();
        reply({ type: "connected" });
        break;
      }
      case "run": {
        if (adapter === undefined) throw new Error("run before connect");
        reply({ type: "result", part: await runLoops(adapter, req.spec, req.share) });
        break;
      }
      case "close":
        adapter?.close();
        adapter = undefined;
        reply({ type: "connected" });
        scope.close();
        break;
    }
  } catch (err) {
    reply({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
};
