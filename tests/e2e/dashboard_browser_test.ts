/**
 * End-to-end, issue 5: the tracker's dashboard in a real browser. A real
 * tracker process (`--http 0`), two peers and a client downloading slowly
 * (a partial source); Debian's Chromium, driven by playwright-core, loads
 * the page, and the numbers it shows must match `/api/state`. Then a third
 * peer starts and the page must show it without a reload; a second page,
 * whose event stream the test refuses, must fall back to polling and agree
 * too. A screenshot is saved (path printed).
 *
 * Needs `/usr/bin/chromium` (`apt-get install -y chromium`; `scripts/test.sh`
 * installs it): without it this test fails, it does not skip.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import type { TrackerSnapshot } from "../../lib/tracker.ts";
import { E2E, MiB, waitUntil, writeRandomFile } from "./harness.ts";

/** Debian's Chromium. */
const CHROMIUM = "/usr/bin/chromium";
/** Flags for a headless Chromium as root in a container, without network chatter of its own. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Bound on starting Chromium. */
const LAUNCH_TIMEOUT_MS = 60_000;
/** Bound on any one browser action (navigation, waiting for an element). */
const ACTION_TIMEOUT_MS = 20_000;
/** Bound on the page and the API agreeing, or on a change reaching them. */
const AGREE_TIMEOUT_MS = 20_000;
/** A file name made to break a page that does not escape: markup, quotes, ampersand (no `/`: it is a file on disk). */
const HOSTILE_NAME = `<img src=x onerror=alert(1)> "q" & 'a'.txt`;

/** Fails (not skips) with the fix when Chromium is missing. */
async function requireChromium(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    throw new Error(
      `Chromium is not installed (${CHROMIUM} is missing): install it with \`apt-get install -y chromium\` ` +
        "(./scripts/test.sh does this) to run the dashboard's browser test",
    );
  }
}

/** What the page shows, read in one go (so from one render). */
interface PageView {
  status: string | null;
  noReload: boolean;
  totals: Record<"peers" | "files" | "bytesShared" | "completeSources" | "partialSources" | "upRate", number>;
  addresses: string[];
  files: {
    id: string | null;
    name: string | null;
    size: number;
    chunks: number;
    complete: number;
    partial: number;
    strip: number[];
  }[];
  injected: number;
}

/** The DOM as {@link readPage} uses it (the project type-checks without the DOM library). */
interface PageElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
}
declare const document: PageElement;

