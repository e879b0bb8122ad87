/**
 * Grants: short-lived permissions, signed by the tracker with Ed25519, that
 * let one user fetch one group file's chunks from any peer sharing it.
 * Peers learn the tracker's public key when they register and check every
 * grant themselves, so access control holds even against a client that
 * talks to a peer directly.
 *
 * A grant is `base64url(JSON claims) "." base64url(signature)`; the
 * signature covers the exact bytes of the first part.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from "node:crypto";
import { ExitCode, ShoalError } from "./errors.ts";
import { isSha256Hex, utf8Decoder, utf8Encoder } from "./bytes.ts";

/** Longest grant accepted (claims are a few short fields). */
export const MAX_GRANT_CHARS = 1024;

/** What a grant says. */
export interface GrantClaims {
  /** format version */
  v: 1;
  user: string;
  group: string;
  fileId: string;
  /** expiry, Unix milliseconds */
  exp: number;
}

/** A grant was refused: forged, expired, malformed or for another file. */
export class GrantError extends ShoalError {
  override name = "GrantError";
  constructor(reason: string) {
    super("grant_refused", `Grant refused: ${reason}`, ExitCode.accessDenied);
  }
}

/** The tracker's signing key pair. */
export interface SigningKey {
  privateKey: KeyObject;
  /** raw 32-byte public key, base64url (the JWK "x"), as sent to peers */
  publicKey: string;
}

/** A fresh Ed25519 key pair. */
export function generateSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicKey: publicKey.export({ format: "jwk" }).x! };
}

/** The key pair from its stored PKCS#8 DER form. */
export function signingKeyFromPkcs8(der: Uint8Array): SigningKey {
  const privateKey = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  return { privateKey, publicKey: createPublicKey(privateKey).export({ format: "jwk" }).x! };
}

/** The private key as PKCS#8 DER, for storage. */
export function signingKeyToPkcs8(key: SigningKey): Uint8Array {
  return new Uint8Array(key.privateKey.export({ format: "der", type: "pkcs8" }));
}

/** Signs claims into a grant string. */
export function signGrant(key: SigningKey, claims: GrantClaims): string {
  const body = Buffer.from(utf8Encoder.encode(JSON.stringify(claims))).toString("base64url");
  const sig = sign(null, utf8Encoder.encode(body), key.privateKey);
  return `${body}.${Buffer.from(sig).toString("base64url")}`;
}

/** A public key from its base64url raw form; throws GrantError if it is not one. */
export function publicKeyFrom(x: string): KeyObject {
  try {
    return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
  } catch {
    throw new GrantError("the tracker's public key is malformed");
  }
}

/**
 * Checks a grant for `fileId` at time `now`: signature by `trackerKey`,
 * expiry, and the file it names. Returns its claims or throws GrantError.
 */
export function verifyGrant(trackerKey: KeyObject, grant: string, fileId: string, now = Date.now()): GrantClaims {
  if (grant.length > MAX_GRANT_CHARS) throw new GrantError(`longer than ${MAX_GRANT_CHARS} characters`);
  const parts = grant.split(".");
  if (parts.length !== 2) throw new GrantError("malformed (expected claims.signature)");
  const [body, sig] = parts as [string, string];
  const sigBytes = Buffer.from(sig, "base64url");
  if (sigBytes.length !== 64 || !verify(null, utf8Encoder.encode(body), trackerKey, sigBytes)) {
    throw new GrantError("bad signature (not issued by this peer's tracker)");
  }
  let c: GrantClaims;
  try {
    c = JSON.parse(utf8Decoder.decode(Buffer.from(body, "base64url")));
  } catch {
    throw new GrantError("malformed claims");
  }
  const ok = c !== null && typeof c === "object" && c.v === 1 && typeof c.user === "string" &&
    typeof c.group === "string" && isSha256Hex(c.fileId) && Number.isSafeInteger(c.exp);
  if (!ok) throw new GrantError("malformed claims");
  if (c.fileId !== fileId) throw new GrantError(`it is for file ${c.fileId}, not ${fileId}`);
  if (c.exp <= now) throw new GrantError(`expired ${new Date(c.exp).toISOString()}`);
  return c;
}
