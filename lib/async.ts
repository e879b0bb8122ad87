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

/** Resolves once `p` settles (fulfilled or rejected, whatever its outcome) or `ms` have passed, whichever is first. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p.then(() => {}, () => {}), new Promise<void>((resolve) => timer = setTimeout(resolve, ms))]);
  clearTimeout(timer);
}

/**
 * `p`, or a rejection with `onAbort()` as soon as `signal` aborts: for a
 * wait that cannot be cancelled itself (a look-up, a file check) but must
 * not keep an interrupted program waiting. `p` goes on and is ignored.
 */
export function unlessAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, onAbort: () => Error): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(onAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const stop = () => {
      p.catch(() => {});
      reject(onAbort());
    };
    signal.addEventListener("abort", stop, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", stop));
  });
}
