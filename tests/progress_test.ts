// Progress output, with a fake clock and writer: the bar on a terminal, lines on a pipe, nothing when quiet.
import assert from "node:assert/strict";
import { type BarFields, fitBar, type ProgressOutput, ProgressView } from "../lib/progress.ts";

const MiB = 1024 * 1024;

/** A fake output: what was written, and a clock the test moves. */
function fakeOutput(tty: boolean, columns = 120): ProgressOutput & { text: string[]; at: number } {
  const out = {
    tty,
    text: [] as string[],
    at: 1_000,
    columns: () => columns,
    write: (t: string) => void out.text.push(t),
    now: () => out.at,
  };
  return out;
}

/** Feeds `view` a steady download: `perTick` bytes every `tickMs` for `ticks` ticks, from `from` bytes. */
function feed(
  view: ProgressView,
  out: { at: number },
  o: { from: number; perTick: number; tickMs: number; ticks: number; total: number; peers: number },
): number {
  let done = o.from;
  for (let i = 0; i < o.ticks; i++) {
    out.at += o.tickMs;
    done += o.perTick;
    view.update(done, o.total, o.peers);
  }
  return done;
}

/** The ETA a bar or line shows, in seconds. */
function etaSeconds(text: string): number {
  const m = / ETA (?:(\d+):)?(\d+):(\d\d) /.exec(text);
  assert.ok(m, `no ETA in ${JSON.stringify(text)}`);
  return Number(m[1] ?? 0) * 3600 + Number(m[2]) * 60 + Number(m[3]);
}

Deno.test("on a terminal: one bar redrawn in place, with percent, bytes, rate, ETA and peers", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  feed(view, out, { from: 0, perTick: 4 * MiB, tickMs: 250, ticks: 8, total: 64 * MiB, peers: 3 });
  assert.equal(out.text.length, 8, "one redraw per update");
  const last = out.text.at(-1)!;
  assert.ok(last.startsWith("\r\x1b[2Kget ["), `redrawn in place: ${JSON.stringify(last)}`);
  assert.ok(!last.includes("\n"), "the bar stays on its line");
  // 32 of 64 MiB at 16 MiB/s: half the bar, 2 s left.
  assert.match(last, /\[#{12}-{12}\]/);
  assert.match(last, / 50\.0% {2} +32\.0 MiB\/64\.0 MiB {2} +16\.0 MiB\/s {2}ETA 0:02 {2} +3 peer\(s\)$/);
  view.done();
  assert.equal(out.text.at(-1), "\n", "done ends the bar's line");
  view.done();
  assert.equal(out.text.length, 9, "once");
  view.update(40 * MiB, 64 * MiB, 3);
  view.note("dropped peer 127.0.0.1:9: stalled");
  assert.equal(out.text.at(-1), "\r\x1b[2Kdropped peer 127.0.0.1:9: stalled\n", "a note clears the bar first");
  view.done();
  assert.equal(out.text.length, 11, "no bar on the line after a note: done has nothing to end");
});

Deno.test("on a pipe: a plain line every few seconds, not one per update", () => {
  const out = fakeOutput(false);
  const view = new ProgressView("get", false, out);
  // 40 updates, 250 ms apart: 10 s.
  feed(view, out, { from: 0, perTick: MiB, tickMs: 250, ticks: 40, total: 100 * MiB, peers: 2 });
  assert.equal(out.text.length, 3, `one line per 3 s: ${JSON.stringify(out.text)}`);
  for (const line of out.text) {
    assert.match(line, /^get: +\d+\.\d% {2}[\d.]+ MiB\/100\.0 MiB {2}[\d.]+ MiB\/s {2}ETA \d+:\d\d {2}2 peer\(s\)\n$/);
    assert.ok(!line.includes("\r") && !line.includes("\x1b"), "no terminal controls on a pipe");
  }
  assert.match(out.text[0]!, /^get: {2}12\.0%/, "the first line comes 3 s in");
  // A full recheck that found nothing intact says so.
  view.event({ kind: "resumed", reused: 0, total: 77, discarded: 0, reusedBytes: 0, rechecked: true });
  assert.equal(out.text.at(-1), "resuming: reused 0 of 77 chunks, none found intact\n");
  view.note("resuming: reused 4 of 100 chunks");
  assert.equal(out.text.at(-1), "resuming: reused 4 of 100 chunks\n");
  view.done();
  assert.equal(out.text.at(-1), "resuming: reused 4 of 100 chunks\n", "no bar line to end");
  // What a peer sent is printed with its controls escaped: one line, no terminal commands, no reordered text.
  view.event({
    kind: "peer-dropped",
    peer: "evil\x1b[2J:1",
    reason: "error from the peer: a\nfake line \u202etxt.exe",
  });
  assert.equal(out.text.at(-1), "dropped peer evil\\x1b[2J:1: error from the peer: a\\nfake line \\u202etxt.exe\n");
});

Deno.test("--quiet writes nothing at all", () => {
  for (const tty of [true, false]) {
    const out = fakeOutput(tty);
    const view = new ProgressView("get", true, out);
    feed(view, out, { from: 0, perTick: MiB, tickMs: 250, ticks: 40, total: 100 * MiB, peers: 2 });
    view.note("a note");
    view.done();
    assert.deepEqual(out.text, []);
  }
});

Deno.test("the ETA is smoothed: whole chunks landing now and then do not make it jump; a lasting change carries through", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  const total = 256 * MiB;
  // A slow link: one 1 MiB chunk lands every fourth update (1 MiB/s), so each update sees 4 MiB/s or nothing.
  let done = 0;
  const etas: number[] = [];
  for (let i = 1; i <= 240; i++) {
    out.at += 250;
    if (i % 4 === 0) done += MiB;
    view.update(done, total, 1);
    if (i > 80) etas.push(etaSeconds(out.text.at(-1)!)); // from 20 s on
  }
  const settled = etas;
  for (let i = 1; i < settled.length; i++) {
    const change = Math.abs(settled[i]! - settled[i - 1]!) / settled[i - 1]!;
    assert.ok(change <= 0.2, `the ETA jumped ${(100 * change).toFixed(0)}%: ${settled[i - 1]} -> ${settled[i]} s`);
  }
  const expected = (total - done) / MiB;
  assert.ok(Math.abs(settled.at(-1)! - expected) / expected < 0.2, `ETA ${settled.at(-1)} s, about ${expected} s left`);
  // The rate doubles for good: within 15 s the ETA says so.
  for (let i = 1; i <= 60; i++) {
    out.at += 250;
    if (i % 2 === 0) done += MiB;
    view.update(done, total, 1);
  }
  const after = etaSeconds(out.text.at(-1)!);
  const now = (total - done) / (2 * MiB);
  assert.ok(Math.abs(after - now) / now < 0.1, `ETA ${after} s after the rate doubled, about ${now} s left`);
});

