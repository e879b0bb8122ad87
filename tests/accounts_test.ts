// Accounts, groups and grants: the store and its migrations, the rules, grant signing, the login
// limiter, and (real sockets on port 0) a download that stops when the user loses access.
import assert from "node:assert/strict";
import { join } from "node:path";
import { AccountStore, SCHEMA_VERSION } from "../lib/account_store.ts";
import { Accounts, SIGNUP_WINDOW_MS } from "../lib/accounts.ts";
import { AttemptLimiter } from "../lib/attempt_limiter.ts";
import { connect } from "../lib/connection.ts";
import { download } from "../lib/download.ts";
import { AccountError, RemoteError, ShoalError } from "../lib/errors.ts";
import { generateSigningKey, GrantError, publicKeyFrom, signGrant, verifyGrant } from "../lib/grants.ts";
import { fileIdOf, hashFile, type Manifest } from "../lib/manifest.ts";
import type { KdfParams } from "../lib/passwords.ts";
import type { Message, MessageName } from "../lib/messages.ts";
import { PeerNode } from "../lib/peer.ts";
import { Tracker, TrackerServer } from "../lib/tracker.ts";
import { randomBytes, tempDir } from "./helpers.ts";

/** Cheap scrypt for tests (the default costs ~0.15 s a hash). */
const FAST_KDF: KdfParams = { alg: "scrypt", N: 1024, r: 8, p: 1, keyLen: 32 };
const HELLO: Manifest = {
  name: "hello.txt",
  size: 5,
  chunkSize: 16384,
  chunks: ["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"],
};

function code(c: string) {
  return (e: unknown) => e instanceof ShoalError && e.code === c;
}

Deno.test("store: a reopened database keeps users, sessions, groups, requests, files and the signing key", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "t.db");
  let store = new AccountStore(path);
  let a = new Accounts(store, { kdf: FAST_KDF });
  const key = a.key.publicKey;
  await a.createUser("alice", "alice-pw-1");
  await a.createUser("bob", "bob-pw-123");
  const { token } = await a.login("alice", "alice-pw-1", "h");
  const bob = (await a.login("bob", "bob-pw-123", "h")).token;
  a.createGroup(token, "team");
  a.joinGroup(bob, "team");
  a.share(a.session(token), "team", HELLO);
  store.close();

  store = new AccountStore(path);
  assert.equal(store.schemaVersion, SCHEMA_VERSION);
  a = new Accounts(store, { kdf: FAST_KDF });
  assert.equal(a.key.publicKey, key, "same signing key after a restart");
  assert.equal(a.session(token).user, "alice");
  assert.deepEqual(a.listRequests(token, "team"), ["bob"]);
  a.acceptRequest(token, "team", "bob");
  const files = a.groupFiles(bob, "team", 10);
  assert.deepEqual(files.map((f) => [f.fileId, f.name, f.chunkSize, f.owner, f.sharers]), [[
    fileIdOf(HELLO),
    "hello.txt",
    HELLO.chunkSize,
    "alice",
    ["alice"],
  ]]);
  store.close();
});

Deno.test("store: a database of schema version 1 gains the group files' chunk sizes and name index", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "t.db");
  let s = new AccountStore(path);
  const a = new Accounts(s, { kdf: FAST_KDF });
  await a.createUser("alice", "alice-pw-1");
  const { token, session } = await a.login("alice", "alice-pw-1", "h");
  a.createGroup(token, "team");
  a.share(session, "team", HELLO);
  // back to version 1 as it was
  s.db.exec(`DROP INDEX group_files_by_name; ALTER TABLE group_files DROP COLUMN chunk_size;
    DROP INDEX users_by_folded_name; DROP INDEX groups_by_folded_name; PRAGMA user_version = 1`);
  s.close();
  s = new AccountStore(path);
  assert.equal(s.schemaVersion, SCHEMA_VERSION);
  assert.deepEqual(new Accounts(s, { kdf: FAST_KDF }).groupFiles(token, "team").map((f) => f.chunkSize), [16384]);
  const plan = s.db.prepare("EXPLAIN QUERY PLAN SELECT file_id FROM group_files WHERE group_id = 1 AND name = 'x'")
    .all();
  assert.match(JSON.stringify(plan), /group_files_by_name/);
  s.close();
});

