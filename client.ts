/**
 * The command line for users: `deno run -A client.ts <command> ...`.
 *
 * @module
 */

import { Command, Option } from "commander";
import { catalog, filePeers, getFile, type Source } from "./lib/client.ts";
import {
  count,
  DEFAULT_TRACKER,
  formatBytes,
  formatFileSummary,
  formatSaved,
  nonEmpty,
  parseAddress,
  parseIntOption,
  parseSize,
  runMain,
  shutdownSignal,
} from "./lib/cli.ts";
import { formatAddress } from "./lib/connection.ts";
import { printable } from "./lib/names.ts";
import { DEFAULT_MAX_PEERS, failureSummary, MAX_KNOWN_PEERS } from "./lib/download.ts";
import { describeError, ExitCode, exitCodeOf, ShoalError, UsageError } from "./lib/errors.ts";
import type { FileSummary } from "./lib/messages.ts";
import { PeerNode } from "./lib/peer.ts";
import { ProgressView } from "./lib/progress.ts";
import { addAccountCommands } from "./lib/account_cli.ts";
import { addPeerControlCommands } from "./lib/peer_control_cli.ts";
import { configure } from "./lib/config.ts";
import { checkHashSetting } from "./lib/chunk_hasher.ts";

function parseListen(text: string) {
  const a = parseAddress(text.replace(/:0$/, ":1"), "--listen");
  return { host: a.host, port: text.endsWith(":0") ? 0 : a.port };
}

interface GlobalOpts {
  tracker?: string;
  peers?: string;
  home?: string;
  config?: string;
}

function sourceOf(o: GlobalOpts): Source {
  if (o.peers !== undefined) {
    const peers = o.peers.split(",").filter((s) => s.trim() !== "").map((s) => parseAddress(s.trim(), "peer address"));
    if (peers.length === 0) throw new UsageError("--peers needs at least one host:port");
    // One peer named twice is one peer (asked once, listed once).
    return { peers: [...new Map(peers.map((p) => [formatAddress(p), p])).values()] };
  }
  return { tracker: parseAddress(o.tracker ?? DEFAULT_TRACKER, "--tracker") };
}

function printFiles(files: FileSummary[], json: boolean): void {
  if (json) return console.log(JSON.stringify(files, null, 2));
  if (files.length === 0) return console.log("no files");
  for (const f of files) console.log(formatFileSummary(f));
}

/** The exit codes, for --help (lib/errors.ts ExitCode is the source). */
const EXIT_CODES_HELP = "Exit codes:\n" +
  Object.entries(ExitCode).map(([k, v]) =>
    `  ${String(v).padStart(3)}  ${k.replace(/[A-Z]/g, (c) => " " + c.toLowerCase())}`
  )
    .join("\n") +
  "\n\nConfig, the first found wins: flags, environment (SHOAL_TRACKER, SHOAL_HOME,\nSHOAL_CONFIG), the config file, defaults";

