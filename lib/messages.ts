/**
 * Typed messages and their wire encoding. docs/PROTOCOL.md is the spec;
 * this file is its executable form. Each frame carries one message; the
 * frame's type byte says which (the table {@link WireType}). Ids are never
 * reused or renumbered; an unknown id is answered with an `unknown_type`
 * error and the connection is closed.
 *
 * Control messages carry a UTF-8 JSON object (the "type" lives in the frame
 * header, not in the JSON). Chunk traffic is binary: a file id is its 32 raw
 * bytes, integers are big-endian, chunk data is raw bytes.
 *
 * @module
 */

import { fromHex, isSha256Hex, toBase64, toHex, utf8Decoder, utf8Encoder } from "./bytes.ts";
import { ProtocolError, UsageError } from "./errors.ts";
import { type Frame, FRAME_HEADER_BYTES, writeFrameHeader } from "./framing.ts";
import { type Manifest, MAX_CHUNKS, verifyManifest } from "./manifest.ts";

/** Wire protocol version spoken by this build. */
export const PROTOCOL_VERSION = 1;
/** Protocol name carried in HELLO. */
export const PROTOCOL_NAME = "shoal";

/** Frame type byte of each message. Never renumber; retire ids by leaving them out. */
export const WireType = {
  hello: 0x01,
  error: 0x02,
  ok: 0x03,
  register: 0x10,
  registered: 0x11,
  heartbeat: 0x12,
  unregister: 0x13,
  announce: 0x14,
  list_files: 0x20,
  file_list: 0x21,
  get_peers: 0x22,
  peer_list: 0x23,
  get_manifest: 0x24,
  manifest: 0x25,
  interested: 0x30,
  bitfield: 0x31,
  have: 0x32,
  request: 0x33,
  piece: 0x34,
  cancel: 0x35,
  reject: 0x36,
  authorize: 0x37,
  create_user: 0x40,
  login: 0x41,
  session: 0x42,
  logout: 0x43,
  whoami: 0x44,
  create_group: 0x48,
  join_group: 0x49,
  leave_group: 0x4a,
  accept_request: 0x4b,
  remove_member: 0x4c,
  list_groups: 0x4d,
  group_list: 0x4e,
  list_requests: 0x4f,
  user_list: 0x50,
  list_group_files: 0x51,
  group_lookup: 0x52,
  group_file: 0x53,
  get_grant: 0x54,
  grant: 0x55,
  stop_sharing: 0x56,
  ctl_status: 0x60,
  ctl_state: 0x61,
  ctl_share: 0x62,
  ctl_shared: 0x63,
  ctl_unshare: 0x64,
  ctl_stop: 0x65,
  ctl_session: 0x66,
  ctl_register_file: 0x67,
  ctl_file_registered: 0x68,
  ctl_request_file: 0x69,
  ctl_file_requested: 0x6a,
  ctl_list_downloads: 0x6b,
  ctl_downloads: 0x6c,
  ctl_stop_download: 0x6d,
} as const;

export type MessageName = keyof typeof WireType;

const NAME_OF = new Map<number, MessageName>(
  Object.entries(WireType).map(([k, v]) => [v, k as MessageName]),
);

/** One file in a catalog answer. `peers` counts complete sources, `partial` partial ones. */
export interface FileSummary {
  id: string;
  name: string;
  size: number;
  chunkSize: number;
  peers: number;
  partial: number;
  /** group files only: who shared it first */
  owner?: string;
}

/** A group as `list_groups` shows it; `role` is what the asking user is to it. */
export interface GroupEntry {
  name: string;
  owner: string;
  members: number;
  role: "owner" | "member" | "requested" | "none";
}

/** A file shared into a group by a peer (ANNOUNCE `groupAdd`). */
export interface GroupShare {
  group: string;
  manifest: Manifest;
}

/** A group file a peer stops serving (ANNOUNCE `groupRemove`). */
export interface GroupUnshare {
  group: string;
  fileId: string;
}

