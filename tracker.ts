/**
 * The tracker: `deno run -A tracker.ts --port 7070`.
 *
 * @module
 */

import { Command } from "commander";
import { parseIntOption, runMain, shutdownSignal } from "./lib/cli.ts";
import { ShoalError, UsageError } from "./lib/errors.ts";
import { DEFAULT_EXPIRY_MS, DEFAULT_HEARTBEAT_MS, TrackerServer } from "./lib/tracker.ts";
import { Accounts, DEFAULT_GRANT_TTL_MS, DEFAULT_SESSION_TTL_MS } from "./lib/accounts.ts";
import { AccountStore } from "./lib/account_store.ts";
import { Dashboard, DEFAULT_DASHBOARD_HOST } from "./lib/dashboard.ts";
import { configure } from "./lib/config.ts";

async function main(argv: string[]): Promise<void> {
  const program = new Command("tracker")
    .description("Shoal tracker: peer discovery and the file catalog")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0 picks a free one)", "7070")
    .option("--heartbeat-ms <ms>", "how often peers heartbeat", String(DEFAULT_HEARTBEAT_MS))
    .option("--expiry-ms <ms>", "a peer silent this long drops out", String(DEFAULT_EXPIRY_MS))
    .option("--db <path>", "SQLite database of accounts and groups (:memory: for a throwaway one)", "./tracker.db")
    .option("--session-ttl <seconds>", "how long a login lasts", String(DEFAULT_SESSION_TTL_MS / 1000))
    .option(
      "--grant-ttl <seconds>",
      "how long a grant to fetch a group file lasts",
      String(DEFAULT_GRANT_TTL_MS / 1000),
    )
    .option(
      "--http <port>",
      "also serve a live dashboard, a JSON API and /metrics over HTTP on this port (0: a free one)",
    )
    .option("--http-host <host>", "address the dashboard listens on", DEFAULT_DASHBOARD_HOST)
    .option("--config <file>", "config file (env SHOAL_CONFIG, default ~/.config/shoal/config.json)")
    .addHelpText(
      "after",
      "\nExamples:\n  deno run -A tracker.ts --port 7070\n  deno run -A tracker.ts --db :memory: --grant-ttl 10" +
        "\n  deno run -A tracker.ts --http 8080     # then open http://127.0.0.1:8080/",
    )
    .exitOverride();
  await configure(program, "tracker", argv);
  program.parse(argv, { from: "user" });
  const o = program.opts();
  const httpPort = o.http === undefined ? null : parseIntOption(o.http, "--http", 0, 65535);
  const heartbeatMs = parseIntOption(o.heartbeatMs, "--heartbeat-ms");
  const expiryMs = parseIntOption(o.expiryMs, "--expiry-ms");
  // A live peer heartbeats every heartbeatMs: with expiry no longer than that, every peer would expire between beats.
  if (expiryMs <= heartbeatMs) {
    throw new UsageError(
      `--expiry-ms ${expiryMs} must be longer than --heartbeat-ms ${heartbeatMs} (three times as long is usual)`,
    );
  }
  let store: AccountStore;
  try {
    store = new AccountStore(o.db);
  } catch (err) {
    throw new ShoalError("db", `Cannot open the database ${o.db}: ${(err as Error).message}`);
  }
  const accounts = new Accounts(store, {
    sessionTtlMs: parseIntOption(o.sessionTtl, "--session-ttl", 1) * 1000,
    grantTtlMs: parseIntOption(o.grantTtl, "--grant-ttl", 1) * 1000,
  });
  const server = TrackerServer.start({
    accounts,
    hostname: o.host,
    port: parseIntOption(o.port, "--port", 0, 65535),
    heartbeatMs,
    expiryMs,
  });
  console.log(`tracker listening on ${server.address.host}:${server.address.port}`);
  console.log(`accounts in ${o.db} (schema ${store.schemaVersion})`);
  const dashboard = httpPort === null
    ? null
    : Dashboard.start(server.tracker, { hostname: o.httpHost, port: httpPort });
  if (dashboard) console.log(`dashboard on ${dashboard.url}`);
  const signal = shutdownSignal();
  await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  await dashboard?.close();
  await server.close();
}

if (import.meta.main) runMain(() => main(Deno.args));
