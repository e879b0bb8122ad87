/**
 * Writes into one file from several workers without making them wait.
 *
 * A buffered write into an ext4 file holds the inode's lock for the whole
 * copy into the page cache, and a second writer spins on the CPU until it
 * is free (`rwsem_spin_on_owner`: a tenth of all CPU time in a 4 GiB
 * download with two workers, measured with `perf`). So the workers share a
 * lock word in a SharedArrayBuffer: a worker that finds it taken queues the
 * chunk and goes back to receiving; `Atomics.waitAsync` calls it back when
 * the lock is released.
 *
 * A write may also hand its waiting to another thread and return a
 * promise (a direct write, see direct_io.ts): the lock is released as
 * soon as it returns, since only copies into the page cache contend, and
 * the write counts against the queue's limit until it settles.
 *
 * @module
 */

/** Polls again after this long even without a wake-up: a lost notify costs at most this. */
const WAIT_MS = 50;

/** A lock word to share between the workers writing one file. */
export function newWriteLock(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** One queued write. */
export interface Write<T> {
  item: T;
  data: Uint8Array<ArrayBuffer>;
  position: number;
}

/**
 * A queue of positional writes that starts each under the shared lock, in
 * order. `write` does the write itself (it may note on the item how it
 * went), or starts it and returns a promise; `after` learns what became of
 * each item once written: null, else the error.
 */
export class WriteQueue<T> {
  #lock: Int32Array;
  #queue: Write<T>[] = [];
  #waiting = false;
  #closed = false;
  #room: (() => void)[] = [];
  #inflight = new Set<Promise<void>>();

  constructor(
    lock: SharedArrayBuffer,
    readonly limit: number,
    private readonly write: (data: Uint8Array<ArrayBuffer>, position: number, item: T) => void | Promise<void>,
    private readonly after: (item: T, error: unknown) => void,
  ) {
    this.#lock = new Int32Array(lock);
  }

  /** Writes waiting for the lock. */
  get length(): number {
    return this.#queue.length;
  }

  /** Writes started on another thread and not settled yet. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /** Queues a write; it runs now if the lock is free. */
  push(w: Write<T>): void {
    if (this.#closed) return;
    this.#queue.push(w);
    this.#drain();
  }

  /** Resolves once fewer than `limit` writes wait or are in flight: the reader's back-pressure. */
  room(): Promise<void> {
    if (!this.#full()) return Promise.resolve();
    return new Promise((resolve) => this.#room.push(resolve));
  }

  /** Resolves once no write is in flight (their buffers are free, the file may be closed). */
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Drops what waits (their buffers are not written) and wakes anyone waiting for room. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#wakeRoom();
  }

  #drain(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      if (Atomics.compareExchange(this.#lock, 0, 0, 1) !== 0) return this.#wait();
      const w = this.#queue.shift()!;
      let error: unknown = null;
      let started: void | Promise<void> = undefined;
      try {
        started = this.write(w.data, w.position, w.item);
      } catch (err) {
        error = err;
      } finally {
        Atomics.store(this.#lock, 0, 0);
        Atomics.notify(this.#lock, 0, 1);
      }
      if (started instanceof Promise) this.#settle(w.item, started);
      else this.after(w.item, error);
    }
    this.#wakeRoom();
  }

  #settle(item: T, started: Promise<void>): void {
    const p = started.then(() => this.after(item, null), (err) => this.after(item, err)).finally(() => {
      this.#inflight.delete(p);
      this.#wakeRoom();
    });
    this.#inflight.add(p);
  }

  #full(): boolean {
    return this.#queue.length + this.#inflight.size >= this.limit && !this.#closed;
  }

  #wait(): void {
    if (this.#waiting) return;
    this.#waiting = true;
    const again = () => {
      this.#waiting = false;
      this.#drain();
    };
    // Woken by the holder's notify; the timeout bounds a lost wake-up. A pending waitAsync does not keep
    // Deno's event loop alive by itself: a worker's is kept alive by its message port.
    const r = Atomics.waitAsync(this.#lock, 0, 1, WAIT_MS);
    if (r.async) r.value.then(again);
    else queueMicrotask(again); // released between the check and the wait
  }

  #wakeRoom(): void {
    if (this.#full()) return;
    for (const resolve of this.#room.splice(0)) resolve();
  }
}
