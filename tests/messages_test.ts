/**
 * Codec tests on bytes for lib/messages.ts: every message round-trips,
 * golden hex pins every message's exact bytes (the same examples appear in
 * docs/PROTOCOL.md, and a test below checks that they agree), and bad
 * payloads fail with a ProtocolError naming the reason. Seeded property
 * tests spoil every sample at random: what decodes must be well-formed and
 * round-trip, and anything else must be a ProtocolError.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fromHex, toHex } from "../lib/bytes.ts";
import { ProtocolError, UsageError } from "../lib/errors.ts";
import { encodeFrame, type Frame, FrameDecoder } from "../lib/framing.ts";
import { publicKeyFrom, verifyGrant } from "../lib/grants.ts";
import { fileIdOf, type Manifest } from "../lib/manifest.ts";
import {
  allocPieceFrame,
  checkSendable,
  decodeMessage,
  encodeMessage,
  helloMessage,
  MAX_BITFIELD_BASE64,
  MAX_CTL_DOWNLOADS,
  MAX_FEATURES,
  MAX_HEARTBEAT_PARTIALS,
  MAX_JSON_DEPTH,
  MAX_TEXT,
  type Message,
  type MessageName,
  type MessageOf,
  PIECE_PREFIX_BYTES,
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
  WireType,
} from "../lib/messages.ts";
import { seeded } from "./helpers.ts";

// ------------------------------------------------------------------ fixtures

/** SHA-256 of the 5 bytes "hello": the only chunk of hello.txt. */
const HELLO_CHUNK = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
/** hello.txt: 5 bytes, one chunk at the smallest chunk size. */
const HELLO_TXT: Manifest = { name: "hello.txt", size: 5, chunkSize: 16384, chunks: [HELLO_CHUNK] };
/** fileIdOf(HELLO_TXT), pinned (manifest_test.ts pins the canonical bytes it hashes). */
const FILE_ID = "89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee";
const PEER_ID = "3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18";

/** A session token as LOGIN hands it out: 32 random bytes, base64url (43 characters). Fake. */
const TOKEN = "q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I";
/** A grant, abbreviated: a real one is `base64url(claims) "." base64url(signature)`, about 265 characters. */
const GRANT = "eyJ2Ijox...sig";
/** The Ed25519 public key of RFC 8032 section 7.1 TEST 1, as REGISTERED sends a key: raw 32 bytes, base64url. */
const TRACKER_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/** 2027-01-01T00:00:00Z, Unix ms: when the sample session ends (24 h after its login). */
const SESSION_EXPIRES = 1798761600000;
/** 2026-12-31T00:01:00Z, Unix ms: when the sample grant ends (60 s after it was issued). */
const GRANT_EXPIRES = 1798675260000;
/** Latest time a message may carry (9999-12-31T23:59:59Z), Unix ms. */
const MAX_TIME = 253402300799000;

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A three-chunk file (byte k is k mod 251), with real chunk hashes and id. */
const REPORT_CHUNK_SIZE = 16384;
const REPORT_BYTES = Uint8Array.from({ length: 2 * REPORT_CHUNK_SIZE + 7232 }, (_, k) => k % 251);
const REPORT: Manifest = {
  name: "report 2024 (final).pdf",
  size: REPORT_BYTES.length,
  chunkSize: REPORT_CHUNK_SIZE,
  chunks: [0, 1, 2].map((i) => sha256Hex(REPORT_BYTES.subarray(i * REPORT_CHUNK_SIZE, (i + 1) * REPORT_CHUNK_SIZE))),
};
const REPORT_ID = fileIdOf(REPORT);

/** Hex with whitespace allowed, to bytes. */
function hex(s: string): Uint8Array<ArrayBuffer> {
  return fromHex(s.replace(/\s+/g, ""));
}

/** Hex of the UTF-8 bytes of `text`, so goldens show the JSON (or text) they pin. */
function utf8(text: string): string {
  return toHex(new TextEncoder().encode(text));
}

/** One message of each type (and each optional-field variant), as the goldens show them. */
const SAMPLES: Record<string, Message> = {
  hello: { type: "hello", protocol: "shoal", version: 1, agent: "shoal/0.1" },
  error: {
    type: "error",
    code: "version_mismatch",
    message: "Protocol version mismatch: we speak 1, the other side speaks 2",
  },
  ok: { type: "ok" },
  register: { type: "register", port: 7001 },
  register_host: { type: "register", port: 7001, host: "192.0.2.10" },
  registered: { type: "registered", peerId: PEER_ID, heartbeatMs: 5000, expiryMs: 15000 },
  heartbeat: { type: "heartbeat", peerId: PEER_ID },
  // Optional transfer counters and a partial file's chunks (the report, chunks 0 and 2 of 3: 16384 + 7232 bytes).
  heartbeat_stats: {
    type: "heartbeat",
    peerId: PEER_ID,
    up: 1048576,
    down: 23616,
    partials: [{ fileId: REPORT_ID, bits: new Uint8Array([0xa0]) }],
  },
  unregister: { type: "unregister", peerId: PEER_ID },
  announce: { type: "announce", peerId: PEER_ID, add: [HELLO_TXT], partial: [], remove: [] },
  list_files: { type: "list_files" },
  list_files_query: { type: "list_files", query: "hello" },
  file_list: {
    type: "file_list",
    files: [{ id: FILE_ID, name: "hello.txt", size: 5, chunkSize: 16384, peers: 2, partial: 1 }],
  },
  get_peers: { type: "get_peers", fileId: FILE_ID },
  peer_list: {
    type: "peer_list",
    fileId: FILE_ID,
    peers: [{ host: "192.0.2.10", port: 7001, complete: true }, { host: "198.51.100.7", port: 7002, complete: false }],
  },
  get_manifest: { type: "get_manifest", fileId: FILE_ID },
  manifest: { type: "manifest", fileId: FILE_ID, manifest: HELLO_TXT },
  interested: { type: "interested", fileId: FILE_ID },
  bitfield: { type: "bitfield", fileId: FILE_ID, count: 1, bits: new Uint8Array([0x80]) },
  have: { type: "have", fileId: FILE_ID, index: 0 },
  request: { type: "request", fileId: FILE_ID, index: 0 },
  piece: { type: "piece", fileId: FILE_ID, index: 0, data: new TextEncoder().encode("hello") },
  cancel: { type: "cancel", fileId: FILE_ID, index: 0 },
  reject: { type: "reject", fileId: FILE_ID, index: 258, reason: "no such chunk" },
  // Accounts, groups and grants.
  register_token: { type: "register", port: 7001, token: TOKEN },
  registered_key: {
    type: "registered",
    peerId: PEER_ID,
    heartbeatMs: 5000,
    expiryMs: 15000,
    publicKey: TRACKER_KEY,
  },
  // Optional parts of version 1 a tracker lists in REGISTERED, and a name dropped from a file served under two.
  registered_features: {
    type: "registered",
    peerId: PEER_ID,
    heartbeatMs: 5000,
    expiryMs: 15000,
    features: ["dropNames"],
  },
  announce_drop_names: {
    type: "announce",
    peerId: PEER_ID,
    add: [],
    partial: [],
    remove: [],
    dropNames: [{ fileId: FILE_ID, name: "greeting.txt" }],
  },
  announce_groups: {
    type: "announce",
    peerId: PEER_ID,
    add: [],
    partial: [],
    remove: [],
    groupAdd: [{ group: "team", manifest: HELLO_TXT }],
    groupRemove: [{ group: "drafts", fileId: FILE_ID }],
  },
  file_list_owner: {
    type: "file_list",
    files: [{ id: FILE_ID, name: "hello.txt", size: 5, chunkSize: 16384, peers: 1, partial: 0, owner: "alice" }],
  },
  authorize: { type: "authorize", fileId: FILE_ID, grant: GRANT },
  create_user: { type: "create_user", name: "alice", password: "correct horse" },
  login: { type: "login", name: "alice", password: "correct horse" },
  session: { type: "session", user: "alice", token: TOKEN, expiresAt: SESSION_EXPIRES },
  logout: { type: "logout", token: TOKEN },
  whoami: { type: "whoami", token: TOKEN },
  create_group: { type: "create_group", token: TOKEN, group: "team" },
  join_group: { type: "join_group", token: TOKEN, group: "team" },
  leave_group: { type: "leave_group", token: TOKEN, group: "team" },
  accept_request: { type: "accept_request", token: TOKEN, group: "team", user: "bob" },
  remove_member: { type: "remove_member", token: TOKEN, group: "team", user: "bob" },
  list_groups: { type: "list_groups", token: TOKEN },
  group_list: {
    type: "group_list",
    groups: [
      { name: "lab", owner: "carol", members: 4, role: "requested" },
      { name: "team", owner: "alice", members: 2, role: "owner" },
    ],
  },
  list_requests: { type: "list_requests", token: TOKEN, group: "team" },
  user_list: { type: "user_list", users: ["bob", "dave"] },
  list_group_files: { type: "list_group_files", token: TOKEN, group: "team" },
  group_lookup: { type: "group_lookup", token: TOKEN, group: "team", file: "hello.txt" },
  group_file: {
    type: "group_file",
    group: "team",
    fileId: FILE_ID,
    manifest: HELLO_TXT,
    peers: [{ host: "192.0.2.10", port: 7001, complete: true }],
    grant: GRANT,
    grantExpiresAt: GRANT_EXPIRES,
  },
  get_grant: { type: "get_grant", token: TOKEN, group: "team", fileId: FILE_ID },
  grant: { type: "grant", grant: GRANT, expiresAt: GRANT_EXPIRES },
  stop_sharing: { type: "stop_sharing", token: TOKEN, group: "team", file: "hello.txt" },
  // The local control channel (client to its own background peer, over a Unix socket).
  ctl_status: { type: "ctl_status" },
  ctl_state: {
    type: "ctl_state",
    user: "alice",
    tracker: "192.0.2.1:7070",
    address: "0.0.0.0:7001",
    registered: true,
    shares: [{ group: "team", fileId: FILE_ID, name: "hello.txt", size: 5, path: "/home/alice/hello.txt" }],
  },
  ctl_share: { type: "ctl_share", path: "/home/alice/hello.txt", group: "team" },
  ctl_shared: { type: "ctl_shared", group: "team", fileId: FILE_ID, name: "hello.txt", size: 5 },
  ctl_unshare: { type: "ctl_unshare", group: "team", file: "hello.txt" },
  ctl_stop: { type: "ctl_stop" },
  ctl_session: { type: "ctl_session", token: TOKEN },
  // The control channel of a `peer.ts --shared` peer.
  ctl_register_file: { type: "ctl_register_file", path: "/home/alice/hello.txt" },
  ctl_file_registered: {
    type: "ctl_file_registered",
    fileId: FILE_ID,
    name: "hello.txt",
    size: 5,
    path: "/home/alice/hello.txt",
  },
  ctl_request_file: { type: "ctl_request_file", fileId: FILE_ID, out: "/home/alice/downloads/hello.txt" },
  ctl_file_requested: {
    type: "ctl_file_requested",
    fileId: FILE_ID,
    name: "hello.txt",
    size: 5,
    out: "/home/alice/downloads/hello.txt",
  },
  ctl_list_downloads: { type: "ctl_list_downloads" },
  ctl_downloads: {
    type: "ctl_downloads",
    downloads: [{
      number: 1,
      fileId: FILE_ID,
      name: "hello.txt",
      size: 5,
      out: "/home/alice/downloads/hello.txt",
      state: "done",
      doneBytes: 5,
      rate: 50,
      peers: 0,
      elapsedMs: 100,
    }],
  },
  ctl_stop_download: { type: "ctl_stop_download", file: "#1" },
};

