/**
 * `ado workers list|scale|autoscale|drain|rebalance`: the pool of workers as the registry and the
 * scaler see it, and the scaler's live policy. `scale` and `autoscale` write a pool's
 * policy to KV `scaler` (`policy.<pool>`): the scaler reads it at its next decision, no
 * restart. `drain` asks one worker over NATS to stop taking work, finish (or checkpoint
 * and hand back) what it has, and stop.
 */
import type { Command } from "commander";
import { hostname, userInfo } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, encode, encodeValue } from "../runtime/codec.js";
import { drainQuietly } from "../runtime/connection.js";
import { listKeys } from "../runtime/kv-watch.js";
import { errorMessage } from "../runtime/errors.js";
import { formatDuration, parseDuration, DURATION_HINT } from "../runtime/duration.js";
import { SCHEMAS } from "../runtime/messages.js";
import { scalerKeys } from "../runtime/names.js";
import type { PolicyOverride } from "../runtime/scaling.js";
import { openBuckets, topology, type Topology } from "../runtime/topology.js";
import type { Config } from "../runtime/config.js";
import { readWorkers, type WorkerRow } from "../runtime/workers-view.js";
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

async function connect(flags: CommonFlags, what: string): Promise<{ config: Config; nc: NatsConnection; topo: Topology }> {
  const { config, logger } = await configFrom(flags);
  const server = await requireServer(config, what);
  // Operator commands: scaling policies, drains, rebalancing are beyond a client's rights.
  const nc = await clientConnection(server, logger, "admin");
  return { config, nc, topo: topology(config.prefix) };
}

async function listCommand(flags: CommonFlags & { json?: boolean }): Promise<number> {
  const { config, nc, topo } = await connect(flags, "ado workers list");
  try {
    const { rows, states, policies, problems } = await readWorkers(nc, topo, config.heartbeatMs);
    for (const p of problems) say(p);
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
async function poolOf(flags: { pool?: string }, config: Config, kv: Awaited<ReturnType<typeof openBuckets>>): Promise<string> {
  const known = new Set(config.scaler.pools.map((p) => p.name));
  for (const key of await listKeys(kv.scaler)) {
    const k = scalerKeys.parse(key);
    if (k?.kind === "state") known.add(k.pool);
  }
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
    const kv = await openBuckets(nc, topo);
    const pool = await poolOf(flags, config, kv);
    // `autoscale` adds to what was set live before (a new --max keeps an earlier --min); `scale` replaces it.
    const key = scalerKeys.policy(pool);
    const prev = source === "autoscale" ? await kv.scaler.get(key) : null;
    let merged = policy;
    if (prev && prev.operation === "PUT") {
      const old = decode(SCHEMAS.ScalerPolicy, prev.value);
      if (old.source === "autoscale") merged = { ...old.policy, ...policy };
    }
    const base = config.scaler.pools.find((p) => p.name === pool);
    const min = merged.min ?? base?.min ?? 0;
    const max = merged.max ?? base?.max ?? min;
    if (min > max) throw new CliError(`--min ${min} is above --max ${max}${merged.max === undefined ? " (the pool's configured max): give --max too" : ""}`);
    const record: PolicyOverride = { pool, policy: merged, source, by: `${userInfo().username}@${hostname()}`, at: new Date().toISOString() };
    await kv.scaler.put(key, encodeValue(SCHEMAS.ScalerPolicy, record));
    say(`pool ${pool}: ${source === "scale" ? `pinned at ${min} worker(s)` : `autoscaling ${JSON.stringify(merged)}`}; the scaler applies it at its next decision (ado workers list shows it)`);
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

async function drainCommand(id: string, flags: CommonFlags & { grace?: string }): Promise<number> {
  const graceMs = flags.grace === undefined ? undefined : durationFlag("grace", flags.grace);
  const { nc, topo } = await connect(flags, "ado workers drain");
  try {
    const { data, headers } = encode(SCHEMAS.WorkerDrain, { type: "worker.drain", by: `${userInfo().username}@${hostname()}`, reason: "ado workers drain", ...(graceMs !== undefined ? { graceMs } : {}) });
    let reply;
    try {
      reply = await nc.request(topo.subjects.drain(id), data, { headers, timeout: 5_000 });
    } catch (err) {
      throw new CliError(`worker '${id}' did not answer (${errorMessage(err)}): is it running? \`ado workers list\` shows the workers`, Exit.failed);
    }
    const answer = JSON.parse(new TextDecoder().decode(reply.data)) as { ok: boolean; state?: string; error?: string };
    if (!answer.ok) throw new CliError(`worker '${id}' refused the drain: ${answer.error}`, Exit.failed);
    say(`worker ${id} is draining (it was ${answer.state}): it takes no new work, finishes or hands back what it runs, then stops`);
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

async function rebalanceCommand(flags: CommonFlags): Promise<number> {
  const { nc, topo } = await connect(flags, "ado workers rebalance");
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
