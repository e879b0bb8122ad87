import assert from "node:assert/strict";
import { MAX_PIPELINE, MIN_PIPELINE, pipelineDepth, RateMeter } from "../lib/rate_meter.ts";

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
