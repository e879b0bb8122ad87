/**
 * Accounts, sessions, groups and group files: the rules the tracker
 * enforces, over the records in account_store.ts. Who may do what:
 *
 * - anyone may create a user; a user logs in with a password and gets a
 *   session token (random, 256-bit, stored only as its SHA-256);
 * - any user may create a group (and owns it), ask to join one, and leave
 *   one they belong to (except its owner); the owner lists and accepts join
 *   requests and may remove members;
 * - only members see a group's files, look them up, get their manifests
 *   and get grants (grants.ts) to fetch their chunks from peers.
 *
 * Every refusal is an AccountError whose code maps to an exit code.
 *
 * @module
 */

import { createHash, randomBytes } from "node:crypto";
import { Buffer } from "node:buffer";
import { AccountStore, type GroupFileInfo, type GroupFileRow, type GroupRow } from "./account_store.ts";
import { AttemptLimiter } from "./attempt_limiter.ts";
import { isSha256Hex } from "./bytes.ts";
import { AccountError, UsageError } from "./errors.ts";
import {
  generateSigningKey,
  type GrantClaims,
  signGrant,
  type SigningKey,
  signingKeyFromPkcs8,
  signingKeyToPkcs8,
} from "./grants.ts";
import { fileIdOf, type Manifest } from "./manifest.ts";
import { DEFAULT_KDF, hashPassword, type KdfParams, MAX_PASSWORD, MIN_PASSWORD, verifyPassword } from "./passwords.ts";

/** How long a login session lasts. */
export const DEFAULT_SESSION_TTL_MS = 24 * 3600_000;
/** How long a grant lasts: also how long a user who lost access may keep downloading. */
export const DEFAULT_GRANT_TTL_MS = 60_000;
/** Failed logins allowed per user name, and login attempts per address, in {@link LOGIN_WINDOW_MS}. */
export const MAX_LOGIN_FAILURES_PER_USER = 5;
export const MAX_LOGINS_PER_ADDRESS = 20;
export const LOGIN_WINDOW_MS = 60_000;
/**
 * New users allowed per address in {@link SIGNUP_WINDOW_MS}: each costs a
 * 32 MiB scrypt hash and a row kept for good, so one address cannot fill
 * the database or the tracker's CPU with accounts.
 */
export const MAX_SIGNUPS_PER_ADDRESS = 10;
export const SIGNUP_WINDOW_MS = 60 * 60_000;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;

/** Checks a user or group name: 1-32 of letters, digits, `.`, `_`, `-`, not starting with a symbol. */
export function checkName(name: string, what: "user" | "group"): string {
  if (!NAME_RE.test(name)) {
    throw new UsageError(
      `Invalid ${what} name ${JSON.stringify(name.slice(0, 40))}: use 1-32 letters, digits, ".", "_" or "-", ` +
        "starting with a letter or digit",
    );
  }
  return name;
}

/** Options for {@link Accounts}. */
export interface AccountsOptions {
  sessionTtlMs?: number;
  grantTtlMs?: number;
  kdf?: KdfParams;
  maxFailuresPerUser?: number;
  maxLoginsPerAddress?: number;
  maxSignupsPerAddress?: number;
  now?: () => number;
}

/** A logged-in session. */
export interface Session {
  userId: number;
  user: string;
  expiresAt: number;
}

function tokenHash(token: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(token).digest());
}

/** The account rules over one store. */
export class Accounts {
  readonly store: AccountStore;
  readonly key: SigningKey;
  readonly sessionTtlMs: number;
  readonly grantTtlMs: number;
  #kdf: KdfParams;
  #now: () => number;
  #userFailures: AttemptLimiter;
  #addressAttempts: AttemptLimiter;
  #signups: AttemptLimiter;

