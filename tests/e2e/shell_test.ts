/**
 * End-to-end, issue 5: the peer shell and the one-shot control commands,
 * with real processes. `peer.ts --shell` is driven through its stdin pipe
 * as a user would type; `client.ts register-file`, `request-file`,
 * `request-status` and `request-stop` reach a running `peer.ts --no-shell`
 * through its control socket.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  E2E,
  expectOneErrorLine,
  type FileEntry,
  freePort,
  MiB,
  type Proc,
  sha256File,
  waitUntil,
  writeRandomFile,
} from "./harness.ts";

/** Exit codes documented in lib/errors.ts (ExitCode); repeated here as the contract under test. */
const EXIT = { usage: 2, notFound: 3, unreachable: 4, exists: 7 } as const;
/** Deadline for a download between the test's peers. */
const DOWNLOAD_TIMEOUT_MS = 60_000;
/** How often `status` is asked while waiting for a download. */
const STATUS_POLL_MS = 300;
/**
 * The shell peer's expiry at the tracker is far longer than the test: a file
 * that vanishes from the catalog right after `quit` was unregistered, not expired.
 */
const LONG_EXPIRY_MS = 120_000;

/** The shared file of the source peer, in chunks small enough for several to be in flight. */
const DATA_SIZE = 8 * MiB;
const CHUNK_SIZE = "256k";
/** The source uploads this slowly, so the download is still running when `status` is first asked. */
const SOURCE_UPLOAD_LIMIT = "2m";

/** Options every peer of these tests gets: a port picked by the OS, a private hash cache and state directory. */
async function peerArgs(env: E2E, shared: string, tracker: string, home: string): Promise<string[]> {
  return [
    "--shared",
    shared,
    "--tracker",
    tracker,
    "--port",
    "0",
    "--cache-dir",
    await env.tempDir("shoal-e2e-cache-"),
    "--home",
    home,
  ];
}

/** A `peer.ts --no-shell` sharing an empty directory, downloading into `downloads` at `downloadLimit` at most. */
async function controlledPeer(env: E2E, tracker: string, home: string, downloads: string, downloadLimit: string) {
  const peer = await env.spawn("peer.ts", [
    ...await peerArgs(env, await env.tempDir(), tracker, home),
    "--download-dir",
    downloads,
    "--download-limit",
    downloadLimit,
    "--no-shell",
  ]);
  return { peer, addr: await started(peer) };
}

/** Waits for the listening and registration lines; returns the listening address. */
async function started(p: Proc): Promise<string> {
  const m = await p.waitForLine(/^peer listening on (\S+:\d+)$/);
  await p.waitForLine(/^registered with tracker as \S+/);
  return m[1]!;
}

