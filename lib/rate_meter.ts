/**
 * Byte rates, smoothed, and what they imply for request pipelining.
 *
 * The download coordinator keeps one {@link RateMeter} per peer and sizes
 * each peer's request queue from it ({@link nextDepth}, {@link pipelineDepth}):
 * enough chunks outstanding to cover {@link PIPELINE_WINDOW_S} of that peer's
 * measured throughput. A fast peer gets a deep queue and so most of the work; a slow
 * one a shallow queue, so few chunks wait on it (which also keeps the
 * endgame short).
 *
 * @module
 */

/** Smoothing factor of the moving average per sample. */
export const RATE_ALPHA = 0.3;
/** Seconds of a peer's throughput its request queue should cover. */
export const PIPELINE_WINDOW_S = 0.5;
/** Fewest requests outstanding per peer (one in flight, one queued behind it). */
export const MIN_PIPELINE = 2;
/** Most requests outstanding per peer for chunks of 256 KiB and up (bounds what a peer can owe us). */
export const MAX_PIPELINE = 16;
/**
 * Most bytes outstanding per peer for smaller chunks, which get more than
 * {@link MAX_PIPELINE} requests up to this: 16 chunks of 16 KiB are 256 KiB,
 * about one bandwidth-delay product of a 100 Mbit/s link with 20 ms of
 * delay, so small chunks would otherwise cap a peer's rate on a WAN.
 */
export const MAX_PIPELINE_BYTES = 4 * 1024 * 1024;

/**
 * An exponential moving average of a byte rate, sampled at the caller's pace.
 * The first sample seeds the average.
 */
export class RateMeter {
  #rate = 0;
  #latest = 0;
  #sampled = false;
  #pending = 0;
  #lastAt: number;

  constructor(now: number = performance.now(), readonly alpha: number = RATE_ALPHA) {
    this.#lastAt = now;
  }

  /** Counts bytes moved since the last sample. */
  add(bytes: number): void {
    this.#pending += bytes;
  }

  /** Folds the bytes counted since the last sample into the average; returns the rate in bytes/s. */
  sample(now: number = performance.now()): number {
    const dt = (now - this.#lastAt) / 1000;
    if (dt <= 0) return this.#rate;
    const inst = this.#pending / dt;
    this.#latest = inst;
    this.#rate = this.#sampled ? this.alpha * inst + (1 - this.alpha) * this.#rate : inst;
    this.#sampled = true;
    this.#pending = 0;
    this.#lastAt = now;
    return this.#rate;
  }

  /** Bytes per second; 0 before the first sample. */
  get rate(): number {
    return this.#rate;
  }

  /** Bytes per second over the last sample's interval alone; 0 before the first sample. */
  get latest(): number {
    return this.#latest;
  }

  /** True once at least one sample was taken. */
  get measured(): boolean {
    return this.#sampled;
  }
}

/**
 * Requests to keep outstanding to a peer moving `bytesPerSecond` in chunks
 * of `chunkSize`: its rate times {@link PIPELINE_WINDOW_S}, plus one so the
 * queue never drains while a reply is on its way, clamped to
 * [{@link MIN_PIPELINE}, {@link maxPipeline}]. Unmeasured peers get `initial`.
 */
export function pipelineDepth(bytesPerSecond: number | null, chunkSize: number, initial: number): number {
  if (bytesPerSecond === null) return initial;
  const want = Math.ceil((bytesPerSecond * PIPELINE_WINDOW_S) / Math.max(1, chunkSize)) + 1;
  return Math.min(maxPipeline(chunkSize), Math.max(MIN_PIPELINE, want));
}

/** The most requests outstanding to one peer for chunks of `chunkSize`. */
export function maxPipeline(chunkSize: number): number {
  return Math.max(MAX_PIPELINE, Math.floor(MAX_PIPELINE_BYTES / Math.max(1, chunkSize)));
}

/**
 * A peer's queue depth after its meter took a new sample, from its depth
 * before. The target follows the slower of the smoothed and the latest
 * rate, so a burst is forgotten at the next sample instead of decaying
 * over seconds; the depth moves towards it at most twofold per sample,
 * up (slow start) or down (one quiet interval, a pause on our side, only
 * halves it). A token bucket (an upload limit, a shaped link) sends its saved-up
 * allowance at once: measured from the first sample alone, a peer limited
 * to a few chunks a second looked several times faster and got a queue of
 * up to MAX_PIPELINE chunks, each of which then waited on it.
 */
export function nextDepth(current: number, meter: RateMeter, chunkSize: number, initial: number): number {
  if (!meter.measured) return initial;
  const target = pipelineDepth(Math.min(meter.rate, meter.latest), chunkSize, initial);
  return Math.max(Math.min(target, current * 2), Math.ceil(current / 2), MIN_PIPELINE);
}
