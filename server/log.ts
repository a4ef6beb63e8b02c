/**
 * Event log of a node: one line per event on stderr, `level time node role term message`, or
 * with `format: "json"` one JSON object per line (elections, leader changes, peer up/down —
 * never one line per request).
 *
 * @example
 * ```ts
 * import { Logger } from "./log.ts";
 * const log = new Logger({ node: 1, level: "info" });
 * log.info("started"); // INFO 2026-01-01T00:00:00.000Z node=1 follower term=0 started
 * ```
 *
 * @module
 */
import type { LogFormat, LogLevel } from "./flags.ts";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Options of a {@linkcode Logger}. */
export interface LoggerOptions {
  node: number;
  level: LogLevel;
  /** `text` (default) or `json` (one object a line). */
  format?: LogFormat;
  /** Current role and term, read at each line. */
  state?: () => { role: string; term: number };
  /** Where lines go (default: stderr). */
  write?: (line: string) => void;
}

const _enc = new TextEncoder();

/** A leveled one-line-per-event logger. */
export class Logger {
  readonly #node: number;
  readonly #min: number;
  readonly #json: boolean;
  #state: () => { role: string; term: number };
  readonly #write: (line: string) => void;

  constructor(opts: LoggerOptions) {
    this.#node = opts.node;
    this.#min = RANK[opts.level];
    this.#json = opts.format === "json";
    this.#state = opts.state ?? (() => ({ role: "follower", term: 0 }));
    this.#write = opts.write ?? ((line) => {
      try {
        Deno.stderr.writeSync(_enc.encode(line + "\n"));
      } catch {
        // stderr gone: nothing to do.
      }
    });
  }

  /** Sets where role and term come from (once the raft node exists). */
  setState(state: () => { role: string; term: number }): void {
    this.#state = state;
  }

  /** Whether `level` lines are written. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#min;
  }

  #line(level: LogLevel, msg: string): void {
    if (RANK[level] < this.#min) return;
    const s = this.#state();
    const ts = new Date().toISOString();
    this.#write(
      this.#json
        ? JSON.stringify({ level, ts, node: this.#node, role: s.role, term: s.term, msg })
        : `${level.toUpperCase()} ${ts} node=${this.#node} ${s.role} term=${s.term} ${msg}`,
    );
  }

  /** Debug line. */
  debug(msg: string): void {
    this.#line("debug", msg);
  }
  /** Info line. */
  info(msg: string): void {
    this.#line("info", msg);
  }
  /** Warning line. */
  warn(msg: string): void {
    this.#line("warn", msg);
  }
  /** Error line. */
  error(msg: string): void {
    this.#line("error", msg);
  }
}
