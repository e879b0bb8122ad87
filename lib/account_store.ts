/**
 * The tracker's persistent records in SQLite (`node:sqlite`): users and
 * their password hashes, sessions (token hashes only), groups, members,
 * join requests, group files and who shares them, and the tracker's
 * signing key. The schema is versioned (`PRAGMA user_version`) and grows
 * only by appending to {@link MIGRATIONS}.
 *
 * Every method is synchronous and small; the rules (who may do what) live
 * in accounts.ts.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import type { Manifest } from "./manifest.ts";
import type { GroupEntry } from "./messages.ts";
import { parseKdfParams, type PasswordHash } from "./passwords.ts";

/** Schema steps; step i brings the database from version i to i + 1. Never edit one that shipped. */
const MIGRATIONS: string[] = [
  `CREATE TABLE users (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     pw_salt BLOB NOT NULL,
     pw_hash BLOB NOT NULL,
     pw_params TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE sessions (
     token_hash BLOB PRIMARY KEY,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   );
   CREATE TABLE groups (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     owner_id INTEGER NOT NULL REFERENCES users(id),
     created_at INTEGER NOT NULL
   );
   CREATE TABLE members (
     group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     joined_at INTEGER NOT NULL,
     PRIMARY KEY (group_id, user_id)
   );
   CREATE TABLE join_requests (
     group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     requested_at INTEGER NOT NULL,
     PRIMARY KEY (group_id, user_id)
   );
   CREATE TABLE group_files (
     group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
     file_id TEXT NOT NULL,
     name TEXT NOT NULL,
     size INTEGER NOT NULL,
     owner_id INTEGER NOT NULL REFERENCES users(id),
     manifest TEXT NOT NULL,
     added_at INTEGER NOT NULL,
     PRIMARY KEY (group_id, file_id)
   );
   CREATE TABLE sharers (
     group_id INTEGER NOT NULL,
     file_id TEXT NOT NULL,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     PRIMARY KEY (group_id, file_id, user_id),
     FOREIGN KEY (group_id, file_id) REFERENCES group_files(group_id, file_id) ON DELETE CASCADE
   );
   CREATE TABLE tracker_key (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     pkcs8 BLOB NOT NULL
   );`,
  // Listings read no manifest (a group of large files made each request parse them all), and look-ups by name and
  // listings in name order need no pass over the group's files.
  `ALTER TABLE group_files ADD COLUMN chunk_size INTEGER NOT NULL DEFAULT 0;
   UPDATE group_files SET chunk_size = json_extract(manifest, '$.chunkSize');
   CREATE INDEX group_files_by_name ON group_files (group_id, name, file_id);`,
  // User and group names are one name whatever their case ("Alice" could pass for "alice"), checked on insert. Not
  // unique indexes: a database may already hold such a pair, which keeps working.
  `CREATE INDEX users_by_folded_name ON users (name COLLATE NOCASE);
   CREATE INDEX groups_by_folded_name ON groups (name COLLATE NOCASE);`,
];

/** The schema version this build writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** A user row. */
export interface UserRow {
  id: number;
  name: string;
  password: PasswordHash;
}

/** A group row with its owner's name. */
export interface GroupRow {
  id: number;
  name: string;
  owner: string;
  ownerId: number;
}

/** A group file with its sharers' names, as a listing shows it. */
export interface GroupFileInfo {
  fileId: string;
  name: string;
  size: number;
  chunkSize: number;
  owner: string;
  sharers: string[];
}

/** A group file with its manifest. */
export interface GroupFileRow extends GroupFileInfo {
  manifest: Manifest;
}

type Row = Record<string, unknown>;

/** The database. Close it when done. */
export class AccountStore {
  readonly db: DatabaseSync;

  /** Opens (creating and migrating) the database at `path`; ":memory:" for a throwaway one. */
  constructor(path: string) {
    this.db = new DatabaseSync(path);
    this.db.exec("PRAGMA foreign_keys = ON");
    if (path !== ":memory:") this.db.exec("PRAGMA journal_mode = WAL");
    this.#migrate();
  }

