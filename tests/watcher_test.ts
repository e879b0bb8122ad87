// The watched shared folder (lib/watcher.ts), in one process: a temp directory, a PeerNode, sometimes a tracker.
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { delay } from "../lib/async.ts";
import { connect } from "../lib/connection.ts";
import { indexDirectory, type SharedFile } from "../lib/indexer.ts";
import { chunkSizeFor, fileIdOf, hashFile } from "../lib/manifest.ts";
import { PeerNode } from "../lib/peer.ts";
import type { FileSummary, MessageOf } from "../lib/messages.ts";
import { TrackerServer } from "../lib/tracker.ts";
import {
  describeWatchEvent,
  QUIET_MS,
  type ShareTarget,
  type WatchEvent,
  type WatchOptions,
  watchShared,
} from "../lib/watcher.ts";
import { waitUntil } from "./e2e/harness.ts";
import { randomBytes } from "./helpers.ts";

const CHUNK = 16 * 1024;
/** Deadline for a change to show: the watcher needs about two quiet intervals plus a hash; this leaves room for load. */
const SHOW_MS = 15_000;

/** The id a file's current content is shared under. */
async function idOf(path: string): Promise<string> {
  const size = (await Deno.stat(path)).size;
  return fileIdOf(await hashFile(path, basename(path), chunkSizeFor(size, CHUNK)));
}

/** What {@link world} builds; everything is closed and removed on dispose. */
interface World extends AsyncDisposable {
  dir: string;
  node: PeerNode;
  tracker: TrackerServer | null;
  events: WatchEvent[];
  /** Every file handed to `node.share`, in order. */
  shares: SharedFile[];
  watcher: ReturnType<typeof watchShared>;
  /** Ids in the peer's catalog. */
  ids(): string[];
}

