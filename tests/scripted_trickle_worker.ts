/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that never stops answering: each chunk asked for is reported done on the next
// turn of the event loop, whatever else the coordinator is doing (saving its sidecar on the way out, say).
import { playScript } from "./worker_script.ts";

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect":
      post({ ev: "ready", link: m.link, bits: new Uint8Array(Math.ceil(count / 8)).fill(0xff) });
      break;
    case "request":
      setTimeout(() => post({ ev: "done", link: m.link, index: m.index, bytes: bytes(m.index), direct: false }), 0);
      break;
  }
});
