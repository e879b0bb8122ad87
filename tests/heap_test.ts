/**
 * lib/heap.ts: the on-purpose full GC really runs, in the main isolate and
 * in a worker, and leaves no timer or session behind (the sanitizers).
 *
 * @module
 */

import assert from "node:assert/strict";
import { compactHeap, Compactor } from "../lib/heap.ts";

const MB = 1_000_000;

/** Allocates tens of MB of small objects that live long enough to reach the old generation, then drops them. */
function makeGarbage(): void {
  const keep: { n: number; s: string }[][] = [];
  for (let i = 0; i < 200; i++) keep.push(Array.from({ length: 4000 }, (_, n) => ({ n, s: `item ${i} ${n}` })));
  assert.equal(keep.length, 200);
}

Deno.test("compactHeap() frees dead old-generation objects in this isolate", async () => {
  await compactHeap();
  makeGarbage();
  const before = Deno.memoryUsage().heapUsed;
  await compactHeap();
  const after = Deno.memoryUsage().heapUsed;
  assert.ok(
    before - after > 20 * MB,
    `heap used ${(before / MB).toFixed(1)} MB before, ${(after / MB).toFixed(1)} after`,
  );
});

Deno.test("compactHeap() works in a worker too, and twice in a row", async () => {
  const code = `
    import { compactHeap } from ${JSON.stringify(new URL("../lib/heap.ts", import.meta.url).href)};
    let keep = [];
    for (let i = 0; i < 200; i++) keep.push(Array.from({ length: 4000 }, (_, n) => ({ n, s: "item " + i + " " + n })));
    keep = [];
    const before = Deno.memoryUsage().heapUsed;
    await compactHeap();
    await compactHeap();
    self.postMessage({ before, after: Deno.memoryUsage().heapUsed });
  `;
  const url = `data:application/javascript,${encodeURIComponent(code)}`;
  const w = new Worker(url, { type: "module" });
  try {
    const { promise, resolve, reject } = Promise.withResolvers<{ before: number; after: number }>();
    w.onmessage = (e) => resolve(e.data);
    w.onerror = (e) => {
      e.preventDefault();
      reject(new Error(e.message));
    };
    const timer = setTimeout(() => reject(new Error("the worker did not answer in 10 s")), 10_000);
    const r = await promise.finally(() => clearTimeout(timer));
    assert.ok(
      r.before - r.after > 20 * MB,
      `worker heap ${(r.before / MB).toFixed(1)} MB before, ${(r.after / MB).toFixed(1)} after`,
    );
  } finally {
    w.terminate();
  }
});

Deno.test("Compactor compacts once the heap has grown by its threshold, looking every N chunks", async () => {
  let heap = 1000;
  let calls = 0;
  const compact = () => {
    calls++;
    heap = 1010; // what a compaction leaves: the new base
    return Promise.resolve();
  };
  const c = new Compactor({ growthBytes: 100, checkEveryChunks: 2, minMs: 0, compact, heapBytes: () => heap });
  c.chunk();
  c.chunk(); // the first look: 1000 is the base
  heap = 1099;
  c.chunk();
  c.chunk();
  assert.equal(calls, 0, "grown by 99 of 100");
  heap = 1100;
  c.chunk();
  assert.equal(calls, 0, "not a chunk it looks at");
  c.chunk();
  assert.equal(calls, 1, "grown by 100 at a look");
  await c.idle();
  heap = 1109;
  for (let i = 0; i < 6; i++) c.chunk();
  assert.equal(calls, 1, "measured from what the compaction left (1010), not from the first base");
  heap = 1110;
  c.chunk();
  c.chunk();
  assert.equal(calls, 2);
});

Deno.test("Compactor never starts a compaction while one runs, nor twice within its minimum interval", async () => {
  let heap = 0;
  let calls = 0;
  let finish = () => {};
  const compact = () => {
    calls++;
    return new Promise<void>((resolve) => (finish = resolve));
  };
  const c = new Compactor({ growthBytes: 10, checkEveryChunks: 1, minMs: 200, compact, heapBytes: () => heap });
  c.chunk(); // base 0
  heap = 50;
  c.chunk();
  assert.equal(calls, 1);
  c.chunk();
  assert.equal(calls, 1, "one is running");
  finish();
  await c.idle();
  heap = 100; // the base is 50 now
  c.chunk();
  assert.equal(calls, 1, "within 200 ms of the last");
  await new Promise((r) => setTimeout(r, 250));
  c.chunk();
  assert.equal(calls, 2, "after the interval");
  finish();
  await c.idle();
});

Deno.test("Compactor starts no compaction once stopped, however much the heap grows", async () => {
  let heap = 0;
  let calls = 0;
  const compact = () => (calls++, Promise.resolve());
  const c = new Compactor({ growthBytes: 10, checkEveryChunks: 1, minMs: 0, compact, heapBytes: () => heap });
  c.chunk(); // base 0
  heap = 50;
  c.chunk();
  assert.equal(calls, 1);
  await c.idle();
  c.stop();
  heap = 1_000;
  for (let i = 0; i < 10; i++) c.chunk();
  assert.equal(calls, 1);
});

Deno.test("Compactor looks at the real heap by default", () => {
  let calls = 0;
  const c = new Compactor({
    growthBytes: 1,
    checkEveryChunks: 1,
    minMs: 0,
    compact: () => {
      calls++;
      return Promise.resolve();
    },
  });
  c.chunk(); // the base
  const keep = Array.from({ length: 200_000 }, (_, n) => ({ n }));
  c.chunk();
  assert.equal(calls, 1, `the heap grew (${keep.length} objects held)`);
});
