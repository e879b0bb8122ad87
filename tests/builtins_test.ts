/**
 * Node's built-in modules on first use (lib/builtins.ts), and what a fetch
 * worker loads: no `node:` or `npm:` module until it asks for one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { nodeCrypto, nodeFs, nodeInspector } from "../lib/builtins.ts";

Deno.test("the built-ins are the node: modules, each loaded once", () => {
  assert.equal(
    nodeCrypto().createHash("sha256").update("abc").digest("hex"), // FIPS 180-2's first example
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(typeof nodeFs().readSync, "function");
  assert.equal(typeof nodeInspector().Session, "function");
  assert.equal(nodeFs(), nodeFs());
});

/** The modules `entry` loads when it runs (type-only imports are not loaded), from `deno info --json`. */
async function loadedModules(entry: URL): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry.href],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string; dependencies?: { code?: { specifier: string } }[] }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const walk = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of bySpecifier.get(specifier)?.dependencies ?? []) if (d.code) walk(d.code.specifier);
  };
  walk(entry.href);
  return [...seen];
}

Deno.test("a fetch worker loads no node: or npm: module: the Node layer would cost it 40-60 ms before it can dial", async () => {
  const loaded = await loadedModules(new URL("../lib/fetch_worker.ts", import.meta.url));
  assert.ok(loaded.some((s) => s.endsWith("/lib/connection.ts")), `the walk found the worker's modules: ${loaded}`);
  assert.deepEqual(loaded.filter((s) => /^(node|npm):/.test(s)), []);
  // The walk does see a node: import where there is one.
  const client = await loadedModules(new URL("../client.ts", import.meta.url));
  assert.ok(client.some((s) => s.startsWith("node:")), "client.ts loads node: modules");
});
