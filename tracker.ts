/**
 * The tracker: `deno run -A tracker.ts --port 7070`.
 *
 * @module
 */

import { Command } from "commander";
import { parseIntOption, runMain, shutdownSignal } from "./lib/cli.ts";
import { DEFAULT_EXPIRY_MS, DEFAULT_HEARTBEAT_MS, TrackerServer } from "./lib/tracker.ts";

async function main(argv: string[]): Promise<void> {
  const program = new Command("tracker")
    .description("Shoal tracker: peer discovery and the file catalog")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0 picks a free one)", "7070")
    .option("--heartbeat-ms <ms>", "how often peers heartbeat", String(DEFAULT_HEARTBEAT_MS))
    .option("--expiry-ms <ms>", "a peer silent this long drops out", String(DEFAULT_EXPIRY_MS))
    .addHelpText("after", "\nExample:\n  deno run -A tracker.ts --port 7070")
    .exitOverride()
    .parse(argv, { from: "user" });
  const o = program.opts();
  const server = TrackerServer.start({
    hostname: o.host,
    port: parseIntOption(o.port, "--port", 0, 65535),
    heartbeatMs: parseIntOption(o.heartbeatMs, "--heartbeat-ms"),
    expiryMs: parseIntOption(o.expiryMs, "--expiry-ms"),
  });
  console.log(`tracker listening on ${server.address.host}:${server.address.port}`);
  const signal = shutdownSignal();
  await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  await server.close();
}

if (import.meta.main) runMain(() => main(Deno.args));
