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

Deno.test("Compactor compacts every N chunks, and never twice within its minimum interval", async () => {
  let calls = 0;
  const counted = () => {
    calls++;
    return Promise.resolve();
  };
  const often = new Compactor(3, 0, counted);
  for (let i = 0; i < 10; i++) often.chunk();
  assert.equal(calls, 3, "10 chunks, one compaction per 3");
  await often.idle();

  calls = 0;
  const slow = new Compactor(3, 200, counted);
  for (let i = 0; i < 9; i++) slow.chunk();
  assert.equal(calls, 0, "within 200 ms of the start: none, however many chunks");
  await new Promise((r) => setTimeout(r, 250));
  slow.chunk();
  assert.equal(calls, 1, "the first chunk after the interval, with 3 or more counted");
  for (let i = 0; i < 5; i++) slow.chunk();
  assert.equal(calls, 1, "and then not again within the interval");
});
