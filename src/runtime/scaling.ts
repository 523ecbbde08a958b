import { z } from "zod";
import { DurationSchema } from "./duration.js";
import { ID_PATTERN } from "./ids.js";
import type { SchemaRef } from "./codec.js";

/**
 * The elastic pool's vocabulary, shared by the config (`scaler.pools`), the scaler actor
 * (src/actors/scaler) and `ado workers`: a pool of workers, the backend that starts and
 * stops them, the policy that says how many, and the two KV records of the scaler's
 * bucket (a pool's live policy, the scaler's memory of its decisions).
 */

/** How a pool's workers are started and stopped. */
export const BACKENDS = ["local", "ssh", "kubernetes", "command"] as const;
export type BackendKind = (typeof BACKENDS)[number];

/** A duration that may be zero ("no window"): 0, "0s", or anything DurationSchema takes. */
const DurationOrZero = z.union([z.literal(0), z.literal("0"), z.literal("0s"), DurationSchema]).transform((v) => (v === 0 || v === "0" || v === "0s" ? 0 : (v as number)));

const fraction = z.number().min(0).max(1);

/**
 * How many workers a pool should have. Every duration is in milliseconds once parsed.
 * The rules (src/actors/scaler/decide.ts): a pool wants `ceil((running + waiting) /
 * (slots + targetQueue))` workers, within [min, max]; while its utilization is inside the
 * band it keeps what it has (no flapping around the target); scale-up and scale-down
 * each have a cooldown and a stabilization window (Kubernetes' HPA: up takes the lowest
 * recommendation of its window, down the highest); only workers idle for `idleTimeout`
 * go (scale to zero when `min` is 0); at most `maxStep` workers start or stop per
 * decision; workers still starting count as capacity until `warmupTimeout`.
 */
export const ScalePolicySchema = z
  .object({
    min: z.number().int().min(0).max(10_000).default(0),
    max: z.number().int().min(0).max(10_000).default(4),
    /** Tasks waiting per worker (beyond its slots) that the pool accepts before it grows. 0: one slot per task. */
    targetQueue: z.number().int().min(0).max(10_000).default(0),
    /** Running tasks over the ready workers' slots: above `high` the pool may grow, below `low` it may shrink. */
    utilization: z.object({ low: fraction.default(0.5), high: fraction.default(0.8) }).strict().default({ low: 0.5, high: 0.8 }),
    scaleUp: z
      .object({ cooldown: DurationOrZero.default(5_000), stabilization: DurationOrZero.default(0) })
      .strict()
      .default({ cooldown: 5_000, stabilization: 0 }),
    scaleDown: z
      .object({ cooldown: DurationOrZero.default(30_000), stabilization: DurationOrZero.default(60_000) })
      .strict()
      .default({ cooldown: 30_000, stabilization: 60_000 }),
    /** A worker idle (nothing running or queued) this long may go. */
    idleTimeout: DurationSchema.default(60_000),
    /** Most workers started or stopped by one decision. */
    maxStep: z.number().int().min(1).max(1_000).default(4),
    /** A worker that has not heartbeat this long after it was started is given up on (and counts as a failure). */
    warmupTimeout: DurationSchema.default(120_000),
  })
  .strict();
export type ScalePolicyInput = z.input<typeof ScalePolicySchema>;
export type ScalePolicy = z.output<typeof ScalePolicySchema>;

/** The policy fields a pool sets in config, beside its backend settings. */
const POLICY_KEYS = Object.keys(ScalePolicySchema.shape) as Array<keyof ScalePolicy>;

const poolName = z.string().regex(ID_PATTERN, "letters, digits, '_' or '-' (it is a KV key and a label)");
const list = z.array(z.string().min(1)).default([]);
const env = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name"), z.string()).default({});

/** One SSH host of a pool. */
export const SshHostSchema = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65_535).default(22),
    user: z.string().min(1).optional(),
    identityFile: z.string().min(1).optional(),
    /** Where the workers run on that host: worktrees, clones and each worker's scratch directory go under it. */
    workDir: z.string().min(1),
    /** Most workers of this pool on the host. */
    maxWorkers: z.number().int().min(1).max(1_000).default(64),
    /** Labels only this host's workers advertise (besides the pool's). */
    labels: list,
  })
  .strict();
export type SshHost = z.output<typeof SshHostSchema>;

