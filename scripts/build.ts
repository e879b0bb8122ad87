/**
 * Standalone builds of the three entry points.
 *
 *   deno task bundle [--out dist]        single-file .js bundles (deno bundle), run with `deno run -A`
 *   deno task compile [--out dist/bin]   binaries (deno compile)
 *
 * A bundle directory holds `tracker.js`, `peer.js`, `client.js` and
 * `fetch_worker.js` (the download workers' module, loaded from beside
 * `client.js`; see lib/launch.ts). Bundles need no network to run.
 *
 * `deno compile` downloads Deno's runtime (`denort`) from Deno's own
 * download host. Where that host is unreachable, as on our machines, every
 * binary is reported as NOT BUILT with the reason, and the task fails:
 * nothing is ever reported as built that was not.
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const ENTRIES = ["tracker", "peer", "client"] as const;
/** A build step that runs longer than this is stopped. */
const STEP_TIMEOUT_MS = 180_000;

/** The outcome of one build step. */
export interface Built {
  name: string;
  path: string;
  ok: boolean;
  /** Why it was not built (the tool's last error line). */
  reason?: string;
}

/** Runs one `deno` build step that writes `path`. */
async function deno(name: string, path: string, args: string[]): Promise<Built> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  }).output();
  const lines = new TextDecoder().decode(out.stderr).trim().split("\n").map((l) => l.trim());
  // deno's error chain: "Caused by: 0: ... 1: error sending request for url (...)": the URL line says the most
  const reason = lines.find((l) => /request for url/.test(l))?.replace(/^\d+: /, "") ??
    lines.find((l) => /^error/i.test(l)) ?? `exit ${out.code}`;
  return { name, path, ok: out.success, ...(out.success ? {} : { reason }) };
}

/** Bundles the entry points and the fetch worker into `outDir`. */
export async function bundle(outDir: string): Promise<Built[]> {
  await Deno.mkdir(outDir, { recursive: true });
  const jobs = [...ENTRIES.map((e) => [e, `${e}.ts`]), ["fetch_worker", "lib/fetch_worker.ts"]] as const;
  const built: Built[] = [];
  for (const [name, src] of jobs) {
    const path = join(outDir, `${name}.js`);
    built.push(await deno(name, path, ["bundle", "--quiet", "--platform", "deno", "--output", path, src]));
  }
  return built;
}

/** Compiles the entry points into binaries in `outDir` (the fetch worker is embedded). */
export async function compile(outDir: string): Promise<Built[]> {
  await Deno.mkdir(outDir, { recursive: true });
  const built: Built[] = [];
  for (const name of ENTRIES) {
    const path = join(outDir, name);
    const args = ["compile", "--quiet", "-A", "--include", "lib/fetch_worker.ts", "--output", path, `${name}.ts`];
    built.push(await deno(name, path, args));
  }
  return built;
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { out: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  const mode = positionals[0];
  if (values.help || (mode !== "bundle" && mode !== "compile") || positionals.length !== 1) {
    console.log("usage: deno task bundle [--out dist]   |   deno task compile [--out dist/bin]");
    return values.help ? 0 : 2;
  }
  const out = resolve(values.out ?? (mode === "bundle" ? join(ROOT, "dist") : join(ROOT, "dist", "bin")));
  const built = mode === "bundle" ? await bundle(out) : await compile(out);
  for (const b of built) console.log(b.ok ? `built ${b.path}` : `NOT BUILT ${b.name}: ${b.reason}`);
  if (built.every((b) => b.ok)) {
    if (mode === "bundle") console.log(`run them with: deno run -A ${join(out, "client.js")} --help`);
    return 0;
  }
  if (mode === "compile") {
    console.log(
      "deno compile fetches its runtime from dl.deno.land; where that host is unreachable, use deno task bundle",
    );
  }
  return 1;
}

if (import.meta.main) Deno.exit(await main());
