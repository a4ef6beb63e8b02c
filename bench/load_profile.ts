/**
 * Summarises a V8 `.cpuprofile` (what `deno run --cpu-prof` writes): self and inclusive time per
 * function, and self time per area of the code (grpc-js, protobufjs, Deno's node:http2, raft/,
 * storage/, server/, GC, idle). Used on the leader's profile after
 * `deno task bench cluster --profile DIR`.
 *
 * ```sh
 * deno run --allow-read bench/load_profile.ts DIR/node-1/*.cpuprofile [--top 40]
 * ```
 *
 * @module
 */

/** One node of a `.cpuprofile` call tree. */
export interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

/** A `.cpuprofile` document. */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Time of one function. */
export interface FunctionCost {
  name: string;
  /** `file:line` (repository-relative where possible). */
  where: string;
  area: string;
  /** Time at the top of the stack, ms. */
  selfMs: number;
  /** Time anywhere on the stack (each sample counted once), ms. */
  totalMs: number;
}

/** The summary of a profile. */
export interface ProfileSummary {
  /** Profiled wall time, ms. */
  wallMs: number;
  /** Sampled time not idle, ms. */
  busyMs: number;
  /** Self time by area, ms, largest first. */
  areas: [string, number][];
  /** Functions by self time, largest first. */
  functions: FunctionCost[];
}

/** The area of the code a script URL belongs to. */
export function areaOf(url: string, functionName: string): string {
  if (url === "") {
    if (functionName === "(idle)") return "idle";
    if (functionName === "(garbage collector)") return "GC";
    if (functionName === "(program)") return "program (native, unattributed)";
    if (functionName === "(root)") return "root";
    return "native";
  }
  if (url.includes("@grpc/grpc-js")) return "grpc-js";
  if (url.includes("@grpc/proto-loader") || url.includes("protobufjs")) return "protobufjs";
  if (url.includes("node_modules")) return "npm other";
  if (/ext:deno_node\/.*http2/.test(url) || url.includes("node:http2")) return "Deno node:http2";
  if (url.startsWith("ext:deno_node") || url.startsWith("node:")) return "Deno node compat";
  if (url.startsWith("ext:")) return "Deno runtime";
  const m = /\/(raft|storage|server|client|bench)\//.exec(url);
  if (m) return `${m[1]}/`;
  return "other";
}

function shortWhere(url: string, line: number): string {
  let u = url;
  const nm = u.lastIndexOf("node_modules/");
  if (nm >= 0) {
    u = u.slice(nm + "node_modules/".length).replace(/^\.deno\/[^/]+\/node_modules\//, "");
  } else {
    const m = /\/(raft|storage|server|client|bench)\/[^/]+$/.exec(u);
    if (m) u = m[0].slice(1);
  }
  return u === "" ? "" : `${u}:${line + 1}`;
}

/** Summarises a profile. */
export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) byId.set(n.id, n);
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode) =>
    `${n.callFrame.functionName}|${n.callFrame.url}|${n.callFrame.lineNumber}`;
  const costs = new Map<string, FunctionCost>();
  const cost = (n: ProfileNode) => {
    const k = keyOf(n);
    let c = costs.get(k);
    if (c === undefined) {
      c = {
        name: n.callFrame.functionName || "(anonymous)",
        where: shortWhere(n.callFrame.url, n.callFrame.lineNumber),
        area: areaOf(n.callFrame.url, n.callFrame.functionName),
        selfMs: 0,
        totalMs: 0,
      };
      costs.set(k, c);
    }
    return c;
  };
  const areas = new Map<string, number>();
  let busy = 0;
  let wall = 0;
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute it to the sample (V8 convention).
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    wall += dt;
    const leaf = byId.get(p.samples[i]!);
    if (leaf === undefined) continue;
    const c = cost(leaf);
    c.selfMs += dt;
    areas.set(c.area, (areas.get(c.area) ?? 0) + dt);
    if (c.area !== "idle") busy += dt;
    const seen = new Set<FunctionCost>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const fc = cost(byId.get(id)!);
      if (!seen.has(fc)) {
        seen.add(fc);
        fc.totalMs += dt;
      }
    }
  }
  return {
    wallMs: wall,
    busyMs: busy,
    areas: [...areas].sort((a, b) => b[1] - a[1]),
    functions: [...costs.values()].filter((c) => c.selfMs > 0 || c.totalMs > 0)
      .sort((a, b) => b.selfMs - a.selfMs),
  };
}

/** The summary as text: areas, then the top functions by self time and by inclusive time. */
export function formatProfile(s: ProfileSummary, top = 30): string {
  const pct = (ms: number, of: number) => `${((100 * ms) / Math.max(of, 1e-9)).toFixed(1)}%`;
  const lines = [
    `profiled ${(s.wallMs / 1000).toFixed(1)} s, busy ${(s.busyMs / 1000).toFixed(1)} s ` +
    `(${pct(s.busyMs, s.wallMs)} of one core)`,
    "",
    "self time by area (share of busy time):",
  ];
  for (const [area, ms] of s.areas) {
    if (area === "idle") continue;
    lines.push(
      `  ${pct(ms, s.busyMs).padStart(6)}  ${(ms / 1000).toFixed(2).padStart(7)} s  ${area}`,
    );
  }
  lines.push("", `top ${top} functions by self time:`);
  for (const f of s.functions.filter((f) => f.area !== "idle").slice(0, top)) {
    lines.push(
      `  ${pct(f.selfMs, s.busyMs).padStart(6)} self ${
        pct(f.totalMs, s.busyMs).padStart(6)
      } total  ` +
        `${f.name}  ${f.where}  [${f.area}]`,
    );
  }
  const incl = [...s.functions].filter((f) =>
    f.area !== "idle" && f.area !== "root" && !f.area.startsWith("program")
  ).sort((a, b) => b.totalMs - a.totalMs);
  lines.push("", `top ${top} functions by inclusive time:`);
  for (const f of incl.slice(0, top)) {
    lines.push(
      `  ${pct(f.totalMs, s.busyMs).padStart(6)} total ${
        pct(f.selfMs, s.busyMs).padStart(6)
      } self  ` +
        `${f.name}  ${f.where}  [${f.area}]`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const args = [...Deno.args];
  let top = 30;
  const t = args.indexOf("--top");
  if (t >= 0) {
    top = Number(args[t + 1] ?? 30);
    args.splice(t, 2);
  }
  if (args.length === 0) {
    console.error("usage: deno run --allow-read bench/load_profile.ts FILE.cpuprofile [--top N]");
    Deno.exit(2);
  }
  for (const file of args) {
    const profile = JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
    console.log(`== ${file}\n${formatProfile(summarizeProfile(profile), top)}\n`);
  }
}
