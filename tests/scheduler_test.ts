import assert from "node:assert/strict";
import { Bitfield } from "../lib/bitfield.ts";
import { Scheduler } from "../lib/scheduler.ts";
import { seeded } from "./helpers.ts";

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

Deno.test("scheduler: among equally rare chunks a random one, so draws spread; rarer still wins", () => {
  const picks = new Set<number>();
  for (let k = 0; k < 9; k++) {
    const draws = [0.3, k / 9];
    const s = new Scheduler(10, undefined, () => draws.shift()!);
    s.addPeer("a", Bitfield.full(10));
    s.addPeer("b", bits(10, [0, 1, 2, 3, 4, 5, 6, 7, 8]));
    assert.equal(s.next("a"), 9); // only "a" has 9: the rarest, whatever the draw
    const i = s.next("b")!;
    assert.ok(i >= 0 && i < 9);
    picks.add(i);
  }
  assert.equal(picks.size, 9); // nine draws, nine different chunks
});

Deno.test("scheduler: a peer that lacks the chunk at the drawn place gets another equally rare one", () => {
  for (let k = 0; k < 10; k++) {
    const s = new Scheduler(10, undefined, () => k / 10);
    s.addPeer("a", Bitfield.full(10));
    s.addPeer("b", bits(10, [3, 4]));
    s.addPeer("c", bits(10, [0, 1, 2, 5, 6, 7, 8, 9]));
    const i = s.next("b")!;
    assert.ok(i === 3 || i === 4, `picked ${i}`);
  }
});

Deno.test("scheduler: a chunk is asked of one peer until endgame, then of a second", () => {
  const s = new Scheduler(2);
  s.addPeer("a", Bitfield.full(2));
  s.addPeer("b", Bitfield.full(2));
  const x = s.next("a")!;
  assert.equal(s.endgame, false);
  const y = s.next("b")!;
  assert.notEqual(x, y);
  assert.equal(s.endgame, true);
  // everything is requested: endgame lets a ask for b's chunk
  assert.equal(s.next("a"), y);
  assert.equal(s.next("a"), null); // never the same peer twice
  assert.deepEqual(s.completed(y, "a"), ["b"]);
  assert.equal(s.inflight("b"), 0);
  s.completed(x, "a");
  assert.ok(s.complete);
});

