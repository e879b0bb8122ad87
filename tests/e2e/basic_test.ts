/**
 * End-to-end, issue 2: a tracker, peers and the client as real processes.
 * Listing, search, peer lookup and downloads; one-line errors with exit
 * codes; expiry of a killed peer; garbage on the wire; direct mode.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chooseHasher } from "../../lib/chunk_hasher.ts";
import {
  E2E,
  ERROR_TYPE,
  errorOf,
  exists,
  expectOneErrorLine,
  type FileEntry,
  frame,
  freePort,
  type GetSummary,
  HELLO_TYPE,
  helloFrame,
  MiB,
  parseFrames,
  type PeerEntry,
  rawExchange,
  type RawOutcome,
  sha256File,
  waitUntil,
  writeRandomFile,
} from "./harness.ts";

/** Exit codes documented in lib/errors.ts (ExitCode); repeated here as the contract under test. */
const EXIT = { failure: 1, usage: 2, notFound: 3, unreachable: 4, exists: 7 } as const;

/** The last `n` non-empty lines of some output. */
function lastLines(text: string, n: number): string {
  return text.split("\n").filter((l) => l.trim() !== "").slice(-n).join("\n");
}

Deno.test("e2e: two peers, one tracker: files, search, peers, get by id and by name", async () => {
  await using env = new E2E();
  const dirA = await env.tempDir(), dirB = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${dirA}/big.bin`, 32 * MiB);
  await Deno.copyFile(`${dirA}/big.bin`, `${dirB}/big.bin`);
  await Deno.writeFile(`${dirA}/empty.bin`, new Uint8Array());
  const bigSha = await sha256File(`${dirA}/big.bin`);

  const tracker = await env.tracker();
  const [a, b] = await Promise.all([
    env.peer({ shared: dirA, tracker: tracker.addr }),
    env.peer({ shared: dirB, tracker: tracker.addr }),
  ]);
  const src = ["--tracker", tracker.addr];

  // files: both files, with the right number of complete sources
  const files = (await env.clientOk(src, "files", "--json")).json<FileEntry[]>();
  assert.deepEqual(files.map((f) => f.name).sort(), ["big.bin", "empty.bin"]);
  const big = files.find((f) => f.name === "big.bin")!;
  const empty = files.find((f) => f.name === "empty.bin")!;
  assert.equal(big.size, 32 * MiB);
  assert.equal(big.peers, 2, "big.bin is shared by both peers");
  assert.equal(big.partial, 0);
  assert.equal(empty.size, 0);
  assert.equal(empty.peers, 1, "empty.bin is shared by peer A only");
  assert.match(big.id, /^[0-9a-f]{64}$/);
  assert.notEqual(big.id, empty.id);

  // search: case-insensitive substring of the name
  const byName = async (text: string) =>
    (await env.clientOk(src, "search", text, "--json")).json<FileEntry[]>().map((f) => f.name);
  assert.deepEqual(await byName("ig.b"), ["big.bin"]);
  assert.deepEqual(await byName("EMPT"), ["empty.bin"]);
  assert.deepEqual((await byName(".bin")).sort(), ["big.bin", "empty.bin"]);
  assert.deepEqual(await byName("no-such-thing"), []);
  assert.deepEqual(await byName(big.id.slice(0, 8)), ["big.bin"], "search by the start of an id");

  // peers: both peers for the big file (by id), peer A only for the empty one (by name)
  const bigPeers = (await env.clientOk(src, "peers", big.id, "--json")).json<PeerEntry[]>();
  assert.deepEqual(bigPeers.map((p) => p.port).sort(), [a.port, b.port].sort());
  assert.ok(bigPeers.every((p) => p.complete), "both peers hold the whole file");
  const emptyPeers = (await env.clientOk(src, "peers", "empty.bin", "--json")).json<PeerEntry[]>();
  assert.deepEqual(emptyPeers.map((p) => p.port), [a.port]);

  // get the big file by id (JSON summary) and by name (human output)
  const s = (await env.clientOk(src, "get", big.id, "-o", `${out}/big-by-id`, "--json")).json<GetSummary>();
  assert.equal(s.bytes, 32 * MiB);
  assert.equal(s.bytesFetched, 32 * MiB);
  assert.equal(s.chunksReused, 0);
  assert.equal(s.chunksFetched, big.size / big.chunkSize);
  assert.equal(s.chunksWrittenDirect, s.chunksFetched, "1 MiB chunks go around the page cache (ext4, tmpfs)");
  // hashed as lib/chunk_hasher.ts chooses for this CPU; a bundle has no native library beside it
  const hasher = chooseHasher(undefined, undefined, env.entries.kind === "source" ? undefined : () => false);
  assert.equal(s.hasher, hasher);
  if (hasher !== "node") assert.ok(s.chunksHashedInLanes > 0, `${s.chunksHashedInLanes} chunks hashed together`);
  assert.equal(Object.values(s.bytesPerPeer).reduce((x, y) => x + y, 0), 32 * MiB);
  assert.equal(await sha256File(`${out}/big-by-id`), bigSha);
  assert.equal(await exists(`${out}/big-by-id.part`), false, "no .part left behind");
  assert.equal(await exists(`${out}/big-by-id.part.json`), false, "no sidecar left behind");

  const cached = await env.clientOk(src, "get", big.id, "-o", `${out}/big-cached`, "--no-direct-io", "--json");
  assert.equal(cached.json<GetSummary>().chunksWrittenDirect, 0);
  assert.equal(await sha256File(`${out}/big-cached`), bigSha);

  // by the start of its id, into a directory: saved there under its own name
  await Deno.mkdir(`${out}/into`);
  const short = await env.clientOk(src, "get", big.id.slice(0, 10), "-o", `${out}/into`, "--json");
  assert.equal(short.json<GetSummary>().path, `${out}/into/big.bin`);
  assert.equal(await sha256File(`${out}/into/big.bin`), bigSha);

  const human = await env.clientOk(src, "get", "big.bin", "-o", `${out}/big-by-name`);
  assert.match(human.stdout, /^saved .*big-by-name \(32\.0 MiB\) in [\d.]+ s at [\d.]+ [KMG]iB\/s$/m);
  assert.equal(await sha256File(`${out}/big-by-name`), bigSha);

  // the zero-byte file, by name and by id
  await env.clientOk(src, "get", "empty.bin", "-o", `${out}/empty-by-name`);
  assert.equal((await Deno.stat(`${out}/empty-by-name`)).size, 0);
  const e = (await env.clientOk(src, "get", empty.id, "-o", `${out}/empty-by-id`, "--json")).json<GetSummary>();
  assert.equal(e.bytes, 0);
  assert.equal((await Deno.stat(`${out}/empty-by-id`)).size, 0);
});

Deno.test("e2e: errors are one line with the documented exit code", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${dir}/small.bin`, 100 * 1024);
  // The peer is killed at the end and the file still looked up by name: its listing must outlast two client runs (the
  // harness's 1 s expiry did not on a loaded machine).
  const tracker = await env.tracker(200, 30_000);
  const peer = await env.peer({ shared: dir, tracker: tracker.addr });
  const src = ["--tracker", tracker.addr];

  // an existing output is kept without --force (exit 7), replaced with it
  const target = `${out}/small.bin`;
  await Deno.writeTextFile(target, "keep me");
  const refused = await env.client(src, "get", "small.bin", "-o", target, "--quiet");
  assert.equal(refused.code, EXIT.exists, refused.stderr);
  assert.match(expectOneErrorLine(refused.stderr), /already exists/);
  // without --quiet, notes may come first, but the error is still one line, last, without a trace
  const noisy = await env.client(src, "get", "small.bin", "-o", target);
  assert.equal(noisy.code, EXIT.exists, noisy.stderr);
  assert.match(expectOneErrorLine(lastLines(noisy.stderr, 1)), /already exists/);
  assert.equal(noisy.stderr.split("\n").filter((l) => l.startsWith("error:")).length, 1);
  assert.doesNotMatch(noisy.stderr, /^\s+at\s/m);
  assert.equal(await Deno.readTextFile(target), "keep me", "the existing file is untouched");
  await env.clientOk(src, "get", "small.bin", "-o", target, "--force");
  assert.equal(await sha256File(target), await sha256File(`${dir}/small.bin`));

  // an unknown id or name: exit 3
  const unknownId = "0123456789abcdef".repeat(4);
  for (
    const args of [
      ["get", unknownId, "-o", `${out}/x`],
      ["peers", unknownId],
      ["get", "no-such.bin", "-o", `${out}/y`],
      ["get", unknownId.slice(0, 12), "-o", `${out}/w`],
    ]
  ) {
    const r = await env.client(src, ...args);
    assert.equal(r.code, EXIT.notFound, `${args.join(" ")}: ${r.stderr}`);
    expectOneErrorLine(r.stderr);
  }
  assert.match(
    (await env.client(src, "get", "0123456789ab")).stderr,
    /No file named "0123456789ab" or with an id starting 0123456789ab/,
  );
  assert.equal(await exists(`${out}/x.part`), false, "nothing is written for an unknown file");
  // part of a name: exit 3, and the names that contain it are offered
  const near = await env.client(src, "get", "small", "-o", `${out}/v`);
  assert.equal(near.code, EXIT.notFound, near.stderr);
  assert.match(
    expectOneErrorLine(near.stderr),
    /^error: No file named "small"; did you mean "small\.bin" \([0-9a-f]{12}\)\?$/,
  );

  // options that cannot be honoured are refused before anything starts; a port in use is named
  const both = await env.client(src, "get", "small.bin", "-o", `${out}/u`, "--seed", "--no-share");
  assert.equal(both.code, EXIT.usage, both.stderr);
  assert.match(expectOneErrorLine(both.stderr), /--seed .* --no-share/);
  const taken = await env.client(src, "get", "small.bin", "-o", `${out}/t`, "--listen", tracker.addr);
  assert.equal(taken.code, EXIT.failure, taken.stderr);
  assert.match(expectOneErrorLine(taken.stderr), new RegExp(`^error: Cannot listen on ${tracker.addr}: `));
  for (
    const [args, message] of [
      [["--chunk-size", "1k"], /^error: Invalid --chunk-size "1k": must be from 16\.0 KiB to 16\.0 MiB$/],
      [["--chunk-size", "32m"], /^error: Invalid --chunk-size "32m"/],
      [["--shared", `${out}/none`], /^error: --shared \S+none: no such directory$/],
      [["--shared", target], /^error: --shared \S+small\.bin: not a directory$/],
    ] as const
  ) {
    const r = await env.run("peer.ts", ["--shared", dir, "--tracker", tracker.addr, "--no-shell", ...args]);
    assert.equal(r.code, EXIT.usage, `${args.join(" ")}: ${r.stderr}`);
    assert.match(expectOneErrorLine(r.stderr), message);
  }
  // a hash setting that is neither "lanes" nor "node" stops either program before it looks up (the tracker named is
  // not there) or indexes anything
  const badHash = { env: { SHOAL_SHA256: "fast" } };
  for (
    const [script, args] of [
      ["client.ts", ["--tracker", `127.0.0.1:${freePort()}`, "get", "small.bin", "-o", `${out}/h`]],
      ["peer.ts", ["--shared", dir, "--tracker", tracker.addr, "--no-shell"]],
    ] as const
  ) {
    const r = await env.run(script, [...args], undefined, badHash);
    assert.equal(r.code, EXIT.usage, `${script}: ${r.stderr}`);
    assert.match(
      expectOneErrorLine(r.stderr),
      /^error: Cannot use SHOAL_SHA256=fast: expected "native", "lanes" or "node"$/,
    );
  }
  assert.equal(await exists(`${out}/h.part`), false);

  // a tracker whose peers would expire between two heartbeats is refused
  const quick = await env.run("tracker.ts", ["--port", "0", "--db", ":memory:", "--expiry-ms", "10"]);
  assert.equal(quick.code, EXIT.usage, quick.stderr);
  assert.match(expectOneErrorLine(quick.stderr), /^error: --expiry-ms 10 must be longer than --heartbeat-ms 5000/);

  // nobody listening at the tracker address: exit 4
  const dead = ["--tracker", `127.0.0.1:${freePort()}`];
  // ... but an empty or over-long argument is a usage error (exit 2), found before anything is asked of the network
  for (
    const [source, args, message] of [
      [dead, ["get", ""], /^error: No file given: name a file by its id/],
      [dead, ["get", "small.bin", "-o", ""], /^error: -o needs a value; it was given an empty one$/],
      [
        dead,
        ["search", "x".repeat(1025)],
        /^error: Cannot send list_files: field query is not a string of at most 1024/,
      ],
      [["--peers", ""], ["files"], /^error: --peers needs at least one host:port$/],
    ] as const
  ) {
    const r = await env.client([...source], ...args);
    assert.equal(r.code, EXIT.usage, `${args.join(" ")}: ${r.stderr}`);
    assert.match(expectOneErrorLine(r.stderr), message);
  }
  for (const args of [["files"], ["search", "small"], ["get", "small.bin", "-o", `${out}/z`]]) {
    const r = await env.client(dead, ...args);
    assert.equal(r.code, EXIT.unreachable, `${args.join(" ")}: ${r.stderr}`);
    expectOneErrorLine(r.stderr);
  }
  assert.equal(await exists(`${out}/z.part`), false);

  // The same get again finds the file in place: every chunk checked, nothing fetched, exit 0; no peer needed for that.
  peer.proc.kill("SIGKILL");
  await peer.proc.wait();
  const again = await env.clientOk(src, "get", "small.bin", "-o", target);
  assert.match(
    again.stdout,
    /^\S+small\.bin is already complete \(100\.0 KiB, 1 chunk checked in \d+\.\d\d s\)$/m,
  );
  const summary = (await env.clientOk(src, "get", "small.bin", "-o", target, "--json")).json<GetSummary>();
  assert.deepEqual([summary.alreadyComplete, summary.bytesFetched, summary.chunksReused], [true, 0, 1]);
  assert.equal(await sha256File(target), await sha256File(`${dir}/small.bin`));
});

