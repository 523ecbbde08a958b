import type { JetStreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { PRIORITIES } from "../../runtime/graph.js";
import { newWorkerId } from "../../runtime/ids.js";
import { KvWatch } from "../../runtime/kv-watch.js";
import { LeaderLease, leaseTtlFor } from "../../runtime/lease.js";
import { SCHEMAS, type WorkerRecord } from "../../runtime/messages.js";
import { scalerKeys } from "../../runtime/names.js";
import { BACKEND_LABELS, effectivePolicy, policyOf, type PoolConfig, type ScalePolicy, type ScalerConfig, type ScalerPoolState } from "../../runtime/scaling.js";
import { consumers, livenessWindowMs } from "../../runtime/topology.js";
import { createBackend, workerLabels, type BackendContext, type ScalerBackend } from "./backend.js";
import { assignBacklog, decidePool, emptyMemory, type BacklogEntry, type PoolMemory, type PoolWorker, type ScaleDecision } from "./decide.js";

export interface ScalerOptions {
  /** The workers' heartbeat: a pool's worker not heard from for 3 of them is no capacity. */
  heartbeatMs: number;
  /** Config `scaler`: the decision interval and the pools. */
  config: ScalerConfig;
  /** The NATS URL workers it starts dial (local workers; SSH pools may set their own). */
  serverUrl: string;
  /** ADO_* settings its workers inherit (heartbeat, directories, log level). */
  workerEnv: Record<string, string>;
  /** Grace and force time of a worker asked to stop. */
  shutdown: { graceMs: number; forceMs: number };
  /** Leader lease time-to-live; default max(1 s, 3 heartbeats). */
  leaseTtlMs?: number;
  /** Stop the workers it started when it stops (default true; `false` leaves them running for a successor). */
  stopWorkersOnClose?: boolean;
}

interface Pool {
  cfg: PoolConfig;
  backend: ScalerBackend;
  memory: PoolMemory;
  /** Whether `memory` was read from KV in this leadership term. */
  loaded: boolean;
  last?: ScaleDecision;
  /** The policy of the last decision (for placing backlog: whether the pool may still grow). */
  policy?: ScalePolicy;
}

interface Seen {
  record: WorkerRecord;
  /** By this actor's clock (a record's heartbeatAt is another host's). */
  at: number;
}

/** Liveness windows (3 heartbeats each) of silence after which a worker is no capacity. */
const SILENT_WINDOWS = 5;
/** How long the balancers get to answer the backlog question. */
const STATS_WAIT_MS = 1_000;
/** Once one balancer answered, the others get this long more (so a pass does not wait out STATS_WAIT_MS). */
const STATS_STALL_MS = 250;

/**
 * The scaler: each pool of workers (config `scaler.pools`) kept at the size its work
 * needs. Every replica watches the worker registry; the one holding the `scaler` lease
 * decides, every `scaler.interval`, per pool: it gathers the ready backlog (what the
 * balancers hold, by placement, plus what waits in the ready stream beyond their window),
 * gives each placement's backlog to the pool whose workers would take it, and lets
 * decide.ts say how many workers to start and which to stop. The pool's backend carries
 * that out (backends/*.ts). Its memory of each pool (cooldowns, windows, workers
 * starting, crash backoff) goes to KV `scaler` (`state.<pool>`) after every decision,
 * so a successor goes on from it; a pool's live policy (`ado workers scale|autoscale`)
 * is read from the same bucket (`policy.<pool>`) at every decision.
 *
 * Scale-in never kills an agent mid-task: it stops only workers idle for the pool's
 * `idleTimeout`, and a stopped worker drains (finishes, or checkpoints and hands back).
 */
export class Scaler extends Actor {
  private lease!: LeaderLease;
  private jsm!: JetStreamManager;
  private watch?: KvWatch<WorkerRecord>;
  private readonly seen = new Map<string, Seen>();
  private readonly pools = new Map<string, Pool>();
  private ticker?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private readonly counts = { decisions: 0, launched: 0, stopped: 0, abandoned: 0, crashes: 0, errors: 0 };

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: ScalerOptions,
  ) {
    super("scaler", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    const { kv, nc, topo } = this.ctx;
    this.jsm = await this.js.jetstreamManager();
    for (const cfg of this.opts.config.pools) {
      const bctx: BackendContext = {
        pool: cfg,
        prefix: topo.prefix,
        serverUrl: this.opts.serverUrl,
        env: this.opts.workerEnv,
        log: this.log.child({ pool: cfg.name }),
        shutdown: this.opts.shutdown,
        drain: (id, reason) => this.requestDrain(id, reason),
        isLive: (id) => this.live(id) !== undefined,
      };
      this.pools.set(cfg.name, { cfg, backend: await createBackend(bctx), memory: emptyMemory(), loaded: false });
    }
    this.watch = new KvWatch({
      kv: kv.workers,
      nc,
      log: this.log,
      schema: SCHEMAS.WorkerRecord,
      what: "worker record",
      onPut: (key, record) => this.seen.set(key, { record, at: this.clock.now() }),
      onDelete: (key) => this.seen.delete(key),
    });
    await this.watch.start();
    this.lease = new LeaderLease({
      kv: kv.leases,
      name: "scaler",
      holder: this.instance,
      ttlMs: this.opts.leaseTtlMs ?? leaseTtlFor(this.opts.heartbeatMs),
      clock: this.clock,
      logger: this.log,
    });
    this.lease.start((leader) => {
      // A new term reads each pool's memory again: another leader may have decided meanwhile.
      if (leader) for (const p of this.pools.values()) p.loaded = false;
      this.log.info({ leader }, leader ? "scaler leads" : "scaler stands by");
    });
    this.ticker = setInterval(() => this.kick(), this.opts.config.interval);
  }

  /** A decision pass now (unless one is under way). */
  private kick(): Promise<void> {
    this.ticking ??= this.tick()
      .catch((err) => {
        this.counts.errors++;
        this.log.warn({ err: errorMessage(err) }, "scaling pass failed; the next one tries again");
      })
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  protected async onDrain(): Promise<void> {
    clearInterval(this.ticker);
    this.watch?.stop();
    await this.ticking;
    await this.lease?.release();
    const stop = this.opts.stopWorkersOnClose ?? true;
    await Promise.all([...this.pools.values()].map((p) => (stop ? p.backend.close() : Promise.resolve()).catch((err) => this.log.warn({ pool: p.cfg.name, err: errorMessage(err) }, "backend close failed"))));
  }

  override stats() {
    return {
      leader: this.lease?.isLeader ?? false,
      ...this.counts,
      pools: [...this.pools.values()].map((p) => ({
        pool: p.cfg.name,
        backend: p.cfg.backend,
        desired: p.last?.desired,
        warming: p.memory.warming.length,
        ready: this.poolWorkers(p.cfg.name).length,
        reason: p.memory.last?.reason,
        backendStatus: p.backend.status(),
      })),
    };
  }

  /**
   * A pool's worker record while it counts as capacity: present in the registry and heard
   * from within SILENT_WINDOWS liveness windows. More lenient than the stealer on purpose:
   * on a loaded host a heartbeat comes late, and a worker that flickers out of the count
   * would be replaced, then found one too many. A dead worker's record is deleted by the
   * stealer; the window only covers a registry nobody cleans.
   */
  private live(id: string): WorkerRecord | undefined {
    const s = this.seen.get(id);
    return s && this.clock.now() - s.at <= SILENT_WINDOWS * livenessWindowMs(this.opts.heartbeatMs) ? s.record : undefined;
  }

  private poolWorkers(pool: string): WorkerRecord[] {
    const out: WorkerRecord[] = [];
    for (const id of this.seen.keys()) {
      const r = this.live(id);
      if (r?.pool === pool) out.push(r);
    }
    return out;
  }

  private async tick(): Promise<void> {
    if (!this.isRunning || !this.lease.isLeader || this.pools.size === 0) return;
    const term = this.lease.term ?? 0;
    for (const p of this.pools.values()) if (!p.loaded) await this.loadMemory(p);
    const entries = await this.backlog();
    const { perPool } = assignBacklog(
      entries,
      [...this.pools.values()].map((p) => ({
        name: p.cfg.name,
        labels: workerLabels(BACKEND_LABELS[p.cfg.backend], p.cfg),
        capabilities: p.cfg.capabilities,
        agents: p.cfg.agents ?? (p.memory.agents.length ? p.memory.agents : undefined),
        room: this.poolWorkers(p.cfg.name).length + p.memory.warming.length < (p.policy ?? policyOf(p.cfg)).max,
      })),
    );
    const onSubjects = await this.workOnSubjects();
    const now = this.clock.now();
    for (const p of this.pools.values()) {
      if (!this.isRunning || !this.lease.isLeader) return;
      const policy = await this.livePolicy(p);
      const records = this.poolWorkers(p.cfg.name);
      for (const r of records) p.backend.ready(r.workerId, r);
      const exits = p.backend.takeExits();
      this.counts.crashes += exits.filter((e) => !e.requested).length;
      // Queued: messages on its subject beyond what it runs (a worker acks its work only after the result); its own `pending` is as of its last fetch.
      const queued = (r: WorkerRecord) => (onSubjects ? Math.max(0, (onSubjects.get(this.ctx.topo.subjects.work(r.workerId)) ?? 0) - r.running) : r.pending);
      const workers: PoolWorker[] = records.map((r) => ({ id: r.workerId, state: r.state, slots: r.slots, running: r.running, queued: queued(r), agents: r.agents }));
      const d = decidePool({
        policy,
        observation: { slots: p.cfg.slots, workers, backlog: perPool.get(p.cfg.name) ?? 0, exits },
        memory: p.memory,
        now,
        newId: () => newWorkerId(p.cfg.name),
        instance: this.instance,
      });
      this.counts.decisions++;
      p.memory = d.memory;
      p.last = d;
      const acted = d.launch.length + d.stop.length + d.abandon.length > 0 || exits.length > 0;
      if (acted) this.log.info({ pool: p.cfg.name, launch: d.launch, stop: d.stop.map((s) => s.id), abandon: d.abandon, desired: d.desired }, d.reason);
      else this.log.debug({ pool: p.cfg.name, desired: d.desired }, d.reason);
      // The memory is stored before the backend acts: a successor then knows of the launch (and waits for its warm-up) even if this leader dies half-way.
      await this.saveMemory(p, term);
      const target = d.desired;
      try {
        if (d.abandon.length) {
          await p.backend.abandon(d.abandon, target);
          this.counts.abandoned += d.abandon.length;
        }
        if (d.stop.length) {
          const byId = new Map(records.map((r) => [r.workerId, r]));
          await p.backend.stop(
            d.stop.map((s) => ({ ...s, ...(byId.has(s.id) ? { record: byId.get(s.id)! } : {}) })),
            target,
          );
          this.counts.stopped += d.stop.length;
        }
        if (d.launch.length) {
          await p.backend.launch(d.launch, target);
          this.counts.launched += d.launch.length;
        }
      } catch (err) {
        // The launches stay in `warming`: given up on after the warm-up timeout, which counts as a failure and backs off.
        this.counts.errors++;
        this.log.warn({ pool: p.cfg.name, err: errorMessage(err) }, "the pool's backend failed to carry out a decision");
      }
    }
  }

  /** The pool's policy: its config, then what `ado workers scale|autoscale` set (read at every decision, so a change needs no restart). */
  private async livePolicy(p: Pool) {
    const base = policyOf(p.cfg);
    let override;
    try {
      const e = await this.ctx.kv.scaler.get(scalerKeys.policy(p.cfg.name));
      if (e && e.operation === "PUT") override = decode(SCHEMAS.ScalerPolicy, e.value).policy;
    } catch (err) {
      this.log.warn({ pool: p.cfg.name, err: errorMessage(err) }, "the pool's live policy cannot be read; its config applies");
    }
    const policy = effectivePolicy(base, override);
    p.policy = policy;
    return policy;
  }

  private async loadMemory(p: Pool): Promise<void> {
    const e = await this.ctx.kv.scaler.get(scalerKeys.state(p.cfg.name));
    if (e && e.operation === "PUT") {
      try {
        const s = decode(SCHEMAS.ScalerState, e.value);
        const { pool: _pool, backend: _backend, term: _term, updatedAt: _at, ...memory } = s;
        p.memory = memory;
      } catch (err) {
        this.log.warn({ pool: p.cfg.name, err: errorMessage(err) }, "the scaler's stored state of the pool is unreadable; starting afresh");
      }
    }
    p.loaded = true;
  }

  private async saveMemory(p: Pool, term: number): Promise<void> {
    const rec: ScalerPoolState = { ...p.memory, pool: p.cfg.name, backend: p.cfg.backend, term, updatedAt: new Date(this.clock.now()).toISOString() };
    await this.ctx.kv.scaler.put(scalerKeys.state(p.cfg.name), encodeValue(SCHEMAS.ScalerState, rec));
  }

  /**
   * The ready work waiting for a worker: what each balancer replica holds, by placement
   * (its stats), plus what waits in the ready stream beyond their window (placement not
   * known yet: it goes to the first pool that serves any task).
   */
  private async backlog(): Promise<BacklogEntry[]> {
    const { topo, nc } = this.ctx;
    const entries: BacklogEntry[] = [];
    try {
      const client = new Svcm(nc).client({ maxWait: STATS_WAIT_MS, strategy: "stall", stall: STATS_STALL_MS });
      for await (const st of await client.stats(topo.service("balancer"))) {
        const data = st.endpoints?.[0]?.data as { backlog?: Array<{ agent: string; labels: string[]; requires: string[]; worker?: string; count: number }> } | undefined;
        for (const b of data?.backlog ?? []) entries.push(b);
      }
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, "no balancer answered the backlog question");
    }
    let beyond = 0;
    for (const level of PRIORITIES) {
      const info = await this.jsm.consumers.info(topo.streams.ready.name, consumers.readyLevel(level)).catch(() => undefined);
      beyond += info?.num_pending ?? 0;
    }
    if (beyond > 0) entries.push({ labels: [], requires: [], count: beyond });
    return entries;
  }

  /** Messages on each worker's work subject, in one request (undefined when the server does not answer: the records' own counts are used). */
  private async workOnSubjects(): Promise<Map<string, number> | undefined> {
    const { topo } = this.ctx;
    try {
      const info = await this.jsm.streams.info(topo.streams.work.name, { subjects_filter: topo.subjects.work("*") });
      return new Map(Object.entries(info.state.subjects ?? {}));
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, "work subjects not counted");
      return undefined;
    }
  }

  /** Asks a worker over NATS to drain (one this process did not start). */
  private async requestDrain(id: string, reason: string): Promise<boolean> {
    try {
      const { data, headers } = encode(SCHEMAS.WorkerDrain, { type: "worker.drain", by: this.instance, reason });
      await this.ctx.nc.request(this.ctx.topo.subjects.drain(id), data, { timeout: 2_000, headers });
      return true;
    } catch (err) {
      this.log.warn({ worker: id, err: errorMessage(err) }, "the worker did not answer the drain request");
      return false;
    }
  }
}
