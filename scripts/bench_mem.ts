/**
 * Memory benchmark: the client's peak RSS as the file grows, beside
 * aria2c's in the same run.
 *
 *   deno task bench:mem [--sizes 256m,1g,4g] [--runs 3] [--workers N] [--json FILE] [--keep]
 *
 * One tracker and 4 peers share a random file of each size; `client.ts get`
 * downloads each `--runs` times, and so does aria2c (`-x4 -s4 -k1M`) from 4
 * nginx servers holding the same files. Peak RSS comes from
 * `/usr/bin/time -v`; every download's SHA-256 is checked. The table gives
 * each size's median and largest peak and its ratio to the smallest size's
 * median: memory that does not grow with the file keeps the ratio near 1.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { formatBytes, parseSize } from "../lib/cli.ts";
import {
  aria2HttpArgv,
  emptyDir,
  ensureCommands,
  hasherLine,
  leaveWork,
  machineLines,
  MB,
  median,
  onInterrupt,
  parseAria2Speed,
  Procs,
  runBench,
  type Sample,
  shoalGetArgv,
  shoalOwnMbps,
  startNginx,
  startShoal,
  TIME_BIN,
  timedDownload,
  type ToolResult,
  writeRandomFile,
} from "./bench.ts";

const USAGE = "usage: deno task bench:mem [--sizes 256m,1g,4g] [--runs 3] [--workers N] [--json FILE] [--keep]";

interface Options {
  sizes: number[];
  runs: number;
  /** The client's fetch workers (`get --workers`); its default (one per core) when absent. */
  workers?: number;
  json?: string;
  keep: boolean;
}

function options(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      sizes: { type: "string", default: "256m,1g,4g" },
      runs: { type: "string", default: "3" },
      workers: { type: "string" },
      json: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const sizes = values.sizes!.split(",").map((s) => parseSize(s.trim(), "--sizes"));
  const runs = Number(values.runs);
  const workers = values.workers === undefined ? undefined : Number(values.workers);
  if (sizes.length === 0 || sizes.some((s) => !(s > 0)) || !Number.isInteger(runs) || runs < 1) {
    throw new Error(`--sizes must list sizes > 0 and --runs must be >= 1\n${USAGE}`);
  }
  if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1)) {
    throw new Error(`--workers must be a whole number >= 1\n${USAGE}`);
  }
  return {
    sizes: [...new Set(sizes)].sort((a, b) => a - b),
    runs,
    ...(workers ? { workers } : {}),
    keep: values.keep!,
    ...(values.json ? { json: values.json } : {}),
  };
}

/** Median and largest peak RSS of a tool's samples, in MB. */
function peaks(r: ToolResult): { median: number; max: number } | undefined {
  const rss = r.samples.filter((s: Sample) => s.rssMB !== undefined).map((s) => s.rssMB!);
  return rss.length > 0 ? { median: median(rss), max: Math.max(...rss) } : undefined;
}

/** One row per size: each tool's median and largest peak RSS and the median's ratio to the smallest size's. */
export function memoryTable(sizes: number[], byTool: Record<string, ToolResult[]>): string[] {
  const tools = Object.keys(byTool);
  const head = ["size", ...tools.flatMap((t) => [`${t} peak RSS MB (median, max)`, `${t} vs smallest`])];
  const rows: string[][] = [head];
  const base = Object.fromEntries(tools.map((t) => [t, peaks(byTool[t]![0]!)?.median]));
  sizes.forEach((size, i) => {
    const row = [formatBytes(size)];
    for (const t of tools) {
      const r = byTool[t]![i]!;
      const p = peaks(r);
      row.push(p ? `${p.median.toFixed(1)}, ${p.max.toFixed(1)}` : r.missing ? "MISSING" : "FAILED");
      const b = base[t];
      row.push(p && b ? `${(p.median / b).toFixed(2)}x` : "-");
    }
    rows.push(row);
  });
  const widths = head.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) =>
    row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  );
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  return lines;
}

let interrupted = false;