  constructor(store: AccountStore, options: AccountsOptions = {}) {
    this.store = store;
    this.sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.grantTtlMs = options.grantTtlMs ?? DEFAULT_GRANT_TTL_MS;
    this.#kdf = options.kdf ?? DEFAULT_KDF;
    this.#now = options.now ?? Date.now;
    const stored = store.signingKey();
    if (stored) {
      this.key = signingKeyFromPkcs8(stored);
    } else {
      this.key = generateSigningKey();
      store.saveSigningKey(signingKeyToPkcs8(this.key));
    }
    this.#userFailures = new AttemptLimiter(
      options.maxFailuresPerUser ?? MAX_LOGIN_FAILURES_PER_USER,
      LOGIN_WINDOW_MS,
      this.#now,
    );
    this.#addressAttempts = new AttemptLimiter(
      options.maxLoginsPerAddress ?? MAX_LOGINS_PER_ADDRESS,
      LOGIN_WINDOW_MS,
      this.#now,
    );
    this.#signups = new AttemptLimiter(
      options.maxSignupsPerAddress ?? MAX_SIGNUPS_PER_ADDRESS,
      SIGNUP_WINDOW_MS,
      this.#now,
    );
  }

  // ------------------------------------------------------------ users and sessions

  /** Adds a user; from the network (`address` given), at most {@link MAX_SIGNUPS_PER_ADDRESS} an hour per address. */
  async createUser(name: string, password: string, address?: string): Promise<void> {
    checkName(name, "user");
    checkPassword(password);
    this.#nameFree("users", name);
    if (address !== undefined) {
      const wait = this.#signups.retryAfter(address);
      if (wait > 0) {
        throw new AccountError(
          "rate_limited",
          `Too many new users from this address; try again in ${Math.ceil(wait / 60_000)} min`,
        );
      }
      this.#signups.record(address);
    }
    const hash = await hashPassword(password, this.#kdf);
    if (!this.store.addUser(name, hash, this.#now())) {
      this.#nameFree("users", name); // taken while it hashed
      throw new AccountError("duplicate", `User ${name} already exists`);
    }
  }

  /** Throws duplicate when a user or group goes by `name` in any case: "Alice" could pass for "alice". */
  #nameFree(table: "users" | "groups", name: string): void {
    const taken = this.store.takenName(table, name);
    if (taken === null) return;
    const what = table === "users" ? "User" : "Group";
    if (taken === name) throw new AccountError("duplicate", `${what} ${name} already exists`);
    throw new AccountError("duplicate", `${what} ${taken} already exists; names that differ only in case are one name`);
  }

  /** Checks the password and opens a session. Rate-limited per user name and per address. */
  async login(name: string, password: string, address: string): Promise<{ token: string; session: Session }> {
    const wait = Math.max(this.#userFailures.retryAfter(name), this.#addressAttempts.retryAfter(address));
    if (wait > 0) {
      throw new AccountError("rate_limited", `Too many login attempts; try again in ${Math.ceil(wait / 1000)} s`);
    }
    this.#addressAttempts.record(address);
    const user = this.store.userByName(name);
    if (!user) {
      this.#userFailures.record(name);
      throw new AccountError("unknown_user", `No user named ${name}`);
    }
    if (!(await verifyPassword(password, user.password))) {
      this.#userFailures.record(name);
      throw new AccountError("bad_password", `Wrong password for ${name}`);
    }
    this.#userFailures.reset(name);
    const token = Buffer.from(randomBytes(32)).toString("base64url");
    const now = this.#now();
    const expiresAt = now + this.sessionTtlMs;
    this.store.deleteExpiredSessions(now);
    this.store.addSession(tokenHash(token), user.id, now, expiresAt);
    return { token, session: { userId: user.id, user: user.name, expiresAt } };
  }

  logout(token: string): void {
    this.session(token);
    this.store.deleteSession(tokenHash(token));
  }

  /** The session a token opened; throws session_expired when it is unknown, revoked or past its expiry. */
  session(token: string): Session {
    const s = this.store.session(tokenHash(token));
    if (!s) throw new AccountError("session_expired", "Not logged in: the session is unknown or was logged out");
    if (s.expiresAt <= this.#now()) {
      this.store.deleteSession(tokenHash(token));
      throw new AccountError("session_expired", "The session has expired; log in again");
    }
    return s;
  }

  // ------------------------------------------------------------ groups

  createGroup(token: string, group: string): void {
    const s = this.session(token);
    checkName(group, "group");
    this.#nameFree("groups", group);
    this.store.addGroup(group, s.userId, this.#now());
  }

  joinGroup(token: string, group: string): void {
    const s = this.session(token);
    const g = this.#group(group);
    if (this.store.isMember(g.id, s.userId)) throw new AccountError("duplicate", `${s.user} is already in ${group}`);
    if (!this.store.addRequest(g.id, s.userId, this.#now())) {
      throw new AccountError("duplicate", `${s.user} already asked to join ${group}`);
    }
  }

  leaveGroup(token: string, group: string): void {
    const s = this.session(token);
    const g = this.#member(s, group);
    if (g.ownerId === s.userId) throw new AccountError("is_owner", `${s.user} owns ${group} and cannot leave it`);
    this.store.removeMember(g.id, s.userId);
  }

  acceptRequest(token: string, group: string, user: string): void {
    const g = this.#owned(this.session(token), group);
    const u = this.store.userByName(user);
    if (!u) throw new AccountError("unknown_user", `No user named ${user}`);
    if (this.store.isMember(g.id, u.id)) throw new AccountError("duplicate", `${user} is already in ${group}`);
    if (!this.store.hasRequest(g.id, u.id)) {
      throw new AccountError("not_found", `${user} has not asked to join ${group}`);
    }
    this.store.addMember(g.id, u.id, this.#now());
  }

  removeMember(token: string, group: string, user: string): void {
    const s = this.session(token);
    const g = this.#owned(s, group);
    const u = this.store.userByName(user);
    if (!u) throw new AccountError("unknown_user", `No user named ${user}`);
    if (u.id === s.userId) throw new AccountError("is_owner", `${user} owns ${group} and cannot be removed`);
    if (!this.store.isMember(g.id, u.id)) throw new AccountError("not_member", `${user} is not in ${group}`);
    this.store.removeMember(g.id, u.id);
  }

  listGroups(token: string) {
    return this.store.groups(this.session(token).userId);
  }

  listRequests(token: string, group: string): string[] {
    return this.store.requests(this.#owned(this.session(token), group).id);
  }

  // ------------------------------------------------------------ group files

  /** A member's view of a group's files: the first `limit` by name (-1: all). */
  groupFiles(token: string, group: string, limit = -1): GroupFileInfo[] {
    const s = this.session(token);
    return this.store.groupFiles(this.#member(s, group).id, limit);
  }

  /** One group file by id or exact name, for a member. */
  groupFile(token: string, group: string, file: string): { session: Session; group: GroupRow; file: GroupFileRow } {
    const s = this.session(token);
    const g = this.#member(s, group);
    const files = this.store.groupFilesMatching(g.id, isSha256Hex(file) ? { fileId: file } : { name: file });
    if (files.length === 0) throw new AccountError("not_found", `No file ${JSON.stringify(file)} in ${group}`);
    if (files.length > 1) {
      throw new AccountError(
        "ambiguous",
        `${files.length} files in ${group} are named ${JSON.stringify(file)}; pick one by id: ${
          files.map((f) => f.fileId).join(", ")
        }`,
      );
    }
    return { session: s, group: g, file: files[0]! };
  }

  /** A grant for a member to fetch a group file's chunks. */
  grant(token: string, group: string, fileId: string): { grant: string; expiresAt: number } {
    const { session, file } = this.groupFile(token, group, fileId);
    const claims: GrantClaims = {
      v: 1,
      user: session.user,
      group,
      fileId: file.fileId,
      exp: this.#now() + this.grantTtlMs,
    };
    return { grant: signGrant(this.key, claims), expiresAt: claims.exp };
  }

  /** Records that a member shares `manifest` into a group (upload_file, or a re-announce after a restart). */
  share(session: Session, group: string, manifest: Manifest): string {
    const g = this.#member(session, group);
    const fileId = fileIdOf(manifest);
    this.store.addShare(g.id, fileId, manifest, session.userId, this.#now());
    return fileId;
  }

  /** stop_sharing: the user no longer shares the file in the group. Returns its id. */
  stopSharing(token: string, group: string, file: string): string {
    const { session, group: g, file: f } = this.groupFile(token, group, file);
    if (!this.store.removeShare(g.id, f.fileId, session.userId)) {
      throw new AccountError("not_found", `${session.user} does not share ${f.name} in ${group}`);
    }
    return f.fileId;
  }

  #group(name: string): GroupRow {
    if (name === "") throw new UsageError("A group name is needed; it was given an empty one");
    const g = this.store.groupByName(name);
    if (!g) throw new AccountError("unknown_group", `No group named ${name}`);
    return g;
  }

  #member(s: Session, name: string): GroupRow {
    const g = this.#group(name);
    if (!this.store.isMember(g.id, s.userId)) {
      throw new AccountError("not_member", `${s.user} is not a member of ${name}`);
    }
    return g;
  }

  #owned(s: Session, name: string): GroupRow {
    const g = this.#group(name);
    if (g.ownerId !== s.userId) throw new AccountError("not_owner", `${s.user} does not own ${name} (${g.owner} does)`);
    return g;
  }
}

function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
    throw new UsageError(`A password must be ${MIN_PASSWORD} to ${MAX_PASSWORD} characters long`);
  }
}
