// The token bucket's pacing side: what a download limit asks before each request.
import assert from "node:assert/strict";
import { delay } from "../lib/async.ts";
import { PACING, RateLimiter } from "../lib/rate_limit.ts";

Deno.test("a paced caller may go while the bucket is not in debt; a chunk larger than what is left puts it in debt until the rate pays it back", async () => {
  const l = new RateLimiter(1_000); // a burst of 1000 bytes
  assert.ok(l.ready, "a full bucket");
  l.spend(600);
  assert.ok(l.ready, "400 bytes left");
  l.spend(900);
  assert.equal(l.ready, false, "500 bytes in debt");
  await delay(700); // 700 bytes earned at 1000 a second
  assert.ok(l.ready, "the debt is paid back");
});

Deno.test("setRate: a new rate applies at once to everyone sharing the bucket; 0 lifts the limit, a rate sets it again", async () => {
  const l = new RateLimiter(1_000);
  l.spend(3_000);
  assert.equal(l.ready, false, "2000 bytes in debt at 1000 a second");
  l.setRate(0);
  assert.equal(l.bytesPerSecond, 0);
  assert.ok(l.ready, "no limit: always ready");
  l.spend(1e9);
  assert.ok(l.ready, "spending is not counted without a limit");
  const t0 = performance.now();
  await l.take(1e9);
  assert.ok(performance.now() - t0 < 50, "take does not wait without a limit");
  l.setRate(10_000); // a fresh second's worth
  assert.ok(l.ready);
  l.spend(15_000);
  assert.equal(l.ready, false, "5000 in debt");
  l.setRate(100_000); // the debt is paid at the new rate: 50 ms
  await delay(120);
  assert.ok(l.ready, "paid back at the new rate");
  assert.throws(() => l.setRate(-1), RangeError);
  assert.throws(() => l.setRate(Number.NaN), RangeError);
  assert.throws(() => new RateLimiter(Infinity), RangeError);
  assert.ok(new RateLimiter(0).ready, "a bucket made without a limit");
});

Deno.test("a download's bucket starts empty and saves a quarter second: the first request goes at once, the next when the rate has paid for it", async () => {
  const l = new RateLimiter(10_000, PACING);
  assert.ok(l.ready, "empty is not in debt");
  l.spend(1_000);
  assert.equal(l.ready, false, "the first chunk is owed at once");
  await delay(150); // 1500 bytes earned: the debt paid, 500 left
  assert.ok(l.ready);
  l.spend(3_000);
  assert.equal(l.ready, false, "in debt again");
  await delay(1_000); // 10 000 earned: 2500 kept, a quarter second's worth
  l.spend(2_600);
  assert.equal(l.ready, false, "a bucket left idle keeps a quarter second, not a second");

  l.setRate(0);
  await delay(100);
  l.setRate(10_000); // a limit set again: empty, as at the start
  l.spend(1);
  assert.equal(l.ready, false);

  const shaping = new RateLimiter(10_000);
  shaping.spend(9_000);
  assert.ok(shaping.ready, "an upload's bucket starts with a second's worth");
});