/** A name a peer stops giving a file it still serves completely (ANNOUNCE `dropNames`). */
export interface NameDrop {
  fileId: string;
  name: string;
}

/**
 * What a tracker lists in REGISTERED `features`: optional parts of version 1 it
 * implements, so a peer uses them only with a tracker that does.
 */
export const TRACKER_FEATURES = ["dropNames"] as const;
/** Most entries in REGISTERED `features`. */
export const MAX_FEATURES = 64;

/** One file a local peer daemon shares into a group. */
export interface CtlShareEntry {
  group: string;
  fileId: string;
  name: string;
  size: number;
  path: string;
}

/** A background download of a `--shared` peer, as CTL_DOWNLOADS reports it. */
export interface CtlDownload {
  /** 1, 2, ... in the order the peer started them (`#1` in its shell). */
  number: number;
  fileId: string;
  name: string;
  size: number;
  /** The absolute output path. */
  out: string;
  state: "downloading" | "done" | "failed" | "stopped";
  /** Bytes verified so far; the size once done. */
  doneBytes: number;
  /** Bytes a second, rounded: the current rate while downloading, the average once done, else 0. */
  rate: number;
  /** Peers connected and serving now (0 once it ended). */
  peers: number;
  /** Milliseconds since it started, or until it ended. */
  elapsedMs: number;
  /** Why it failed or stopped. */
  error?: string;
}

/** Most downloads one CTL_DOWNLOADS lists (a peer's newest). */
export const MAX_CTL_DOWNLOADS = 1000;
const DOWNLOAD_STATES: string[] = ["downloading", "done", "failed", "stopped"];

/** A peer holding a file, as the tracker reports it. */
export interface PeerEntry {
  host: string;
  port: number;
  complete: boolean;
}

/**
 * Which chunks a peer holds of a file it holds in part, as HEARTBEAT
 * reports it: one bit per chunk, chunk 0 in the most significant bit of
 * byte 0 (as BITFIELD). The tracker checks the length against the file's
 * manifest.
 */
export interface PartialHolding {
  fileId: string;
  bits: Uint8Array;
}

