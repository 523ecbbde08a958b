/**
 * `ado workers list|scale|autoscale|drain|rebalance`: the pool of workers as the registry and the
 * scaler see it, and the scaler's live policy. list, scale, autoscale and drain go
 * through the API (workers.list, workers.scale, workers.drain; KV directly only when no
 * API answers), so a client's NATS user is enough: `scale` and `autoscale` set a pool's
 * policy (KV `scaler`, `policy.<pool>`), which the scaler reads at its next decision, no
 * restart; `drain` asks one worker to stop taking work, finish (or checkpoint and hand
 * back) what it has, and stop. `rebalance` asks the stealer directly (an operator's).
 */
import type { Command } from "commander";
import { hostname, userInfo } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { isApiError } from "../runtime/api.js";
import { AdoClient } from "../runtime/client.js";
import { drainQuietly } from "../runtime/connection.js";
import { errorMessage } from "../runtime/errors.js";
import { formatDuration, parseDuration, DURATION_HINT } from "../runtime/duration.js";
import type { PolicyOverride } from "../runtime/scaling.js";
import { topology, type Topology } from "../runtime/topology.js";
import type { Config } from "../runtime/config.js";
import { workerRows, type WorkerRow } from "../runtime/workers-view.js";
import { CliError, clientConnection, configFrom, Exit, parseIntFlag, requireServer, type CommonFlags } from "./common.js";

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

export { workerRows, type WorkerRow } from "../runtime/workers-view.js";

/** Registers `ado workers ...`; `common` adds --server/--config/--prefix. */
export function registerWorkersCommands(program: Command, common: (cmd: Command) => Command, setExit: (code: number) => void): void {
  const group = program.command("workers").description("the pool of workers: list them, set how many (scale, autoscale), drain one");
  common(group.command("list").description("every worker: id, host, pool, labels, agents, slots, running, queued, state (warming, ready, draining), heartbeat age").option("--json", "print JSON")).action(
    async (flags: CommonFlags & { json?: boolean }) => setExit(await listCommand(flags)),
  );
  common(
    group
      .command("scale")
      .description("pin a pool at n workers (min = max = n); the scaler applies it at its next decision")
      .argument("<n>", "workers", parseIntFlag("n", 0, 10_000))
      .option("--pool <name>", "the pool (default: the only one)"),
  ).action(async (n: number, flags: CommonFlags & { pool?: string }) => setExit(await policyCommand({ min: n, max: n }, "scale", flags)));
  common(
    group
      .command("autoscale")
      .description("let the scaler size a pool between --min and --max from its backlog")
      .option("--min <n>", "fewest workers (0: scale to zero when idle)", parseIntFlag("min", 0, 10_000))
      .option("--max <n>", "most workers", parseIntFlag("max", 0, 10_000))
      .option("--target-queue <n>", "tasks waiting per worker, beyond its slots, before the pool grows", parseIntFlag("target-queue", 0, 10_000))
      .option("--cooldown <duration>", "least time between two scale-ups, and between two scale-downs (e.g. 60s)")
      .option("--idle-timeout <duration>", "an idle worker goes after this long (e.g. 5m)")
      .option("--pool <name>", "the pool (default: the only one)"),
  ).action(async (flags: CommonFlags & { pool?: string; min?: number; max?: number; targetQueue?: number; cooldown?: string; idleTimeout?: string }) => {
    const policy: PolicyOverride["policy"] = {};
    if (flags.min !== undefined) policy.min = flags.min;
    if (flags.max !== undefined) policy.max = flags.max;
    if (flags.targetQueue !== undefined) policy.targetQueue = flags.targetQueue;
    if (flags.cooldown !== undefined) {
      const ms = durationFlag("cooldown", flags.cooldown);
      policy.scaleUp = { cooldown: ms };
      policy.scaleDown = { cooldown: ms };
    }
    if (flags.idleTimeout !== undefined) policy.idleTimeout = Math.max(1, durationFlag("idle-timeout", flags.idleTimeout));
    if (Object.keys(policy).length === 0) throw new CliError("ado workers autoscale: give at least one of --min, --max, --target-queue, --cooldown, --idle-timeout");
    setExit(await policyCommand(policy, "autoscale", flags));
  });
  common(group.command("rebalance").description("move work queued behind busy workers back to the ready queue now, where another worker can start it (the stealer does it)")).action(
    async (flags: CommonFlags) => setExit(await rebalanceCommand(flags)),
  );
  common(
    group
      .command("drain")
      .description("ask one worker to stop taking work, finish (or checkpoint and hand back) what it runs, and stop")
      .argument("<id>", "worker id (from ado workers list)")
      .option("--grace <duration>", "time its running tasks get to finish before they are checkpointed and handed back (default: its shutdown grace)"),
  ).action(async (id: string, flags: CommonFlags & { grace?: string }) => setExit(await drainCommand(id, flags)));
}

