/**
 * A peer: `deno run -A peer.ts --shared ./dir --tracker 127.0.0.1:7070`.
 * Indexes the directory, serves its chunks and stays registered.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import type { Address } from "./lib/connection.ts";
import { formatBytes, parseAddress, parseSize, runMain, shutdownSignal } from "./lib/cli.ts";
import { describeError, UsageError } from "./lib/errors.ts";
import { describeLinkEvent } from "./lib/tracker_link.ts";
import { runDaemon } from "./lib/daemon.ts";
import { Home } from "./lib/home.ts";
import { indexDirectory } from "./lib/indexer.ts";
import { printable } from "./lib/names.ts";
import { PeerNode } from "./lib/peer.ts";
import { MAX_CHUNK_SIZE } from "./lib/framing.ts";
import { MIN_CHUNK_SIZE } from "./lib/manifest.ts";
import { configure, type ConfigValues } from "./lib/config.ts";
import { peerProgram, peerSettings } from "./lib/peer_cli.ts";
import { describeWatchEvent, watchShared } from "./lib/watcher.ts";
import process from "node:process";
import { PeerControl } from "./lib/peer_control.ts";
import { PeerSession } from "./lib/peer_session.ts";
import { describeSessionEvent, runTerminal } from "./lib/shell.ts";
import { checkHashSetting } from "./lib/chunk_hasher.ts";

async function main(argv: string[]): Promise<void> {
  const program = peerProgram();
  const fromConfig = await configure(program, "peer", argv);
  program.parse(argv, { from: "user" });
  checkHashSetting(); // a bad SHOAL_SHA256 is a usage error before anything is indexed
  const o = program.opts();
  // The background peer serves its session's tracker unless told otherwise on its command line.
  if (o.daemon && program.getOptionValueSource("tracker") !== "cli") delete o.tracker;
  const { port, uploadLimit } = peerSettings(o);
  if (o.daemon) return await daemon(o, port, uploadLimit, fromConfig);
  if (!o.shared) throw new UsageError("--shared <dir> is required (or --daemon)");
  const tracker: Address | undefined = o.tracker ? parseAddress(o.tracker, "--tracker") : undefined;
  // A manifest with another chunk size is refused by every tracker and peer: say so now, not at each registration.
  const chunkSize = parseSize(o.chunkSize, "--chunk-size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
  const shared = resolve(o.shared);
  const dir = await Deno.stat(shared).catch(() => null);
  if (!dir?.isDirectory) throw new UsageError(`--shared ${o.shared}: ${dir ? "not a directory" : "no such directory"}`);
  const cachePath = join(o.cacheDir, `index-${createHash("sha256").update(shared).digest("hex").slice(0, 16)}.json`);
  const say = (s: string) => {
    if (!o.quiet) console.log(s);
  };

  let lastReport = 0;
  const files = await indexDirectory(shared, {
    chunkSize,
    cachePath,
    onEvent: (e) => {
      if (e.kind === "skipped") say(`skipped ${printable(e.relPath)}: ${e.reason}`);
      if (e.kind === "hashing" && e.total >= 64 * 1024 * 1024) {
        const now = Date.now();
        if (now - lastReport > 1000 || e.done === e.total) {
          lastReport = now;
          say(`hashing ${printable(e.relPath)}: ${Math.floor((100 * e.done) / e.total)}% of ${formatBytes(e.total)}`);
        }
      }
    },
  });
  const node = PeerNode.start(files, {
    hostname: o.host,
    port,
    ...(tracker ? { tracker } : {}),
    ...(o.advertise ? { advertiseHost: o.advertise } : {}),
    corrupt: Boolean(o.corrupt),
    ...(uploadLimit ? { uploadLimit } : {}),
    onTrackerEvent: (e) => {
      if (e.kind !== "group-refused") say(describeLinkEvent(e)); // a --shared peer shares into no group
    },
  });
  console.log(`peer listening on ${node.address.host}:${node.address.port}`);
  say(`sharing ${files.length} file(s) from ${shared}:`);
  for (const f of files) say(`  ${f.id}  ${formatBytes(f.size).padStart(10)}  ${printable(f.relPath)}`);
  // --- watched shared folder: files added, changed or removed under --shared are announced or withdrawn (lib/watcher.ts)
  const watcher = o.watch
    ? watchShared(node, shared, files, { chunkSize, cachePath, onEvent: (e) => say(describeWatchEvent(e)) })
    : null;
  // --- end of watched shared folder
  // --- peer shell and local control channel (lib/shell.ts, lib/peer_control.ts): commands while the peer serves
  const signal = shutdownSignal();
  const session = new PeerSession(node, tracker ? { tracker } : null, {
    downloadDir: o.downloadDir,
    chunkSize,
    downloadLimit: o.downloadLimit === undefined ? 0 : parseSize(o.downloadLimit, "--download-limit"),
  });
  const home = Home.resolve(o.home);
  // Serving matters more than the control socket: without one (e.g. an unwritable home), warn and go on.
  const control = await PeerControl.listen(home, session, say).catch((err) => {
    console.error(
      `warning: no control socket (register-file and request-file cannot reach this peer): ${describeError(err)}`,
    );
    return null;
  });
  if (control) say(`control socket ${control.path}`);
  if (o.shell ?? Deno.stdin.isTerminal()) {
    const terminal = Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
    await runTerminal(session, {
      input: process.stdin,
      output: process.stdout,
      terminal,
      historyPath: home.shellHistoryPath,
      signal,
    });
  } else {
    const unsubscribe = session.subscribe((e) => say(describeSessionEvent(e)));
    await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    unsubscribe();
  }
  await session.close(); // downloads in progress stop with their progress saved
  await control?.close();
  // --- end of peer shell and local control channel
  await watcher?.close();
  await node.close();
}

/** `--daemon`: the user's background peer; it writes to peer.log in the user's state directory. */
async function daemon(
  o: Record<string, string>,
  port: number,
  uploadLimit: number,
  peerConfig: ConfigValues,
): Promise<void> {
  const home = Home.resolve(o.home);
  await home.ensure();
  const log = await Deno.open(home.logPath, { append: true, create: true, mode: 0o600 });
  const enc = new TextEncoder();
  const say = (line: string) => {
    try {
      log.writeSync(enc.encode(`${new Date().toISOString()} ${line}\n`));
    } catch {
      // a full disk must not stop the peer
    }
  };
  try {
    const session = await home.session();
    await runDaemon({
      home,
      tracker: parseAddress(o.tracker ?? session.tracker, "--tracker"),
      hostname: o.host ?? "127.0.0.1",
      port,
      ...(o.advertise ? { advertiseHost: o.advertise } : {}),
      ...(uploadLimit ? { uploadLimit } : {}),
      peerConfig,
      log: say,
      signal: shutdownSignal(),
    });
  } catch (err) {
    say(`peer daemon failed: ${describeError(err)}`);
    throw err;
  } finally {
    log.close();
  }
}

if (import.meta.main) runMain(() => main(Deno.args));