/** Every message, tagged by `type`. */
export type Message =
  | { type: "hello"; protocol: string; version: number; agent: string }
  | { type: "error"; code: string; message: string }
  | { type: "ok" }
  | { type: "register"; port: number; host?: string; token?: string }
  | {
    type: "registered";
    peerId: string;
    heartbeatMs: number;
    expiryMs: number;
    publicKey?: string;
    /** Optional parts of the protocol this tracker implements (see {@link TRACKER_FEATURES}). */
    features?: string[];
  }
  | {
    type: "heartbeat";
    peerId: string;
    /** Chunk data bytes this peer has sent since it started (cumulative). */
    up?: number;
    /** Chunk data bytes this peer has received since it started (cumulative). */
    down?: number;
    /** Chunks held of files held in part (at most MAX_HEARTBEAT_PARTIALS). */
    partials?: PartialHolding[];
  }
  | { type: "unregister"; peerId: string }
  | {
    type: "announce";
    peerId: string;
    add: Manifest[];
    partial: string[];
    remove: string[];
    groupAdd?: GroupShare[];
    groupRemove?: GroupUnshare[];
    /** Only to a tracker whose REGISTERED lists the "dropNames" feature. */
    dropNames?: NameDrop[];
  }
  | { type: "list_files"; query?: string }
  | { type: "file_list"; files: FileSummary[] }
  | { type: "get_peers"; fileId: string }
  | { type: "peer_list"; fileId: string; peers: PeerEntry[] }
  | { type: "get_manifest"; fileId: string }
  | { type: "manifest"; fileId: string; manifest: Manifest }
  | { type: "interested"; fileId: string }
  | { type: "bitfield"; fileId: string; count: number; bits: Uint8Array }
  | { type: "have"; fileId: string; index: number }
  | { type: "request"; fileId: string; index: number }
  | { type: "piece"; fileId: string; index: number; data: Uint8Array }
  | { type: "cancel"; fileId: string; index: number }
  | { type: "reject"; fileId: string; index: number; reason: string }
  | { type: "authorize"; fileId: string; grant: string }
  | { type: "create_user"; name: string; password: string }
  | { type: "login"; name: string; password: string }
  | { type: "session"; user: string; token: string; expiresAt: number }
  | { type: "logout"; token: string }
  | { type: "whoami"; token: string }
  | { type: "create_group"; token: string; group: string }
  | { type: "join_group"; token: string; group: string }
  | { type: "leave_group"; token: string; group: string }
  | { type: "accept_request"; token: string; group: string; user: string }
  | { type: "remove_member"; token: string; group: string; user: string }
  | { type: "list_groups"; token: string }
  | { type: "group_list"; groups: GroupEntry[] }
  | { type: "list_requests"; token: string; group: string }
  | { type: "user_list"; users: string[] }
  | { type: "list_group_files"; token: string; group: string }
  | { type: "group_lookup"; token: string; group: string; file: string }
  | {
    type: "group_file";
    group: string;
    fileId: string;
    manifest: Manifest;
    peers: PeerEntry[];
    grant: string;
    grantExpiresAt: number;
  }
  | { type: "get_grant"; token: string; group: string; fileId: string }
  | { type: "grant"; grant: string; expiresAt: number }
  | { type: "stop_sharing"; token: string; group: string; file: string }
  | { type: "ctl_status" }
  | {
    type: "ctl_state";
    user: string;
    tracker: string;
    address: string;
    registered: boolean;
    shares: CtlShareEntry[];
  }
  | { type: "ctl_share"; path: string; group: string }
  | { type: "ctl_shared"; group: string; fileId: string; name: string; size: number }
  | { type: "ctl_unshare"; group: string; file: string }
  | { type: "ctl_stop" }
  | { type: "ctl_session"; token: string }
  // The control channel of a `peer.ts --shared` peer (the one-shot commands register-file and request-file).
  | { type: "ctl_register_file"; path: string }
  | { type: "ctl_file_registered"; fileId: string; name: string; size: number; path: string }
  | { type: "ctl_request_file"; fileId: string; out?: string }
  | { type: "ctl_file_requested"; fileId: string; name: string; size: number; out: string }
  | { type: "ctl_list_downloads" }
  | { type: "ctl_downloads"; downloads: CtlDownload[] }
  | { type: "ctl_stop_download"; file: string };

/** The message of a given type name. */
export type MessageOf<T extends MessageName> = Extract<Message, { type: T }>;

/** Longest string field we accept in a control message. */
export const MAX_TEXT = 1024;
/** Most entries in any list inside a control message. */
export const MAX_LIST = 100_000;
/**
 * Most `partials` in one HEARTBEAT: a peer downloads a few files at a time,
 * and this keeps a heartbeat below ~540 KB even at MAX_CHUNKS per file.
 */
export const MAX_HEARTBEAT_PARTIALS = 16;
/** Longest base64 bitfield: MAX_CHUNKS bits. */
export const MAX_BITFIELD_BASE64 = Math.ceil(Math.ceil(MAX_CHUNKS / 8) / 3) * 4;

// ---------------------------------------------------------------- encoding

/** Encodes a message into one whole frame. */
export function encodeMessage(msg: Message): Uint8Array<ArrayBuffer> {
  const type = WireType[msg.type];
  switch (msg.type) {
    case "interested":
      return binaryFrame(type, msg.fileId, [], null);
    case "bitfield":
      return binaryFrame(type, msg.fileId, [msg.count], msg.bits);
    case "have":
    case "request":
    case "cancel":
      return binaryFrame(type, msg.fileId, [msg.index], null);
    case "piece":
      return binaryFrame(type, msg.fileId, [msg.index], msg.data);
    case "reject":
      return binaryFrame(type, msg.fileId, [msg.index], utf8Encoder.encode(msg.reason));
    case "heartbeat": {
      // Built key by key: the optional keys keep this order, and bits travel as base64.
      const body: Record<string, unknown> = { peerId: msg.peerId };
      if (msg.up !== undefined) body.up = msg.up;
      if (msg.down !== undefined) body.down = msg.down;
      if (msg.partials !== undefined) {
        body.partials = msg.partials.map((p) => ({ fileId: p.fileId, bits: toBase64(p.bits) }));
      }
      return frameOf(type, utf8Encoder.encode(JSON.stringify(body)));
    }
    default: {
      const { type: _drop, ...body } = msg;
      return frameOf(type, utf8Encoder.encode(JSON.stringify(body)));
    }
  }
}

