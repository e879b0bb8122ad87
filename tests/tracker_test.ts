import assert from "node:assert/strict";
import { MAX_NAMES_PER_SOURCE, MAX_PEERS_LISTED, publicPeerId, Tracker, TrackerServer } from "../lib/tracker.ts";
import { describeLinkEvent, type LinkEvent, TrackerLink } from "../lib/tracker_link.ts";
import { waitUntil } from "./helpers.ts";
import { pickFile } from "../lib/client.ts";
import { fileIdOf, type Manifest } from "../lib/manifest.ts";
import type { Message } from "../lib/messages.ts";
import { ShoalError } from "../lib/errors.ts";

const h = (c: string) => c.repeat(64);
const manifest = (name: string, fill = "a"): Manifest => ({
  name,
  size: 20000,
  chunkSize: 16384,
  chunks: [h(fill), h("b")],
});

function setup() {
  let now = 1_000_000;
  const tracker = new Tracker({ heartbeatMs: 100, expiryMs: 300, now: () => now });
  const register = (port: number) => {
    const r = tracker.handle({ type: "register", port }, "10.0.0.1");
    assert.equal(r.type, "registered");
    return (r as Extract<Message, { type: "registered" }>).peerId;
  };
  return { tracker, register, advance: (ms: number) => (now += ms) };
}

Deno.test("tracker: registration, announce and catalog", () => {
  const { tracker, register } = setup();
  const a = register(9001), b = register(9002);
  const m1 = manifest("Movie.mkv"), m2 = manifest("notes.txt", "c");
  tracker.handle({ type: "announce", peerId: a, add: [m1, m2], partial: [], remove: [] }, "10.0.0.1");
  tracker.handle({ type: "announce", peerId: b, add: [m1], partial: [], remove: [] }, "10.0.0.1");
  const files = tracker.listFiles();
  assert.deepEqual(files.map((f) => [f.name, f.peers, f.partial]), [["Movie.mkv", 2, 0], ["notes.txt", 1, 0]]);
  assert.deepEqual(tracker.listFiles("movie").map((f) => f.id), [fileIdOf(m1)]);
  assert.deepEqual(tracker.listFiles("zzz"), []);
  // the start of an id, 6 hex digits or more, in any case; fewer digits match names only
  const id1 = fileIdOf(m1);
  assert.deepEqual(tracker.listFiles(id1.slice(0, 6)).map((f) => f.id), [id1]);
  assert.deepEqual(tracker.listFiles(id1.slice(0, 20).toUpperCase()).map((f) => f.id), [id1]);
  assert.deepEqual(tracker.listFiles(id1), [tracker.listFiles("movie")[0]]);
  assert.deepEqual(tracker.listFiles(id1.slice(0, 5)), []);
  assert.deepEqual(tracker.listFiles(id1.slice(1, 9)), [], "only the start of an id");
  const peers = tracker.peersOf(fileIdOf(m1));
  assert.deepEqual(peers.map((p) => `${p.host}:${p.port}`).sort(), ["10.0.0.1:9001", "10.0.0.1:9002"]);
  const got = tracker.handle({ type: "get_manifest", fileId: fileIdOf(m2) }, "x");
  assert.equal(got.type === "manifest" && got.manifest.name, "notes.txt");
});

Deno.test("tracker: a peer that misses heartbeats drops out of every answer", () => {
  const { tracker, register, advance } = setup();
  const a = register(9001), b = register(9002);
  const m = manifest("f");
  for (const p of [a, b]) {
    tracker.handle({ type: "announce", peerId: p, add: [m], partial: [], remove: [] }, "10.0.0.1");
  }
  advance(200);
  tracker.handle({ type: "heartbeat", peerId: a }, "10.0.0.1");
  advance(200); // b silent for 400 ms > expiry 300
  assert.deepEqual(tracker.peersOf(fileIdOf(m)).map((p) => p.port), [9001]);
  assert.equal(tracker.listFiles()[0]!.peers, 1);
  assert.throws(
    () => tracker.handle({ type: "heartbeat", peerId: b }, "10.0.0.1"),
    (e: ShoalError) => e.code === "unknown_peer",
  );
  advance(400);
  tracker.sweep();
  assert.deepEqual(tracker.listFiles(), []);
  assert.throws(() => tracker.peersOf(fileIdOf(m)), (e: ShoalError) => e.code === "not_found");
});

