/**
 * The peer shell (lib/shell.ts) and the `--shared` peer's control channel
 * (lib/peer_control.ts), in one process on port 0: a real tracker, real
 * peers, the shell's output captured line by line. No terminal is needed:
 * {@link Shell.run} takes one command line, {@link Shell.complete} a partial
 * one; {@link runTerminal} is driven through in-memory streams.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { join } from "node:path";
import { Bitfield } from "../lib/bitfield.ts";
import { peersOf } from "../lib/client.ts";
import { formatAddress } from "../lib/connection.ts";
import { UnreachableError } from "../lib/errors.ts";
import { Home } from "../lib/home.ts";
import { indexDirectory } from "../lib/indexer.ts";
import { decodeMessage, encodeMessage, MAX_TEXT, type Message } from "../lib/messages.ts";
import { FrameDecoder } from "../lib/framing.ts";
import { PeerControl, peerRequest, peerSocketPath } from "../lib/peer_control.ts";
import { PeerNode } from "../lib/peer.ts";
import { PACING } from "../lib/rate_limit.ts";
import {
  describeTransfer,
  PeerSession,
  type SessionOptions,
  type Transfer,
  transferInfo,
} from "../lib/peer_session.ts";
import { HISTORY_MAX_LINES, runTerminal, Shell, splitWords } from "../lib/shell.ts";
import { TrackerServer } from "../lib/tracker.ts";
import { randomBytes, sha, waitUntil as waitFor } from "./helpers.ts";

const CHUNK = 16 * 1024;
/** Deadline of every wait in this file. */
const WAIT_MS = 15_000;

/** Polls `fn` until it returns true; throws naming `what` after {@link WAIT_MS}. */
const waitUntil = (fn: () => boolean | Promise<boolean>, what: string) => waitFor(fn, WAIT_MS, what);

/**
 * One test's world: a temp dir, a tracker, a source peer sharing `src/`
 * (hello.txt and data.bin), and our own peer with a session and a shell
 * whose output lands in `lines`. Everything closes at the end of the test.
 */
