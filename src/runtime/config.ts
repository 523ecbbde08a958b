import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ConfigError } from "./errors.js";
import { PREFIX_PATTERN } from "./topology.js";
import { ProvidersConfigSchema } from "./providers.js";

import { MergeFileSchema, STRATEGIES } from "./graph.js";
import { DurationSchema } from "./duration.js";
import { BUDGET_CONFIG_DEFAULT, BudgetConfigSchema } from "./budget.js";
import { GIT_ACCESS, WorktreesConfigSchema, worktreesDefault } from "../git/index.js";
import { AgentsConfigSchema, PriceTableSchema } from "../agents/index.js";
import { ScalerConfigSchema } from "./scaling.js";
import { AGENT_MEMORY_MB_DEFAULT, autoSlots, hostFacts } from "./hardware.js";

export const BALANCER_STRATEGIES = STRATEGIES;
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
/** What a webhook can be told of (a provider's circuit opening joins them with the providers). */
export const WEBHOOK_EVENTS = ["run.completed", "run.needs_attention"] as const;

/** Tasks one worker runs at once: a number, or `auto` (src/runtime/hardware.ts). */
const SlotsSchema = z.union([z.number().int().min(1).max(1024), z.literal("auto")]);
/** Where `Config.slotsFrom` says nothing set `slots`: the default, `auto`, applied. */
export const SLOTS_DEFAULT = "default";