/** The file id of hello.txt as it appears on the wire: 32 raw bytes. */
const ID_BYTES = "89284bebbb2a605e9d292f79a2716a0a" + "50b35197c27b982f9521fca6b585d1ee";

/**
 * Exact bytes of each sample: `<length u32 BE><type u8><payload>`. JSON
 * payloads are written as their text; binary payloads field by field.
 */
const GOLDEN: Record<string, string> = {
  hello: "00000034" + "01" + utf8('{"protocol":"shoal","version":1,"agent":"shoal/0.1"}'),
  error: "00000066" + "02" +
    utf8('{"code":"version_mismatch","message":"Protocol version mismatch: we speak 1, the other side speaks 2"}'),
  ok: "00000002" + "03" + utf8("{}"),
  register: "0000000d" + "10" + utf8('{"port":7001}'),
  register_host: "00000021" + "10" + utf8('{"port":7001,"host":"192.0.2.10"}'),
  registered: "00000055" + "11" +
    utf8('{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","heartbeatMs":5000,"expiryMs":15000}'),
  heartbeat: "00000031" + "12" + utf8('{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18"}'),
  heartbeat_stats: "000000b4" + "12" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","up":1048576,"down":23616,"partials":[{"fileId":' +
        '"26261599c08078b8ad028e112748e3e8296f6a6464d42dc300e077dd81c4dd05","bits":"oA=="}]}',
    ),
  unregister: "00000031" + "13" + utf8('{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18"}'),
  announce: "000000d0" + "14" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","add":[{"name":"hello.txt","size":5,"chunkSize":16384,' +
        '"chunks":["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]}],"partial":[],"remove":[]}',
    ),
  list_files: "00000002" + "20" + utf8("{}"),
  list_files_query: "00000011" + "20" + utf8('{"query":"hello"}'),
  file_list: "00000099" + "21" +
    utf8(
      '{"files":[{"id":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5,"chunkSize":16384,"peers":2,"partial":1}]}',
    ),
  get_peers: "0000004d" + "22" + utf8('{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee"}'),
  peer_list: "000000be" + "23" +
    utf8(
      '{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee","peers":[' +
        '{"host":"192.0.2.10","port":7001,"complete":true},{"host":"198.51.100.7","port":7002,"complete":false}]}',
    ),
  get_manifest: "0000004d" + "24" +
    utf8('{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee"}'),
  manifest: "000000d6" + "25" +
    utf8(
      '{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee","manifest":{"name":"hello.txt",' +
        '"size":5,"chunkSize":16384,"chunks":["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]}}',
    ),
  interested: "00000020" + // length = 32
    "30" + // type INTERESTED
    ID_BYTES, // file id
  bitfield: "00000025" + // length = 37
    "31" + // type BITFIELD
    ID_BYTES + // file id
    "00000001" + // count = 1 chunk
    "80", // bits: 1000 0000, chunk 0 present, 7 spare bits zero
  have: "00000024" + // length = 36
    "32" + // type HAVE
    ID_BYTES + // file id
    "00000000", // index = 0
  request: "00000024" + // length = 36
    "33" + // type REQUEST
    ID_BYTES + // file id
    "00000000", // index = 0
  piece: "00000029" + // length = 41
    "34" + // type PIECE
    ID_BYTES + // file id
    "00000000" + // index = 0
    "68656c6c6f", // data: "hello"
  cancel: "00000024" + // length = 36
    "35" + // type CANCEL
    ID_BYTES + // file id
    "00000000", // index = 0
  reject: "00000031" + // length = 49
    "36" + // type REJECT
    ID_BYTES + // file id
    "00000102" + // index = 258
    utf8("no such chunk"), // reason: the raw UTF-8 text "no such chunk"
  // Accounts, groups and grants.
  register_token: "00000043" + "10" + utf8('{"port":7001,"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I"}'),
  registered_key: "0000008f" + "11" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","heartbeatMs":5000,"expiryMs":15000,' +
        '"publicKey":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}',
    ),
  registered_features: "0000006e" + "11" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","heartbeatMs":5000,"expiryMs":15000,' +
        '"features":["dropNames"]}',
    ),
  announce_drop_names: "000000c5" + "14" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","add":[],"partial":[],"remove":[],' +
        '"dropNames":[{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"greeting.txt"}]}',
    ),
  announce_groups: "00000169" + "14" +
    utf8(
      '{"peerId":"3f1c9a52-7b0e-4d8a-9c61-2e5b7a0d4f18","add":[],"partial":[],"remove":[],' +
        '"groupAdd":[{"group":"team","manifest":{"name":"hello.txt","size":5,"chunkSize":16384,' +
        '"chunks":["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]}}],' +
        '"groupRemove":[{"group":"drafts",' +
        '"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee"}]}',
    ),
  file_list_owner: "000000a9" + "21" +
    utf8(
      '{"files":[{"id":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5,"chunkSize":16384,"peers":1,"partial":0,"owner":"alice"}]}',
    ),
  authorize: "00000066" + "37" +
    utf8('{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee","grant":"eyJ2Ijox...sig"}'),
  create_user: "0000002b" + "40" + utf8('{"name":"alice","password":"correct horse"}'),
  login: "0000002b" + "41" + utf8('{"name":"alice","password":"correct horse"}'),
  session: "00000060" + "42" +
    utf8('{"user":"alice","token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","expiresAt":1798761600000}'),
  logout: "00000037" + "43" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I"}'),
  whoami: "00000037" + "44" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I"}'),
  create_group: "00000046" + "48" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team"}'),
  join_group: "00000046" + "49" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team"}'),
  leave_group: "00000046" + "4a" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team"}'),
  accept_request: "00000053" + "4b" +
    utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team","user":"bob"}'),
  remove_member: "00000053" + "4c" +
    utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team","user":"bob"}'),
  list_groups: "00000037" + "4d" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I"}'),
  group_list: "00000085" + "4e" +
    utf8(
      '{"groups":[{"name":"lab","owner":"carol","members":4,"role":"requested"},{"name":"team",' +
        '"owner":"alice","members":2,"role":"owner"}]}',
    ),
  list_requests: "00000046" + "4f" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team"}'),
  user_list: "00000018" + "50" + utf8('{"users":["bob","dave"]}'),
  list_group_files: "00000046" + "51" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team"}'),
  group_lookup: "00000059" + "52" +
    utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team","file":"hello.txt"}'),
  group_file: "00000159" + "53" +
    utf8(
      '{"group":"team","fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"manifest":{"name":"hello.txt","size":5,"chunkSize":16384,' +
        '"chunks":["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]},' +
        '"peers":[{"host":"192.0.2.10","port":7001,"complete":true}],"grant":"eyJ2Ijox...sig",' +
        '"grantExpiresAt":1798675260000}',
    ),
  get_grant: "00000092" + "54" +
    utf8(
      '{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team",' +
        '"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee"}',
    ),
  grant: "00000034" + "55" + utf8('{"grant":"eyJ2Ijox...sig","expiresAt":1798675260000}'),
  stop_sharing: "00000059" + "56" +
    utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I","group":"team","file":"hello.txt"}'),
  // The local control channel.
  ctl_status: "00000002" + "60" + utf8("{}"),
  ctl_state: "000000f9" + "61" +
    utf8(
      '{"user":"alice","tracker":"192.0.2.1:7070","address":"0.0.0.0:7001","registered":true,' +
        '"shares":[{"group":"team",' +
        '"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee","name":"hello.txt",' +
        '"size":5,"path":"/home/alice/hello.txt"}]}',
    ),
  ctl_share: "0000002f" + "62" + utf8('{"path":"/home/alice/hello.txt","group":"team"}'),
  ctl_shared: "00000078" + "63" +
    utf8(
      '{"group":"team","fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5}',
    ),
  ctl_unshare: "00000023" + "64" + utf8('{"group":"team","file":"hello.txt"}'),
  ctl_stop: "00000002" + "65" + utf8("{}"),
  ctl_session: "00000037" + "66" + utf8('{"token":"q6Yc1xV3bN8dK0pZ7rT2mW9sH4jL5fA6gE1uC8yQw0I"}'),
  ctl_register_file: "00000020" + "67" + utf8('{"path":"/home/alice/hello.txt"}'),
  ctl_file_registered: "00000088" + "68" +
    utf8(
      '{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5,"path":"/home/alice/hello.txt"}',
    ),
  ctl_request_file: "00000075" + "69" +
    utf8(
      '{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"out":"/home/alice/downloads/hello.txt"}',
    ),
  ctl_file_requested: "00000091" + "6a" +
    utf8(
      '{"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5,"out":"/home/alice/downloads/hello.txt"}',
    ),
  ctl_list_downloads: "00000002" + "6b" + utf8("{}"),
  ctl_downloads: "000000ed" + "6c" +
    utf8(
      '{"downloads":[{"number":1,"fileId":"89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee",' +
        '"name":"hello.txt","size":5,"out":"/home/alice/downloads/hello.txt","state":"done","doneBytes":5,' +
        '"rate":50,"peers":0,"elapsedMs":100}]}',
    ),
  ctl_stop_download: "0000000d" + "6d" + utf8('{"file":"#1"}'),
};

