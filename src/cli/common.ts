import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { loadConfig, type Config } from "../runtime/config.js";
import { connectNats } from "../runtime/connection.js";
import { AdoError } from "../runtime/errors.js";
import { createLogger, type Logger } from "../runtime/logger.js";
import { openRepo } from "../git/index.js";
import { authForRole, type NatsAuth, type Role } from "../runtime/nats-auth.js";
import { findRunStacks, readUpState, type UpState } from "./up-state.js";

/** Exit codes of every command. */
export const Exit = {
  ok: 0,
  /** The run ended, but not successfully. */
  failed: 1,
  /** Bad input: flags, config, graph, repository. Nothing was run. */
  usage: 2,
  /** Interrupted by a signal. */
  interrupted: 130,
} as const;

/** An error whose message is meant for the user as-is, with the exit code to use. */
export class CliError extends AdoError {
  constructor(
    message: string,
    readonly exitCode: number = Exit.usage,
  ) {
    super(message);
  }
}

export interface CommonFlags {
  config?: string;
  server?: string;
  prefix?: string;
  /** -q: errors only. */
  quiet?: boolean;
  /** -v: info; -vv: debug; -vvv: trace. */
  verbose?: number;
}

/** The log level -q / -v ask for, if any (over the config's and ADO_LOG_LEVEL). */
export function logLevelOf(flags: Pick<CommonFlags, "quiet" | "verbose">): string | undefined {
  if (flags.quiet) return "error";
  if (!flags.verbose) return undefined;
  return flags.verbose >= 3 ? "trace" : flags.verbose === 2 ? "debug" : "info";
}

/** Loads the configuration with the flags that map onto it. */
export async function configFrom(
  flags: CommonFlags & { workers?: number; slots?: number | "auto"; labels?: string; capabilities?: string },
  dir?: string,
): Promise<{ config: Config; logger: Logger }> {
  const list = (v?: string) => (v === undefined ? undefined : v.split(",").map((x) => x.trim()).filter(Boolean));
  const config = await loadConfig({
    file: flags.config,
    dir,
    flags: {
      server: flags.server,
      prefix: flags.prefix,
      logLevel: logLevelOf(flags),
      workers: flags.workers,
      slots: flags.slots,
      "worker.labels": list(flags.labels),
      "worker.capabilities": list(flags.capabilities),
    },
  });
  return { config, logger: createLogger(config.logLevel) };
}

/** A server a command reaches, and how it authenticates there (each role's own by `authForRole`). */
export interface ServerRef {
  url: string;
  /** Absent: from the environment (ADO_NATS_*); `{}`: no credentials. */
  auth?: NatsAuth;
}

/** A configured server: the config's credentials (file and ADO_NATS_*), if it has any. */
function configuredServer(config: Config): ServerRef {
  const { replicas: _, ...auth } = config.nats;
  return { url: config.server!, ...(Object.keys(auth).length ? { auth } : {}) };
}

/** A stack found on this machine: its per-role seeds, or none (started without auth, or by an older ado). */
function localServer(state: UpState): ServerRef {
  return { url: state.url, auth: state.roleDir ? { roleDir: state.roleDir } : {} };
}

/**
 * The server a command should use: the flag or config, else the stack `ado up`
 * started on this machine, else none (the caller starts an embedded stack).
 */
export async function resolveServer(config: Config): Promise<(ServerRef & { source: string }) | undefined> {
  if (config.server) return { ...configuredServer(config), source: "configured" };
  const up = await readUpState(config.prefix);
  if (up) return { ...localServer(up), source: `the stack \`ado up\` started (pid ${up.pid})` };
  return undefined;
}

/** Requires a server (for commands that join an existing installation). */
export async function requireServer(config: Config, what: string): Promise<ServerRef> {
  const server = await resolveServer(config);
  if (!server) {
    throw new CliError(`${what} needs a NATS server: pass --server nats://host:4222, set ADO_SERVER, or start one with \`ado up\``);
  }
  return server;
}

/**
 * The server of a command that joins what runs (status, cancel, attach, detach): the
 * configured one, else the stack of an `ado run` in this repository serving `runId`,
 * else `ado up`'s, else the only `ado run` stack in this repository.
 */
export async function joinServer(config: Config, what: string, opts: { runId?: string; dir?: string } = {}): Promise<ServerRef> {
  if (config.server) return configuredServer(config);
  const repo = await openRepo(opts.dir ?? process.cwd()).catch(() => undefined);
  const stacks = repo ? await findRunStacks(repo.gitCommonDir, config.prefix) : [];
  const serving = opts.runId ? stacks.find((s) => s.runId === opts.runId) : undefined;
  if (serving) return localServer(serving);
  const up = await readUpState(config.prefix);
  if (up) return localServer(up);
  if (stacks.length === 1) return localServer(stacks[0]!);
  if (stacks.length > 1) {
    throw new CliError(
      `${stacks.length} runs are going on in this repository, each on its own embedded stack (${stacks.map((s) => s.runId).join(", ")}): name the run (e.g. ${what} ${stacks[0]!.runId})`,
    );
  }
  throw new CliError(
    `${what} needs a NATS server: pass --server nats://host:4222, set ADO_SERVER, start one with \`ado up\`, or run it in the repository of a running \`ado run\``,
  );
}

/**
 * A command's connection, as the client role (`role` for commands that do more: the
 * operator's `ado workers` as admin, the dashboard as its own).
 */
export function clientConnection(server: ServerRef, logger: Logger, role: Role = "client"): Promise<NatsConnection> {
  return connectNats({ servers: server.url, name: `ado-cli-${hostname()}-${process.pid}`, logger, ...(server.auth ? { auth: authForRole(server.auth, role) } : {}) });
}

/** `--slots`: a number of tasks per worker, or `auto` (from this host's cores, memory and load). */
export function parseSlotsFlag(value: string): number | "auto" {
  if (value.trim() === "auto") return "auto";
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new CliError(`--slots must be a whole number from 1 to 1024 or 'auto', got '${value}'`);
  return n;
}

export function parseIntFlag(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new CliError(`--${name} must be a whole number from ${min} to ${max}, got '${value}'`);
    }
    return n;
  };
}
