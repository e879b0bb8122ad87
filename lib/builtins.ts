/**
 * Node's built-in modules, loaded when first used rather than when a module
 * that needs them is imported.
 *
 * Why: the first `node:` module an isolate loads starts Deno's Node
 * compatibility layer, which costs that isolate 40-50 ms of CPU (a worker
 * that imports none answers in 20-37 ms, one that imports `node:fs` in
 * 63-92; docs/PERFORMANCE.md, session 34). A fetch worker needs none of it
 * to reach its peers, so the modules it loads take `node:fs`,
 * `node:crypto` and `node:inspector` from here, and it first asks for them
 * once its links' HELLOs are sent: the layer then starts while the peers
 * answer, not before the worker can dial.
 *
 * `process.getBuiltinModule` hands over a built-in module synchronously
 * (Node 22.3 and later; Deno has it). Only a call reaches `process`: even
 * reading that global starts the layer.
 *
 * @module
 */

type Fs = typeof import("node:fs");
type Crypto = typeof import("node:crypto");
type Inspector = typeof import("node:inspector");

let fs: Fs | undefined;
let crypto: Crypto | undefined;
let inspector: Inspector | undefined;

/** `node:fs`. */
export function nodeFs(): Fs {
  return fs ??= process.getBuiltinModule("node:fs");
}

/** `node:crypto`. */
export function nodeCrypto(): Crypto {
  return crypto ??= process.getBuiltinModule("node:crypto");
}

/** `node:inspector`. */
export function nodeInspector(): Inspector {
  return inspector ??= process.getBuiltinModule("node:inspector");
}