async function world(options: SessionOptions = {}) {
  const dir = await Deno.makeTempDir({ prefix: "shoal-shell-test-" });
  const data = randomBytes(CHUNK * 6 + 100);
  await Deno.mkdir(join(dir, "src"));
  await Deno.mkdir(join(dir, "local", "sub"), { recursive: true });
  await Deno.mkdir(join(dir, "downloads"));
  await Deno.writeTextFile(join(dir, "src", "hello.txt"), "hello");
  await Deno.writeFile(join(dir, "src", "data.bin"), data);
  await Deno.writeTextFile(join(dir, "local", "notes.txt"), "some notes");
  await Deno.writeTextFile(join(dir, "local", "sub", "deep.txt"), "deep");
  // Peers expire after 5 s of silence: 1 s (ten heartbeats) was once too little for a machine losing most of its
  // CPU to its host, and the source was gone from the look-up.
  const tracker = TrackerServer.start({ heartbeatMs: 100, expiryMs: 5_000 });
  const source = PeerNode.start(await indexDirectory(join(dir, "src"), { chunkSize: CHUNK }), {
    tracker: tracker.address,
  });
  const node = PeerNode.start([], { tracker: tracker.address });
  const session = new PeerSession(node, { tracker: tracker.address }, {
    downloadDir: join(dir, "downloads"),
    chunkSize: CHUNK,
    ...options,
  });
  const lines: string[] = [];
  const shell = new Shell(session, (l) => lines.push(l));
  await waitUntil(() => tracker.tracker.listFiles().length === 2 && node.link?.peerId != null, "registration");
  /** Runs one command; returns the lines it printed. */
  const run = async (line: string): Promise<string[]> => {
    const before = lines.length;
    await shell.run(line);
    return lines.slice(before);
  };
  return {
    dir,
    data,
    tracker,
    source,
    node,
    session,
    shell,
    lines,
    run,
    async [Symbol.asyncDispose]() {
      shell.close();
      await session.close();
      await node.close();
      await source.close();
      await tracker.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

// ------------------------------------------------------------------ parsing

Deno.test("splitWords: spaces separate, quotes and backslashes keep them", () => {
  assert.deepEqual(splitWords("  share   a.txt "), ["share", "a.txt"]);
  assert.deepEqual(splitWords(`share "my file.txt" 'it''s' a\\ b ""`), ["share", "my file.txt", "its", "a b", ""]);
  assert.throws(() => splitWords('share "open'), /Unclosed quote/);
});

// ------------------------------------------------------------------ completion

Deno.test("completion: commands, catalog names and ids, shared files, local paths", async () => {
  await using w = await world();
  const { shell } = w;
  assert.deepEqual(await shell.complete(""), [
    [
      "share ",
      "unshare ",
      "list ",
      "files ",
      "search ",
      "peers ",
      "download ",
      "stop ",
      "status ",
      "why ",
      "limit ",
      "help ",
      "quit ",
    ],
    "",
  ]);
  assert.deepEqual(await shell.complete("sta"), [["status "], "sta"]);
  assert.deepEqual(await shell.complete("st"), [["stop ", "status "], "st"]);
  assert.deepEqual(await shell.complete("s"), [["share ", "search ", "stop ", "status "], "s"]);
  assert.deepEqual(await shell.complete("nope x"), [[], ""], "an unknown command completes to nothing");
  assert.deepEqual(await shell.complete("help un"), [["unshare"], "un"]);

  // File arguments complete to the network's names, and to ids once a few hex digits are typed.
  assert.deepEqual(await shell.complete("download "), [["data.bin", "hello.txt"], ""]);
  assert.deepEqual(await shell.complete("peers he"), [["hello.txt"], "he"]);
  const helloId = w.tracker.tracker.listFiles().find((f) => f.name === "hello.txt")!.id;
  assert.deepEqual(await shell.complete(`download ${helloId.slice(0, 4)}`), [[helloId], helloId.slice(0, 4)]);

  // share: local paths; directories end with "/" so Tab goes on into them.
  const local = join(w.dir, "local");
  assert.deepEqual(await shell.complete(`share ${local}/`), [[`${local}/notes.txt`, `${local}/sub/`], `${local}/`]);
  assert.deepEqual(await shell.complete(`share ${local}/su`), [[`${local}/sub/`], `${local}/su`]);
  assert.deepEqual(await shell.complete(`share ${local}/sub/d`), [[`${local}/sub/deep.txt`], `${local}/sub/d`]);
  assert.deepEqual(await shell.complete(`share ${w.dir}/missing/x`), [[], `${w.dir}/missing/x`]);

  // unshare: what this peer shares.
  assert.deepEqual(await shell.complete("unshare "), [[], ""]);
  await w.run(`share ${local}/notes.txt`);
  assert.deepEqual(await shell.complete("unshare no"), [["notes.txt"], "no"]);
  // A command with all its arguments completes to nothing more.
  assert.deepEqual(await shell.complete("unshare notes.txt "), [[], ""]);
});

// ------------------------------------------------------------------ commands

Deno.test("share, list, unshare, files, search, peers: one line per item", async () => {
  await using w = await world();
  const notes = join(w.dir, "local", "notes.txt");
  assert.deepEqual(await w.run("list"), ["this peer shares no files"]);

  const shared = await w.run(`share ${notes}`);
  assert.equal(shared.length, 1);
  assert.match(shared[0]!, /^sharing notes\.txt \(10 B\) as [0-9a-f]{64}$/);
  const notesId = shared[0]!.split(" ").at(-1)!;
  assert.deepEqual(await w.run("list"), [`${notesId}        10 B  notes.txt  ${notes}`]);
  await waitUntil(() => w.tracker.tracker.listFiles().some((f) => f.id === notesId), "the tracker to list notes.txt");

  const files = await w.run("files");
  assert.equal(files.length, 3, files.join("\n"));
  assert.match(files.join("\n"), /^[0-9a-f]{64}\s+10 B\s+1 peer\(s\)\s+notes\.txt$/m);
  assert.match(files.join("\n"), /^[0-9a-f]{64}\s+5 B\s+1 peer\(s\)\s+hello\.txt$/m);
  const found = await w.run("search HELL");
  assert.equal(found.length, 1);
  assert.match(found[0]!, /hello\.txt$/);
  assert.deepEqual(await w.run("search nothing-like-this"), ["no file name contains nothing-like-this"]);

  assert.deepEqual(await w.run("peers hello.txt"), [`${formatAddress(w.source.address)}  complete`]);
  assert.deepEqual(await w.run(`peers ${notesId}`), [`${formatAddress(w.node.address)}  complete  (this peer)`]);

  // unshare by an id prefix; the tracker stops listing it.
  assert.deepEqual(await w.run(`unshare ${notesId.slice(0, 8)}`), [`stopped sharing notes.txt (${notesId})`]);
  assert.deepEqual(await w.run("list"), ["this peer shares no files"]);
  await waitUntil(() => !w.tracker.tracker.listFiles().some((f) => f.id === notesId), "the tracker to drop notes.txt");
  assert.deepEqual(await w.run("unshare notes.txt"), ['error: This peer does not share "notes.txt"']);
});

Deno.test("list shows each copy's path; unshare by name stops that name's copies and says what goes on", async () => {
  await using w = await world();
  // The same content three times: a shared folder's sub/deep.txt is shared as deep.txt.
  const deep = join(w.dir, "local", "sub", "deep.txt");
  const again = join(w.dir, "local", "deep.txt");
  const other = join(w.dir, "local", "other.txt");
  await Deno.copyFile(deep, again);
  await Deno.copyFile(deep, other);
  for (const path of [deep, again, other]) await w.run(`share ${path}`);
  const id = w.session.shared()[0]!.id;
  const row = (name: string, path: string) => `${id}         4 B  ${name}  ${path}`;
  assert.deepEqual(
    (await w.run("list")).sort(),
    [row("deep.txt", deep), row("deep.txt", again), row("other.txt", other)].sort(),
  );

  assert.deepEqual(await w.run("unshare deep.txt"), [
    `stopped sharing deep.txt (${id}); the same content is still shared as other.txt`,
  ]);
  assert.deepEqual(await w.run("list"), [row("other.txt", other)]);
  await waitUntil(
    () => w.tracker.tracker.listFiles().filter((f) => f.id === id).map((f) => f.name).join() === "other.txt",
    "the tracker to drop the name deep.txt",
  );
  // By id: every name.
  await w.run(`share ${deep}`);
  assert.deepEqual(await w.run(`unshare ${id}`), [`stopped sharing deep.txt, other.txt (${id})`]);
  assert.deepEqual(await w.run("list"), ["this peer shares no files"]);
});

Deno.test("download runs in the background; status shows it; it completes and is shared", async () => {
  await using w = await world();
  const started = await w.run("download data.bin");
  const out = join(w.dir, "downloads", "data.bin");
  assert.deepEqual(started, [`#1 downloading data.bin (${(w.data.length / 1024).toFixed(1)} KiB) to ${out}`]);
  // The prompt is free at once: other commands run while the download goes on.
  const status = await w.run("status");
  assert.equal(status.length, 1);
  assert.match(status[0]!, /^#1 {2}data\.bin {2}(downloading {2}\d+\.\d% .* peer\(s\)|done .*)$/);

  await waitUntil(() => w.lines.some((l) => l.startsWith("#1 data.bin: done")), "the download to finish");
  assert.equal(sha(await Deno.readFile(out)), sha(w.data));
  const after = await w.run("status");
  assert.match(after[0]!, new RegExp(`^#1 {2}data\\.bin {2}done {2}.* in \\d+\\.\\d s .*  ${out}$`));
  assert.match((await w.run("why data.bin"))[0]!, /^#1 data\.bin is complete/);
  assert.match((await w.run("list")).join("\n"), /data\.bin$/, "the downloaded file is shared");

  // Several at once: a second download, into a named file, while asking twice for the same output fails.
  const second = await w.run(`download hello.txt ${join(w.dir, "hi.txt")}`);
  assert.match(second[0]!, /^#2 downloading hello\.txt \(5 B\) to .*hi\.txt$/);
  await waitUntil(() => w.lines.some((l) => l.startsWith("#2 hello.txt: done")), "the second download");
  assert.equal(await Deno.readTextFile(join(w.dir, "hi.txt")), "hello");
  // Into an existing directory: saved there under the file's own name.
  await Deno.mkdir(join(w.dir, "into"));
  assert.match(
    (await w.run(`download hello.txt ${join(w.dir, "into")}`))[0]!,
    /^#3 downloading hello\.txt .*into\/hello\.txt$/,
  );
  await waitUntil(() => w.lines.some((l) => l.startsWith("#3 hello.txt: done")), "the download into a directory");
  assert.equal(await Deno.readTextFile(join(w.dir, "into", "hello.txt")), "hello");
  // A trailing slash means "in that directory", as for get -o, so one that is not there is refused before it begins.
  assert.deepEqual(await w.run(`download hello.txt ${join(w.dir, "later")}/`), [
    `error: Cannot save to ${join(w.dir, "later", "hello.txt")}: there is no directory ${join(w.dir, "later")}`,
  ]);
  // Asked again for a file it has: checked in place, done, nothing fetched. Another file in the way is kept.
  assert.deepEqual(await w.run("download data.bin"), [`#4 downloading data.bin (96.1 KiB) to ${out}`]);
  await waitUntil(() => w.lines.some((l) => l.startsWith("#4 data.bin: done, it was there already")), "the recheck");
  assert.equal(sha(await Deno.readFile(join(w.dir, "downloads", "data.bin"))), sha(w.data));
  await Deno.writeTextFile(join(w.dir, "other.bin"), "keep me");
  assert.match(
    (await w.run(`download data.bin ${join(w.dir, "other.bin")}`))[0]!,
    /^error: .*other\.bin already exists and is not this file/,
  );
  assert.equal(await Deno.readTextFile(join(w.dir, "other.bin")), "keep me");
});

Deno.test("the session's download limit caps its downloads together", async () => {
  const rate = 4 * CHUNK; // 64 KiB/s, from an empty bucket
  await using w = await world({ downloadLimit: rate });
  const started = performance.now();
  await w.run("download data.bin");
  await w.run(`download data.bin ${join(w.dir, "copy.bin")}`);
  await waitUntil(() => w.lines.filter((l) => /^#\d data\.bin: done/.test(l)).length === 2, "both downloads");
  const seconds = (performance.now() - started) / 1000;
  // Both files through one bucket, at the rate, but for what the bucket saved before the first request (a quarter
  // second's worth: PACING) and the last request's debt, a chunk at most. Each with a bucket of its own would take
  // half of that. (Counting only the debt, the bound failed now and then: the bucket is made with the session.)
  const least = (2 * w.data.length - rate * PACING.burstSeconds - CHUNK) / rate;
  assert.ok(seconds >= least, `took ${seconds.toFixed(2)} s, expected at least ${least.toFixed(2)}`);
  assert.equal(sha(await Deno.readFile(join(w.dir, "downloads", "data.bin"))), sha(w.data));
  assert.equal(sha(await Deno.readFile(join(w.dir, "copy.bin"))), sha(w.data));
});

Deno.test("why: a stuck download names its missing chunks, who has them, and a dropped peer's reason", async () => {
  // giveUpMs: the download stays stuck (instead of failing) while we look at it.
  await using w = await world({ download: { giveUpMs: 60_000 } });
  const data = randomBytes(CHUNK * 8);
  const missingChunk = 5;
  await Deno.mkdir(join(w.dir, "stuck"));
  await Deno.writeFile(join(w.dir, "stuck", "stuck.bin"), data);
  // A: the whole file, but every chunk it sends is corrupt. B: every chunk but one, intact.
  const [stuck] = await indexDirectory(join(w.dir, "stuck"), { chunkSize: CHUNK });
  assert.ok(stuck);
  await using bad = PeerNode.start([stuck], { tracker: w.tracker.address, corrupt: true });
  await using partial = PeerNode.start([], { tracker: w.tracker.address });
  const have = new Bitfield(stuck.manifest.chunks.length);
  for (let i = 0; i < have.size; i++) if (i !== missingChunk) have.set(i);
  await waitUntil(() => partial.link?.peerId != null && bad.link?.peerId != null, "the sources to register");
  await partial.sharePartial(stuck.id, stuck.path, stuck.manifest, have);
  await waitUntil(async () => (await peersOf({ tracker: w.tracker.address }, stuck.id)).length === 2, "two sources");

  assert.match((await w.run("download stuck.bin"))[0]!, /^#1 downloading stuck\.bin/);
  await waitUntil(() => {
    const s = w.session.transfer("stuck.bin").status();
    return s !== null && s.doneChunks === have.count && s.unavailable.length === 1 && s.dropped.length > 0;
  }, "everything but the unavailable chunk");

  const why = await w.run("why stuck.bin");
  const badAddr = formatAddress(bad.address), partialAddr = formatAddress(partial.address);
  assert.equal(why[0], `#1 stuck.bin: 1 of 8 chunk(s) missing: ${missingChunk}`, why.join("\n"));
  assert.ok(why.includes(`  no connected peer has 1 of them: ${missingChunk}`), why.join("\n"));
  assert.ok(why.some((l) => l.startsWith(`  ${partialAddr} has 0 of them (`)), why.join("\n"));
  assert.ok(
    why.some((l) => new RegExp(`^  dropped ${badAddr}: sent chunk \\d+ with a wrong SHA-256$`).test(l)),
    why.join("\n"),
  );
  assert.match((await w.run("status"))[0]!, /^#1 {2}stuck\.bin {2}downloading {2}87\.5% /);

  // Stopping the session stops the download with its progress saved for a resume.
  await w.session.close();
  assert.match(
    (await w.run("status"))[0]!,
    /^#1 {2}stuck\.bin {2}stopped at 87\.5%: progress saved; download it again to resume$/,
  );
  assert.ok(await Deno.stat(join(w.dir, "downloads", "stuck.bin.part.json")), "the resume sidecar is kept");
  assert.match((await w.run("download stuck.bin"))[0]!, /^error: This peer is shutting down/);
});

Deno.test("why: sources past the connection cap are counted as waiting for a turn", async () => {
  await using w = await world({ download: { maxPeers: 1 } });
  await Deno.mkdir(join(w.dir, "slow"));
  await Deno.writeFile(join(w.dir, "slow", "slow.bin"), randomBytes(CHUNK * 8));
  const files = await indexDirectory(join(w.dir, "slow"), { chunkSize: CHUNK });
  // Two sources of one chunk a second: whichever comes first keeps the one slot (no turnover for 30 s). The look-up
  // fails until one has registered the file.
  await using a = PeerNode.start(files, { tracker: w.tracker.address, uploadLimit: CHUNK });
  await using b = PeerNode.start(files, { tracker: w.tracker.address, uploadLimit: CHUNK });
  await waitUntil(
    async () => (await peersOf({ tracker: w.tracker.address }, files[0]!.id).catch(() => [])).length === 2,
    "two sources",
  );

  await w.run("download slow.bin");
  await waitUntil(() => w.session.transfer("slow.bin").status()?.peers[0]?.ready === true, "one source connected");

  const why = await w.run("why slow.bin");
  assert.ok(why.includes("  1 more source(s) wait for a turn (1 connected at most)"), why.join("\n"));
  const connected = why.filter((l) =>
    l.startsWith(`  ${formatAddress(a.address)} `) || l.startsWith(`  ${formatAddress(b.address)} `)
  );
  assert.equal(connected.length, 1, why.join("\n"));
});

Deno.test("limit: shows both limits and changes either while downloads run", async () => {
  // One chunk a second to start with: data.bin (6 chunks and a bit) would take 5 s.
  await using w = await world({ downloadLimit: CHUNK });
  assert.deepEqual(await w.run("limit"), [
    "download limit 16.0 KiB/s (all downloads together), upload limit none",
  ]);
  await w.run("download data.bin");
  await waitUntil(() => (w.session.transfer("#1").status()?.doneChunks ?? 0) >= 1, "a first chunk");
  // Timed from here, past the download's start (seconds on a machine losing most of its CPU to its host).
  const lifted = performance.now();
  assert.deepEqual(await w.run("limit down off"), ["download limit none (all downloads together), upload limit none"]);
  await waitUntil(() => w.lines.some((l) => l.startsWith("#1 data.bin: done")), "the download, unlimited now");
  const seconds = (performance.now() - lifted) / 1000;
  // Still limited, the 5 chunks and more left take 4 s at least.
  assert.ok(seconds < 3, `took ${seconds.toFixed(1)} s: lifting the limit did not reach the running download`);
  assert.equal(sha(await Deno.readFile(join(w.dir, "downloads", "data.bin"))), sha(w.data));

  assert.deepEqual(await w.run("limit up 2m"), [
    "download limit none (all downloads together), upload limit 2.00 MiB/s",
  ]);
  assert.equal(w.node.uploadLimit, 2 * 1024 * 1024);
  assert.deepEqual(await w.run("limit download 64k"), [
    "download limit 64.0 KiB/s (all downloads together), upload limit 2.00 MiB/s",
  ]);
  assert.deepEqual(await w.run("limit upload none"), [
    "download limit 64.0 KiB/s (all downloads together), upload limit none",
  ]);
  assert.equal(w.node.uploadLimit, 0);
  assert.deepEqual(await w.run("limit sideways 5m"), ["error: usage: limit [down|up <size|off>]"]);
  assert.deepEqual(await w.run("limit down"), ["error: usage: limit [down|up <size|off>]"]);
  assert.match((await w.run("limit up 5q"))[0]!, /^error: Invalid upload limit "5q": expected a size like/);
});

Deno.test("stop: a download stops with its progress saved; downloading it again resumes it", async () => {
  await using w = await world();
  await Deno.mkdir(join(w.dir, "slow"));
  const data = randomBytes(CHUNK * 8);
  await Deno.writeFile(join(w.dir, "slow", "slow.bin"), data);
  const files = await indexDirectory(join(w.dir, "slow"), { chunkSize: CHUNK });
  // 2 chunks a second after a second's worth: a download still running when it is stopped.
  await using _src = PeerNode.start(files, { tracker: w.tracker.address, uploadLimit: 2 * CHUNK });
  await waitUntil(
    async () => (await peersOf({ tracker: w.tracker.address }, files[0]!.id).catch(() => [])).length === 1,
    "the slow source",
  );
  const out = join(w.dir, "downloads", "slow.bin");
  await w.run("download slow.bin");
  await waitUntil(() => (w.session.transfer("#1").status()?.doneChunks ?? 0) >= 1, "a chunk saved");

  assert.deepEqual(await w.run("stop #1"), ["#1 slow.bin: stopped: progress saved; download it again to resume"]);
  assert.ok(await Deno.stat(`${out}.part.json`), "the resume sidecar is kept");
  assert.equal(await Deno.stat(out).catch(() => null), null, "no finished file yet");
  assert.deepEqual(await w.run("stop slow.bin"), ["error: #1 slow.bin is not downloading (it is stopped)"]);
  assert.deepEqual(await w.run("stop nothing"), [
    'error: No download of "nothing" in this peer; its downloads: #1 slow.bin',
  ]);
  assert.match((await w.run("status"))[0]!, /^#1 {2}slow\.bin {2}stopped/);

  await w.run("download slow.bin");
  await waitUntil(() => w.lines.some((l) => l.startsWith("#2 slow.bin: done")), "the resumed download");
  assert.equal(sha(await Deno.readFile(out)), sha(data));
  const reused = w.session.transfer("#2").summary!.chunksReused;
  assert.ok(reused >= 1, `the second run reused ${reused} chunk(s)`);
});

Deno.test("unknown commands, bad arguments and failures are one clear line; the shell goes on", async () => {
  await using w = await world();
  assert.deepEqual(await w.run("frobnicate"), ['error: Unknown command "frobnicate" (type help for the list)']);
  assert.deepEqual(await w.run("share"), ["error: usage: share <path>"]);
  assert.deepEqual(await w.run("share a b"), ["error: usage: share <path>"]);
  assert.deepEqual(await w.run("list --all"), ["error: usage: list"]);
  assert.deepEqual(await w.run("download"), ["error: usage: download <file-id|name> [out] [--force]"]);
  assert.deepEqual(await w.run('share "unclosed'), ['error: Unclosed quote " in the command line']);
  assert.deepEqual(await w.run(`share ${join(w.dir, "none.txt")}`), [
    `error: Cannot share ${join(w.dir, "none.txt")}: No such file or directory (os error 2): stat '${
      join(w.dir, "none.txt")
    }'`,
  ]);
  assert.deepEqual(await w.run(`share ${w.dir}`), [`error: Cannot share ${w.dir}: not a regular file`]);
  assert.deepEqual(await w.run("download no-such-file"), [
    'error: No file named "no-such-file" (try: files, search)',
  ]);
  const dataId = w.tracker.tracker.listFiles().find((f) => f.name === "data.bin")!.id;
  assert.deepEqual(await w.run("download DATA"), [
    `error: No file named "DATA"; did you mean "data.bin" (${dataId.slice(0, 12)})?`,
  ]);
  assert.deepEqual(await w.run("why nothing"), ['error: No download of "nothing" in this peer (it has none)']);
  assert.deepEqual(await w.run("status"), ["no downloads (start one with: download <file>)"]);
  assert.deepEqual(await w.run(""), []);
  const help = await w.run("help");
  assert.ok(help.some((l) => l.startsWith("download <file-id|name> [out] [--force]")), help.join("\n"));
  assert.deepEqual(await w.run("help why"), [
    "why <file>: why a download is stuck: missing chunks, who has them, dropped peers",
  ]);
  assert.equal(w.shell.quitting, false);
  assert.deepEqual(await w.run("quit"), []);
  assert.equal(w.shell.quitting, true);
  await w.shell.quit;
});

// ------------------------------------------------------------------ the terminal loop

/** Collects what a stream receives, as text. */
function collect(stream: PassThrough): () => string {
  let text = "";
  stream.on("data", (b: Uint8Array) => text += new TextDecoder().decode(b));
  return () => text;
}

Deno.test("runTerminal: lines from a pipe run in order until quit; no prompt on a pipe", async () => {
  await using w = await world();
  const input = new PassThrough(), output = new PassThrough();
  const text = collect(output);
  const done = runTerminal(w.session, { input, output, terminal: false });
  input.write("status\nbogus\n");
  input.write("quit\nstatus\n");
  await done;
  assert.equal(
    text(),
    "no downloads (start one with: download <file>)\n" +
      'error: Unknown command "bogus" (type help for the list)\n',
    "the line after quit is not run",
  );
  input.destroy();
  output.destroy();
});

Deno.test("runTerminal: end of input and the abort signal end it too", async () => {
  await using w = await world();
  const input = new PassThrough(), output = new PassThrough();
  const done = runTerminal(w.session, { input, output, terminal: false });
  input.end("status\n");
  await done;
  const ac = new AbortController();
  const input2 = new PassThrough();
  const running = runTerminal(w.session, { input: input2, output, terminal: false, signal: ac.signal });
  ac.abort();
  await running;
  for (const s of [input, input2, output]) s.destroy();
});

Deno.test("runTerminal: history is kept in a bounded file of mode 0600", async () => {
  await using w = await world();
  const historyPath = join(w.dir, "state", "shell_history");
  await Deno.mkdir(join(w.dir, "state"), { mode: 0o700 });
  // An old history longer than the bound.
  const old = Array.from({ length: HISTORY_MAX_LINES + 20 }, (_, i) => `search old-${i}`);
  await Deno.writeTextFile(historyPath, old.join("\n") + "\n");
  const input = new PassThrough(), output = new PassThrough();
  const text = collect(output);
  const done = runTerminal(w.session, { input, output, terminal: true, historyPath });
  input.write("status\r");
  input.write("quit\r");
  await done;
  assert.match(text(), /shoal> /, "a terminal gets a prompt");
  assert.match(text(), /no downloads/);
  const saved = (await Deno.readTextFile(historyPath)).trimEnd().split("\n");
  assert.equal(saved.length, HISTORY_MAX_LINES);
  assert.deepEqual(saved.slice(-2), ["status", "quit"], "newest last");
  assert.equal(saved[0], `search old-${old.length + 2 - HISTORY_MAX_LINES}`, "the oldest lines are dropped");
  assert.equal((await Deno.stat(historyPath)).mode! & 0o777, 0o600);
  input.destroy();
  output.destroy();
});

// ------------------------------------------------------------------ the control channel

Deno.test("control socket: register-file and request-file reach the peer; 0600; a wrong address is unreachable", async () => {
  await using w = await world();
  const home = new Home(join(w.dir, "home"));
  await using control = await PeerControl.listen(home, w.session);
  assert.equal(control.path, peerSocketPath(home, w.node.address));
  assert.equal((await Deno.stat(control.path)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(home.peersDir)).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(home.dir)).mode! & 0o777, 0o700);

  const notes = join(w.dir, "local", "notes.txt");
  const reg = await peerRequest(
    home,
    w.node.address,
    { type: "ctl_register_file", path: notes },
    "ctl_file_registered",
  );
  assert.deepEqual({ ...reg, fileId: "" }, {
    type: "ctl_file_registered",
    fileId: "",
    name: "notes.txt",
    size: 10,
    path: notes,
  });
  assert.ok(w.session.shared().some((f) => f.id === reg.fileId));

  // A peer listening on 0.0.0.0 is asked as 127.0.0.1: the only socket with that port answers.
  const dataId = w.tracker.tracker.listFiles().find((f) => f.name === "data.bin")!.id;
  const req = await peerRequest(
    home,
    { host: "localhost", port: w.node.address.port },
    { type: "ctl_request_file", fileId: dataId },
    "ctl_file_requested",
  );
  assert.equal(req.out, join(w.dir, "downloads", "data.bin"));
  await waitUntil(() => w.session.transfer(dataId).state === "done", "the requested download");
  assert.equal(sha(await Deno.readFile(req.out)), sha(w.data));
  assert.match((await w.run("status"))[0]!, /^#1 {2}data\.bin {2}done/, "the shell sees it");

  // Failures come back as ERROR frames with the reason.
  await assert.rejects(
    peerRequest(home, w.node.address, { type: "ctl_register_file", path: join(w.dir, "nope") }, "ctl_file_registered"),
    (err: Error & { exitCode?: number }) => /Cannot share .*nope/.test(err.message) && err.exitCode === 3,
  );
  // An output where no directory is: refused before the peer says it began, so nothing is listed as downloading.
  const nowhere = join(w.dir, "missing", "data.bin");
  await assert.rejects(
    peerRequest(home, w.node.address, { type: "ctl_request_file", fileId: dataId, out: nowhere }, "ctl_file_requested"),
    (err: Error & { exitCode?: number }) => /there is no directory .*missing/.test(err.message) && err.exitCode === 2,
  );
  assert.equal(w.session.transfers().length, 1);
  await assert.rejects(
    peerRequest(home, w.node.address, { type: "ctl_status" }, "ctl_state"),
    /does not handle ctl_status messages/,
  );
  await assert.rejects(
    peerRequest(
      home,
      { host: "127.0.0.1", port: 1 },
      { type: "ctl_register_file", path: notes },
      "ctl_file_registered",
    ),
    (err) => err instanceof UnreachableError && err.message.includes(join(home.peersDir, "127.0.0.1_1.sock")),
  );

  await control.close();
  assert.equal(await Deno.stat(control.path).catch(() => null), null, "the socket is removed on close");
});

Deno.test("control socket: list downloads and stop one; request-file resumes it", async () => {
  // One chunk a second: data.bin (6 chunks and a bit) is still running when it is looked at and stopped.
  await using w = await world({ downloadLimit: CHUNK });
  const home = new Home(join(w.dir, "home"));
  await using _control = await PeerControl.listen(home, w.session);
  const ask = (msg: Message) => peerRequest(home, w.node.address, msg, "ctl_downloads");

  assert.deepEqual((await ask({ type: "ctl_list_downloads" })).downloads, []);
  const dataId = w.tracker.tracker.listFiles().find((f) => f.name === "data.bin")!.id;
  await peerRequest(home, w.node.address, { type: "ctl_request_file", fileId: dataId }, "ctl_file_requested");
  await waitUntil(() => (w.session.transfer("#1").status()?.doneChunks ?? 0) >= 1, "a chunk saved");

  // Asked again while it runs: busy (exit 9), as a second `get` to one output is.
  await assert.rejects(
    peerRequest(home, w.node.address, { type: "ctl_request_file", fileId: dataId }, "ctl_file_requested"),
    (err: Error & { exitCode?: number }) =>
      /^Already downloading to .*data\.bin \(#1\)$/.test(err.message) && err.exitCode === 9,
  );
  const [running] = (await ask({ type: "ctl_list_downloads" })).downloads;
  assert.ok(running);
  assert.deepEqual({ ...running, doneBytes: 0, rate: 0, elapsedMs: 0 }, {
    number: 1,
    fileId: dataId,
    name: "data.bin",
    size: w.data.length,
    out: join(w.dir, "downloads", "data.bin"),
    state: "downloading",
    doneBytes: 0,
    rate: 0,
    peers: 1,
    elapsedMs: 0,
  });
  // Some of it: the first chunk saved may be the short last one (100 bytes), as chunks are picked from a random place.
  assert.ok(running.doneBytes > 0 && running.doneBytes < w.data.length, `${running.doneBytes} bytes done`);
  assert.ok(running.elapsedMs > 0);

  const [stopped] = (await ask({ type: "ctl_stop_download", file: "data.bin" })).downloads;
  assert.equal(stopped?.state, "stopped");
  assert.equal(stopped?.error, "progress saved; download it again to resume");
  assert.equal(w.session.transfer("#1").state, "stopped", "the shell sees it stopped");
  assert.ok(await Deno.stat(join(w.dir, "downloads", "data.bin.part.json")), "the sidecar is kept");
  await assert.rejects(
    ask({ type: "ctl_stop_download", file: "#1" }),
    (err: Error) => /#1 data\.bin is not downloading \(it is stopped\)/.test(err.message),
  );
  await assert.rejects(
    ask({ type: "ctl_stop_download", file: "nope.bin" }),
    (err: Error & { exitCode?: number }) =>
      err.message.includes(`No download of "nope.bin" in this peer; its downloads: #1 data.bin`) && err.exitCode === 3,
  );

  // Asked for again, it resumes from the sidecar; both show, oldest first.
  w.session.setLimits({ download: 0 });
  await peerRequest(home, w.node.address, { type: "ctl_request_file", fileId: dataId }, "ctl_file_requested");
  await waitUntil(() => w.session.transfer("#2").state === "done", "the resumed download");
  const [first, second] = (await ask({ type: "ctl_list_downloads" })).downloads;
  assert.equal(first?.state, "stopped");
  assert.equal(second?.state, "done");
  assert.equal(second?.doneBytes, w.data.length);
  assert.ok(w.session.transfer("#2").summary!.chunksReused >= 1, "chunks from before the stop are reused");
  assert.equal(sha(await Deno.readFile(second!.out)), sha(w.data));
});

Deno.test("transferInfo: a long error or path is cut to what CTL_DOWNLOADS carries, and the list still decodes", () => {
  const t: Transfer = {
    number: 7,
    fileId: "ab".repeat(32),
    name: "big.iso",
    size: 10,
    out: `/${"d".repeat(MAX_TEXT + 500)}`,
    startedAt: 1_000,
    state: "failed",
    error: `No live source for chunks ${"1, ".repeat(MAX_TEXT)}`,
    summary: null,
    endedAt: 3_500,
    status: () => null,
  };
  const info = transferInfo(t);
  assert.equal(info.error!.length, MAX_TEXT);
  assert.ok(info.error!.endsWith("…") && info.out.length === MAX_TEXT);
  assert.equal(info.elapsedMs, 2_500);
  const back = decodeMessage(new FrameDecoder().push(encodeMessage({ type: "ctl_downloads", downloads: [info] }))[0]!);
  assert.deepEqual(back, { type: "ctl_downloads", downloads: [info] });
  assert.equal(describeTransfer(info).slice(0, 42), "#7  big.iso  failed at 0.0%: No live sourc");
});

Deno.test("control socket: a stale socket left by a crash is replaced", async () => {
  await using w = await world();
  const home = new Home(join(w.dir, "home"));
  await Deno.mkdir(home.peersDir, { recursive: true });
  // What a killed peer leaves behind: a socket file nothing listens on.
  const stalePath = join(home.peersDir, "127.0.0.1_9.sock");
  Deno.listen({ transport: "unix", path: stalePath }).close();
  const mine = peerSocketPath(home, w.node.address);
  Deno.listen({ transport: "unix", path: mine }).close();
  await using control = await PeerControl.listen(home, w.session);
  assert.equal(control.path, mine);
  assert.equal(await Deno.stat(stalePath).catch(() => null), null, "the other stale socket is swept");
  const reg = await peerRequest(
    home,
    w.node.address,
    { type: "ctl_register_file", path: join(w.dir, "local", "notes.txt") },
    "ctl_file_registered",
  );
  assert.equal(reg.name, "notes.txt");
});

Deno.test("home: a new one is made private; one already there keeps its mode, unless others can write to it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-home-" });
  try {
    const fresh = new Home(join(dir, "a", "b"));
    await fresh.writeShares([]);
    assert.equal((await Deno.stat(fresh.dir)).mode! & 0o777, 0o700);
    // A directory that holds other things (--home somewhere odd) is not made private behind its owner's back.
    const shared = join(dir, "readable");
    await Deno.mkdir(shared);
    await Deno.chmod(shared, 0o755);
    await new Home(shared).writeShares([]);
    assert.equal((await Deno.stat(shared)).mode! & 0o777, 0o755);
    // One that others can write to (a sticky /tmp too) is refused, and left as it was.
    for (const mode of [0o1777, 0o775]) {
      const open = join(dir, `open${mode.toString(8)}`);
      await Deno.mkdir(open);
      await Deno.chmod(open, mode);
      await assert.rejects(
        new Home(open).writeShares([]),
        (err: Error & { exitCode?: number }) =>
          err.exitCode === 2 && err.message.includes(`${open} can be written by other users`),
      );
      assert.equal((await Deno.stat(open)).mode! & 0o7777, mode);
      assert.deepEqual(await Array.fromAsync(Deno.readDir(open)), []);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("home: download records are kept per user and output; putting one back returns what it replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-home-" });
  try {
    const home = new Home(dir);
    const rec = (user: string | undefined, dest: string, state: "D" | "C" | "F") => ({
      ...(user === undefined ? {} : { user }),
      group: "team",
      name: "a.bin",
      fileId: "ab".repeat(32),
      dest,
      state,
      pid: 1,
      startedAt: 1,
      updatedAt: 1,
    });
    assert.equal(await home.putDownload(rec("carol", "/x/a.bin", "C")), null);
    assert.equal(await home.putDownload(rec("alice", "/x/a.bin", "D")), null, "another user's record is not hers");
    assert.deepEqual(await home.putDownload(rec("carol", "/x/a.bin", "F")), rec("carol", "/x/a.bin", "C"));
    assert.deepEqual((await home.readDownloads()).map((d) => [d.user, d.state]), [["alice", "D"], ["carol", "F"]]);
    // A record from before users were kept apart is anyone's.
    await home.putDownload(rec(undefined, "/x/old.bin", "C"));
    assert.deepEqual(await home.putDownload(rec("alice", "/x/old.bin", "D")), rec(undefined, "/x/old.bin", "C"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