  #migrate(): void {
    const version = Number((this.db.prepare("PRAGMA user_version").get() as Row).user_version);
    if (version > SCHEMA_VERSION) {
      throw new Error(`The database has schema version ${version}; this tracker knows up to ${SCHEMA_VERSION}`);
    }
    for (let v = version; v < SCHEMA_VERSION; v++) {
      this.db.exec("BEGIN");
      try {
        this.db.exec(MIGRATIONS[v]!);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
        this.db.exec("COMMIT");
      } catch (err) {
        this.db.exec("ROLLBACK");
        throw err;
      }
    }
  }

  get schemaVersion(): number {
    return Number((this.db.prepare("PRAGMA user_version").get() as Row).user_version);
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }

  // ------------------------------------------------------------ key

  signingKey(): Uint8Array | null {
    const r = this.db.prepare("SELECT pkcs8 FROM tracker_key WHERE id = 1").get() as Row | undefined;
    return r ? new Uint8Array(r.pkcs8 as Uint8Array) : null;
  }

  saveSigningKey(pkcs8: Uint8Array): void {
    this.db.prepare("INSERT INTO tracker_key (id, pkcs8) VALUES (1, ?)").run(pkcs8);
  }

  // ------------------------------------------------------------ users and sessions

  userByName(name: string): UserRow | null {
    const r = this.db.prepare("SELECT * FROM users WHERE name = ?").get(name) as Row | undefined;
    if (!r) return null;
    return {
      id: Number(r.id),
      name: String(r.name),
      password: {
        salt: new Uint8Array(r.pw_salt as Uint8Array),
        hash: new Uint8Array(r.pw_hash as Uint8Array),
        params: parseKdfParams(String(r.pw_params)),
      },
    };
  }

  /** Inserts a user; false when the name is taken. */
  addUser(name: string, pw: PasswordHash, now: number): boolean {
    const r = this.db.prepare(
      `INSERT INTO users (name, pw_salt, pw_hash, pw_params, created_at) SELECT ?, ?, ?, ?, ?
       WHERE NOT EXISTS (SELECT 1 FROM users WHERE name = ? COLLATE NOCASE)`,
    ).run(name, pw.salt, pw.hash, JSON.stringify(pw.params), now, name);
    return Number(r.changes) === 1;
  }

  /** The user or group name that `name` is, ignoring case (ASCII names: SQLite's NOCASE folds those), or null. */
  takenName(table: "users" | "groups", name: string): string | null {
    const r = this.db.prepare(`SELECT name FROM ${table} WHERE name = ? COLLATE NOCASE`).get(name) as Row | undefined;
    return r ? String(r.name) : null;
  }

  addSession(tokenHash: Uint8Array, userId: number, now: number, expiresAt: number): void {
    this.db.prepare("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
      .run(tokenHash, userId, now, expiresAt);
  }

  /** The session's user and expiry, or null when there is no such session. */
  session(tokenHash: Uint8Array): { userId: number; user: string; expiresAt: number } | null {
    const r = this.db.prepare(
      "SELECT s.user_id, s.expires_at, u.name FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
    ).get(tokenHash) as Row | undefined;
    return r ? { userId: Number(r.user_id), user: String(r.name), expiresAt: Number(r.expires_at) } : null;
  }

  deleteSession(tokenHash: Uint8Array): void {
    this.db.prepare("DELETE FROM sessions WHERE token_hash = ?").run(tokenHash);
  }

  deleteExpiredSessions(now: number): void {
    this.db.prepare("DELETE FROM sessions WHERE expires_at <= ?").run(now);
  }

  // ------------------------------------------------------------ groups

  groupByName(name: string): GroupRow | null {
    const r = this.db.prepare(
      "SELECT g.id, g.name, g.owner_id, u.name AS owner FROM groups g JOIN users u ON u.id = g.owner_id WHERE g.name = ?",
    ).get(name) as Row | undefined;
    return r ? { id: Number(r.id), name: String(r.name), owner: String(r.owner), ownerId: Number(r.owner_id) } : null;
  }

  /** Creates a group with its owner as first member; false when the name is taken (in any case). */
  addGroup(name: string, ownerId: number, now: number): boolean {
    const r = this.db.prepare(
      `INSERT INTO groups (name, owner_id, created_at) SELECT ?, ?, ?
       WHERE NOT EXISTS (SELECT 1 FROM groups WHERE name = ? COLLATE NOCASE)`,
    ).run(name, ownerId, now, name);
    if (Number(r.changes) !== 1) return false;
    this.addMember(Number(r.lastInsertRowid), ownerId, now);
    return true;
  }

  /** Every group with its owner, member count, and what `userId` is to it. */
  groups(userId: number): GroupEntry[] {
    const rows = this.db.prepare(
      `SELECT g.name, u.name AS owner, g.owner_id,
              (SELECT COUNT(*) FROM members m WHERE m.group_id = g.id) AS members,
              EXISTS (SELECT 1 FROM members m WHERE m.group_id = g.id AND m.user_id = ?) AS member,
              EXISTS (SELECT 1 FROM join_requests j WHERE j.group_id = g.id AND j.user_id = ?) AS requested
         FROM groups g JOIN users u ON u.id = g.owner_id ORDER BY g.name`,
    ).all(userId, userId) as Row[];
    return rows.map((r) => ({
      name: String(r.name),
      owner: String(r.owner),
      members: Number(r.members),
      role: Number(r.owner_id) === userId
        ? "owner"
        : Number(r.member)
        ? "member"
        : Number(r.requested)
        ? "requested"
        : "none",
    }));
  }

  isMember(groupId: number, userId: number): boolean {
    return this.db.prepare("SELECT 1 FROM members WHERE group_id = ? AND user_id = ?").get(groupId, userId) !==
      undefined;
  }

  addMember(groupId: number, userId: number, now: number): void {
    this.db.prepare("INSERT OR IGNORE INTO members (group_id, user_id, joined_at) VALUES (?, ?, ?)")
      .run(groupId, userId, now);
    this.db.prepare("DELETE FROM join_requests WHERE group_id = ? AND user_id = ?").run(groupId, userId);
  }

  /** Removes a member and everything they shared into the group. */
  removeMember(groupId: number, userId: number): void {
    this.db.prepare("DELETE FROM members WHERE group_id = ? AND user_id = ?").run(groupId, userId);
    this.db.prepare("DELETE FROM sharers WHERE group_id = ? AND user_id = ?").run(groupId, userId);
    this.#dropUnshared(groupId);
  }

  /** Records a join request; false when one is already pending. */
  addRequest(groupId: number, userId: number, now: number): boolean {
    const r = this.db.prepare("INSERT OR IGNORE INTO join_requests (group_id, user_id, requested_at) VALUES (?, ?, ?)")
      .run(groupId, userId, now);
    return Number(r.changes) === 1;
  }

  hasRequest(groupId: number, userId: number): boolean {
    return this.db.prepare("SELECT 1 FROM join_requests WHERE group_id = ? AND user_id = ?").get(groupId, userId) !==
      undefined;
  }

  requests(groupId: number): string[] {
    const rows = this.db.prepare(
      "SELECT u.name FROM join_requests j JOIN users u ON u.id = j.user_id WHERE j.group_id = ? ORDER BY j.requested_at, u.name",
    ).all(groupId) as Row[];
    return rows.map((r) => String(r.name));
  }

  // ------------------------------------------------------------ group files

  /** Records that `userId` shares `manifest` (id `fileId`) in the group; the first sharer is its owner. */
  addShare(groupId: number, fileId: string, manifest: Manifest, userId: number, now: number): void {
    this.db.prepare(
      `INSERT OR IGNORE INTO group_files (group_id, file_id, name, size, chunk_size, owner_id, manifest, added_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(groupId, fileId, manifest.name, manifest.size, manifest.chunkSize, userId, JSON.stringify(manifest), now);
    this.db.prepare("INSERT OR IGNORE INTO sharers (group_id, file_id, user_id) VALUES (?, ?, ?)")
      .run(groupId, fileId, userId);
  }

  /** Removes `userId` as a sharer; the file record goes when nobody shares it any more. */
  removeShare(groupId: number, fileId: string, userId: number): boolean {
    const r = this.db.prepare("DELETE FROM sharers WHERE group_id = ? AND file_id = ? AND user_id = ?")
      .run(groupId, fileId, userId);
    this.#dropUnshared(groupId);
    return Number(r.changes) === 1;
  }

  #dropUnshared(groupId: number): void {
    this.db.prepare(
      `DELETE FROM group_files WHERE group_id = ?
         AND NOT EXISTS (SELECT 1 FROM sharers s WHERE s.group_id = group_files.group_id AND s.file_id = group_files.file_id)`,
    ).run(groupId);
  }

  /**
   * A group's files in name order, at most `limit` (-1: all), without their
   * manifests: a listing parses none (a group of large files made each
   * request parse them all).
   */
  groupFiles(groupId: number, limit: number): GroupFileInfo[] {
    return this.#fileRows("", false, limit, groupId).map((r) => fileInfo(r));
  }

  /** The group's files with this id, or with this exact name, with their manifests. */
  groupFilesMatching(groupId: number, match: { fileId: string } | { name: string }): GroupFileRow[] {
    const rows = "fileId" in match
      ? this.#fileRows("AND f.file_id = ?", true, -1, groupId, match.fileId)
      : this.#fileRows("AND f.name = ?", true, -1, groupId, match.name);
    return rows.map((r) => ({ ...fileInfo(r), manifest: JSON.parse(String(r.manifest)) as Manifest }));
  }

  #fileRows(where: string, manifests: boolean, limit: number, ...params: (number | string)[]): Row[] {
    return this.db.prepare(
      `SELECT f.file_id, f.name, f.size, f.chunk_size, u.name AS owner,
              ${manifests ? "f.manifest," : ""}
              (SELECT json_group_array(su.name) FROM sharers s JOIN users su ON su.id = s.user_id
                WHERE s.group_id = f.group_id AND s.file_id = f.file_id) AS sharers
         FROM group_files f JOIN users u ON u.id = f.owner_id
        WHERE f.group_id = ? ${where} ORDER BY f.name, f.file_id LIMIT ${Math.trunc(limit)}`,
    ).all(...params) as Row[];
  }
}

function fileInfo(r: Row): GroupFileInfo {
  return {
    fileId: String(r.file_id),
    name: String(r.name),
    size: Number(r.size),
    chunkSize: Number(r.chunk_size),
    owner: String(r.owner),
    sharers: (JSON.parse(String(r.sharers)) as string[]).sort(),
  };
}