Deno.test("tracker: unregister, remove, partial sources and re-registration", () => {
  const { tracker, register } = setup();
  const a = register(9001);
  const m = manifest("f");
  const id = fileIdOf(m);
  tracker.handle({ type: "announce", peerId: a, add: [m], partial: [], remove: [] }, "10.0.0.1");
  const c = register(9003);
  tracker.handle({ type: "announce", peerId: c, add: [], partial: [id], remove: [] }, "10.0.0.1");
  assert.deepEqual(tracker.peersOf(id).map((p) => [p.port, p.complete]), [[9001, true], [9003, false]]);
  assert.equal(tracker.listFiles()[0]!.partial, 1);
  tracker.handle({ type: "announce", peerId: a, add: [], partial: [], remove: [id] }, "10.0.0.1");
  assert.deepEqual(tracker.peersOf(id).map((p) => p.port), [9003]);
  tracker.handle({ type: "unregister", peerId: c }, "10.0.0.1");
  assert.deepEqual(tracker.listFiles(), []);
  // the same address registering again replaces the old record
  const a2 = register(9001);
  assert.notEqual(a2, a);
  assert.throws(
    () => tracker.handle({ type: "heartbeat", peerId: a }, "10.0.0.1"),
    (e: ShoalError) => e.code === "unknown_peer",
  );
  assert.equal(tracker.livePeers, 1);
});

Deno.test("tracker: a peer list names at most MAX_PEERS_LISTED sources, complete ones first, and others next time", () => {
  const { tracker, register } = setup();
  const m = manifest("f");
  const id = fileIdOf(m);
  const complete = (port: number) =>
    tracker.handle({ type: "announce", peerId: register(port), add: [m], partial: [], remove: [] }, "10.0.0.1");
  const partial = (port: number) =>
    tracker.handle({ type: "announce", peerId: register(port), add: [], partial: [id], remove: [] }, "10.0.0.1");
  for (let i = 0; i < 20; i++) complete(9000 + i);
  for (let i = 0; i < 40; i++) partial(10_000 + i);
  const seen = new Set<number>();
  for (let k = 0; k < 4; k++) {
    const list = tracker.peersOf(id);
    assert.equal(list.length, MAX_PEERS_LISTED);
    assert.deepEqual(list.slice(0, 20).map((p) => p.complete), Array(20).fill(true), "every complete source, first");
    assert.equal(new Set(list.map((p) => p.port)).size, MAX_PEERS_LISTED, "no source twice");
    for (const p of list.slice(20)) seen.add(p.port);
  }
  assert.ok(seen.size > 30, `asking again names other partial sources (${seen.size} of 40 seen)`);
  for (let i = 0; i < 40; i++) complete(11_000 + i); // 60 complete sources now: only complete ones are listed
  assert.ok(tracker.peersOf(id).every((p) => p.complete));
});

Deno.test("tracker: unknown ids and unsupported messages are refused with a code", () => {
  const { tracker } = setup();
  assert.throws(
    () => tracker.handle({ type: "get_peers", fileId: h("d") }, "10.0.0.1"),
    (e: ShoalError) => e.code === "not_found",
  );
  assert.throws(
    () => tracker.handle({ type: "request", fileId: h("d"), index: 0 }, "10.0.0.1"),
    (e: ShoalError) => e.code === "unsupported",
  );
  assert.throws(
    () => tracker.handle({ type: "announce", peerId: "nope", add: [], partial: [], remove: [] }, "10.0.0.1"),
    (e: ShoalError) => e.code === "unknown_peer",
  );
});

