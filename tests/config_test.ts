import assert from "node:assert/strict";
import { Command, Option } from "commander";
import { join } from "node:path";
import {
  applyConfig,
  configPath,
  configure,
  type ConfigValues,
  MAX_CONFIG_BYTES,
  readConfig,
  sameConfig,
} from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import { checkPeerConfig } from "../lib/peer_cli.ts";

function program(): Command {
  const p = new Command("client")
    .addOption(new Option("--tracker <host:port>").env("SHOAL_TEST_TRACKER"))
    .option("--config <file>")
    .exitOverride();
  p.command("get").option("--workers <n>").option("--no-share").action(() => {});
  return p;
}

async function withFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "shoal-config-" });
  try {
    const path = join(dir, "config.json");
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("config: found by --config, then SHOAL_CONFIG, then the XDG default (optional)", () => {
  assert.deepEqual(configPath(["--config", "/a.json", "files"], {}), { path: "/a.json", required: true });
  assert.deepEqual(configPath(["--config=/b.json"], {}), { path: "/b.json", required: true });
  assert.deepEqual(configPath(["files"], { SHOAL_CONFIG: "/c.json" }), { path: "/c.json", required: true });
  assert.deepEqual(configPath([], { XDG_CONFIG_HOME: "/x" }), { path: "/x/shoal/config.json", required: false });
  assert.deepEqual(configPath([], { HOME: "/h" }), { path: "/h/.config/shoal/config.json", required: false });
  assert.deepEqual(configPath(["--", "--config", "/no"], { HOME: "/h" }).required, false, "after -- it is an argument");
  assert.throws(() => configPath(["--config"], {}), UsageError);
});

Deno.test("config: precedence is flag > environment > file > default", async () => {
  await withFile(JSON.stringify({ client: { tracker: "file:1", workers: 3, "no-share": true } }), async (path) => {
    const argv = (extra: string[]) => ["--config", path, ...extra, "get"];
    const run = async (extra: string[]) => {
      const p = program();
      await configure(p, "client", argv(extra));
      await p.parseAsync(argv(extra), { from: "user" });
      return { tracker: p.opts().tracker, get: p.commands[0]!.opts() };
    };
    Deno.env.delete("SHOAL_TEST_TRACKER");
    let r = await run([]);
    assert.equal(r.tracker, "file:1");
    assert.equal(r.get.workers, "3", "a subcommand's option from the file");
    assert.equal(r.get.share, false, "a negatable switch set in the file");
    Deno.env.set("SHOAL_TEST_TRACKER", "env:2");
    try {
      r = await run([]);
      assert.equal(r.tracker, "env:2");
      r = await run(["--tracker", "flag:3"]);
      assert.equal(r.tracker, "flag:3");
    } finally {
      Deno.env.delete("SHOAL_TEST_TRACKER");
    }
  });
});

Deno.test("config: configure returns the section it applied; sameConfig ignores key order only", async () => {
  await withFile(JSON.stringify({ client: { workers: 3, tracker: "file:1" }, peer: { port: 1 } }), async (path) => {
    const read = await configure(program(), "client", ["--config", path]);
    assert.deepEqual(read, { workers: 3, tracker: "file:1" });
    assert.ok(sameConfig(read, { tracker: "file:1", workers: 3 }));
    assert.ok(!sameConfig(read, { tracker: "file:1", workers: "3" }), "a number is not its string");
    assert.ok(!sameConfig(read, { tracker: "file:1" }));
    assert.ok(!sameConfig(read, { tracker: "file:1", workers: 3, quiet: true }));
    assert.ok(!sameConfig({ a: 1, b: 2 }, { a: 1, c: 2 }), "same count, other keys");
    assert.ok(sameConfig({}, {}));
  });
});

Deno.test("config: the default file may be absent, a named one may not", async () => {
  assert.deepEqual(await readConfig("client", { path: "/nonexistent/shoal.json", required: false }), {});
  await assert.rejects(readConfig("client", { path: "/nonexistent/shoal.json", required: true }), UsageError);
});

Deno.test("config: bad files are errors that name the file and the key", async () => {
  const cases: [string, RegExp][] = [
    ["{ not json", /not valid JSON/],
    ["[1, 2]", /must hold a JSON object/],
    [JSON.stringify({ clients: {} }), /unknown section "clients"/],
    [JSON.stringify({ client: [] }), /"client" must be an object/],
    [JSON.stringify({ client: { tracker: { host: "x" } } }), /client\.tracker must be a string, number or boolean/],
    ["x".repeat(MAX_CONFIG_BYTES + 1), /the limit is/],
  ];
  for (const [text, re] of cases) {
    await withFile(text, async (path) => {
      await assert.rejects(readConfig("client", { path, required: true }), (e: Error) => {
        assert.ok(e instanceof UsageError);
        assert.match(e.message, re);
        assert.ok(e.message.includes(path), "names the file");
        return true;
      });
    });
  }
  assert.throws(() => applyConfig(program(), { trackr: "x" }, "/f.json", "client"), /client has no option --trackr/);
  assert.throws(() => applyConfig(program(), { share: "yes" }, "/f.json", "client"), /has no option --share/);
  assert.throws(() => applyConfig(program(), { "no-share": "yes" }, "/f.json", "client"), /is a switch/);
  // true for an option that takes a value was handed on as "true", and refused later without naming the file.
  assert.throws(
    () => applyConfig(program(), { workers: true }, "/f.json", "client"),
    /^UsageError: Config file \/f\.json: client\.workers takes a value, not true: use a number or a string$/,
  );
});

Deno.test("config: a peer section is checked as peer.ts --daemon would read it, naming the file", () => {
  const path = "/x/shoal.json";
  checkPeerConfig({}, path);
  checkPeerConfig({ "upload-limit": "1m", port: 7001, "no-watch": true, host: "0.0.0.0" }, path);
  const refused: [ConfigValues, RegExp][] = [
    [{ "uplod-limit": "1m" }, /^Config file \/x\/shoal\.json: peer has no option --uplod-limit$/],
    [{ quiet: "yes" }, /^Config file \/x\/shoal\.json: peer\.quiet is a switch: use true or false$/],
    [{ "upload-limit": "fast" }, /^Config file \/x\/shoal\.json: Invalid --upload-limit "fast"/],
    [{ port: 70000 }, /^Config file \/x\/shoal\.json: Invalid --port "70000"/],
  ];
  for (const [values, message] of refused) {
    assert.throws(() => checkPeerConfig(values, path), (e: unknown) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, message);
      return true;
    });
  }
});
