/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that plays one script, to show the coordinator ignores a dropped link's late
// messages: link 0 is ready and then never answers (so it is dropped as stalled); when the peer is tried again on
// link 1, link 0's late DONE and GONE arrive first, then link 1 serves every chunk.
import { playScript } from "./worker_script.ts";

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect":
      if (m.link === 1) {
        // Late news from the dropped link: a chunk it finished (marked direct, unlike any of link 1's) and its end.
        post({ ev: "done", link: 0, index: 0, bytes: bytes(0), direct: true });
        post({ ev: "gone", link: 0, reason: "late news from a dropped link" });
      }
      post({ ev: "ready", link: m.link, bits: new Uint8Array(Math.ceil(count / 8)).fill(0xff) });
      break;
    case "request":
      if (m.link !== 0) post({ ev: "done", link: m.link, index: m.index, bytes: bytes(m.index), direct: false });
      break;
  }
});