/** Bytes before the data in a PIECE payload: file id, index. */
export const PIECE_DATA_OFFSET = 32 + 4;
/** Bytes before the data in a PIECE frame: header, file id, index. */
export const PIECE_PREFIX_BYTES = FRAME_HEADER_BYTES + PIECE_DATA_OFFSET;

/**
 * Allocates a whole PIECE frame for `length` data bytes and returns it with
 * the data region, so a sender can read file bytes straight into the frame.
 */
export function allocPieceFrame(
  fileId: string,
  index: number,
  length: number,
  allocate: (n: number) => Uint8Array<ArrayBuffer> = (n) => new Uint8Array(n),
): { frame: Uint8Array<ArrayBuffer>; data: Uint8Array<ArrayBuffer> } {
  if (!Number.isInteger(index) || index < 0 || index > 0xffffffff) throw new RangeError(`Cannot encode index ${index}`);
  const frame = allocate(PIECE_PREFIX_BYTES + length);
  writeFrameHeader(frame, WireType.piece, PIECE_DATA_OFFSET + length);
  frame.set(fileIdBytes(fileId), FRAME_HEADER_BYTES);
  new DataView(frame.buffer).setUint32(FRAME_HEADER_BYTES + 32, index);
  return { frame, data: frame.subarray(PIECE_PREFIX_BYTES) };
}

function frameOf(type: number, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, type, payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** The last file id encoded: a download sends the same one in every REQUEST. */
let lastId = { hex: "", bytes: new Uint8Array(0) };

function fileIdBytes(fileId: string): Uint8Array {
  if (fileId === lastId.hex) return lastId.bytes;
  if (!isSha256Hex(fileId)) throw new RangeError(`Cannot encode file id ${JSON.stringify(fileId)}`);
  lastId = { hex: fileId, bytes: fromHex(fileId) };
  return lastId.bytes;
}

function binaryFrame(type: number, fileId: string, u32s: number[], tail: Uint8Array | null) {
  const len = 32 + 4 * u32s.length + (tail?.length ?? 0);
  const out = new Uint8Array(FRAME_HEADER_BYTES + len);
  writeFrameHeader(out, type, len);
  out.set(fileIdBytes(fileId), FRAME_HEADER_BYTES);
  const view = new DataView(out.buffer);
  let at = FRAME_HEADER_BYTES + 32;
  for (const n of u32s) {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`Cannot encode ${n} as u32`);
    view.setUint32(at, n);
    at += 4;
  }
  if (tail) out.set(tail, at);
  return out;
}

// ---------------------------------------------------------------- decoding

/** Decodes one frame into a message; throws ProtocolError on anything malformed. */
export function decodeMessage(frame: Frame): Message {
  const name = NAME_OF.get(frame.type);
  if (name === undefined) {
    throw new ProtocolError(`Unknown message type 0x${frame.type.toString(16).padStart(2, "0")}`, "unknown_type");
  }
  const p = frame.payload;
  switch (name) {
    case "interested":
      return { type: name, fileId: readFileId(p, name, 0) };
    case "bitfield": {
      const fileId = readFileId(p, name, 4);
      const count = u32At(p, 32);
      const bits = p.subarray(36);
      if (bits.length !== Math.ceil(count / 8)) {
        throw bad(name, `holds ${bits.length} bitfield bytes for ${count} chunks`);
      }
      return { type: name, fileId, count, bits };
    }
    case "have":
    case "request":
    case "cancel":
      return { type: name, fileId: readFileId(p, name, 4, true), index: u32At(p, 32) };
    case "piece":
      return { type: name, fileId: readFileId(p, name, 4), index: u32At(p, 32), data: p.subarray(PIECE_DATA_OFFSET) };
    case "reject": {
      const fileId = readFileId(p, name, 4);
      return { type: name, fileId, index: u32At(p, 32), reason: text(p.subarray(36), name) };
    }
    default:
      return decodeJson(name, p);
  }
}

