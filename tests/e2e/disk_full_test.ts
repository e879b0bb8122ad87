/**
 * End-to-end: a download on a disk without room for it. The client says so
 * before fetching anything; when the disk fills up halfway through, it stops
 * with a disk error and keeps its progress; either way it leaves no output
 * file (exit 8), and once there is room the same command finishes the file.
 *
 * The "disk" is a small tmpfs this test mounts (root, which the test
 * command has: it also installs packages) and unmounts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { statfsSync } from "node:fs";
import {
  E2E,
  exists,
  type GetSummary,
  MiB,
  readSidecarProgress,
  sha256File,
  waitUntil,
  writeRandomFile,
} from "./harness.ts";

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
}

/**
 * The scenario, in `chunkSize` chunks: under 1 MiB they are written through
 * the page cache, from 1 MiB directly on a thread of their own (tmpfs takes
 * O_DIRECT on current kernels); `waitFor` chunks are done before the disk
 * fills up.
 */
async function diskFull(chunkSize: "256k" | "1m", waitFor: number) {
  await using env = new E2E();
  const dir = await env.tempDir(), mnt = await env.tempDir();
  const size = 16 * MiB, chunks = chunkSize === "1m" ? 16 : 64;
  const sha = await writeRandomFile(`${dir}/big.bin`, size);
  const tracker = await env.tracker();
  await Promise.all(
    [0, 1].map(() => env.peer({ shared: dir, tracker: tracker.addr, chunkSize, uploadLimit: "2m" })),
  );
  const target = `${mnt}/big.bin`;
  const args = ["--tracker", tracker.addr, "get", "big.bin", "-o", target, "--json"];

  await run("mount", ["-t", "tmpfs", "-o", "size=6m", "shoal-e2e-full", mnt]);
  try {
    // 1. Not enough room at all: a clear message before any chunk is fetched.
    const early = await env.spawn("client.ts", args);
    assert.equal((await early.wait(30_000)).code, 8, `exit 8 (disk) expected: ${early.describe()}`);
    assert.match(early.stderr, /Not enough free space for big\.bin: 16\.0 MiB still to write, \d/, early.describe());
    assert.ok(early.stderr.includes(` free in ${mnt}; free some space`), early.describe());
    assert.equal(await exists(target), false);
    assert.equal(await exists(`${target}.part`), false, "an empty .part is not left behind");

    // 2. Room at the start, none halfway: the disk fills up under the download.
    await run("mount", ["-o", "remount,size=24m", mnt]);
    const full = await env.spawn("client.ts", args);
    await waitUntil(
      async () => ((await readSidecarProgress(`${target}.part.json`))?.done ?? 0) >= waitFor,
      30_000,
      `${waitFor} chunks`,
    );
    const st = statfsSync(mnt);
    await Deno.writeFile(`${mnt}/filler`, new Uint8Array(st.bavail * st.bsize)).catch(() => {}); // full either way
    assert.equal((await full.wait(30_000)).code, 8, `exit 8 (disk) expected: ${full.describe()}`);
    assert.match(full.stderr, /Cannot write the \.part file: Disk full: No space left on device/, full.describe());
    assert.match(
      full.stderr,
      /\. \d+ of \d+ chunks are saved in \S+big\.bin\.part\.json: run the same command again once there is room/,
      full.describe(),
    );
    assert.equal(await exists(target), false, "no output file after a failed download");
    const kept = await readSidecarProgress(`${target}.part.json`);
    assert.ok(kept && kept.done >= waitFor && kept.done < chunks, `progress kept: ${JSON.stringify(kept)}`);

    // 3. Room again: the same command resumes and finishes with the right bytes.
    await Deno.remove(`${mnt}/filler`);
    const again = await env.spawn("client.ts", args);
    assert.equal((await again.wait(60_000)).code, 0, again.describe());
    const s = JSON.parse(again.stdout) as GetSummary;
    assert.equal(await sha256File(target), sha);
    assert.equal(s.chunksReused + s.chunksFetched, chunks);
    assert.ok(s.chunksReused >= kept.done, `every chunk the sidecar kept is reused: ${again.stdout}`);
    if (chunkSize === "1m") assert.equal(s.chunksWrittenDirect, s.chunksFetched, `written directly: ${again.stdout}`);
    else assert.equal(s.chunksWrittenDirect, 0);
  } finally {
    await run("umount", [mnt]);
  }
}

Deno.test("e2e disk full: refused up front without room; stopped and kept when the disk fills; finished once there is room", async () => {
  await diskFull("256k", 20);
});

Deno.test("e2e disk full, 1 MiB chunks written directly on their own threads: the same", async () => {
  await diskFull("1m", 5);
});