export const PoolConfigSchema = ScalePolicySchema.extend({
  name: poolName,
  backend: z.enum(BACKENDS),
  /** Tasks each worker of the pool runs at once. */
  slots: z.number().int().min(1).max(1_024).default(1),
  /** Placement labels and capabilities its workers advertise (the backend adds its own: `local`, `process`; `ssh`). */
  labels: list,
  capabilities: list,
  /** Agents its workers offer, when known in advance; otherwise learned from its workers' records. */
  agents: z.array(z.string().min(1)).optional(),
  /** Extra environment of its workers. */
  env,
  local: z
    .object({
      /** The command that runs ado (default: this ado's own bin/ado.mjs with this Node). */
      command: z.string().min(1).optional(),
      /** Where each worker's output goes (`<id>.log`); default `$XDG_STATE_HOME/ado/workers`. */
      logDir: z.string().min(1).optional(),
    })
    .strict()
    .default({}),
  ssh: z
    .object({
      hosts: z.array(SshHostSchema).min(1, "an ssh pool needs at least one host"),
      /** How ado is run on the hosts. */
      command: z.string().min(1).default("ado"),
      /** The NATS URL as the hosts reach it (default: the one the scaler uses). */
      server: z.string().min(1).optional(),
      /** Extra `ssh -o` options, e.g. `StrictHostKeyChecking=accept-new`. */
      options: z.array(z.string().min(1)).default([]),
      /** Remove each worker's scratch directory on the host after it stopped. */
      cleanup: z.boolean().default(true),
      /** Time an SSH connection may take. */
      connectTimeout: DurationSchema.default(10_000),
    })
    .strict()
    .optional(),
  kubernetes: z
    .object({
      namespace: z.string().min(1).default("default"),
      /** The workers' Deployment, scaled through its scale subresource. */
      deployment: z.string().min(1),
      /** A kubeconfig file; default: in-cluster credentials when running in a pod, else the default kubeconfig. */
      kubeconfig: z.string().min(1).optional(),
      context: z.string().min(1).optional(),
      /** Mark the pods of workers chosen to go (idle first) with a low pod-deletion-cost, so the ReplicaSet removes those. */
      podDeletionCost: z.boolean().default(true),
    })
    .strict()
    .optional(),
  command: z
    .object({
      /** Starts workers: gets ADO_SCALE_POOL, ADO_SCALE_COUNT (how many), ADO_SCALE_TARGET (the pool's new size), ADO_WORKER_IDS (ids for `ado worker --id`), ADO_SERVER, ADO_PREFIX. */
      up: z.string().min(1),
      /** Removes workers once they have drained: gets ADO_SCALE_POOL, ADO_SCALE_COUNT, ADO_SCALE_TARGET, ADO_WORKER_IDS, ADO_WORKER_HOSTS. */
      down: z.string().min(1),
      timeout: DurationSchema.default(600_000),
    })
    .strict()
    .optional(),
})
  .strict()
  .superRefine((pool, ctx) => {
    if (pool.min > pool.max) ctx.addIssue({ code: "custom", path: ["min"], message: `min (${pool.min}) is above max (${pool.max})` });
    if (pool.utilization.low > pool.utilization.high) {
      ctx.addIssue({ code: "custom", path: ["utilization"], message: `low (${pool.utilization.low}) is above high (${pool.utilization.high})` });
    }
    const needs: Record<BackendKind, "local" | "ssh" | "kubernetes" | "command"> = { local: "local", ssh: "ssh", kubernetes: "kubernetes", command: "command" };
    const section = needs[pool.backend];
    if (section !== "local" && !pool[section]) {
      ctx.addIssue({ code: "custom", path: [section], message: `a pool with backend '${pool.backend}' needs its '${section}:' settings` });
    }
  });
export type PoolConfig = z.output<typeof PoolConfigSchema>;

/** Config `scaler`: how often it decides, and its pools. */
export const ScalerConfigSchema = z
  .object({
    interval: DurationSchema.default(2_000),
    pools: z.array(PoolConfigSchema).default([]),
  })
  .strict()
  .superRefine((s, ctx) => {
    const seen = new Set<string>();
    for (const [i, p] of s.pools.entries()) {
      if (seen.has(p.name)) ctx.addIssue({ code: "custom", path: ["pools", i, "name"], message: `pool '${p.name}' is named twice` });
      seen.add(p.name);
    }
  });
export type ScalerConfig = z.output<typeof ScalerConfigSchema>;

/** A pool's policy as its config sets it. */
export function policyOf(pool: PoolConfig): ScalePolicy {
  return Object.fromEntries(POLICY_KEYS.map((k) => [k, pool[k]])) as ScalePolicy;
}