Deno.test("on a steady link the ETA counts down: it never goes up by more than a second", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  // 3 MiB/s in 1 MiB chunks: each quarter-second update sees a whole chunk or nothing, 3 times in 4.
  let done = 0, owed = 0;
  const etas: number[] = [];
  for (let i = 1; i <= 400; i++) {
    out.at += 250;
    owed += 0.75;
    if (owed >= 1) (done += MiB), owed--;
    view.update(done, 300 * MiB, 2);
    if (i > 8) etas.push(etaSeconds(out.text.at(-1)!)); // from 2 s on
  }
  for (let i = 1; i < etas.length; i++) {
    assert.ok(etas[i]! <= etas[i - 1]! + 1, `the ETA went up: ${etas[i - 1]} -> ${etas[i]} s at update ${i + 9}`);
  }
  const left = (300 * MiB - done) / (3 * MiB);
  assert.ok(Math.abs(etas.at(-1)! - left) <= 2, `ETA ${etas.at(-1)} s, ${left} s left`);
});

Deno.test("no ETA in the first second of bytes; 'stalled' once bytes stop well past their usual gap", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  out.at += 250;
  view.update(0, 100 * MiB, 1);
  out.at += 250;
  view.update(MiB, 100 * MiB, 1);
  assert.match(out.text.at(-1)!, /ETA --:--/, "one update of bytes tells too little");
  feed(view, out, { from: MiB, perTick: MiB, tickMs: 250, ticks: 8, total: 100 * MiB, peers: 1 });
  assert.match(out.text.at(-1)!, /ETA 0:2\d/, "4 MiB/s, 90 MiB left");
  // Nothing more: the ETA counts down for a few seconds, then says so.
  const shown: string[] = [];
  for (let i = 0; i < 24; i++) {
    out.at += 250;
    view.update(10 * MiB, 100 * MiB, 1);
    shown.push(/(ETA [\d:-]+|stalled)/.exec(out.text.at(-1)!)![1]!);
  }
  assert.ok(!shown.slice(0, 18).includes("stalled"), `not before 5 s: ${shown}`);
  assert.deepEqual(shown.slice(20), ["stalled", "stalled", "stalled", "stalled"]);
  // Bytes again: a time again.
  feed(view, out, { from: 10 * MiB, perTick: MiB, tickMs: 250, ticks: 8, total: 100 * MiB, peers: 1 });
  assert.match(out.text.at(-1)!, /ETA \d+:\d\d/);

  // A slow link, a chunk every 4 s: each pause is its usual gap, not a stall.
  const slow = fakeOutput(true);
  const view2 = new ProgressView("get", false, slow);
  let done = 0;
  for (let i = 1; i <= 160; i++) {
    slow.at += 250;
    if (i % 16 === 0) done += MiB;
    view2.update(done, 100 * MiB, 1);
    if (i > 40) assert.doesNotMatch(slow.text.at(-1)!, /stalled/, `update ${i}`);
  }
});

