// ByteBudget in memory: bytes handed out in order, never more than the total, waits that end on abort.
import assert from "node:assert/strict";
import { ByteBudget } from "../lib/byte_budget.ts";

/** Whether `p` has settled by the time already-queued microtasks have run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => done = true, () => done = true);
  await new Promise((r) => setTimeout(r, 0));
  return done;
}

Deno.test("ByteBudget hands out at most its total, in the order asked", async () => {
  const budget = new ByteBudget(10);
  await budget.take(6);
  const order: string[] = [];
  const a = budget.take(6).then(() => order.push("a"));
  const b = budget.take(1).then(() => order.push("b")); // fits, but waits behind a
  assert.equal(await settled(a), false);
  assert.equal(await settled(b), false);
  assert.equal(budget.waiting, 2);
  budget.give(6);
  await Promise.all([a, b]);
  assert.deepEqual(order, ["a", "b"]);
  assert.equal(budget.free, 3);
});

Deno.test("ByteBudget gives a request larger than the total everything, once nothing else is out", async () => {
  const budget = new ByteBudget(10);
  await budget.take(4);
  const big = budget.take(25);
  assert.equal(await settled(big), false);
  budget.give(4);
  await big;
  assert.equal(budget.free, -15);
  const next = budget.take(1);
  assert.equal(await settled(next), false);
  budget.give(25);
  await next;
  assert.equal(budget.free, 9);
});

Deno.test("ByteBudget: an aborted wait leaves the queue, and the ones behind it go on", async () => {
  const budget = new ByteBudget(10);
  await budget.take(8);
  const stop = new AbortController();
  const a = budget.take(5, stop.signal);
  const b = budget.take(2);
  assert.equal(await settled(b), false, "b waits behind a");
  stop.abort(new Error("closing"));
  await assert.rejects(a, /closing/);
  await b; // 2 fit in the 2 left
  assert.equal(budget.waiting, 0);
  assert.equal(budget.free, 0);
  await assert.rejects(budget.take(1, stop.signal), /closing/, "an aborted signal fails at once");
  assert.throws(() => new ByteBudget(0), RangeError);
});