/** Labels a backend adds to what its workers advertise. */
export const BACKEND_LABELS: Record<BackendKind, readonly string[]> = {
  local: ["local", "process"],
  ssh: ["ssh"],
  kubernetes: ["kubernetes"],
  command: [],
};

// ---- KV records (bucket `<p>-scaler`) ------------------------------------------------

const isoTime = z.string().datetime({ offset: true });
const ms = z.number().int().min(0);

/**
 * A pool's policy as set live (`ado workers scale|autoscale`), over its config: only the
 * fields given. The scaler watches the bucket, so a change applies at its next decision.
 */
export const PolicyOverride = z.object({
  pool: poolName,
  policy: z
    .object({
      min: z.number().int().min(0).max(10_000),
      max: z.number().int().min(0).max(10_000),
      targetQueue: z.number().int().min(0).max(10_000),
      utilization: z.object({ low: fraction, high: fraction }),
      scaleUp: z.object({ cooldown: ms, stabilization: ms }).partial(),
      scaleDown: z.object({ cooldown: ms, stabilization: ms }).partial(),
      idleTimeout: z.number().int().min(1),
      maxStep: z.number().int().min(1).max(1_000),
      warmupTimeout: z.number().int().min(1),
    })
    .partial(),
  /** `scale`: pinned at one size (`ado workers scale <n>`); `autoscale`: a range. */
  source: z.enum(["scale", "autoscale"]),
  by: z.string(),
  at: isoTime,
});
export type PolicyOverride = z.infer<typeof PolicyOverride>;
export const POLICY_OVERRIDE: SchemaRef<PolicyOverride> = { name: "scaler.policy", version: 1, schema: PolicyOverride };

/** The policy a pool runs under: its config, then the live override's fields. */
export function effectivePolicy(base: ScalePolicy, override?: PolicyOverride["policy"]): ScalePolicy {
  if (!override) return base;
  return {
    ...base,
    ...override,
    utilization: { ...base.utilization, ...override.utilization },
    scaleUp: { ...base.scaleUp, ...override.scaleUp },
    scaleDown: { ...base.scaleDown, ...override.scaleDown },
  };
}

/** A worker the scaler started and has not seen heartbeat yet (or asked to stop). */
const LaunchRecord = z.object({
  id: z.string(),
  /** Epoch ms of the decision that started it. */
  at: ms,
  /** The scaler instance that started it: a process-bound backend's launch dies with that instance. */
  by: z.string(),
  host: z.string().optional(),
});

/**
 * The scaler leader's memory of one pool (key `state.<pool>`), so a successor goes on
 * where it stopped: cooldowns, stabilization windows, idle times, workers starting and
 * stopping, warm-up times and crash backoff. Also what `ado workers list` shows of
 * workers that are still starting.
 */
export const ScalerPoolState = z.object({
  pool: poolName,
  backend: z.enum(BACKENDS),
  lastUpAt: ms.optional(),
  lastDownAt: ms.optional(),
  /** Recommendations (desired size before stabilization) within the longest window. */
  recommendations: z.array(z.object({ at: ms, desired: z.number().int().min(0) })).default([]),
  /** When each worker was first seen idle, continuously since. */
  idleSince: z.record(z.string(), ms).default({}),
  warming: z.array(LaunchRecord).default([]),
  /** Workers asked to stop, and when. */
  stopping: z.record(z.string(), ms).default({}),
  /** Worker ids of the pool already seen (a new one may end a warm-up that had no id). */
  seen: z.array(z.string()).default([]),
  /** Agents the pool's workers offered (what it can serve when none is up). */
  agents: z.array(z.string()).default([]),
  /** The last few warm-up times (decision to first heartbeat), ms. */
  warmups: z.array(ms).default([]),
  /** Workers that crashed or never came up in a row, and not before when the next may start. */
  failures: z.number().int().min(0).default(0),
  retryAt: ms.optional(),
  /** The last decision, in words, and what it saw. */
  last: z
    .object({
      at: ms,
      desired: z.number().int().min(0),
      ready: z.number().int().min(0),
      warming: z.number().int().min(0),
      backlog: z.number().int().min(0),
      running: z.number().int().min(0),
      reason: z.string(),
    })
    .optional(),
  /** Lease term of the leader that wrote it. */
  term: z.number().int().min(0).default(0),
  updatedAt: isoTime,
});
export type ScalerPoolState = z.infer<typeof ScalerPoolState>;
export const SCALER_POOL_STATE: SchemaRef<ScalerPoolState> = { name: "scaler.state", version: 1, schema: ScalerPoolState };
