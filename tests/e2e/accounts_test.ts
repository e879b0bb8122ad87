/**
 * End-to-end, issue 4: accounts, groups and grants with real processes.
 * Alice shares a file into a group, Bob joins and downloads it, Carol (not
 * a member) cannot see, look up or fetch it, not even by talking to
 * Alice's peer directly; the tracker restarts mid-scenario and loses
 * nothing; passwords never reach the database in clear.
 *
 * Each user has their own state directory (`--home`), as on their own
 * machine; `login` starts their background peer, `logout` stops it.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  E2E,
  type Endpoint,
  endpoint,
  expectOneErrorLine,
  MiB,
  type RunResult,
  sha256File,
  waitUntil,
  writeRandomFile,
} from "./harness.ts";
import { connect } from "../../lib/connection.ts";
import { generateSigningKey, signGrant } from "../../lib/grants.ts";
import { RemoteError } from "../../lib/errors.ts";
import type { Message } from "../../lib/messages.ts";

/** Exit codes of lib/errors.ts, repeated as the contract under test. */
const EXIT = {
  usage: 2,
  unknownUser: 10,
  badPassword: 11,
  duplicate: 12,
  unknownGroup: 13,
  notMember: 14,
  notOwner: 15,
  sessionExpired: 16,
  notLoggedIn: 17,
  rateLimited: 18,
} as const;

interface User {
  name: string;
  password: string;
  home: string;
  /** runs `client.ts --tracker T --home H <args>` */
  run: (...args: string[]) => Promise<RunResult>;
  ok: (...args: string[]) => Promise<RunResult>;
}

async function user(env: E2E, tracker: () => string, name: string): Promise<User> {
  const home = await env.tempDir(`shoal-e2e-home-${name}-`);
  const source = () => ["--tracker", tracker(), "--home", home];
  return {
    name,
    password: `${name}-password-1`,
    home,
    run: (...args) => env.client(source(), ...args),
    ok: (...args) => env.clientOk(source(), ...args),
  };
}

