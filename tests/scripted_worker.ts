/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that plays one script, to show the coordinator ignores a dropped link's late
// messages: link 0 is ready and then never answers (so it is dropped as stalled); when the peer is tried again on
// link 1, link 0's late DONE and GONE arrive first, then link 1 serves every chunk.
import type { FromWorker, ToWorker } from "../lib/worker_messages.ts";

let size = 0, chunkSize = 1;

function post(msg: FromWorker): void {
  self.postMessage(msg);
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  const count = Math.ceil(size / chunkSize);
  const all = new Uint8Array(Math.ceil(count / 8)).fill(0xff);
  const bytes = (index: number) => Math.min(chunkSize, size - index * chunkSize);
  switch (m.op) {
    case "init":
      ({ size, chunkSize } = m);
      break;
    case "connect":
      if (m.link === 1) {
        // Late news from the dropped link: a chunk it finished (marked direct, unlike any of link 1's) and its end.
        post({ ev: "done", link: 0, index: 0, bytes: bytes(0), direct: true });
        post({ ev: "gone", link: 0, reason: "late news from a dropped link" });
      }
      post({ ev: "ready", link: m.link, bits: all });
      break;
    case "request":
      if (m.link !== 0) post({ ev: "done", link: m.link, index: m.index, bytes: bytes(m.index), direct: false });
      break;
    case "close":
      post({ ev: "closed", buffers: { made: 0, dropped: 0 } });
      break;
  }
};
