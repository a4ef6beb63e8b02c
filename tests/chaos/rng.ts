/**
 * A small seeded PRNG (mulberry32) so a chaos run's choices follow from its `--seed`.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const r = new Rng(42);
 * r.int(10); // 0..9, the same sequence for the same seed
 * ```
 *
 * @module
 */

/** Seeded pseudo-random numbers. */
export class Rng {
  #a: number;
  readonly seed: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#a = this.seed ^ 0x5bd1e995;
    for (let i = 0; i < 4; i++) this.next();
  }

  /** A float in [0, 1). */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** A random element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error("pick from an empty array");
    return xs[this.int(xs.length)]!;
  }

  /** The array shuffled (a copy). */
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }

  /** An independent generator derived from this seed and `salt`. */
  fork(salt: number): Rng {
    return new Rng((Math.imul(this.seed, 0x9e3779b1) ^ Math.imul(salt + 1, 0x85ebca6b)) >>> 0);
  }
}
