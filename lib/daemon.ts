/**
 * A user's background peer (`peer.ts --daemon`), started by `login` and
 * stopped by `logout`: it registers with the user's session token, serves
 * the files the user shares into groups (only against grants), and takes
 * commands from its owner over a Unix socket in the user's private state
 * directory (see home.ts). The socket is the control channel: mode 0600 in
 * a 0700 directory, so only its owner (and root) can connect.
 *
 * @module
 */

import { basename } from "node:path";
import type { ConfigValues } from "./config.ts";
import { type Address, connectUnix, formatAddress } from "./connection.ts";
import { describeError, NotFoundError, RemoteError, ShoalError } from "./errors.ts";
import { withConn } from "./client.ts";
import { describeLinkEvent } from "./tracker_link.ts";
import { type Home, type ShareRecord } from "./home.ts";
import type { Message } from "./messages.ts";
import { PeerNode } from "./peer.ts";
import { localSharedFile } from "./peer_session.ts";
import { FrameServer } from "./server.ts";
import { isSha256Hex } from "./bytes.ts";

/** Options for {@link runDaemon}. */
export interface DaemonOptions {
  home: Home;
  tracker: Address;
  hostname?: string;
  port?: number;
  advertiseHost?: string;
  /** Bytes a second the group shares may send, over all connections (default: no limit). */
  uploadLimit?: number;
  /** The config file's "peer" section it was started with, recorded so that `login` can tell when it changed. */
  peerConfig?: ConfigValues;
  log: (line: string) => void;
  signal: AbortSignal;
}