async function main(): Promise<number> {
  const o = options(Deno.args);
  const work = await Deno.makeTempDir({ prefix: "shoal-bench-mem-", dir: "/tmp" });
  await Deno.chmod(work, 0o755); // nginx workers run as nobody
  const logs = join(work, "logs");
  await Deno.mkdir(logs);
  const procs = new Procs(logs);
  let failed = true;
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    cleaning ??= (async () => {
      await procs.stopAll();
      await leaveWork(work, o.keep, failed);
    })();
  const unlisten = onInterrupt("interrupted: stopping every child", () => interrupted = true, cleanup);
  const say = (s: string) => console.log(s);
  const shoal = o.sizes.map((): ToolResult => ({
    tool: "shoal",
    what: `client.ts get, 4 peers${o.workers ? `, --workers ${o.workers}` : ""}`,
    samples: [],
    errors: [],
  }));
  const http = o.sizes.map((): ToolResult => ({ tool: "aria2c-http", what: "-x4 -s4 -k1M", samples: [], errors: [] }));
  try {
    say(machineLines()[0]!);
    say(await hasherLine());
    say(`sizes: ${o.sizes.map(formatBytes).join(", ")}, runs: ${o.runs}, work dir: ${work}`);
    say(`command: deno run -A scripts/bench_mem.ts ${Deno.args.join(" ")}`.trim());
    const missing = await ensureCommands(procs, { aria2c: "aria2", nginx: "nginx-light", [TIME_BIN]: "time" }, say);
    if (missing[TIME_BIN]) throw new Error(`cannot measure peak RSS: ${missing[TIME_BIN]}`);
    const httpMissing = missing.aria2c ?? missing.nginx;
    if (httpMissing) { for (const r of http) r.missing = httpMissing; }

    const files: { path: string; size: number; sha256: string }[] = [];
    for (const size of o.sizes) {
      const path = join(work, "data", `mem-${size}.bin`);
      await Deno.mkdir(dirname(path), { recursive: true });
      const sha256 = await writeRandomFile(path, size);
      await Deno.chmod(path, 0o644);
      files.push({ path, size, sha256 });
    }
    say(`generated ${files.length} files`);
    const swarm = await startShoal(procs, work, files);
    say(`shoal: tracker ${swarm.tracker}, 4 peers list ${files.length} files`);
    const urls = httpMissing ? [] : await startNginx(procs, work, files.map((f) => f.path));

    const outDir = join(work, "out");
    const rssFile = join(work, "rss.txt");
    for (let run = 1; run <= o.runs && !interrupted; run++) {
      for (const [i, f] of files.entries()) {
        const m = { timeoutMs: 60_000 + (f.size / (5 * MB)) * 1000, bytes: f.size, rssFile };
        const out = join(outDir, `mem-${f.size}.bin`);
        await emptyDir(outDir);
        const argv = shoalGetArgv(swarm.tracker, swarm.ids[i]!, out, o.workers);
        await timedDownload(procs, shoal[i]!, run, `shoal-${f.size}`, argv, m, out, f.sha256, shoalOwnMbps);
        if (httpMissing) continue;
        await emptyDir(outDir);
        const hargv = aria2HttpArgv(outDir, `mem-${f.size}.bin`, urls[i]!);
        await timedDownload(procs, http[i]!, run, `aria2c-${f.size}`, hargv, m, out, f.sha256, parseAria2Speed);
      }
    }

    say("");
    say(`peak RSS of the downloading process, MB = 10^6 bytes, ${o.runs} run(s) per size`);
    for (const line of memoryTable(o.sizes, { shoal, "aria2c-http": http })) say(line);
    const errors = [...shoal, ...http].flatMap((r) => r.errors.map((e) => `${r.tool}: ${e}`));
    for (const e of errors) say(`error: ${e}`);
    if (o.json) {
      const sizes = o.sizes.map((size, i) => ({ size, shoal: peaks(shoal[i]!), aria2cHttp: peaks(http[i]!) }));
      await Deno.writeTextFile(o.json, JSON.stringify({ runs: o.runs, sizes, errors }, null, 2) + "\n");
    }
    failed = interrupted || errors.length > 0;
    return failed ? 1 : 0;
  } finally {
    unlisten();
    await cleanup();
  }
}

if (import.meta.main) await runBench("bench:mem", main, () => interrupted);
