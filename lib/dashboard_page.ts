/**
 * The tracker dashboard's web page: one self-contained HTML document (inline
 * CSS and JS, no external assets) that shows a {@link TrackerSnapshot} and
 * keeps it live from `/api/events` (server-sent events), falling back to
 * polling `/api/state` when the event stream cannot be used.
 *
 * One renderer serves both sides: {@link renderDashboard} builds the page
 * body on the server for the first paint, and the same functions are sent
 * to the browser as source text (`Function.prototype.toString`) to redraw
 * it from each new snapshot. So the escaping the tests check on the server
 * is the escaping the browser runs, and the markup cannot drift apart. The
 * functions sent this way ({@link CLIENT_FUNCTIONS}) must use nothing but
 * each other and browser globals.
 *
 * File names and addresses come from the network: every such string goes
 * through {@link escapeHtml} (names through {@link showName}), and the
 * page's Content-Security-Policy (set by lib/dashboard.ts) runs only
 * scripts carrying the response's nonce.
 *
 * Elements the browser test reads carry `data-testid`, and numbers carry
 * their raw value in `data-value` next to the human-readable text.
 *
 * @module
 */

import { formatBytes } from "./cli.ts";
import { printable } from "./names.ts";
import type { TrackerSnapshot } from "./tracker.ts";

/** How often the page polls `/api/state` when server-sent events are unavailable. */
export const POLL_INTERVAL_MS = 2_000;

/** Text made safe for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/**
 * A file name as text: markup escaped, and controls and bidirectional
 * overrides shown as escapes, as the command line shows them (an override
 * would make `photo\u202egpj.exe` read as `photoexe.jpg`).
 */
function showName(name: string): string {
  return escapeHtml(printable(name));
}

/** `<td data-testid=… data-value=…>text</td>`: a number shown for people, its raw value kept for machines. */
function numberCell(testid: string, value: number, text: string): string {
  return `<td class="num" data-testid="${testid}" data-value="${value}">${escapeHtml(text)}</td>`;
}

/** `1.5 MiB/s`. */
function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** One figure of the totals bar. */
function totalFigure(label: string, testid: string, value: number, text: string): string {
  return `<div class="figure"><span class="label">${escapeHtml(label)}</span>` +
    `<span class="value" data-testid="${testid}" data-value="${value}">${escapeHtml(text)}</span></div>`;
}

