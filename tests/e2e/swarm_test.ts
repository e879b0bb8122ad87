/**
 * End-to-end, issue 3: downloads from several peers that die, lie, or hold
 * only part of the file; a client killed and rerun; damaged resume state.
 *
 * Slow transfers come from `--upload-limit` on the serving peers; every
 * "mid-download" point is found by polling the client's resume sidecar
 * (`<out>.part.json`), never by sleeping.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Bitfield } from "../../lib/bitfield.ts";
import { fileIdOf, hashFile } from "../../lib/manifest.ts";
import { writeSidecar } from "../../lib/sidecar.ts";
import {
  E2E,
  exists,
  type FileEntry,
  type GetSummary,
  MiB,
  type PeerEntry,
  readSidecarProgress,
  sha256File,
  waitUntil,
  writeRandomFile,
  zeroChunks,
} from "./harness.ts";

/** Bound on any single wait for progress. */
const PROGRESS_TIMEOUT_MS = 30_000;

/** Waits until the sidecar at `out.part.json` marks at least `min` chunks done; returns its count. */
async function waitForProgress(out: string, min: number, what: string): Promise<number> {
  const p = await waitUntil(
    async () => {
      const s = await readSidecarProgress(`${out}.part.json`);
      return s && s.done >= min ? s : null;
    },
    PROGRESS_TIMEOUT_MS,
    `${what}: ${min} chunks in ${out}.part.json`,
  );
  return p.done;
}

Deno.test("e2e swarm: a peer SIGKILLed mid-download; the other two finish it", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const size = 32 * MiB, chunks = 128; // 256 KiB chunks
  const sha = await writeRandomFile(`${dir}/big.bin`, size);
  const tracker = await env.tracker();
  const peers = await Promise.all(
    [0, 1, 2].map(() => env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", uploadLimit: "3m" })),
  );

  const target = `${out}/big.bin`;
  const client = await env.spawn("client.ts", ["--tracker", tracker.addr, "get", "big.bin", "-o", target, "--json"]);
  await waitForProgress(target, Math.ceil(chunks * 0.35), "before the kill");
  const victim = peers[2]!;
  victim.proc.kill("SIGKILL");
  await victim.proc.wait();
  assert.equal(await exists(target), false, "the download was still running when the peer died");

  const status = await client.wait(60_000);
  assert.equal(status.code, 0, client.describe());
  const s = JSON.parse(client.stdout) as GetSummary;
  assert.equal(await sha256File(target), sha);
  assert.equal(s.chunksFetched, chunks);
  assert.ok((s.bytesPerPeer[victim.addr] ?? 0) > 0, `the killed peer served before it died: ${client.stdout}`);
  assert.ok(
    s.peersDropped.some((d) => d.peer === victim.addr),
    `the killed peer is reported dropped: ${client.stdout}`,
  );
  for (const p of peers.slice(0, 2)) assert.ok((s.bytesPerPeer[p.addr] ?? 0) > 0, `${p.addr} served`);
  assert.equal(Object.values(s.bytesPerPeer).reduce((a, b) => a + b, 0), size);
});

Deno.test("e2e swarm: a corrupting peer is dropped and its chunks fetched again", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const sha = await writeRandomFile(`${dir}/data.bin`, 4 * MiB);
  const tracker = await env.tracker();
  // the good peer is slowed so the corrupt one surely gets requests before the end
  const [good, bad] = await Promise.all([
    env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", uploadLimit: "1m" }),
    env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", corrupt: true }),
  ]);

  const r = await env.clientOk(["--tracker", tracker.addr], "get", "data.bin", "-o", `${out}/data.bin`, "--json");
  const s = r.json<GetSummary>();
  assert.equal(await sha256File(`${out}/data.bin`), sha);
  const dropped = s.peersDropped.find((d) => d.peer === bad.addr);
  assert.ok(dropped, `the corrupt peer ${bad.addr} is named in peersDropped: ${r.stdout}`);
  assert.match(dropped.reason, /SHA-256|hash|corrupt/i);
  assert.ok(s.chunksRefetched > 0, `a bad chunk was fetched again: ${r.stdout}`);
  assert.ok(!s.peersDropped.some((d) => d.peer === good.addr), `the good peer is kept: ${r.stdout}`);
  assert.equal(s.bytesPerPeer[bad.addr] ?? 0, 0, "no byte from the corrupt peer was accepted");
  assert.equal(s.bytesPerPeer[good.addr], 4 * MiB);
});