Deno.test("after a resume, the rate and ETA count only what this run fetches", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  view.event({ kind: "resumed", reused: 900, total: 1000, discarded: 0, reusedBytes: 900 * MiB, rechecked: false });
  const done = feed(view, out, { from: 900 * MiB, perTick: MiB, tickMs: 250, ticks: 40, total: 1000 * MiB, peers: 2 });
  const last = out.text.at(-1)!;
  assert.match(last, / 4\.\d\d MiB\/s /, `about 4 MiB/s, not the reused 900 MiB counted as fetched: ${last}`);
  const eta = etaSeconds(last), want = (1000 * MiB - done) / (4 * MiB);
  assert.ok(Math.abs(eta - want) / want < 0.15, `ETA ${eta} s, about ${want} s left`);
});

Deno.test("an unknown rate shows no ETA, and an empty file is 100%", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  out.at += 250;
  view.update(0, 10 * MiB, 0);
  assert.match(out.text.at(-1)!, / {2}0\.0% .* ETA --:-- +0 peer\(s\)$/);
  out.at += 250;
  view.update(0, 0, 0);
  assert.match(out.text.at(-1)!, /100\.0% /);
});

Deno.test("download events other than progress become lines: a resume, a restart, a drop with its retry", () => {
  const out = fakeOutput(false);
  const view = new ProgressView("get", false, out);
  view.event({ kind: "resumed", reused: 4, total: 100, discarded: 1, reusedBytes: 4 * MiB, rechecked: false });
  view.event({ kind: "restart", reason: "ignoring out.part.json: checksum mismatch" });
  view.event({ kind: "recheck", reason: "no out.part.json; checking every chunk of out.part" });
  view.event({ kind: "resumed", reused: 7, total: 100, discarded: 93, reusedBytes: 7 * MiB, rechecked: true });
  view.event({ kind: "peer-dropped", peer: "127.0.0.1:9", reason: "stalled", retryInMs: 4_000 });
  view.event({ kind: "bad-chunk", peer: "127.0.0.1:8", index: 3 });
  view.event({ kind: "peer-dropped", peer: "127.0.0.1:8", reason: "sent chunk 3 with a wrong SHA-256" });
  // the same peer failing its retries the same way is said once; a new reason is said
  view.event({ kind: "peer-dropped", peer: "127.0.0.1:9", reason: "stalled", retryInMs: 8_000 });
  view.event({ kind: "peer-dropped", peer: "127.0.0.1:9", reason: "connection refused", retryInMs: 16_000 });
  assert.deepEqual(out.text, [
    "resuming: reused 4 of 100 chunks, 1 failed their check\n",
    "starting over: ignoring out.part.json: checksum mismatch\n",
    "no out.part.json; checking every chunk of out.part\n",
    "resuming: reused 7 of 100 chunks, found intact\n",
    "dropped peer 127.0.0.1:9: stalled (trying again in 4 s)\n",
    "dropped peer 127.0.0.1:8: sent chunk 3 with a wrong SHA-256\n",
    "dropped peer 127.0.0.1:9: connection refused (trying again in 16 s)\n",
  ]);
});

