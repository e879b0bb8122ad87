/**
 * End-to-end, issue 5: a running peer watches its shared folder. A file
 * dropped in is listed by the tracker within seconds and downloads intact;
 * removed, it is withdrawn. Real `tracker.ts`, `peer.ts` and `client.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { E2E, type FileEntry, type GetSummary, MiB, sha256File, waitUntil, writeRandomFile } from "./harness.ts";

/** How long a change may take to reach `client.ts files`: about a second of watcher time, the rest is slack for load. */
const SHOW_MS = 20_000;
/** Between two `files` runs while waiting (each one starts a Deno process). */
const POLL_MS = 250;

Deno.test("e2e: a file dropped into a peer's shared folder is listed, downloads intact, and is withdrawn when removed", async () => {
  await using env = new E2E();
  const shared = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${shared}/first.bin`, 100 * 1024);
  const tracker = await env.tracker();
  const peer = await env.peer({ shared, tracker: tracker.addr });
  const src = ["--tracker", tracker.addr];
  const names = async () => (await env.clientOk(src, "files", "--json")).json<FileEntry[]>().map((f) => f.name).sort();
  assert.deepEqual(await names(), ["first.bin"]);

  // Dropped in while the peer runs: written in place, 64 KiB at a time, in a subdirectory made for it.
  await Deno.mkdir(`${shared}/new`);
  const sha = await writeRandomFile(`${shared}/new/dropped.bin`, 3 * MiB + 123);
  await waitUntil(async () => (await names()).includes("dropped.bin"), SHOW_MS, "dropped.bin in `files`", POLL_MS);
  await peer.proc.waitForLine(/^shared new\/dropped\.bin \(3\.00 MiB\)$/);
  assert.deepEqual(await names(), ["dropped.bin", "first.bin"]);

  const got = (await env.clientOk(src, "get", "dropped.bin", "-o", `${out}/dropped.bin`, "--json")).json<GetSummary>();
  assert.equal(got.bytes, 3 * MiB + 123);
  assert.equal(await sha256File(`${out}/dropped.bin`), sha, "the download matches the dropped file");

  await Deno.remove(`${shared}/new/dropped.bin`);
  await waitUntil(
    async () => !(await names()).includes("dropped.bin"),
    SHOW_MS,
    "dropped.bin gone from `files`",
    POLL_MS,
  );
  await peer.proc.waitForLine(/^withdrew new\/dropped\.bin$/);
  assert.deepEqual(await names(), ["first.bin"], "the file shared from the start stays");

  // Ctrl-C closes the watcher along with the peer, promptly.
  peer.proc.kill("SIGTERM");
  assert.equal((await peer.proc.wait()).code, 0, peer.proc.describe());
});