Deno.test("tracker: one source address registers at most peersPerHost peers; an IPv6 /64 counts as one address", () => {
  const tracker = new Tracker({ limits: { peersPerHost: 3 } });
  const register = (port: number, from: string) => tracker.handle({ type: "register", port }, from);
  for (const port of [1, 2, 3]) register(port, "10.0.0.1");
  assert.throws(() => register(4, "10.0.0.1"), (e: ShoalError) => e.code === "full" && /10\.0\.0\.1/.test(e.message));
  // `host` names where others reach the peer; the limit counts where the REGISTER came from
  assert.throws(
    () => tracker.handle({ type: "register", port: 4, host: "10.7.7.7" }, "10.0.0.1"),
    (e: ShoalError) => e.code === "full",
  );
  assert.equal(register(4, "10.0.0.2").type, "registered");
  assert.equal(register(5, "::ffff:10.0.0.2").type, "registered");
  assert.equal(tracker.usage("10.0.0.2").peers, 2, "an IPv4-mapped address counts as its IPv4 address");
  for (
    const [port, from] of [[1, "2001:db8:0:1::a"], [2, "2001:db8::1:0:0:0:b"], [3, "2001:0db8:0000:0001:ffff::c%eth0"]]
  ) {
    assert.equal(register(port as number, from as string).type, "registered");
  }
  assert.throws(() => register(4, "2001:db8:0:1:1234::1"), (e: ShoalError) => e.code === "full");
  assert.equal(register(4, "2001:db8:0:2::1").type, "registered", "another /64");
  // a peer that leaves makes room
  const r = register(9, "10.0.0.3");
  assert.equal(r.type, "registered");
  tracker.handle({ type: "unregister", peerId: (r as Extract<Message, { type: "registered" }>).peerId }, "10.0.0.3");
  assert.equal(tracker.usage("10.0.0.3").peers, 0);
  assert.equal(tracker.usage().peers, tracker.livePeers);
});

Deno.test("tracker: a live registration is replaced only from the address that made it", () => {
  let now = 1_000_000;
  const tracker = new Tracker({ heartbeatMs: 100, expiryMs: 300, now: () => now });
  const reg = (from: string) => tracker.handle({ type: "register", port: 9000, host: "10.9.9.9" }, from);
  const first = reg("10.0.0.1") as Extract<Message, { type: "registered" }>;
  tracker.handle({ type: "announce", peerId: first.peerId, add: [manifest("f")], partial: [], remove: [] }, "10.0.0.1");
  assert.throws(() => reg("10.6.6.6"), (e: ShoalError) => e.code === "address_in_use");
  assert.equal(tracker.listFiles().length, 1, "the victim's files stay listed");
  tracker.handle({ type: "heartbeat", peerId: first.peerId }, "10.0.0.1");
  const again = reg("10.0.0.1") as Extract<Message, { type: "registered" }>; // the same peer, restarted
  assert.notEqual(again.peerId, first.peerId);
  now += 400; // expired: anyone may take the address
  assert.equal(reg("10.6.6.6").type, "registered");
});

/** A manifest of `n` chunks, different for each `tag`. */
const big = (tag: string, n: number): Manifest => ({
  name: tag,
  size: n * 16384,
  chunkSize: 16384,
  chunks: Array.from({ length: n }, (_, i) => (i === 0 ? h(tag) : h("e"))),
});

