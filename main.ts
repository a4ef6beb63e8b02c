/**
 * The `concordkv` command line (`deno task node`): checks the Deno version, validates the flags,
 * then runs the node as a child process with scoped permissions (server/launch.ts
 * `nodeCommand`: net on its own and its peers' addresses, read/write on its data directory),
 * forwarding SIGINT/SIGTERM to it and exiting with its exit code.
 *
 * This launcher itself needs only `--allow-run=<this deno>`; the `node` task in deno.json gives it
 * exactly that.
 *
 * @module
 */
import { denoVersionProblem } from "./server/deno_version.ts";
import { NODE_USAGE, parseNodeFlags, UsageError } from "./server/flags.ts";
import { nodeCommand } from "./server/launch.ts";

function fail(message: string, code: number): never {
  console.error(`concordkv: ${message}`);
  Deno.exit(code);
}

if (import.meta.main) {
  const problem = denoVersionProblem(Deno.version.deno);
  if (problem !== undefined) fail(problem, 1);
  let opts;
  try {
    opts = parseNodeFlags(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`concordkv: ${e.message}\n\n${NODE_USAGE}`);
    Deno.exit(2);
  }
  if (opts === "help") {
    console.log(NODE_USAGE);
    Deno.exit(0);
  }
  // Everything but the flags nodeCommand sets itself goes through unchanged.
  const extra: string[] = [];
  const own = new Set(["--id", "--port", "--host", "--peers", "--data-dir"]);
  for (let i = 0; i < Deno.args.length; i++) {
    const a = Deno.args[i]!;
    const name = a.includes("=") ? a.slice(0, a.indexOf("=")) : a;
    if (own.has(name)) {
      if (!a.includes("=")) i++;
      continue;
    }
    extra.push(a);
  }
  const { cmd, args } = nodeCommand({
    id: opts.id,
    port: opts.port,
    host: opts.host,
    peers: [...opts.peers].map(([id, a]) => `${id}=${a}`).join(","),
    dataDir: opts.dataDir,
    extraArgs: [...extra, "--exit-with-parent"],
  });
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      stdin: "piped",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (e) {
    fail(`cannot start the node process: ${e instanceof Error ? e.message : e}`, 1);
  }
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => {
      try {
        child.kill(sig);
      } catch {
        // already exited
      }
    });
  }
  const status = await child.status;
  Deno.exit(status.code);
}
