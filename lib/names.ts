/**
 * File names that come from the network are untrusted: a manifest's
 * suggested name must be a single plain path component before it may
 * touch the disk.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import { utf8Encoder } from "./bytes.ts";

/** Longest accepted file name, in UTF-8 bytes (the common filesystem limit). */
export const MAX_NAME_BYTES = 255;

/** Why `name` is not a safe file name, or null when it is. */
export function fileNameProblem(name: unknown): string | null {
  if (typeof name !== "string") return "is not a string";
  if (name.length === 0) return "is empty";
  if (utf8Encoder.encode(name).length > MAX_NAME_BYTES) return `is longer than ${MAX_NAME_BYTES} bytes`;
  if (name === "." || name === "..") return "is a relative directory";
  if (/[/\\]/.test(name)) return "contains a path separator";
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return "contains a control character";
  return null;
}

/**
 * `text` with control characters (C0, DEL, C1) and the bidirectional
 * overrides shown as escapes (`\n`, `\x1b`, `\u202e`), for printing what
 * may hold any: a local file name, or a host, reason or message a peer
 * sent. An escape sequence must not recolour or rewrite the terminal, a
 * newline must not forge a line, and an override must not make
 * `exe.txt` read as `txt.exe`.
 */
export function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    const code = c.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, "0")}`;
  });
}

/** Throws ProtocolError unless `name` is a safe single path component. */
export function assertSafeFileName(name: unknown): asserts name is string {
  const problem = fileNameProblem(name);
  if (problem) {
    throw new ProtocolError(`Unsafe file name ${JSON.stringify(String(name).slice(0, 80))}: ${problem}`, "bad_name");
  }
}
