/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// A stand-in for lib/fetch_worker.ts that plays a swarm of sources without dialling any: the source at port `base` + k
// holds chunk k alone (nothing when k is past the last chunk) and serves it `delay` ms after it is asked. It counts
// the links the coordinator holds open and fails the download (a "fatal" message) as soon as they exceed `cap`. All
// three come in the worker's URL (`?base=20000&cap=4&delay=0`). Run it as the only worker.
import { playScript } from "./worker_script.ts";

const params = new URL(import.meta.url).searchParams;
const base = Number(params.get("base"));
const cap = Number(params.get("cap"));
const delayMs = Number(params.get("delay"));
const open = new Set<number>();

playScript((m, { count, bytes, post }) => {
  switch (m.op) {
    case "connect": {
      open.add(m.link);
      if (open.size > cap) return post({ ev: "fatal", message: `${open.size} links open at once, cap ${cap}` });
      const bits = new Uint8Array(Math.ceil(count / 8));
      const k = m.port - base;
      if (k >= 0 && k < count) bits[k >> 3] = 0x80 >> (k & 7);
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
