/**
 * Where our own modules live at run time, which depends on how Shoal was
 * built. Two things are started by path: the fetch worker (a Web Worker
 * module) and the background peer (`peer --daemon`, spawned by `login`).
 *
 * - source: `deno run -A client.ts`; this file is `lib/launch.ts`, the
 *   worker is `lib/fetch_worker.ts`, the peer `peer.ts` one level up.
 * - bundle: `deno task bundle` writes `client.js`, `peer.js`, `tracker.js`
 *   and `fetch_worker.js` side by side; this code is inlined into one of
 *   them, so `import.meta.url` names that bundle and the others are beside it.
 * - compiled: `deno task compile` builds `client`, `peer` and `tracker`
 *   binaries into one directory; the worker is embedded (`--include`) at its
 *   source path, and the peer is the `peer` binary beside the running one.
 *   (Untested on our machines: `deno compile` cannot fetch its runtime here.)
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** How the running code was built. */
export type BuildKind = "source" | "bundle" | "compiled";

/** The build kind of code whose module URL is `url`. */
export function buildKind(url: string = import.meta.url): BuildKind {
  // A compiled binary serves its modules from a virtual directory named after it.
  if (url.includes("/deno-compile-")) return "compiled";
  return url.endsWith(".js") ? "bundle" : "source";
}

/** The URL of the fetch worker module. */
export function fetchWorkerUrl(url: string = import.meta.url): string {
  return new URL(buildKind(url) === "bundle" ? "./fetch_worker.js" : "./fetch_worker.ts", url).href;
}

/** The command that starts our peer entry point with `args`. */
export function peerCommand(args: string[], url: string = import.meta.url): { command: string; args: string[] } {
  switch (buildKind(url)) {
    case "compiled":
      return { command: join(dirname(Deno.execPath()), "peer"), args };
    case "bundle":
      return { command: Deno.execPath(), args: ["run", "-A", fileURLToPath(new URL("./peer.js", url)), ...args] };
    case "source":
      return { command: Deno.execPath(), args: ["run", "-A", fileURLToPath(new URL("../peer.ts", url)), ...args] };
  }
}
