/**
 * The account and group commands of client.ts (snake_case, with
 * kebab-case aliases): create_user, login, logout, status, create_group,
 * list_groups, join_group, leave_group, list_requests, accept_request,
 * remove_member, upload_file, list_files, download_file, show_downloads,
 * stop_sharing. Each is a few calls to the tracker, the local daemon and
 * the download engine; this file only parses and prints.
 *
 * @module
 */

import type { Command } from "commander";
import { basename, resolve } from "node:path";
import { formatBytes, formatSaved, paint, parseAddress, parseIntOption, parseSize, shutdownSignal } from "./cli.ts";
import type { Address } from "./connection.ts";
import { outputPath, withConn } from "./client.ts";
import { ctl, daemonStatus, ensureDaemon, stopDaemon } from "./daemon_control.ts";
import { download } from "./download.ts";
import {
  describeError,
  DownloadBusyError,
  exitCodeOf,
  NotFoundError,
  OutputExistsError,
  RemoteError,
  ShoalError,
} from "./errors.ts";
import { Home, type SessionFile, type ShareRecord } from "./home.ts";
import { checkSendable, type Message, type MessageName, type MessageOf } from "./messages.ts";
import { readPassword } from "./prompt.ts";
import { ProgressView } from "./progress.ts";

/** Options every command may use, from the program. */
export interface AccountGlobals {
  tracker?: string;
  home?: string;
  /** `--config`: the background peer reads its "peer" section from the same file. */
  config?: string;
}

function call<T extends MessageName>(
  tracker: Address,
  msg: Message,
  expect: T,
  signal?: AbortSignal,
): Promise<MessageOf<T>> {
  checkSendable(msg);
  return withConn(tracker, (c) => c.request(msg, expect), signal);
}

async function password(given: string | undefined, what: string): Promise<string> {
  if (given !== undefined) {
    if (Deno.stdin.isTerminal()) {
      console.error("warning: a password on the command line is visible to other users; omit it to be asked");
    }
    return given;
  }
  return await readPassword(`${what}: `);
}

function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i]!)).join("  "));
}

