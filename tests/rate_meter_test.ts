import assert from "node:assert/strict";
import { MAX_PIPELINE, maxPipeline, MIN_PIPELINE, nextDepth, pipelineDepth, RateMeter } from "../lib/rate_meter.ts";

Deno.test("rate meter: first sample is the rate, later samples are smoothed", () => {
  const m = new RateMeter(0, 0.5);
  assert.equal(m.measured, false);
  m.add(1_000_000);
  assert.equal(m.sample(1000), 1_000_000); // 1 MB in 1 s
  assert.equal(m.measured, true);
  m.add(3_000_000);
  assert.equal(m.sample(2000), 2_000_000); // halfway between 1 and 3 MB/s
  assert.equal(m.sample(3000), 1_000_000); // a silent second halves it
  assert.equal(m.sample(3000), 1_000_000, "a zero-length interval changes nothing");
});

Deno.test("pipeline depth follows the measured rate within bounds", () => {
  const MiB = 1024 * 1024;
  assert.equal(pipelineDepth(null, MiB, 4), 4, "unmeasured: the initial depth");
  assert.equal(pipelineDepth(0, MiB, 4), MIN_PIPELINE, "a peer that sent nothing keeps a short queue");
  assert.equal(pipelineDepth(500_000, MiB, 4), MIN_PIPELINE, "0.5 MB/s: under a chunk per window");
  // 100 Mbit/s with 1 MiB chunks: 0.5 s of it is 6 chunks, plus the one in flight
  assert.equal(pipelineDepth(12_500_000, MiB, 4), 7);
  assert.equal(pipelineDepth(2e9, MiB, 4), MAX_PIPELINE, "loopback speeds are capped");
  assert.ok(
    pipelineDepth(12_500_000, 64 * 1024, 4) > pipelineDepth(12_500_000, MiB, 4),
    "smaller chunks, more of them",
  );
});

Deno.test("pipeline depth: small chunks may have more requests outstanding, up to the same bytes", () => {
  const KiB = 1024;
  for (const size of [256 * KiB, 1024 * KiB, 4096 * KiB]) assert.equal(maxPipeline(size), MAX_PIPELINE);
  assert.equal(maxPipeline(64 * KiB), 64);
  assert.equal(maxPipeline(16 * KiB), 256);
  // 100 Mbit/s in 16 KiB chunks: 0.5 s of it is 382 chunks; 16 of them (256 KiB) was one bandwidth-delay
  // product at 20 ms, so a peer on such a link could not go faster than its queue.
  assert.equal(pipelineDepth(12_500_000, 16 * KiB, 4), 256);
  assert.equal(pipelineDepth(2e9, 16 * KiB, 4), 256, "capped by bytes: 4 MiB");
});

Deno.test("queue depth: a burst at the start neither fills the queue nor outlasts the next sample", () => {
  const KiB = 1024;
  const chunk = 64 * KiB;
  // A peer limited to 256 KiB/s (4 chunks a second) whose token bucket holds one second's worth: the first
  // 250 ms carry that second plus their own share, five times the real rate.
  const m = new RateMeter(0);
  let depth = nextDepth(4, m, chunk, 4);
  assert.equal(depth, 4, "unmeasured: the initial depth");
  m.add(320 * KiB);
  m.sample(250);
  assert.equal(pipelineDepth(m.rate, chunk, 4), 11, "what the burst alone would ask for");
  depth = nextDepth(depth, m, chunk, 4);
  assert.equal(depth, 8, "slow start: at most twice the depth before");
  const depths = [];
  for (let t = 500; t <= 2000; t += 250) {
    m.add(64 * KiB); // the real rate from now on
    m.sample(t);
    depths.push(depth = nextDepth(depth, m, chunk, 4));
  }
  assert.deepEqual(depths, [4, 3, 3, 3, 3, 3, 3], "halved at the next sample, then the real rate's depth");
});

Deno.test("queue depth: a fast peer reaches the cap in a few samples and stays there", () => {
  const MiB = 1024 * 1024;
  const m = new RateMeter(0);
  let depth = 4;
  const depths = [];
  for (let t = 250; t <= 1250; t += 250) {
    m.add(50 * MiB); // 200 MB/s
    m.sample(t);
    depths.push(depth = nextDepth(depth, m, MiB, 4));
  }
  assert.deepEqual(depths, [8, 16, 16, 16, 16]);
  m.sample(1500); // one silent interval (a stall)
  depth = nextDepth(depth, m, MiB, 4);
  assert.equal(depth, 8, "one silent interval (a pause on our side) only halves the queue");
  m.add(50 * MiB);
  m.sample(1750);
  assert.equal(nextDepth(depth, m, MiB, 4), 16, "and it is back at the next busy one");
});
