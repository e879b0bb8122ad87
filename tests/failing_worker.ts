/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that cannot open the .part: it says so at `init`, as the real one does, and
// otherwise only answers `close`. With `?throw` in its URL it fails as it loads instead, as a broken install would.
import type { FromWorker, ToWorker } from "../lib/worker_messages.ts";

if (new URL(import.meta.url).search === "?throw") throw new Error("injected failure while loading");

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const post = (m: FromWorker) => self.postMessage(m);
  if (e.data.op === "init") post({ ev: "fatal", message: `Cannot open ${e.data.partPath}: injected` });
  if (e.data.op === "close") {
    post({ ev: "closed", buffers: { made: 0, dropped: 0 }, hashedInLanes: 0 });
    self.close();
  }
};