/** Runs in the page (sent as source text by playwright): may use only its own body and browser globals. */
function readPage(): PageView {
  const value = (root: PageElement, id: string) =>
    Number(root.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-value"));
  return {
    status: document.querySelector('[data-testid="live-status"]')?.getAttribute("data-state") ?? null,
    noReload: (globalThis as { shoalNoReload?: boolean }).shoalNoReload === true,
    totals: {
      peers: value(document, "total-peers"),
      files: value(document, "total-files"),
      bytesShared: value(document, "total-bytes-shared"),
      completeSources: value(document, "total-complete-sources"),
      partialSources: value(document, "total-partial-sources"),
      upRate: value(document, "total-up-rate"),
    },
    addresses: [...document.querySelectorAll('[data-testid="peer-address"]')].map((e) => e.textContent ?? ""),
    files: [...document.querySelectorAll('[data-testid="file-row"]')].map((r) => ({
      id: r.getAttribute("data-file-id"),
      name: r.querySelector('[data-testid="file-name"]')?.textContent ?? null,
      size: value(r, "file-size"),
      chunks: value(r, "file-chunks"),
      complete: value(r, "file-complete"),
      partial: value(r, "file-partial"),
      strip: (r.querySelector('[data-testid="file-strip"]')?.getAttribute("data-counts") ?? "").split(",")
        .filter((c) => c !== "").map(Number),
    })),
    // Elements a name would have created had it been inserted as markup.
    injected: [...document.querySelectorAll('[data-testid="file-name"] *')].length,
  };
}

/** The numbers that must agree (rates and ages move every heartbeat; chunk strips as the client downloads). */
function comparable(t: Pick<PageView, "totals" | "addresses" | "files">) {
  return {
    totals: { ...t.totals, upRate: undefined },
    addresses: [...t.addresses].sort(),
    files: t.files.map(({ strip: _strip, ...f }) => f),
  };
}

/** The page's view in the same shape, from the API's snapshot. */
function fromApi(s: TrackerSnapshot): Pick<PageView, "totals" | "addresses" | "files"> {
  return {
    totals: {
      peers: s.totals.peers,
      files: s.totals.files,
      bytesShared: s.totals.bytesShared,
      completeSources: s.totals.completeSources,
      partialSources: s.totals.partialSources,
      upRate: s.totals.upBytesPerSecond,
    },
    addresses: s.peers.map((p) => p.address),
    files: s.files.map((f) => ({
      id: f.id,
      name: f.name,
      size: f.size,
      chunks: f.chunks,
      complete: f.complete,
      partial: f.partial,
      strip: f.strip.counts,
    })),
  };
}

Deno.test("e2e dashboard: Chromium shows what /api/state says, live, names escaped", async () => {
  await requireChromium();
  await using env = new E2E();
  const tracker = await env.tracker(200, 2000, ["--db", ":memory:", "--http", "0"]);
  const url = (await tracker.proc.waitForLine(/^dashboard on (http:\/\/\S+\/)$/))[1]!;
  const api = async (): Promise<TrackerSnapshot> => {
    const res = await fetch(new URL("/api/state", url));
    if (!res.ok) throw new Error(`/api/state answered ${res.status}`);
    return await res.json();
  };

  // Two peers share alpha.bin; one also shares a file whose name is markup. Their uploads are slow, so the
  // client below stays a partial source of alpha.bin for the whole test (8 MiB at 2 × 64 KiB/s: about a minute).
  const dirA = await env.tempDir("shoal-e2e-a-"), dirB = await env.tempDir("shoal-e2e-b-");
  const dirC = await env.tempDir("shoal-e2e-c-"), out = await env.tempDir("shoal-e2e-out-");
  await writeRandomFile(join(dirA, "alpha.bin"), 8 * MiB);
  await Deno.copyFile(join(dirA, "alpha.bin"), join(dirB, "alpha.bin"));
  await Deno.writeTextFile(join(dirA, HOSTILE_NAME), "hello from a file with a hostile name\n");
  await writeRandomFile(join(dirC, "gamma.bin"), MiB);
  const slow = { tracker: tracker.addr, chunkSize: "64k", uploadLimit: "64k" };
  await Promise.all([env.peer({ shared: dirA, ...slow }), env.peer({ shared: dirB, ...slow })]);
  await env.spawn("client.ts", [
    "--tracker",
    tracker.addr,
    "get",
    "alpha.bin",
    "-o",
    join(out, "alpha.bin"),
    "--quiet",
  ]);
  await waitUntil(
    async () => {
      const s = await api();
      const alpha = s.files.find((f) => f.name === "alpha.bin");
      return s.totals.peers === 3 && alpha?.complete === 2 && alpha.partial === 1 && alpha.partialUnmapped === 0;
    },
    AGREE_TIMEOUT_MS,
    "3 peers, alpha.bin with 2 complete sources and the client as a mapped partial source",
  );

  const profile = await env.tempDir("shoal-e2e-chromium-");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    timeout: LAUNCH_TIMEOUT_MS,
  });
  try {
    context.setDefaultTimeout(ACTION_TIMEOUT_MS);
    const problems: string[] = [];
    const watch = (p: Page) => {
      p.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
      p.on("dialog", (d) => {
        problems.push(`dialog: ${d.message()}`); // an alert() from a name would land here
        d.dismiss().catch(() => {});
      });
      return p;
    };
    const page = watch(context.pages()[0] ?? await context.newPage());
    await page.goto(url);
    await page.locator('[data-testid="live-status"][data-state="live"]').waitFor();
    await page.evaluate(() => {
      (globalThis as { shoalNoReload?: boolean }).shoalNoReload = true; // gone if the page reloads
    });

    /** Waits until `shown` shows what the API says (read right after), and `check` holds for both. */
    const agree = (what: string, check: (view: PageView, s: TrackerSnapshot) => boolean, shown = page) =>
      waitUntil(
        async () => {
          const view = await shown.evaluate(readPage);
          const s = await api();
          assert.deepEqual(comparable(view), comparable(fromApi(s)), `${what}: the page agrees with /api/state`);
          return check(view, s) ? { view, s } : null;
        },
        AGREE_TIMEOUT_MS,
        what,
      );

    const first = await agree("the first view", (v) => v.totals.peers === 3);
    const alpha = first.view.files.find((f) => f.name === "alpha.bin")!;
    assert.deepEqual([alpha.size, alpha.chunks, alpha.complete, alpha.partial], [8 * MiB, 128, 2, 1]);
    assert.equal(alpha.strip.length, 128, "one strip entry per chunk");
    assert.ok(
      alpha.strip.every((c) => c >= 2 && c <= 3),
      `2 complete sources, plus the client's chunks: ${alpha.strip}`,
    );
    const hostile = first.view.files.find((f) => f.name === HOSTILE_NAME);
    assert.ok(hostile, "the hostile name is shown as its literal text");
    assert.equal(first.view.injected, 0, "no element was created from a file name");

    // Transfers are under way: the upload rate shows on the page as the API computes it.
    await agree("a non-zero upload rate", (v, s) => v.totals.upRate > 0 && s.totals.upBytesPerSecond > 0);

    // A change: a third peer starts. The page must show it without being reloaded.
    await env.peer({ shared: dirC, tracker: tracker.addr, chunkSize: "64k" });
    const later = await agree(
      "the new peer and its file",
      (v) => v.totals.peers === 4 && v.files.some((f) => f.name === "gamma.bin"),
    );
    assert.equal(later.view.status, "live");
    assert.ok(later.view.noReload, "the page updated in place (no reload)");

    // The fallback: with the event stream refused, a page polls /api/state instead, and agrees with it too.
    const polling = watch(await context.newPage());
    await polling.route("**/api/events", (route) => route.fulfill({ status: 503, body: "refused by the test\n" }));
    await polling.goto(url);
    await polling.locator('[data-testid="live-status"][data-state="polling"]').waitFor();
    await agree("the polling page", (v) => v.totals.peers === 4, polling);
    await polling.close();
    assert.deepEqual(problems, []);

    const shot = Deno.env.get("SHOAL_DASHBOARD_SCREENSHOT") ?? join(await env.tempDir("shoal-e2e-shot-"), "dash.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await Deno.stat(shot)).size > 0);
    console.log(`dashboard screenshot: ${shot}`);
  } finally {
    await context.close();
  }
});
