/**
 * Bounded waits.
 *
 * @module
 */

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Exponential backoff: `base * 2^attempt`, capped at `max`, with up to 20% jitter. */
export function backoffMs(attempt: number, base = 500, max = 10_000): number {
  const ms = Math.min(max, base * 2 ** Math.min(attempt, 20));
  return Math.round(ms * (0.8 + 0.2 * Math.random()));
}