/** ado.config.yaml, after environment and flags are applied. */
export const ConfigSchema = z
  .object({
    /** Subject/stream/bucket prefix, so installations can share one NATS. */
    prefix: z.string().regex(PREFIX_PATTERN, "1-32 letters, digits, '_' or '-'").default("ado"),
    /** NATS server URL(s), comma-separated. Absent: `ado run` starts an embedded server. */
    server: z.string().min(1).optional(),
    /** Workers the embedded stack starts (0: actors only, workers join with `ado worker`). */
    workers: z.number().int().min(0).max(256).default(4),
    /**
     * Tasks one worker runs at once; `auto`, the default where nothing sets it (file,
     * ADO_SLOTS, --slots): from this host's idle cores and free memory at `agentMemoryMb`
     * per agent, within its cgroup's limits, shared by its workers (src/runtime/hardware.ts).
     */
    slots: SlotsSchema.optional(),
    /** Memory one agent is taken to need, for `slots: auto` (MB). */
    agentMemoryMb: z.number().int().min(16).max(1_048_576).default(AGENT_MEMORY_MB_DEFAULT),
    /** Where task worktrees go; default `$XDG_CACHE_HOME/ado/worktrees` (never inside your checkout). */
    worktreeDir: z.string().min(1).optional(),
    /** Task worktrees: files copied in (include), dependency dirs, cleanup (src/git/worktree-config.ts). */
    worktrees: WorktreesConfigSchema.default(worktreesDefault),
    logLevel: z.enum(LOG_LEVELS).default("warn"),
    balancer: z
      .object({
        strategy: z.enum(BALANCER_STRATEGIES).default("least_loaded"),
        /** Ready tasks of one priority level the balancer holds in memory (in priority order); the rest wait in the stream. */
        maxHeld: z.number().int().min(1).max(100_000).default(10_000),
      })
      .strict()
      .default({ strategy: "least_loaded", maxHeld: 10_000 }),
    /**
     * The accounts agents run on (src/runtime/providers.ts): agent, access mode, where the
     * credential is, limits and circuit breaker. Every balancer and worker of a fleet
     * should read the same list.
     */
    providers: ProvidersConfigSchema.default({}),
    /** What this host's workers advertise; tasks select workers by labels and capabilities. */
    worker: z
      .object({
        labels: z.array(z.string().min(1)).default([]),
        capabilities: z.array(z.string().min(1)).default([]),
        accessMode: z.enum(["subscription", "api", "local"]).default("local"),
        costPerTask: z.number().min(0).default(0),
        /** The scaler's pool these workers belong to (`ado worker --pool`; a pool's backend sets it). */
        pool: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "letters, digits, '_' or '-'").optional(),
      })
      .strict()
      .default({ labels: [], capabilities: [], accessMode: "local", costPerTask: 0 }),
    /**
     * The elastic pool: how often the scaler decides, and its pools of workers (backend
     * `local`, `ssh`, `kubernetes` or `command`, each with its own min, max and policy).
     * See src/runtime/scaling.ts.
     */
    scaler: ScalerConfigSchema.default({ interval: 2_000, pools: [] }),
    /** The stealer's live rebalancing: how often it looks, and the load difference that moves queued work. */
    stealer: z
      .object({
        /**
         * How often work queued behind a busy worker goes back to the ready queue when
         * another could start it (e.g. "5s"); 0, the default, turns it off. Off by default
         * for now: with one balancer, work only queues behind a worker it was pinned to or
         * that slowed down, and a move changes which worker a queued task runs on.
         */
        rebalanceInterval: z.union([z.literal(0), DurationSchema]).default(0),
        /** Load (running + queued over slots) difference beyond which work moves: 0.3 is 30%. */
        rebalanceThreshold: z.number().min(0).max(10).default(0.3),
      })
      .strict()
      .default({ rebalanceInterval: 0, rebalanceThreshold: 0.3 }),
    /**
     * Most tasks of accepted runs not finished yet, across runs (dependents count from
     * acceptance); a submission that would go beyond it is refused as "queue full".
     */
    maxQueued: z.number().int().min(1).default(100_000),
    /** Worker heartbeat; the balancer drops a worker silent for 3 heartbeats. */
    heartbeatMs: z.number().int().min(50).max(60_000).default(1_000),
    shutdown: z
      .object({ graceMs: z.number().int().min(0).default(10_000), forceMs: z.number().int().min(0).default(5_000) })
      .strict()
      .default({ graceMs: 10_000, forceMs: 5_000 }),
    /**
     * The embedded server (`ado run` without a server, `ado up`): its store, its port,
     * and `auth` (default on): a user per role with keys kept under the store, so no
     * other local user can connect. `auth: false` leaves it open to anyone who reaches
     * the port (for tools of your own that connect without credentials).
     */
    embedded: z
      .object({ storeDir: z.string().optional(), port: z.number().int().min(0).max(65_535).optional(), auth: z.boolean().default(true) })
      .strict()
      .default({ auth: true }),
    /**
     * Merge settings for the runs this machine submits (mode, per-path rules, resolver,
     * validate, into). A graph file's `merge:` and `ado run` flags override them; the
     * result travels with the run, so every merger applies the run's own settings.
     */
    merge: MergeFileSchema.default({}),
    /**
     * Budgets of the runs this machine submits: a cap for runs that set none (`maxCost`
     * USD, `maxTokens`), what a run does when its next task would pass it (`onExceed`:
     * `wait` for `ado budget raise`, or `stop`), and what to reserve for a task with no
     * cost history (`defaultTaskCost`, `defaultTaskTokens`; 0: nothing). See src/runtime/budget.ts.
     */
    budget: BudgetConfigSchema.default(BUDGET_CONFIG_DEFAULT),
    /**
     * Remote mode, submitter side: the git URL (reachable from every host) that runs
     * submitted from here use; `ado run --remote` overrides it.
     */
    remote: z.string().min(1).optional(),
    /**
     * How this host's workers and merge coordinator reach a run's repository: `shared`
     * (the run's path, on a shared disk), `clone` (a clone of the run's remote, for hosts
     * with their own disk), or `auto` (the path when it is here, else a clone).
     */
    git: z
      .object({ access: z.enum(GIT_ACCESS).default("auto"), cloneDir: z.string().min(1).optional() })
      .strict()
      .default({ access: "auto" }),
    /**
     * How this host runs each agent CLI (claude, codex, gemini, cursor, aider): binary,
     * extra args and environment, default model, access mode (which credentials it gets),
     * idle timeout, linger (src/agents/adapter.ts AgentConfigSchema).
     */
    agents: AgentsConfigSchema.default({}),
    /** USD per million tokens by model, over the defaults (src/agents/prices.ts): what CLIs that report no cost cost. */
    prices: PriceTableSchema.default({}),
    /**
     * How often a worker checkpoints an agent CLI's work while it runs (the worktree
     * committed to the attempt's checkpoint ref, the session stored), so an attempt lost
     * with its worker resumes from there; `off` for never.
     */
    checkpointInterval: z.union([z.literal("off"), DurationSchema]).default(10 * 60_000),
    /**
     * Webhooks the notifier posts to (docs/schemas/webhook.v1.json): each URL, the events
     * it wants (default all), and a secret that signs the body (`Ado-Signature:
     * sha256=<hex HMAC>`). A delivery is tried `attempts` times with backoff.
     */
    notifications: z
      .object({
        webhooks: z
          .array(
            z
              .object({
                url: z.url({ protocol: /^https?$/ }),
                secret: z.string().min(1).optional(),
                events: z.array(z.enum(WEBHOOK_EVENTS)).min(1).default([...WEBHOOK_EVENTS]),
              })
              .strict(),
          )
          .default([]),
        attempts: z.number().int().min(1).max(20).default(5),
      })
      .strict()
      .default({ webhooks: [], attempts: 5 }),
    /**
     * How ado authenticates to NATS (src/runtime/nats-auth.ts): user and password, a
     * token, an nkey seed file, a creds file; TLS with a CA and a client certificate;
     * `roleDir`: the per-role seeds `ado nats config` wrote, so each actor connects as its role.
     */
    nats: z
      .object({
        user: z.string().min(1).optional(),
        password: z.string().optional(),
        token: z.string().min(1).optional(),
        nkeyFile: z.string().min(1).optional(),
        credsFile: z.string().min(1).optional(),
        roleDir: z.string().min(1).optional(),
        tls: z.object({ ca: z.string().min(1).optional(), cert: z.string().min(1).optional(), key: z.string().min(1).optional() }).strict().optional(),
        /**
         * Copies of every stream, KV bucket and object store (`ado up`, `ado run`, every
         * actor process applies it at start, to existing ones too): `auto` is 3 on a
         * server that is part of a cluster, 1 on a single server.
         */
        replicas: z.union([z.literal("auto"), z.number().int().min(1).max(5)]).default("auto"),
      })
      .strict()
      .default({ replicas: "auto" }),
  })
  .strict();

