// The command line's help: every command explains itself with examples.
import assert from "node:assert/strict";
import type { Command } from "commander";
import { build } from "../client.ts";
import { ExitCode, UsageError } from "../lib/errors.ts";
import { formatBytes, formatSaved, hangupIgnored, paint } from "../lib/cli.ts";
import type { DownloadSummary } from "../lib/download.ts";
import { outputPath } from "../lib/client.ts";
import { join } from "node:path";
import { delay } from "../lib/async.ts";

function helpOf(c: Command): string {
  let out = "";
  c.configureOutput({ writeOut: (s) => out += s, writeErr: (s) => out += s });
  c.outputHelp();
  return out;
}

Deno.test("client: every command's --help has an example; the top level lists the exit codes", () => {
  const program = build();
  const commands = program.commands.filter((c) => c.name() !== "help");
  assert.ok(commands.length >= 20, `only ${commands.length} commands`);
  for (const c of commands) {
    const help = helpOf(c);
    assert.match(help, /\nExamples?:\n {2}client\.ts /, `${c.name()} --help has no example:\n${help}`);
    const json = c.options.some((o) => o.long === "--json");
    const lists = /^(files|search|peers|status|list_\w+|show_downloads)$/.test(c.name());
    assert.ok(!lists || json, `${c.name()} lists things but has no --json`);
  }
  const top = helpOf(program);
  for (const [c, help] of [[program, top], ...commands.map((c) => [c, helpOf(c)] as const)] as const) {
    const wide = help.split("\n").filter((line) => line.length > 80);
    assert.deepEqual(wide, [], `${c.name()} --help is wider than 80 columns`);
  }
  for (const [name, code] of Object.entries(ExitCode)) {
    const words = name.replace(/[A-Z]/g, (ch) => " " + ch.toLowerCase());
    assert.match(top, new RegExp(`\\n\\s+${code}  ${words}\\n`), `exit code ${code} (${name}) missing from --help`);
  }
});

Deno.test("tracker and peer --help have examples", async () => {
  for (const entry of ["tracker.ts", "peer.ts"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(`../${entry}`, import.meta.url).pathname, "--help"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `${entry} --help exited ${out.code}`);
    assert.match(text, /\nExamples?:\n/, `${entry} --help has no examples`);
  }
});

Deno.test("colour only on a terminal, and never with NO_COLOR", () => {
  const tty = { isTerminal: () => true }, pipe = { isTerminal: () => false };
  const saved = Deno.env.get("NO_COLOR");
  try {
    Deno.env.delete("NO_COLOR");
    assert.equal(paint("x", "red", tty), "\x1b[31mx\x1b[0m");
    assert.equal(paint("x", "red", pipe), "x");
    Deno.env.set("NO_COLOR", "1");
    assert.equal(paint("x", "red", tty), "x");
  } finally {
    if (saved === undefined) Deno.env.delete("NO_COLOR");
    else Deno.env.set("NO_COLOR", saved);
  }
});

Deno.test("sizes and rates read as whole bytes or two to three figures", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(56.2), "56 B", "a rate of a few bytes a second has no long fraction");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(100_000_000), "95.4 MiB");
});

Deno.test("a download's last line gives the rate of what this run fetched, not of chunks reused", () => {
  const base: DownloadSummary = {
    path: "big.bin",
    bytes: 96 * 2 ** 20,
    bytesFetched: 96 * 2 ** 20,
    seconds: 2,
    mbPerSecond: 0,
    alreadyComplete: false,
    chunksReused: 0,
    chunksFetched: 96,
    chunksRefetched: 0,
    chunksWrittenDirect: 0,
    bytesPerPeer: {},
    peersDropped: [],
    chunkBuffers: { made: 0, dropped: 0 },
    chunksHashedInLanes: 0,
    hasher: "native",
  };
  assert.equal(formatSaved(base), "saved big.bin (96.0 MiB) in 2.00 s at 48.0 MiB/s");
  const resumed = { ...base, bytesFetched: 32 * 2 ** 20, chunksReused: 64, chunksFetched: 32 };
  assert.equal(
    formatSaved(resumed),
    "saved big.bin (96.0 MiB) in 2.00 s: 64 of 96 chunks reused, 32.0 MiB fetched at 16.0 MiB/s",
  );
  const there = { ...base, bytesFetched: 0, seconds: 0.25, alreadyComplete: true, chunksReused: 96, chunksFetched: 0 };
  assert.equal(formatSaved(there), "big.bin is already complete (96.0 MiB, all 96 chunks checked in 0.25 s)");
});