Deno.test("scheduler: in endgame an idle peer takes a chunk both copies of which sit with others (slow peers)", () => {
  const s = new Scheduler(2);
  for (const p of ["slow1", "slow2", "fast"]) s.addPeer(p, Bitfield.full(2));
  const x = s.next("slow1")!, y = s.next("slow2")!;
  assert.equal(s.next("slow1"), y); // both slow peers hold both chunks
  assert.equal(s.next("slow2"), x);
  const first = s.next("fast");
  assert.ok(first === x || first === y, "the idle fast peer gets a third copy");
  assert.equal(s.next("fast"), null, "one at a time: it is busy now");
  assert.deepEqual([...s.completed(first!, "fast")].sort(), ["slow1", "slow2"]);
  assert.equal(s.next("fast"), first === x ? y : x, "and then the other");
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

Deno.test("scheduler: setHas replaces what a peer was taken to have and keeps its requests in flight", () => {
  const s = new Scheduler(4);
  s.setHas("b", bits(4, [2, 3])); // a peer not seen before is added
  s.setHas("a", Bitfield.full(4)); // the tracker's word: complete
  assert.deepEqual([s.next("a"), s.next("a")].sort(), [0, 1], "the rarest, as it was taken to have them");
  // Its BITFIELD says otherwise: it lacks chunk 1, already asked for, and 3.
  s.setHas("a", bits(4, [0, 2]));
  assert.equal(s.inflight("a"), 2, "what was asked stays asked");
  assert.deepEqual(s.unavailable(), [1]);
  // It refuses chunk 1: asked of no one now, and of it never again.
  s.failed(1, "a", true);
  assert.equal(s.inflight("a"), 1);
  assert.deepEqual([s.next("a"), s.next("a")], [2, null]);
  assert.equal(s.next("b"), 3);
  assert.deepEqual(s.unavailable(), [1]);
});

Deno.test("scheduler: chunks already done are never requested", () => {
  const s = new Scheduler(3, bits(3, [0, 2]));
  s.addPeer("a", Bitfield.full(3));
  assert.equal(s.next("a"), 1);
  assert.equal(s.next("a"), null);
});

/** A bitfield that counts lookups: the scheduler's work, without a clock. */
class CountingBitfield extends Bitfield {
  lookups = 0;
  override has(i: number): boolean {
    this.lookups++;
    return super.has(i);
  }
}

Deno.test("scheduler: a pick's work does not grow with the file", () => {
  const n = 20_000;
  const s = new Scheduler(n);
  const a = new CountingBitfield(n), b = new CountingBitfield(n);
  for (let i = 0; i < n; i++) a.set(i), b.set(i);
  s.addPeer("a", a);
  s.addPeer("b", b);
  const first = s.next("a")!;
  s.completed(first, "a");
  // a partial source that has nothing we need: asked again after every chunk, as the coordinator does
  const c = new CountingBitfield(n);
  c.set(first);
  s.addPeer("c", c);
  a.lookups = b.lookups = c.lookups = 0;
  for (let k = 1; k < n; k++) {
    const peer = k % 2 ? "a" : "b";
    s.completed(s.next(peer)!, peer);
    assert.equal(s.next("c"), null);
  }
  assert.ok(s.complete);
  // a scan of the whole file per pick would be about n * n / 2 = 200 000 000 lookups
  assert.ok(a.lookups + b.lookups < 4 * n, `${a.lookups + b.lookups} lookups for ${n} picks`);
  assert.ok(c.lookups < 4 * n, `${c.lookups} lookups for a peer with nothing new`);
});

Deno.test("scheduler: random operations agree with a plain model (rarest first, endgame, unavailable, wants)", () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = seeded(seed);
    const n = 1 + Math.floor(rnd() * 40);
    const done = new Bitfield(n);
    for (let i = 0; i < n; i++) if (rnd() < 0.2) done.set(i);
    const s = new Scheduler(n, done, seeded(seed * 7919));
    // the model: what each peer has and has been asked for
    const has = new Map<string, Set<number>>();
    const asked = new Map<string, Set<number>>();
    const names = ["a", "b", "c", "d", "e"];
    const avail = (i: number) => [...has.values()].filter((h) => h.has(i)).length;
    const requesters = (i: number) => [...asked.values()].filter((q) => q.has(i)).length;
    for (let step = 0; step < 400; step++) {
      const peer = names[Math.floor(rnd() * names.length)]!;
      const op = rnd();
      const known = has.has(peer);
      if (!known || op < 0.05) {
        const held = new Set<number>(), share = rnd(); // from a seeder to a peer with next to nothing
        for (let i = 0; i < n; i++) if (rnd() < share) held.add(i);
        s.addPeer(peer, bits(n, [...held]));
        has.set(peer, held);
        asked.set(peer, new Set());
      } else if (op < 0.1) {
        assert.deepEqual(s.removePeer(peer).sort((x, y) => x - y), [...asked.get(peer)!].sort((x, y) => x - y));
        has.delete(peer);
        asked.delete(peer);
      } else if (op < 0.2) {
        const i = Math.floor(rnd() * n);
        s.peerGained(peer, i);
        has.get(peer)!.add(i);
      } else if (op < 0.35 && asked.get(peer)!.size > 0) {
        const i = [...asked.get(peer)!][0]!;
        const lacks = rnd() < 0.5;
        s.failed(i, peer, lacks);
        asked.get(peer)!.delete(i);
        if (lacks) has.get(peer)!.delete(i);
      } else if (op < 0.6 && asked.get(peer)!.size > 0) {
        const i = [...asked.get(peer)!][0]!;
        const others = [...asked].filter(([q, set]) => q !== peer && set.has(i)).map(([q]) => q).sort();
        assert.deepEqual([...s.completed(i, peer)].sort(), others);
        for (const set of asked.values()) set.delete(i);
        done.set(i);
      } else {
        const got = s.next(peer);
        const mine = has.get(peer)!;
        const free = [...mine].filter((i) => !done.has(i) && requesters(i) === 0);
        const where = `seed ${seed}, step ${step}, peer ${peer}`;
        if (free.length > 0) {
          assert.ok(got !== null && free.includes(got), `${where}: ${got} is not a free chunk it has`);
          assert.equal(avail(got), Math.min(...free.map(avail)), `${where}: ${got} is not the rarest`);
        } else {
          // Two copies at most, but an idle peer may add one to the chunks with the fewest.
          const idle = asked.get(peer)!.size === 0;
          const copies = [...mine].filter((i) =>
            !done.has(i) && !asked.get(peer)!.has(i) && requesters(i) > 0 && (idle || requesters(i) < 2)
          );
          const fewest = Math.min(...copies.map(requesters));
          if (copies.length === 0) assert.equal(got, null, where);
          else assert.ok(got !== null && copies.includes(got), `${where}: ${got} is not an endgame copy`);
          if (got !== null) assert.equal(requesters(got), fewest, `${where}: ${got} has more copies than others`);
        }
        if (got !== null) asked.get(peer)!.add(got);
      }
      for (const [q, set] of asked) assert.equal(s.inflight(q), set.size);
      for (const q of names) assert.equal(s.wants(q), [...has.get(q) ?? []].some((i) => !done.has(i)), `wants ${q}`);
      const none = [...Array(n).keys()].filter((i) => !done.has(i) && avail(i) === 0);
      assert.deepEqual(s.unavailable(), none);
      const allAsked = [...Array(n).keys()].every((i) => done.has(i) || requesters(i) > 0);
      assert.equal(s.endgame, allAsked, `seed ${seed}, step ${step}: endgame`);
    }
  }
});