/** The client's command tree (exported for the help test). */
export function build(): Command {
  const program = new Command("client")
    .description("Shoal client: list, search and download files")
    // The overview names each command; its arguments are in its own --help. With them, the longest
    // ("download_file|download-file [options] <group> <file> <dest>") pushed every description past 80 columns.
    .configureHelp({ subcommandTerm: (cmd) => [cmd.name(), ...cmd.aliases()].join("|"), helpWidth: 80 })
    .addOption(new Option("--tracker <host:port>", `tracker address (default ${DEFAULT_TRACKER})`).env("SHOAL_TRACKER"))
    .option("--peers <list>", "direct mode: comma-separated peer addresses, no tracker")
    .addOption(
      new Option("--home <dir>", "your local state: session, background peer (default ~/.shoal)").env("SHOAL_HOME"),
    )
    .option("--config <file>", "config file (env SHOAL_CONFIG, default ~/.config/shoal/config.json)")
    .addHelpText("after", `\n${EXIT_CODES_HELP}`)
    .exitOverride()
    .showHelpAfterError();

  program.command("files")
    .description("list every file with a live source")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  client.ts files\n  client.ts --tracker 10.0.0.5:7070 files --json")
    .action(async (o) => printFiles(await catalog(sourceOf(program.opts())), Boolean(o.json)));

  program.command("search")
    .description("search files by name (case-insensitive substring) or by the start of their id (6+ hex digits)")
    .argument("<text>")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  client.ts search report\n  client.ts search .mkv --json")
    .action(async (text: string, o) => printFiles(await catalog(sourceOf(program.opts()), text), Boolean(o.json)));

  program.command("peers")
    .description("list the live peers of a file")
    .argument("<file>", "file id, its first 6+ hex digits, or exact name")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  client.ts peers report.pdf\n  client.ts peers 3f2a...e1 --json")
    .action(async (file: string, o) => {
      const src = sourceOf(program.opts());
      const peers = await filePeers(src, file);
      if (o.json) return console.log(JSON.stringify(peers, null, 2));
      if (peers.length === 0) return console.log("no live peers");
      for (const p of peers) console.log(`${printable(formatAddress(p))}  ${p.complete ? "complete" : "partial"}`);
    });

  program.command("get")
    .description("download a file from every peer that has it")
    .argument("<file>", "file id, its first 6+ hex digits, or exact name")
    .option("-o, --out <path>", "output file, or a directory to save it in (default: the file's name here)")
    .option("--force", "overwrite an existing output file")
    .option("--workers <n>", "fetch workers (default: one per core)")
    .option("--max-peers <n>", `peers connected at once; others wait their turn (default: ${DEFAULT_MAX_PEERS})`)
    .option("--download-limit <size>", "fetch at most this many bytes a second, e.g. 5m (default: no limit)")
    .option("--upload-limit <size>", "serve others at most this many bytes a second, e.g. 1m (default: no limit)")
    .option("--no-direct-io", "write through the page cache (default: around it, where the system allows)")
    .option("--seed", "keep sharing the file after the download until interrupted")
    .option("--no-share", "do not serve chunks to others while downloading")
    .option("--listen <host:port>", "where to serve chunks to others while downloading", "127.0.0.1:0")
    .option("--quiet", "no progress output")
    .option("--json", "print a JSON summary at the end")
    .addHelpText(
      "after",
      "\nExamples:\n  client.ts get 3f2a...e1 -o movie.mkv\n  client.ts --peers 127.0.0.1:9001 get notes.txt",
    )
    .action(async (file: string, o) => {
      const src = sourceOf(program.opts());
      if (o.seed && o.share === false) throw new UsageError("--seed shares the file: it cannot go with --no-share");
      const view = new ProgressView("get", Boolean(o.quiet) || Boolean(o.json));
      const signal = shutdownSignal();
      // Swarming: serve what we have while we download, as a partial source.
      const listen = parseListen(o.listen);
      // Sizes as peer.ts --upload-limit takes them; 0 is no limit.
      const uploadLimit = o.uploadLimit === undefined ? 0 : parseSize(o.uploadLimit, "--upload-limit");
      const downloadLimit = o.downloadLimit === undefined ? 0 : parseSize(o.downloadLimit, "--download-limit");
      await using node = o.share === false ? null : PeerNode.start([], {
        hostname: listen.host,
        port: listen.port,
        ...(uploadLimit ? { uploadLimit } : {}),
        ...("tracker" in src ? { tracker: src.tracker } : {}),
      });
      // However it ends: an error must not be printed on the bar's line.
      const summary = await getFile(src, file, {
        ...(node ? { peerNode: node, seed: Boolean(o.seed) } : {}),
        ...(o.out !== undefined ? { out: nonEmpty(o.out, "-o") } : {}),
        force: Boolean(o.force),
        ...(o.workers !== undefined ? { workers: parseIntOption(o.workers, "--workers", 1, 64) } : {}),
        ...(o.maxPeers !== undefined
          ? { maxPeers: parseIntOption(o.maxPeers, "--max-peers", 1, MAX_KNOWN_PEERS) }
          : {}),
        ...(downloadLimit ? { downloadLimit } : {}),
        directIo: o.directIo !== false,
        signal,
        onResolved: (id, m, out) =>
          view.note(
            `${m.name} (${formatBytes(m.size)}, ${count(m.chunks.length, "chunk")}) -> ${out}  [${id.slice(0, 16)}…]`,
          ),
        onEvent: (e) => view.event(e),
      }).catch((err) => {
        // A script reading --json learns why it failed, and what it had done, on stdout as well.
        if (o.json) console.log(JSON.stringify(failedJson(err), null, 2));
        throw err;
      }).finally(() => view.done());
      if (o.json) console.log(JSON.stringify(summary, null, 2));
      else if (!o.quiet) {
        console.log(formatSaved(summary));
      }
      if (o.seed && node) {
        // Beside --json, on stderr: stdout holds the JSON alone.
        const seeding = `seeding on ${formatAddress(node.address)} until interrupted`;
        if (o.json) console.error(seeding);
        else if (!o.quiet) console.log(seeding);
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      }
    });
  addAccountCommands(
    program,
    () => program.opts(),
    () => program.opts().tracker ?? DEFAULT_TRACKER,
  );
  addPeerControlCommands(program, () => program.opts().home);
  return program;
}

/** `get --json`'s output for a download that failed: the error, and the summary of what it did, if it began. */
function failedJson(err: unknown): Record<string, unknown> {
  return {
    error: {
      code: err instanceof ShoalError ? err.code : "failure",
      message: describeError(err),
      exitCode: exitCodeOf(err),
    },
    ...failureSummary(err),
  };
}

async function main(argv: string[]): Promise<void> {
  const program = build();
  // A bad SHOAL_SHA256 is a usage error before any command looks anything up (--help still works).
  program.hook("preAction", checkHashSetting);
  await configure(program, "client", argv);
  await program.parseAsync(argv, { from: "user" });
}

if (import.meta.main) runMain(() => main(Deno.args));
