/**
 * WAN benchmark in the shared netlab (root only): 4 seeders, each uplink
 * shaped to 100 Mbit/s with 20 ms of delay, a client node and an unshaped
 * tracker node.
 *
 *   deno task bench:wan [--size 256m] [--runs 3] [--workers N] [--chunk-size 1m] [--delay-ms 20] [--timeout S]
 *                       [--json FILE] [--keep]
 *
 * - shoal: the tracker in node `tracker`, one peer in each of s1..s4
 *   (listening on 0.0.0.0, advertising its lab address), the client in
 *   node `client`.
 * - aria2c-http: one nginx in each of s1..s4, aria2c `-x4 -s4 -k1M` in
 *   node `client` with the 4 URIs.
 *
 * Prints MB/s for both (median over runs, SHA-256 checked), the ceiling
 * (about 47 MB/s of payload, per netlab's README) and each tool's share of
 * it. The lab is always taken down (`netlab.sh down`), on failure and on
 * SIGINT/SIGTERM too; a lab that was already up is left alone and the
 * bench refuses to run.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { formatBytes } from "../lib/cli.ts";
import {
  aptInstall,
  aria2HttpArgv,
  benchOptions,
  emptyDir,
  endReport,
  ensureCommands,
  hasherLine,
  leaveWork,
  linkInto,
  machineLines,
  MB,
  medianMbps,
  NETLAB_DIR,
  onInterrupt,
  type Options,
  parseAria2Speed,
  Procs,
  ROOT,
  runBench,
  shoalGetArgv,
  shoalOwnMbps,
  shoalResult,
  sleep,
  table,
  TIME_BIN,
  timedDownload,
  type ToolResult,
  writeRandomFile,
} from "./bench.ts";

const SEEDS = 4;
/** The lab this bench needs; `netlab.sh` reads these on `up`. */
const LAB_ENV = { LAB_SEEDERS: String(SEEDS), LAB_EXTRA: "tracker", LAB_RATE: "100mbit", LAB_DELAY_MS: "20" };
/** What the ceiling below was measured with. */
const CEILING_DELAY_MS = 20;
/** Payload ceiling of 4 x 100 Mbit/s after TCP/IP overhead, as netlab's README measured it. */
const CEILING_MBPS = 47;
/** Raw link ceiling: 4 x 100 Mbit/s. */
const RAW_MBPS = (SEEDS * 100e6) / 8 / MB;
/** nginx's port inside each seeder node (the namespaces are private: a fixed port is safe). */
const HTTP_PORT = 8080;
const NETLAB = join(NETLAB_DIR, "netlab.sh");
const NGINX = join(NETLAB_DIR, "nginx_serve.sh");

function options(args: string[]): Options {
  return benchOptions(args, {
    usage:
      "usage: deno task bench:wan [--size 256m] [--runs 3] [--workers N] [--timeout SECONDS] [--json FILE] [--keep]\n" +
      "                           [--chunk-size SIZE]  the Shoal peers' chunk size (default 1m)\n" +
      "                           [--delay-ms MS]      the seeders' one-way delay (default 20)",
    defaultSize: "256m",
    slowMBps: CEILING_MBPS / 4, // a quarter of the ceiling
    outDir: false,
    chunkSize: true,
    delayMs: true,
  });
}

/** Whether a Debian package is installed. */
async function dpkgInstalled(procs: Procs, pkg: string): Promise<boolean> {
  const r = await procs.run(`dpkg-query-${pkg}`, ["dpkg-query", "-W", "-f=${Status}", pkg], 30_000);
  return r.code === 0 && r.stdout.includes("install ok installed");
}

async function labIsUp(procs: Procs): Promise<boolean> {
  const r = await procs.run("ip-netns-list", ["ip", "netns", "list"], 10_000);
  return /^lab-/m.test(r.stdout);
}

