/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that plays a swarm of sources without dialling any: the source at port `base` + k
// holds chunk k alone (nothing when k is past the last chunk) and serves it `delay` ms after it is asked; the source
// at `base` + `later` holds nothing on its first connection, as if it gained its chunk afterwards. The worker counts
// the links the coordinator holds open and fails the download (a "fatal" message) as soon as they exceed `cap`. All
// come in the worker's URL (`?base=20000&cap=4&delay=0&later=-1`). Run it as the only worker.
import { playScript } from "./worker_script.ts";

const params = new URL(import.meta.url).searchParams;
const base = Number(params.get("base"));
const cap = Number(params.get("cap"));
const delayMs = Number(params.get("delay"));
const later = Number(params.get("later") ?? -1);
const open = new Set<number>();
/** Connections so far, by source. */
const connections = new Map<number, number>();

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect": {
      open.add(m.link);
      if (open.size > cap) return post({ ev: "fatal", message: `${open.size} links open at once, cap ${cap}` });
      const bits = new Uint8Array(Math.ceil(count / 8));
      const k = m.port - base;
      const nth = (connections.get(k) ?? 0) + 1;
      connections.set(k, nth);
      if (k >= 0 && k < count && !(k === later && nth === 1)) bits[k >> 3] = 0x80 >> (k & 7);
      post({ ev: "ready", link: m.link, bits });
      break;
    }
    case "request": {
      const index = m.index, link = m.link;
      setTimeout(() => post({ ev: "done", link, index, bytes: bytes(index), direct: false }), delayMs);
      break;
    }
    case "drop":
      open.delete(m.link);
      break;
  }
});