Deno.test("e2e: a peer killed with SIGKILL drops out after expiry", async () => {
  await using env = new E2E();
  const dir1 = await env.tempDir(), dir2 = await env.tempDir();
  await writeRandomFile(`${dir1}/shared.bin`, 64 * 1024);
  await Deno.copyFile(`${dir1}/shared.bin`, `${dir2}/shared.bin`);
  const tracker = await env.tracker(200, 1000);
  const [a, b] = await Promise.all([
    env.peer({ shared: dir1, tracker: tracker.addr }),
    env.peer({ shared: dir2, tracker: tracker.addr }),
  ]);
  const src = ["--tracker", tracker.addr];
  const ports = async () =>
    (await env.clientOk(src, "peers", "shared.bin", "--json")).json<PeerEntry[]>().map((p) => p.port).sort();
  assert.deepEqual(await ports(), [a.port, b.port].sort());

  b.proc.kill("SIGKILL");
  await b.proc.wait();
  // expiry is 1000 ms, swept every 200 ms; allow generously for a loaded machine
  await waitUntil(async () => (await ports()).join() === String(a.port), 10_000, "peer B to expire");
  const files = (await env.clientOk(src, "files", "--json")).json<FileEntry[]>();
  assert.equal(files.find((f) => f.name === "shared.bin")?.peers, 1);

  // with its last source gone, the file leaves the catalog too
  a.proc.kill("SIGKILL");
  await a.proc.wait();
  await waitUntil(
    async () => (await env.clientOk(src, "files", "--json")).json<FileEntry[]>().length === 0,
    10_000,
    "the file to leave the catalog",
  );
  const gone = await env.client(src, "peers", "shared.bin", "--json");
  assert.equal(gone.code, EXIT.notFound, gone.stderr);
  expectOneErrorLine(gone.stderr);
});