Deno.test("output path: a file as given; a directory or a trailing / holds the file's name; unsafe names need a file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-out-" });
  try {
    assert.equal(await outputPath(join(dir, "x.bin"), undefined, "report.pdf"), join(dir, "x.bin"));
    assert.equal(await outputPath(dir, undefined, "report.pdf"), join(dir, "report.pdf"), "an existing directory");
    assert.equal(
      await outputPath(`${dir}/later/`, undefined, "report.pdf").catch(String),
      `UsageError: Cannot save to ${join(dir, "later", "report.pdf")}: there is no directory ${join(dir, "later")}`,
      "a trailing / names a directory, which must be there",
    );
    await Deno.mkdir(join(dir, "later"));
    assert.equal(await outputPath(`${dir}/later/`, undefined, "report.pdf"), join(dir, "later", "report.pdf"));
    await assert.rejects(outputPath(join(dir, "no", "x.bin"), undefined, "report.pdf"), /there is no directory/);
    assert.equal(await outputPath(undefined, dir, "report.pdf"), join(dir, "report.pdf"));
    assert.equal(await outputPath(undefined, undefined, "report.pdf"), "report.pdf");
    await assert.rejects(outputPath(dir, undefined, ".."), /choose an output file name/);
    await assert.rejects(outputPath(undefined, undefined, "a/b"), /choose an output file name/);
    assert.equal(
      await outputPath(join(dir, "safe"), undefined, ".."),
      join(dir, "safe"),
      "a named file needs no check",
    );
    // A file where a directory of the path should be: a usage error now, not a raw "Not a directory" later.
    await Deno.writeTextFile(join(dir, "notes.txt"), "mine");
    for (const out of ["notes.txt/x", "notes.txt/a/b", "notes.txt/"]) {
      await assert.rejects(
        outputPath(join(dir, out), undefined, "report.pdf"),
        (e: unknown) => e instanceof UsageError && /a file stands where a directory of it should be/.test(e.message),
        out,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP stops like SIGTERM, unless the process was started ignoring it (nohup)", async () => {
  assert.equal(hangupIgnored("Name:\tdeno\nSigIgn:\t0000000000001000\n"), false, "SIGPIPE ignored, SIGHUP not");
  assert.equal(hangupIgnored("SigIgn:\t0000000000001001\n"), true);
  assert.equal(hangupIgnored("no mask here"), true);
  if (Deno.build.os !== "linux") return;
  const code = `import { shutdownSignal } from "./lib/cli.ts";
    const signal = shutdownSignal();
    const keep = setInterval(() => {}, 1000);
    signal.onabort = () => { clearInterval(keep); console.log("stopped"); };
    console.log("ready");`;
  for (const nohup of [false, true]) {
    const args = [Deno.execPath(), "eval", code];
    const child = new Deno.Command(nohup ? "nohup" : args.shift()!, {
      args,
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      assert.match((await lines.read()).value ?? "", /ready/);
      child.kill("SIGHUP");
      const after = await Promise.race([
        lines.read().then((r) => r.value ?? ""),
        delay(1000).then(() => "still running"),
      ]);
      assert.match(after, nohup ? /still running/ : /stopped/, nohup ? "under nohup" : "on its own");
      if (nohup) child.kill("SIGTERM");
      assert.equal((await child.status).success, true);
    } finally {
      lines.releaseLock();
      await child.stdout.cancel().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch {
        // ended already
      }
    }
  }
});
