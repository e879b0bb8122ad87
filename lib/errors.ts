/**
 * Named errors. Each says who caused it, so callers can tell a misbehaving
 * peer (ProtocolError and kin) from a local failure (disk, usage) and the
 * CLI can map each to one line and an exit code.
 *
 * @module
 */

/** Exit codes the command line tools use; documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  unreachable: 4,
  protocol: 5,
  incomplete: 6,
  exists: 7,
  disk: 8,
  busy: 9,
  unknownUser: 10,
  badPassword: 11,
  duplicate: 12,
  unknownGroup: 13,
  notMember: 14,
  notOwner: 15,
  sessionExpired: 16,
  notLoggedIn: 17,
  rateLimited: 18,
  accessDenied: 19,
  interrupted: 130,
} as const;

/** Exit code for each error code an ERROR frame may carry (others exit 1). */
const EXIT_BY_CODE: Record<string, number> = {
  not_found: ExitCode.notFound,
  unknown_user: ExitCode.unknownUser,
  bad_password: ExitCode.badPassword,
  duplicate: ExitCode.duplicate,
  unknown_group: ExitCode.unknownGroup,
  not_member: ExitCode.notMember,
  not_owner: ExitCode.notOwner,
  session_expired: ExitCode.sessionExpired,
  not_logged_in: ExitCode.notLoggedIn,
  rate_limited: ExitCode.rateLimited,
  grant_refused: ExitCode.accessDenied,
  access_denied: ExitCode.accessDenied,
  // A name several files have: ask again by id, as `get` does for the catalog.
  ambiguous: ExitCode.usage,
  // The owner leaving their group, or removing themselves: a request that cannot be, as a bad argument.
  is_owner: ExitCode.usage,
  // Local results a peer forwards over its control channel (a request-file whose output exists, ...).
  usage: ExitCode.usage,
  exists: ExitCode.exists,
  disk: ExitCode.disk,
  busy: ExitCode.busy,
};

/** The exit code for an error code (see {@link ExitCode}). */
export function exitCodeFor(code: string): number {
  return EXIT_BY_CODE[code] ?? ExitCode.failure;
}

/** Base class: a failure with a stable machine-readable code. */
export class ShoalError extends Error {
  override name = "ShoalError";
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode: number = ExitCode.failure, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** The remote side broke the wire protocol: drop its connection. */
export class ProtocolError extends ShoalError {
  override name = "ProtocolError";
  constructor(message: string, code = "protocol", options?: ErrorOptions) {
    super(code, message, ExitCode.protocol, options);
  }
}

/** A frame header announced more bytes than the configured limit. */
export class FrameTooLargeError extends ProtocolError {
  override name = "FrameTooLargeError";
  constructor(readonly length: number, readonly max: number) {
    super(`Cannot decode frame: length ${length} exceeds maximum ${max}`, "frame_too_large");
  }
}

/**
 * A large frame that would take an address, or the whole server, past its
 * budget for large frames being received at once: refused with its header.
 */
export class BusyError extends ProtocolError {
  override name = "BusyError";
  constructor(readonly length: number, readonly scope: "address" | "server") {
    super(
      `Cannot take a frame of ${length} bytes now: the ${
        scope === "address" ? "large frames from your address" : "server's large frames"
      } being received are at their limit; retry later`,
      "busy",
    );
  }
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends ProtocolError {
  override name = "TruncatedFrameError";
  constructor(readonly missing: number) {
    super(`The connection closed in the middle of a message (${missing} bytes of it never came)`, "truncated");
  }
}

/** The two sides speak different protocol versions. */
export class VersionMismatchError extends ProtocolError {
  override name = "VersionMismatchError";
  constructor(readonly ours: number, readonly theirs: number) {
    super(
      `Protocol version mismatch: we speak ${ours}, the other side speaks ${theirs}`,
      "version_mismatch",
    );
  }
}

/** The remote side answered with an ERROR frame. */
export class RemoteError extends ShoalError {
  override name = "RemoteError";
  constructor(code: string, message: string) {
    super(code, message, exitCodeFor(code));
  }
}

/** An account, group or access rule refused a request; `code` says which (see {@link exitCodeFor}). */
export class AccountError extends ShoalError {
  override name = "AccountError";
  constructor(code: string, message: string) {
    super(code, message, exitCodeFor(code));
  }
}

/** A wait ran past its deadline. */
export class TimeoutError extends ShoalError {
  override name = "TimeoutError";
  constructor(what: string, ms: number) {
    super("timeout", `Timed out after ${Math.round(ms)} ms ${what}`, ExitCode.unreachable);
  }
}

/** The other side closed the connection. */
export class ConnectionClosedError extends ShoalError {
  override name = "ConnectionClosedError";
  constructor(message = "Connection closed by the other side") {
    super("closed", message, ExitCode.unreachable);
  }
}

/** A chunk's bytes do not hash to the manifest's value. */
export class ChunkHashMismatchError extends ShoalError {
  override name = "ChunkHashMismatchError";
  constructor(readonly index: number, readonly peer?: string) {
    super("hash_mismatch", `Chunk ${index} failed its SHA-256 check${peer ? ` (from ${peer})` : ""}`);
  }
}

/** Bad command line input from the user. */
export class UsageError extends ShoalError {
  override name = "UsageError";
  constructor(message: string) {
    super("usage", message, ExitCode.usage);
  }
}

/** A named thing (file id, name, peer) does not exist. */
export class NotFoundError extends ShoalError {
  override name = "NotFoundError";
  constructor(message: string) {
    super("not_found", message, ExitCode.notFound);
  }
}

/** A host could not be reached. */
export class UnreachableError extends ShoalError {
  override name = "UnreachableError";
  constructor(message: string, options?: ErrorOptions) {
    super("unreachable", message, ExitCode.unreachable, options);
  }
}

/** A download could not get every chunk from the live peers. */
export class IncompleteDownloadError extends ShoalError {
  override name = "IncompleteDownloadError";
  constructor(message: string, readonly missing: number[]) {
    super("incomplete", message, ExitCode.incomplete);
  }
}

/** The output file exists, holds something else than the file asked for, and --force was not given. */
export class OutputExistsError extends ShoalError {
  override name = "OutputExistsError";
  constructor(path: string) {
    super("exists", `${path} already exists and is not this file (use --force to overwrite)`, ExitCode.exists);
  }
}

/** Another download, in this process or another, is writing the same `.part` file (it holds the file's lock). */
export class DownloadBusyError extends ShoalError {
  override name = "DownloadBusyError";
  constructor(partPath: string) {
    super(
      "busy",
      `Another download is writing ${partPath} (the same output); let it finish, or stop it and run this again to resume`,
      ExitCode.busy,
    );
  }
}

/** A local disk operation failed (full disk, no permission, ...). */
export class DiskError extends ShoalError {
  override name = "DiskError";
  constructor(message: string, options?: ErrorOptions) {
    super("disk", message, ExitCode.disk, options);
  }
}

/** Turns any thrown value into one line for a user. */
export function describeError(err: unknown): string {
  if (err instanceof ShoalError) return err.message;
  if (isDiskFull(err)) return `Disk full: ${(err as Error).message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Exit code for any thrown value. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof ShoalError) return err.exitCode;
  if (isDiskFull(err)) return ExitCode.disk;
  if (err instanceof Deno.errors.ConnectionRefused) return ExitCode.unreachable;
  return ExitCode.failure;
}

/** True for the error a write gets when the filesystem is full. */
export function isDiskFull(err: unknown): boolean {
  return err instanceof Error && /ENOSPC|No space left/i.test(err.message);
}