/** Adds the account and group commands to `program`. */
export function addAccountCommands(
  program: Command,
  globals: () => AccountGlobals,
  defaultTracker: () => string,
): void {
  const home = () => Home.resolve(globals().home);
  /**
   * Starts the background peer if need be, with the file given to `--config`, if any; `reconfigure` (login)
   * also restarts one whose config settings are not those it would read now.
   */
  const daemon = (h: Home, s: SessionFile, reconfigure: boolean) => {
    const config = globals().config;
    return ensureDaemon(h, s, { extraArgs: config === undefined ? [] : ["--config", resolve(config)], reconfigure });
  };
  const trackerOf = (s: SessionFile) => parseAddress(s.tracker, "tracker");
  /** The groups the session's user owns or is a member of. */
  const groupsOf = async (s: SessionFile) => {
    const r = await call(trackerOf(s), { type: "list_groups", token: s.token }, "group_list");
    return new Set(r.groups.filter((g) => g.role === "owner" || g.role === "member").map((g) => g.name));
  };
  /** The session and a request to its tracker. */
  const withSession = async <T extends MessageName>(
    make: (token: string) => Message,
    expect: T,
  ): Promise<MessageOf<T>> => {
    const s = await home().session();
    return await call(trackerOf(s), make(s.token), expect);
  };
  /** A command with its kebab-case alias and its examples at the end of --help. */
  const cmd = (name: string, description: string, examples: string[]) => {
    const c = program.command(name).description(description)
      .addHelpText("after", `\nExample${examples.length > 1 ? "s" : ""}:\n${examples.map((e) => `  ${e}`).join("\n")}`);
    return name.includes("_") ? c.alias(name.replaceAll("_", "-")) : c;
  };

  cmd("create_user", "create an account on the tracker", [
    "client.ts create_user alice",
    "echo 's3cret-pw' | client.ts create_user alice",
  ])
    .argument("<name>")
    .argument("[password]", "asked for when omitted (or read from stdin when it is not a terminal)")
    .action(async (name: string, pw?: string) => {
      const tracker = parseAddress(defaultTracker(), "--tracker");
      await call(tracker, { type: "create_user", name, password: await password(pw, "new password") }, "ok");
      console.log(`created user ${name}`);
    });

  cmd("login", "log in; starts a background peer that serves your group files until logout", [
    "client.ts --tracker 127.0.0.1:7070 login alice",
  ])
    .argument("<name>")
    .argument("[password]", "asked for when omitted (or read from stdin when it is not a terminal)")
    .option("--json", "print JSON")
    .action(async (name: string, pw: string | undefined, o) => {
      const h = home();
      const trackerText = defaultTracker();
      const tracker = parseAddress(trackerText, "--tracker");
      const r = await call(tracker, { type: "login", name, password: await password(pw, "password") }, "session");
      const session: SessionFile = { user: r.user, tracker: trackerText, token: r.token, expiresAt: r.expiresAt };
      const earlier = await h.readSession().catch(() => null);
      await h.writeSession(session);
      const { state, replaced } = await daemon(h, session, true);
      // The session this one replaces is ended, as logout would: nothing here could end it later.
      const ended = earlier !== null && earlier.token !== r.token && await endSession(earlier);
      if (o.json) return console.log(JSON.stringify({ user: r.user, expiresAt: r.expiresAt, peer: state.address }));
      if (ended && earlier.user !== r.user) console.log(`ended ${earlier.user}'s session`);
      console.log(`logged in as ${r.user} until ${new Date(r.expiresAt).toISOString()}`);
      const why = replaced === "settings" ? " (restarted: its config settings changed)" : "";
      console.log(`background peer on ${state.address}${why}, sharing ${state.shares.length} group file(s)`);
    });

  /** Ends `s` on its tracker; false if the tracker could not be told (it then lasts until it expires). */
  async function endSession(s: SessionFile): Promise<boolean> {
    try {
      await call(trackerOf(s), { type: "logout", token: s.token }, "ok");
      return true;
    } catch (err) {
      return err instanceof RemoteError && err.code === "session_expired"; // over already
    }
  }

  cmd("logout", "log out: ends the session on the tracker and stops the background peer", ["client.ts logout"])
    .action(async () => {
      const h = home();
      const s = await h.session();
      await stopDaemon(h);
      let untold: unknown = null;
      try {
        await call(trackerOf(s), { type: "logout", token: s.token }, "ok");
      } catch (err) {
        if (err instanceof RemoteError && err.code === "session_expired") {
          // over already: nothing to end on the tracker
        } else if (err instanceof RemoteError) throw err;
        else untold = err; // the tracker is away: log out here all the same, and say what is left
      }
      await h.removeSession();
      if (untold === null) return console.log(`logged out ${s.user}`);
      throw new ShoalError(
        "unreachable",
        `Logged out ${s.user} here and stopped the background peer, but the tracker was not told ` +
          `(${describeError(untold)}): the session stays valid there until ${new Date(s.expiresAt).toISOString()}`,
        exitCodeOf(untold),
      );
    });

  cmd("status", "who is logged in, the tracker, and the background peer with what it shares", [
    "client.ts status",
    "client.ts status --json",
  ])
    .option("--json", "print JSON")
    .action(async (o) => {
      const h = home();
      const s = await h.readSession();
      let session: string;
      let trackerAnswers = false;
      if (!s) session = "not logged in";
      else {
        try {
          await call(trackerOf(s), { type: "whoami", token: s.token }, "session");
          session = "valid";
          trackerAnswers = true;
        } catch (err) {
          trackerAnswers = err instanceof RemoteError; // an answer, if a refusal
          // The tracker forgets a session once it finds it expired: the local record can still say which it was.
          if (err instanceof RemoteError && err.code === "session_expired" && s.expiresAt <= Date.now()) {
            session = "expired; log in again";
          } else {
            session = trackerAnswers ? describeError(err) : `tracker unreachable (${describeError(err)})`;
          }
        }
      }
      // A share the peer still holds in a group the user left or was removed from is no longer shared there.
      const inGroups = s && session === "valid" ? await groupsOf(s).catch(() => null) : null;
      const state = await daemonStatus(h);
      // The peer learns that the tracker is gone only at its next heartbeat: one that does not answer here now
      // holds no registration.
      const d = state && {
        ...state,
        registered: state.registered && (trackerAnswers || !s),
        shares: state.shares.map((f) => ({ ...f, inGroup: inGroups?.has(f.group) ?? null })),
      };
      if (o.json) {
        return console.log(
          JSON.stringify(
            { home: h.dir, user: s?.user ?? null, tracker: s?.tracker ?? null, session, peer: d },
            null,
            2,
          ),
        );
      }
      console.log(`home:    ${h.dir}`);
      if (!s) console.log(`user:    ${session}`);
      else {
        const when = `${s.expiresAt <= Date.now() ? "at" : "until"} ${new Date(s.expiresAt).toISOString()}`;
        console.log(`user:    ${s.user} (session ${session}, ${when})`);
      }
      if (s) console.log(`tracker: ${s.tracker}`);
      if (!d) return console.log("peer:    not running");
      console.log(
        `peer:    ${d.address} (${d.registered ? "registered" : "not registered"}), ${d.shares.length} group file(s)`,
      );
      for (const f of d.shares) {
        const gone = f.inGroup === false ? `  (not shared: you are not in ${f.group} now)` : "";
        console.log(`  [${f.group}] ${f.name} (${formatBytes(f.size)}) ${f.fileId.slice(0, 16)}…  ${f.path}${gone}`);
      }
    });

  cmd("create_group", "create a group (you own it)", ["client.ts create_group team"])
    .argument("<group>")
    .action(async (group: string) => {
      await withSession((token) => ({ type: "create_group", token, group }), "ok");
      console.log(`created group ${group}`);
    });

  cmd("list_groups", "every group, its owner, members, and what you are to it", [
    "client.ts list_groups",
    "client.ts list_groups --json",
  ])
    .option("--json", "print JSON")
    .action(async (o) => {
      const r = await withSession((token) => ({ type: "list_groups", token }), "group_list");
      if (o.json) return console.log(JSON.stringify(r.groups, null, 2));
      if (r.groups.length === 0) return console.log("no groups");
      table([
        ["GROUP", "OWNER", "MEMBERS", "YOU"],
        ...r.groups.map((g) => [g.name, g.owner, String(g.members), g.role]),
      ]);
    });

  cmd("join_group", "ask to join a group (its owner accepts)", ["client.ts join_group team"])
    .argument("<group>")
    .action(async (group: string) => {
      await withSession((token) => ({ type: "join_group", token, group }), "ok");
      console.log(`asked to join ${group}; its owner must accept`);
    });

  cmd("leave_group", "leave a group (your files in it stop being shared there)", ["client.ts leave_group team"])
    .argument("<group>")
    .action(async (group: string) => {
      await withSession((token) => ({ type: "leave_group", token, group }), "ok");
      const h = home();
      const d = await daemonStatus(h);
      for (const f of d?.shares.filter((f) => f.group === group) ?? []) {
        await ctl(h, { type: "ctl_unshare", group, file: f.fileId }, "ok").catch(() => {});
      }
      console.log(`left ${group}`);
    });

  cmd("list_requests", "pending join requests of a group you own", ["client.ts list_requests team"])
    .argument("<group>")
    .option("--json", "print JSON")
    .action(async (group: string, o) => {
      const r = await withSession((token) => ({ type: "list_requests", token, group }), "user_list");
      if (o.json) return console.log(JSON.stringify(r.users));
      if (r.users.length === 0) return console.log("no pending requests");
      for (const u of r.users) console.log(u);
    });

  cmd("accept_request", "admit a user who asked to join a group you own", ["client.ts accept_request team bob"])
    .argument("<group>")
    .argument("<user>")
    .action(async (group: string, user: string) => {
      await withSession((token) => ({ type: "accept_request", token, group, user }), "ok");
      console.log(`${user} is now a member of ${group}`);
    });

  cmd("remove_member", "remove a member from a group you own (their access ends within a grant's lifetime)", [
    "client.ts remove_member team bob",
  ])
    .argument("<group>")
    .argument("<user>")
    .action(async (group: string, user: string) => {
      await withSession((token) => ({ type: "remove_member", token, group, user }), "ok");
      console.log(`removed ${user} from ${group}`);
    });

  cmd("upload_file", "share a local file into a group (your background peer serves it while you are logged in)", [
    "client.ts upload_file ./report.pdf team",
  ])
    .argument("<path>")
    .argument("<group>")
    .option("--json", "print JSON")
    .action(async (path: string, group: string, o) => {
      const h = home();
      const s = await h.session();
      await daemon(h, s, false);
      const r = await ctl(h, { type: "ctl_share", path: resolve(path), group }, "ctl_shared");
      if (o.json) return console.log(JSON.stringify(r));
      console.log(`sharing ${r.name} (${formatBytes(r.size)}) in ${r.group} as ${r.fileId}`);
    });

  cmd("list_files", "the files of a group you belong to", [
    "client.ts list_files team",
    "client.ts list_files team --json",
  ])
    .argument("<group>")
    .option("--json", "print JSON")
    .action(async (group: string, o) => {
      const r = await withSession((token) => ({ type: "list_group_files", token, group }), "file_list");
      if (o.json) return console.log(JSON.stringify(r.files, null, 2));
      if (r.files.length === 0) return console.log(`no files in ${group}`);
      table([
        ["ID", "SIZE", "PEERS", "OWNER", "NAME"],
        ...r.files.map((f) => [f.id, formatBytes(f.size), String(f.peers), f.owner ?? "", f.name]),
      ]);
    });

  cmd("download_file", "download a group file (by name or id) to <dest> (a file path or a directory)", [
    "client.ts download_file team report.pdf ./downloads/",
  ])
    .argument("<group>")
    .argument("<file>", "file name in the group, or its id")
    .argument("<dest>")
    .option("--force", "overwrite an existing file")
    .option("--workers <n>", "fetch workers (default: one per core)")
    .option("--download-limit <size>", "fetch at most this many bytes a second, e.g. 5m (default: no limit)")
    .option("--no-direct-io", "write through the page cache (default: around it, where the system allows)")
    .option("--quiet", "no progress output")
    .option("--json", "print a JSON summary at the end")
    .action(async (group: string, file: string, dest: string, o) => {
      const h = home();
      const s = await h.session();
      const tracker = trackerOf(s);
      const first = await call(tracker, { type: "group_lookup", token: s.token, group, file }, "group_file");
      const { manifest, fileId } = first;
      const out = await outputPath(dest, undefined, manifest.name);
      const own = (await h.readDaemon().catch(() => null))?.address;
      const others = (r: MessageOf<"group_file">) => r.peers.filter((p) => `${p.host}:${p.port}` !== own);
      if (first.peers.length > 0 && others(first).length === 0 && manifest.size > 0) {
        // Not a download that waits for peers and gives up: the file is here already.
        throw new NotFoundError(
          `Only your own background peer shares ${manifest.name} in ${group}: you have it (client.ts status shows where)`,
        );
      }
      const record = {
        user: s.user,
        group,
        name: manifest.name,
        fileId,
        dest: resolve(out),
        pid: Deno.pid,
        startedAt: Date.now(),
      };
      const before = await h.putDownload({ ...record, state: "D", updatedAt: Date.now() });
      const view = new ProgressView("download", Boolean(o.quiet) || Boolean(o.json));
      view.note(`${manifest.name} (${formatBytes(manifest.size)}) from ${group} -> ${out}`);
      let lookups = 0, usedFirstGrant = false;
      try {
        const summary = await download({
          fileId,
          manifest,
          out,
          force: Boolean(o.force),
          ...(o.workers ? { workers: parseIntOption(o.workers, "--workers", 1, 64) } : {}),
          ...(o.downloadLimit === undefined ? {} : { downloadLimit: parseSize(o.downloadLimit, "--download-limit") }),
          directIo: o.directIo !== false,
          signal: shutdownSignal(),
          discover: async (signal) => {
            const r = lookups++ === 0 ? first : await call(
              tracker,
              { type: "group_lookup", token: s.token, group, file: fileId },
              "group_file",
              signal,
            );
            return others(r).map((p) => ({ host: p.host, port: p.port }));
          },
          authorize: async (signal) => {
            if (!usedFirstGrant) {
              usedFirstGrant = true;
              return { grant: first.grant, expiresAt: first.grantExpiresAt };
            }
            const g = await call(tracker, { type: "get_grant", token: s.token, group, fileId }, "grant", signal);
            return { grant: g.grant, expiresAt: g.expiresAt };
          },
          onEvent: (e) => view.event(e),
        });
        view.done();
        await h.putDownload({ ...record, state: "C", updatedAt: Date.now() });
        // Become a source: the background peer shares the new copy in the group; with none running, the next login's.
        let sharing = false, later = false;
        if (await daemonStatus(h)) {
          sharing = await ctl(h, { type: "ctl_share", path: resolve(out), group }, "ctl_shared").then(
            () => true,
            () => false,
          );
        } else {
          later = await shareAtLogin(h, { user: s.user, group, path: resolve(out), manifest, fileId }).then(
            () => true,
            () => false,
          );
        }
        if (o.json) return console.log(JSON.stringify({ ...summary, group, sharing }, null, 2));
        if (!o.quiet) {
          const note = sharing
            ? `; now sharing it in ${group}`
            : later
            ? `; your background peer is not running: it shares it in ${group} from your next login`
            : "";
          console.log(formatSaved(summary) + note);
        }
      } catch (err) {
        view.done();
        // Refused before anything was written (another file, or another download, at dest): that one's record stays.
        const refused = err instanceof OutputExistsError || err instanceof DownloadBusyError;
        if (refused && before) await h.putDownload(before);
        else await h.putDownload({ ...record, state: "F", updatedAt: Date.now(), error: describeError(err) });
        throw err;
      }
    });

  /** Records a completed download as shared, for the daemon the next login starts (it re-checks the file then). */
  async function shareAtLogin(h: Home, r: Omit<ShareRecord, "size" | "mtimeMs">): Promise<void> {
    const st = await Deno.stat(r.path);
    const rec: ShareRecord = { ...r, size: st.size, mtimeMs: st.mtime?.getTime() ?? 0 };
    const same = (x: ShareRecord) => x.user === r.user && x.group === r.group && x.path === r.path;
    await h.writeShares([...(await h.readShares()).filter((x) => !same(x)), rec]);
  }

  cmd(
    "show_downloads",
    "group downloads: [D] in progress, [C] complete, [F] failed or interrupted (run again to resume)",
    ["client.ts show_downloads", "client.ts show_downloads --json"],
  )
    .option("--json", "print JSON")
    .action(async (o) => {
      const h = home();
      const user = (await h.readSession().catch(() => null))?.user;
      // Each user sees their own (a home may be shared); no one logged in, every record.
      const all = (await h.readDownloads()).filter((d) => user === undefined || (d.user ?? user) === user);
      // A "D" whose process is gone was interrupted.
      const shown = all.map((d) =>
        d.state === "D" && !alive(d.pid) ? { ...d, state: "F" as const, error: "interrupted" } : d
      );
      if (o.json) return console.log(JSON.stringify(shown, null, 2));
      if (shown.length === 0) return console.log("no downloads");
      for (const d of shown) {
        const state = paint(`[${d.state}]`, d.state === "C" ? "green" : d.state === "D" ? "yellow" : "red");
        console.log(`${state} ${d.group} ${d.name} -> ${d.dest}${d.error ? ` (${d.error})` : ""}`);
      }
    });

  cmd("stop_sharing", "stop sharing a file in a group", ["client.ts stop_sharing team report.pdf"])
    .argument("<group>")
    .argument("<file>", "file name in the group, or its id")
    .action(async (group: string, file: string) => {
      await withSession((token) => ({ type: "stop_sharing", token, group, file }), "ok");
      const h = home();
      if (await daemonStatus(h)) await ctl(h, { type: "ctl_unshare", group, file }, "ok").catch(() => {});
      console.log(`stopped sharing ${basename(file)} in ${group}`);
    });
}

function alive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    return Deno.statSync(`/proc/${pid}`).isDirectory;
  } catch {
    return false;
  }
}
