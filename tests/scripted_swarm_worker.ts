/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that plays a swarm of sources without dialling any: the source at port `base` + k
// holds chunk k alone (nothing when k is past the last chunk) and serves it `delay` ms after it is asked; the source
// at `base` + `later` holds nothing on its first connection, as if it gained its chunk afterwards. With `full=1` every
// source holds every chunk instead; the source at `base` + `slow` serves after `slowDelay` ms. The worker counts the
// links the coordinator holds open and fails the download (a "fatal" message) as soon as they exceed `cap`. All come
// in the worker's URL (`?base=20000&cap=4&delay=0&later=-1&full=0&slow=-1&slowDelay=0`). Run it as the only worker.
import { playScript } from "./worker_script.ts";

const params = new URL(import.meta.url).searchParams;
const base = Number(params.get("base"));
const cap = Number(params.get("cap"));
const delayMs = Number(params.get("delay"));
const later = Number(params.get("later") ?? -1);
const full = params.get("full") === "1";
const slow = Number(params.get("slow") ?? -1);
const slowDelayMs = Number(params.get("slowDelay") ?? 0);
/** The source of each open link. */
const open = new Map<number, number>();
/** Connections so far, by source. */
const connections = new Map<number, number>();

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect": {
      const k = m.port - base;
      open.set(m.link, k);
      if (open.size > cap) return post({ ev: "fatal", message: `${open.size} links open at once, cap ${cap}` });
      const bits = new Uint8Array(Math.ceil(count / 8));
      const nth = (connections.get(k) ?? 0) + 1;
      connections.set(k, nth);
      if (full) bits.fill(0xff); // the spare bits past the last chunk are ignored
      else if (k >= 0 && k < count && !(k === later && nth === 1)) bits[k >> 3] = 0x80 >> (k & 7);
      post({ ev: "ready", link: m.link, bits });
      break;
    }
    case "request": {
      const index = m.index, link = m.link;
      const after = open.get(link) === slow ? slowDelayMs : delayMs;
      setTimeout(() => post({ ev: "done", link, index, bytes: bytes(index), direct: false }), after);
      break;
    }
    case "drop":
      open.delete(m.link);
      break;
  }
});
