/**
 * The tracker dashboard without a browser: Tracker.snapshot() on a fake
 * clock (rates, ages, totals, chunk strips with partial sources, binning),
 * the Prometheus text, the page's escaping of names from the network, the
 * HTTP routes on port 0 (incl. the first server-sent event, 404 and 405),
 * and a peer's heartbeats carrying its counters and bitfields over real
 * sockets. The browser test is tests/e2e/dashboard_browser_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Bitfield } from "../lib/bitfield.ts";
import { Dashboard, SNAPSHOT_REUSE_MS } from "../lib/dashboard.ts";
import { delay } from "../lib/async.ts";
import { dashboardPage, escapeHtml, renderDashboard } from "../lib/dashboard_page.ts";
import type { SharedFile } from "../lib/indexer.ts";
import { fileIdOf, type Manifest } from "../lib/manifest.ts";
import type { Message } from "../lib/messages.ts";
import { escapeLabelValue, METRICS_CONTENT_TYPE, renderMetrics } from "../lib/metrics.ts";
import { PeerNode } from "../lib/peer.ts";
import {
  binStrip,
  MAX_STRIP_BINS,
  RATE_WINDOW_MS,
  Tracker,
  TrackerServer,
  type TrackerSnapshot,
} from "../lib/tracker.ts";

const CHUNK = 16384;

/** A manifest of `chunks` full chunks with made-up hashes (from the name: a file id depends on content only). */
function manifestOf(name: string, chunks: number): Manifest {
  return {
    name,
    size: chunks * CHUNK,
    chunkSize: CHUNK,
    chunks: Array.from({ length: chunks }, (_, i) => createHash("sha256").update(`${name}/${i}`).digest("hex")),
  };
}

/** A bitfield of `size` chunks with `indexes` set. */
function bitsOf(size: number, indexes: number[]): Uint8Array<ArrayBuffer> {
  const b = new Bitfield(size);
  for (const i of indexes) b.set(i);
  return b.bytes;
}

/** A tracker on a clock the test moves, with helpers that speak to it as peers would. */
function setup() {
  let now = 1_700_000_000_000;
  const tracker = new Tracker({ heartbeatMs: 1000, expiryMs: 3000, now: () => now });
  const ask = (msg: Message) => tracker.handle(msg, "10.0.0.1");
  const register = (port: number): string => {
    const r = ask({ type: "register", port });
    assert.ok(r.type === "registered");
    return r.peerId;
  };
  const announce = (peerId: string, add: Manifest[], partial: string[] = []) =>
    ask({ type: "announce", peerId, add, partial, remove: [] });
  return { tracker, ask, register, announce, advance: (ms: number) => (now += ms), now: () => now };
}

// ------------------------------------------------------------------ snapshot