/**
 * The server must answer garbage with an ERROR frame and/or close the
 * connection, within a bound; whatever it sent must be well-formed frames.
 * Returns the frames received.
 */
function expectRefused(what: string, o: RawOutcome, helloFirst = false) {
  assert.ok(o.closed, `${what}: the server kept the connection open`);
  const { frames, rest } = parseFrames(o.received);
  assert.equal(rest, 0, `${what}: the server sent a partial frame`);
  // The HELLO reply may be missing: a server that reads the HELLO and the garbage in one go may refuse both.
  const after = helloFirst && frames[0]?.type === HELLO_TYPE ? frames.slice(1) : frames;
  assert.ok(after.length <= 1, `${what}: at most one frame (the ERROR) after the garbage`);
  if (after.length === 1) {
    assert.equal(after[0]!.type, ERROR_TYPE, `${what}: the answer is an ERROR frame`);
    const e = errorOf(after[0]!);
    assert.equal(typeof e.code, "string");
    assert.equal(typeof e.message, "string");
    return e;
  }
  return null;
}

Deno.test("e2e: garbage on the tracker's and a peer's port is refused, both keep serving", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${dir}/data.bin`, 256 * 1024);
  const tracker = await env.tracker();
  const peer = await env.peer({ shared: dir, tracker: tracker.addr });

  for (const target of [tracker, peer]) {
    const name = target === tracker ? "tracker" : "peer";
    // a connection that stalls mid-frame stays open meanwhile; it must not block the others
    const stuck = await Deno.connect({ hostname: target.host, port: target.port });
    try {
      await stuck.write(helloFrame());
      await stuck.write(new Uint8Array([0, 0]));

      const random = crypto.getRandomValues(new Uint8Array(4096));
      expectRefused(`${name}, random bytes`, await rawExchange(target, [random], { closeWrite: true }));

      const oversize = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x01]);
      expectRefused(`${name}, oversize length first`, await rawExchange(target, [oversize]));
      expectRefused(`${name}, oversize length after HELLO`, await rawExchange(target, [helloFrame(), oversize]), true);

      const truncated = frame(0x20, "x".repeat(100)).subarray(0, 15);
      expectRefused(`${name}, truncated frame`, await rawExchange(target, [truncated], { closeWrite: true }));
      expectRefused(
        `${name}, truncated frame after HELLO`,
        await rawExchange(target, [helloFrame(), truncated], { closeWrite: true }),
        true,
      );

      const unknown = await rawExchange(target, [helloFrame(), frame(0x7e, "{}")]);
      const e = expectRefused(`${name}, unknown type after HELLO`, unknown, true);
      if (e) assert.equal(e.code, "unknown_type", `${name}: ${e.message}`);

      // still serving: catalog from the tracker and from the peer directly
      const viaTracker = (await env.clientOk(["--tracker", tracker.addr], "files", "--json")).json<FileEntry[]>();
      assert.deepEqual(viaTracker.map((f) => [f.name, f.peers]), [["data.bin", 1]]);
      const direct = (await env.clientOk(["--peers", peer.addr], "files", "--json")).json<FileEntry[]>();
      assert.deepEqual(direct.map((f) => f.name), ["data.bin"]);
    } finally {
      stuck.close();
    }
  }

  // and a whole download still works
  await env.clientOk(["--tracker", tracker.addr], "get", "data.bin", "-o", `${out}/data.bin`);
  assert.equal(await sha256File(`${out}/data.bin`), await sha256File(`${dir}/data.bin`));
  // the servers are alive (not crashed and restarted): same processes, no exit
  assert.equal(tracker.proc.status, null, "the tracker is still running");
  assert.equal(peer.proc.status, null, "the peer is still running");
});

Deno.test("e2e: direct mode (--peers) needs no tracker", async () => {
  await using env = new E2E();
  const dir1 = await env.tempDir(), dir2 = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${dir1}/direct.bin`, 3 * MiB + 12345);
  await Deno.copyFile(`${dir1}/direct.bin`, `${dir2}/direct.bin`);
  const sha = await sha256File(`${dir1}/direct.bin`);
  const [a, b] = await Promise.all([env.peer({ shared: dir1 }), env.peer({ shared: dir2 })]);
  const both = ["--peers", `${a.addr},${b.addr}`];

  const files = (await env.clientOk(both, "files", "--json")).json<FileEntry[]>();
  assert.deepEqual(files.map((f) => [f.name, f.size, f.peers]), [["direct.bin", 3 * MiB + 12345, 2]]);
  // A peer named twice is one peer.
  const twice = (await env.clientOk(["--peers", `${a.addr},${b.addr},${a.addr}`], "files", "--json")).json<
    FileEntry[]
  >();
  assert.deepEqual(twice.map((f) => f.peers), [2]);

  const s = (await env.clientOk(both, "get", "direct.bin", "-o", `${out}/one`, "--json")).json<GetSummary>();
  assert.equal(await sha256File(`${out}/one`), sha);
  for (const p of Object.keys(s.bytesPerPeer)) assert.ok([a.addr, b.addr].includes(p), `unexpected source ${p}`);

  await env.clientOk(["--peers", a.addr], "get", files[0]!.id, "-o", `${out}/two`);
  assert.equal(await sha256File(`${out}/two`), sha);
});

Deno.test("e2e: Ctrl-C while get still waits on a tracker that does not answer ends it at once (exit 130)", async () => {
  await using env = new E2E();
  // A tracker that takes the connection and never says HELLO: the client would wait 10 s for it.
  using silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })().catch(() => {});
  try {
    const out = await env.tempDir();
    const get = await env.spawn("client.ts", [
      "--tracker",
      `127.0.0.1:${silent.addr.port}`,
      "get",
      "a.bin",
      "-o",
      `${out}/a`,
    ]);
    await new Promise((r) => setTimeout(r, 1_500));
    const sent = performance.now();
    get.kill("SIGINT");
    const status = await get.wait();
    const seconds = (performance.now() - sent) / 1000;
    assert.equal(status.code, 130, get.describe());
    assert.ok(seconds < 3, `ended ${seconds.toFixed(1)} s after SIGINT`);
    assert.match(get.stderr, /Interrupted before the download began; nothing was fetched/);
  } finally {
    for (const c of held) c.close();
    silent.close();
    await accepting;
  }
});
