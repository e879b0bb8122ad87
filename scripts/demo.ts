/**
 * A local demo: a tracker, two peers sharing generated files, and a client
 * that downloads the large one from both and checks its SHA-256.
 *
 *   deno task demo [--size 64m] [--keep]
 *
 * Everything runs as real processes on loopback, on free ports, in
 * ./demo/ (removed at the end unless --keep).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { formatBytes, parseSize } from "../lib/cli.ts";

const root = new URL("..", import.meta.url).pathname;
const { values } = parseArgs({
  args: Deno.args,
  options: { size: { type: "string", default: "64m" }, keep: { type: "boolean" } },
});
const size = parseSize(values.size!, "--size");
const dir = join(root, "demo");
const children: Deno.ChildProcess[] = [];

function spawn(script: string, args: string[]): { child: Deno.ChildProcess; lines: AsyncIterator<string> } {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(root, script), ...args],
    stdin: "null", // a peer on the demo's terminal would open its shell there
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
  }).spawn();
  children.push(child);
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())[Symbol.asyncIterator]();
  return { child, lines };
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, ctl) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) ctl.enqueue(p);
    },
    flush(ctl) {
      if (rest) ctl.enqueue(rest);
    },
  });
}

/** Reads lines (echoing them) until one matches; bounded by `ms`. */
async function waitFor(lines: AsyncIterator<string>, re: RegExp, who: string, ms = 60_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const next = await Promise.race([
      lines.next(),
      new Promise<null>((r) => timer = setTimeout(() => r(null), deadline - Date.now())),
    ]);
    clearTimeout(timer);
    if (next === null || next.done) break;
    console.log(`  [${who}] ${next.value}`);
    const m = next.value.match(re);
    if (m) {
      // keep echoing the rest in the background
      (async () => {
        for (let r = await lines.next(); !r.done; r = await lines.next()) console.log(`  [${who}] ${r.value}`);
      })().catch(() => {});
      return m;
    }
  }
  throw new Error(`${who} did not print ${re} within ${ms} ms`);
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  const buf = new Uint8Array(1024 * 1024);
  for (let left = bytes; left > 0;) {
    const n = Math.min(left, buf.length);
    for (let i = 0; i < n; i += 65536) crypto.getRandomValues(buf.subarray(i, Math.min(n, i + 65536)));
    let at = 0;
    while (at < n) at += await f.write(buf.subarray(at, n));
    left -= n;
  }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  const buf = new Uint8Array(1024 * 1024);
  for (let n = await f.read(buf); n !== null; n = await f.read(buf)) h.update(buf.subarray(0, n));
  return h.digest("hex");
}

async function main(): Promise<number> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  const [a, b, cache] = ["peer-a", "peer-b", "cache"].map((d) => join(dir, d));
  for (const d of [a!, b!, cache!]) await Deno.mkdir(d, { recursive: true });
  console.log(`generating a ${formatBytes(size)} random file, shared by two peers`);
  await writeRandomFile(join(a!, "big.bin"), size);
  await Deno.copyFile(join(a!, "big.bin"), join(b!, "big.bin"));
  await Deno.writeTextFile(join(a!, "hello.txt"), "Hello from Shoal!\n");
  await Deno.writeTextFile(join(b!, "notes.txt"), "Peer B shares this note.\n");
  const want = await sha256File(join(a!, "big.bin"));

  const tracker = spawn("tracker.ts", ["--port", "0", "--db", ":memory:"]);
  const [, trackerAddr] = await waitFor(tracker.lines, /tracker listening on (\S+)/, "tracker");
  for (const [name, d] of [["peer-a", a!], ["peer-b", b!]] as const) {
    const p = spawn("peer.ts", ["--shared", d, "--tracker", trackerAddr!, "--cache-dir", join(cache!, name)]);
    await waitFor(p.lines, /registered with tracker/, name);
  }
  const client = ["run", "-A", join(root, "client.ts"), "--tracker", trackerAddr!];
  const run = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...client, ...args],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    return { ok: out.success, text };
  };
  console.log("\n$ client files");
  console.log((await run(["files"])).text);
  const out = join(dir, "downloaded.bin");
  console.log(`$ client get big.bin -o ${out}`);
  const got = await run(["get", "big.bin", "-o", out, "--json", "--quiet"]);
  if (!got.ok) throw new Error("the download failed");
  const summary = JSON.parse(got.text);
  const have = await sha256File(out);
  console.log(
    `  downloaded ${formatBytes(summary.bytesFetched)} in ${summary.seconds.toFixed(2)} s: ${
      summary.mbPerSecond.toFixed(1)
    } MB/s`,
  );
  console.log(`  bytes per peer: ${JSON.stringify(summary.bytesPerPeer)}`);
  console.log(`  sha256 ${have} ${have === want ? "matches the original" : `DIFFERS from ${want}`}`);
  return have === want ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
} finally {
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch {
      // already exited
    }
  }
  await Promise.allSettled(children.map((c) => c.status));
  if (!values.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
}
console.log(code === 0 ? "\ndemo OK" : "\ndemo FAILED");
Deno.exit(code);
