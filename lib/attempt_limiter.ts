/**
 * Counts attempts per key in a sliding window, to slow down password
 * guessing: login failures per user name, login attempts per address.
 *
 * @module
 */

/** At most `max` attempts per key within `windowMs`. */
export class AttemptLimiter {
  #hits = new Map<string, number[]>();

  constructor(readonly max: number, readonly windowMs: number, readonly now: () => number = Date.now) {}

  /** Milliseconds until `key` may try again; 0 when it may now. */
  retryAfter(key: string): number {
    const hits = this.#recent(key);
    return hits.length < this.max ? 0 : hits[0]! + this.windowMs - this.now();
  }

  /** Counts one attempt for `key`. */
  record(key: string): void {
    const hits = this.#recent(key);
    hits.push(this.now());
    this.#hits.set(key, hits);
    if (this.#hits.size > 100_000) this.#prune();
  }

  /** Forgets `key` (after a successful login). */
  reset(key: string): void {
    this.#hits.delete(key);
  }

  #recent(key: string): number[] {
    const since = this.now() - this.windowMs;
    return (this.#hits.get(key) ?? []).filter((t) => t > since);
  }

  #prune(): void {
    for (const key of [...this.#hits.keys()]) {
      if (this.#recent(key).length === 0) this.#hits.delete(key);
    }
  }
}