Deno.test("snapshot: peers with their files, last-heard ages and rates from successive counters", () => {
  const { tracker, ask, register, announce, advance } = setup();
  const a = register(9001), b = register(9002), old = register(9003);
  const movie = manifestOf("movie.mkv", 4), notes = manifestOf("notes.txt", 1);
  announce(a, [movie, notes]);
  announce(b, [], []);
  announce(b, [], [fileIdOf(movie)]);
  ask({ type: "heartbeat", peerId: a, up: 1_000, down: 0 });
  ask({ type: "heartbeat", peerId: b, up: 0, down: 500 });
  ask({ type: "heartbeat", peerId: old }); // an older peer: no counters
  advance(2000);
  ask({ type: "heartbeat", peerId: a, up: 401_000, down: 0 }); // 400 000 bytes in 2 s
  advance(500);
  ask({ type: "heartbeat", peerId: b, up: 0, down: 300_500 }); // 300 000 bytes in 2.5 s
  advance(250);

  const s = tracker.snapshot();
  assert.deepEqual(s.peers.map((p) => p.address), ["10.0.0.1:9001", "10.0.0.1:9002", "10.0.0.1:9003"]);
  const [pa, pb, po] = s.peers;
  assert.deepEqual(
    { complete: pa!.complete, partial: pa!.partial, ago: pa!.lastHeardMsAgo, up: pa!.upBytesPerSecond },
    { complete: 2, partial: 0, ago: 750, up: 200_000 },
  );
  assert.deepEqual(
    { complete: pb!.complete, partial: pb!.partial, ago: pb!.lastHeardMsAgo, down: pb!.downBytesPerSecond },
    { complete: 0, partial: 1, ago: 250, down: 120_000 },
  );
  assert.equal(pa!.uploadedBytes, 401_000);
  assert.deepEqual([po!.uploadedBytes, po!.downloadedBytes, po!.upBytesPerSecond, po!.lastHeardMsAgo], [
    null,
    null,
    0,
    2750,
  ]);
  assert.deepEqual(s.totals, {
    peers: 3,
    files: 2,
    bytesShared: movie.size + notes.size,
    completeSources: 2,
    partialSources: 1,
    extraNames: 0,
    upBytesPerSecond: 200_000,
    downBytesPerSecond: 120_000,
  });
  assert.deepEqual(s.files.map((f) => [f.name, f.complete, f.partial, f.chunks, f.size]), [
    ["movie.mkv", 1, 1, 4, 4 * CHUNK],
    ["notes.txt", 1, 0, 1, CHUNK],
  ]);
  assert.deepEqual(s.truncated, { peers: false, files: false });
  assert.equal(s.at, tracker.snapshot().at, "a snapshot reads the clock, it does not move it");

  // Past expiry a silent peer is gone from the snapshot, and its partial source with it.
  ask({ type: "heartbeat", peerId: a, up: 401_000, down: 0 });
  advance(2000);
  ask({ type: "heartbeat", peerId: a, up: 401_000, down: 0 });
  advance(1000); // b last heard 3250 ms ago, past the 3000 ms expiry
  const later = tracker.snapshot();
  assert.deepEqual(later.peers.map((p) => p.address), ["10.0.0.1:9001"]);
  assert.equal(later.peers[0]!.upBytesPerSecond, 0, "no bytes since the last heartbeat");
  assert.deepEqual(later.files.map((f) => [f.complete, f.partial]), [[1, 0], [1, 0]]);
});

Deno.test("snapshot: rates are measured over RATE_WINDOW_MS or more; a counter that goes down starts over", () => {
  const { tracker, ask, register, advance } = setup();
  const a = register(9001);
  const upRate = () => tracker.snapshot().peers[0]!.upBytesPerSecond;
  ask({ type: "heartbeat", peerId: a, up: 0 });
  for (const up of [65536, 65536, 65536, 131072]) { // a whole chunk now and then, heartbeats 500 ms apart
    advance(RATE_WINDOW_MS / 4);
    ask({ type: "heartbeat", peerId: a, up });
  }
  assert.equal(upRate(), 65536, "131072 bytes over 2 s, not the zeros and bursts of single intervals");
  advance(RATE_WINDOW_MS / 4);
  ask({ type: "heartbeat", peerId: a, up: 200_000 });
  assert.equal(upRate(), 65536, "the window is still open: the last rate stands");
  advance(RATE_WINDOW_MS);
  ask({ type: "heartbeat", peerId: a, up: 10 }); // the peer's counter restarted
  assert.equal(upRate(), 0);
  advance(RATE_WINDOW_MS);
  ask({ type: "heartbeat", peerId: a, up: 4010 });
  assert.equal(upRate(), 2000);
});

Deno.test("snapshot: the chunk strip counts complete sources and the chunks each partial source reported", () => {
  const { tracker, ask, register, announce } = setup();
  const seed = register(9001), half = register(9002), quiet = register(9003), other = register(9004);
  const m = manifestOf("album.zip", 10), id = fileIdOf(m);
  const elsewhere = manifestOf("other.bin", 10);
  announce(seed, [m, elsewhere]);
  announce(half, [], [id]);
  announce(quiet, [], [id]); // never sends a bitfield: counted as a partial source, not in the strip
  announce(other, [], [fileIdOf(elsewhere)]);
  ask({ type: "heartbeat", peerId: half, partials: [{ fileId: id, bits: bitsOf(10, [0, 1, 9]) }] });
  // Ignored: a file this peer did not announce as partial, and a bitfield of the wrong length.
  ask({ type: "heartbeat", peerId: other, partials: [{ fileId: id, bits: bitsOf(10, [5]) }] });
  ask({ type: "heartbeat", peerId: quiet, partials: [{ fileId: id, bits: bitsOf(24, [5]) }] });

  const f = tracker.snapshot().files.find((x) => x.id === id)!;
  assert.deepEqual([f.complete, f.partial, f.partialUnmapped], [1, 2, 1]);
  assert.deepEqual(f.strip, { counts: [2, 2, 1, 1, 1, 1, 1, 1, 1, 2], binning: "chunk" });
  assert.equal(f.minChunkSources, 1);

  // A later bitfield replaces the earlier one; becoming a complete source forgets it.
  ask({ type: "heartbeat", peerId: half, partials: [{ fileId: id, bits: bitsOf(10, [0, 1, 2, 9]) }] });
  assert.deepEqual(tracker.snapshot().files.find((x) => x.id === id)!.strip.counts, [2, 2, 2, 1, 1, 1, 1, 1, 1, 2]);
  announce(half, [m]);
  const done = tracker.snapshot().files.find((x) => x.id === id)!;
  assert.deepEqual([done.complete, done.partial, done.partialUnmapped], [2, 1, 1]);
  assert.deepEqual(done.strip.counts, Array(10).fill(2));
  assert.equal(done.minChunkSources, 2);
});