/** More round-trip cases: bigger, odder, still valid. */
const EXTRA: Message[] = [
  { type: "hello", protocol: "shoal", version: 65535, agent: "shoal-rs/0.3 (linux; ü)" },
  { type: "error", code: "not_found", message: `No file with id ${REPORT_ID}` },
  { type: "register", port: 65535, host: "2001:db8::7" },
  { type: "register", port: 1 },
  { type: "announce", peerId: PEER_ID, add: [HELLO_TXT, REPORT], partial: [REPORT_ID], remove: [FILE_ID] },
  { type: "announce", peerId: PEER_ID, add: [], partial: [], remove: [] },
  { type: "list_files", query: "" },
  { type: "file_list", files: [] },
  {
    type: "file_list",
    files: [{ id: REPORT_ID, name: REPORT.name, size: REPORT.size, chunkSize: REPORT.chunkSize, peers: 0, partial: 3 }],
  },
  { type: "peer_list", fileId: REPORT_ID, peers: [] },
  { type: "manifest", fileId: REPORT_ID, manifest: REPORT },
  { type: "manifest", fileId: fileIdOf({ ...REPORT, name: "x" }), manifest: { ...REPORT, name: "x" } },
  { type: "bitfield", fileId: REPORT_ID, count: 3, bits: new Uint8Array([0xa0]) },
  { type: "bitfield", fileId: REPORT_ID, count: 10, bits: new Uint8Array([0xa0, 0x40]) },
  { type: "bitfield", fileId: REPORT_ID, count: 0, bits: new Uint8Array(0) },
  { type: "have", fileId: REPORT_ID, index: 2 },
  { type: "request", fileId: REPORT_ID, index: 0xffffffff },
  { type: "cancel", fileId: REPORT_ID, index: 0x01020304 },
  { type: "piece", fileId: REPORT_ID, index: 1, data: REPORT_BYTES.subarray(REPORT_CHUNK_SIZE, 2 * REPORT_CHUNK_SIZE) },
  { type: "piece", fileId: REPORT_ID, index: 7, data: new Uint8Array(0) },
  { type: "reject", fileId: REPORT_ID, index: 1, reason: "chunk not here yet ✋" },
  { type: "reject", fileId: REPORT_ID, index: 1, reason: "" },
  { type: "register", port: 7001, host: "192.0.2.10", token: TOKEN },
  {
    type: "announce",
    peerId: PEER_ID,
    add: [],
    partial: [],
    remove: [],
    groupAdd: [{ group: "team", manifest: REPORT }, { group: "lab", manifest: HELLO_TXT }],
  },
  { type: "announce", peerId: PEER_ID, add: [], partial: [], remove: [], groupRemove: [] },
  { type: "session", user: "alice", token: TOKEN, expiresAt: 0 },
  { type: "grant", grant: GRANT, expiresAt: MAX_TIME },
  { type: "group_list", groups: [] },
  {
    type: "group_list",
    groups: [
      { name: "a", owner: "b", members: 0, role: "none" },
      { name: "c", owner: "d", members: 0xffffffff, role: "member" },
    ],
  },
  { type: "user_list", users: [] },
  {
    type: "group_file",
    group: "lab",
    fileId: REPORT_ID,
    manifest: REPORT,
    peers: [],
    grant: GRANT,
    grantExpiresAt: GRANT_EXPIRES,
  },
  { type: "ctl_state", user: "alice", tracker: "[2001:db8::1]:7070", address: "", registered: false, shares: [] },
  { type: "ctl_shared", group: "team", fileId: REPORT_ID, name: REPORT.name, size: REPORT.size },
  { type: "ctl_request_file", fileId: REPORT_ID },
  { type: "ctl_downloads", downloads: [] },
  {
    type: "ctl_downloads",
    downloads: [
      {
        number: 2,
        fileId: REPORT_ID,
        name: REPORT.name,
        size: REPORT.size,
        out: "/tmp/ü/report.pdf",
        state: "stopped",
        doneBytes: 1,
        rate: 0,
        peers: 0,
        elapsedMs: 2500,
        error: "progress saved; download it again to resume",
      },
      {
        number: 3,
        fileId: FILE_ID,
        name: "hello.txt",
        size: 5,
        out: "/tmp/hello.txt",
        state: "downloading",
        doneBytes: 0,
        rate: 1048576,
        peers: 3,
        elapsedMs: 0,
      },
    ],
  },
];

/** Messages as plain values: byte arrays become hex, so deepEqual compares content. */
function plain(msg: Message): Record<string, unknown> {
  return Object.fromEntries(Object.entries(msg).map(([k, v]) => [k, v instanceof Uint8Array ? toHex(v) : v]));
}

/** Encodes, frames, decodes: the path every message takes. */
function roundTrip(msg: Message): Message {
  const d = new FrameDecoder();
  const frames = d.push(encodeMessage(msg));
  assert.equal(frames.length, 1);
  d.finish();
  return decodeMessage(frames[0]!);
}

function frame(type: number, payload: Uint8Array | string): Frame {
  const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  return { type, payload: Uint8Array.from(bytes) };
}

/** Asserts `fn` throws a ProtocolError with `code` (and not some other error). */
function assertProtocolError(fn: () => unknown, code: string, what: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `${what}: threw ${String(e)}, not a ProtocolError`);
    assert.equal(e.code, code, `${what}: ${e.message}`);
    return true;
  }, what);
}

// ------------------------------------------------------------------ the table

Deno.test("WireType pins every message id (ids are never renumbered)", () => {
  assert.deepEqual({ ...WireType }, {
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
  });
  assert.equal(new Set(Object.values(WireType)).size, Object.keys(WireType).length, "no id is used twice");
});