async function main(): Promise<number> {
  const o = options(Deno.args);
  if (Deno.uid() !== 0) throw new Error("bench:wan needs root (network namespaces, tc, iptables)");
  const work = await Deno.makeTempDir({ prefix: "shoal-bench-wan-", dir: "/tmp" });
  // nginx workers run as nobody: the tree must be readable by others
  await Deno.chmod(work, 0o755);
  const logs = join(work, "logs");
  await Deno.mkdir(logs);
  const lab = { ...LAB_ENV, ...(o.delayMs === undefined ? {} : { LAB_DELAY_MS: String(o.delayMs) }) };
  const procs = new Procs(logs, lab);
  const nginxEnv = { NGINX_STATE: join(work, "nginx") };
  let labUp = false;
  let cleaning: Promise<void> | undefined;
  let failed = true; // until main reaches its end without a failure
  // one clean-up, shared by the signal handler and main's finally (both await it to the end)
  const cleanup = () =>
    cleaning ??= (async () => {
      // every child, and each nginx master (adopted by PID: what nginx_serve.sh stop does)
      await procs.stopAll();
      if (labUp) {
        const r = await procs.run("netlab-down", [NETLAB, "down"], 60_000, { whileStopping: true }).catch((e) => ({
          code: -1,
          stdout: String(e),
        }));
        if (r.code !== 0) console.error(`netlab down failed (exit ${r.code}): run ${NETLAB} down`);
        else labUp = false;
      }
      await leaveWork(work, o.keep, failed);
    })();
  const unlisten = onInterrupt(
    "interrupted: stopping every child and taking the lab down",
    () => interrupted = true,
    cleanup,
  );

  const say = (s: string) => console.log(s);
  const results: ToolResult[] = [
    shoalResult(o.chunkSize),
    { tool: "aria2c-http", what: `-x4 -s4 -k1M, ${SEEDS} nginx`, samples: [], errors: [] },
  ];
  const [shoal, http] = results as [ToolResult, ToolResult];
  try {
    const cmdline = `deno run -A scripts/bench_wan.ts ${Deno.args.join(" ")}`.trim();
    say(machineLines()[0]!);
    say(await hasherLine());
    say(`lab: ${SEEDS} seeders x ${lab.LAB_RATE}, ${lab.LAB_DELAY_MS} ms one way, extra node tracker`);
    say(`file: ${formatBytes(o.size)} (${o.size} bytes), runs: ${o.runs}, work dir: ${work}`);
    say(`command: ${cmdline}`);

    // netlab's own needs first: without them there is no lab and no bench
    const devPkgs = ["libnetfilter-queue-dev", "libmnl-dev"];
    const absent: string[] = [];
    for (const p of devPkgs) if (!(await dpkgInstalled(procs, p))) absent.push(p);
    if (absent.length > 0) {
      say(`installing ${absent.join(" ")}`);
      const err = await aptInstall(procs, absent);
      if (err) throw new Error(`apt-get install ${absent.join(" ")} failed: ${err}`);
    }
    const missing = await ensureCommands(procs, {
      gcc: "gcc",
      iptables: "iptables",
      aria2c: "aria2",
      nginx: "nginx-light",
      curl: "curl",
      [TIME_BIN]: "time",
    }, say);
    for (const need of ["gcc", "iptables"]) if (missing[need]) throw new Error(`netlab needs ${missing[need]}`);
    if (missing[TIME_BIN]) say(`warning: ${missing[TIME_BIN]}; peak RSS will not be measured`);
    http.missing = missing.aria2c ?? missing.nginx ?? missing.curl;

    const src = join(work, "data", `bench-${o.size}.bin`);
    await Deno.mkdir(dirname(src), { recursive: true });
    await Deno.chmod(dirname(src), 0o755);
    const want = await writeRandomFile(src, o.size);
    await Deno.chmod(src, 0o644);
    say(`generated ${src}, sha256 ${want}`);

    if (await labIsUp(procs)) {
      throw new Error(`a netlab is already up (ip netns list shows lab-*); not touching it: run ${NETLAB} down first`);
    }
    labUp = true; // from here on, `down` runs whatever happens
    await procs.check("netlab-up", [NETLAB, "up"], 120_000);
    const ip = async (node: string) => (await procs.check(`netlab-ip-${node}`, [NETLAB, "ip", node], 10_000)).trim();
    const inNode = (node: string) => (argv: string[]) => [NETLAB, "run", node, ...argv];
    const deno = Deno.execPath();
    say(
      `lab up: client ${await ip("client")}, tracker ${await ip("tracker")}, ` +
        `seeders ${(await Promise.all([...Array(SEEDS).keys()].map((i) => ip(`s${i + 1}`)))).join(" ")}`,
    );

    // --- shoal: tracker, 4 peers, wait until the tracker lists all of them
    let trackerAddr = "";
    let fileId = "";
    try {
      const tracker = procs.spawn(
        "shoal-tracker",
        inNode("tracker")([
          deno,
          "run",
          "-A",
          join(ROOT, "tracker.ts"),
          "--host",
          "0.0.0.0",
          "--port",
          "0",
          "--db",
          ":memory:",
        ]),
      );
      const [, , port] = await procs.waitFor(tracker, /tracker listening on (\S+):(\d+)/, 30_000);
      trackerAddr = `${await ip("tracker")}:${port}`;
      const peers = [];
      for (let i = 1; i <= SEEDS; i++) {
        const dir = join(work, `shoal-peer${i}`);
        await linkInto(src, join(dir, "shared"));
        peers.push(procs.spawn(
          `shoal-peer${i}`,
          inNode(`s${i}`)([
            deno,
            "run",
            "-A",
            join(ROOT, "peer.ts"),
            "--shared",
            join(dir, "shared"),
            "--tracker",
            trackerAddr,
            "--host",
            "0.0.0.0",
            "--advertise",
            await ip(`s${i}`),
            "--port",
            "0",
            "--cache-dir",
            join(dir, "cache"),
            "--quiet",
            ...(o.chunkSize === undefined ? [] : ["--chunk-size", String(o.chunkSize)]),
          ]),
        ));
      }
      const hashMs = 60_000 + (SEEDS * o.size / (50 * MB)) * 1000;
      for (const p of peers) await procs.waitFor(p, /peer listening on (\S+):(\d+)/, hashMs);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const out = await procs.check(
          "shoal-files",
          inNode("client")([deno, "run", "-A", join(ROOT, "client.ts"), "--tracker", trackerAddr, "files", "--json"]),
          30_000,
        );
        const files = JSON.parse(out) as { id: string; name: string; size: number; peers: number }[];
        const f = files.find((x) => x.name === basename(src) && x.size === o.size);
        if (f && f.peers >= SEEDS) {
          fileId = f.id;
          break;
        }
        if (Date.now() > deadline) throw new Error(`the tracker lists ${f ? f.peers : 0} of ${SEEDS} peers after 30 s`);
        await sleep(250);
      }
      say(`shoal: tracker ${trackerAddr}, ${SEEDS} peers list file ${fileId.slice(0, 16)}…`);
    } catch (err) {
      shoal.missing = `setup failed: ${(err as Error).message}`;
      say(`shoal: ${shoal.missing}`);
    }

    // --- aria2c-http: one nginx per seeder node
    const urls: string[] = [];
    if (!http.missing) {
      try {
        for (let i = 1; i <= SEEDS; i++) {
          const root = join(work, `http${i}`);
          await linkInto(src, root);
          const name = `wan${i}`;
          try {
            await procs.check(
              `nginx${i}-start`,
              inNode(`s${i}`)([NGINX, "start", name, root, `0.0.0.0:${HTTP_PORT}`]),
              30_000,
              { env: nginxEnv },
            );
          } finally {
            const pid = Number(await Deno.readTextFile(join(work, "nginx", name, "master.pid")).catch(() => ""));
            if (pid > 0) procs.adopt(pid, `nginx${i}`);
          }
          urls.push(`http://${await ip(`s${i}`)}:${HTTP_PORT}/${basename(src)}`);
        }
        for (const u of urls) {
          const code = await procs.run("curl-head", inNode("client")(["curl", "-sfI", "--max-time", "10", u]), 15_000);
          if (code.code !== 0) throw new Error(`nginx does not serve ${u} to the client node (curl exit ${code.code})`);
        }
        say(`aria2c-http: nginx on ${urls.map((u) => new URL(u).host).join(", ")}`);
      } catch (err) {
        http.missing = `setup failed: ${(err as Error).message}`;
        say(`aria2c-http: ${http.missing}`);
      }
    }

    const outDir = join(work, "out");
    const m = { timeoutMs: o.timeoutMs, bytes: o.size, rssFile: join(work, "rss.txt"), wrap: inNode("client") };
    for (let run = 1; run <= o.runs && !interrupted; run++) {
      if (!shoal.missing) {
        await emptyDir(outDir);
        const out = join(outDir, basename(src));
        const argv = shoalGetArgv(trackerAddr, fileId, out, o.workers);
        await timedDownload(procs, shoal, run, "shoal-client", argv, m, out, want, shoalOwnMbps);
      }
      if (!http.missing) {
        await emptyDir(outDir);
        const argv = aria2HttpArgv(outDir, basename(src), urls);
        await timedDownload(
          procs,
          http,
          run,
          "aria2c-http",
          argv,
          m,
          join(outDir, basename(src)),
          want,
          parseAria2Speed,
        );
      }
    }

    say("");
    say(
      `results: ${formatBytes(o.size)} file, ${o.runs} run(s), netlab ${SEEDS} x ${lab.LAB_RATE} ` +
        `${lab.LAB_DELAY_MS} ms, nproc ${navigator.hardwareConcurrency}, MB = 10^6 bytes`,
    );
    for (const line of table(results)) say(line);
    for (const r of results) for (const e of r.errors) say(`${r.tool} error: ${e}`);
    say(
      `ceiling: ~${CEILING_MBPS} MB/s of payload (raw ${RAW_MBPS.toFixed(0)} MB/s = ${SEEDS} x 100 Mbit/s; ` +
        `measured with ${CEILING_DELAY_MS} ms of delay)`,
    );
    for (const r of results) {
      const med = medianMbps(r);
      if (med !== undefined) {
        say(`${r.tool}: ${med.toFixed(1)} MB/s = ${(100 * med / CEILING_MBPS).toFixed(0)}% of the ceiling`);
      }
    }
    const sm = medianMbps(shoal);
    const hm = medianMbps(http);
    if (sm !== undefined && hm !== undefined) say(`shoal / aria2c-http: ${(sm / hm).toFixed(2)}x`);
    failed = await endReport(say, cmdline, results, o.json, {
      size: o.size,
      runs: o.runs,
      lab,
      ceilingMBps: CEILING_MBPS,
    });
    return failed ? 1 : 0;
  } finally {
    unlisten();
    await cleanup();
  }
}

/** Set by SIGINT/SIGTERM: the exit code is then 130 whoever exits first. */
let interrupted = false;

if (import.meta.main) await runBench("bench:wan", main, () => interrupted);