Deno.test("snapshot: a file with more chunks than MAX_STRIP_BINS is bucketed, each bin its fewest sources", () => {
  const { tracker, ask, register, announce } = setup();
  const n = 1000;
  const seed = register(9001), part = register(9002);
  const m = manifestOf("big.iso", n), id = fileIdOf(m);
  announce(seed, [m]);
  announce(part, [], [id]);
  const held = Array.from({ length: n }, (_, i) => i).filter((i) => i !== 777);
  ask({ type: "heartbeat", peerId: part, partials: [{ fileId: id, bits: bitsOf(n, held) }] });
  const f = tracker.snapshot().files[0]!;
  assert.equal(f.strip.binning, "min-of-bin");
  assert.equal(f.strip.counts.length, MAX_STRIP_BINS);
  // Bin b holds chunks floor(b·n/bins) to floor((b+1)·n/bins) − 1: chunk 777 is in bin 398 (chunks 777..778).
  const bin777 = 398;
  assert.ok(Math.floor(bin777 * n / MAX_STRIP_BINS) <= 777 && 777 < Math.floor((bin777 + 1) * n / MAX_STRIP_BINS));
  assert.deepEqual(f.strip.counts.map((c, b) => [b, c]).filter(([, c]) => c !== 2), [[bin777, 1]]);
  assert.equal(f.minChunkSources, 1);
});

Deno.test("binStrip: exact up to the bin limit; beyond it every chunk lands in exactly one bin", () => {
  assert.deepEqual(binStrip([3, 0, 1], 4), { counts: [3, 0, 1], binning: "chunk" });
  assert.deepEqual(binStrip([3, 0, 1, 5], 4), { counts: [3, 0, 1, 5], binning: "chunk" });
  assert.deepEqual(binStrip([3, 0, 1, 5, 2], 4), { counts: [3, 0, 1, 2], binning: "min-of-bin" });
  const counts = Array.from({ length: 1001 }, (_, i) => i);
  const strip = binStrip(counts, 7);
  // Bin minimums are each bin's first chunk; the bins cover 0..1000 without gaps.
  assert.deepEqual(strip.counts, [0, 143, 286, 429, 572, 715, 858]);
});

// ------------------------------------------------------------------ metrics