Deno.test("the fixtures cover every message type", () => {
  const sampled = new Set(Object.values(SAMPLES).map((m) => m.type));
  for (const name of Object.keys(WireType) as MessageName[]) {
    assert.ok(sampled.has(name), `no sample of ${name}`);
  }
  assert.deepEqual(Object.keys(GOLDEN).sort(), Object.keys(SAMPLES).sort());
  assert.equal(fileIdOf(HELLO_TXT), FILE_ID);
  assert.equal(sha256Hex(new TextEncoder().encode("hello")), HELLO_CHUNK);
});

Deno.test("helloMessage() speaks protocol shoal version 1", () => {
  assert.equal(PROTOCOL_NAME, "shoal");
  assert.equal(PROTOCOL_VERSION, 1);
  assert.deepEqual(helloMessage("shoal/0.1"), SAMPLES.hello);
  assert.equal(toHex(encodeMessage(helloMessage("shoal/0.1"))), GOLDEN.hello);
});

// ------------------------------------------------------------------ round trips

Deno.test("every sample message round-trips through encodeMessage, FrameDecoder and decodeMessage", () => {
  for (const [key, msg] of Object.entries(SAMPLES)) {
    assert.deepEqual(plain(roundTrip(msg)), plain(msg), key);
  }
});

Deno.test("bigger and edge-case messages round-trip too", () => {
  for (const msg of EXTRA) {
    assert.deepEqual(plain(roundTrip(msg)), plain(msg), msg.type);
  }
});

Deno.test("optional fields stay absent when not sent", () => {
  const reg = roundTrip({ type: "register", port: 7001 });
  assert.ok(!("host" in reg), "register without host decodes without a host key");
  const list = roundTrip({ type: "list_files" });
  assert.ok(!("query" in list));
  assert.ok(!("token" in reg), "register without token decodes without a token key");
  const registered = roundTrip(SAMPLES.registered!);
  assert.ok(!("publicKey" in registered), "a tracker without accounts sends no publicKey");
  assert.ok(!("features" in registered), "an older tracker's REGISTERED");
  const announce = roundTrip(SAMPLES.announce!);
  assert.ok(!("groupAdd" in announce) && !("groupRemove" in announce) && !("dropNames" in announce));
  const heartbeat = roundTrip(SAMPLES.heartbeat!);
  assert.ok(!("up" in heartbeat) && !("down" in heartbeat) && !("partials" in heartbeat), "an old peer's heartbeat");
  const files = roundTrip(SAMPLES.file_list!) as Extract<Message, { type: "file_list" }>;
  assert.ok(!("owner" in files.files[0]!), "a public catalog entry has no owner");
  const request = roundTrip({ type: "ctl_request_file", fileId: FILE_ID });
  assert.ok(!("out" in request), "a request-file without --out decodes without an out key");
});

Deno.test("a stream of every message, cut into 7-byte slices, decodes in order", () => {
  const all = [...Object.values(SAMPLES), ...EXTRA];
  const stream = new Uint8Array(all.reduce((n, m) => n + encodeMessage(m).length, 0));
  let at = 0;
  for (const m of all) {
    const bytes = encodeMessage(m);
    stream.set(bytes, at);
    at += bytes.length;
  }
  const d = new FrameDecoder();
  const got: Message[] = [];
  for (let i = 0; i < stream.length; i += 7) got.push(...d.push(stream.subarray(i, i + 7)).map(decodeMessage));
  d.finish();
  assert.deepEqual(got.map(plain), all.map(plain));
});

Deno.test("checkSendable: what the other side would refuse as malformed is a usage error here, before sending", () => {
  checkSendable({ type: "list_files", query: "a".repeat(MAX_TEXT) });
  checkSendable(SAMPLES.announce_drop_names!);
  const long = "a".repeat(MAX_TEXT + 1);
  for (
    const msg of [{ type: "list_files", query: long }, { type: "create_user", name: long, password: "pw" }] as const
  ) {
    assert.throws(
      () => checkSendable(msg),
      (e: unknown) =>
        e instanceof UsageError && e.exitCode === 2 &&
        e.message === `Cannot send ${msg.type}: field ${msg.type === "list_files" ? "query" : "name"} is not a ` +
            `string of at most ${MAX_TEXT} characters`,
    );
  }
});

Deno.test("decoders accept JSON keys in any order and ignore unknown keys", () => {
  const reordered = decodeMessage(frame(0x01, '{"agent":"x/1","version":1,"protocol":"shoal"}'));
  assert.deepEqual(reordered, { type: "hello", protocol: "shoal", version: 1, agent: "x/1" });
  const extra = decodeMessage(frame(0x11, '{"expiryMs":9,"future":[1,2],"peerId":"p","heartbeatMs":3}'));
  assert.deepEqual(extra, { type: "registered", peerId: "p", heartbeatMs: 3, expiryMs: 9 });
  const manifest = decodeMessage(frame(
    0x25,
    `{"manifest":{"chunks":["${HELLO_CHUNK}"],"chunkSize":16384,"size":5,"name":"h","mtime":1},"fileId":"${FILE_ID}"}`,
  ));
  assert.deepEqual(manifest, { type: "manifest", fileId: FILE_ID, manifest: { ...HELLO_TXT, name: "h" } });
});

// ------------------------------------------------------------------ goldens

Deno.test("golden: every message encodes to exactly the pinned bytes", () => {
  for (const [key, msg] of Object.entries(SAMPLES)) {
    assert.equal(toHex(encodeMessage(msg)), GOLDEN[key], key);
  }
});

Deno.test("golden: the pinned bytes decode to the sample messages", () => {
  for (const [key, golden] of Object.entries(GOLDEN)) {
    const frames = new FrameDecoder().push(hex(golden));
    assert.equal(frames.length, 1, key);
    assert.deepEqual(plain(decodeMessage(frames[0]!)), plain(SAMPLES[key]!), key);
  }
});

Deno.test("golden: HELLO spelled out byte by byte", () => {
  const bytes = "00 00 00 34" + // length = 52 payload bytes
    "01" + // type = 0x01 HELLO
    "7b 22 70 72 6f 74 6f 63 6f 6c 22 3a 22 73 68 6f 61 6c 22 2c" + // {"protocol":"shoal",
    "22 76 65 72 73 69 6f 6e 22 3a 31 2c" + // "version":1,
    "22 61 67 65 6e 74 22 3a 22 73 68 6f 61 6c 2f 30 2e 31 22 7d"; // "agent":"shoal/0.1"}
  assert.equal(toHex(encodeMessage(SAMPLES.hello!)), bytes.replace(/\s+/g, ""));
});

Deno.test("golden: REQUEST for chunk 258 spelled out byte by byte", () => {
  const bytes = "00 00 00 24" + // length = 36: 32-byte file id + u32 index
    "33" + // type = 0x33 REQUEST
    "89 28 4b eb bb 2a 60 5e 9d 29 2f 79 a2 71 6a 0a" + // file id, bytes 0-15
    "50 b3 51 97 c2 7b 98 2f 95 21 fc a6 b5 85 d1 ee" + // file id, bytes 16-31
    "00 00 01 02"; // index = 258, u32 big-endian
  assert.equal(toHex(encodeMessage({ type: "request", fileId: FILE_ID, index: 258 })), bytes.replace(/\s+/g, ""));
});

Deno.test("golden: allocPieceFrame() builds the same bytes as encodeMessage()", () => {
  assert.equal(PIECE_PREFIX_BYTES, 5 + 32 + 4);
  const { frame: bytes, data } = allocPieceFrame(FILE_ID, 0, 5);
  assert.equal(data.length, 5);
  data.set(new TextEncoder().encode("hello"));
  assert.equal(toHex(bytes), GOLDEN.piece);
  assert.equal(data.buffer, bytes.buffer, "data is a view into the frame (no copy)");
});

/** One CTL_DOWNLOADS entry as JSON, valid unless `change` spoils it (undefined drops a key). */
function ctlDownloadJson(change: Record<string, unknown>): string {
  return JSON.stringify({ ...(SAMPLES.ctl_downloads as MessageOf<"ctl_downloads">).downloads[0], ...change });
}

/** `<!-- golden: NAME -->` then a ```text block; hex is what precedes `|` on each line. */
function docGoldens(doc: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of doc.matchAll(/<!-- golden: ([a-z0-9_]+) -->\s*```text\n([\s\S]*?)```/g)) {
    const hexText = m[2]!.split("\n").map((line) => line.split("|")[0]!.replace(/\s+/g, "")).join("");
    assert.ok(!out.has(m[1]!), `docs/PROTOCOL.md has two goldens named ${m[1]}`);
    out.set(m[1]!, hexText);
  }
  return out;
}

Deno.test("golden: docs/PROTOCOL.md shows exactly these bytes", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const shown = docGoldens(doc);
  // The doc's worked REQUEST example uses index 258, to show the byte order.
  const expected = new Map(Object.entries(GOLDEN));
  expected.set("request_258", toHex(encodeMessage({ type: "request", fileId: FILE_ID, index: 258 })));
  assert.deepEqual(
    [...shown.keys()].sort(),
    [...expected.keys()].sort(),
    "the doc shows one golden per pinned example",
  );
  for (const [key, hexText] of shown) assert.equal(hexText, expected.get(key), `docs/PROTOCOL.md golden ${key}`);
  assert.ok(doc.includes(FILE_ID), "the doc names the example file id");
});