Deno.test("tracker: shared files and manifest chunks are bounded per address and in all; an announce past a limit is refused whole", () => {
  let now = 1_000_000;
  const tracker = new Tracker({
    heartbeatMs: 100,
    expiryMs: 300,
    now: () => now,
    limits: { sourcesPerHost: 4, sources: 6, chunksPerHost: 10, chunks: 16 },
  });
  const peer = (port: number, from: string) =>
    (tracker.handle({ type: "register", port }, from) as Extract<Message, { type: "registered" }>).peerId;
  const announce = (peerId: string, from: string, add: Manifest[], partial: string[] = [], remove: string[] = []) =>
    tracker.handle({ type: "announce", peerId, add, partial, remove }, from);
  const full = (e: ShoalError) => e.code === "full";
  const a = peer(1, "10.0.0.1"), b = peer(2, "10.0.0.1"), c = peer(3, "10.0.0.2");
  announce(a, "10.0.0.1", [big("1", 4), big("2", 4)]);
  announce(a, "10.0.0.1", [big("1", 4), big("2", 4)]); // announced again: nothing new
  assert.deepEqual(tracker.usage("10.0.0.1"), { peers: 2, sources: 2, chunks: 8, names: 0 });
  // 3 more chunks than the address may hold: nothing of it is taken, not even the file it already knows
  assert.throws(() => announce(b, "10.0.0.1", [big("1", 4), big("3", 3)]), full);
  assert.equal(tracker.listFiles().length, 2);
  assert.deepEqual(tracker.peersOf(fileIdOf(big("1", 4))).map((p) => p.port), [1]);
  // a file others introduced costs this address a source, not chunks
  announce(c, "10.0.0.2", [big("3", 3)]);
  announce(b, "10.0.0.1", [big("1", 4)], [fileIdOf(big("3", 3))]);
  assert.deepEqual(tracker.usage("10.0.0.1"), { peers: 2, sources: 4, chunks: 8, names: 0 });
  assert.throws(() => announce(b, "10.0.0.1", [big("2", 4)]), full, "a fifth source from 10.0.0.1");
  // in all: 16 chunks, 6 sources
  assert.throws(
    () => announce(c, "10.0.0.2", [big("4", 6)]),
    (e: ShoalError) => full(e) && /at most 16/.test(e.message),
  );
  announce(c, "10.0.0.2", [big("4", 5)]);
  assert.deepEqual(tracker.usage(), { peers: 3, sources: 6, chunks: 16, names: 0 });
  assert.throws(() => announce(c, "10.0.0.2", [big("2", 4)]), full, "a seventh source");
  // leaving gives back what a peer held; a file's chunks come back when its last source leaves
  announce(a, "10.0.0.1", [], [], [fileIdOf(big("2", 4))]);
  assert.deepEqual(tracker.usage("10.0.0.1"), { peers: 2, sources: 3, chunks: 4, names: 0 });
  tracker.handle({ type: "unregister", peerId: c }, "10.0.0.2");
  assert.deepEqual(
    tracker.usage("10.0.0.2"),
    { peers: 0, sources: 0, chunks: 3, names: 0 },
    "b still holds file 3 in part",
  );
  now += 400;
  tracker.sweep();
  assert.deepEqual(tracker.usage(), { peers: 0, sources: 0, chunks: 0, names: 0 });
  assert.deepEqual(tracker.usage("10.0.0.2"), { peers: 0, sources: 0, chunks: 0, names: 0 });
});

Deno.test("tracker: what it counts per address always matches what it holds", () => {
  let now = 1_000_000, seed = 7;
  const random = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n);
  const tracker = new Tracker({ heartbeatMs: 100, expiryMs: 300, now: () => now });
  const ids: string[] = [];
  const files = Array.from({ length: 8 }, (_, i) => big(String.fromCharCode(48 + i), 1 + i));
  for (let step = 0; step < 2_000; step++) {
    const from = `10.0.0.${random(3)}`;
    try {
      switch (random(6)) {
        case 0: {
          const r = tracker.handle({ type: "register", port: 1 + random(6), host: "h" }, from);
          if (r.type === "registered") ids.push(r.peerId);
          break;
        }
        case 1:
        case 2:
          tracker.handle({
            type: "announce",
            peerId: ids[random(ids.length)] ?? "",
            // the same content under a second name now and then
            add: [files[random(8)]!].map((m) => random(3) === 0 ? { ...m, name: `${m.name} copy` } : m),
            partial: [fileIdOf(files[random(8)]!)],
            remove: [fileIdOf(files[random(8)]!)],
          }, from);
          break;
        case 3:
          tracker.handle({ type: "unregister", peerId: ids[random(ids.length)] ?? "" }, from);
          break;
        case 4:
          tracker.handle({ type: "heartbeat", peerId: ids[random(ids.length)] ?? "" }, from);
          break;
        default:
          now += random(200);
          tracker.sweep();
      }
    } catch (e) {
      if (!(e instanceof ShoalError)) throw e;
    }
    tracker.sweep();
    const snap = tracker.snapshot();
    const total = tracker.usage();
    assert.equal(total.peers, snap.totals.peers, `peers at step ${step}`);
    assert.equal(total.sources, snap.totals.completeSources + snap.totals.partialSources, `sources at step ${step}`);
    assert.equal(total.chunks, snap.files.reduce((n, f) => n + f.chunks, 0), `chunks at step ${step}`);
    assert.equal(total.names, snap.totals.extraNames, `names at step ${step}`);
  }
  now += 1_000;
  tracker.sweep();
  assert.deepEqual(tracker.usage(), { peers: 0, sources: 0, chunks: 0, names: 0 });
});

