/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// What every scripted stand-in for lib/fetch_worker.ts shares (tests/scripted_*_worker.ts): `init` and `close` are
// answered here; every other message from the coordinator goes to the script.
import type { FromWorker, ToWorker } from "../lib/worker_messages.ts";

/** The file being downloaded, as `init` described it, and a way to answer. */
export interface Stage {
  /** Chunks in the file. */
  count: number;
  /** Bytes of chunk `index`. */
  bytes(index: number): number;
  post(msg: FromWorker): void;
}

/** Plays `script` as this worker. */
export function playScript(script: (m: Exclude<ToWorker, { op: "init" | "close" }>, stage: Stage) => void): void {
  let size = 0, chunkSize = 1;
  const stage: Stage = {
    get count() {
      return Math.ceil(size / chunkSize);
    },
    bytes: (index) => Math.min(chunkSize, size - index * chunkSize),
    post: (msg) => self.postMessage(msg),
  };
  self.onmessage = (e: MessageEvent<ToWorker>) => {
    const m = e.data;
    if (m.op === "init") ({ size, chunkSize } = m);
    else if (m.op === "close") stage.post({ ev: "closed", buffers: { made: 0, dropped: 0 }, hashedInLanes: 0 });
    else script(m, stage);
  };
}
