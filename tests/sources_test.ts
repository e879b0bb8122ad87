// The line of sources waiting for a download's connection slots (lib/sources.ts): who comes next, and who counts as
// waiting. The download's use of it (the cap, rotation, turnover) is in download_faults_test.ts.
import assert from "node:assert/strict";
import { Sources } from "../lib/sources.ts";

const addr = (k: number) => ({ host: "127.0.0.1", port: 20_000 + k });
const name = (k: number) => `127.0.0.1:${20_000 + k}`;
const anyone = () => true;
/** The names `next` gives for `slots`. */
const nextNames = (s: Sources, slots: number, may: (peer: string) => boolean = anyone) =>
  s.next(slots, may).map(([peer]) => peer);

Deno.test("sources: new ones come in the order heard of, up to the free slots; connected ones are not offered", () => {
  const s = new Sources();
  s.learn([addr(0), addr(1), addr(2)]);
  s.learn([addr(1), addr(3)]); // a source heard of again keeps its place
  assert.deepEqual(nextNames(s, 2), [name(0), name(1)]);
  assert.deepEqual(nextNames(s, 10), [name(0), name(1), name(2), name(3)]);
  assert.deepEqual(s.next(1, anyone)[0], [name(0), addr(0)]);

  s.connected(name(0));
  assert.deepEqual(nextNames(s, 10), [name(1), name(2), name(3)]);
  assert.equal(s.untried(name(0)), false);
  assert.equal(s.untried(name(1)), true);
  assert.equal(s.waiting(anyone), 3);
});

Deno.test("sources: untried first, then those due again, then the others that left, the longest gone first", () => {
  const s = new Sources();
  s.learn([0, 1, 2, 3, 4].map(addr));
  for (const k of [0, 1, 2]) s.connected(name(k));
  s.left(name(1));
  s.left(name(0));
  s.left(name(2));
  // Gone in the order 1, 0, 2; 3 and 4 never tried.
  assert.deepEqual(nextNames(s, 10), [name(3), name(4), name(1), name(0), name(2)]);
  assert.equal(s.waiting(anyone), 2, "only the untried wait");

  s.learn([addr(2)]); // the tracker names 2 again: it is due, ahead of 1 and 0
  assert.deepEqual(nextNames(s, 10), [name(3), name(4), name(2), name(1), name(0)]);
  assert.equal(s.waiting(anyone), 3);
  assert.equal(s.waiting((peer) => peer !== name(2)), 2, "a due source held back (a backoff) does not wait");
  assert.deepEqual(nextNames(s, 10, (peer) => peer !== name(2)), [name(3), name(4), name(1), name(0)]);

  s.connected(name(2)); // its turn came: no longer due
  s.left(name(2));
  assert.deepEqual(nextNames(s, 10), [name(3), name(4), name(1), name(0), name(2)]);
});

Deno.test("sources: naming a connected source changes nothing; anyUntried until every one was connected", () => {
  const s = new Sources();
  s.learn([addr(0), addr(1)]);
  assert.equal(s.anyUntried, true);
  s.connected(name(0));
  s.learn([addr(0)]);
  s.connected(name(1));
  assert.equal(s.anyUntried, false);
  s.left(name(0));
  assert.equal(s.waiting(anyone), 0, "named again while connected: not due once it leaves");
});

Deno.test("sources: one turned out with missing chunks is due again only once the download starves", () => {
  const s = new Sources();
  s.learn([0, 1, 2].map(addr));
  for (const k of [0, 1, 2]) s.connected(name(k));
  s.left(name(0), true);
  s.left(name(1));
  assert.equal(s.waiting(anyone), 0);
  s.starving();
  assert.equal(s.waiting(anyone), 1);
  assert.deepEqual(nextNames(s, 10), [name(0), name(1)]);
  s.connected(name(0));
  s.left(name(0));
  s.starving(); // turned out once, due once
  assert.equal(s.waiting(anyone), 0);
});

Deno.test("sources: at most `max` are remembered; those heard of beyond it are ignored", () => {
  const s = new Sources(3);
  s.learn([0, 1, 2, 3, 4].map(addr));
  assert.deepEqual(nextNames(s, 10), [name(0), name(1), name(2)]);
  assert.equal(s.waiting(anyone), 3);
});
