/**
 * Reading a password: from the terminal without echo, or the first line of
 * standard input when it is not a terminal (scripts: `echo pw | ...`).
 *
 * @module
 */

import { ShoalError, UsageError } from "./errors.ts";
import { MAX_PASSWORD } from "./passwords.ts";

const enc = new TextEncoder();

/** Reads a password, prompting on the terminal. */
export async function readPassword(prompt: string): Promise<string> {
  if (!Deno.stdin.isTerminal()) return await firstLine();
  await Deno.stderr.write(enc.encode(prompt));
  Deno.stdin.setRaw(true);
  const bytes: number[] = [];
  const buf = new Uint8Array(64);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      let done = false;
      for (const b of buf.subarray(0, n)) {
        if (b === 3) throw new ShoalError("interrupted", "Interrupted", 130); // Ctrl-C
        if (b === 13 || b === 10) {
          done = true;
          break;
        }
        if (b === 127 || b === 8) bytes.pop();
        else if (bytes.length < MAX_PASSWORD * 4) bytes.push(b);
      }
      if (done) break;
    }
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stderr.write(enc.encode("\n"));
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

async function firstLine(): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    size += n;
    if (buf.subarray(0, n).includes(10) || size > MAX_PASSWORD * 4) break;
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) all.set(c, (at += c.length) - c.length);
  const line = new TextDecoder().decode(all).split(/\r?\n/)[0] ?? "";
  if (line === "") throw new UsageError("No password given (pass it as an argument, type it, or pipe it on stdin)");
  return line;
}
