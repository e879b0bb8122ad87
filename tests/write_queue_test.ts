import assert from "node:assert/strict";
import { newWriteLock, WriteQueue } from "../lib/write_queue.ts";

function recorder(lock: SharedArrayBuffer, limit = 2, fail?: (position: number) => boolean) {
  const written: number[] = [];
  const results: [string, unknown][] = [];
  const q = new WriteQueue<string>(lock, limit, (_data, position) => {
    if (fail?.(position)) throw new Error(`disk full at ${position}`);
    written.push(position);
  }, (item, error) => results.push([item, error]));
  const push = (name: string, position: number) => q.push({ item: name, data: new Uint8Array(1), position });
  return { q, written, results, push };
}

Deno.test("write queue: with the lock free, each write runs at once and the lock is left free", () => {
  const lock = newWriteLock();
  const r = recorder(lock);
  r.push("a", 0);
  r.push("b", 10);
  assert.deepEqual(r.written, [0, 10]);
  assert.deepEqual(r.results, [["a", null], ["b", null]]);
  assert.equal(new Int32Array(lock)[0], 0);
});

Deno.test("write queue: while another holds the lock, writes wait in order, and run once it is released", async () => {
  const lock = newWriteLock();
  const word = new Int32Array(lock);
  word[0] = 1; // another worker is writing
  const r = recorder(lock, 2);
  r.push("a", 0);
  r.push("b", 10);
  assert.deepEqual(r.written, []);
  assert.equal(r.q.length, 2);
  let roomy = false;
  const room = r.q.room().then(() => roomy = true);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(roomy, false, "room() waits while the queue is at its limit");
  // As in a worker, something must keep the event loop alive while waitAsync waits: here, a timer.
  const alive = setTimeout(() => {}, 1_000);
  Atomics.store(word, 0, 0);
  Atomics.notify(word, 0);
  await room;
  clearTimeout(alive);
  assert.deepEqual(r.written, [0, 10]);
  assert.deepEqual(r.results.map(([name]) => name), ["a", "b"]);
  assert.equal(word[0], 0);
});

Deno.test("write queue: a failed write is reported with its error and still releases the lock", () => {
  const lock = newWriteLock();
  const r = recorder(lock, 2, (position) => position === 10);
  r.push("a", 10);
  r.push("b", 20);
  assert.match(String(r.results[0]![1]), /disk full at 10/);
  assert.deepEqual(r.results[1], ["b", null]);
  assert.equal(new Int32Array(lock)[0], 0);
});

Deno.test("write queue: close drops what waits and frees anyone waiting for room", async () => {
  const lock = newWriteLock();
  new Int32Array(lock)[0] = 1;
  const r = recorder(lock, 1);
  r.push("a", 0);
  const room = r.q.room();
  r.q.close();
  await room;
  assert.equal(r.q.length, 0);
  assert.deepEqual(r.written, []);
  new Int32Array(lock)[0] = 0;
  Atomics.notify(new Int32Array(lock), 0);
  await new Promise((resolve) => setTimeout(resolve, 80)); // past the wait's own timeout too
  assert.deepEqual(r.written, [], "nothing is written after close");
});

Deno.test("write queue: a write handed to another thread frees the lock at once and holds room until it settles", async () => {
  const lock = newWriteLock();
  const pending = new Map<number, PromiseWithResolvers<void>>();
  const results: [string, unknown][] = [];
  const q = new WriteQueue<string>(lock, 2, (_data, position) => {
    const p = Promise.withResolvers<void>();
    pending.set(position, p);
    return p.promise;
  }, (item, error) => results.push([item, error]));
  q.push({ item: "a", data: new Uint8Array(1), position: 0 });
  q.push({ item: "b", data: new Uint8Array(1), position: 10 });
  assert.deepEqual([...pending.keys()], [0, 10], "both started, one after the other");
  assert.equal(new Int32Array(lock)[0], 0, "the lock is not held while the disk works");
  assert.equal(q.length, 0);
  assert.equal(q.inflight, 2);
  let roomy = false;
  const room = q.room().then(() => roomy = true);
  await Promise.resolve();
  assert.equal(roomy, false, "two in flight fill a queue of two");
  assert.deepEqual(results, [], "nothing is reported before it is written");

  pending.get(0)!.resolve();
  await room;
  assert.deepEqual(results, [["a", null]]);
  assert.equal(q.inflight, 1);

  let idle = false;
  const settled = q.idle().then(() => idle = true);
  q.close(); // in-flight writes are not dropped: their buffers are in use
  await Promise.resolve();
  assert.equal(idle, false);
  pending.get(10)!.reject(new Error("disk full at 10"));
  await settled;
  assert.equal(q.inflight, 0);
  assert.equal(results.length, 2);
  assert.equal(results[1]![0], "b");
  assert.match(String(results[1]![1]), /disk full at 10/);
});
