/**
 * The client's side of the user's background peer: start it at login (or
 * reuse the one running), talk to it over its control socket, stop it at
 * logout. See daemon.ts for the peer's side.
 *
 * @module
 */

import { delay } from "./async.ts";
import { connectUnix } from "./connection.ts";
import { ShoalError } from "./errors.ts";
import type { Home, SessionFile } from "./home.ts";
import { checkSendable, type Message, type MessageName, type MessageOf } from "./messages.ts";
import { configPath, type ConfigValues, readConfig, sameConfig } from "./config.ts";
import { answers } from "./daemon.ts";
import { peerCommand } from "./launch.ts";
import { checkPeerConfig } from "./peer_cli.ts";

/** How long a freshly started daemon may take to register with the tracker. */
export const DAEMON_START_TIMEOUT_MS = 20_000;
/** How long a daemon may take to stop. */
export const DAEMON_STOP_TIMEOUT_MS = 5_000;

/** One request to the daemon over its control socket. */
export async function ctl<T extends MessageName>(home: Home, msg: Message, expect: T): Promise<MessageOf<T>> {
  checkSendable(msg);
  await using conn = await connectUnix(home.socketPath);
  return await conn.request(msg, expect);
}

/** The daemon's state, or null when none answers. */
export async function daemonStatus(home: Home): Promise<MessageOf<"ctl_state"> | null> {
  if (!(await answers(home.socketPath))) return null;
  try {
    return await ctl(home, { type: "ctl_status" }, "ctl_state");
  } catch {
    return null;
  }
}

/** What {@link ensureDaemon} did. */
export interface DaemonStart {
  state: MessageOf<"ctl_state">;
  /** Why a running daemon was stopped and another started in its place; null when none was replaced. */
  replaced: "user" | "tracker" | "settings" | null;
}

/** Options for {@link ensureDaemon}. */
export interface EnsureOptions {
  /** Arguments for a daemon it starts (`--config <file>`). */
  extraArgs?: string[];
  /**
   * Also replace a running daemon whose config "peer" section differs from
   * what a new one would read now (from the file `extraArgs` names, else
   * `$SHOAL_CONFIG`, else the default file), as `login` does.
   */
  reconfigure?: boolean;
}

/**
 * Makes sure a daemon for `session` runs: reuses a running one of the same
 * user and tracker (handing it the new token) and, with `reconfigure`, the
 * same settings; else stops the old one and starts a new one, waiting
 * until it is registered. With `reconfigure`, a config file that cannot be
 * read, or whose "peer" section a new daemon would refuse, is an error
 * before anything is stopped.
 */
export async function ensureDaemon(home: Home, session: SessionFile, o: EnsureOptions = {}): Promise<DaemonStart> {
  const extraArgs = o.extraArgs ?? [];
  const where = configPath(extraArgs);
  const wanted = o.reconfigure ? await readConfig("peer", where) : null;
  if (wanted) checkPeerConfig(wanted, where.path); // what a new daemon would refuse must not stop the old one
  const running = await daemonStatus(home);
  let replaced: DaemonStart["replaced"] = null;
  if (running) {
    const recorded = (await home.readDaemon().catch(() => null))?.peerConfig;
    if (running.user !== session.user) replaced = "user";
    else if (running.tracker !== session.tracker) replaced = "tracker";
    else if (wanted && !(isConfigRecord(recorded) && sameConfig(recorded, wanted))) replaced = "settings";
    if (replaced === null) {
      await ctl(home, { type: "ctl_session", token: session.token }, "ok");
      return { state: await waitRegistered(home, null), replaced };
    }
    await stopDaemon(home);
  }
  const peer = peerCommand(["--daemon", "--home", home.dir, ...extraArgs]);
  const child = new Deno.Command(peer.command, {
    args: peer.args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  return { state: await waitRegistered(home, child), replaced };
}

/** A "peer" section as daemon.json records it (the file is the user's own, but may be from an older version). */
function isConfigRecord(v: unknown): v is ConfigValues {
  return typeof v === "object" && v !== null && !Array.isArray(v) &&
    Object.values(v).every((x) => ["string", "number", "boolean"].includes(typeof x));
}

async function waitRegistered(home: Home, child: Deno.ChildProcess | null): Promise<MessageOf<"ctl_state">> {
  const state: { exited: Deno.CommandStatus | null } = { exited: null };
  child?.status.then((s) => state.exited = s);
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (state.exited) break;
    const s = await daemonStatus(home);
    if (s?.registered) return s;
    await delay(100);
  }
  const log = await Deno.readTextFile(home.logPath).catch(() => "");
  const last = log.trim().split("\n").at(-1) ?? "";
  throw new ShoalError(
    "daemon",
    `The background peer did not come up${state.exited ? ` (exit ${state.exited.code})` : ""}: ${
      last || "see " + home.logPath
    }`,
  );
}

/** Stops the daemon if one runs; waits until it is gone. */
export async function stopDaemon(home: Home): Promise<boolean> {
  const info = await home.readDaemon().catch(() => null);
  if (!(await answers(home.socketPath))) return false;
  await ctl(home, { type: "ctl_stop" }, "ok").catch(() => {});
  const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
  while (Date.now() < deadline && await answers(home.socketPath)) await delay(50);
  if (await answers(home.socketPath) && info) {
    try {
      Deno.kill(info.pid, "SIGTERM"); // the pid our own daemon recorded
    } catch {
      // already gone
    }
  }
  return true;
}