/** The live part of the page (everything under `<main>`) for one snapshot. */
export function renderDashboard(s: TrackerSnapshot): string {
  const t = s.totals;
  const totals = [
    totalFigure("Peers", "total-peers", t.peers, String(t.peers)),
    totalFigure("Files", "total-files", t.files, String(t.files)),
    totalFigure("Shared", "total-bytes-shared", t.bytesShared, formatBytes(t.bytesShared)),
    totalFigure("Complete sources", "total-complete-sources", t.completeSources, String(t.completeSources)),
    totalFigure("Partial sources", "total-partial-sources", t.partialSources, String(t.partialSources)),
    totalFigure("Upload", "total-up-rate", t.upBytesPerSecond, formatRate(t.upBytesPerSecond)),
    totalFigure("Download", "total-down-rate", t.downBytesPerSecond, formatRate(t.downBytesPerSecond)),
  ].join("");
  const peerRows = s.peers.map((p) =>
    `<tr data-testid="peer-row" data-peer-id="${escapeHtml(p.id)}">` +
    `<td data-testid="peer-address">${escapeHtml(p.address)}</td>` +
    numberCell("peer-complete", p.complete, String(p.complete)) +
    numberCell("peer-partial", p.partial, String(p.partial)) +
    numberCell("peer-last-heard", p.lastHeardMsAgo, `${(p.lastHeardMsAgo / 1000).toFixed(1)} s ago`) +
    numberCell("peer-up-rate", p.upBytesPerSecond, formatRate(p.upBytesPerSecond)) +
    numberCell("peer-down-rate", p.downBytesPerSecond, formatRate(p.downBytesPerSecond)) +
    `</tr>`
  ).join("") || `<tr><td colspan="6" class="empty">No live peers</td></tr>`;
  const fileRows = s.files.map((f) =>
    `<tr data-testid="file-row" data-file-id="${escapeHtml(f.id)}">` +
    `<td class="file-name" title="${escapeHtml(f.id)}"><span data-testid="file-name">${showName(f.name)}</span>` +
    (f.otherNames.length > 0
      ? `<span class="note" data-testid="file-other-names">also ${f.otherNames.map(showName).join(", ")}</span>`
      : "") +
    `</td>` +
    numberCell("file-size", f.size, formatBytes(f.size)) +
    numberCell("file-chunks", f.chunks, String(f.chunks)) +
    numberCell("file-complete", f.complete, String(f.complete)) +
    numberCell("file-partial", f.partial, String(f.partial)) +
    numberCell("file-min-sources", f.minChunkSources, String(f.minChunkSources)) +
    `<td data-testid="file-strip" data-binning="${f.strip.binning}" data-counts="${f.strip.counts.join(",")}">` +
    `<canvas class="strip" width="512" height="14" role="img" aria-label="sources per chunk${
      f.strip.binning === "chunk" ? "" : " (fewest per bin)"
    }"></canvas>` +
    (f.partialUnmapped > 0 ? `<span class="note">${f.partialUnmapped} partial not mapped yet</span>` : "") +
    `</td></tr>`
  ).join("") || `<tr><td colspan="7" class="empty">No files with a live source</td></tr>`;
  const more = (what: string, shown: number) =>
    `<p class="note" data-testid="${what}-truncated">Showing the first ${shown} ${what}; the totals count all.</p>`;
  return `<section class="totals">${totals}</section>` +
    `<p class="note">Snapshot at <span data-testid="updated-at" data-value="${s.at}">${
      new Date(s.at).toISOString().slice(11, 19)
    } UTC</span>; peers heartbeat every ${s.heartbeatMs / 1000} s and drop out after ${s.expiryMs / 1000} s.</p>` +
    `<h2>Peers</h2><table data-testid="peers-table"><thead><tr><th>Address</th><th>Complete</th><th>Partial</th>` +
    `<th>Last heard</th><th>Up</th><th>Down</th></tr></thead><tbody>${peerRows}</tbody></table>` +
    (s.truncated.peers ? more("peers", s.peers.length) : "") +
    `<h2>Files</h2><table data-testid="files-table"><thead><tr><th>Name</th><th>Size</th><th>Chunks</th>` +
    `<th>Complete</th><th>Partial</th><th>Min sources</th><th>Sources per chunk</th></tr></thead>` +
    `<tbody>${fileRows}</tbody></table>` +
    (s.truncated.files ? more("files", s.files.length) : "") +
    `<p class="legend"><span class="swatch none"></span> no source <span class="swatch one"></span> one source ` +
    `<span class="swatch many"></span> more (darker: more)</p>`;
}

/**
 * The little of the DOM the browser-side functions use, declared here
 * because the project type-checks without the DOM library (and should:
 * server code must not see browser globals). Module-scoped, emits nothing.
 */
interface DomElement {
  dataset: Record<string, string | undefined>;
  textContent: string | null;
  innerHTML: string;
  querySelector(selector: "canvas"): DomCanvas | null;
  querySelectorAll(selector: string): Iterable<DomElement>;
}
interface DomCanvas {
  width: number;
  height: number;
  getContext(kind: "2d"): { fillStyle: string; clearRect: FillRect; fillRect: FillRect } | null;
}
type FillRect = (x: number, y: number, w: number, h: number) => void;
declare const document: { getElementById(id: string): DomElement | null; querySelector(s: string): DomElement | null };

/** Paints every chunk strip on the page from its `data-counts`: red where no source has a chunk, amber for one. */
function drawStrips(root: DomElement): void {
  for (const td of root.querySelectorAll('[data-testid="file-strip"]')) {
    const canvas = td.querySelector("canvas");
    const ctx = canvas?.getContext("2d");
    if (!canvas || !ctx) continue;
    const counts = (td.dataset.counts ?? "").split(",").filter((c) => c !== "").map(Number);
    const max = Math.max(2, ...counts);
    const w = canvas.width / Math.max(1, counts.length);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    counts.forEach((c, i) => {
      const depth = Math.round(70 - 40 * (c - 2) / Math.max(1, max - 2)); // lightness 70% (2 sources) to 30% (most)
      ctx.fillStyle = c === 0 ? "#d64541" : c === 1 ? "#f0a030" : `hsl(140, 55%, ${depth}%)`;
      ctx.fillRect(Math.floor(i * w), 0, Math.ceil(w), canvas.height);
    });
  }
}

