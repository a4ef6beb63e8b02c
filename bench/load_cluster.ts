/**
 * Process plumbing shared by the cluster benchmark's two systems: free loopback ports, child
 * processes that log to files and are always stopped, and per-process CPU time from `/proc`.
 *
 * @module
 */

/** `n` distinct free TCP ports on 127.0.0.1 (bound once, then released). */
export function freePorts(n: number): number[] {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return ports;
}

/** A child process whose stdout and stderr go to a log file. */
export class ChildProcess {
  readonly name: string;
  readonly logPath: string;
  readonly #child: Deno.ChildProcess;
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  private constructor(name: string, logPath: string, child: Deno.ChildProcess) {
    this.name = name;
    this.logPath = logPath;
    this.#child = child;
    this.status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /** Spawns `cmd args` with output appended to `logPath`. */
  static async spawn(
    name: string,
    command: { cmd: string; args: string[]; env?: Record<string, string>; cwd?: string },
    logPath: string,
  ): Promise<ChildProcess> {
    const log = await Deno.open(logPath, { write: true, create: true, append: true });
    const child = new Deno.Command(command.cmd, {
      args: command.args,
      env: { RUST_BACKTRACE: "0", NO_COLOR: "1", ...command.env },
      cwd: command.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Both streams into one file (synchronous writes, so lines are never reordered mid-chunk).
    const pump = async (s: ReadableStream<Uint8Array>) => {
      try {
        for await (const chunk of s) {
          let off = 0;
          while (off < chunk.length) off += log.writeSync(chunk.subarray(off));
        }
      } catch {
        // the file or the stream broke: nothing more to record
      }
    };
    Promise.all([pump(child.stdout), pump(child.stderr)]).finally(() => log.close());
    return new ChildProcess(name, logPath, child);
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Sends a signal if the process still runs. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // already gone
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#exited) return;
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    try {
      await this.status;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last `lines` lines of the log, for error messages. */
  async tail(lines = 15): Promise<string> {
    try {
      const text = await Deno.readTextFile(this.logPath);
      return text.trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }
}

/** CPU time so far: per process, and of the whole machine. */
export interface CpuSnapshot {
  /** CPU seconds (user + system) of each requested process (NaN for one that is gone). */
  procs: number[];
  /** Resident memory of each requested process in bytes (NaN for one that is gone). */
  rssBytes: number[];
  /** Busy CPU seconds of the whole machine, all cores (everything but idle and iowait). */
  machineBusy: number;
}

/**
 * CPU time used so far by each process in `pids` and by the machine, and each process's resident
 * memory. Deno only lets `--allow-all` programs read `/proc` directly, so this runs `cat` on
 * `/proc/stat` and `/proc/<pid>/stat` (utime and stime are fields 14 and 15, in 1/100 s; rss is
 * field 24, in 4 KiB pages).
 */
export async function cpuSnapshot(pids: number[]): Promise<CpuSnapshot> {
  const out = await new Deno.Command("cat", {
    args: ["/proc/stat", ...pids.map((p) => `/proc/${p}/stat`)],
    stdout: "piped",
    stderr: "null",
  }).output();
  const byPid = new Map<number, number>();
  const rssByPid = new Map<number, number>();
  let machineBusy = NaN;
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    if (line.startsWith("cpu ")) {
      const f = line.trim().split(/\s+/).slice(1).map(Number);
      const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
      machineBusy = (total - f[3]! - f[4]!) / 100;
      continue;
    }
    const close = line.lastIndexOf(")");
    if (close < 0) continue;
    const pid = Number(line.slice(0, line.indexOf(" ")));
    const rest = line.slice(close + 2).split(" ");
    byPid.set(pid, (Number(rest[11]) + Number(rest[12])) / 100);
    rssByPid.set(pid, Number(rest[21]) * 4096);
  }
  return {
    procs: pids.map((p) => byPid.get(p) ?? NaN),
    rssBytes: pids.map((p) => rssByPid.get(p) ?? NaN),
    machineBusy,
  };
}

/**
 * Waits until the whole machine used at most `maxCores` over one `windowMs` window (both clusters
 * idle: no compaction, flush or snapshot left over from an earlier step of either system), or
 * `timeoutMs` passed. Returns how long it waited, in ms. `busy` reads the machine's busy CPU
 * seconds (default: /proc/stat via {@linkcode cpuSnapshot}).
 */
export async function waitQuiet(
  opts: { maxCores: number; windowMs: number; timeoutMs: number },
  busy: () => Promise<number> = async () => (await cpuSnapshot([])).machineBusy,
): Promise<number> {
  const t0 = performance.now();
  let before = await busy();
  let at = performance.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, opts.windowMs));
    const now = await busy();
    const nowAt = performance.now();
    const cores = (now - before) / ((nowAt - at) / 1000);
    if (cores <= opts.maxCores || nowAt - t0 >= opts.timeoutMs) return nowAt - t0;
    before = now;
    at = nowAt;
  }
}

/** Waits until `probe` resolves true, polling every `intervalMs`; throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
  const why = last instanceof Error ? `: ${last.message}` : "";
  throw new Error(`timed out waiting for ${what}${why}`);
}

/** What the driver needs of a server process. */
export interface BenchProcess {
  readonly name: string;
  readonly pid: number;
}

/** A running 3-node cluster under test, as the benchmark driver sees it. */
export interface BenchCluster {
  /** `host:port` client endpoints, leader first. */
  readonly endpoints: string[];
  /** The leader's client endpoint. */
  readonly leader: string;
  /** The processes, in node order. */
  readonly processes: BenchProcess[];
  /** The leader's process. */
  readonly leaderProcess: BenchProcess;
  /** Re-detects the leader (after an election). */
  refreshLeader(): Promise<void>;
  /** Stops every process and removes the data directories. */
  stop(): Promise<void>;
}
