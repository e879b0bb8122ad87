/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// Part of tests/unopenable_worker.ts: points `init`'s .part at a name beside it that does not exist. Every listener
// of a message event is handed the same data, so the real worker, listening after this one, reads the changed path.
import type { ToWorker } from "../lib/worker_messages.ts";

self.addEventListener("message", (e: MessageEvent<ToWorker>) => {
  if (e.data.op === "init") e.data.partPath = `${e.data.partPath}.missing`;
});