/** The sample lines of one metric family, as `labels value` text. */
function samplesOf(text: string, name: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`)).map((l) =>
    l.slice(name.length)
  );
}

Deno.test("metrics: the Prometheus text format, with HELP and TYPE for every family and escaped labels", () => {
  const { tracker, ask, register, announce, advance } = setup();
  const a = register(9001), b = register(9002);
  const hostile = manifestOf('say "hi" \\ bye', 2);
  announce(a, [hostile]);
  announce(b, [], [fileIdOf(hostile)]);
  ask({ type: "heartbeat", peerId: a, up: 0, down: 0 });
  advance(RATE_WINDOW_MS);
  ask({ type: "heartbeat", peerId: a, up: 2 * 65536, down: 0 });
  const text = renderMetrics(tracker.snapshot());
  assert.equal(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
  assert.ok(text.endsWith("\n"));
  const lines = text.trimEnd().split("\n");
  const declared = new Map<string, string[]>();
  for (const line of lines) {
    const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (m) declared.set(m[2]!, [...(declared.get(m[2]!) ?? []), m[1]!]);
    else {
      const s = /^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+)$/.exec(line);
      assert.ok(s, `a valid sample line: ${line}`);
      assert.deepEqual(declared.get(s[1]!), ["HELP", "TYPE"], `${s[1]} has HELP then TYPE before its samples`);
    }
  }
  assert.deepEqual(samplesOf(text, "shoal_peers"), [" 2"]);
  assert.deepEqual(samplesOf(text, "shoal_files"), [" 1"]);
  assert.deepEqual(samplesOf(text, "shoal_bytes_shared"), [` ${2 * CHUNK}`]);
  assert.deepEqual(samplesOf(text, "shoal_sources"), ['{kind="complete"} 1', '{kind="partial"} 1']);
  assert.deepEqual(samplesOf(text, "shoal_upload_bytes_per_second"), [" 65536"]);
  assert.deepEqual(samplesOf(text, "shoal_peer_upload_bytes_per_second"), [
    '{peer="10.0.0.1:9001"} 65536',
    '{peer="10.0.0.1:9002"} 0',
  ]);
  assert.deepEqual(samplesOf(text, "shoal_peer_uploaded_bytes_total"), ['{peer="10.0.0.1:9001"} 131072']);
  const id = fileIdOf(hostile);
  assert.deepEqual(samplesOf(text, "shoal_file_sources"), [
    `{file="say \\"hi\\" \\\\ bye",id="${id}",kind="complete"} 1`,
    `{file="say \\"hi\\" \\\\ bye",id="${id}",kind="partial"} 1`,
  ]);
  assert.ok(text.includes("# TYPE shoal_peer_uploaded_bytes_total counter"));
  assert.ok(text.includes("# TYPE shoal_file_min_chunk_sources gauge"));
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

// ------------------------------------------------------------------ page

const HOSTILE = `<img src=x onerror="alert(1)">'&</script><script>alert(2)</script>`;

Deno.test("page: a hostile file name is shown as text, never as markup", () => {
  const { tracker, register, announce } = setup();
  const a = register(9001);
  announce(a, [manifestOf(HOSTILE, 1)]);
  const html = dashboardPage(tracker.snapshot(), "bm9uY2U=");
  assert.ok(!html.includes("<img"), "no img element");
  assert.ok(!html.includes("alert(2)</script>"), "no script element from the name");
  assert.ok(html.includes(escapeHtml(HOSTILE)));
  assert.equal(
    escapeHtml(HOSTILE),
    "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;&amp;&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;",
  );
  // Exactly one script element: the page's own, with the nonce, and its text parses as JavaScript.
  const scripts = [...html.matchAll(/<script nonce="bm9uY2U=">([\s\S]*?)<\/script>/g)];
  assert.equal(scripts.length, 1);
  assert.equal(html.split("<script").length, 2);
  new Function(scripts[0]![1]!); // throws SyntaxError if the functions sent as text do not form a program
});

Deno.test("page: a name's bidirectional override and control characters are shown as escapes, as on the command line", () => {
  const { tracker, register, announce } = setup();
  const a = register(9001);
  const spoof = "photo\u202egpj.exe", beep = "bell\x07.txt";
  announce(a, [manifestOf(spoof, 1), manifestOf(beep, 2)]);
  const html = renderDashboard(tracker.snapshot());
  assert.ok(html.includes(`data-testid="file-name">photo\\u202egpj.exe<`), "the override as text");
  assert.ok(html.includes(`data-testid="file-name">bell\\x07.txt<`));
  assert.ok(!html.includes("\u202e") && !html.includes("\x07"), "neither character itself");
  // The browser redraws with the same functions, sent as text (all but the last line, which starts the live updates).
  const script = /<script nonce="bm9uY2U=">([\s\S]*?)<\/script>/.exec(
    dashboardPage(tracker.snapshot(), "bm9uY2U="),
  )![1]!;
  const functions = script.slice(0, script.trimEnd().lastIndexOf("\n("));
  const sent = new Function(`${functions}\nreturn showName;`)() as (name: string) => string;
  assert.equal(sent(spoof), "photo\\u202egpj.exe");
});

Deno.test("snapshot and page: one content under several names is one row, named as its live sources name it", () => {
  const { tracker, ask, register, announce } = setup();
  const a = register(9001), b = register(9002);
  const m = manifestOf("a.txt", 2), id = fileIdOf(m);
  announce(a, [m, { ...m, name: "b.txt" }]);
  announce(b, [{ ...m, name: HOSTILE }]);
  const s = tracker.snapshot();
  assert.deepEqual(s.files.map((f) => [f.id, f.name, f.otherNames, f.complete]), [[
    id,
    "a.txt",
    ["b.txt", HOSTILE],
    2,
  ]]);
  assert.deepEqual([s.totals.files, s.totals.extraNames], [1, 1]);
  const html = renderDashboard(s);
  assert.ok(html.includes(`data-testid="file-other-names">also b.txt, ${escapeHtml(HOSTILE)}<`));
  assert.ok(!html.includes("<img"), "other names are text too");

  // The first announcer leaves: the row takes the name the source left gives it, and has no other.
  ask({ type: "announce", peerId: a, add: [], partial: [], remove: [id] });
  const later = tracker.snapshot();
  assert.deepEqual(later.files.map((f) => [f.name, f.otherNames]), [[HOSTILE, []]]);
  assert.ok(!renderDashboard(later).includes("file-other-names"));
});

Deno.test("page: numbers carry raw values and stable test ids", () => {
  const { tracker, register, announce } = setup();
  const a = register(9001);
  announce(a, [manifestOf("song.ogg", 3)]);
  const s = tracker.snapshot();
  const body = renderDashboard(s);
  const f = s.files[0]!;
  assert.ok(body.includes(`data-testid="total-peers" data-value="1">1<`));
  assert.ok(body.includes(`data-testid="total-bytes-shared" data-value="${3 * CHUNK}">48.0 KiB<`));
  assert.ok(body.includes(`<tr data-testid="file-row" data-file-id="${f.id}">`));
  assert.ok(body.includes(`data-testid="file-complete" data-value="1">1<`));
  assert.ok(body.includes(`data-testid="file-strip" data-binning="chunk" data-counts="1,1,1"`));
  assert.ok(body.includes(`data-testid="peer-address">10.0.0.1:9001<`));
});

// ------------------------------------------------------------------ HTTP

/** Races `p` against a deadline that is always cleared. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads server-sent events off a response body, one `state` snapshot at a time. */
function eventReader(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return {
    async next(): Promise<TrackerSnapshot> {
      for (;;) {
        const end = buffered.indexOf("\n\n");
        if (end >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = block.split("\n").find((l) => l.startsWith("data: "));
          if (block.includes("event: state") && data) return JSON.parse(data.slice(6));
          continue; // the `retry:` preamble
        }
        const { value, done } = await within(reader.read(), 5_000, "an event");
        if (done) throw new Error("the event stream ended");
        buffered += value;
      }
    },
    /** True when the stream ends (the server closed it). */
    async ended(): Promise<boolean> {
      for (;;) {
        const { done } = await within(reader.read(), 5_000, "the end of the stream");
        if (done) return true;
      }
    },
    cancel: () => reader.cancel(),
  };
}

Deno.test("http: page, JSON, metrics, events on port 0; 404 and 405; HEAD without a body", async () => {
  const { tracker, register, announce } = setup();
  const a = register(9001);
  announce(a, [manifestOf(HOSTILE, 2)]);
  await using dash = Dashboard.start(tracker, { port: 0, intervalMs: 50 });
  assert.match(dash.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const get = (path: string, init?: RequestInit) => fetch(new URL(path, dash.url), init);

  const page = await get("/");
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = page.headers.get("content-security-policy") ?? "";
  const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
  assert.ok(nonce && csp.includes("default-src 'none'"), csp);
  const html = await page.text();
  assert.ok(html.includes(`<script nonce="${nonce}">`), "the page's script carries the policy's nonce");
  assert.ok(!html.includes("<img"));

  const state = await get("/api/state");
  assert.equal(state.headers.get("content-type"), "application/json; charset=utf-8");
  assert.deepEqual(await state.json(), tracker.snapshot());

  const metrics = await get("/metrics");
  assert.equal(metrics.headers.get("content-type"), METRICS_CONTENT_TYPE);
  assert.ok((await metrics.text()).includes("\nshoal_peers 1\n"));

  const missing = await get("/api/nope");
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const post = await get("/api/state", { method: "POST", body: "{}" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const head = await get("/metrics", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");

  // Events: a snapshot at once, then one per interval that follows the tracker.
  const res = await get("/api/events");
  assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const events = eventReader(res);
  try {
    const first = await events.next();
    assert.deepEqual(first, tracker.snapshot());
    register(9002);
    let seen = first;
    for (let i = 0; i < 20 && seen.totals.peers !== 2; i++) seen = await events.next();
    assert.equal(seen.totals.peers, 2, "a later event shows the new peer");
    assert.equal(dash.streams, 1);
  } finally {
    await events.cancel();
  }
});

Deno.test("http: event streams are capped, and closing the dashboard ends the open ones", async () => {
  const { tracker } = setup();
  const dash = Dashboard.start(tracker, { port: 0, intervalMs: 50, maxStreams: 1 });
  try {
    const res = await fetch(new URL("/api/events", dash.url));
    const events = eventReader(res);
    await events.next();
    const refused = await fetch(new URL("/api/events", dash.url));
    assert.equal(refused.status, 503, "the page falls back to polling");
    await refused.body?.cancel();
    const closing = dash.close();
    assert.ok(await events.ended(), "the open stream ends");
    await within(closing, 5_000, "the dashboard to close");
    await dash.close(); // twice is fine
  } finally {
    await dash.close();
  }
});

// ------------------------------------------------------------------ peer to tracker, real sockets

Deno.test("heartbeats carry a peer's transfer counters and the chunks of its partial files to the tracker", async () => {
  await using server = TrackerServer.start({ port: 0, heartbeatMs: 50, expiryMs: 5_000 });
  const tracker = { host: "127.0.0.1", port: server.address.port };
  const m = manifestOf("shared.bin", 4), id = fileIdOf(m);
  const file: SharedFile = {
    id,
    path: "/nonexistent/shared.bin", // never read: nobody requests a chunk here
    relPath: "shared.bin",
    manifest: m,
    size: m.size,
    mtimeMs: 0,
  };
  await using seed = PeerNode.start([file], { port: 0, tracker });
  await using leech = PeerNode.start([], { port: 0, tracker });
  const deadline = Date.now() + 10_000;
  const until = async (what: string, ok: () => boolean) => {
    while (!ok()) {
      if (Date.now() > deadline) {
        throw new Error(`Timed out waiting for ${what}: ${JSON.stringify(server.tracker.snapshot())}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until("the seed's file", () => server.tracker.snapshot().files.length === 1);
  await leech.sharePartial(id, "/nonexistent/shared.bin.part", m, new Bitfield(4, bitsOf(4, [0, 2])));
  leech.gained(id, 3, CHUNK);
  assert.deepEqual(leech.heartbeatStats(), {
    up: 0,
    down: CHUNK,
    partials: [{ fileId: id, bits: bitsOf(4, [0, 2, 3]) }],
  });
  await until("the leech's bitfield and counters", () => {
    const s = server.tracker.snapshot();
    const f = s.files[0]!;
    const leechView = s.peers.find((p) => p.address.endsWith(`:${leech.address.port}`));
    return f.partial === 1 && f.strip.counts.join() === "2,1,2,2" && leechView?.downloadedBytes === CHUNK;
  });
  assert.deepEqual(seed.heartbeatStats(), { up: 0, down: 0 }, "a complete-only peer sends no partials key");
});

Deno.test("http: many requests at once share one snapshot: its cost on the tracker does not grow with them", async () => {
  const { tracker } = setup();
  let taken = 0;
  const source = {
    snapshot: () => {
      taken++;
      return tracker.snapshot();
    },
  };
  await using dash = Dashboard.start(source, { port: 0, intervalMs: 60_000 });
  const answers = await Promise.all(
    Array.from({ length: 20 }, async () => (await fetch(new URL("/api/state", dash.url))).json()),
  );
  assert.equal(answers.length, 20);
  assert.ok(taken <= 2, `${taken} snapshots for 20 requests`);
  await delay(SNAPSHOT_REUSE_MS + 50);
  await (await fetch(new URL("/metrics", dash.url))).text();
  assert.ok(taken >= 2, "a later request takes a fresh one");
});