Deno.test("store: a database of schema version 2 with two names that differ only in case keeps both", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "t.db");
  let s = new AccountStore(path);
  await new Accounts(s, { kdf: FAST_KDF }).createUser("alice", "alice-pw-1");
  // As an older tracker let it happen.
  s.db.exec(`DROP INDEX users_by_folded_name; DROP INDEX groups_by_folded_name; PRAGMA user_version = 2;
    INSERT INTO users (name, pw_salt, pw_hash, pw_params, created_at)
      SELECT 'Alice', pw_salt, pw_hash, pw_params, created_at FROM users WHERE name = 'alice'`);
  s.close();
  s = new AccountStore(path);
  assert.equal(s.schemaVersion, SCHEMA_VERSION);
  const a = new Accounts(s, { kdf: FAST_KDF });
  assert.equal((await a.login("Alice", "alice-pw-1", "h")).session.user, "Alice");
  assert.equal((await a.login("alice", "alice-pw-1", "h")).session.user, "alice");
  await assert.rejects(a.createUser("ALICE", "alice-pw-1"), code("duplicate"));
  s.close();
});

Deno.test("store: refuses a database from a newer version", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "t.db");
  const s = new AccountStore(path);
  s.db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
  s.close();
  assert.throws(() => new AccountStore(path), /schema version/);
});

Deno.test("accounts: names, passwords, duplicates, owners and members", async () => {
  const a = new Accounts(new AccountStore(":memory:"), { kdf: FAST_KDF });
  await assert.rejects(a.createUser("../x", "long-enough"), code("usage"));
  await assert.rejects(a.createUser("ok", "short"), code("usage"));
  await a.createUser("alice", "alice-pw-1");
  await a.createUser("bob", "bob-pw-123");
  await assert.rejects(a.createUser("alice", "alice-pw-2"), code("duplicate"));
  // One name whatever its case: "Alice" could pass for "alice" in a member list.
  await assert.rejects(
    a.createUser("Alice", "alice-pw-2"),
    (e: AccountError) => e.code === "duplicate" && /^User alice already exists; .*differ only in case/.test(e.message),
  );
  await assert.rejects(a.login("nobody", "x-password", "h"), code("unknown_user"));
  await assert.rejects(a.login("alice", "wrong-pw-1", "h"), code("bad_password"));
  const alice = (await a.login("alice", "alice-pw-1", "h")).token;
  const bob = (await a.login("bob", "bob-pw-123", "h")).token;
  assert.equal(alice.length, 43, "256-bit token, base64url");
  a.createGroup(alice, "team");
  assert.throws(() => a.createGroup(bob, "team"), code("duplicate"));
  assert.throws(() => a.createGroup(bob, "TEAM"), /^AccountError: Group team already exists; /);
  assert.throws(() => a.joinGroup(bob, "nope"), code("unknown_group"));
  assert.throws(() => a.groupFiles(bob, "team"), code("not_member"));
  a.joinGroup(bob, "team");
  assert.throws(() => a.joinGroup(bob, "team"), code("duplicate"));
  assert.throws(() => a.listRequests(bob, "team"), code("not_owner"));
  assert.throws(() => a.acceptRequest(alice, "team", "carol"), code("unknown_user"));
  a.acceptRequest(alice, "team", "bob");
  assert.deepEqual(a.listGroups(bob).map((g) => [g.name, g.owner, g.members, g.role]), [[
    "team",
    "alice",
    2,
    "member",
  ]]);
  assert.throws(() => a.acceptRequest(alice, "team", "bob"), code("duplicate"), "a member already");
  assert.throws(() => a.groupFiles(bob, ""), code("usage"));
  assert.throws(
    () => a.leaveGroup(alice, "team"),
    (e: unknown) => e instanceof AccountError && e.code === "is_owner" && e.exitCode === 2,
  );
  const id = a.share(a.session(bob), "team", HELLO);
  assert.equal(a.grant(bob, "team", id).grant.split(".").length, 2);
  const aliceId = a.share(a.session(alice), "team", { ...HELLO, name: "other.txt", chunkSize: 32768 });
  assert.ok(a.grant(bob, "team", aliceId).grant);
  // Two files of the group under one name: asked by that name, the answer lists both ids, a usage error (exit 2).
  const twin = a.share(a.session(bob), "team", { ...HELLO, name: "other.txt", chunkSize: 65536 });
  assert.throws(
    () => a.groupFile(alice, "team", "other.txt"),
    (e: unknown) =>
      e instanceof AccountError && e.code === "ambiguous" && e.exitCode === 2 && e.message.includes(aliceId) &&
      e.message.includes(twin),
  );
  assert.throws(() => a.stopSharing(alice, "team", "other.txt"), code("ambiguous"));
  assert.equal(a.stopSharing(bob, "team", twin), twin);
  assert.equal(a.stopSharing(alice, "team", "other.txt"), aliceId);
  assert.throws(() => a.grant(bob, "team", aliceId), code("not_found"), "stop_sharing: no new grants");
  assert.throws(() => a.stopSharing(alice, "team", "other.txt"), code("not_found"));
  a.leaveGroup(bob, "team");
  assert.throws(() => a.grant(bob, "team", id), code("not_member"));
  assert.deepEqual(a.groupFiles(alice, "team"), [], "a file goes with its last sharer");
  a.logout(bob);
  assert.throws(() => a.session(bob), code("session_expired"));
  a.store.close();
});