Deno.test("e2e swarm: a client SIGKILLed at several points resumes each time", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const chunks = 64; // 16 MiB in 256 KiB chunks
  const sha = await writeRandomFile(`${dir}/resume.bin`, 16 * MiB);
  const tracker = await env.tracker();
  await env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", uploadLimit: "2m" });
  const target = `${out}/resume.bin`;
  const get = (...extra: string[]) =>
    env.spawn("client.ts", ["--tracker", tracker.addr, "get", "resume.bin", "-o", target, ...extra]);

  // killed right at the start: the .part exists, maybe no sidecar yet
  const c0 = await get();
  await waitUntil(() => exists(`${target}.part`), PROGRESS_TIMEOUT_MS, `${target}.part`);
  c0.kill("SIGKILL");
  await c0.wait();

  // killed at ~20%
  const c1 = await get();
  await waitForProgress(target, Math.ceil(chunks * 0.2), "run 1");
  c1.kill("SIGKILL");
  await c1.wait();
  const k1 = (await readSidecarProgress(`${target}.part.json`))!.done;
  assert.ok(k1 < chunks, "run 1 was killed before the end");

  // killed at ~60%; it must have reused what run 1 saved
  const c2 = await get();
  const resumed = await c2.waitForLine(/^resuming: reused (\d+) of (\d+) chunks/, PROGRESS_TIMEOUT_MS, "stderr");
  assert.equal(Number(resumed[1]), k1, "every chunk the sidecar marked was reused");
  assert.equal(Number(resumed[2]), chunks);
  await waitForProgress(target, Math.ceil(chunks * 0.6), "run 2");
  c2.kill("SIGKILL");
  await c2.wait();
  const k2 = (await readSidecarProgress(`${target}.part.json`))!.done;
  assert.ok(k2 > k1 && k2 < chunks, `run 2 progressed and was killed before the end (${k1} -> ${k2})`);
  assert.equal(await exists(target), false);

  // the last run finishes, fetching only what is missing
  const c3 = await get("--json");
  const status = await c3.wait(60_000);
  assert.equal(status.code, 0, c3.describe());
  const s = JSON.parse(c3.stdout) as GetSummary;
  assert.equal(await sha256File(target), sha);
  assert.equal(s.chunksReused, k2);
  assert.ok(s.chunksReused > 0);
  assert.equal(s.chunksFetched, chunks - k2);
  assert.ok(s.chunksFetched < chunks);
  // the rate counts only this run's bytes: the reused chunks took no time here
  assert.equal(s.bytesFetched, (chunks - k2) * 256 * 1024);
  assert.ok(Math.abs(s.mbPerSecond - s.bytesFetched / 1e6 / s.seconds) < 1e-6 * s.mbPerSecond + 1e-9);
  assert.equal(await exists(`${target}.part`), false);
  assert.equal(await exists(`${target}.part.json`), false);
});