Deno.test("e2e: peer.ts --shell from a pipe: share, list, download from another peer, status until done, quit", async () => {
  await using env = new E2E();
  const srcDir = await env.tempDir(), ownDir = await env.tempDir(), downloads = await env.tempDir();
  const home = await env.tempDir("shoal-e2e-home-"), local = await env.tempDir();
  await writeRandomFile(join(srcDir, "data.bin"), DATA_SIZE);
  await Deno.writeTextFile(join(local, "notes.txt"), "notes for the shell test\n");
  const tracker = await env.tracker(200, LONG_EXPIRY_MS);
  await env.peer({ shared: srcDir, tracker: tracker.addr, chunkSize: CHUNK_SIZE, uploadLimit: SOURCE_UPLOAD_LIMIT });

  const shell = await env.spawn(
    "peer.ts",
    [...await peerArgs(env, ownDir, tracker.addr, home), "--download-dir", downloads, "--shell"],
    { stdin: "piped" },
  );
  const addr = await started(shell);
  const socket = join(home, "peers", `${addr.replace(":", "_")}.sock`);
  await shell.waitForLine(new RegExp(`^control socket ${socket}$`));

  await shell.write(`share ${join(local, "notes.txt")}\n`);
  const shared = await shell.waitForLine(/^sharing notes\.txt \(25 B\) as ([0-9a-f]{64})$/);
  const notesId = shared[1]!;
  await shell.write("list\n");
  // With the local copy's path: a temp dir's name holds no character special to a RegExp but ".".
  const path = join(local, "notes.txt").replaceAll(".", "\\.");
  await shell.waitForLine(new RegExp(`^${notesId}\\s+25 B\\s+notes\\.txt {2}${path}$`));
  const listed = async () =>
    (await env.clientOk(["--tracker", tracker.addr], "files", "--json")).json<FileEntry[]>().some((f) =>
      f.id === notesId
    );
  await waitUntil(listed, DOWNLOAD_TIMEOUT_MS, "the tracker to list notes.txt");

  await shell.write("download data.bin\n");
  await shell.waitForLine(/^#1 downloading data\.bin \(8\.00 MiB\) to .*data\.bin$/);
  // The prompt stays usable during the download: ask for status until it says done.
  await waitUntil(
    async () => {
      await shell.write("status\n");
      return /^#1 {2}data\.bin {2}done /m.test(shell.stdout);
    },
    DOWNLOAD_TIMEOUT_MS,
    "status to show the download done",
    STATUS_POLL_MS,
  );
  assert.match(
    shell.stdout,
    /^#1 {2}data\.bin {2}downloading {2}\d+\.\d% {2}.* of 8\.00 MiB {2}.*\/s {2}\d+ peer\(s\)$/m,
  );
  await shell.waitForLine(/^#1 data\.bin: done, 8\.00 MiB in \d+\.\d s -> .*data\.bin$/);
  assert.equal(await sha256File(join(downloads, "data.bin")), await sha256File(join(srcDir, "data.bin")));

  await shell.write("quit\n");
  const status = await shell.wait();
  assert.equal(status.code, 0, shell.describe());
  assert.equal(shell.stderr, "", shell.describe());
  // Unregistered at once (its expiry is minutes away), and its socket is gone.
  assert.equal(await listed(), false, "the tracker no longer lists the shell peer's file after quit");
  assert.equal(await Deno.stat(socket).catch(() => null), null, "the control socket is removed on exit");
});

Deno.test("e2e: client.ts register-file and request-file drive a running peer.ts --no-shell (--download-limit)", async () => {
  await using env = new E2E();
  const srcDir = await env.tempDir(), downloads = await env.tempDir();
  const home = await env.tempDir("shoal-e2e-home-"), local = await env.tempDir();
  await writeRandomFile(join(srcDir, "data.bin"), 3 * MiB);
  await Deno.writeTextFile(join(local, "report.txt"), "quarterly report\n");
  const tracker = await env.tracker();
  const src = ["--tracker", tracker.addr];
  await env.peer({ shared: srcDir, tracker: tracker.addr, chunkSize: CHUNK_SIZE });
  const { peer, addr } = await controlledPeer(env, tracker.addr, home, downloads, "1m");

  // Only the owner can use the channel: the socket is 0600 in a 0700 directory.
  const socket = join(home, "peers", `${addr.replace(":", "_")}.sock`);
  await peer.waitForLine(new RegExp(`^control socket ${socket}$`));
  assert.equal((await Deno.stat(socket)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(join(home, "peers"))).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(home)).mode! & 0o777, 0o700);

  const ctl = ["--home", home];
  const reg = (await env.clientOk(
    ctl,
    "register-file",
    "--path",
    join(local, "report.txt"),
    "--peer-addr",
    addr,
    "--json",
  )).json<{ fileId: string; name: string; size: number; path: string }>();
  assert.equal(reg.name, "report.txt");
  assert.equal(reg.size, 17);
  await waitUntil(
    async () => (await env.clientOk(src, "files", "--json")).json<FileEntry[]>().some((f) => f.id === reg.fileId),
    DOWNLOAD_TIMEOUT_MS,
    "the tracker to list the registered file",
  );

  const dataId =
    (await env.clientOk(src, "files", "--json")).json<FileEntry[]>().find((f) => f.name === "data.bin")!.id;
  const req = (await env.clientOk(ctl, "request-file", "--file-id", dataId, "--peer-addr", addr, "--json"))
    .json<{ fileId: string; name: string; out: string }>();
  assert.equal(req.out, join(downloads, "data.bin"), "by default the peer downloads into its --download-dir");
  const done = await peer.waitForLine(/^#1 data\.bin: done, 3\.00 MiB in (\d+\.\d) s/, DOWNLOAD_TIMEOUT_MS);
  assert.equal(await sha256File(req.out), await sha256File(join(srcDir, "data.bin")));
  // --download-limit 1m from an empty bucket: a chunk of debt at most, so 3 MiB in 1 MiB chunks take 2 s at least.
  assert.ok(Number(done[1]) >= 1.95, `--download-limit 1m: 3 MiB in ${done[1]} s`);

  // Human output, and the errors: no peer on that address, an unknown file.
  const human = await env.clientOk(ctl, "register-file", "--path", join(local, "report.txt"), "--peer-addr", addr);
  assert.equal(human.stdout, `${addr} shares report.txt (17 B) as ${reg.fileId}\n`);
  const wrongAddr = `127.0.0.1:${freePort()}`;
  const wrong = await env.client(ctl, "register-file", "--path", join(local, "report.txt"), "--peer-addr", wrongAddr);
  assert.equal(wrong.code, EXIT.unreachable, wrong.stderr);
  const line = expectOneErrorLine(wrong.stderr);
  assert.ok(line.includes(`No local peer listens on ${wrongAddr}`), line);
  assert.ok(line.includes(join(home, "peers", `${wrongAddr.replace(":", "_")}.sock`)), line);
  const unknown = await env.client(ctl, "request-file", "--file-id", "0".repeat(64), "--peer-addr", addr);
  assert.equal(unknown.code, EXIT.notFound, unknown.stderr);
  expectOneErrorLine(unknown.stderr);
  // Asked again, the peer finds the file in place and checks it; another file in the way is refused and kept.
  await env.clientOk(ctl, "request-file", "--file-id", dataId, "--peer-addr", addr);
  await peer.waitForLine(/^#2 data\.bin: done, it was there already \(3\.00 MiB, every chunk checked\)/, 10_000);
  const other = join(downloads, "other.bin");
  await Deno.writeTextFile(other, "keep me");
  const refused = await env.client(ctl, "request-file", "--file-id", dataId, "--out", other, "--peer-addr", addr);
  assert.equal(refused.code, EXIT.exists, refused.stderr);
  assert.match(expectOneErrorLine(refused.stderr), /other\.bin already exists and is not this file/);
  assert.equal(await Deno.readTextFile(other), "keep me");

  const help = await env.clientOk([], "request-file", "--help");
  assert.match(help.stdout, /Examples:\n {2}client\.ts request-file --file-id/);
});

Deno.test("e2e: client.ts request-status and request-stop follow and stop a running peer's download", async () => {
  await using env = new E2E();
  const srcDir = await env.tempDir(), downloads = await env.tempDir();
  const home = await env.tempDir("shoal-e2e-home-");
  await writeRandomFile(join(srcDir, "data.bin"), 3 * MiB);
  const tracker = await env.tracker();
  await env.peer({ shared: srcDir, tracker: tracker.addr, chunkSize: CHUNK_SIZE });
  // 128 KiB/s: 3 MiB would take 24 s, so the download is still running while the client looks at it and stops it.
  const { peer, addr } = await controlledPeer(env, tracker.addr, home, downloads, "128k");
  const ctl = ["--home", home];

  const none = await env.clientOk(ctl, "request-status", "--peer-addr", addr);
  assert.equal(none.stdout, `${addr} has no downloads\n`);
  const dataId = (await env.clientOk(["--tracker", tracker.addr], "files", "--json")).json<FileEntry[]>()[0]!.id;
  await env.clientOk(ctl, "request-file", "--file-id", dataId, "--peer-addr", addr);

  type Row = { number: number; state: string; doneBytes: number; size: number; peers: number; error?: string };
  let rows: Row[] = [];
  await waitUntil(
    async () => {
      rows = (await env.clientOk(ctl, "request-status", "--peer-addr", addr, "--json")).json<Row[]>();
      return rows.length === 1 && rows[0]!.doneBytes > 0;
    },
    DOWNLOAD_TIMEOUT_MS,
    "the peer to have some of the file",
  );
  assert.equal(rows[0]!.state, "downloading");
  assert.equal(rows[0]!.peers, 1);
  const human = await env.clientOk(ctl, "request-status", "--peer-addr", addr);
  assert.match(
    human.stdout,
    /^#1 {2}data\.bin {2}downloading {2}\d+\.\d% {2}.* of 3\.00 MiB {2}.*\/s {2}1 peer\(s\)\n$/,
  );

  const stop = await env.clientOk(ctl, "request-stop", "--file", "#1", "--peer-addr", addr);
  assert.match(stop.stdout, /^#1 {2}data\.bin {2}stopped at \d+\.\d%: progress saved; download it again to resume\n$/);
  await peer.waitForLine(/^#1 data\.bin: stopped: progress saved/);
  const after = (await env.clientOk(ctl, "request-status", "--peer-addr", addr, "--json")).json<Row[]>();
  assert.equal(after[0]!.state, "stopped");
  assert.ok(after[0]!.doneBytes < after[0]!.size);
  assert.ok(await Deno.stat(join(downloads, "data.bin.part.json")), "the sidecar is kept for a resume");
  assert.equal(await Deno.stat(join(downloads, "data.bin")).catch(() => null), null, "no finished file appears");

  const twice = await env.client(ctl, "request-stop", "--file", "data.bin", "--peer-addr", addr);
  assert.equal(twice.code, EXIT.usage, twice.stderr);
  assert.match(expectOneErrorLine(twice.stderr), /#1 data\.bin is not downloading \(it is stopped\)/);
  const unknown = await env.client(ctl, "request-stop", "--file", "nope.bin", "--peer-addr", addr);
  assert.equal(unknown.code, EXIT.notFound, unknown.stderr);
  const help = await env.clientOk([], "request-stop", "--help");
  assert.match(help.stdout, /Examples:\n {2}client\.ts request-stop --file '#2'/);
});
