/**
 * The tracker's state as Prometheus metrics, in the text exposition format
 * (version 0.0.4) that the dashboard serves at `/metrics`: a `# HELP` and
 * a `# TYPE` line per metric family, then one `name{label="value"} number`
 * line per sample. Label values (file names, addresses) come from the
 * network and are escaped as the format requires.
 *
 * @module
 */

import type { TrackerSnapshot } from "./tracker.ts";

/** The content type of the text format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A label value with backslash, double quote and line feed escaped (`\\`, `\"`, `\n`). */
export function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

type Sample = [labels: Record<string, string>, value: number];

/** One metric family: its HELP and TYPE lines, then its samples. */
function family(name: string, type: "gauge" | "counter", help: string, samples: Sample[]): string {
  // HELP text escapes only backslash and line feed.
  const lines = [`# HELP ${name} ${help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of samples) {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
    lines.push(`${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${value}`);
  }
  return lines.join("\n");
}

/**
 * The metrics text for a snapshot. Per-peer and per-file series cover the
 * peers and files the snapshot lists (at most MAX_SNAPSHOT_ROWS each;
 * `shoal_snapshot_truncated` says when there were more); totals cover all.
 */
export function renderMetrics(s: TrackerSnapshot): string {
  const t = s.totals;
  const peer = (p: { address: string }) => ({ peer: p.address });
  const file = (f: { id: string; name: string }) => ({ file: f.name, id: f.id });
  const reporting = s.peers.filter((p) => p.uploadedBytes !== null || p.downloadedBytes !== null);
  return [
    family("shoal_peers", "gauge", "Live peers registered with the tracker.", [[{}, t.peers]]),
    family("shoal_files", "gauge", "Files with at least one live source.", [[{}, t.files]]),
    family("shoal_bytes_shared", "gauge", "Total size of the files with a live source, each file once.", [
      [{}, t.bytesShared],
    ]),
    family("shoal_sources", "gauge", "Live sources summed over all files, by kind.", [
      [{ kind: "complete" }, t.completeSources],
      [{ kind: "partial" }, t.partialSources],
    ]),
    family("shoal_upload_bytes_per_second", "gauge", "Chunk data sent per second by all live peers.", [
      [{}, t.upBytesPerSecond],
    ]),
    family("shoal_download_bytes_per_second", "gauge", "Chunk data received per second by all live peers.", [
      [{}, t.downBytesPerSecond],
    ]),
    family(
      "shoal_peer_upload_bytes_per_second",
      "gauge",
      "Chunk data a peer sent per second between its last two heartbeats.",
      s.peers.map((p) => [peer(p), p.upBytesPerSecond]),
    ),
    family(
      "shoal_peer_download_bytes_per_second",
      "gauge",
      "Chunk data a peer received per second between its last two heartbeats.",
      s.peers.map((p) => [peer(p), p.downBytesPerSecond]),
    ),
    family(
      "shoal_peer_uploaded_bytes_total",
      "counter",
      "Chunk data a peer has sent since it started, as it last reported.",
      reporting.map((p) => [peer(p), p.uploadedBytes ?? 0]),
    ),
    family(
      "shoal_peer_downloaded_bytes_total",
      "counter",
      "Chunk data a peer has received since it started, as it last reported.",
      reporting.map((p) => [peer(p), p.downloadedBytes ?? 0]),
    ),
    family(
      "shoal_peer_last_heard_seconds",
      "gauge",
      "Seconds since the tracker last heard from a peer.",
      s.peers.map((p) => [peer(p), p.lastHeardMsAgo / 1000]),
    ),
    family("shoal_file_size_bytes", "gauge", "Size of a file.", s.files.map((f) => [file(f), f.size])),
    family(
      "shoal_file_sources",
      "gauge",
      "Live sources of a file, by kind.",
      s.files.flatMap((f): Sample[] => [
        [{ ...file(f), kind: "complete" }, f.complete],
        [{ ...file(f), kind: "partial" }, f.partial],
      ]),
    ),
    family(
      "shoal_file_min_chunk_sources",
      "gauge",
      "The fewest live sources holding any one chunk of a file (0: some chunk is unavailable).",
      s.files.map((f) => [file(f), f.minChunkSources]),
    ),
    family("shoal_snapshot_truncated", "gauge", "1 when a list was cut at the row limit, so its series are partial.", [
      [{ list: "peers" }, Number(s.truncated.peers)],
      [{ list: "files" }, Number(s.truncated.files)],
    ]),
  ].join("\n") + "\n";
}
