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
import type { Message, MessageName, MessageOf } from "./messages.ts";
import { answers } from "./daemon.ts";
import { peerCommand } from "./launch.ts";

/** How long a freshly started daemon may take to register with the tracker. */
export const DAEMON_START_TIMEOUT_MS = 20_000;
/** How long a daemon may take to stop. */
export const DAEMON_STOP_TIMEOUT_MS = 5_000;

/** One request to the daemon over its control socket. */
export async function ctl<T extends MessageName>(home: Home, msg: Message, expect: T): Promise<MessageOf<T>> {
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

/**
 * Makes sure a daemon for `session` runs: reuses a running one of the same
 * user and tracker (handing it the new token), else stops the old one and
 * starts a new one, waiting until it is registered.
 */
export async function ensureDaemon(
  home: Home,
  session: SessionFile,
  extraArgs: string[] = [],
): Promise<MessageOf<"ctl_state">> {
  const running = await daemonStatus(home);
  if (running && running.user === session.user && running.tracker === session.tracker) {
    await ctl(home, { type: "ctl_session", token: session.token }, "ok");
    return await waitRegistered(home, null);
  }
  if (running) await stopDaemon(home);
  const peer = peerCommand(["--daemon", "--home", home.dir, ...extraArgs]);
  const child = new Deno.Command(peer.command, {
    args: peer.args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  return await waitRegistered(home, child);
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
