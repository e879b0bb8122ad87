import assert from "node:assert/strict";
import { Bitfield } from "../lib/bitfield.ts";
import { Scheduler } from "../lib/scheduler.ts";

const bits = (n: number, have: number[]) => {
  const b = new Bitfield(n);
  for (const i of have) b.set(i);
  return b;
};

Deno.test("scheduler: rarest chunk first", () => {
  const s = new Scheduler(4);
  s.addPeer("a", bits(4, [0, 1, 2, 3]));
  s.addPeer("b", bits(4, [0, 1, 3]));
  s.addPeer("c", bits(4, [0, 3]));
  // availability: 0:3, 1:2, 2:1, 3:3 -> a gets 2 first, then 1
  assert.equal(s.next("a"), 2);
  assert.equal(s.next("a"), 1);
  assert.equal(s.inflight("a"), 2);
});

Deno.test("scheduler: equally rare chunks are taken from a random start, wrapping around; rarer still wins", () => {
  const draws = [0.5, 0.5, 0.95, 0.0];
  const s = new Scheduler(10, undefined, () => draws.shift()!);
  s.addPeer("a", Bitfield.full(10));
  s.addPeer("b", bits(10, [0, 1, 2, 3, 4, 5, 6, 7, 8]));
  assert.equal(s.next("a"), 9); // only "a" has 9: the rarest, wherever the scan starts
  assert.equal(s.next("a"), 5); // start 0.5 * 10
  assert.equal(s.next("b"), 0); // start 9.5 -> 9, which b lacks; wraps to 0
  assert.equal(s.next("b"), 1); // start 0 -> 0 is taken
});

Deno.test("scheduler: a chunk is asked of one peer until endgame, then of a second", () => {
  const s = new Scheduler(2);
  s.addPeer("a", Bitfield.full(2));
  s.addPeer("b", Bitfield.full(2));
  const x = s.next("a")!, y = s.next("b")!;
  assert.notEqual(x, y);
  // everything is requested: endgame lets a ask for b's chunk
  assert.equal(s.next("a"), y);
  assert.equal(s.next("a"), null); // at most two copies, never the same peer twice
  assert.deepEqual(s.completed(y, "a"), ["b"]);
  assert.equal(s.inflight("b"), 0);
  s.completed(x, "a");
  assert.ok(s.complete);
});

Deno.test("scheduler: a removed peer's chunks go back to the pool; unavailable names what no one has", () => {
  const s = new Scheduler(3);
  s.addPeer("a", bits(3, [0, 1]));
  const got = [s.next("a"), s.next("a")].sort();
  assert.deepEqual(got, [0, 1]);
  assert.deepEqual(s.unavailable(), [2]);
  assert.deepEqual(s.removePeer("a").sort(), [0, 1]);
  assert.deepEqual(s.unavailable(), [0, 1, 2]);
  s.addPeer("b", bits(3, [1]));
  assert.equal(s.next("b"), 1);
  s.peerGained("b", 2);
  assert.equal(s.next("b"), 2);
  // a rejected chunk is not asked of the same peer again
  s.failed(1, "b", true);
  assert.equal(s.next("b"), null);
  assert.deepEqual(s.unavailable(), [0, 1]);
});

Deno.test("scheduler: chunks already done are never requested", () => {
  const s = new Scheduler(3, bits(3, [0, 2]));
  s.addPeer("a", Bitfield.full(3));
  assert.equal(s.next("a"), 1);
  assert.equal(s.next("a"), null);
});