Deno.test("accounts: sessions expire; login is rate-limited per user and per address", async () => {
  let now = 1_000_000;
  const a = new Accounts(new AccountStore(":memory:"), {
    kdf: FAST_KDF,
    sessionTtlMs: 1000,
    maxFailuresPerUser: 3,
    maxLoginsPerAddress: 6,
    now: () => now,
  });
  await a.createUser("alice", "alice-pw-1");
  const { token } = await a.login("alice", "alice-pw-1", "10.0.0.1");
  now += 1001;
  assert.throws(() => a.session(token), (e: unknown) => e instanceof AccountError && /expired/.test(e.message));
  for (let i = 0; i < 3; i++) await assert.rejects(a.login("alice", "bad-pw-xx", "10.0.0.1"), code("bad_password"));
  await assert.rejects(a.login("alice", "alice-pw-1", "10.0.0.2"), code("rate_limited"), "per user, from any address");
  for (let i = 0; i < 2; i++) await assert.rejects(a.login(`u${i}`, "x-password", "10.0.0.1"), code("unknown_user"));
  await assert.rejects(a.login("zed", "x-password", "10.0.0.1"), code("rate_limited"), "per address");
  now += 60_001;
  assert.ok((await a.login("alice", "alice-pw-1", "10.0.0.1")).token, "the window passes");
  a.store.close();
});

Deno.test("tracker: logins are limited per IPv4 address and per IPv6 /64, whichever address of it they come from", async () => {
  const a = new Accounts(new AccountStore(":memory:"), { kdf: FAST_KDF, maxLoginsPerAddress: 2 });
  const tracker = new Tracker({ accounts: a });
  const login = (from: string) => tracker.respond({ type: "login", name: "nobody", password: "x-password" }, from);
  for (const from of ["2001:db8::1", "2001:db8::2:3"]) await assert.rejects(login(from), code("unknown_user"));
  await assert.rejects(login("2001:db8:0:0:ffff::9"), code("rate_limited"), "the same /64");
  await assert.rejects(login("2001:db8:0:1::1"), code("unknown_user"), "another /64");
  a.store.close();
});

Deno.test("accounts: new users are limited per address, an hour at a time", async () => {
  let now = 1_000_000;
  const a = new Accounts(new AccountStore(":memory:"), { kdf: FAST_KDF, maxSignupsPerAddress: 2, now: () => now });
  await a.createUser("u1", "password-1", "10.0.0.1");
  await a.createUser("u2", "password-2", "10.0.0.1");
  await assert.rejects(
    a.createUser("u3", "password-3", "10.0.0.1"),
    (e: unknown) =>
      e instanceof AccountError && e.code === "rate_limited" && e.exitCode === 18 &&
      /try again in 60 min/.test(e.message),
  );
  await a.createUser("u3", "password-3", "10.0.0.2"); // another address has its own count
  now += SIGNUP_WINDOW_MS;
  await a.createUser("u4", "password-4", "10.0.0.1");
  a.store.close();
});