Deno.test("the bar fits the terminal: it narrows, then goes, then the least telling fields go, then the line is cut", () => {
  const f: BarFields = {
    pct: " 50.0%",
    done: "1.00 MiB",
    total: "2.00 MiB",
    rate: "1.00 MiB/s",
    eta: "ETA 0:01",
    peers: "1 peer(s)",
  };
  const full = fitBar("get", 50, f, 120);
  assert.equal(full, "get [############------------]  50.0%    1.00 MiB/2.00 MiB    1.00 MiB/s  ETA 0:01    1 peer(s)");
  for (const columns of [100, 80, 70, 60, 40, 30, 10, 1, 0]) {
    const line = fitBar("get", 50, f, columns);
    assert.ok(line.length <= Math.max(0, columns - 1), `${columns} columns: ${line.length} cells`);
  }
  assert.match(fitBar("get", 50, f, 88), /^get \[#{4,12}-{4,12}\] {2}50\.0%/, "a narrower bar");
  assert.equal(fitBar("get", 50, f, 70), "get  50.0%  1.00 MiB/2.00 MiB  1.00 MiB/s  ETA 0:01  1 peer(s)", "no bar");
  assert.equal(fitBar("get", 50, f, 60), " 50.0%  1.00 MiB/2.00 MiB  1.00 MiB/s  ETA 0:01  1 peer(s)", "no label");
  assert.equal(fitBar("get", 50, f, 40), " 50.0%  1.00 MiB/s  ETA 0:01  1 peer(s)", "no bytes");
  assert.equal(fitBar("get", 50, f, 30), " 50.0%  1.00 MiB/s  ETA 0:01", "no peer count");
  assert.equal(fitBar("get", 50, f, 20), " 50.0%  ETA 0:01", "percent and ETA last");
  assert.equal(fitBar("get", 50, f, 10), " 50.0%  E");
  assert.match(fitBar("get", 99.9, f, 120), /\[#{23}-\]/, "the bar is full only at 100%");

  const out = fakeOutput(true, 60);
  const view = new ProgressView("get", false, out);
  feed(view, out, { from: 0, perTick: 4 * MiB, tickMs: 250, ticks: 8, total: 64 * MiB, peers: 3 });
  for (const t of out.text) assert.ok(t.replace("\r\x1b[2K", "").length <= 59, `wraps on 60 columns: ${t}`);
});

Deno.test("the bar keeps its width as the numbers grow", () => {
  const out = fakeOutput(true, 100);
  const view = new ProgressView("get", false, out);
  // From 5 MiB to 985 MiB of 1000 MiB, at rates from KiB/s to 160 MiB/s, with 9 then 12 peers.
  let done = 5 * MiB;
  for (const [perTick, ticks, peers] of [[1024, 4, 9], [MiB, 20, 9], [40 * MiB, 24, 12]] as const) {
    done = feed(view, out, { from: done, perTick, tickMs: 250, ticks, total: 1000 * MiB, peers });
  }
  const widths = new Set(out.text.map((t) => /\[[#-]*\]/.exec(t)?.[0].length));
  assert.equal(widths.size, 1, `bar widths: ${[...widths]}`);
});

Deno.test("the start-up, before the first chunk lands, does not hold the rate down for the seconds after", () => {
  const out = fakeOutput(true);
  const view = new ProgressView("get", false, out);
  out.at += 250;
  view.update(0, 1024 * MiB, 0); // connecting: nothing yet
  feed(view, out, { from: 0, perTick: 25 * MiB, tickMs: 250, ticks: 12, total: 1024 * MiB, peers: 4 });
  // 3 s at 100 MiB/s after a quarter second of nothing. Seeded with that quarter second, the average showed 52 MiB/s.
  const rate = /(\d+\.\d) MiB\/s/.exec(out.text.at(-1)!);
  assert.ok(rate && Number(rate[1]) > 90 && Number(rate[1]) <= 100, `rate ${rate?.[1]} MiB/s`);
});