/**
 * The browser side: redraws from each server-sent snapshot; when the event
 * stream is closed for good (refused, or no EventSource), polls instead.
 */
function startLiveUpdates(pollMs: number): void {
  const main = document.getElementById("dashboard")!;
  const status = document.querySelector('[data-testid="live-status"]')!;
  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const show = (s: TrackerSnapshot) => {
    main.innerHTML = renderDashboard(s);
    drawStrips(main);
  };
  let polling = false;
  const poll = () => {
    fetch("/api/state", { cache: "no-store" })
      .then((r) => r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`)))
      .then((s) => {
        show(s);
        setStatus("polling", "live (polling)");
      })
      .catch(() => setStatus("offline", "tracker unreachable, retrying"))
      .finally(() => setTimeout(poll, pollMs));
  };
  const startPolling = () => {
    if (polling) return;
    polling = true;
    poll();
  };
  drawStrips(main);
  if (typeof EventSource !== "function") return startPolling();
  const events = new EventSource("/api/events");
  events.addEventListener("state", (e) => {
    show(JSON.parse((e as MessageEvent<string>).data));
    setStatus("live", "live");
  });
  events.addEventListener("error", () => {
    // EventSource reconnects by itself after a dropped stream; CLOSED means it gave up (e.g. HTTP 503).
    if (events.readyState === EventSource.CLOSED) startPolling();
    else setStatus("reconnecting", "reconnecting…");
  });
}

/** Everything sent to the browser as source text; each may call only the others and browser globals. */
const CLIENT_FUNCTIONS = [
  escapeHtml,
  printable,
  showName,
  formatBytes,
  formatRate,
  numberCell,
  totalFigure,
  renderDashboard,
  drawStrips,
];

/** The page's script: the shared renderer, then the live updates started. */
function clientScript(): string {
  const source = `${CLIENT_FUNCTIONS.map(String).join("\n")}\n(${startLiveUpdates})(${POLL_INTERVAL_MS});`;
  // No "</script" may appear inside the element; in JS source "<\/" means the same as "</".
  return source.replaceAll("</", "<\\/");
}

const STYLE = `
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem; }
header { display: flex; align-items: baseline; gap: 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
[data-testid="live-status"] { font-size: .85rem; padding: .1rem .5rem; border-radius: 1rem; background: #8884; }
[data-testid="live-status"][data-state="live"], [data-testid="live-status"][data-state="polling"] {
  background: #2e9e5a; color: white;
}
[data-testid="live-status"][data-state="offline"] { background: #d64541; color: white; }
.totals { display: flex; flex-wrap: wrap; gap: .75rem; }
.figure { display: flex; flex-direction: column; padding: .5rem .8rem; border: 1px solid #8886; border-radius: .4rem; }
.figure .label { font-size: .75rem; opacity: .75; }
.figure .value { font-size: 1.3rem; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #8884; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.empty, .note, .legend { opacity: .75; font-size: .85rem; }
td.file-name { overflow-wrap: anywhere; }
td.file-name .note { display: block; }
canvas.strip { width: 256px; height: 14px; display: block; border: 1px solid #8886; }
.swatch { display: inline-block; width: .8rem; height: .8rem; vertical-align: middle; margin-left: .6rem; }
.swatch.none { background: #d64541; } .swatch.one { background: #f0a030; } .swatch.many { background: hsl(140, 55%, 45%); }
`;

/**
 * The whole page for a first paint of `s`. `nonce` must be the one in the
 * response's Content-Security-Policy (fresh per response, base64).
 */
export function dashboardPage(s: TrackerSnapshot, nonce: string): string {
  const n = escapeHtml(nonce);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shoal tracker</title>
<link rel="icon" href="data:,">
<style nonce="${n}">${STYLE}</style>
</head>
<body>
<header><h1>Shoal tracker</h1><span data-testid="live-status" data-state="connecting">connecting…</span></header>
<main id="dashboard">${renderDashboard(s)}</main>
<script nonce="${n}">
"use strict";
${clientScript()}
</script>
</body>
</html>
`;
}