/** Stops a user's background peer (a detached process the harness did not spawn). */
async function logoutQuietly(u: User): Promise<void> {
  await u.run("logout").catch(() => {});
  const d = await Deno.readTextFile(`${u.home}/daemon.json`).then((t) => JSON.parse(t), () => null);
  if (d?.pid) {
    try {
      Deno.kill(d.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Sends one message to a peer directly and returns the reply (or the remote error). */
async function ask(peer: Endpoint, msgs: Message[]) {
  await using conn = await connect({ host: peer.host, port: peer.port });
  const replies: string[] = [];
  for (const m of msgs) {
    await conn.send(m);
    const r = await conn.receive(5_000);
    replies.push(
      r.type === "error" ? `error ${r.code}: ${r.message}` : r.type === "reject" ? `reject: ${r.reason}` : r.type,
    );
  }
  return replies;
}

Deno.test("e2e: alice shares into a group, bob joins and downloads, carol is kept out, the tracker restarts", async () => {
  await using env = new E2E();
  const dir = await env.tempDir(), out = await env.tempDir();
  const db = `${await env.tempDir()}/tracker.db`;
  const want = await writeRandomFile(`${dir}/report.bin`, 3 * MiB + 12345);
  let tracker = await env.tracker(200, 1000, ["--db", db, "--grant-ttl", "2"]);
  const alice = await user(env, () => tracker.addr, "alice");
  const bob = await user(env, () => tracker.addr, "bob");
  const carol = await user(env, () => tracker.addr, "carol");
  try {
    // Alice: account, login (starts her background peer), group, upload.
    await alice.ok("create_user", alice.name, alice.password);
    assert.equal((await alice.run("create_user", alice.name, "another-pw-1")).code, EXIT.duplicate);
    await alice.ok("login", alice.name, alice.password);
    await alice.ok("create_group", "team");
    const up = await alice.ok("upload_file", `${dir}/report.bin`, "team", "--json");
    const fileId = up.json<{ fileId: string }>().fileId;
    const aliceStatus = (await alice.ok("status", "--json")).json<{ peer: { address: string; shares: unknown[] } }>();
    assert.equal(aliceStatus.peer.shares.length, 1);
    const alicePeer = endpoint(aliceStatus.peer.address);

    // Bob asks to join (the password comes from stdin: not a terminal here).
    await bob.ok("create_user", bob.name, bob.password);
    assert.equal((await bob.run("login", bob.name, "wrong-password")).code, EXIT.badPassword);
    assert.equal((await bob.run("login", "nobody", "whatever-pw")).code, EXIT.unknownUser);
    await bob.ok("login", bob.name, bob.password);
    assert.equal((await bob.run("list_files", "team")).code, EXIT.notMember);
    await bob.ok("join_group", "team");
    assert.equal((await bob.run("join_group", "nope")).code, EXIT.unknownGroup);
    assert.equal((await bob.run("list_requests", "team")).code, EXIT.notOwner);

    // The tracker restarts (killed): accounts, groups, requests and files survive.
    const port = tracker.port;
    tracker.proc.kill("SIGKILL");
    await tracker.proc.wait();
    tracker = await env.tracker(200, 1000, ["--db", db, "--grant-ttl", "2", "--port", String(port)]);
    assert.deepEqual((await alice.ok("list_requests", "team", "--json")).json(), ["bob"]);
    await alice.ok("accept_request", "team", "bob");
    const groups = (await bob.ok("list_groups", "--json")).json<{ name: string; role: string }[]>();
    assert.deepEqual(groups.map((g) => [g.name, g.role]), [["team", "member"]]);
    // Alice's peer registers again by itself and serves the file.
    const files = await waitUntil(
      async () => {
        const f = (await bob.ok("list_files", "team", "--json")).json<{ id: string; peers: number; owner: string }[]>();
        return f.length === 1 && f[0]!.peers === 1 ? f : null;
      },
      20_000,
      "alice's peer to re-register after the tracker restart",
    );
    assert.equal(files[0]!.id, fileId);
    assert.equal(files[0]!.owner, "alice");
    // Alice asking for her own file, which only her peer serves: told so at once, not after waiting for peers.
    const own = await alice.run("download_file", "team", "report.bin", `${out}/again.bin`);
    assert.equal(own.code, 3, own.stderr);
    assert.match(
      expectOneErrorLine(own.stderr),
      /Only your own background peer shares report\.bin in team: you have it/,
    );

    // Bob downloads by name into a directory, at most 1 MiB a second: identical bytes, shown complete. The bucket
    // starts with a second's worth and a request may overdraw it by a chunk (1 MiB), so the 3 MiB and a bit take
    // at least a second more; unlimited, they take a tenth of that.
    const got = await bob.ok("download_file", "team", "report.bin", out, "--download-limit", "1m", "--json");
    const first = got.json<{ bytes: number; seconds: number }>();
    assert.equal(first.bytes, 3 * MiB + 12345);
    assert.ok(first.seconds >= 1, `--download-limit 1m: 3 MiB took ${first.seconds} s`);
    assert.equal(await sha256File(`${out}/report.bin`), want);
    const shown = (await bob.ok("show_downloads")).stdout;
    assert.match(shown, /^\[C\] team report\.bin -> .*report\.bin$/m);
    // A download refused because another file is at its output is shown as failed, beside the one that completed.
    await Deno.writeTextFile(`${out}/taken.bin`, "mine");
    assert.equal((await bob.run("download_file", "team", "report.bin", `${out}/taken.bin`)).code, 7);
    assert.equal(await Deno.readTextFile(`${out}/taken.bin`), "mine");
    const both = (await bob.ok("show_downloads")).stdout;
    assert.match(both, /^\[C\] team report\.bin -> .*\/report\.bin$/m);
    assert.match(both, /^\[F\] team report\.bin -> .*\/taken\.bin \(.*already exists/m);

    // Carol is not a member: she can neither list, look up, nor download.
    await carol.ok("create_user", carol.name, carol.password);
    await carol.ok("login", carol.name, carol.password);
    // On Bob's home, she does not see his downloads either (his session there is ended by hers; he logs in again).
    const carolOnBobs = ["--tracker", tracker.addr, "--home", bob.home];
    await env.clientOk(carolOnBobs, "login", carol.name, carol.password);
    assert.equal((await env.clientOk(carolOnBobs, "show_downloads")).stdout, "no downloads\n");
    await bob.ok("login", bob.name, bob.password);
    assert.match((await bob.ok("show_downloads")).stdout, /^\[C\] team report\.bin/m);
    const listed = await carol.run("list_files", "team");
    assert.equal(listed.code, EXIT.notMember);
    assert.match(expectOneErrorLine(listed.stderr), /carol is not a member of team/);
    assert.equal((await carol.run("download_file", "team", fileId, `${out}/stolen.bin`)).code, EXIT.notMember);
    assert.equal((await carol.run("accept_request", "team", "carol")).code, EXIT.notOwner);

    // Carol talks to Alice's peer directly, knowing the file id and the address.
    const noGrant = await ask(alicePeer, [
      { type: "interested", fileId },
      { type: "request", fileId, index: 0 },
      { type: "get_manifest", fileId },
    ]);
    assert.match(noGrant[0]!, /^error grant_refused: .*grant is required/);
    assert.match(noGrant[1]!, /^reject: a grant is required/);
    assert.match(noGrant[2]!, /^error grant_refused/);
    const forged = signGrant(generateSigningKey(), {
      v: 1,
      user: "carol",
      group: "team",
      fileId,
      exp: Date.now() + 60_000,
    });
    const tampered = await ask(alicePeer, [{ type: "authorize", fileId, grant: forged }, {
      type: "request",
      fileId,
      index: 0,
    }]);
    assert.match(tampered[0]!, /^error grant_refused: Grant refused: bad signature/);
    assert.match(tampered[1]!, /^reject: a grant is required/);

    // A real grant (Bob's) works once, then expires; and it never opens another file.
    const bobSession = JSON.parse(await Deno.readTextFile(`${bob.home}/session.json`));
    const g = await (async () => {
      await using t = await connect({ host: tracker.host, port: tracker.port });
      return await t.request({ type: "get_grant", token: bobSession.token, group: "team", fileId }, "grant");
    })();
    const otherId = "ab".repeat(32);
    const other = await ask(alicePeer, [{ type: "authorize", fileId: otherId, grant: g.grant }]);
    assert.match(other[0]!, /^error grant_refused: Grant refused: it is for file/);
    const valid = await ask(alicePeer, [{ type: "authorize", fileId, grant: g.grant }, { type: "interested", fileId }]);
    assert.deepEqual(valid, ["ok", "bitfield"]);
    await waitUntil(() => Date.now() > g.expiresAt + 50, 5_000, "the grant to expire");
    const expired = await ask(alicePeer, [{ type: "authorize", fileId, grant: g.grant }]);
    assert.match(expired[0]!, /^error grant_refused: Grant refused: expired/);
    // Carol cannot get a grant from the tracker either.
    const carolSession = JSON.parse(await Deno.readTextFile(`${carol.home}/session.json`));
    await assert.rejects(async () => {
      await using t = await connect({ host: tracker.host, port: tracker.port });
      await t.request({ type: "get_grant", token: carolSession.token, group: "team", fileId }, "grant");
    }, (e: unknown) => e instanceof RemoteError && e.code === "not_member");

    // Logging out stops Alice's peer; logging in again resumes sharing the same file. This time she names a config
    // file whose "peer" section caps uploads: her new background peer reads it.
    await alice.ok("logout");
    assert.equal((await alice.ok("status", "--json")).json<{ peer: unknown }>().peer, null);
    const config = `${await env.tempDir()}/config.json`;
    await Deno.writeTextFile(config, JSON.stringify({ peer: { "upload-limit": "1m" } }));
    await alice.ok("--config", config, "login", alice.name, alice.password);
    const again = (await alice.ok("status", "--json")).json<{ peer: { shares: { fileId: string }[] } }>();
    assert.deepEqual(again.peer.shares.map((f) => f.fileId), [fileId]);
    // Sending 3 MiB and a bit at 1 MiB a second, with a second's worth to start: at least 2 s (unlimited: 0.1 s).
    const capped = await bob.ok("download_file", "team", "report.bin", `${out}/again.bin`, "--json");
    const seconds = capped.json<{ seconds: number }>().seconds;
    assert.ok(seconds >= 1.8, `alice's upload-limit 1m: 3 MiB took ${seconds} s`);
    assert.equal(await sha256File(`${out}/again.bin`), want);

    // Logging in again while her peer runs: the same settings keep it; other settings restart it with them; a config
    // file that is not JSON, or whose "peer" section a new peer would refuse, is refused before anything is stopped.
    const daemonFile = async () =>
      JSON.parse(await Deno.readTextFile(`${alice.home}/daemon.json`)) as { pid: number; peerConfig: unknown };
    const running = await daemonFile();
    assert.deepEqual(running.peerConfig, { "upload-limit": "1m" });
    const same = await alice.ok("--config", config, "login", alice.name, alice.password);
    assert.doesNotMatch(same.stdout, /restarted/);
    assert.equal((await daemonFile()).pid, running.pid, "the same settings keep the running peer");
    const broken = `${await env.tempDir()}/broken.json`;
    await Deno.writeTextFile(broken, JSON.stringify({ peer: { "upload-limit": "2m" } }).slice(0, -1));
    const bad = await alice.run("--config", broken, "login", alice.name, alice.password);
    assert.equal(bad.code, EXIT.usage, bad.stderr);
    assert.match(expectOneErrorLine(bad.stderr), /broken\.json is not valid JSON/);
    assert.equal((await daemonFile()).pid, running.pid, "a bad config file leaves the running peer alone");
    await Deno.writeTextFile(broken, JSON.stringify({ peer: { "uplod-limit": "2m" } }));
    const misspelt = await alice.run("--config", broken, "login", alice.name, alice.password);
    assert.equal(misspelt.code, EXIT.usage, misspelt.stderr);
    assert.match(expectOneErrorLine(misspelt.stderr), /broken\.json: peer has no option --uplod-limit/);
    assert.equal((await daemonFile()).pid, running.pid, "a section the new peer would refuse stops nothing");
    const unlimited = `${await env.tempDir()}/unlimited.json`;
    await Deno.writeTextFile(unlimited, JSON.stringify({ client: { workers: 2 } }));
    const changed = await alice.ok("--config", unlimited, "login", alice.name, alice.password);
    assert.match(
      changed.stdout,
      /^background peer on \S+ \(restarted: its config settings changed\), sharing 1 group/m,
    );
    const restarted = await daemonFile();
    assert.notEqual(restarted.pid, running.pid, "new settings restart the peer");
    assert.deepEqual(restarted.peerConfig, {});
    const fast = await bob.ok("download_file", "team", "report.bin", `${out}/fast.bin`, "--json");
    assert.equal(await sha256File(`${out}/fast.bin`), want);
    assert.ok(fast.json<{ seconds: number }>().seconds < seconds, "without the upload limit it is faster");

    // Logged out: the session is revoked and the background peer gone.
    await carol.ok("logout");
    assert.equal((await carol.run("list_groups")).code, EXIT.notLoggedIn);
    await assert.rejects(async () => {
      await using t = await connect({ host: tracker.host, port: tracker.port });
      await t.request({ type: "whoami", token: carolSession.token }, "session");
    }, (e: unknown) => e instanceof RemoteError && e.code === "session_expired");

    // Login attempts are rate-limited per user.
    for (let i = 0; i < 5; i++) {
      assert.equal((await carol.run("login", carol.name, "bad-password")).code, EXIT.badPassword);
    }
    const limited = await carol.run("login", carol.name, carol.password);
    assert.equal(limited.code, EXIT.rateLimited);
    assert.match(expectOneErrorLine(limited.stderr), /Too many login attempts/);
  } finally {
    for (const u of [alice, bob, carol]) await logoutQuietly(u);
  }

  // Passwords are stored only as scrypt hashes: no password appears in the database files.
  tracker.proc.kill("SIGTERM");
  await tracker.proc.wait();
  for (const f of [db, `${db}-wal`]) {
    const bytes = await Deno.readFile(f).catch(() => new Uint8Array());
    const text = new TextDecoder("latin1").decode(bytes);
    for (const u of [alice, bob, carol]) assert.ok(!text.includes(u.password), `${u.name}'s password in ${f}`);
    if (f === db) assert.ok(text.includes("scrypt"), "the KDF parameters are stored");
  }
  const log = await Deno.readTextFile(`${alice.home}/peer.log`);
  assert.ok(!log.includes(alice.password), "password in the peer log");
});

Deno.test("e2e: two users on one home each share only their own uploads; status and logout with the tracker away", async () => {
  await using env = new E2E();
  const dir = await env.tempDir();
  await writeRandomFile(`${dir}/mine.bin`, 100 * 1024);
  // Heartbeats 30 s apart: the peer does not find out by itself, within the test, that the tracker went away.
  const tracker = await env.tracker(30_000, 90_000);
  const alice = await user(env, () => tracker.addr, "alice");
  // Dave works on Alice's machine, with her home: the same state directory.
  const dave = { ...await user(env, () => tracker.addr, "dave"), home: alice.home };
  dave.run = (...args) => env.client(["--tracker", tracker.addr, "--home", alice.home], ...args);
  dave.ok = (...args) => env.clientOk(["--tracker", tracker.addr, "--home", alice.home], ...args);
  const shares = async (u: User) =>
    (await u.ok("status", "--json")).json<{ peer: { shares: { fileId: string }[] } | null }>().peer?.shares ?? [];
  try {
    for (const u of [alice, dave]) await u.ok("create_user", u.name, u.password);
    await alice.ok("login", alice.name, alice.password);
    await alice.ok("create_group", "team");
    const upload = async () =>
      (await alice.ok("upload_file", `${dir}/mine.bin`, "team", "--json")).json<{ fileId: string }>().fileId;
    const listed = async () =>
      (await alice.ok("list_files", "team", "--json")).json<{ id: string; name: string }[]>().map((f) => f.id);
    const before = await upload();
    // Uploaded again after a change: the new content replaces the old in the group, not beside it.
    await writeRandomFile(`${dir}/mine.bin`, 100 * 1024);
    const fileId = await upload();
    assert.notEqual(fileId, before);
    assert.deepEqual(await listed(), [fileId]);
    // Dave is in no group: before, his peer took Alice's uploads as his own (and the tracker refused them).
    const aliceToken = JSON.parse(await Deno.readTextFile(`${alice.home}/session.json`)).token as string;
    const login = await dave.ok("login", dave.name, dave.password);
    assert.match(login.stdout, /sharing 0 group file\(s\)/);
    // Alice's session, which his replaced in this home, is ended: a copy of it taken before is no use.
    assert.match(login.stdout, /^ended alice's session$/m);
    assert.deepEqual(await ask(endpoint(tracker.addr), [{ type: "list_groups", token: aliceToken }]), [
      "error session_expired: Not logged in: the session is unknown or was logged out",
    ]);
    assert.deepEqual(await shares(dave), []);
    assert.match((await dave.run("stop_sharing", "team", "mine.bin")).stderr, /error:/, "not his to stop");
    // Back as Alice: her upload is still hers. It changed meanwhile: her peer shares what it holds now, and the
    // tracker no longer lists what it held before.
    await writeRandomFile(`${dir}/mine.bin`, 100 * 1024);
    await alice.ok("login", alice.name, alice.password);
    const [now] = (await shares(alice)).map((s) => s.fileId);
    assert.ok(now !== undefined && now !== fileId, "the changed file is shared under its new id");
    await waitUntil(async () => (await listed()).join() === now, 10_000, "the earlier content to be withdrawn");

    // The tracker goes away: status no longer calls the peer registered; logout stops the peer and ends the
    // session here, and says the tracker was not told.
    tracker.proc.kill("SIGKILL");
    await tracker.proc.wait();
    const away = (await alice.ok("status", "--json")).json<{ session: string; peer: { registered: boolean } }>();
    assert.match(away.session, /^tracker unreachable /);
    assert.equal(away.peer.registered, false);
    assert.match((await alice.ok("status")).stdout, /^peer: +\S+ \(not registered\), 1 group file/m);
    const out = await alice.run("logout");
    assert.equal(out.code, 4, out.stderr);
    assert.match(
      expectOneErrorLine(out.stderr),
      /^error: Logged out alice here and stopped the background peer, but the tracker was not told \(.*\): the session stays valid there until \d{4}-/,
    );
    const after = (await alice.ok("status", "--json")).json<{ user: string | null; peer: unknown }>();
    assert.deepEqual([after.user ?? null, after.peer], [null, null]);
  } finally {
    await logoutQuietly(alice);
  }
});

Deno.test("e2e: group requests that cannot be get clear exit codes; status says when a session has expired", async () => {
  await using env = new E2E();
  // Sessions last 15 s: the steps before the expiry check take 3-4 s alone, and more than 6 s once in a full CI run.
  const tracker = await env.tracker(200, 1000, ["--db", ":memory:", "--session-ttl", "15"]);
  const alice = await user(env, () => tracker.addr, "alice"), bob = await user(env, () => tracker.addr, "bob");
  try {
    for (const u of [alice, bob]) await u.ok("create_user", u.name, u.password);
    await alice.ok("login", alice.name, alice.password);
    await bob.ok("login", bob.name, bob.password);
    await alice.ok("create_group", "team");
    await bob.ok("join_group", "team");
    await alice.ok("accept_request", "team", "bob");
    const cases: [User, string[], number, RegExp][] = [
      [alice, ["accept_request", "team", "bob"], EXIT.duplicate, /bob is already in team/],
      [alice, ["leave_group", "team"], EXIT.usage, /alice owns team and cannot leave it/],
      [alice, ["remove_member", "team", "alice"], EXIT.usage, /alice owns team and cannot be removed/],
      [bob, ["list_files", ""], EXIT.usage, /A group name is needed/],
    ];
    for (const [u, args, code, message] of cases) {
      const r = await u.run(...args);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(expectOneErrorLine(r.stderr), message);
    }
    // Bob's background peer dies; what he downloads meanwhile is shared from his next login.
    const dir = await env.tempDir(), out = await env.tempDir();
    await writeRandomFile(`${dir}/notes.bin`, 50 * 1024);
    const fileId = (await alice.ok("upload_file", `${dir}/notes.bin`, "team", "--json")).json<{ fileId: string }>()
      .fileId;
    const daemon = JSON.parse(await Deno.readTextFile(`${bob.home}/daemon.json`)) as { pid: number };
    Deno.kill(daemon.pid, "SIGKILL");
    await waitUntil(
      async () => (await bob.ok("status", "--json")).json<{ peer: unknown }>().peer === null,
      10_000,
      "the peer gone",
    );
    const got = await bob.ok("download_file", "team", "notes.bin", out);
    assert.match(got.stdout, /your background peer is not running: it shares it in team from your next login$/m);
    await bob.ok("login", bob.name, bob.password);
    type Shares = { peer: { shares: { fileId: string; inGroup: boolean | null }[] } };
    const shares = (await bob.ok("status", "--json")).json<Shares>().peer.shares;
    assert.deepEqual(shares.map((f) => [f.fileId, f.inGroup]), [[fileId, true]]);
    // Removed from the group, Bob's peer still holds the file, and status says it is not shared there.
    await alice.ok("remove_member", "team", "bob");
    const removed = (await bob.ok("status", "--json")).json<Shares>().peer.shares;
    assert.deepEqual(removed.map((f) => [f.fileId, f.inGroup]), [[fileId, false]]);
    assert.match(
      (await bob.ok("status")).stdout,
      /^ {2}\[team\] notes\.bin .*\(not shared: you are not in team now\)$/m,
    );
    // The session lasts 15 s; the tracker forgets one it finds expired, the home still knows when it ended.
    await waitUntil(
      async () => {
        const s = (await alice.ok("status", "--json")).json<{ session: string }>();
        return s.session === "expired; log in again" ? s : null;
      },
      20_000,
      "the session to expire",
    );
    assert.match((await alice.ok("status")).stdout, /^user: +alice \(session expired; log in again, at \d{4}-/m);
  } finally {
    await logoutQuietly(alice);
    await logoutQuietly(bob);
  }
});
