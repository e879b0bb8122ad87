/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
// The real fetch worker (lib/fetch_worker.ts), told at `init` to open a .part that is not there: its prepare() fails
// as it would on a disk that refuses the file, after its first HELLO is sent. The redirect is imported first so that
// its listener sees `init` before the real worker's.
import "./unopenable_redirect.ts";
import "../lib/fetch_worker.ts";
