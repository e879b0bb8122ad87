/**
 * Small helpers shared by the in-process tests (the end-to-end tests have
 * their own in e2e/harness.ts).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import type { HasherKind } from "../lib/chunk_hasher.ts";
import type { Address } from "../lib/connection.ts";
import { indexDirectory, type SharedFile } from "../lib/indexer.ts";

/** A fresh temporary directory, removed with `await using`. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "shoal-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** `n` random bytes. */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

/** A small seeded PRNG (mulberry32) giving numbers in [0, 1): the same sequence on every run, so a failure replays. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** `data` written as `<dir>/src/f` and indexed in chunks of `chunkSize` (16 KiB unless said): what a test peer shares. */
export async function indexedFile(dir: string, data: Uint8Array, chunkSize = 16 * 1024): Promise<SharedFile> {
  await Deno.mkdir(join(dir, "src"));
  await Deno.writeFile(join(dir, "src", "f"), data);
  return (await indexDirectory(join(dir, "src"), { chunkSize }))[0]!;
}

/** SHA-256 of `b`, in hex. */
export const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/**
 * Every way chunks can be hashed (lib/chunk_hasher.ts), for tests that run once with each. `native` needs the library
 * that `deno task native` builds; `deno task test` builds it first.
 */
export const HASHERS: readonly HasherKind[] = ["native", "lanes", "node"];

/** Polls `fn` every 20 ms until it returns true; throws after `ms`, naming `what` when given. */
export async function waitUntil(fn: () => boolean | Promise<boolean>, ms = 5_000, what?: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms${what ? `: ${what}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Loads the worker module at `url` once, and lets it go once it has answered a "close": `deno test` type-checks a
 * worker's modules when the first worker loads them (over 2 s in a fresh clone), which a test that times a worker's
 * answers (a stall limit of half a second) must not count.
 */
export async function warmWorker(url: string): Promise<void> {
  const w = new Worker(url, { type: "module" });
  let answered = false, failed: string | null = null;
  w.onmessage = () => answered = true;
  w.onerror = (e) => {
    e.preventDefault();
    failed = e.message;
  };
  try {
    w.postMessage({ op: "close" });
    await waitUntil(
      () => {
        if (failed !== null) throw new Error(`worker ${url} failed: ${failed}`);
        return answered;
      },
      60_000,
      `worker ${url} to answer`,
    );
  } finally {
    w.terminate();
  }
}

/**
 * An address whose TCP handshake never completes: a listener that accepts nothing, its queue filled (Deno listens
 * with a backlog of 511), so the kernel drops the SYNs that come next.
 */
export async function unansweredAddress(): Promise<{ address: Address } & AsyncDisposable> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const address = { host: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port };
  const queued: Deno.Conn[] = [];
  const close = () => {
    for (const c of queued) c.close();
    listener.close();
  };
  try {
    for (let i = 0; i < 600; i++) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const pending = Deno.connect({ hostname: address.host, port: address.port });
      const conn = await Promise.race([pending, new Promise<null>((r) => timer = setTimeout(() => r(null), 200))]);
      clearTimeout(timer);
      if (conn === null) {
        // The SYN was dropped: the queue is full. Once the listener is closed, this probe's next SYN (a second after
        // its first) is refused.
        const settled = pending.then((c) => c.close(), () => {});
        return { address, [Symbol.asyncDispose]: () => (close(), settled) };
      }
      queued.push(conn);
    }
  } catch (err) {
    close();
    throw err;
  }
  close();
  throw new Error("the listener's queue never filled");
}