Deno.test("attempt limiter: a sliding window per key", () => {
  let now = 0;
  const l = new AttemptLimiter(2, 100, () => now);
  l.record("k");
  assert.equal(l.retryAfter("k"), 0);
  l.record("k");
  assert.equal(l.retryAfter("k"), 100);
  assert.equal(l.retryAfter("other"), 0);
  now = 60;
  assert.equal(l.retryAfter("k"), 40);
  now = 101;
  assert.equal(l.retryAfter("k"), 0);
});

Deno.test("grants: verified against the tracker key, expiry and the file they name", () => {
  const key = generateSigningKey();
  const pub = publicKeyFrom(key.publicKey);
  const fileId = fileIdOf(HELLO);
  const claims = { v: 1 as const, user: "bob", group: "team", fileId, exp: 2_000 };
  const g = signGrant(key, claims);
  assert.deepEqual(verifyGrant(pub, g, fileId, 1_000), claims);
  const refused = (grant: string, id: string, now: number, re: RegExp) =>
    assert.throws(
      () => verifyGrant(pub, grant, id, now),
      (e: unknown) => e instanceof GrantError && re.test(e.message),
    );
  refused(g, fileId, 2_000, /expired/);
  refused(g, "ab".repeat(32), 1_000, /for file/);
  refused(signGrant(generateSigningKey(), claims), fileId, 1_000, /bad signature/);
  const [body, sig] = g.split(".");
  const forgedBody = btoa(JSON.stringify({ ...claims, user: "carol" })).replaceAll("=", "");
  refused(`${forgedBody}.${sig}`, fileId, 1_000, /bad signature/);
  refused(`${body}`, fileId, 1_000, /malformed/);
  refused("x".repeat(2000), fileId, 1_000, /longer than/);
  assert.throws(() => publicKeyFrom("not a key"), GrantError);
});

Deno.test("network: a download stops within a grant's lifetime once the user is removed from the group", async () => {
  await using dir = await tempDir();
  const accounts = new Accounts(new AccountStore(":memory:"), { kdf: FAST_KDF, grantTtlMs: 600 });
  await using tracker = TrackerServer.start({ port: 0, accounts });
  await accounts.createUser("alice", "alice-pw-1");
  await accounts.createUser("bob", "bob-pw-123");
  const alice = (await accounts.login("alice", "alice-pw-1", "h")).token;
  const bob = (await accounts.login("bob", "bob-pw-123", "h")).token;
  accounts.createGroup(alice, "team");
  accounts.joinGroup(bob, "team");
  accounts.acceptRequest(alice, "team", "bob");

  const src = join(dir.path, "big.bin");
  const data = randomBytes(2 * 1024 * 1024);
  await Deno.writeFile(src, data);
  const manifest = await hashFile(src, "big.bin", 16384);
  const fileId = fileIdOf(manifest);
  // 200 kB/s: the 2 MiB download would take ~10 s.
  await using peer = PeerNode.start([], { tracker: tracker.address, token: () => alice, uploadLimit: 200_000 });
  await peer.shareInGroup(
    { id: fileId, path: src, relPath: "big.bin", manifest, size: data.length, mtimeMs: await mtimeOf(src) },
    "team",
  );

  const ask = async <T extends MessageName>(msg: Message, want: T) => {
    await using c = await connect(tracker.address);
    return await c.request(msg, want);
  };
  const lookup = await ask({ type: "group_lookup", token: bob, group: "team", file: "big.bin" }, "group_file");
  assert.equal(lookup.peers.length, 1);
  let removedAt = 0;
  const err = await download({
    fileId,
    manifest,
    out: join(dir.path, "out.bin"),
    workers: 1,
    discover: () => Promise.resolve(lookup.peers.map((p) => ({ host: p.host, port: p.port }))),
    authorize: async () => {
      const g = await ask({ type: "get_grant", token: bob, group: "team", fileId }, "grant");
      return { grant: g.grant, expiresAt: g.expiresAt };
    },
    onEvent: (e) => {
      if (e.kind === "progress" && e.doneBytes > 0 && removedAt === 0) {
        removedAt = Date.now();
        accounts.removeMember(alice, "team", "bob");
      }
    },
  }).then(() => null, (e) => e);
  assert.ok(err instanceof RemoteError && err.code === "not_member", `stopped with ${err}`);
  assert.ok(removedAt > 0, "the download had started");
  const after = Date.now() - removedAt;
  // Within the lifetime, and slack for a machine losing most of its CPU to its host; without the check it runs 10 s.
  assert.ok(after <= 600 + 1_500, `stopped ${after} ms after the removal (grant lifetime 600 ms)`);
  // The partial download is kept for a resume, never a complete-looking file.
  await assert.rejects(Deno.stat(join(dir.path, "out.bin")));
  assert.ok((await Deno.stat(join(dir.path, "out.bin.part"))).isFile);
});

