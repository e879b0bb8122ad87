/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// The real fetch worker (lib/fetch_worker.ts), loaded late: after the delay its URL names (`?ms=1500`), as a worker
// starts on a machine whose host takes most of the CPU; with `?never` it never finishes loading. What the coordinator
// sends meanwhile is held and handed over once it has loaded, in order, as Deno holds messages for a worker still
// loading its modules (a top-level await lets them through to no listener).
const params = new URL(import.meta.url).searchParams;
const held: MessageEvent[] = [];
self.onmessage = (e: MessageEvent) => void held.push(e);
if (params.has("never")) {
  setInterval(() => {}, 60_000); // pending work: Deno takes a top-level await with none for a dead end, and says so
  await new Promise(() => {});
}
await new Promise((resolve) => setTimeout(resolve, Number(params.get("ms"))));
await import("../lib/fetch_worker.ts");
for (const e of held) self.dispatchEvent(new MessageEvent("message", { data: e.data }));