type ParsedConfig = z.output<typeof ConfigSchema>;

/**
 * The configuration with every default resolved (once, here: nothing downstream writes
 * its own fallback). Paths are absolute.
 */
export type Config = Omit<ParsedConfig, "worktreeDir" | "git" | "checkpointInterval" | "slots"> & {
  /** Tasks per worker (`slots: auto`, the default, resolved for this host when the config was read). */
  slots: number;
  /** For `slots: auto`: what decided the number, in words. */
  slotsAuto?: string;
  /** What set `slots`: a file's path, `environment ADO_SLOTS`, `command-line flag`, `settings` (parseConfig's), or `default` (SLOTS_DEFAULT). */
  slotsFrom: string;
  worktreeDir: string;
  git: ParsedConfig["git"] & { cloneDir: string };
  /** Milliseconds; 0: off. */
  checkpointIntervalMs: number;
};
export const CONFIG_FILE = "ado.config.yaml";

/** Environment variables that override the file, and the field each sets. */
export const ENV_VARS: Record<string, { path: string[]; number?: boolean; boolean?: boolean }> = {
  ADO_PREFIX: { path: ["prefix"] },
  ADO_SERVER: { path: ["server"] },
  ADO_WORKERS: { path: ["workers"], number: true },
  ADO_SLOTS: { path: ["slots"], number: true },
  ADO_WORKTREE_DIR: { path: ["worktreeDir"] },
  ADO_LOG_LEVEL: { path: ["logLevel"] },
  ADO_BALANCER_STRATEGY: { path: ["balancer", "strategy"] },
  ADO_HEARTBEAT_MS: { path: ["heartbeatMs"], number: true },
  ADO_REMOTE: { path: ["remote"] },
  ADO_GIT_ACCESS: { path: ["git", "access"] },
  ADO_CLONE_DIR: { path: ["git", "cloneDir"] },
  ADO_CHECKPOINT_INTERVAL: { path: ["checkpointInterval"] },
  ADO_WORKER_POOL: { path: ["worker", "pool"] },
  ADO_EMBEDDED_AUTH: { path: ["embedded", "auth"], boolean: true },
  ADO_NATS_USER: { path: ["nats", "user"] },
  ADO_NATS_PASSWORD: { path: ["nats", "password"] },
  ADO_NATS_TOKEN: { path: ["nats", "token"] },
  ADO_NATS_NKEY: { path: ["nats", "nkeyFile"] },
  ADO_NATS_CREDS: { path: ["nats", "credsFile"] },
  ADO_NATS_ROLE_DIR: { path: ["nats", "roleDir"] },
  ADO_NATS_TLS_CA: { path: ["nats", "tls", "ca"] },
  ADO_NATS_TLS_CERT: { path: ["nats", "tls", "cert"] },
  ADO_NATS_TLS_KEY: { path: ["nats", "tls", "key"] },
};