Deno.test("tracker: one content shared under several names is listed, and found, under each; a name goes with its last source", () => {
  const { tracker, register } = setup();
  const a = register(9001), b = register(9002);
  const m = manifest("a.txt"), copy = { ...m, name: "b.txt" }, id = fileIdOf(m);
  const announce = (peerId: string, add: Manifest[], remove: string[] = []) =>
    tracker.handle({ type: "announce", peerId, add, partial: [], remove }, "10.0.0.1");
  announce(a, [m]);
  announce(b, [copy]);
  assert.deepEqual(tracker.listFiles().map((f) => [f.name, f.id, f.peers]), [["a.txt", id, 2], ["b.txt", id, 2]]);
  assert.deepEqual(tracker.listFiles("b.txt").map((f) => f.name), ["b.txt"], "a search matches each name");
  assert.deepEqual(tracker.listFiles(id.slice(0, 8)).map((f) => f.name), ["a.txt", "b.txt"]);
  assert.equal(tracker.usage().names, 0, "one name each: no extra");
  // One peer with both copies gives both names; its second one is an extra name.
  announce(b, [m]);
  assert.equal(tracker.usage().names, 1);
  announce(a, [], [id]);
  assert.deepEqual(tracker.listFiles().map((f) => [f.name, f.peers]), [["a.txt", 1], ["b.txt", 1]]);
  announce(b, [], [id]);
  assert.deepEqual(tracker.listFiles(), []);
  assert.equal(tracker.usage().names, 0);
  // A partial source names nothing: the name first announced stays while it alone is left.
  const c = register(9003);
  announce(a, [copy]);
  tracker.handle({ type: "announce", peerId: c, add: [], partial: [id], remove: [] }, "10.0.0.1");
  announce(a, [], [id]);
  assert.deepEqual(tracker.listFiles().map((f) => [f.name, f.peers, f.partial]), [["b.txt", 0, 1]]);
});