/**
 * Deepest nesting of arrays and objects a JSON payload may have. The
 * deepest message (ANNOUNCE's groupAdd: files, manifest, chunks) has 7;
 * without a limit a 16 MiB frame of `[[[[…` made JSON.parse build millions
 * of arrays, half a gigabyte, before the shape check could refuse it.
 */
export const MAX_JSON_DEPTH = 16;

/** Whether `payload`'s arrays and objects nest deeper than `max` (strings skipped; their bytes cannot end one early). */
function nestsDeeper(payload: Uint8Array, max: number): boolean {
  let depth = 0, inString = false;
  for (let i = 0; i < payload.length; i++) {
    const b = payload[i]!;
    if (inString) {
      if (b === 0x5c) i++; // a backslash: the next byte is escaped
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) return true;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return false;
}

function decodeJson(name: MessageName, payload: Uint8Array): Message {
  if (nestsDeeper(payload, MAX_JSON_DEPTH)) throw bad(name, `payload nests deeper than ${MAX_JSON_DEPTH} levels`);
  let body: unknown;
  try {
    body = JSON.parse(utf8Decoder.decode(payload));
  } catch {
    throw bad(name, "payload is not UTF-8 JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad(name, "payload is not a JSON object");
  const o = body as Record<string, unknown>;
  const r = new Reader(name, o);
  switch (name) {
    case "hello":
      return { type: name, protocol: r.str("protocol"), version: r.int("version", 0, 0xffff), agent: r.str("agent") };
    case "error":
      return { type: name, code: r.str("code"), message: r.str("message") };
    case "ok":
      return { type: name };
    case "register": {
      const msg: MessageOf<"register"> = { type: name, port: r.int("port", 1, 65535) };
      if (o.host !== undefined) msg.host = r.str("host");
      if (o.token !== undefined) msg.token = r.str("token");
      return msg;
    }
    case "registered": {
      const msg: MessageOf<"registered"> = {
        type: name,
        peerId: r.str("peerId"),
        heartbeatMs: r.int("heartbeatMs", 1, 86_400_000),
        expiryMs: r.int("expiryMs", 1, 86_400_000),
      };
      if (o.publicKey !== undefined) msg.publicKey = r.str("publicKey");
      if (o.features !== undefined) msg.features = r.list("features", MAX_FEATURES).map((f) => r.text(f));
      return msg;
    }
    case "heartbeat": {
      const msg: MessageOf<"heartbeat"> = { type: name, peerId: r.str("peerId") };
      if (o.up !== undefined) msg.up = r.int("up", 0, Number.MAX_SAFE_INTEGER);
      if (o.down !== undefined) msg.down = r.int("down", 0, Number.MAX_SAFE_INTEGER);
      if (o.partials !== undefined) {
        msg.partials = r.list("partials", MAX_HEARTBEAT_PARTIALS).map((e) => {
          const g = r.sub(e);
          return { fileId: checkId(name, g.o.fileId), bits: g.base64("bits", MAX_BITFIELD_BASE64) };
        });
      }
      return msg;
    }
    case "unregister":
      return { type: name, peerId: r.str("peerId") };
    case "announce": {
      const msg: MessageOf<"announce"> = {
        type: name,
        peerId: r.str("peerId"),
        add: r.list("add").map((m) => verifyManifest(m)),
        partial: r.list("partial").map((id) => checkId(name, id)),
        remove: r.list("remove").map((id) => checkId(name, id)),
      };
      if (o.groupAdd !== undefined) {
        msg.groupAdd = r.list("groupAdd").map((e) => {
          const g = r.sub(e);
          return { group: g.str("group"), manifest: verifyManifest(g.o.manifest) };
        });
      }
      if (o.groupRemove !== undefined) {
        msg.groupRemove = r.list("groupRemove").map((e) => {
          const g = r.sub(e);
          return { group: g.str("group"), fileId: checkId(name, g.o.fileId) };
        });
      }
      if (o.dropNames !== undefined) {
        msg.dropNames = r.list("dropNames").map((e) => {
          const g = r.sub(e);
          return { fileId: checkId(name, g.o.fileId), name: g.str("name") };
        });
      }
      return msg;
    }
    case "list_files": {
      const msg: MessageOf<"list_files"> = { type: name };
      if (o.query !== undefined) msg.query = r.str("query");
      return msg;
    }
    case "file_list":
      return { type: name, files: r.list("files").map((f) => fileSummary(name, f)) };
    case "get_peers":
    case "get_manifest":
      return { type: name, fileId: checkId(name, o.fileId) };
    case "peer_list":
      return { type: name, fileId: checkId(name, o.fileId), peers: r.list("peers").map((e) => peerEntry(name, e)) };
    case "manifest": {
      const fileId = checkId(name, o.fileId);
      return { type: name, fileId, manifest: verifyManifest(o.manifest, fileId) };
    }
    case "authorize":
      return { type: name, fileId: checkId(name, o.fileId), grant: r.str("grant") };
    case "create_user":
    case "login":
      return { type: name, name: r.str("name"), password: r.str("password") };
    case "session":
      return { type: name, user: r.str("user"), token: r.str("token"), expiresAt: r.int("expiresAt", 0, MAX_TIME) };
    case "logout":
    case "whoami":
    case "list_groups":
      return { type: name, token: r.str("token") };
    case "create_group":
    case "join_group":
    case "leave_group":
    case "list_requests":
    case "list_group_files":
      return { type: name, token: r.str("token"), group: r.str("group") };
    case "accept_request":
    case "remove_member":
      return { type: name, token: r.str("token"), group: r.str("group"), user: r.str("user") };
    case "group_list":
      return {
        type: name,
        groups: r.list("groups").map((e) => {
          const g = r.sub(e);
          const role = g.str("role");
          if (!ROLES.includes(role)) throw bad(name, `role ${JSON.stringify(role)} is unknown`);
          return {
            name: g.str("name"),
            owner: g.str("owner"),
            members: g.int("members", 0, 0xffffffff),
            role: role as GroupEntry["role"],
          };
        }),
      };
    case "user_list":
      return { type: name, users: r.list("users").map((u) => r.text(u)) };
    case "group_lookup":
    case "stop_sharing":
      return { type: name, token: r.str("token"), group: r.str("group"), file: r.str("file") };
    case "group_file":
      return {
        type: name,
        group: r.str("group"),
        fileId: checkId(name, o.fileId),
        manifest: verifyManifest(o.manifest, checkId(name, o.fileId)),
        peers: r.list("peers").map((e) => peerEntry(name, e)),
        grant: r.str("grant"),
        grantExpiresAt: r.int("grantExpiresAt", 0, MAX_TIME),
      };
    case "get_grant":
      return { type: name, token: r.str("token"), group: r.str("group"), fileId: checkId(name, o.fileId) };
    case "grant":
      return { type: name, grant: r.str("grant"), expiresAt: r.int("expiresAt", 0, MAX_TIME) };
    case "ctl_status":
    case "ctl_stop":
    case "ctl_list_downloads":
      return { type: name };
    case "ctl_state":
      return {
        type: name,
        user: r.str("user"),
        tracker: r.str("tracker"),
        address: r.str("address"),
        registered: r.bool("registered"),
        shares: r.list("shares").map((e) => {
          const g = r.sub(e);
          return {
            group: g.str("group"),
            fileId: checkId(name, g.o.fileId),
            name: g.str("name"),
            size: g.int("size", 0, Number.MAX_SAFE_INTEGER),
            path: g.str("path"),
          };
        }),
      };
    case "ctl_share":
      return { type: name, path: r.str("path"), group: r.str("group") };
    case "ctl_shared":
      return {
        type: name,
        group: r.str("group"),
        fileId: checkId(name, o.fileId),
        name: r.str("name"),
        size: r.int("size", 0, Number.MAX_SAFE_INTEGER),
      };
    case "ctl_unshare":
      return { type: name, group: r.str("group"), file: r.str("file") };
    case "ctl_session":
      return { type: name, token: r.str("token") };
    case "ctl_register_file":
      return { type: name, path: r.str("path") };
    case "ctl_file_registered":
      return {
        type: name,
        fileId: checkId(name, o.fileId),
        name: r.str("name"),
        size: r.int("size", 0, Number.MAX_SAFE_INTEGER),
        path: r.str("path"),
      };
    case "ctl_request_file": {
      const msg: MessageOf<"ctl_request_file"> = { type: name, fileId: checkId(name, o.fileId) };
      if (o.out !== undefined) msg.out = r.str("out");
      return msg;
    }
    case "ctl_file_requested":
      return {
        type: name,
        fileId: checkId(name, o.fileId),
        name: r.str("name"),
        size: r.int("size", 0, Number.MAX_SAFE_INTEGER),
        out: r.str("out"),
      };
    case "ctl_downloads":
      return { type: name, downloads: r.list("downloads", MAX_CTL_DOWNLOADS).map((e) => ctlDownload(name, r.sub(e))) };
    case "ctl_stop_download":
      return { type: name, file: r.str("file") };
    default:
      throw new ProtocolError(`Message ${name} is not a JSON message`, "malformed");
  }
}

/** Latest time accepted in a message (year 9999), Unix milliseconds. */
const MAX_TIME = 253_402_300_799_000;
const ROLES: string[] = ["owner", "member", "requested", "none"];
/** Standard base64 with padding, nothing else (no whitespace, no base64url). */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

class Reader {
  constructor(readonly name: string, readonly o: Record<string, unknown>) {}
  str(key: string): string {
    const v = this.o[key];
    if (typeof v !== "string" || v.length > MAX_TEXT) {
      throw bad(this.name, `field ${key} is not a string of at most ${MAX_TEXT} characters`);
    }
    return v;
  }
  int(key: string, min: number, max: number): number {
    const v = this.o[key];
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
      throw bad(this.name, `field ${key} is not an integer in [${min}, ${max}]`);
    }
    return v as number;
  }
  bool(key: string): boolean {
    const v = this.o[key];
    if (typeof v !== "boolean") throw bad(this.name, `field ${key} is not a boolean`);
    return v;
  }
  /** A reader for an object nested in a list. */
  sub(v: unknown): Reader {
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad(this.name, "a list entry is not an object");
    return new Reader(this.name, v as Record<string, unknown>);
  }
  /** A bare string list entry. */
  text(v: unknown): string {
    if (typeof v !== "string" || v.length > MAX_TEXT) {
      throw bad(this.name, `a list entry is not a string of at most ${MAX_TEXT} characters`);
    }
    return v;
  }
  list(key: string, max = MAX_LIST): unknown[] {
    const v = this.o[key];
    if (!Array.isArray(v) || v.length > max) {
      throw bad(this.name, `field ${key} is not a list of at most ${max}`);
    }
    return v;
  }
  /** Padded standard base64 of at most `maxChars` characters, decoded. */
  base64(key: string, maxChars: number): Uint8Array {
    const v = this.o[key];
    if (typeof v !== "string" || v.length > maxChars || !BASE64.test(v)) {
      throw bad(this.name, `field ${key} is not padded base64 of at most ${maxChars} characters`);
    }
    try {
      return Uint8Array.fromBase64(v, { lastChunkHandling: "strict" });
    } catch {
      throw bad(this.name, `field ${key} has non-zero padding bits`);
    }
  }
}

function fileSummary(name: string, v: unknown): FileSummary {
  if (typeof v !== "object" || v === null) throw bad(name, "a file entry is not an object");
  const r = new Reader(name, v as Record<string, unknown>);
  const f: FileSummary = {
    id: checkId(name, (v as Record<string, unknown>).id),
    name: r.str("name"),
    size: r.int("size", 0, Number.MAX_SAFE_INTEGER),
    chunkSize: r.int("chunkSize", 1, 0xffffffff),
    peers: r.int("peers", 0, 0xffffffff),
    partial: r.int("partial", 0, 0xffffffff),
  };
  if ((v as Record<string, unknown>).owner !== undefined) f.owner = r.str("owner");
  return f;
}

function ctlDownload(name: string, r: Reader): CtlDownload {
  const state = r.str("state");
  if (!DOWNLOAD_STATES.includes(state)) throw bad(name, `state ${JSON.stringify(state)} is unknown`);
  const d: CtlDownload = {
    number: r.int("number", 1, Number.MAX_SAFE_INTEGER),
    fileId: checkId(name, r.o.fileId),
    name: r.str("name"),
    size: r.int("size", 0, Number.MAX_SAFE_INTEGER),
    out: r.str("out"),
    state: state as CtlDownload["state"],
    doneBytes: r.int("doneBytes", 0, Number.MAX_SAFE_INTEGER),
    rate: r.int("rate", 0, Number.MAX_SAFE_INTEGER),
    peers: r.int("peers", 0, 0xffffffff),
    elapsedMs: r.int("elapsedMs", 0, Number.MAX_SAFE_INTEGER),
  };
  if (r.o.error !== undefined) d.error = r.str("error");
  return d;
}

function peerEntry(name: string, v: unknown): PeerEntry {
  if (typeof v !== "object" || v === null) throw bad(name, "a peer entry is not an object");
  const o = v as Record<string, unknown>;
  const r = new Reader(name, o);
  if (typeof o.complete !== "boolean") throw bad(name, "field complete is not a boolean");
  return { host: r.str("host"), port: r.int("port", 1, 65535), complete: o.complete };
}

function checkId(name: string, v: unknown): string {
  if (!isSha256Hex(v)) throw bad(name, "a file id is not 64 lowercase hex digits");
  return v;
}

function readFileId(p: Uint8Array, name: string, extra: number, exact = false): string {
  if (p.length < 32 + extra || (exact && p.length !== 32 + extra) || (extra === 0 && p.length !== 32)) {
    throw bad(name, `payload of ${p.length} bytes is the wrong length`);
  }
  return toHex(p.subarray(0, 32));
}

function u32At(p: Uint8Array, at: number): number {
  return new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(at);
}

function text(bytes: Uint8Array, name: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw bad(name, "text is not UTF-8");
  }
}

function bad(name: string, what: string): ProtocolError {
  return new ProtocolError(`Malformed ${name} message: ${what}`, "malformed");
}

/**
 * Throws UsageError when the other side would refuse `msg` as malformed (a
 * text past {@link MAX_TEXT}, say): a command line argument too long for
 * the protocol is the user's to fix, not a protocol failure of either side.
 * For requests made from the command line; what a program builds itself
 * needs no such check.
 */
export function checkSendable(msg: Message): void {
  try {
    const bytes = encodeMessage(msg);
    decodeMessage({ type: bytes[FRAME_HEADER_BYTES - 1]!, payload: bytes.subarray(FRAME_HEADER_BYTES) });
  } catch (err) {
    if (!(err instanceof ProtocolError) && !(err instanceof RangeError)) throw err;
    throw new UsageError(`Cannot send ${msg.type}: ${err.message.replace(/^Malformed \S+ message: /, "")}`);
  }
}

/** The HELLO every connection opens with. */
export function helloMessage(agent = "shoal/0.1"): MessageOf<"hello"> {
  return { type: "hello", protocol: PROTOCOL_NAME, version: PROTOCOL_VERSION, agent };
}
