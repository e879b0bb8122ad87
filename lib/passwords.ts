/**
 * Password hashing for accounts: scrypt (memory-hard) with a random
 * per-user salt. The parameters are stored beside each hash, so they can be
 * raised later without breaking existing accounts.
 *
 * @module
 */

import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** scrypt cost parameters as stored with a hash. */
export interface KdfParams {
  alg: "scrypt";
  N: number;
  r: number;
  p: number;
  keyLen: number;
}

/** Default cost: 2^15 × 8 × 128 bytes = 32 MiB of memory, ~0.15 s on this machine kind. */
export const DEFAULT_KDF: KdfParams = { alg: "scrypt", N: 1 << 15, r: 8, p: 1, keyLen: 32 };

/** Shortest and longest password accepted. */
export const MIN_PASSWORD = 8;
export const MAX_PASSWORD = 1024;

/** A stored password: salt, hash and the parameters that made it. */
export interface PasswordHash {
  salt: Uint8Array;
  hash: Uint8Array;
  params: KdfParams;
}

function derive(password: string, salt: Uint8Array, k: KdfParams): Promise<Uint8Array> {
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  // maxmem must exceed 128 * N * r; leave headroom
  const maxmem = 256 * k.N * k.r;
  scrypt(password.normalize("NFC"), salt, k.keyLen, { N: k.N, r: k.r, p: k.p, maxmem }, (err, key) => {
    if (err) reject(err);
    else resolve(new Uint8Array(key));
  });
  return promise;
}

/** Hashes a new password with a fresh 16-byte salt. */
export async function hashPassword(password: string, params: KdfParams = DEFAULT_KDF): Promise<PasswordHash> {
  const salt = new Uint8Array(randomBytes(16));
  return { salt, hash: await derive(password, salt, params), params };
}

/** True when `password` matches `stored` (constant-time comparison). */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const got = await derive(password, stored.salt, stored.params);
  return got.length === stored.hash.length && timingSafeEqual(got, stored.hash);
}

/** Reads stored KDF parameters back, refusing anything unexpected. */
export function parseKdfParams(text: string): KdfParams {
  const o = JSON.parse(text) as Partial<KdfParams>;
  const ok = o.alg === "scrypt" && [o.N, o.r, o.p, o.keyLen].every((v) => Number.isSafeInteger(v) && v! > 0);
  if (!ok) throw new Error(`Unknown password hash parameters: ${text}`);
  return o as KdfParams;
}
