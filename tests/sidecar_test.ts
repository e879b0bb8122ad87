import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Bitfield } from "../lib/bitfield.ts";
import { fileIdOf, type Manifest, MAX_CHUNKS, MIN_CHUNK_SIZE } from "../lib/manifest.ts";
import {
  decodeSidecar,
  encodeSidecar,
  ForeignSidecarError,
  MAX_SIDECAR_BYTES,
  readSidecar,
  SidecarError,
  SidecarWriter,
  writeSidecar,
} from "../lib/sidecar.ts";

const m: Manifest = { name: "f.bin", size: 40000, chunkSize: 16384, chunks: ["a", "b", "c"].map((c) => c.repeat(64)) };
const id = fileIdOf(m);
const file = { fileId: id, size: m.size, chunkSize: m.chunkSize };

Deno.test("sidecar: round trip through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin.part.json`;
    assert.equal(await readSidecar(path, file), null);
    const done = new Bitfield(3);
    done.set(2);
    await writeSidecar(path, { ...file, done });
    const back = await readSidecar(path, file);
    assert.deepEqual(back?.done.missing(), [0, 1]);
    assert.deepEqual({ ...back, done: null }, { ...file, done: null });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sidecar: a link planted at the temp name is replaced, not written through", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin.part.json`;
    await Deno.writeTextFile(`${dir}/precious`, "keep me");
    await Deno.symlink(`${dir}/precious`, `${path}.tmp`);
    await writeSidecar(path, { ...file, done: new Bitfield(3) });
    assert.equal(await Deno.readTextFile(`${dir}/precious`), "keep me");
    assert.deepEqual((await readSidecar(path, file))?.done.missing(), [0, 1, 2]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sidecar: damage, another file, another layout and a wrong format are each refused with a reason", () => {
  const text = encodeSidecar({ ...file, done: Bitfield.full(3) });
  const reason = (t: string, fileId = id) => {
    try {
      decodeSidecar(t, { ...file, fileId });
    } catch (err) {
      assert.ok(err instanceof SidecarError);
      return err.message;
    }
    assert.fail("accepted");
  };
  assert.match(reason(text.slice(0, -5)), /not valid JSON/);
  assert.match(reason(text, "e".repeat(64)), /another file/);
  // Intact but another file's: told apart (the .part beside it is that download's progress); damaged: not.
  assert.throws(
    () => decodeSidecar(text, { ...file, fileId: "e".repeat(64), size: 1 }),
    (e: unknown) => e instanceof ForeignSidecarError && e.state.fileId === id && e.state.done.count === 3,
  );
  const damaged = text.replace('"checksum":"', '"checksum":"0');
  assert.throws(() => decodeSidecar(damaged, { ...file, fileId: "e".repeat(64) }), (e: unknown) => {
    return e instanceof SidecarError && !(e instanceof ForeignSidecarError);
  });
  const o = JSON.parse(text);
  assert.match(reason(JSON.stringify({ ...o, done: "AAA=" })), /wrong length/);
  assert.match(reason(JSON.stringify({ ...o, done: "gA==" })), /checksum/);
  assert.match(reason(JSON.stringify({ ...o, format: 9 })), /format 9/);
  assert.match(reason(JSON.stringify({ ...o, format: 1 })), /format 1 is not 2/, "an older Shoal's sidecar");
  assert.match(reason(JSON.stringify({ ...o, format: "2" })), /format "2" is not 2/, "a string is not the number");
  assert.match(reason(JSON.stringify({ ...o, size: 1 })), /layout/);
  assert.match(reason(JSON.stringify({ ...o, chunkSize: 32768 })), /layout/);
  assert.match(reason(JSON.stringify({ ...o, chunks: 4 })), /layout/);
  assert.match(reason(JSON.stringify({ ...o, done: "!!!" })), /not base64/);
});

Deno.test("sidecar: the writer's text is the one JSON.stringify gives, checksum over the rest, for each flush", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin.part.json`;
    const writer = new SidecarWriter(path, file);
    const done = new Bitfield(3);
    for (const i of [0, 2]) {
      done.set(i);
      await writer.write(done);
      const text = await Deno.readTextFile(path);
      const { checksum, ...body } = JSON.parse(text);
      assert.equal(text, JSON.stringify({ ...body, checksum }), "plain JSON.stringify order and form");
      assert.deepEqual(Object.keys(body), ["format", "fileId", "size", "chunkSize", "chunks", "done"]);
      assert.equal(checksum, createHash("sha256").update(JSON.stringify(body)).digest("hex"));
      assert.equal(text, encodeSidecar({ ...file, done }));
      assert.deepEqual(decodeSidecar(text, file).done.missing(), done.missing());
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
    const writer = new SidecarWriter(path, file);
    const done = new Bitfield(3);
    await writer.write(done);
    // Fill the filesystem: no room is left for the temp file a normal update writes first.
    await Deno.writeFile(`${dir}/filler`, new Uint8Array(64 * 1024)).catch(() => {});
    await assert.rejects(Deno.writeFile(`${dir}/probe`, new Uint8Array(4096)), /No space left/);
    done.set(0);
    done.set(2);
    await writer.write(done);
    assert.deepEqual((await readSidecar(path, file))?.done.missing(), [1]);
    assert.equal(await Deno.stat(`${path}.tmp`).then(() => true, () => false), false, "no temp file left");
  } finally {
    await mount(["umount", dir]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sidecar: its size is one bit per chunk plus a constant, not the manifest", () => {
  const big = { fileId: id, size: MAX_CHUNKS * MIN_CHUNK_SIZE, chunkSize: MIN_CHUNK_SIZE };
  const text = encodeSidecar({ ...big, done: new Bitfield(MAX_CHUNKS) });
  // 200 000 chunks: a 25 000-byte bitmap, 33 336 bytes of base64 (a manifest would be about 13 MB).
  assert.ok(text.length < 33_336 + 300, `${text.length} bytes`);
  assert.ok(text.length <= MAX_SIDECAR_BYTES);
  assert.equal(decodeSidecar(text, big).done.size, MAX_CHUNKS);
});