Deno.test("e2e swarm: SIGINT and SIGTERM save progress; the rerun re-checks it, refetches a damaged chunk, reuses the rest", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const chunkSize = 256 * 1024, chunks = 96; // 24 MiB
  const sha = await writeRandomFile(`${dir}/sig.bin`, chunks * chunkSize);
  const tracker = await env.tracker();
  await env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", uploadLimit: "4m" });
  const target = `${out}/sig.bin`, sidecar = `${target}.part.json`;
  const get = (...extra: string[]) =>
    env.spawn("client.ts", ["--tracker", tracker.addr, "get", "sig.bin", "-o", target, ...extra]);
  /** Stops `c` with `signal`; checks it says how many chunks it saved, and that the sidecar holds exactly that. */
  const stop = async (c: Awaited<ReturnType<typeof get>>, signal: Deno.Signal) => {
    c.kill(signal);
    const status = await c.wait();
    assert.equal(status.code, 130, `${signal}: ${c.describe()}`);
    const said = /^error: Download interrupted; (\d+) of (\d+) chunks are saved in (.+): run the same command again/m
      .exec(c.stderr);
    assert.ok(said, `${signal}: the client says what it saved: ${c.stderr}`);
    assert.equal(Number(said[2]), chunks);
    assert.equal(said[3], sidecar);
    const p = (await readSidecarProgress(sidecar))!;
    assert.equal(p.done, Number(said[1]), `${signal}: the sidecar was written on the way out`);
    assert.equal(await exists(target), false);
    return p;
  };

  // SIGINT early on (stderr is a pipe: no bar, and too early for a progress line)
  const c1 = await get("--json");
  await waitForProgress(target, 8, "before SIGINT");
  const p1 = await stop(c1, "SIGINT");
  assert.ok(p1.done >= 8 && p1.done < chunks, `SIGINT at ${p1.done} chunks`);
  // --json says why it failed and what it had done, as at the end of a download
  const failed = JSON.parse(c1.stdout) as GetSummary & {
    error: { code: string; exitCode: number };
    chunksMissing: number;
  };
  assert.deepEqual([failed.error.code, failed.error.exitCode], ["interrupted", 130]);
  assert.deepEqual([failed.chunksFetched, failed.chunksMissing], [p1.done, chunks - p1.done]);
  assert.equal(Object.values(failed.bytesPerPeer).reduce((a, b) => a + b, 0), p1.done * chunkSize);

  // SIGTERM a few seconds into the resumed run, which prints a progress line every 3 s on a pipe
  const c2 = await get();
  const resumed = await c2.waitForLine(/^resuming: reused (\d+) of \d+ chunks/, PROGRESS_TIMEOUT_MS, "stderr");
  assert.equal(Number(resumed[1]), p1.done);
  const line = await c2.waitForLine(
    /^get: +(\d+\.\d)% {2}\S+ \S+\/24\.0 MiB {2}\S+ \S+\/s {2}ETA \S+ {2}1 peer\(s\)$/,
    PROGRESS_TIMEOUT_MS,
    "stderr",
  );
  assert.ok(Number(line[1]) > (100 * p1.done) / chunks, `the line shows progress: ${line[0]}`);
  const p2 = await stop(c2, "SIGTERM");
  assert.ok(p2.done > p1.done && p2.done < chunks, `SIGTERM at ${p2.done} chunks`);

  // damage one chunk the sidecar marks done: the rerun's check finds it (--json is quiet) and fetches it again
  const damaged = [...Array(chunks).keys()].find((i) => new Bitfield(chunks, p2.bits).has(i))!;
  await zeroChunks(`${target}.part`, chunkSize, [damaged]);
  const c3 = await get("--json");
  const status = await c3.wait(60_000);
  assert.equal(status.code, 0, c3.describe());
  const s = JSON.parse(c3.stdout) as GetSummary;
  assert.equal(s.chunksReused, p2.done - 1);
  assert.equal(s.chunksFetched, chunks - p2.done + 1);
  assert.equal(await sha256File(target), sha);
});

Deno.test("e2e swarm: a second client on the same output is refused and the first ends correct", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  // 4 MiB in 128 KiB chunks at 1 MiB/s: the first client takes 4 s, time enough for the second to start and look the
  // file up while it runs, even with most of the CPU gone (at 2 s, a machine losing 75% of its CPU let the first one
  // finish before the second came to the .part).
  const chunks = 32;
  const sha = await writeRandomFile(`${dir}/twice.bin`, 4 * MiB);
  const peer = await env.peer({ shared: dir, chunkSize: "128k", uploadLimit: "1m" });
  const target = `${out}/twice.bin`;
  const first = await env.spawn("client.ts", ["--peers", peer.addr, "get", "twice.bin", "-o", target, "--json"]);
  await waitForProgress(target, 2, "first client");
  // Before the .part was locked, this one restarted it under the first, which then saved a file with holes.
  const second = await env.client(["--peers", peer.addr], "get", "twice.bin", "-o", target, "--force");
  assert.equal(second.code, 9, second.stderr);
  assert.match(second.stderr.trim().split("\n").at(-1)!, /^error: Another download is writing .*twice\.bin\.part/);
  const status = await first.wait(60_000);
  assert.equal(status.code, 0, first.describe());
  assert.equal((JSON.parse(first.stdout) as GetSummary).chunksFetched, chunks);
  assert.equal(await sha256File(target), sha);
  assert.equal(await exists(`${target}.part`), false);
});

