/**
 * Settings from a config file, below flags and environment variables:
 * flag > environment variable (SHOAL_TRACKER, SHOAL_HOME, ...) > config
 * file > built-in default.
 *
 * The file is JSON with one section per program, keyed by the long option
 * names as typed on the command line:
 *
 * ```json
 * {
 *   "client":  { "tracker": "10.0.0.5:7070", "workers": 4 },
 *   "peer":    { "tracker": "10.0.0.5:7070", "upload-limit": "2m" },
 *   "tracker": { "port": 7070, "db": "/var/lib/shoal/tracker.db" }
 * }
 * ```
 *
 * It is found at `--config <file>`, else `$SHOAL_CONFIG`, else
 * `$XDG_CONFIG_HOME/shoal/config.json` (`~/.config/shoal/config.json`).
 * A named file must exist; the default one may be absent. Unknown sections
 * or keys and wrongly typed values are errors that name the file and key.
 *
 * Commander does the ranking: values from here are set with source
 * "config" before parsing, and commander lets environment variables and
 * then flags override them.
 *
 * @module
 */

import type { Command, Option } from "commander";
import { join } from "node:path";
import { UsageError } from "./errors.ts";

/** Config files larger than this are refused (a config is a few lines). */
export const MAX_CONFIG_BYTES = 64 * 1024;
/** The programs that read a section of the file. */
export const CONFIG_SECTIONS = ["client", "peer", "tracker"] as const;
export type ConfigSection = typeof CONFIG_SECTIONS[number];

/** One section of the config file as read: long option names and their values. */
export type ConfigValues = Record<string, string | number | boolean>;

/** Where the config file is looked for, and whether it must exist. */
export function configPath(argv: string[], env = Deno.env.toObject()): { path: string; required: boolean } {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") break;
    if (a === "--config") {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError("--config needs a file path");
      return { path: next, required: true };
    }
    if (a.startsWith("--config=")) return { path: a.slice("--config=".length), required: true };
  }
  if (env.SHOAL_CONFIG) return { path: env.SHOAL_CONFIG, required: true };
  const base = env.XDG_CONFIG_HOME ?? join(env.HOME ?? ".", ".config");
  return { path: join(base, "shoal", "config.json"), required: false };
}

/** Reads one program's section of the config file; `{}` when the default file is absent. */
export async function readConfig(
  section: ConfigSection,
  where: { path: string; required: boolean },
): Promise<ConfigValues> {
  let text: string;
  try {
    const st = await Deno.stat(where.path);
    if (st.size > MAX_CONFIG_BYTES) {
      throw new UsageError(`Config file ${where.path} is ${st.size} bytes; the limit is ${MAX_CONFIG_BYTES}`);
    }
    text = await Deno.readTextFile(where.path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && !where.required) return {};
    if (err instanceof UsageError) throw err;
    throw new UsageError(`Cannot read config file ${where.path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`Config file ${where.path} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(doc)) throw new UsageError(`Config file ${where.path} must hold a JSON object`);
  for (const key of Object.keys(doc)) {
    if (!(CONFIG_SECTIONS as readonly string[]).includes(key)) {
      throw new UsageError(
        `Config file ${where.path}: unknown section ${JSON.stringify(key)} (expected ${CONFIG_SECTIONS.join(", ")})`,
      );
    }
  }
  const body = doc[section];
  if (body === undefined) return {};
  if (!isPlainObject(body)) throw new UsageError(`Config file ${where.path}: "${section}" must be an object`);
  const out: ConfigValues = {};
  for (const [k, v] of Object.entries(body)) {
    if (typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean") {
      throw new UsageError(`Config file ${where.path}: ${section}.${k} must be a string, number or boolean`);
    }
    out[k] = v;
  }
  return out;
}

/**
 * Sets `values` on the options of `program` and its subcommands that have
 * those long names, with source "config" (so environment variables and
 * flags still win). A key that no option has is an error.
 */
export function applyConfig(
  program: Command,
  values: ConfigValues,
  path: string,
  section: ConfigSection,
): void {
  const commands = [program, ...program.commands];
  for (const [key, value] of Object.entries(values)) {
    let used = false;
    for (const cmd of commands) {
      const opt = cmd.options.find((o: Option) => o.long === `--${key}`);
      if (!opt || key === "config") continue;
      const isSwitch = !opt.required && !opt.optional; // commander's isBoolean() is false for --no-x
      if (isSwitch && typeof value !== "boolean") {
        throw new UsageError(`Config file ${path}: ${section}.${key} is a switch: use true or false`);
      }
      if (!isSwitch && typeof value === "boolean") {
        throw new UsageError(
          `Config file ${path}: ${section}.${key} takes a value, not ${value}: use a number or a string`,
        );
      }
      // a negatable switch (--no-share) is stored under its positive name, inverted
      const v = isSwitch ? (opt.negate ? !value : value) : String(value);
      cmd.setOptionValueWithSource(opt.attributeName(), v, "config");
      used = true;
    }
    if (!used) throw new UsageError(`Config file ${path}: ${section} has no option --${key}`);
  }
}

/** Loads `section` of the config file named by argv/env and applies it to `program`; returns what it read. */
export async function configure(
  program: Command,
  section: ConfigSection,
  argv: string[],
): Promise<ConfigValues> {
  const where = configPath(argv);
  const values = await readConfig(section, where);
  applyConfig(program, values, where.path, section);
  return values;
}

/** True when two sections as read hold the same keys and values (in any order). */
export function sameConfig(
  a: ConfigValues,
  b: ConfigValues,
): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
