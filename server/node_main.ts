/**
 * The node process itself (started by `main.ts` or {@linkcode nodeCommand} of launch.ts with
 * scoped permissions): parses the node flags, starts the node, stops it cleanly on
 * SIGINT/SIGTERM (exit 0), exits non-zero with one line on a start failure or a fatal error.
 *
 * @module
 */
import { denoVersionProblem } from "./deno_version.ts";
import { NODE_USAGE, parseNodeFlags, UsageError } from "./flags.ts";
import { diskFullHint, type RunningNode, StartError, startNode } from "./node.ts";

function _fail(message: string, code: number): never {
  console.error(`concordkv: ${message}`);
  Deno.exit(code);
}

/** Runs one node until a signal or a fatal error; never returns. */
export async function runNode(args: string[]): Promise<never> {
  const problem = denoVersionProblem(Deno.version.deno);
  if (problem !== undefined) _fail(problem, 1);
  let opts;
  try {
    opts = parseNodeFlags(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`concordkv: ${e.message}\n\n${NODE_USAGE}`);
    Deno.exit(2);
  }
  if (opts === "help") {
    console.log(NODE_USAGE);
    Deno.exit(0);
  }
  const id = opts.id;
  const json = opts.logFormat === "json";
  /** One line on stderr in the node's log format (these lines come from outside its Logger). */
  const say = (level: "warn" | "error", msg: string) =>
    console.error(
      json
        ? JSON.stringify({ level, ts: new Date().toISOString(), node: id, msg })
        : `concordkv: node ${id}: ${msg}`,
    );
  let node: RunningNode;
  try {
    node = await startNode(opts);
  } catch (e) {
    const hint = e instanceof StartError ? "" : diskFullHint(e, opts.dataDir);
    say(
      "error",
      e instanceof StartError
        ? e.message
        : `failed to start: ${e instanceof Error ? e.message : e}${hint}`,
    );
    Deno.exit(1);
  }
  let exiting = false;
  const shutdown = async (code: number) => {
    if (exiting) return;
    exiting = true;
    const hard = setTimeout(() => {
      say("error", "shutdown took too long; exiting");
      Deno.exit(code === 0 ? 1 : code);
    }, 8000);
    try {
      await node.stop();
    } catch (e) {
      say("error", `error while stopping: ${e}`);
      code = code === 0 ? 1 : code;
    }
    clearTimeout(hard);
    Deno.exit(code);
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => void shutdown(0));
  }
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    say("error", `unhandled rejection: ${ev.reason}`);
  });
  if (opts.exitWithParent) {
    // The launcher (main.ts) holds our stdin open; EOF means it died: stop cleanly.
    (async () => {
      try {
        for await (const _ of Deno.stdin.readable) {
          // nothing is ever written
        }
      } catch {
        // closed
      }
      say("warn", "launcher went away; stopping");
      await shutdown(0);
    })();
  }
  const code = await node.done;
  await shutdown(code);
  return await new Promise<never>(() => {});
}

if (import.meta.main) {
  await runNode(Deno.args);
}