/**
 * NATS authentication from the environment alone (ADO_NATS_*), for connections made
 * without a loaded config (CLI commands that only talk to a server).
 */
export function natsAuthFromEnv(env: NodeJS.ProcessEnv = process.env): NonNullable<Config["nats"]> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(ENV_VARS)) {
    if (spec.path[0] !== "nats" || !env[name]) continue;
    setPath(out, spec.path.slice(1), env[name]);
  }
  return out as NonNullable<Config["nats"]>;
}

export interface LoadConfigOptions {
  /** Explicit config file (`--config`); an error if missing. */
  file?: string;
  /** Directory searched for ado.config.yaml when no file is given. */
  dir?: string;
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags (highest precedence); undefined entries are ignored. */
  flags?: Record<string, unknown>;
}

/**
 * Loads the configuration: file, then environment, then flags. Every error names the
 * field, where the value came from, and what is allowed.
 */
export async function loadConfig(opts: LoadConfigOptions = {}): Promise<Config> {
  const sources = new Map<string, string>();
  const merged: Record<string, unknown> = {};

  const path = opts.file ? resolve(opts.file) : join(resolve(opts.dir ?? process.cwd()), CONFIG_FILE);
  let text: string | undefined;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if (opts.file) throw new ConfigError(`config file '${path}' cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (text !== undefined) {
    let raw: unknown;
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(`config file '${path}' is not valid YAML: ${(err as Error).message}`, { cause: err });
    }
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw new ConfigError(`config file '${path}' must be a mapping of settings, like "workers: 4"`);
    }
    deepAssign(merged, raw as Record<string, unknown>, sources, path);
  }

  const env = opts.env ?? process.env;
  for (const [name, spec] of Object.entries(ENV_VARS)) {
    const value = env[name];
    if (value === undefined || value === "") continue;
    const parsed = spec.number && /^-?\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : spec.boolean ? parseBool(value) : value;
    setPath(merged, spec.path, parsed);
    sources.set(spec.path.join("."), `environment ${name}`);
  }

  for (const [key, value] of Object.entries(opts.flags ?? {})) {
    if (value === undefined) continue;
    setPath(merged, key.split("."), value);
    sources.set(key, "command-line flag");
  }

  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const field = issue.path.join(".") || "(root)";
      // An unknown key is reported on its parent: look up where the key itself came from.
      const keyPaths = issue.code === "unrecognized_keys" ? issue.keys.map((k) => [...issue.path, k].join(".")) : [field];
      const from = keyPaths.map((k) => sources.get(k)).find(Boolean) ?? sources.get(String(issue.path[0])) ?? "default";
      let what = issue.message;
      if (issue.code === "invalid_value" && "values" in issue) {
        what = `expected one of ${(issue.values as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
      } else if (issue.code === "unrecognized_keys") {
        what = `unknown setting(s) ${issue.keys.map((k) => `'${k}'`).join(", ")}; known: ${Object.keys(ConfigSchema.shape).join(", ")}`;
      }
      return `${field} (from ${from}): ${what}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  return resolveDefaults(result.data, env, sources.get("slots"));
}

/**
 * Parses settings given in code (tests, embedding programs) and resolves their defaults
 * as loadConfig does. The environment overrides nothing given here; it only fills what
 * is not: `slots` from ADO_SLOTS (before the default, auto), and the cache directories.
 */
export function parseConfig(input: z.input<typeof ConfigSchema>, env: NodeJS.ProcessEnv = process.env): Config {
  return resolveDefaults(ConfigSchema.parse(input), env, input.slots === undefined ? undefined : "settings");
}

/** ADO_SLOTS, where set: a number of slots or `auto`. */
function slotsOfEnv(env: NodeJS.ProcessEnv): z.output<typeof SlotsSchema> | undefined {
  const value = env.ADO_SLOTS?.trim();
  if (!value) return undefined;
  const parsed = SlotsSchema.safeParse(/^\d+$/.test(value) ? Number(value) : value);
  if (!parsed.success) throw new ConfigError(`invalid configuration:\n  slots (from environment ADO_SLOTS): '${value}' is not 1-1024 or "auto"`);
  return parsed.data;
}

/**
 * `slots` as a user reads it where it is reported (a worker's start line, `ado doctor`):
 * the number per worker, and what set it, e.g. `slots: 4 per worker (default: auto: 8
 * cores at load 3.2 (5 idle), ...)`.
 */
export function describeSlots(c: Pick<Config, "slots" | "slotsAuto" | "slotsFrom">): string {
  const n = `slots: ${c.slots} per worker`;
  if (c.slotsFrom === SLOTS_DEFAULT) return `${n} (default: auto: ${c.slotsAuto ?? "?"})`;
  return c.slotsAuto !== undefined ? `${n} (auto, from ${c.slotsFrom}: ${c.slotsAuto})` : `${n} (from ${c.slotsFrom})`;
}

function resolveDefaults({ checkpointInterval, slots, ...config }: ParsedConfig, env: NodeJS.ProcessEnv, from: string | undefined): Config {
  const path = (p: string) => resolve(expandHome(p, env));
  // Precedence: flags, then ADO_SLOTS, then the file (loadConfig has applied them all); else ADO_SLOTS where parseConfig's settings say nothing; else auto.
  const fromEnv = slots === undefined ? slotsOfEnv(env) : undefined;
  const setting = slots ?? fromEnv ?? "auto";
  const slotsFrom = slots !== undefined ? (from ?? "settings") : fromEnv !== undefined ? "environment ADO_SLOTS" : SLOTS_DEFAULT;
  const perWorker = setting === "auto" ? autoSlots(hostFacts(), { agentMemoryMb: config.agentMemoryMb, workers: config.workers }) : { slots: setting };
  return {
    ...config,
    slots: perWorker.slots,
    slotsFrom,
    ...("why" in perWorker ? { slotsAuto: perWorker.why } : {}),
    checkpointIntervalMs: checkpointInterval === "off" ? 0 : checkpointInterval,
    worktreeDir: path(config.worktreeDir ?? defaultWorktreeDir(env)),
    embedded: { ...config.embedded, ...(config.embedded.storeDir ? { storeDir: path(config.embedded.storeDir) } : {}) },
    git: { ...config.git, cloneDir: path(config.git.cloneDir ?? defaultCloneDir(env)) },
  };
}

/** Default worktree base: outside any checkout, in the user's cache directory. */
export function defaultWorktreeDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), "ado", "worktrees");
}

/** Default directory of this host's clones of runs' remotes: beside the worktrees. */
export function defaultCloneDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), "ado", "clones");
}

const cacheDir = (env: NodeJS.ProcessEnv) => env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");

/** An on/off environment value; anything else stays a string, which the schema refuses by name. */
function parseBool(value: string): boolean | string {
  const v = value.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  return value;
}

/** `~` and `~/x` mean the home directory, as in a shell; nothing else is expanded. */
function expandHome(path: string, env: NodeJS.ProcessEnv): string {
  if (path === "~" || path.startsWith("~/")) return join(env.HOME || homedir(), path.slice(1));
  return path;
}

function deepAssign(target: Record<string, unknown>, src: Record<string, unknown>, sources: Map<string, string>, from: string, prefix = "") {
  for (const [k, v] of Object.entries(src)) {
    const key = prefix ? `${prefix}.${k}` : k;
    sources.set(key, from);
    if (v && typeof v === "object" && !Array.isArray(v)) {
      if (!Object.hasOwn(target, k) || typeof target[k] !== "object" || target[k] === null) setOwn(target, k, {});
      deepAssign(target[k] as Record<string, unknown>, v as Record<string, unknown>, sources, from, key);
    } else {
      setOwn(target, k, v);
    }
  }
}

/**
 * `target[key] = value` as an own property, whatever the key: a file's `__proto__:`
 * assigned plainly set the prototype of the merged settings (and, one level down,
 * merged its keys into Object.prototype itself, for every object in the process). As
 * an own key it is just an unknown setting, reported as such.
 */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown) {
  let node = target;
  for (const k of path.slice(0, -1)) {
    if (!Object.hasOwn(node, k) || typeof node[k] !== "object" || node[k] === null) setOwn(node, k, {});
    node = node[k] as Record<string, unknown>;
  }
  setOwn(node, path[path.length - 1]!, value);
}