Deno.test("docs/PROTOCOL.md: the worked grant example verifies with the example tracker key", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const m = doc.match(/<!-- grant: example -->\s*```text\n([^\n]+)\n```/);
  assert.ok(m, "the doc shows a worked grant");
  const grant = m[1]!.trim();
  const claims = { v: 1, user: "alice", group: "team", fileId: FILE_ID, exp: GRANT_EXPIRES };
  assert.deepEqual(verifyGrant(publicKeyFrom(TRACKER_KEY), grant, FILE_ID, GRANT_EXPIRES - 1), claims);
  // The first part is the claims JSON exactly as the doc shows it, in base64url.
  const base64 = grant.split(".")[0]!.replaceAll("-", "+").replaceAll("_", "/");
  const text = new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)));
  assert.equal(text, JSON.stringify(claims));
  assert.ok(doc.includes(text), "the doc shows the claims as JSON");
  assert.throws(() => verifyGrant(publicKeyFrom(TRACKER_KEY), grant, FILE_ID, GRANT_EXPIRES), /expired/);
  assert.throws(() => verifyGrant(publicKeyFrom(TRACKER_KEY), grant, REPORT_ID, GRANT_EXPIRES - 1), /not/);
});

// ------------------------------------------------------------------ malformed input

Deno.test("unknown type ids are rejected with code unknown_type", () => {
  const known = new Set<number>(Object.values(WireType));
  let unknown = 0;
  for (let type = 0; type <= 0xff; type++) {
    if (known.has(type)) continue;
    unknown++;
    assertProtocolError(() => decodeMessage(frame(type, "{}")), "unknown_type", `type 0x${type.toString(16)}`);
  }
  assert.equal(unknown, 256 - 56);
  assert.throws(() => decodeMessage(frame(0xfe, "")), /0xfe/);
  assert.throws(() => decodeMessage(frame(0x00, "")), /0x00/);
});