Deno.test("tracker: dropNames takes one name off a file, which stays listed under the others; the last name stays", () => {
  const { tracker, register } = setup();
  const a = register(9001), b = register(9002);
  assert.deepEqual((tracker.handle({ type: "register", port: 9003 }, "10.0.0.1") as { features?: string[] }).features, [
    "dropNames",
  ]);
  const m = manifest("a.txt"), id = fileIdOf(m);
  const named = (name: string) => ({ ...m, name });
  const announce = (peerId: string, add: Manifest[], dropNames: { fileId: string; name: string }[] = []) =>
    tracker.handle({ type: "announce", peerId, add, partial: [], remove: [], dropNames }, "10.0.0.1");
  const listed = () => tracker.listFiles().map((f) => [f.name, f.peers]);
  announce(a, [m, named("b.txt"), named("c.txt")]);
  announce(b, [named("d.txt")]);
  assert.equal(tracker.usage().names, 2);
  announce(a, [], [{ fileId: id, name: "b.txt" }]);
  assert.deepEqual(listed(), [["a.txt", 2], ["c.txt", 2], ["d.txt", 2]]);
  assert.equal(tracker.usage().names, 1, "the dropped name is no longer charged");
  // Ignored: a name not given, a file no one has, and the last name b gives it.
  announce(a, [], [{ fileId: id, name: "zzz" }, { fileId: fileIdOf(manifest("x", "c")), name: "a.txt" }]);
  announce(b, [], [{ fileId: id, name: "d.txt" }]);
  assert.deepEqual(listed(), [["a.txt", 2], ["c.txt", 2], ["d.txt", 2]]);
  announce(a, [], [{ fileId: id, name: "a.txt" }, { fileId: id, name: "c.txt" }]);
  assert.deepEqual(listed(), [["c.txt", 2], ["d.txt", 2]], "a.txt dropped; c.txt, the last, kept");
  assert.equal(tracker.usage().names, 0);
  // Dropped and added in one ANNOUNCE: it stays (drops come first), and the cap counts the names left.
  announce(a, [named("e.txt")], [{ fileId: id, name: "e.txt" }]);
  assert.deepEqual(listed(), [["c.txt", 2], ["d.txt", 2], ["e.txt", 2]]);
  // A partial source gives no names: nothing to drop.
  const c = register(9004);
  tracker.handle({ type: "announce", peerId: c, add: [], partial: [id], remove: [] }, "10.0.0.1");
  announce(c, [], [{ fileId: id, name: "c.txt" }]);
  assert.deepEqual(listed(), [["c.txt", 2], ["d.txt", 2], ["e.txt", 2]]);
});

Deno.test("tracker: a tracker that lists no features ignores dropNames, as an older one does", () => {
  const tracker = new Tracker({ features: [] });
  const r = tracker.handle({ type: "register", port: 9001 }, "10.0.0.1") as Extract<Message, { type: "registered" }>;
  assert.ok(!("features" in r));
  const m = manifest("a.txt"), id = fileIdOf(m);
  tracker.handle(
    { type: "announce", peerId: r.peerId, add: [m, { ...m, name: "b.txt" }], partial: [], remove: [] },
    "10.0.0.1",
  );
  tracker.handle(
    {
      type: "announce",
      peerId: r.peerId,
      add: [],
      partial: [],
      remove: [],
      dropNames: [{ fileId: id, name: "b.txt" }],
    },
    "10.0.0.1",
  );
  assert.deepEqual(tracker.listFiles().map((f) => f.name), ["a.txt", "b.txt"]);
});

Deno.test("tracker: the names one source gives a file are capped, and extra names are bounded per address like sources", () => {
  const tracker = new Tracker({ limits: { namesPerHost: 20 } });
  const peer = (port: number) =>
    (tracker.handle({ type: "register", port }, "10.0.0.1") as Extract<Message, { type: "registered" }>).peerId;
  const m = manifest("f");
  const copies = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ ...m, name: `${tag}${i}` }));
  const a = peer(1), b = peer(2);
  tracker.handle(
    { type: "announce", peerId: a, add: copies(MAX_NAMES_PER_SOURCE + 4, "a"), partial: [], remove: [] },
    "10.0.0.1",
  );
  assert.equal(tracker.listFiles().length, MAX_NAMES_PER_SOURCE, "the names past the cap are ignored");
  assert.equal(tracker.usage("10.0.0.1").names, MAX_NAMES_PER_SOURCE - 1);
  // 15 extra names held of 20: 6 more is past the address's limit, and the announce is refused whole.
  const other = manifest("g", "d");
  assert.throws(
    () =>
      tracker.handle(
        { type: "announce", peerId: b, add: [other, ...copies(7, "b")], partial: [], remove: [] },
        "10.0.0.1",
      ),
    (e: ShoalError) => e.code === "full" && /extra names/.test(e.message),
  );
  assert.equal(tracker.listFiles().length, MAX_NAMES_PER_SOURCE, "nothing of it was taken");
  tracker.handle({ type: "announce", peerId: b, add: copies(6, "b"), partial: [], remove: [] }, "10.0.0.1");
  assert.equal(tracker.usage("10.0.0.1").names, 20);
  tracker.handle({ type: "unregister", peerId: a }, "10.0.0.1");
  assert.equal(tracker.usage("10.0.0.1").names, 5);
});