/** Runs the daemon until `signal` aborts or its owner sends CTL_STOP. */
export async function runDaemon(o: DaemonOptions): Promise<void> {
  const { home, log } = o;
  await home.ensure();
  if (await answers(home.socketPath)) {
    throw new ShoalError("already_running", `A peer daemon already serves ${home.dir}`);
  }
  await Deno.remove(home.socketPath).catch(() => {}); // stale, from a crash
  let session = await home.session();
  let token = session.token;

  // Re-check what we shared last time before announcing it: files may have changed or gone. Another user's shares
  // on this home are kept for them, not served.
  const mine = (r: ShareRecord) => r.user === undefined || r.user === session.user;
  const recorded = await home.readShares();
  const shares: ShareRecord[] = [];
  /** Shares whose file changed or went: the tracker would list them in their groups with no one to serve them. */
  const stale: ShareRecord[] = [];
  for (const s of recorded.filter(mine)) {
    try {
      const now = await refresh(s);
      if (now.fileId !== s.fileId) stale.push(s);
      shares.push({ ...now, user: session.user });
    } catch (err) {
      log(`not sharing ${s.path} in ${s.group} any more: ${describeError(err)}`);
      stale.push(s);
    }
  }
  await home.writeShares([...recorded.filter((r) => !mine(r)), ...shares]);

  /** Whether one of `kept` (another copy of this user's) still shares `s`'s content in its group. */
  const servedBy = (kept: ShareRecord[], s: ShareRecord) =>
    kept.some((k) => mine(k) && k.group === s.group && k.fileId === s.fileId);
  /** Ends this user's share of `s` on the tracker (STOP_SHARING), unless another of their copies still serves it. */
  const withdraw = async (s: ShareRecord, kept: ShareRecord[]) => {
    if (servedBy(kept, s)) return;
    try {
      await withConn(
        o.tracker,
        (c) => c.request({ type: "stop_sharing", token, group: s.group, file: s.fileId }, "ok"),
      );
      log(`withdrew ${s.fileId} (${s.manifest.name}) from ${s.group}: its file changed or went`);
    } catch (err) {
      if (!(err instanceof RemoteError && err.code === "not_found")) {
        log(`cannot withdraw ${s.fileId}: ${describeError(err)}`);
      }
    }
  };

  const node = PeerNode.start([], {
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    tracker: o.tracker,
    ...(o.advertiseHost ? { advertiseHost: o.advertiseHost } : {}),
    ...(o.uploadLimit ? { uploadLimit: o.uploadLimit } : {}),
    token: () => token,
    onTrackerEvent: (e) => log(describeLinkEvent(e)),
  });
  for (const s of shares) node.addGroupShareLocally(asShared(s), s.group);
  for (const s of stale) void withdraw(s, shares);

  const stop = new AbortController();
  const onStop = () => stop.abort();
  o.signal.addEventListener("abort", onStop, { once: true });

  const handle = async (msg: Message): Promise<Message> => {
    switch (msg.type) {
      case "ctl_status":
        return {
          type: "ctl_state",
          user: session.user,
          tracker: formatAddress(o.tracker),
          address: formatAddress(node.address),
          registered: node.link?.peerId != null,
          shares: node.groupShares(),
        };
      case "ctl_share": {
        const rec = { ...await shareRecord(msg.path, msg.group), user: session.user };
        await node.shareInGroup(asShared(rec), msg.group);
        // The same file's earlier content (uploaded again after a change) is replaced, not listed beside it.
        const same = (s: ShareRecord) =>
          mine(s) && s.group === rec.group && (s.fileId === rec.fileId || s.path === rec.path);
        const all = await home.readShares();
        const kept = [...all.filter((s) => !same(s)), rec];
        await home.writeShares(kept);
        for (const old of all.filter((s) => same(s) && s.fileId !== rec.fileId)) {
          if (servedBy(kept, old)) continue; // another copy
          await node.unshareFromGroup(old.fileId, old.group);
          await withdraw(old, kept);
        }
        log(`sharing ${rec.path} in ${rec.group} as ${rec.fileId}`);
        return { type: "ctl_shared", group: rec.group, fileId: rec.fileId, name: rec.manifest.name, size: rec.size };
      }
      case "ctl_unshare": {
        const all = await home.readShares();
        const hit = all.filter((s) =>
          mine(s) && s.group === msg.group &&
          (isSha256Hex(msg.file) ? s.fileId === msg.file : s.manifest.name === msg.file)
        );
        if (hit.length === 0) throw new NotFoundError(`This peer does not share ${msg.file} in ${msg.group}`);
        for (const h of hit) await node.unshareFromGroup(h.fileId, h.group);
        await home.writeShares(all.filter((s) => !hit.includes(s)));
        log(`stopped sharing ${msg.file} in ${msg.group}`);
        return { type: "ok" };
      }
      case "ctl_session": {
        if (msg.token === token) return { type: "ok" };
        token = msg.token;
        session = await home.session();
        node.link?.reconnect(); // register again with the new token
        return { type: "ok" };
      }
      case "ctl_stop":
        queueMicrotask(onStop);
        return { type: "ok" };
      default:
        throw new ShoalError("unsupported", `The control channel does not handle ${msg.type} messages`);
    }
  };
  const control = FrameServer.listen({
    path: home.socketPath,
    idleTimeoutMs: 60_000,
    onConnectionError: (_remote, err) => log(`control request failed: ${describeError(err)}`),
  }, handle);
  await Deno.chmod(home.socketPath, 0o600);
  await home.writeDaemon({
    pid: Deno.pid,
    user: session.user,
    tracker: formatAddress(o.tracker),
    address: formatAddress(node.address),
    socket: home.socketPath,
    peerConfig: o.peerConfig ?? {},
  });
  log(`peer daemon for ${session.user} listening on ${formatAddress(node.address)}, control ${home.socketPath}`);
  try {
    await new Promise((r) => stop.signal.addEventListener("abort", r, { once: true }));
  } finally {
    o.signal.removeEventListener("abort", onStop);
    await control.close();
    await node.close();
    await Deno.remove(home.socketPath).catch(() => {});
    await Deno.remove(home.daemonPath).catch(() => {});
    log("peer daemon stopped");
  }
}

/** True when something answers HELLO on the socket. */
export async function answers(socket: string): Promise<boolean> {
  try {
    const c = await connectUnix(socket);
    c.close();
    return true;
  } catch {
    return false;
  }
}

function asShared(s: ShareRecord) {
  return {
    id: s.fileId,
    path: s.path,
    relPath: basename(s.path),
    manifest: s.manifest,
    size: s.size,
    mtimeMs: s.mtimeMs,
  };
}

/** Hashes a file to share into a group. */
async function shareRecord(path: string, group: string): Promise<ShareRecord> {
  const f = await localSharedFile(path);
  return { group, path: f.path, size: f.size, mtimeMs: f.mtimeMs, manifest: f.manifest, fileId: f.id };
}

/** The record again, hashed again only when the file changed since. */
async function refresh(s: ShareRecord): Promise<ShareRecord> {
  const st = await Deno.stat(s.path);
  if (st.isFile && st.size === s.size && (st.mtime?.getTime() ?? 0) === s.mtimeMs) return s;
  return await shareRecord(s.path, s.group);
}
