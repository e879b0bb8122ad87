/**
 * peer.ts's command line: its options, and the settings it reads from them
 * before it starts. `client.ts login` uses the same to check a config
 * file's "peer" section before it stops a running background peer to
 * restart it with that section, so a bad file cannot leave the user with
 * no peer.
 *
 * @module
 */

import { Command, Option } from "commander";
import { join } from "node:path";
import { parseIntOption, parseSize } from "./cli.ts";
import { applyConfig, type ConfigValues } from "./config.ts";
import { UsageError } from "./errors.ts";
import { DEFAULT_CHUNK_SIZE } from "./manifest.ts";

/** Where the hash cache of a shared directory lives: outside it, so it is never shared. */
function defaultCacheDir(): string {
  const base = Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? ".", ".cache");
  return join(base, "shoal");
}

/** peer.ts's options (not parsed yet). */
export function peerProgram(): Command {
  return new Command("peer")
    .description("Shoal peer: share a directory's files")
    .option("--shared <dir>", "directory to share (recursively)")
    .addOption(
      new Option("--tracker <host:port>", "tracker to register with (none: direct mode only)").env("SHOAL_TRACKER"),
    )
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0 picks a free one)", "0")
    .option("--advertise <host>", "address to announce to the tracker (default: as the tracker sees us)")
    .option("--chunk-size <size>", "chunk size for newly hashed files, 16k to 16m", String(DEFAULT_CHUNK_SIZE))
    .option("--cache-dir <dir>", "where the hash cache is kept", defaultCacheDir())
    .option("--upload-limit <size>", "upload limit per second, e.g. 2m (default: none)")
    .option("--download-limit <size>", "limit per second over all downloads from the shell, e.g. 5m (default: none)")
    .option("--no-watch", "index --shared once at start; do not pick up later changes")
    .option("--quiet", "print only the listening address")
    // --- peer shell and local control channel (lib/shell.ts, lib/peer_control.ts)
    .option("--shell", "open the interactive shell even when stdin is not a terminal (commands from a pipe)")
    .option("--no-shell", "never open the shell (default: a shell when stdin is a terminal)")
    .option("--download-dir <dir>", "where downloads from the shell or client.ts request-file go", ".")
    // --- end of peer shell options
    .option("--daemon", "run as the logged-in user's background peer (client.ts login starts it)")
    .addOption(new Option("--home <dir>", "state directory of the user (default: ~/.shoal)").env("SHOAL_HOME"))
    .option("--config <file>", "config file (env SHOAL_CONFIG, default ~/.config/shoal/config.json)")
    .addOption(new Option("--corrupt", "test only: serve corrupted chunks").hideHelp())
    .addHelpText(
      "after",
      "\nExamples:\n  deno run -A peer.ts --shared ./files --tracker 127.0.0.1:7070\n" +
        "  deno run -A peer.ts --shared ./files --tracker 127.0.0.1:7070 --no-shell &   (then: client.ts register-file)\n" +
        "  deno run -A peer.ts --daemon --home ~/.shoal    (what login starts)",
    )
    .exitOverride();
}

/** The listening port and upload limit of parsed options; throws UsageError naming the option. */
export function peerSettings(o: Record<string, string | undefined>): { port: number; uploadLimit: number } {
  return {
    port: parseIntOption(o.port ?? "0", "--port", 0, 65535),
    uploadLimit: o.uploadLimit === undefined ? 0 : parseSize(o.uploadLimit, "--upload-limit"),
  };
}

/**
 * Checks a config file's "peer" section as `peer.ts --daemon` would read
 * it at start: every key an option of peer.ts, switches true or false, and
 * the values it uses valid. Throws UsageError naming the file.
 */
export function checkPeerConfig(values: ConfigValues, path: string): void {
  const program = peerProgram();
  applyConfig(program, values, path, "peer");
  program.parse(["--daemon"], { from: "user" });
  try {
    peerSettings(program.opts());
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(`Config file ${path}: ${err.message}`);
    throw err;
  }
}