/** The client's fetch workers: Deno names each Web Worker's thread `worker-<n>` (Linux, /proc). */
async function workerThreads(pid: number): Promise<number> {
  let count = 0;
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    const comm = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/comm`).catch(() => "");
    if (/^worker-\d+$/.test(comm.trim())) count++;
  }
  return count;
}

Deno.test("e2e swarm: --workers N downloads with N fetch workers; the default is one per core", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  await writeRandomFile(`${dir}/w.bin`, 16 * MiB); // 64 chunks of 256 KiB: more than any worker count here
  const peer = await env.peer({ shared: dir, chunkSize: "256k", uploadLimit: "2m" });
  const cores = navigator.hardwareConcurrency;
  for (const [flags, want] of [[["--workers", "3"], 3], [["--workers", "1"], 1], [[], cores]] as const) {
    const target = `${out}/w${want}-${flags.length}.bin`;
    const c = await env.spawn("client.ts", ["--peers", peer.addr, "get", "w.bin", "-o", target, ...flags]);
    await waitForProgress(target, 1, `get ${flags.join(" ")}`); // the workers are up and fetching
    assert.equal(await workerThreads(c.pid), want, `get ${flags.join(" ")}: worker threads`);
    c.kill("SIGINT");
    assert.equal((await c.wait()).code, 130, c.describe());
  }
});

Deno.test("e2e swarm: get --upload-limit caps what a seeding client serves; --download-limit caps what a client fetches", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const sha = await writeRandomFile(`${dir}/l.bin`, 4 * MiB); // 16 chunks of 256 KiB
  const peer = await env.peer({ shared: dir, chunkSize: "256k" }); // no limit of its own
  // Each bucket starts with a second's worth (1 MiB); the other 3 MiB come at 1 MiB/s. Unlimited this takes well under
  // a second here.
  const least = 3 * 0.9;

  const seeding = await env.spawn("client.ts", [
    "--peers",
    peer.addr,
    "get",
    "l.bin",
    "-o",
    `${out}/a`,
    "--seed",
    "--upload-limit",
    "1m",
    "--json",
  ]);
  // With --json the note goes to stderr: stdout is the summary alone.
  const at = (await seeding.waitForLine(/^seeding on (\S+) until interrupted$/, 30_000, "stderr"))[1]!;
  const fromSeeder = (await env.clientOk(["--peers", at], "get", "l.bin", "-o", `${out}/b`, "--json")).json<
    GetSummary
  >();
  assert.equal(await sha256File(`${out}/b`), sha);
  assert.deepEqual(Object.keys(fromSeeder.bytesPerPeer), [at], "all of it from the seeding client");
  assert.ok(fromSeeder.seconds >= least, `served at 1 MiB/s: ${fromSeeder.seconds} s`);
  seeding.kill("SIGTERM");
  assert.equal((await seeding.wait()).code, 0, seeding.describe());
  assert.equal((JSON.parse(seeding.stdout) as GetSummary).bytes, 4 * MiB, "stdout is the JSON summary alone");

  const args = ["get", "l.bin", "-o", `${out}/c`, "--json", "--download-limit", "1m"];
  const limited = (await env.clientOk(["--peers", peer.addr], ...args)).json<GetSummary>();
  assert.equal(await sha256File(`${out}/c`), sha);
  assert.ok(limited.seconds >= least, `fetched at 1 MiB/s: ${limited.seconds} s`);
});

Deno.test("e2e swarm: after the only seeder leaves, two partial sources serve a third client", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), work = await env.tempDir();
  const chunkSize = 256 * 1024, chunks = 32; // 8 MiB
  const sha = await writeRandomFile(`${dir}/swarm.bin`, chunks * chunkSize);

  // 1. The seeder S, slow (about one chunk a second), is the only complete source.
  //    Expiry is long enough that C1 stays listed while it is paused below.
  const tracker = await env.tracker(200, 6000);
  const seeder = await env.peer({ shared: dir, tracker: tracker.addr, chunkSize: "256k", uploadLimit: "256k" });
  const src = ["--tracker", tracker.addr];
  const fileId = (await env.clientOk(src, "files", "--json")).json<FileEntry[]>()[0]!.id;
  const partialSources = async () =>
    (await env.clientOk(src, "peers", fileId, "--json")).json<PeerEntry[]>().filter((p) => !p.complete)
      .map((p) => `${p.host}:${p.port}`);

  // 2. Interrupted downloads, as the client leaves them: C1's holds the even
  //    chunks, C2's the odd ones (the .part has zeros elsewhere; the sidecar is
  //    written by lib/sidecar.ts itself). Waiting for a random download to
  //    split this way would be a race; this makes the split exact.
  const manifest = await hashFile(`${dir}/swarm.bin`, "swarm.bin", chunkSize);
  assert.equal(fileIdOf(manifest), fileId, "setup: the manifest hashed here is the one the seeder announced");
  const even = [...Array(chunks).keys()].filter((i) => i % 2 === 0);
  const odd = [...Array(chunks).keys()].filter((i) => i % 2 === 1);
  const out1 = `${work}/c1.bin`, out2 = `${work}/c2.bin`, out3 = `${work}/c3.bin`;
  for (const [out, have, lack] of [[out1, even, odd], [out2, odd, even]] as const) {
    await Deno.copyFile(`${dir}/swarm.bin`, `${out}.part`);
    await zeroChunks(`${out}.part`, chunkSize, [...lack]);
    const done = new Bitfield(chunks);
    for (const i of have) done.set(i);
    await writeSidecar(`${out}.part.json`, { fileId, size: manifest.size, chunkSize, done });
  }

  // 3. C1 resumes with the even half and announces itself as a partial source.
  //    It is then paused (SIGSTOP) so that C2, which will learn of it, cannot
  //    complete from it while S is alive.
  const c1 = await env.spawn("client.ts", [...src, "get", fileId, "-o", out1, "--seed"]);
  const r1 = await c1.waitForLine(/^resuming: reused (\d+) of (\d+) chunks(.*)$/, 30_000, "stderr");
  assert.deepEqual([r1[1], r1[2], r1[3]], [`${chunks / 2}`, `${chunks}`, ""], "C1 resumed with the even half");
  const c1Addr = (await waitUntil(async () => (await partialSources())[0], 10_000, "C1 as a partial source"))!;
  c1.kill("SIGSTOP");

  // 4. C2 resumes with the odd half; it learns of S and C1.
  const c2 = await env.spawn("client.ts", [...src, "get", fileId, "-o", out2, "--seed"]);
  const r2 = await c2.waitForLine(/^resuming: reused (\d+) of (\d+) chunks(.*)$/, 30_000, "stderr");
  assert.deepEqual([r2[1], r2[2], r2[3]], [`${chunks / 2}`, `${chunks}`, ""], "C2 resumed with the odd half");
  const c2Addr = await waitUntil(
    async () => (await partialSources()).find((a) => a !== c1Addr),
    10_000,
    "C2 as a partial source",
  );

  // 5. Together they hold every chunk, neither holds all: S leaves.
  assert.equal(await exists(out1), false, "C1 is not complete");
  assert.equal(await exists(out2), false, "C2 is not complete");
  seeder.proc.kill("SIGKILL");
  await seeder.proc.wait();
  c1.kill("SIGCONT");

  // 6. C3 downloads from the two partial sources only.
  const r3 = await env.clientOk(src, "get", fileId, "-o", out3, "--json");
  const s3 = r3.json<GetSummary>();
  assert.equal(await sha256File(out3), sha);
  const sources = Object.keys(s3.bytesPerPeer).filter((p) => s3.bytesPerPeer[p]! > 0);
  assert.ok(sources.length > 0);
  for (const p of sources) assert.ok([c1Addr, c2Addr].includes(p), `C3 fetched from ${p}, not C1/C2: ${r3.stdout}`);
  assert.equal(s3.bytesPerPeer[seeder.addr] ?? 0, 0, "nothing came from the departed seeder");

  // C1 and C2 complete from each other, then stop cleanly on SIGTERM.
  for (const [c, out] of [[c1, out1], [c2, out2]] as const) {
    await c.waitForLine(/^saved /, 30_000);
    assert.equal(await sha256File(out), sha);
    c.kill("SIGTERM");
    assert.equal((await c.wait()).code, 0, c.describe());
  }
});

Deno.test("e2e swarm: damaged resume state is reported, and the chunks on disk are checked instead of thrown away", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), work = await env.tempDir();
  const chunks = 16; // 4 MiB in 256 KiB chunks
  await writeRandomFile(`${dir}/x.bin`, 4 * MiB);
  await writeRandomFile(`${dir}/y.bin`, 4 * MiB);
  const sha = await sha256File(`${dir}/x.bin`);
  // a slow peer to make partial downloads, a fast one to finish them (direct mode)
  const [slow, fast] = await Promise.all([
    env.peer({ shared: dir, chunkSize: "256k", uploadLimit: "1m" }),
    env.peer({ shared: dir, chunkSize: "256k" }),
  ]);

  /** A download of `name` into `out` from the slow peer, killed once its sidecar shows progress. */
  const partial = async (name: string, out: string) => {
    const c = await env.spawn("client.ts", ["--peers", slow.addr, "get", name, "-o", out, "--no-share"]);
    await waitForProgress(out, 2, `partial ${name}`);
    c.kill("SIGKILL");
    await c.wait();
    const p = (await readSidecarProgress(`${out}.part.json`))!;
    assert.ok(p.done < chunks, `${name} was killed before the end`);
    return p;
  };
  const px = await partial("x.bin", `${work}/x-orig`);
  await partial("y.bin", `${work}/y-orig`);

  /** A copy of the partial x download at `${work}/${name}`, with its sidecar taken from `sidecarFrom`. */
  const copyState = async (name: string, sidecarFrom = `${work}/x-orig`) => {
    const out = `${work}/${name}`;
    await Deno.copyFile(`${work}/x-orig.part`, `${out}.part`);
    await Deno.copyFile(`${sidecarFrom}.part.json`, `${out}.part.json`);
    return out;
  };
  /** Reruns the download of x into `out` from the fast peer; checks the result; returns stderr. */
  const rerun = async (out: string, ...more: string[]) => {
    const r = await env.clientOk(["--peers", fast.addr], "get", "x.bin", "-o", out, ...more);
    assert.equal(await sha256File(out), sha, `${out} is correct`);
    assert.equal(await exists(`${out}.part.json`), false);
    return r.stderr;
  };

  // baseline: intact state is resumed, not restarted
  const intact = await rerun(await copyState("intact"));
  assert.match(intact, new RegExp(`^resuming: reused ${px.done} of ${chunks} chunks`, "m"));
  assert.doesNotMatch(intact, /starting over/);

  // a sidecar with bytes flipped
  const flipped = await copyState("flipped");
  const bytes = await Deno.readFile(`${flipped}.part.json`);
  for (const at of [0.3, 0.5, 0.7]) bytes[Math.floor(bytes.length * at)]! ^= 0xff;
  await Deno.writeFile(`${flipped}.part.json`, bytes);
  /** How many chunks the rerun said it reused. */
  const reusedIn = (stderr: string) => Number(/^resuming: reused (\d+) of 16 chunks/m.exec(stderr)?.[1] ?? -1);
  // Every chunk of the .part is checked: those the sidecar marked, and any written after its last save.
  const e1 = await rerun(flipped);
  assert.match(e1, /^ignoring .*flipped\.part\.json: .*; checking every chunk of .*flipped\.part$/m, e1);
  assert.match(e1, /^resuming: reused \d+ of 16 chunks, found intact$/m, e1);
  assert.ok(reusedIn(e1) >= px.done, e1);

  // the sidecar of another file's download: that download's progress, kept and refused (exit 7) unless --force;
  // with it, the same as damage
  const foreign = await copyState("foreign", `${work}/y-orig`);
  const before = await sha256File(`${foreign}.part`);
  const refused = await env.client(["--peers", fast.addr], "get", "x.bin", "-o", foreign);
  assert.equal(refused.code, 7, refused.stderr);
  assert.match(
    refused.stderr,
    /foreign\.part holds another download's progress: \d+ of 16 chunks of file /,
    refused.stderr,
  );
  assert.match(refused.stderr, / -o \S*foreign; to download this file there instead, use --force/, refused.stderr);
  assert.equal(await sha256File(`${foreign}.part`), before, "the other download's .part is untouched");
  assert.equal(await exists(foreign), false);
  const e2 = await rerun(foreign, "--force");
  assert.match(e2, /^ignoring .*foreign\.part\.json: it belongs to another file.*; checking every chunk/m, e2);
  assert.ok(reusedIn(e2) >= px.done, e2);

  // a .part cut short: the marked chunks still whole in it are kept
  const short = await copyState("short");
  await Deno.truncate(`${short}.part`, 2 * MiB + 1);
  const e3 = await rerun(short);
  assert.match(e3, /^\S*short\.part is 2097153 bytes, not 4194304: checking the chunks .* marks done$/m, e3);
  const marked = new Bitfield(chunks, px.bits);
  assert.equal(reusedIn(e3), [...Array(8).keys()].filter((i) => marked.has(i)).length, e3);

  // the slow peer was only there to make partial state
  assert.equal(slow.proc.status, null);
});
