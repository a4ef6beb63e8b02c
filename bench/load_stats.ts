/**
 * Latency histograms for the load generator: a log-linear bucket layout in the style of
 * HdrHistogram (values in whole microseconds, 128 sub-buckets per power of two, so any recorded
 * value is reported within 0.4 % of its true value), cheap to record into, mergeable across
 * workers, and serialisable as sparse `[bucket, count]` pairs.
 *
 * Bucket layout: values 0..255 µs have one bucket each; above that, a value `v` with bit length
 * `b` lands in group `b - 8` (shift `s = b - 8`), sub-bucket `(v >> s) - 128`, index
 * `256 + (s - 1) * 128 + ((v >> s) - 128)`. Values are clamped to 2^31 - 1 µs (about 36 minutes).
 *
 * @module
 */

const SUB = 128;
const LINEAR = 2 * SUB;
const MAX_VALUE = 0x7fff_ffff;
/** Number of buckets: linear part plus 23 groups (shifts 1..23) of 128. */
const BUCKETS = LINEAR + 23 * SUB;

/** Bucket index of a value in microseconds. */
export function bucketOf(us: number): number {
  let v = Math.floor(us);
  if (!(v > 0)) return 0;
  if (v > MAX_VALUE) v = MAX_VALUE;
  if (v < LINEAR) return v;
  const bits = 32 - Math.clz32(v);
  const shift = bits - 8;
  return LINEAR + (shift - 1) * SUB + ((v >>> shift) - SUB);
}

/** The inclusive value range `[low, high]` (µs) that a bucket stands for. */
export function bucketRange(index: number): [number, number] {
  if (index < LINEAR) return [index, index];
  const shift = Math.floor((index - LINEAR) / SUB) + 1;
  const top = ((index - LINEAR) % SUB) + SUB;
  return [top * 2 ** shift, (top + 1) * 2 ** shift - 1];
}

/** A histogram as plain data, for `postMessage` and JSON. */
export interface HistogramData {
  /** Sparse `[bucket, count]` pairs, ascending by bucket. */
  buckets: [number, number][];
  count: number;
  /** Sum of recorded values, µs. */
  sum: number;
  min: number;
  max: number;
}

/** Latency percentiles and summary in milliseconds. */
export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/**
 * A latency histogram in microseconds.
 *
 * @example
 * ```ts
 * const h = new Histogram();
 * for (let i = 1; i <= 100; i++) h.record(i * 1000);
 * h.percentile(50); // ≈ 50000
 * ```
 */
export class Histogram {
  #counts = new Float64Array(BUCKETS);
  #count = 0;
  #sum = 0;
  #min = Infinity;
  #max = 0;

  /** Records one value, µs. */
  record(us: number): void {
    const v = us < 0 ? 0 : us;
    this.#counts[bucketOf(v)]! += 1;
    this.#count++;
    this.#sum += v;
    if (v < this.#min) this.#min = v;
    if (v > this.#max) this.#max = v;
  }

  /** Number of recorded values. */
  get count(): number {
    return this.#count;
  }

  /** Adds another histogram's values into this one. */
  merge(other: Histogram | HistogramData): void {
    const data = other instanceof Histogram ? other.toData() : other;
    for (const [i, c] of data.buckets) this.#counts[i]! += c;
    this.#count += data.count;
    this.#sum += data.sum;
    if (data.count > 0) {
      if (data.min < this.#min) this.#min = data.min;
      if (data.max > this.#max) this.#max = data.max;
    }
  }

  /**
   * The value at percentile `p` (0 < p ≤ 100), µs: the midpoint of the bucket holding the
   * `ceil(p/100 · count)`-th smallest value, clamped to the exact min and max. 0 when empty.
   */
  percentile(p: number): number {
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.#count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) {
        const [lo, hi] = bucketRange(i);
        const mid = (lo + hi) / 2;
        return Math.min(this.#max, Math.max(this.#min, mid));
      }
    }
    return this.#max;
  }

  /** Percentiles, mean and max in milliseconds (3 decimals). */
  summary(): LatencySummary {
    const ms = (us: number) => Math.round(us) / 1000;
    return {
      p50: ms(this.percentile(50)),
      p95: ms(this.percentile(95)),
      p99: ms(this.percentile(99)),
      p999: ms(this.percentile(99.9)),
      max: ms(this.#count === 0 ? 0 : this.#max),
      mean: ms(this.#count === 0 ? 0 : this.#sum / this.#count),
    };
  }

  /** Plain-data form (sparse buckets). */
  toData(): HistogramData {
    const buckets: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const c = this.#counts[i]!;
      if (c > 0) buckets.push([i, c]);
    }
    return {
      buckets,
      count: this.#count,
      sum: this.#sum,
      min: this.#count === 0 ? 0 : this.#min,
      max: this.#max,
    };
  }

  /** Rebuilds a histogram from {@linkcode Histogram.toData} output. */
  static fromData(data: HistogramData): Histogram {
    const h = new Histogram();
    h.merge(data);
    return h;
  }
}
