/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that serves every chunk as soon as it is asked for, and each time the coordinator
// says "ending" tells the test, on a BroadcastChannel named after this module, how many chunks had been asked for by
// then.
import { playScript } from "./worker_script.ts";

const channel = new BroadcastChannel("scripted_ending_worker");
const asked = new Set<number>();

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect":
      post({ ev: "ready", link: m.link, bits: new Uint8Array(Math.ceil(count / 8)).fill(0xff) });
      for (const index of m.early) {
        asked.add(index);
        post({ ev: "done", link: m.link, index, bytes: bytes(index), direct: false });
      }
      break;
    case "request":
      asked.add(m.index);
      post({ ev: "done", link: m.link, index: m.index, bytes: bytes(m.index), direct: false });
      break;
    case "ending":
      channel.postMessage(asked.size);
      break;
  }
});
