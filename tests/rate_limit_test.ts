// The token bucket's pacing side: what a download limit asks before each request.
import assert from "node:assert/strict";
import { delay } from "../lib/async.ts";
import { RateLimiter } from "../lib/rate_limit.ts";

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
