import assert from "node:assert/strict";
import { MAX_PEERS_LISTED, Tracker } from "../lib/tracker.ts";
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
  for (const p of [a, b]) tracker.handle({ type: "announce", peerId: p, add: [m], partial: [], remove: [] }, "h");
  advance(200);
  tracker.handle({ type: "heartbeat", peerId: a }, "h");
  advance(200); // b silent for 400 ms > expiry 300
  assert.deepEqual(tracker.peersOf(fileIdOf(m)).map((p) => p.port), [9001]);
  assert.equal(tracker.listFiles()[0]!.peers, 1);
  assert.throws(
    () => tracker.handle({ type: "heartbeat", peerId: b }, "h"),
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
  tracker.handle({ type: "announce", peerId: a, add: [m], partial: [], remove: [] }, "h");
  const c = register(9003);
  tracker.handle({ type: "announce", peerId: c, add: [], partial: [id], remove: [] }, "h");
  assert.deepEqual(tracker.peersOf(id).map((p) => [p.port, p.complete]), [[9001, true], [9003, false]]);
  assert.equal(tracker.listFiles()[0]!.partial, 1);
  tracker.handle({ type: "announce", peerId: a, add: [], partial: [], remove: [id] }, "h");
  assert.deepEqual(tracker.peersOf(id).map((p) => p.port), [9003]);
  tracker.handle({ type: "unregister", peerId: c }, "h");
  assert.deepEqual(tracker.listFiles(), []);
  // the same address registering again replaces the old record
  const a2 = register(9001);
  assert.notEqual(a2, a);
  assert.throws(
    () => tracker.handle({ type: "heartbeat", peerId: a }, "h"),
    (e: ShoalError) => e.code === "unknown_peer",
  );
  assert.equal(tracker.livePeers, 1);
});

Deno.test("tracker: a peer list names at most MAX_PEERS_LISTED sources, complete ones first, and others next time", () => {
  const { tracker, register } = setup();
  const m = manifest("f");
  const id = fileIdOf(m);
  const complete = (port: number) =>
    tracker.handle({ type: "announce", peerId: register(port), add: [m], partial: [], remove: [] }, "h");
  const partial = (port: number) =>
    tracker.handle({ type: "announce", peerId: register(port), add: [], partial: [id], remove: [] }, "h");
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
    () => tracker.handle({ type: "get_peers", fileId: h("d") }, "h"),
    (e: ShoalError) => e.code === "not_found",
  );
  assert.throws(
    () => tracker.handle({ type: "request", fileId: h("d"), index: 0 }, "h"),
    (e: ShoalError) => e.code === "unsupported",
  );
  assert.throws(
    () => tracker.handle({ type: "announce", peerId: "nope", add: [], partial: [], remove: [] }, "h"),
    (e: ShoalError) => e.code === "unknown_peer",
  );
});