/** A temp shared directory watched into a PeerNode (with an in-process tracker when asked). */
async function world(
  options: WatchOptions & { tracker?: boolean; trackerFeatures?: string[] } = {},
): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "shoal-watch-" });
  const features = options.trackerFeatures ? { features: options.trackerFeatures } : {};
  const tracker = options.tracker ? TrackerServer.start({ heartbeatMs: 100, expiryMs: 1000, ...features }) : null;
  const node = PeerNode.start([], tracker ? { tracker: tracker.address } : {});
  const events: WatchEvent[] = [], shares: SharedFile[] = [];
  const target: ShareTarget = {
    share: (f) => {
      shares.push(f);
      return node.share(f);
    },
    unshareCopy: (id, path) => node.unshareCopy(id, path),
  };
  const watcher = watchShared(target, dir, [], { chunkSize: CHUNK, ...options, onEvent: (e) => events.push(e) });
  await watcher.rescan(); // the first walk is done: what the test makes from now on is news
  return {
    dir,
    node,
    tracker,
    events,
    shares,
    watcher,
    ids: () => node.catalog().map((f) => f.id).sort(),
    async [Symbol.asyncDispose]() {
      await watcher.close();
      await node.close();
      await tracker?.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Waits until the peer's catalog is exactly `ids`. */
function waitForIds(w: World, ids: string[], what: string): Promise<boolean> {
  const want = [...ids].sort().join();
  return waitUntil(() => w.ids().join() === want, SHOW_MS, what);
}

Deno.test("watcher: added, changed and removed files are announced to the tracker and withdrawn", async () => {
  await using w = await world({ tracker: true });
  const atTracker = () => w.tracker!.tracker.listFiles().map((f) => f.id);
  const path = join(w.dir, "a.bin");

  await Deno.writeFile(path, randomBytes(CHUNK * 3 + 5));
  const first = await idOf(path);
  await waitForIds(w, [first], "the new file in the catalog");
  await waitUntil(() => atTracker().includes(first), SHOW_MS, "the new file at the tracker");
  assert.deepEqual(w.events.map((e) => e.kind), ["added"]);
  assert.equal(w.watcher.shared.get("a.bin")?.id, first);

  await Deno.writeFile(path, randomBytes(CHUNK * 2));
  const second = await idOf(path);
  await waitForIds(w, [second], "the changed file, without the old id");
  await waitUntil(() => atTracker().join() === second, SHOW_MS, "only the new id at the tracker");
  const changed = w.events.at(-1);
  assert.ok(changed?.kind === "changed" && changed.oldId === first && changed.file.id === second);

  await Deno.remove(path);
  await waitForIds(w, [], "the removed file withdrawn");
  await waitUntil(() => atTracker().length === 0, SHOW_MS, "the tracker to forget it");
  assert.deepEqual(w.events.map((e) => e.kind), ["added", "changed", "removed"]);
});

for (
  const [mode, options] of [["fs events", {}], ["rescans only", { fsEvents: false, rescanIntervalMs: 100 }]] as const
) {
  Deno.test(`watcher (${mode}): a file written slowly is announced once, complete, never half-written`, async () => {
    await using w = await world(options);
    const path = join(w.dir, "slow.bin");
    const parts = Array.from({ length: 6 }, () => randomBytes(CHUNK + 777));
    {
      using f = await Deno.open(path, { write: true, create: true });
      for (const part of parts) {
        let at = 0;
        while (at < part.length) at += await f.write(part.subarray(at));
        // The scenario, not a synchronisation: a writer that pauses for half the quiet interval between writes.
        await delay(QUIET_MS / 2);
      }
    }
    const final = await idOf(path);
    await waitForIds(w, [final], "the complete file");
    const size = parts.length * (CHUNK + 777);
    assert.deepEqual(w.shares.map((f) => [f.id, f.size]), [[final, size]], "shared once, with the final content");
    assert.deepEqual(w.events.map((e) => e.kind), ["added"]);
  });
}

Deno.test("watcher: files in a new subdirectory are shared; moving and removing the directory follows", async () => {
  await using w = await world();
  await Deno.mkdir(join(w.dir, "sub", "deep"), { recursive: true });
  const path = join(w.dir, "sub", "deep", "c.bin");
  await Deno.writeFile(path, randomBytes(1000));
  const id = await idOf(path);
  await waitForIds(w, [id], "the file in the new subdirectory");
  assert.equal(w.watcher.shared.get(join("sub", "deep", "c.bin"))?.id, id);

  await Deno.rename(join(w.dir, "sub"), join(w.dir, "moved"));
  await waitUntil(
    () => [...w.watcher.shared.keys()].join() === join("moved", "deep", "c.bin"),
    SHOW_MS,
    "the file under its new path only",
  );
  await waitForIds(w, [id], "the moved file shared");

  await Deno.remove(join(w.dir, "moved"), { recursive: true });
  await waitForIds(w, [], "the removed directory's file withdrawn");
  assert.equal(w.watcher.shared.size, 0);
});

Deno.test("watcher: without fs events, the periodic rescan finds additions, changes and removals", async () => {
  await using w = await world({ fsEvents: false, rescanIntervalMs: 200, quietMs: 100 });
  const path = join(w.dir, "r.bin");
  await Deno.writeFile(path, randomBytes(500));
  const first = await idOf(path);
  await waitForIds(w, [first], "the file found by a rescan");
  await Deno.writeFile(path, randomBytes(700));
  const second = await idOf(path);
  await waitForIds(w, [second], "the change found by a rescan");
  await Deno.remove(path);
  await waitForIds(w, [], "the removal found by a rescan");
  assert.deepEqual(w.events.map((e) => e.kind), ["added", "changed", "removed"]);
});

Deno.test("watcher: a file present before the watcher started but not indexed is picked up by the first rescan", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-watch-" });
  try {
    await Deno.writeFile(join(dir, "old.bin"), randomBytes(300));
    const files = await indexDirectory(dir, { chunkSize: CHUNK });
    await Deno.writeFile(join(dir, "late.bin"), randomBytes(400)); // after indexing, before watching
    await using node = PeerNode.start(files);
    await using watcher = watchShared(node, dir, files, { chunkSize: CHUNK, fsEvents: false });
    const late = await idOf(join(dir, "late.bin"));
    await waitUntil(() => node.catalog().some((f) => f.id === late), SHOW_MS, "the late file");
    assert.deepEqual([...watcher.shared.keys()].sort(), ["late.bin", "old.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const older of [false, true]) {
  const tracker = older ? "an older tracker: the name goes with a remove and an add" : "the name goes with dropNames";
  Deno.test(`watcher: copies share one id, listed under each name, which stays served while one copy is left (${tracker})`, async () => {
    await using w = await world({ tracker: true, ...(older ? { trackerFeatures: [] } : {}) });
    // Every ANNOUNCE the tracker takes: a tracker that can drop a name must never be told to remove the file meanwhile.
    const announces: MessageOf<"announce">[] = [];
    const t = w.tracker!.tracker, handle = t.handle.bind(t);
    t.handle = (msg, from) => {
      if (msg.type === "announce") announces.push(msg);
      return handle(msg, from);
    };
    const data = randomBytes(CHUNK + 10);
    await Deno.writeFile(join(w.dir, "one.bin"), data);
    await Deno.writeFile(join(w.dir, "two.bin"), data);
    const id = await idOf(join(w.dir, "one.bin"));
    await waitUntil(() => w.watcher.shared.size === 2, SHOW_MS, "both copies seen");
    /** The names the peer lists, and those the tracker lists, each with its id. */
    const listed = (where: FileSummary[]) => where.map((f) => `${f.name} ${f.id}`).sort();
    assert.deepEqual(listed(w.node.catalog()), [`one.bin ${id}`, `two.bin ${id}`]);
    await waitUntil(() => w.tracker!.tracker.listFiles().length === 2, SHOW_MS, "the tracker lists both names");

    // Remove each copy in turn: the id must stay served (from the other path) while one is left, under its name only.
    for (const [gone, left] of [["one.bin", "two.bin"], ["two.bin", null]]) {
      await Deno.remove(join(w.dir, gone!));
      await waitUntil(() => !w.watcher.shared.has(gone!), SHOW_MS, `${gone} withdrawn`);
      if (left === null) break;
      // Withdrawn from the watcher's list first, then from the peer's and the tracker's.
      const one = [`${left} ${id}`].join();
      await waitUntil(() => listed(w.node.catalog()).join() === one, SHOW_MS, "still shared from the other copy");
      await waitUntil(
        () => listed(w.tracker!.tracker.listFiles()).join() === one,
        SHOW_MS,
        `the tracker lists ${left} only`,
      );
      assert.equal(announces.some((a) => a.remove.includes(id)), older, "the file was taken back to drop a name");
      assert.equal(announces.some((a) => a.dropNames?.length), !older, "dropNames sent");
      await using c = await connect(w.node.address);
      const piece = await c.request({ type: "request", fileId: id, index: 1 }, "piece");
      assert.deepEqual(piece.data, data.subarray(CHUNK), "served from the remaining copy");
    }
    await waitForIds(w, [], "the last copy withdrawn");
    await waitUntil(() => w.tracker!.tracker.listFiles().length === 0, SHOW_MS, "the tracker lists nothing");
  });
}

Deno.test("watcher: unsafe names and links leading outside are reported, not shared; link loops end", async () => {
  const outside = await Deno.makeTempDir({ prefix: "shoal-outside-" });
  try {
    await using w = await world();
    await Deno.writeFile(join(outside, "secret"), randomBytes(100));
    await Deno.symlink(join(outside, "secret"), join(w.dir, "escape"));
    await Deno.writeFile(join(w.dir, "bad\nname"), randomBytes(100));
    await Deno.writeFile(join(w.dir, "\x1b[31mred"), randomBytes(100));
    // Deno takes only UTF-8 names: the shell makes one that is not.
    const made = await new Deno.Command("sh", { args: ["-c", `touch "$(printf 'not\\377utf8')"`], cwd: w.dir })
      .output();
    assert.ok(made.success);
    await Deno.writeFile(join(w.dir, "ok.bin"), randomBytes(100));
    await Deno.symlink(join(w.dir, "ok.bin"), join(w.dir, "alias"));
    await Deno.symlink(w.dir, join(w.dir, "loop")); // walked once, not forever
    const ok = await idOf(join(w.dir, "ok.bin"));
    await w.watcher.rescan(); // Deno.watchFs reports no event when a link is made: the rescan finds links
    await waitUntil(() => w.watcher.shared.size === 2, SHOW_MS, "ok.bin and the link inside");
    assert.deepEqual(w.ids(), [ok]);
    assert.deepEqual([...w.watcher.shared.keys()].sort(), ["alias", "ok.bin"]);
    const skipped = w.events.flatMap((e) => e.kind === "skipped" ? [`${e.relPath}: ${e.reason}`] : []).sort();
    assert.deepEqual(skipped, [
      "\x1b[31mred: name contains a control character",
      "bad\nname: name contains a control character",
      "escape: link leads outside the shared directory",
      "not\uFFFDutf8: name is not valid UTF-8",
    ]);
    // Printed with its control characters escaped: a name must not recolour or rewrite the terminal.
    const printed = w.events.flatMap((e) => e.kind === "skipped" ? [describeWatchEvent(e)] : []).sort();
    assert.deepEqual(printed.slice(0, 2), [
      "skipped \\x1b[31mred: name contains a control character",
      "skipped bad\\nname: name contains a control character",
    ]);
    await w.watcher.rescan();
    assert.equal(w.events.filter((e) => e.kind === "skipped").length, 4, "a rescan does not repeat what was reported");
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("watcher: more new files than the pending cap are all shared in the end", async () => {
  await using w = await world({ maxPending: 3 });
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const path = join(w.dir, `f${i}.bin`);
    await Deno.writeFile(path, randomBytes(200 + i));
    ids.push(await idOf(path));
  }
  await waitForIds(w, ids, "all twelve files");
});

Deno.test("watcher: close is idempotent and follows an abort signal", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-watch-" });
  try {
    await using node = PeerNode.start([]);
    const ac = new AbortController();
    const watcher = watchShared(node, dir, [], { signal: ac.signal });
    ac.abort();
    const closing = watcher.close();
    assert.equal(watcher.close(), closing, "a second close returns the same promise");
    await closing;
    await watcher[Symbol.asyncDispose]();

    const aborted = AbortSignal.abort();
    await using early = watchShared(node, dir, [], { signal: aborted }); // closed before it started
    await early.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("peer: a shared file rewritten in place or truncated is refused, not served with wrong bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-watch-" });
  try {
    const path = join(dir, "f.bin");
    await Deno.writeFile(path, randomBytes(CHUNK * 3));
    const past = new Date(Date.now() - 60_000);
    await Deno.utime(path, past, past); // so that the rewrite below surely moves the mtime
    const files = await indexDirectory(dir, { chunkSize: CHUNK });
    const id = files[0]!.id;
    await using node = PeerNode.start(files);
    await using c = await connect(node.address);
    assert.equal((await c.request({ type: "request", fileId: id, index: 0 }, "piece")).index, 0);

    {
      using f = await Deno.open(path, { write: true }); // same size, other bytes
      await f.write(randomBytes(CHUNK));
    }
    await c.send({ type: "request", fileId: id, index: 1 });
    assert.deepEqual(await c.receive(), { type: "reject", fileId: id, index: 1, reason: "the file changed on disk" });

    await Deno.truncate(path, CHUNK);
    await c.send({ type: "request", fileId: id, index: 0 });
    assert.equal((await c.receive()).type, "reject");

    // Changed after it was hashed, before anything was read from it: no descriptor was open to compare against.
    await Deno.writeFile(path, randomBytes(CHUNK * 3));
    await Deno.utime(path, past, past);
    const [again] = await indexDirectory(dir, { chunkSize: CHUNK });
    await using fresh = PeerNode.start([again!]);
    {
      using f = await Deno.open(path, { write: true });
      await f.write(randomBytes(CHUNK));
    }
    await using d = await connect(fresh.address);
    await d.send({ type: "request", fileId: again!.id, index: 0 });
    assert.deepEqual(await d.receive(), {
      type: "reject",
      fileId: again!.id,
      index: 0,
      reason: "the file changed on disk",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("indexer: a download in progress in the shared folder (.part with its .part.json, or locked) is not shared", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-part-" });
  try {
    await Deno.writeTextFile(join(dir, "movie.bin.part"), "half");
    await Deno.writeTextFile(join(dir, "movie.bin.part.json"), "{}");
    await Deno.writeTextFile(join(dir, "notes.part"), "a file that happens to end in .part");
    // Before its first chunk a download has no sidecar yet, but it holds its .part's lock.
    await Deno.writeFile(join(dir, "fresh.bin.part"), new Uint8Array(2_000_000));
    using fresh = await Deno.open(join(dir, "fresh.bin.part"), { read: true, write: true });
    assert.equal(await fresh.tryLock(true), true);
    const names = (await indexDirectory(dir)).map((f) => f.relPath).sort();
    assert.deepEqual(names, ["notes.part"]);
    await fresh.unlock();
    assert.deepEqual((await indexDirectory(dir)).map((f) => f.relPath).sort(), ["fresh.bin.part", "notes.part"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
