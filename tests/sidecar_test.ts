import assert from "node:assert/strict";
import { Bitfield } from "../lib/bitfield.ts";
import { fileIdOf, type Manifest } from "../lib/manifest.ts";
import {
  decodeSidecar,
  encodeSidecar,
  readSidecar,
  SidecarError,
  SidecarWriter,
  writeSidecar,
} from "../lib/sidecar.ts";

const m: Manifest = { name: "f.bin", size: 40000, chunkSize: 16384, chunks: ["a", "b", "c"].map((c) => c.repeat(64)) };
const id = fileIdOf(m);

Deno.test("sidecar: round trip through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin.part.json`;
    assert.equal(await readSidecar(path, id), null);
    const done = new Bitfield(3);
    done.set(2);
    await writeSidecar(path, { fileId: id, manifest: m, done });
    const back = await readSidecar(path, id);
    assert.deepEqual(back?.done.missing(), [0, 1]);
    assert.deepEqual(back?.manifest, m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sidecar: damage, another file, and a wrong format are each refused with a reason", () => {
  const text = encodeSidecar({ fileId: id, manifest: m, done: Bitfield.full(3) });
  const reason = (t: string, fileId = id) => {
    try {
      decodeSidecar(t, fileId);
    } catch (err) {
      assert.ok(err instanceof SidecarError);
      return err.message;
    }
    assert.fail("accepted");
  };
  assert.match(reason(text.slice(0, -5)), /not valid JSON/);
  assert.match(reason(text, "e".repeat(64)), /another file/);
  const o = JSON.parse(text);
  assert.match(reason(JSON.stringify({ ...o, done: "AAA=" })), /wrong length/);
  assert.match(reason(JSON.stringify({ ...o, done: "gA==" })), /checksum/);
  assert.match(reason(JSON.stringify({ ...o, format: 9 })), /format 9/);
  assert.match(reason(JSON.stringify({ ...o, manifest: { ...m, size: 1 } })), /manifest/);
});

Deno.test("sidecar: the writer's text is the one JSON.stringify gives, checksum over the rest, for each flush", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin.part.json`;
    const named = { ...m, name: 'a "quoted" name, é' };
    const writer = new SidecarWriter(path, fileIdOf(named), named);
    const done = new Bitfield(3);
    for (const i of [0, 2]) {
      done.set(i);
      await writer.write(done);
      const text = await Deno.readTextFile(path);
      const { checksum, ...body } = JSON.parse(text);
      assert.equal(text, JSON.stringify({ ...body, checksum }), "plain JSON.stringify order and form");
      assert.equal(text, encodeSidecar({ fileId: fileIdOf(named), manifest: named, done }));
      assert.deepEqual(decodeSidecar(text, fileIdOf(named)).done.missing(), done.missing());
      await assert.rejects(Deno.stat(`${path}.tmp`));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sidecar: on a full disk the writer overwrites the sidecar in place, and it reads back right", async () => {
  const dir = await Deno.makeTempDir();
  const mount = (args: string[]) => new Deno.Command(args[0]!, { args: args.slice(1), stderr: "piped" }).output();
  const mounted = await mount(["mount", "-t", "tmpfs", "-o", "size=64k", "shoal-sidecar-test", dir]);
  assert.ok(mounted.success, `mount a small tmpfs (needs root): ${new TextDecoder().decode(mounted.stderr)}`);
  try {
    const path = `${dir}/f.bin.part.json`;
    const writer = new SidecarWriter(path, id, m);
    const done = new Bitfield(3);
    await writer.write(done);
    // Fill the filesystem: no room is left for the temp file a normal update writes first.
    await Deno.writeFile(`${dir}/filler`, new Uint8Array(64 * 1024)).catch(() => {});
    await assert.rejects(Deno.writeFile(`${dir}/probe`, new Uint8Array(4096)), /No space left/);
    done.set(0);
    done.set(2);
    await writer.write(done);
    assert.deepEqual((await readSidecar(path, id))?.done.missing(), [1]);
    assert.equal(await Deno.stat(`${path}.tmp`).then(() => true, () => false), false, "no temp file left");
  } finally {
    await mount(["umount", dir]);
    await Deno.remove(dir, { recursive: true });
  }
});