/** Alice shares a mostly-zero file of `size` bytes into "team" from a rate-limited peer; grants last 1 s. */
async function groupFileFixture(dir: string, size: number, uploadLimit: number) {
  const accounts = new Accounts(new AccountStore(":memory:"), { kdf: FAST_KDF, grantTtlMs: 1000 });
  const tracker = TrackerServer.start({ port: 0, accounts });
  await accounts.createUser("alice", "alice-pw-1");
  const alice = (await accounts.login("alice", "alice-pw-1", "h")).token;
  accounts.createGroup(alice, "team");
  const src = join(dir, "f.bin");
  const data = new Uint8Array(size);
  crypto.getRandomValues(data.subarray(0, 65536));
  await Deno.writeFile(src, data);
  const manifest = await hashFile(src, "f.bin", 16384);
  const fileId = fileIdOf(manifest);
  const peer = PeerNode.start([], { tracker: tracker.address, token: () => alice, uploadLimit });
  await peer.shareInGroup(
    { id: fileId, path: src, relPath: "f.bin", manifest, size, mtimeMs: await mtimeOf(src) },
    "team",
  );
  return {
    data,
    manifest,
    fileId,
    peer,
    out: join(dir, "out.bin"),
    grant: () => accounts.grant(alice, "team", fileId),
    /** Downloads the file from the peer alone, with one worker, getting grants through `authorize`. */
    download: (authorize: () => Promise<{ grant: string; expiresAt: number }>) =>
      download({
        fileId,
        manifest,
        out: join(dir, "out.bin"),
        workers: 1,
        discover: () => Promise.resolve([peer.address]),
        authorize,
      }),
    async [Symbol.asyncDispose]() {
      await peer.close();
      await tracker.close();
    },
  };
}

Deno.test("network: grants are refreshed during a download longer than their lifetime", async () => {
  await using dir = await tempDir();
  // 150 kB/s: about 3.5 s, several grant lifetimes.
  await using f = await groupFileFixture(dir.path, 512 * 1024, 150_000);
  let grants = 0;
  const summary = await f.download(() => {
    grants++;
    return Promise.resolve(f.grant());
  });
  assert.equal(summary.bytes, f.data.length);
  assert.deepEqual(await Deno.readFile(f.out), f.data);
  assert.ok(grants >= 3, `${grants} grants for a download of ${summary.seconds.toFixed(1)} s`);
  // A fresh grant reaches the peer behind the requests already queued there (up to MAX_PIPELINE chunks); with a
  // lifetime this short some of them are refused as expired and asked again (next test), so no count is asserted.
});

Deno.test("network: a grant that lapses while the tracker is away is survived: rejected chunks are asked again", async () => {
  await using dir = await tempDir();
  // 100 kB/s: about 2.6 s from the only source.
  await using f = await groupFileFixture(dir.path, 256 * 1024, 100_000);
  let first = 0;
  const summary = await f.download(() => {
    // the tracker is unreachable from 0.3 s to 1.6 s after the first grant, which lapses at 1 s (timed from the first
    // grant, not from the start: a busy machine may take longer than 0.3 s to ask for it)
    first ||= Date.now();
    const t = Date.now() - first;
    if (t > 300 && t < 1600) return Promise.reject(new Error("tracker briefly away"));
    return Promise.resolve(f.grant());
  });
  assert.ok(f.peer.stats.rejected > 0, "the peer refused chunks while the grant had lapsed");
  assert.equal(summary.bytes, f.data.length);
  assert.deepEqual(await Deno.readFile(f.out), f.data);
});

/** A file's mtime as the indexer records it: a peer refuses a file changed since. */
async function mtimeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mtime!.getTime();
}