function durationFlag(name: string, v: string): number {
  const ms = v === "0" || v === "0s" ? 0 : parseDuration(v);
  if (ms === undefined) throw new CliError(`--${name} '${v}' is not a duration: ${DURATION_HINT}`);
  return ms;
}

async function connect(flags: CommonFlags, what: string, role: "client" | "admin" = "client"): Promise<{ config: Config; nc: NatsConnection; topo: Topology }> {
  const { config, logger } = await configFrom(flags);
  const server = await requireServer(config, what);
  // list, scale, autoscale and drain go through the API (a client's right); a rebalancing pass is an operator's.
  const nc = await clientConnection(server, logger, role);
  return { config, nc, topo: topology(config.prefix) };
}

async function listCommand(flags: CommonFlags & { json?: boolean }): Promise<number> {
  const { config, nc, topo } = await connect(flags, "ado workers list");
  try {
    const listing = await new AdoClient(nc, topo).workers();
    const states = listing.pools.map((p) => p.state);
    const policies = listing.pools.flatMap((p) => (p.policy ? [p.policy] : []));
    const rows = workerRows(listing.workers, states, Date.now(), config.heartbeatMs);
    // Queued as the work stream holds it (a worker's own count is as of its last fetch); messages of what runs are still there.
    const queued = listing.queued;
    if (queued) {
      for (const r of rows) if (r.state !== "warming") r.queued = Math.max(0, (queued[r.id] ?? 0) - r.running);
    } else say("queued work is as the workers last saw it (the work stream was not read)");
    if (flags.json) {
      const pools = states.map((s) => ({ pool: s.pool, backend: s.backend, last: s.last, policy: policies.find((p) => p.pool === s.pool) }));
      process.stdout.write(JSON.stringify({ workers: rows, pools }, null, 2) + "\n");
      return Exit.ok;
    }
    if (rows.length === 0) process.stdout.write("no workers\n");
    else process.stdout.write(table(rows) + "\n");
    for (const s of states) {
      const p = policies.find((x) => x.pool === s.pool);
      process.stdout.write(`pool ${s.pool} (${s.backend})${p ? `, set by \`ado workers ${p.source}\` (${JSON.stringify(p.policy)})` : ""}: ${s.last?.reason ?? "no decision yet"}\n`);
    }
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

function table(rows: readonly WorkerRow[]): string {
  const head = ["ID", "HOST", "POOL", "STATE", "SLOTS", "RUNNING", "QUEUED", "HEARTBEAT", "LABELS", "AGENTS"];
  const cells = rows.map((r) => [r.id, r.host, r.pool || "-", r.state, String(r.slots), String(r.running), String(r.queued), `${formatDuration(r.heartbeatAgeS * 1000)} ago`, r.labels.join(",") || "-", r.agents.join(",") || "-"]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  return [head, ...cells].map((c) => c.map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i]!))).join("  ")).join("\n");
}

/** The pool a command means: --pool, else the only one configured or known to the scaler. */
function poolOf(flags: { pool?: string }, config: Config, scalerPools: readonly string[]): string {
  const known = new Set([...config.scaler.pools.map((p) => p.name), ...scalerPools]);
  if (flags.pool !== undefined) {
    if (!known.has(flags.pool)) {
      throw new CliError(`there is no pool '${flags.pool}'${known.size ? `: the pools are ${[...known].join(", ")}` : ": no pool is configured (add scaler.pools to ado.config.yaml)"}`);
    }
    return flags.pool;
  }
  if (known.size === 1) return [...known][0]!;
  if (known.size === 0) throw new CliError("no scaler pool is configured: add scaler.pools to ado.config.yaml (see docs/ARCHITECTURE.md, the scaler), then `ado up`");
  throw new CliError(`there are ${known.size} pools (${[...known].join(", ")}): name one with --pool`);
}

async function policyCommand(policy: PolicyOverride["policy"], source: PolicyOverride["source"], flags: CommonFlags & { pool?: string }): Promise<number> {
  const { config, nc, topo } = await connect(flags, `ado workers ${source}`);
  try {
    const client = new AdoClient(nc, topo);
    const { pools } = await client.workers();
    const pool = poolOf(flags, config, pools.map((p) => p.state.pool));
    // `autoscale` adds to what was set live before (a new --max keeps an earlier --min); `scale` replaces it.
    // Checked here in the flags' words; the API checks it again against its own configuration.
    const prev = pools.find((p) => p.state.pool === pool)?.policy;
    const merged = source === "autoscale" && prev?.source === "autoscale" ? { ...prev.policy, ...policy } : policy;
    const base = config.scaler.pools.find((p) => p.name === pool);
    const min = merged.min ?? base?.min ?? 0;
    const max = merged.max ?? base?.max ?? min;
    if (min > max) throw new CliError(`--min ${min} is above --max ${max}${merged.max === undefined ? " (the pool's configured max): give --max too" : ""}`);
    const record = await client.setPoolPolicy({ pool, policy, source, by: `${userInfo().username}@${hostname()}`, at: new Date().toISOString() });
    say(`pool ${pool}: ${source === "scale" ? `pinned at ${min} worker(s)` : `autoscaling ${JSON.stringify(record.policy)}`}; the scaler applies it at its next decision (ado workers list shows it)`);
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

async function drainCommand(id: string, flags: CommonFlags & { grace?: string }): Promise<number> {
  const graceMs = flags.grace === undefined ? undefined : durationFlag("grace", flags.grace);
  const { nc, topo } = await connect(flags, "ado workers drain");
  try {
    let answer;
    try {
      answer = await new AdoClient(nc, topo).drainWorker(id, { reason: "ado workers drain", ...(graceMs !== undefined ? { graceMs } : {}) });
    } catch (err) {
      if (isApiError(err, "not_found", "unavailable")) throw new CliError(err.message, Exit.failed);
      throw err;
    }
    say(`worker ${id} is draining (it was ${answer.state}): it takes no new work, finishes or hands back what it runs, then stops`);
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

async function rebalanceCommand(flags: CommonFlags): Promise<number> {
  const { nc, topo } = await connect(flags, "ado workers rebalance", "admin");
  try {
    let reply;
    try {
      reply = await nc.request(topo.subjects.rebalance, undefined, { timeout: 15_000 });
    } catch (err) {
      throw new CliError(`no stealer answered (${errorMessage(err)}): is one running (\`ado up\`, \`ado actor stealer\`)?`, Exit.failed);
    }
    const answer = JSON.parse(new TextDecoder().decode(reply.data)) as { ok: boolean; moved?: Array<{ key: string; from: string; to: string }>; error?: string };
    if (!answer.ok) throw new CliError(`the rebalancing pass failed: ${answer.error}`, Exit.failed);
    const moved = answer.moved ?? [];
    say(moved.length ? `${moved.length} queued task(s) moved back to the ready queue: ${moved.map((m) => `${m.key} (from ${m.from})`).join(", ")}` : "nothing to move: no queued work that another worker could start now");
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}
