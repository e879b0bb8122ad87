import assert from "node:assert/strict";
import { memoryTable } from "../scripts/bench_mem.ts";
import { benchOptions, rotate, type ToolResult } from "../scripts/bench.ts";

const result = (rss: number[], errors: string[] = []): ToolResult => ({
  tool: "t",
  what: "",
  samples: rss.map((rssMB) => ({ mbps: 1, seconds: 1, rssMB })),
  errors,
});

Deno.test("bench:mem table: median and largest peak per size, ratio to the smallest size's median", () => {
  const lines = memoryTable([256 * 2 ** 20, 4 * 2 ** 30], {
    shoal: [result([100, 102, 101]), result([120, 119, 125])],
    "aria2c-http": [result([23, 23, 24]), { ...result([]), missing: "aria2c is not installed" }],
  });
  assert.equal(lines.length, 4);
  assert.match(lines[2]!, /^256\.0 MiB\s+101\.0, 102\.0\s+1\.00x\s+23\.0, 24\.0\s+1\.00x$/);
  assert.match(lines[3]!, /^4\.00 GiB\s+120\.0, 125\.0\s+1\.19x\s+MISSING\s+-$/);
});

Deno.test("bench: the tool that goes first rotates from run to run", () => {
  assert.deepEqual([0, 1, 2, 3].map((k) => rotate(["shoal", "http", "bt"], k)[0]), ["shoal", "http", "bt", "shoal"]);
  assert.deepEqual(rotate(["a", "b", "c"], 1), ["b", "c", "a"]);
  assert.deepEqual(rotate([], 2), []);
});

Deno.test("bench: --chunk-size reaches the options where the bench takes it, and is refused where it does not", () => {
  const o = { usage: "", defaultSize: "1m", slowMBps: 5, outDir: false };
  assert.equal(benchOptions(["--chunk-size", "16k"], { ...o, chunkSize: true }).chunkSize, 16 * 1024);
  assert.equal(benchOptions([], { ...o, chunkSize: true }).chunkSize, undefined);
  assert.throws(() => benchOptions(["--chunk-size", "16k"], o), /chunk-size/);
  assert.throws(() => benchOptions(["--chunk-size", "lots"], { ...o, chunkSize: true }), /chunk-size/);
});

Deno.test("bench:wan: --delay-ms is a whole number of milliseconds up to 1000", () => {
  const o = { usage: "", defaultSize: "1m", slowMBps: 5, outDir: false, delayMs: true };
  assert.equal(benchOptions(["--delay-ms", "100"], o).delayMs, 100);
  assert.equal(benchOptions([], o).delayMs, undefined);
  assert.throws(() => benchOptions(["--delay-ms", "-5"], o), /delay-ms/);
  assert.throws(() => benchOptions(["--delay-ms", "100"], { ...o, delayMs: false }), /delay-ms/);
});