Deno.test("JSON messages reject payloads that are not UTF-8 JSON objects", () => {
  const cases: [string, number, Uint8Array | string][] = [
    ["truncated JSON", 0x01, '{"protocol":"shoal",'],
    ["empty payload", 0x03, ""],
    ["not UTF-8", 0x01, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ["array", 0x03, "[]"],
    ["null", 0x03, "null"],
    ["number", 0x12, "42"],
    ["string", 0x12, '"peerId"'],
    ["boolean", 0x20, "true"],
    ["two values", 0x03, "{}{}"],
  ];
  for (const [what, type, payload] of cases) {
    assertProtocolError(() => decodeMessage(frame(type, payload)), "malformed", what);
  }
});

Deno.test("JSON messages reject fields of the wrong type or out of bounds", () => {
  const long = "a".repeat(MAX_TEXT + 1);
  const cases: [string, number, string][] = [
    ["hello version as string", 0x01, '{"protocol":"shoal","version":"1","agent":"a"}'],
    ["hello version fraction", 0x01, '{"protocol":"shoal","version":1.5,"agent":"a"}'],
    ["hello version negative", 0x01, '{"protocol":"shoal","version":-1,"agent":"a"}'],
    ["hello version above u16", 0x01, '{"protocol":"shoal","version":65536,"agent":"a"}'],
    ["hello without agent", 0x01, '{"protocol":"shoal","version":1}'],
    ["hello protocol as number", 0x01, '{"protocol":1,"version":1,"agent":"a"}'],
    ["hello oversize agent", 0x01, `{"protocol":"shoal","version":1,"agent":"${long}"}`],
    ["error code missing", 0x02, '{"message":"m"}'],
    ["error oversize message", 0x02, `{"code":"c","message":"${long}"}`],
    ["register port 0", 0x10, '{"port":0}'],
    ["register port 65536", 0x10, '{"port":65536}'],
    ["register port as string", 0x10, '{"port":"7001"}'],
    ["register host as number", 0x10, '{"port":7001,"host":5}'],
    ["register host null", 0x10, '{"port":7001,"host":null}'],
    ["registered heartbeatMs 0", 0x11, '{"peerId":"p","heartbeatMs":0,"expiryMs":1}'],
    ["registered expiryMs over a day", 0x11, '{"peerId":"p","heartbeatMs":1,"expiryMs":86400001}'],
    ["registered features not a list", 0x11, '{"peerId":"p","heartbeatMs":1,"expiryMs":1,"features":"dropNames"}'],
    ["registered feature a number", 0x11, '{"peerId":"p","heartbeatMs":1,"expiryMs":1,"features":[1]}'],
    [
      "registered with too many features",
      0x11,
      `{"peerId":"p","heartbeatMs":1,"expiryMs":1,"features":${JSON.stringify(Array(MAX_FEATURES + 1).fill("f"))}}`,
    ],
    [
      "announce dropNames with a bad id",
      0x14,
      '{"peerId":"p","add":[],"partial":[],"remove":[],"dropNames":[{"fileId":"00","name":"a"}]}',
    ],
    [
      "announce dropNames without a name",
      0x14,
      `{"peerId":"p","add":[],"partial":[],"remove":[],"dropNames":[{"fileId":"${FILE_ID}"}]}`,
    ],
    ["heartbeat peerId number", 0x12, '{"peerId":7}'],
    ["unregister oversize peerId", 0x13, `{"peerId":"${long}"}`],
    ["announce add not a list", 0x14, '{"peerId":"p","add":{},"partial":[],"remove":[]}'],
    ["announce without partial", 0x14, '{"peerId":"p","add":[],"remove":[]}'],
    ["announce partial with a bad id", 0x14, '{"peerId":"p","add":[],"partial":["00"],"remove":[]}'],
    [
      "announce remove with an uppercase id",
      0x14,
      `{"peerId":"p","add":[],"partial":[],"remove":["${FILE_ID.toUpperCase()}"]}`,
    ],
    ["list_files query as number", 0x20, '{"query":5}'],
    ["file_list files not a list", 0x21, '{"files":"none"}'],
    ["file_list entry not an object", 0x21, '{"files":[7]}'],
    [
      "file_list entry with a bad id",
      0x21,
      '{"files":[{"id":"x","name":"n","size":1,"chunkSize":1,"peers":1,"partial":0}]}',
    ],
    [
      "file_list entry with a negative size",
      0x21,
      `{"files":[{"id":"${FILE_ID}","name":"n","size":-1,"chunkSize":1,"peers":1,"partial":0}]}`,
    ],
    [
      "file_list entry without peers",
      0x21,
      `{"files":[{"id":"${FILE_ID}","name":"n","size":1,"chunkSize":1,"partial":0}]}`,
    ],
    ["get_peers without fileId", 0x22, "{}"],
    ["get_peers with a 63-digit id", 0x22, `{"fileId":"${FILE_ID.slice(1)}"}`],
    ["get_peers with an uppercase id", 0x22, `{"fileId":"${FILE_ID.toUpperCase()}"}`],
    ["get_manifest with a numeric id", 0x24, '{"fileId":5}'],
    ["peer_list complete as string", 0x23, `{"fileId":"${FILE_ID}","peers":[{"host":"h","port":1,"complete":"yes"}]}`],
    ["peer_list port 0", 0x23, `{"fileId":"${FILE_ID}","peers":[{"host":"h","port":0,"complete":true}]}`],
    ["peer_list entry null", 0x23, `{"fileId":"${FILE_ID}","peers":[null]}`],
    ["manifest with a bad fileId", 0x25, `{"fileId":"nope","manifest":${JSON.stringify(HELLO_TXT)}}`],
    // Accounts, groups and grants.
    ["register token as number", 0x10, '{"port":7001,"token":7}'],
    ["register oversize token", 0x10, `{"port":7001,"token":"${long}"}`],
    ["registered publicKey null", 0x11, '{"peerId":"p","heartbeatMs":1,"expiryMs":1,"publicKey":null}'],
    ["announce groupAdd not a list", 0x14, '{"peerId":"p","add":[],"partial":[],"remove":[],"groupAdd":{}}'],
    [
      "announce groupAdd entry without group",
      0x14,
      `{"peerId":"p","add":[],"partial":[],"remove":[],"groupAdd":[{"manifest":${JSON.stringify(HELLO_TXT)}}]}`,
    ],
    [
      "announce groupRemove entry a string",
      0x14,
      '{"peerId":"p","add":[],"partial":[],"remove":[],"groupRemove":["x"]}',
    ],
    [
      "announce groupRemove with a bad id",
      0x14,
      '{"peerId":"p","add":[],"partial":[],"remove":[],"groupRemove":[{"group":"team","fileId":"00"}]}',
    ],
    [
      "file_list owner as number",
      0x21,
      `{"files":[{"id":"${FILE_ID}","name":"n","size":1,"chunkSize":1,"peers":1,"partial":0,"owner":1}]}`,
    ],
    ["authorize with a bad fileId", 0x37, '{"fileId":"89284beb","grant":"g"}'],
    ["authorize without grant", 0x37, `{"fileId":"${FILE_ID}"}`],
    ["authorize oversize grant", 0x37, `{"fileId":"${FILE_ID}","grant":"${long}"}`],
    ["create_user without password", 0x40, '{"name":"alice"}'],
    ["login oversize password", 0x41, `{"name":"alice","password":"${long}"}`],
    ["session expiresAt not an integer", 0x42, '{"user":"u","token":"t","expiresAt":1.5}'],
    ["session expiresAt as string", 0x42, '{"user":"u","token":"t","expiresAt":"1798761600000"}'],
    ["session expiresAt negative", 0x42, '{"user":"u","token":"t","expiresAt":-1}'],
    ["session expiresAt after year 9999", 0x42, `{"user":"u","token":"t","expiresAt":${MAX_TIME + 1}}`],
    ["logout token as number", 0x43, '{"token":5}'],
    ["whoami without token", 0x44, "{}"],
    ["create_group without group", 0x48, '{"token":"t"}'],
    ["accept_request without user", 0x4b, '{"token":"t","group":"g"}'],
    ["remove_member user null", 0x4c, '{"token":"t","group":"g","user":null}'],
    ["group_list with an unknown role", 0x4e, '{"groups":[{"name":"g","owner":"o","members":1,"role":"admin"}]}'],
    ["group_list members negative", 0x4e, '{"groups":[{"name":"g","owner":"o","members":-1,"role":"member"}]}'],
    ["group_list entry not an object", 0x4e, '{"groups":["team"]}'],
    ["user_list entry as number", 0x50, '{"users":["bob",7]}'],
    ["user_list oversize entry", 0x50, `{"users":["${long}"]}`],
    ["group_lookup without file", 0x52, '{"token":"t","group":"g"}'],
    [
      "group_file without grant",
      0x53,
      `{"group":"g","fileId":"${FILE_ID}","manifest":${JSON.stringify(HELLO_TXT)},"peers":[],"grantExpiresAt":1}`,
    ],
    [
      "group_file grantExpiresAt as string",
      0x53,
      `{"group":"g","fileId":"${FILE_ID}","manifest":${
        JSON.stringify(HELLO_TXT)
      },"peers":[],"grant":"g","grantExpiresAt":"1"}`,
    ],
    ["get_grant with an uppercase fileId", 0x54, `{"token":"t","group":"g","fileId":"${FILE_ID.toUpperCase()}"}`],
    ["grant expiresAt fraction", 0x55, '{"grant":"g","expiresAt":1798675260000.5}'],
    ["stop_sharing file as number", 0x56, '{"token":"t","group":"g","file":1}'],
    [
      "ctl_state registered not a boolean",
      0x61,
      '{"user":"u","tracker":"t","address":"a","registered":"yes","shares":[]}',
    ],
    [
      "ctl_state share with a negative size",
      0x61,
      `{"user":"u","tracker":"t","address":"a","registered":true,"shares":[` +
      `{"group":"g","fileId":"${FILE_ID}","name":"n","size":-1,"path":"p"}]}`,
    ],
    ["ctl_share without path", 0x62, '{"group":"g"}'],
    ["ctl_shared with a bad fileId", 0x63, '{"group":"g","fileId":"x","name":"n","size":1}'],
    ["ctl_unshare group as list", 0x64, '{"group":[],"file":"f"}'],
    ["ctl_session without token", 0x66, "{}"],
    ["ctl_register_file path as number", 0x67, '{"path":7}'],
    ["ctl_file_registered without path", 0x68, `{"fileId":"${FILE_ID}","name":"n","size":1}`],
    ["ctl_request_file with a bad fileId", 0x69, '{"fileId":"hello.txt"}'],
    ["ctl_request_file out null", 0x69, `{"fileId":"${FILE_ID}","out":null}`],
    ["ctl_file_requested size as string", 0x6a, `{"fileId":"${FILE_ID}","name":"n","size":"1","out":"o"}`],
    ["ctl_downloads not a list", 0x6c, '{"downloads":{}}'],
    ["ctl_downloads entry a string", 0x6c, '{"downloads":["x"]}'],
    ["ctl_downloads with an unknown state", 0x6c, `{"downloads":[${ctlDownloadJson({ state: "paused" })}]}`],
    ["ctl_downloads number 0", 0x6c, `{"downloads":[${ctlDownloadJson({ number: 0 })}]}`],
    ["ctl_downloads rate a fraction", 0x6c, `{"downloads":[${ctlDownloadJson({ rate: 1.5 })}]}`],
    ["ctl_downloads without elapsedMs", 0x6c, `{"downloads":[${ctlDownloadJson({ elapsedMs: undefined })}]}`],
    ["ctl_downloads error null", 0x6c, `{"downloads":[${ctlDownloadJson({ error: null })}]}`],
    ["ctl_downloads with a bad fileId", 0x6c, `{"downloads":[${ctlDownloadJson({ fileId: "x" })}]}`],
    [
      "ctl_downloads over MAX_CTL_DOWNLOADS",
      0x6c,
      `{"downloads":[${Array(MAX_CTL_DOWNLOADS + 1).fill(ctlDownloadJson({})).join(",")}]}`,
    ],
    ["ctl_stop_download without file", 0x6d, "{}"],
    ["ctl_stop_download file as number", 0x6d, '{"file":1}'],
    // HEARTBEAT's optional counters and partial bitfields.
    ["heartbeat up negative", 0x12, '{"peerId":"p","up":-1}'],
    ["heartbeat up fraction", 0x12, '{"peerId":"p","up":1.5}'],
    ["heartbeat down as string", 0x12, '{"peerId":"p","down":"5"}'],
    ["heartbeat down past 2^53-1", 0x12, '{"peerId":"p","down":9007199254740992}'],
    ["heartbeat up null", 0x12, '{"peerId":"p","up":null}'],
    ["heartbeat partials not a list", 0x12, '{"peerId":"p","partials":{}}'],
    [
      "heartbeat partials over MAX_HEARTBEAT_PARTIALS",
      0x12,
      `{"peerId":"p","partials":[${
        Array(MAX_HEARTBEAT_PARTIALS + 1).fill(`{"fileId":"${FILE_ID}","bits":"gA=="}`).join(",")
      }]}`,
    ],
    ["heartbeat partial a string", 0x12, `{"peerId":"p","partials":["${FILE_ID}"]}`],
    ["heartbeat partial with a bad id", 0x12, '{"peerId":"p","partials":[{"fileId":"00","bits":"gA=="}]}'],
    ["heartbeat partial without bits", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}"}]}`],
    ["heartbeat bits unpadded", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":"gA"}]}`],
    ["heartbeat bits with a space", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":"gA= ="}]}`],
    ["heartbeat bits base64url", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":"_-8="}]}`],
    ["heartbeat bits padding bits set", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":"gB=="}]}`],
    ["heartbeat bits as bytes", 0x12, `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":[128]}]}`],
    [
      "heartbeat bits longer than MAX_CHUNKS bits",
      0x12,
      `{"peerId":"p","partials":[{"fileId":"${FILE_ID}","bits":"${"AAAA".repeat(MAX_BITFIELD_BASE64 / 4 + 1)}"}]}`,
    ],
  ];
  for (const [what, type, payload] of cases) {
    assertProtocolError(() => decodeMessage(frame(type, payload)), "malformed", what);
  }
  // The bounds themselves are accepted.
  const atMax = "a".repeat(MAX_TEXT);
  assert.equal((decodeMessage(frame(0x12, `{"peerId":"${atMax}"}`)) as { peerId: string }).peerId, atMax);
  assert.equal((decodeMessage(frame(0x10, '{"port":65535}')) as { port: number }).port, 65535);
  const counters = decodeMessage(frame(0x12, `{"peerId":"p","up":0,"down":${Number.MAX_SAFE_INTEGER}}`));
  assert.deepEqual(counters, { type: "heartbeat", peerId: "p", up: 0, down: Number.MAX_SAFE_INTEGER });
  const widest = decodeMessage(frame(
    0x12,
    `{"peerId":"p","partials":[${
      Array(MAX_HEARTBEAT_PARTIALS).fill(`{"fileId":"${FILE_ID}","bits":"${"A".repeat(MAX_BITFIELD_BASE64)}"}`)
        .join(",")
    }]}`,
  )) as Extract<Message, { type: "heartbeat" }>;
  assert.equal(widest.partials!.length, MAX_HEARTBEAT_PARTIALS);
  assert.equal(widest.partials![0]!.bits.length, MAX_BITFIELD_BASE64 / 4 * 3);
  const latest = decodeMessage(frame(0x42, `{"user":"u","token":"t","expiresAt":${MAX_TIME}}`));
  assert.equal((latest as { expiresAt: number }).expiresAt, MAX_TIME);
});

Deno.test("binary messages reject payloads of the wrong length", () => {
  const id = hex(ID_BYTES);
  const bytes = (n: number) => {
    const out = new Uint8Array(n);
    out.set(id.subarray(0, Math.min(n, 32)));
    return out;
  };
  const cases: [string, number, number][] = [
    ["interested short", 0x30, 31],
    ["interested long", 0x30, 33],
    ["interested empty", 0x30, 0],
    ["have short", 0x32, 35],
    ["have long", 0x32, 37],
    ["request short", 0x33, 35],
    ["request long", 0x33, 37],
    ["cancel short", 0x35, 35],
    ["cancel long", 0x35, 40],
    ["piece without index", 0x34, 35],
    ["reject without index", 0x36, 35],
    ["bitfield without count", 0x31, 35],
  ];
  for (const [what, type, n] of cases) {
    assertProtocolError(() => decodeMessage(frame(type, bytes(n))), "malformed", what);
  }
});

Deno.test("BITFIELD rejects a bits length that does not match its count", () => {
  const withBits = (count: number, bits: number[]) => {
    const p = new Uint8Array(36 + bits.length);
    p.set(hex(ID_BYTES));
    new DataView(p.buffer).setUint32(32, count);
    p.set(bits, 36);
    return frame(0x31, p);
  };
  assertProtocolError(() => decodeMessage(withBits(10, [0xff])), "malformed", "10 chunks in 1 byte");
  assertProtocolError(() => decodeMessage(withBits(10, [0xff, 0xc0, 0x00])), "malformed", "10 chunks in 3 bytes");
  assertProtocolError(() => decodeMessage(withBits(0, [0x00])), "malformed", "0 chunks in 1 byte");
  assertProtocolError(() => decodeMessage(withBits(0xffffffff, [])), "malformed", "2^32-1 chunks in 0 bytes");
  const ok = decodeMessage(withBits(9, [0xff, 0x80]));
  assert.deepEqual(plain(ok), { type: "bitfield", fileId: FILE_ID, count: 9, bits: "ff80" });
});

Deno.test("REJECT rejects a reason that is not UTF-8", () => {
  const p = new Uint8Array(38);
  p.set(hex(ID_BYTES));
  p.set([0xc3, 0x28], 36); // an invalid two-byte sequence
  assertProtocolError(() => decodeMessage(frame(0x36, p)), "malformed", "bad UTF-8 reason");
});

Deno.test("a MANIFEST whose manifest does not hash to its fileId is bad_manifest", () => {
  const wrongId = { fileId: REPORT_ID, manifest: HELLO_TXT };
  assertProtocolError(() => decodeMessage(frame(0x25, JSON.stringify(wrongId))), "bad_manifest", "id of another file");
  const tampered = { fileId: FILE_ID, manifest: { ...HELLO_TXT, size: 6 } };
  assertProtocolError(() => decodeMessage(frame(0x25, JSON.stringify(tampered))), "bad_manifest", "size changed");
  const unsafe = { fileId: FILE_ID, manifest: { ...HELLO_TXT, name: "../hello.txt" } };
  assertProtocolError(() => decodeMessage(frame(0x25, JSON.stringify(unsafe))), "bad_manifest", "unsafe name");
  const missing = { fileId: FILE_ID };
  assertProtocolError(() => decodeMessage(frame(0x25, JSON.stringify(missing))), "bad_manifest", "no manifest");
  // A rename keeps the id: the name is not hashed.
  const renamed = { fileId: FILE_ID, manifest: { ...HELLO_TXT, name: "greeting.txt" } };
  assert.equal((decodeMessage(frame(0x25, JSON.stringify(renamed))) as { fileId: string }).fileId, FILE_ID);
});

Deno.test("an ANNOUNCE carrying an invalid manifest is bad_manifest", () => {
  const body = { peerId: PEER_ID, add: [{ ...HELLO_TXT, chunks: [] }], partial: [], remove: [] };
  assertProtocolError(() => decodeMessage(frame(0x14, JSON.stringify(body))), "bad_manifest", "chunk count wrong");
  const slash = { peerId: PEER_ID, add: [{ ...HELLO_TXT, name: "a/b" }], partial: [], remove: [] };
  assertProtocolError(() => decodeMessage(frame(0x14, JSON.stringify(slash))), "bad_manifest", "name with a slash");
  const group = { peerId: PEER_ID, add: [], partial: [], remove: [], groupAdd: [{ group: "team", manifest: {} }] };
  assertProtocolError(() => decodeMessage(frame(0x14, JSON.stringify(group))), "bad_manifest", "groupAdd manifest");
});

Deno.test("a GROUP_FILE whose manifest does not hash to its fileId is bad_manifest", () => {
  const body = { ...SAMPLES.group_file!, fileId: REPORT_ID } as Record<string, unknown>;
  delete body.type;
  assertProtocolError(() => decodeMessage(frame(0x53, JSON.stringify(body))), "bad_manifest", "id of another file");
});

Deno.test("encodeMessage() refuses values the wire cannot carry", () => {
  assert.throws(() => encodeMessage({ type: "request", fileId: FILE_ID.toUpperCase(), index: 0 }), RangeError);
  assert.throws(() => encodeMessage({ type: "interested", fileId: "abc" }), RangeError);
  assert.throws(() => encodeMessage({ type: "have", fileId: FILE_ID, index: -1 }), RangeError);
  assert.throws(() => encodeMessage({ type: "cancel", fileId: FILE_ID, index: 2 ** 32 }), RangeError);
  assert.throws(
    () => encodeMessage({ type: "piece", fileId: FILE_ID, index: 0.5, data: new Uint8Array(1) }),
    RangeError,
  );
  assert.throws(
    () => encodeMessage({ type: "bitfield", fileId: FILE_ID, count: Number.NaN, bits: new Uint8Array(0) }),
    RangeError,
  );
});

// ------------------------------------------------------------------ property test

Deno.test("property: garbage fed to FrameDecoder and decodeMessage only ever throws ProtocolError", () => {
  const seed = 0x5eed_0001;
  const rand = seeded(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const ids = Object.values(WireType);
  const goldens = Object.values(GOLDEN).map(hex);
  const codes = new Set(["malformed", "unknown_type", "bad_manifest", "frame_too_large", "truncated"]);
  const seen = { decoded: 0, rejected: 0 };

  const attempt = (stream: Uint8Array, what: string) => {
    const d = new FrameDecoder({ maxFrameBytes: 4096 });
    try {
      let at = 0;
      while (at < stream.length) {
        const step = 1 + int(24);
        for (const f of d.push(stream.subarray(at, at + step))) {
          try {
            decodeMessage(f);
            seen.decoded++;
          } catch (e) {
            if (!(e instanceof ProtocolError)) throw e;
            seen.rejected++;
          }
        }
        at += step;
      }
      d.finish();
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `${what} (seed ${seed}): threw ${e instanceof Error ? e.stack : e}`);
      assert.ok(codes.has(e.code), `${what}: unexpected code ${e.code}`);
    }
  };

  for (let round = 0; round < 3000; round++) {
    // 1. Raw noise.
    attempt(Uint8Array.from({ length: int(64) }, () => int(256)), `noise round ${round}`);
    // 2. A well-formed header with a known type and a noisy payload.
    const payload = Uint8Array.from({ length: int(80) }, () => int(256));
    attempt(encodeFrame(ids[int(ids.length)]!, payload), `noisy payload round ${round}`);
    // 3. A golden frame with a few bytes of its payload flipped, or its payload cut or padded.
    const g = Uint8Array.from(goldens[int(goldens.length)]!);
    const body = g.subarray(5);
    const mode = int(3);
    if (mode === 0) {
      for (let k = 1 + int(3); k > 0; k--) if (body.length) body[int(body.length)] = int(256);
      attempt(g, `mutated golden round ${round}`);
    } else {
      const cut = mode === 1 ? body.subarray(0, int(body.length + 1)) : Uint8Array.from([...body, int(256)]);
      attempt(encodeFrame(g[4]!, cut), `resized golden round ${round}`);
    }
    // 4. A golden frame whose JSON text is spliced with JSON-ish tokens.
    const tokens = ['"', "{", "}", "[", "]", ",", ":", "null", "1e999", "-0", '"\\u0000"', "true", "1.5"];
    const text = new TextDecoder().decode(body);
    const pos = int(text.length + 1);
    const spliced = text.slice(0, pos) + tokens[int(tokens.length)] + text.slice(pos + int(3));
    attempt(encodeFrame(g[4]!, new TextEncoder().encode(spliced)), `spliced golden round ${round}`);
  }
  assert.ok(seen.decoded > 0, "some inputs decode");
  assert.ok(seen.rejected > 0, "some inputs are rejected");
});

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const below = (r: Rand, n: number): number => Math.floor(r() * n);
/** Rounds per sample below; `SHOAL_FUZZ_ROUNDS` and `SHOAL_FUZZ_SEED` run them longer or from elsewhere. */
const ROUNDS = Number(Deno.env.get("SHOAL_FUZZ_ROUNDS") ?? 300);
const SEED = Number(Deno.env.get("SHOAL_FUZZ_SEED") ?? 20261122);

/** Values that have broken JSON decoders elsewhere: wrong types, edges of numbers and text. */
const NASTY: readonly unknown[] = [
  null,
  true,
  false,
  0,
  -0,
  -1,
  1.5,
  2 ** 32,
  2 ** 53,
  -(2 ** 53),
  1e308,
  "",
  "x".repeat(1024),
  "x".repeat(1025),
  "\u0000",
  "\ud800",
  "é".repeat(600),
  "../../etc/passwd",
  "0".repeat(64),
  "A".repeat(64),
  "AAAA",
  "=",
  [],
  [null],
  [[]],
  {},
  { length: 5 },
  JSON.parse('{"__proto__": {"polluted": 1}}'), // an own key named __proto__, as a peer's JSON can carry
];

/** Every sample message, frame bytes and all. */
function corpus(): { label: string; msg: Message; frame: Frame }[] {
  const all = [...Object.entries(SAMPLES), ...EXTRA.map((m, i) => [`extra ${i} (${m.type})`, m] as const)];
  return all.map(([label, msg]) => {
    const bytes = encodeMessage(msg);
    return { label, msg, frame: { type: bytes[4]!, payload: bytes.slice(5) } };
  });
}

/** Bytes spoiled: bits flipped, bytes set, cut short, grown, or a slice repeated. */
function mutateBytes(r: Rand, p: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = Uint8Array.from(p);
  switch (below(r, 5)) {
    case 0:
      for (let n = 1 + below(r, 4); n > 0 && out.length; n--) out[below(r, out.length)]! ^= 1 << below(r, 8);
      return out;
    case 1:
      for (let n = 1 + below(r, 4); n > 0 && out.length; n--) out[below(r, out.length)] = below(r, 256);
      return out;
    case 2:
      return out.slice(0, below(r, out.length + 1));
    case 3: {
      const grown = new Uint8Array(out.length + 1 + below(r, 64));
      grown.set(out);
      for (let i = out.length; i < grown.length; i++) grown[i] = below(r, 256);
      return grown;
    }
    default: {
      const at = below(r, out.length + 1);
      const len = below(r, Math.min(out.length - at, 40) + 1);
      const slice = out.subarray(at, at + len);
      const doubled = new Uint8Array(out.length + len);
      doubled.set(out.subarray(0, at + len));
      doubled.set(slice, at + len);
      doubled.set(out.subarray(at + len), at + 2 * len);
      return doubled;
    }
  }
}

/** Every place in a JSON value: [container, key] pairs, the root's fields included. */
function places(v: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []) {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push([v, i]);
      places(x, out);
    });
  } else if (typeof v === "object" && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      out.push([v as Record<string, unknown>, k]);
      places(x, out);
    }
  }
  return out;
}

/** A JSON payload spoiled at one place: a value swapped for a nasty one, a key dropped or added, a list grown. */
function mutateJson(r: Rand, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const body = JSON.parse(new TextDecoder().decode(payload));
  const spots = places(body);
  const root = body as Record<string, unknown>;
  const what = spots.length === 0 ? 3 : below(r, 5);
  if (what === 3) {
    root[pick(r, ["type", "extra", "__proto__", "constructor", "size", "name", "fileId"])] = pick(r, NASTY);
  } else {
    const [box, key] = pick(r, spots);
    const into = box as Record<string | number, unknown>;
    if (what === 0 || what === 1) {
      into[key] = pick(r, NASTY);
    } else if (what === 2) {
      if (Array.isArray(box)) box.splice(key as number, 1);
      else delete into[key];
    } else {
      const v = into[key];
      if (Array.isArray(v) && v.length) {
        for (let n = 1 + below(r, 3); n > 0; n--) v.push(structuredClone(pick(r, v)));
      } else into[key] = [v, v];
    }
  }
  return new TextEncoder().encode(JSON.stringify(body));
}

/**
 * Where `got` does not have the shape of `like` (a valid message of the same type): a field of another JS type, a
 * number that is not a non-negative safe integer, a string over MAX_TEXT. Keys `like` lacks are not judged.
 */
function misshapen(like: unknown, got: unknown, at = "message"): string | undefined {
  if (like === undefined) return undefined;
  if (like instanceof Uint8Array) return got instanceof Uint8Array ? undefined : `${at} is not bytes`;
  if (Array.isArray(like)) {
    if (!Array.isArray(got)) return `${at} is not a list`;
    for (const [i, x] of got.entries()) {
      const why = misshapen(like[0], x, `${at}[${i}]`);
      if (why) return why;
    }
    return undefined;
  }
  if (typeof like !== typeof got || (like === null) !== (got === null)) return `${at} is a ${typeof got}`;
  if (typeof got === "number" && !(Number.isSafeInteger(got) && got >= 0)) return `${at} is ${got}`;
  if (typeof got === "string" && got.length > MAX_TEXT) return `${at} has ${got.length} characters`;
  if (typeof got === "object" && got !== null) {
    for (const [k, v] of Object.entries(got)) {
      const why = misshapen((like as Record<string, unknown>)[k], v, `${at}.${k}`);
      if (why) return why;
    }
  }
  return undefined;
}

/**
 * Decodes a spoiled frame: a ProtocolError (false), or a message shaped like `like` (the sample it was spoiled from)
 * that survives another round trip (true).
 */
function check(frame: Frame, label: string, seed: number, like?: Message): boolean {
  let msg: Message;
  try {
    msg = decodeMessage(frame);
  } catch (e) {
    if (e instanceof ProtocolError) return false;
    throw new Error(`${label}, seed ${seed}: decodeMessage threw ${String(e)}, not a ProtocolError`, { cause: e });
  }
  let again: Message;
  try {
    const bytes = encodeMessage(msg);
    again = decodeMessage({ type: bytes[4]!, payload: bytes.slice(5) });
  } catch (e) {
    throw new Error(`${label}, seed ${seed}: a message decodeMessage accepted does not round-trip: ${String(e)}`, {
      cause: e,
    });
  }
  assert.deepEqual(plain(again), plain(msg), `${label}, seed ${seed}: accepted message changes in a round trip`);
  const why = like && like.type === msg.type ? misshapen(like, msg) : undefined;
  assert.equal(why, undefined, `${label}, seed ${seed}: decodeMessage accepted a message whose ${why}`);
  return true;
}

const JSON_TYPES = new Set([0x01, 0x02].concat(Object.values(WireType).filter((t) => t >= 0x10)));

/** Spoils each sample ROUNDS times with `mutate` and checks every result; returns how many were refused. */
function spoilAll(items: ReturnType<typeof corpus>, seedBase: number, mutate: typeof mutateBytes): number {
  let refused = 0;
  for (const [i, item] of items.entries()) {
    const seed = seedBase + i;
    const r = seeded(seed);
    for (let n = 0; n < ROUNDS; n++) {
      if (!check({ type: item.frame.type, payload: mutate(r, item.frame.payload) }, item.label, seed, item.msg)) {
        refused++;
      }
    }
  }
  return refused;
}

Deno.test("property: spoiled bytes of every sample message decode to a ProtocolError or a message that round-trips", () => {
  const items = corpus();
  const refused = spoilAll(items, SEED, mutateBytes);
  // Guards the fuzzer itself: spoiling must mostly produce input the decoders refuse.
  assert.ok(refused > (items.length * ROUNDS) / 2, `only ${refused} of ${items.length * ROUNDS} refused`);
});

Deno.test("property: spoiled JSON of every JSON sample message decodes to a ProtocolError or a message that round-trips", () => {
  const items = corpus().filter((c) => JSON_TYPES.has(c.frame.type) && c.frame.payload[0] === 0x7b);
  assert.ok(items.length > 40, `only ${items.length} JSON samples`);
  const refused = spoilAll(items, SEED + 1000, mutateJson);
  assert.ok(refused > (items.length * ROUNDS) / 4, `only ${refused} of ${items.length * ROUNDS} refused`);
});

Deno.test("a JSON payload nested deeper than MAX_JSON_DEPTH is refused before it is parsed; brackets in strings do not count", () => {
  const deep = "[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH);
  assert.throws(
    () => decodeMessage(frame(0x20, `{"query":${deep}}`)),
    (err: unknown) => err instanceof ProtocolError && /nests deeper than 16 levels/.test(err.message),
  );
  // A 16 MiB frame of brackets was the attack: refused without building an array.
  const bomb = "[".repeat(4 * 1024 * 1024);
  assert.throws(() => decodeMessage(frame(0x14, bomb)), /nests deeper/);
  const query = '[[[[[[[[[[[[[[[[[[[[ \\" {{{{{{{{{{{{{{{{{{{{';
  assert.deepEqual(decodeMessage(frame(0x20, JSON.stringify({ query }))), { type: "list_files", query });
});
