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
 * `text` with control characters (C0, DEL, C1) shown as escapes (`\n`,
 * `\x1b`), for printing a local name, which may hold any: a file named with
 * an escape sequence must not recolour or rewrite the terminal.
 */
export function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

/** Throws ProtocolError unless `name` is a safe single path component. */
export function assertSafeFileName(name: unknown): asserts name is string {
  const problem = fileNameProblem(name);
  if (problem) {
    throw new ProtocolError(`Unsafe file name ${JSON.stringify(String(name).slice(0, 80))}: ${problem}`, "bad_name");
  }
}
