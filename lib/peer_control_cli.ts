/**
 * The one-shot commands of client.ts that drive a running `peer.ts
 * --shared` on this machine through its control socket (peer_control.ts):
 * `register-file` (share a local file), `request-file` (download a file
 * into the peer, in the background), `request-status` (its downloads) and
 * `request-stop` (stop one, keeping its progress). This file only parses
 * and prints.
 *
 * @module
 */

import type { Command } from "commander";
import { resolve } from "node:path";
import { isSha256Hex } from "./bytes.ts";
import { formatBytes, parseAddress } from "./cli.ts";
import { UsageError } from "./errors.ts";
import { Home } from "./home.ts";
import type { Message, MessageName } from "./messages.ts";
import { peerRequest } from "./peer_control.ts";
import { describeTransfer } from "./peer_session.ts";

const PEER_ADDR_HELP = "the address the peer listens on, as it printed it";
const HOW_IT_REACHES = "\nThe peer is reached over its control socket <home>/peers/<host>_<port>.sock\n" +
  "(mode 0600): only the user who started it can use it, with the same --home\n(or SHOAL_HOME).";

/** Adds register-file, request-file, request-status and request-stop to `program`; `home` is the global --home. */
export function addPeerControlCommands(program: Command, home: () => string | undefined): void {
  /** One request to the peer that `--peer-addr` names. */
  const ask = <T extends MessageName>(peerAddr: string, msg: Message, expect: T) =>
    peerRequest(Home.resolve(home()), parseAddress(peerAddr, "--peer-addr"), msg, expect);

  program.command("register-file")
    .description("ask a running peer on this machine (peer.ts --shared) to share a local file")
    .requiredOption("--path <file>", "the file to share")
    .requiredOption("--peer-addr <host:port>", PEER_ADDR_HELP)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `${HOW_IT_REACHES}\n\nExamples:\n  client.ts register-file --path ./notes.txt --peer-addr 127.0.0.1:9001\n` +
        "  client.ts --home /tmp/alice register-file --path /data/big.iso \\\n      --peer-addr 127.0.0.1:9001 --json",
    )
    .action(async (o) => {
      const r = await ask(o.peerAddr, { type: "ctl_register_file", path: resolve(o.path) }, "ctl_file_registered");
      if (o.json) return console.log(JSON.stringify(r));
      console.log(`${o.peerAddr} shares ${r.name} (${formatBytes(r.size)}) as ${r.fileId}`);
    });

  program.command("request-file")
    .description("ask a running peer on this machine to download a file; it runs in the peer (see its status)")
    .requiredOption("--file-id <id>", "the file's id (64 hex digits, see: client.ts files)")
    .requiredOption("--peer-addr <host:port>", PEER_ADDR_HELP)
    .option("-o, --out <path>", "output file or directory (default: the file's name in the peer's --download-dir)")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `${HOW_IT_REACHES}\n\nExamples:\n  client.ts request-file --file-id 3f2a...e1 --peer-addr 127.0.0.1:9001\n` +
        "  client.ts request-file --file-id 3f2a...e1 --peer-addr 127.0.0.1:9001 \\\n      --out ./downloads/",
    )
    .action(async (o) => {
      const fileId = String(o.fileId).toLowerCase();
      if (!isSha256Hex(fileId)) {
        throw new UsageError(`Invalid --file-id ${JSON.stringify(o.fileId)}: expected 64 hex digits`);
      }
      const r = await ask(
        o.peerAddr,
        { type: "ctl_request_file", fileId, ...(o.out ? { out: resolve(o.out) } : {}) },
        "ctl_file_requested",
      );
      if (o.json) return console.log(JSON.stringify(r));
      console.log(`${o.peerAddr} is downloading ${r.name} (${formatBytes(r.size)}) to ${r.out}`);
    });

  program.command("request-status")
    .description("the downloads a running peer on this machine has made or is making (as its shell's status)")
    .requiredOption("--peer-addr <host:port>", PEER_ADDR_HELP)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `${HOW_IT_REACHES}\n\nExamples:\n  client.ts request-status --peer-addr 127.0.0.1:9001\n` +
        "  client.ts request-status --peer-addr 127.0.0.1:9001 --json",
    )
    .action(async (o) => {
      const r = await ask(o.peerAddr, { type: "ctl_list_downloads" }, "ctl_downloads");
      if (o.json) return console.log(JSON.stringify(r.downloads));
      if (r.downloads.length === 0) return console.log(`${o.peerAddr} has no downloads`);
      for (const d of r.downloads) console.log(describeTransfer(d));
    });

  program.command("request-stop")
    .description("stop a download of a running peer on this machine; its progress is kept, request-file resumes it")
    .requiredOption("--file <file>", "the download: #n or n (see request-status), file id, id prefix or name")
    .requiredOption("--peer-addr <host:port>", PEER_ADDR_HELP)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `${HOW_IT_REACHES}\n\nExamples:\n  client.ts request-stop --file '#2' --peer-addr 127.0.0.1:9001\n` +
        "  client.ts request-stop --file big.iso --peer-addr 127.0.0.1:9001",
    )
    .action(async (o) => {
      const r = await ask(o.peerAddr, { type: "ctl_stop_download", file: String(o.file) }, "ctl_downloads");
      if (o.json) return console.log(JSON.stringify(r.downloads[0] ?? null));
      for (const d of r.downloads) console.log(describeTransfer(d));
    });
}
