/**
 * Just enough BitTorrent for the benchmark's aria2c reference: a bencode
 * encoder, a single-file `.torrent` writer (BEP 3) and a minimal HTTP
 * tracker that answers announces with a compact peer list (BEP 23).
 *
 * Not a general tracker: it serves one swarm, keeps peers in memory, keys
 * them by `ip:port` and ignores `info_hash` (the benchmark runs one torrent).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename } from "node:path";
import { concatBytes } from "../lib/bytes.ts";

/** A value bencode can carry. Dictionary keys are sorted as raw strings on encoding. */
export type BValue = number | string | Uint8Array | BValue[] | { [key: string]: BValue };

const utf8 = new TextEncoder();

/**
 * Encodes a value as bencode: `i<n>e`, `<len>:<bytes>`, `l...e`, `d...e`.
 *
 * @example
 * ```ts
 * new TextDecoder().decode(bencode({ b: 1, a: "x" })); // "d1:a1:x1:bi1ee"
 * ```
 */
export function bencode(value: BValue): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  const walk = (v: BValue): void => {
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new RangeError(`Cannot bencode ${v}: not a safe integer`);
      parts.push(utf8.encode(`i${v}e`));
    } else if (typeof v === "string" || v instanceof Uint8Array) {
      const bytes = typeof v === "string" ? utf8.encode(v) : v;
      parts.push(utf8.encode(`${bytes.length}:`), bytes);
    } else if (Array.isArray(v)) {
      parts.push(utf8.encode("l"));
      v.forEach(walk);
      parts.push(utf8.encode("e"));
    } else {
      parts.push(utf8.encode("d"));
      for (const key of Object.keys(v).sort()) {
        walk(key);
        walk(v[key]!);
      }
      parts.push(utf8.encode("e"));
    }
  };
  walk(value);
  return concatBytes(parts);
}

/** Piece length of the benchmark's torrents: 1 MiB, as Shoal's default chunk. */
export const PIECE_LENGTH = 1024 * 1024;

/**
 * Writes a single-file torrent for `file` to `torrentPath` and returns its
 * info hash (hex). Pieces are hashed with SHA-1 as BEP 3 requires.
 */
export async function makeTorrent(
  file: string,
  torrentPath: string,
  announce: string,
  pieceLength = PIECE_LENGTH,
): Promise<string> {
  const size = (await Deno.stat(file)).size;
  const pieces = new Uint8Array(Math.ceil(size / pieceLength) * 20);
  using f = await Deno.open(file);
  const buf = new Uint8Array(pieceLength);
  for (let i = 0, at = 0; at < size; i++) {
    let n = 0;
    while (n < pieceLength && at + n < size) {
      const got = await f.read(buf.subarray(n));
      if (got === null) throw new Error(`Cannot hash ${file}: it ended at ${at + n} of ${size} bytes`);
      n += got;
    }
    pieces.set(createHash("sha1").update(buf.subarray(0, n)).digest(), i * 20);
    at += n;
  }
  const info = { length: size, name: basename(file), "piece length": pieceLength, pieces };
  await Deno.writeFile(torrentPath, bencode({ announce, "created by": "shoal bench", info }));
  return createHash("sha1").update(bencode(info)).digest("hex");
}

/** One announced peer. */
export interface SwarmPeer {
  ip: string;
  port: number;
  left: number;
}

/**
 * A one-swarm HTTP tracker on `Deno.serve`: `GET /announce?port=..&left=..&event=..`
 * answers `d8:intervali<s>e5:peers<6 bytes per IPv4 peer>e`, listing every
 * other peer. A bad announce gets a bencoded `failure reason`.
 */
export class MiniTracker implements AsyncDisposable {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** Announced peers by `ip:port`. */
  readonly peers: Map<string, SwarmPeer>;
  /** The announce URL to put in a torrent. */
  readonly url: string;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, url: string, peers: Map<string, SwarmPeer>) {
    this.#server = server;
    this.url = url;
    this.peers = peers;
  }

  /** Starts listening on `hostname` (a free port unless given). */
  static start(hostname = "127.0.0.1", port = 0, intervalSeconds = 5): MiniTracker {
    const peers = new Map<string, SwarmPeer>();
    const server = Deno.serve({ hostname, port, onListen: () => {} }, (req, info) => {
      const url = new URL(req.url);
      if (url.pathname !== "/announce") return new Response("not found", { status: 404 });
      const q = url.searchParams;
      const port = Number(q.get("port"));
      // aria2c sends `ip` only with --bt-external-ip; otherwise the source address is the peer's
      const ip = q.get("ip") ?? info.remoteAddr.hostname;
      const octets = ip.split(".").map(Number);
      if (!Number.isInteger(port) || port < 1 || port > 65535 || octets.length !== 4) {
        return new Response(bencode({ "failure reason": `bad announce: ip ${ip} port ${q.get("port")}` }));
      }
      const key = `${ip}:${port}`;
      if (q.get("event") === "stopped") peers.delete(key);
      else peers.set(key, { ip, port, left: Number(q.get("left") ?? 0) });
      const others = [...peers.entries()].filter(([k]) => k !== key).map(([, p]) => p);
      const compact = new Uint8Array(others.length * 6);
      others.forEach((p, i) => {
        compact.set(p.ip.split(".").map(Number), i * 6);
        compact[i * 6 + 4] = p.port >> 8;
        compact[i * 6 + 5] = p.port & 0xff;
      });
      return new Response(bencode({ interval: intervalSeconds, "min interval": 1, peers: compact }), {
        headers: { "content-type": "text/plain" },
      });
    });
    return new MiniTracker(server, `http://${hostname}:${server.addr.port}/announce`, peers);
  }

  /** Peers that announced with nothing left to download. */
  seeders(): SwarmPeer[] {
    return [...this.peers.values()].filter((p) => p.left === 0);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown().catch(() => {});
  }
}