Deno.test("tracker link: a tracker never reached is 'cannot register', one that went away is 'lost'", async () => {
  const server = TrackerServer.start({ heartbeatMs: 50, expiryMs: 1000 });
  const events: LinkEvent[] = [];
  const link = new TrackerLink({
    tracker: server.address,
    port: 9,
    holdings: () => ({ complete: [], partial: [] }),
    onEvent: (e) => events.push(e),
  });
  try {
    await waitUntil(() => events.some((e) => e.kind === "registered"), 5_000, "registered");
    await server.close(); // nobody listens there any more
    await waitUntil(() => events.filter((e) => e.kind === "lost").length >= 2, 10_000, "two failures");
    const [lost, again] = events.filter((e) => e.kind === "lost").map(describeLinkEvent);
    assert.match(lost!, /^lost the tracker \(.*\); retrying in \d+ ms$/);
    assert.match(again!, /^cannot register with the tracker \(Cannot reach .*\); retrying in \d+ ms$/);
  } finally {
    await link.stop({ unregister: false });
    await server.close();
  }
});

Deno.test("tracker: a peer id works only from the address it registered from, and the dashboard never shows it", () => {
  const { tracker, register } = setup();
  const a = register(9001);
  const m = manifest("a.txt");
  tracker.handle({ type: "announce", peerId: a, add: [m], partial: [], remove: [] }, "10.0.0.1");
  const elsewhere: Message[] = [
    { type: "announce", peerId: a, add: [], partial: [], remove: [fileIdOf(m)] },
    { type: "heartbeat", peerId: a },
    { type: "unregister", peerId: a },
  ];
  for (const msg of elsewhere) {
    assert.throws(() => tracker.handle(msg, "10.9.9.9"), (e: ShoalError) => e.code === "unknown_peer", msg.type);
  }
  assert.deepEqual(tracker.listFiles().map((f) => [f.name, f.peers]), [["a.txt", 1]], "nothing changed");
  const shown = tracker.snapshot().peers.map((p) => p.id);
  assert.deepEqual(shown, [publicPeerId(a)]);
  assert.ok(!JSON.stringify(tracker.snapshot()).includes(a), "the id itself appears nowhere in the snapshot");
});

Deno.test("tracker: a REGISTER host must be a host name or an IP address (it is printed and connected to)", () => {
  const tracker = new Tracker();
  for (const host of ["peer-1.example.org", "192.0.2.7", "2001:db8::7", "fe80::1%eth0"]) {
    assert.equal(tracker.handle({ type: "register", port: 9, host }, "10.0.0.1").type, "registered", host);
  }
  for (const host of ["", "evil\x1b[2J\nfake line", "a b", "x".repeat(254), "café.example"]) {
    assert.throws(
      () => tracker.handle({ type: "register", port: 9, host }, "10.0.0.1"),
      (e: ShoalError) => e.code === "bad_host",
      JSON.stringify(host),
    );
  }
});

Deno.test("tracker: a search matches a name however its accents were composed; get picks it by either form", () => {
  const { tracker, register } = setup();
  const a = register(9001);
  const nfd = "cafe\u0301 notes.txt", nfc = "caf\u00e9 notes.txt"; // as macOS writes it, and as it is typed
  tracker.handle({ type: "announce", peerId: a, add: [manifest(nfd)], partial: [], remove: [] }, "10.0.0.1");
  for (const q of [nfc, nfd, "CAF\u00c9", "caf\u00e9"]) {
    assert.deepEqual(tracker.listFiles(q).map((f) => f.name), [nfd], JSON.stringify(q));
  }
  assert.equal(pickFile(tracker.listFiles(nfc).map((f) => ({ id: f.id, name: f.name })), nfc)?.name, nfd);
});
