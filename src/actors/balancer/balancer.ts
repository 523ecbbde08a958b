import { JetStreamApiCodes, JetStreamApiError, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { PRIORITIES } from "../../runtime/graph.js";
import { SCHEMAS, type AdoEvent, type TaskWork } from "../../runtime/messages.js";
import { ControlView } from "../../runtime/control.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";
import { dispatchPass, type Route } from "./dispatch-pass.js";
import { ReadyQueue } from "./ready-queue.js";
import { WorkerRegistry } from "./registry.js";
import { placementKey, Router, type Strategy } from "./strategy.js";
import { digest, Unplaceable, WaitingTracker } from "./waiting.js";
import { attemptKey, msgIds } from "../../runtime/names.js";
import { backlogByPlacement } from "./backlog.js";
import { Governor, type GovernorPass } from "../../runtime/governor/governor.js";
import { providerAssignment, type ProviderAssignment, type ProvidersConfig } from "../../runtime/providers.js";
import type { ReadyEntry } from "./ready-queue.js";

export interface BalancerOptions {
  heartbeatMs: number;
  /** Default strategy; a run may name its own. */
  strategy?: Strategy;
  /**
   * Most ready tasks of one priority level held in memory at once (each level has its
   * own window); the rest wait in the stream.
   */
  maxHeld?: number;
  /** Redelivery time of a held ready message; kept alive with in-progress acks. */
  ackWaitMs?: number;
  /** Providers tasks may name (config `providers:`); the governor grants them fleet-wide. */
  providers?: ProvidersConfig;
  /** Each priced provider's expected cost of a task (USD), for `rotation: cost_optimized`. */
  taskCosts?: Readonly<Record<string, number>>;
}

/**
 * Ack wait of held ready messages. A balancer that dies leaves what it held unacked: this
 * long until another replica (or its restart) gets it. Held messages are kept alive with
 * an in-progress ack every third of it: with 10,000 held (maxHeld) that is 3,000 small
 * publishes a second; measured, each round blocks this event loop 12-25 ms and the
 * server uses ~1% of a core for them (0.2% at the 60 s this used to be).
 */
export const READY_ACK_WAIT_MS = 10_000;

/** Default window of held ready messages, per priority level. */
export const MAX_HELD = 10_000;

/** A refused permit with no known time (a concurrency limit, probes running): look again this soon. */
const PROVIDER_RECHECK_MS = 1_000;

/** How often held tasks are checked for having no eligible worker (task.waiting). */
const WAITING_CHECK_MS = 1_000;
/** Most task.waiting events one check publishes; the rest follow in the next checks. */
const WAITING_ANNOUNCE_MAX = 1_000;

interface Held {
  work: TaskWork;
  msg: JsMsg;
  /** How to place it, worked out once on arrival rather than on every dispatch pass. */
  route: Route;
  /** A task that names providers: the provider its current route is for, once one was chosen. */
  provider?: string;
}

/**
 * The balancer actor. It holds ready tasks in priority order (level; then the older run;
 * then, within a run, the longest remaining path; then arrival; retries wait out their
 * backoff) and hands one to a worker only when that worker has a free slot, choosing
 * among the eligible workers by the run's or the configured strategy. So work beyond
 * the cluster's capacity waits in the ready stream instead of queueing behind a busy
 * worker.
 *
 * Each priority level has a consumer of its own, with its own window of held messages
 * (`maxHeld`): a backlog of normal tasks far larger than the window never keeps a
 * critical task out of the held queue, so a critical task is dispatched next at any
 * backlog. (With one consumer for all levels, tasks beyond the window came in stream
 * order and a critical one waited behind every normal one before it.)
 *
 * Held messages are not acked until their work message is stored on the worker's
 * subject; in-progress acks keep them from being redelivered meanwhile. A balancer that
 * dies loses nothing: its held messages are redelivered to another replica.
 *
 * A held task that no connected worker may take (no worker at all, none with its agent,
 * labels or capabilities, its pinned worker gone) is announced as `task.waiting` with
 * the reason after ~2 s, so nobody waits on a task that cannot start.
 */
export class Balancer extends Actor {
  private registry!: WorkerRegistry;
  private control!: ControlView;
  private readonly messages: ConsumerMessages[] = [];
  private readonly queue = new ReadyQueue<Held>();
  private readonly waiting = new WaitingTracker();
  private waitingTimer?: NodeJS.Timeout;
  private readonly router = new Router();
  private scheduled = false;
  /** Set by a control change: the next dispatch pass drops held work of cancelled runs. */
  private purgeCancelled = false;
  private dueTimer?: NodeJS.Timeout;
  private keepAlive?: NodeJS.Timeout;
  private assigned = 0;
  /** Grants providers to tasks that name them (KV `providers`, shared by every replica). */
  private governor!: Governor;
  /** When a task waiting for a provider may get one (a refill, a cooldown's end): a pass then. */
  private providerTimer?: NodeJS.Timeout;
  private providerDue?: number;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: BalancerOptions,
  ) {
    super("balancer", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    const { topo, nc, kv } = this.ctx;
    this.registry = new WorkerRegistry(nc, kv.workers, topo, this.clock, this.opts.heartbeatMs, this.log, () => this.kick());
    await this.registry.start();
    this.control = new ControlView(
      kv.control,
      this.log,
      () => {
        this.purgeCancelled = true;
        this.kick();
      },
      nc,
    );
    await this.control.start();
    this.governor = new Governor({
      kv: kv.providers,
      nc,
      js: this.js,
      topo,
      log: this.log,
      clock: this.clock,
      providers: this.opts.providers ?? {},
      running: () => new Set(this.registry.live().flatMap((w) => w.record.active)),
      onChange: () => this.kick(),
      ...(this.opts.taskCosts ? { taskCosts: this.opts.taskCosts } : {}),
    });
    await this.governor.start();
    const jsm = await this.js.jetstreamManager();
    const ackWaitMs = this.opts.ackWaitMs ?? READY_ACK_WAIT_MS;
    const stream = topo.streams.ready.name;
    // The one consumer of every level that balancers before per-level consumers used
    // would overlap the level consumers, which a work-queue stream refuses.
    await jsm.consumers.delete(stream, consumers.ready).catch((err) => {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
    });
    const maxHeld = this.opts.maxHeld ?? MAX_HELD;
    for (const priority of PRIORITIES) {
      const name = consumers.readyLevel(priority);
      await jsm.consumers.add(stream, {
        ...actorConsumer(name, topo.subjects.ready(priority), { ackWaitMs }),
        // The server stops delivering past this many unacked: the level's window.
        max_ack_pending: maxHeld,
      });
      const consumer = await this.js.consumers.get(stream, name);
      this.messages.push(await consumer.consume({ max_messages: Math.min(1_000, maxHeld), callback: (m) => this.onReady(m) }));
    }
    this.keepAlive = setInterval(() => {
      for (const e of this.queue.all()) e.item.msg.working();
    }, ackWaitMs / 3);
    this.waitingTimer = setInterval(() => this.checkWaiting(), WAITING_CHECK_MS);
  }

  protected async onDrain(): Promise<void> {
    clearInterval(this.keepAlive);
    clearInterval(this.waitingTimer);
    clearTimeout(this.dueTimer);
    clearTimeout(this.providerTimer);
    this.governor?.stop();
    await Promise.all(this.messages.map((m) => m.close().catch(() => undefined)));
    this.registry?.stop();
    this.control?.stop();
    // Hand back what we hold, so another replica takes it now rather than after ack_wait.
    for (const e of this.queue.all()) e.item.msg.nak();
  }

  /**
   * What this balancer holds, by priority and placement (the agent, then labels, required
   * capabilities and a pinned worker when set): the metrics' ready backlog per placement.
   * Walks the held queue: called at scrape time, not per task.
   */
  heldCounts(): { priority: string; placement: string; count: number }[] {
    const counts = new Map<string, { priority: string; placement: string; count: number }>();
    for (const e of this.queue.all()) {
      const { agent, placement: p } = e.item.route;
      const placement = [agent, p.labels.length ? `labels=${p.labels.join(",")}` : "", p.requires.length ? `requires=${p.requires.join(",")}` : "", p.worker ? `worker=${p.worker}` : ""].filter(Boolean).join(" ");
      const key = `${e.priority}\u0000${placement}`;
      const row = counts.get(key);
      if (row) row.count++;
      else counts.set(key, { priority: e.priority, placement, count: 1 });
    }
    return [...counts.values()];
  }

  override stats() {
    const waiting = this.waiting.current();
    return {
      held: this.queue.size,
      assigned: this.assigned,
      deadLettered: this.deadLetters.count,
      workers: this.registry?.live().length ?? 0,
      // Held attempts no connected worker may take, and why (the first few).
      waiting: waiting.length,
      waitingReasons: waiting.slice(0, 20).map((w) => ({ attempt: w.key, reason: w.reason, since: new Date(w.since).toISOString() })),
      // What waits for a worker, by placement (paused and cancelled work does not): the scaler grows the pools that would take it.
      backlog: backlogByPlacement(this.heldRoutes()),
      // Each configured provider's circuit as this replica sees it (the shared KV state).
      providers: Object.fromEntries(
        Object.keys(this.opts.providers ?? {}).map((name) => {
          const s = this.governor?.stateOf(name);
          const limits = this.opts.providers![name]!.limits;
          return [
            name,
            {
              circuit: s?.circuit.state ?? "closed",
              running: s ? Object.keys(s.active).length : 0,
              ...(s?.circuit.until ? { until: new Date(s.circuit.until).toISOString() } : {}),
              // What adaptive concurrency set, else the configured limits.
              concurrent: s?.adapted?.concurrent ?? limits.concurrent,
              perMinute: s?.adapted?.perMinute ?? limits.perMinute,
            },
          ];
        }),
      ),
    };
  }

  private *heldRoutes() {
    if (!this.control) return;
    for (const e of this.queue.all()) {
      const { work, route } = e.item;
      if (this.control.stateOf(work.runId, work.taskId) === "running") yield route;
    }
  }

  /**
   * Announces held tasks that no connected worker may take (task.waiting), once each has
   * waited so for ~2 s, and again when the reason changes. Reasons are worked out once
   * per distinct placement per check, so 10,000 held tasks cost a map lookup each.
   */
  private checkWaiting(): void {
    if (!this.isRunning) return;
    const now = this.clock.now();
    const workers = this.registry.candidates();
    const draining = [...this.registry.workers.values()].filter((w) => w.record.state === "draining").length;
    const why = new Unplaceable(workers, { draining });
    let announced = 0;
    // Tasks beyond what their providers can take now wait for them (in queue order, as a pass would place them).
    const providers = this.governor.pass(now);
    for (const entry of this.queue.ordered()) {
      const { work } = entry.item;
      // Paused work waits for its resume, not for a worker.
      if (this.control.stateOf(work.runId, work.taskId) !== "running") continue;
      let route = entry.item.route;
      let providerWait: string | undefined;
      if (work.task.providers?.length) {
        const gate = providers.gate(work.task.providers, work.task.rotation);
        if (gate.type === "wait") providerWait = gate.reason;
        else route = this.routeFor(entry.item, gate.provider);
      }
      const reason = providerWait ?? why.explain(route.agent, route.placement, route.placementKey)?.(work.taskId);
      const announce = this.waiting.observe(entry.key, reason, now);
      if (!announce) continue;
      this.announceWaiting(work, announce, workers.length, now);
      // 10,000 held tasks and no worker: spread the events over a few checks.
      if (++announced >= WAITING_ANNOUNCE_MAX) break;
    }
    this.waiting.retain((key) => this.queue.has(key));
  }

  private announceWaiting(work: TaskWork, reason: string, workers: number, now: number): void {
    const event: AdoEvent = { type: "task.waiting", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date(now).toISOString(), reason, workers };
    const { data, headers } = encode(SCHEMAS.AdoEvent, event);
    this.log.info({ runId: work.runId, taskId: work.taskId, attempt: work.attempt, reason }, "task waiting");
    this.js
      .publish(this.ctx.topo.subjects.event({ type: event.type, runId: event.runId, taskId: event.taskId }), data, { headers, msgID: msgIds.waiting(work, digest(reason)) })
      .catch((err) => this.log.warn({ runId: work.runId, taskId: work.taskId, err: errorMessage(err) }, "task.waiting not published"));
  }

  private onReady(m: JsMsg): void {
    let work: TaskWork;
    try {
      work = decode(SCHEMAS.TaskWork, m.data, m.headers);
    } catch (err) {
      void this.deadLetters.recordAndAck(m, errorMessage(err));
      return;
    }
    const key = attemptKey(work);
    const route: Route = {
      agent: work.task.agent,
      placement: work.placement,
      strategy: work.strategy ?? this.opts.strategy ?? "least_loaded",
      placementKey: placementKey(work.task.agent, work.placement),
    };
    const runAt = Date.parse(work.submittedAt);
    const entry = { key, priority: work.priority, runAt, rank: work.rank, seq: m.seq, notBefore: work.notBefore, item: { work, msg: m, route } };
    if (!this.queue.add(entry, this.clock.now())) {
      // A redelivery of a message we hold: ack through the newest delivery from now on.
      const held = this.queue.remove(key)!;
      held.item.msg = m;
      this.queue.add(held, this.clock.now());
    }
    this.kick();
  }

  /** Coalesces dispatch requests into one pass per event-loop turn. */
  private kick(): void {
    if (this.scheduled || !this.isRunning) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    const now = this.clock.now();
    this.queue.promote(now);
    const candidates = this.registry.candidates();
    if (this.purgeCancelled) {
      this.purgeCancelled = false;
      for (const e of this.queue.all()) {
        if (this.control.stateOf(e.item.work.runId, e.item.work.taskId) !== "cancelled") continue;
        // The scheduler already counts it cancelled: drop it.
        this.queue.remove(e.key);
        e.item.msg.ack();
      }
    }
    let providers: GovernorPass | undefined;
    let providerDue: number | undefined;
    dispatchPass(
      this.queue,
      candidates,
      this.router,
      (entry) => {
        const { work } = entry.item;
        const control = this.control.stateOf(work.runId, work.taskId);
        if (control === "paused") return undefined; // held until resumed
        if (control === "cancelled") {
          this.queue.remove(entry.key); // arrived after the purge
          entry.item.msg.ack();
          return undefined;
        }
        if (!work.task.providers?.length) return entry.item.route;
        providers ??= this.governor.pass(now);
        const gate = providers.gate(work.task.providers, work.task.rotation);
        if (gate.type === "wait") {
          if (gate.until !== undefined && (providerDue === undefined || gate.until < providerDue)) providerDue = gate.until;
          return undefined;
        }
        return this.routeFor(entry.item, gate.provider);
      },
      (entry, pick) => {
        pick.view.outstanding.set(entry.key, now);
        const { provider, work } = entry.item;
        if (provider && work.task.providers?.length) {
          this.governor.used(work.task.providers, work.task.rotation, provider);
          this.sendGranted(entry, pick.id);
        } else this.send(entry.key, entry.item, pick.id);
      },
    );
    this.armDueTimer();
    this.armProviderTimer(providerDue);
  }

  /** The route of a held task on `provider`: that provider's agent, the task's placement. */
  private routeFor(held: Held, provider: string): Route {
    if (held.provider !== provider) {
      const agent = this.opts.providers?.[provider]?.agent ?? held.route.agent;
      held.provider = provider;
      held.route = { ...held.route, agent, placementKey: placementKey(agent, held.route.placement) };
    }
    return held.route;
  }

  /**
   * Sends a task to the worker picked for it once the governor granted its provider (one
   * compare-and-set on the provider's shared state). Refused (another replica took the
   * last token, the circuit opened meanwhile): the worker's slot is given back and the
   * task held again, waiting for its providers.
   */
  private sendGranted(entry: ReadyEntry<Held>, workerId: string): void {
    const held = entry.item;
    const provider = held.provider!;
    this.governor
      .acquire(provider, entry.key)
      .then((d) => {
        if (d.type === "permit") {
          const def = this.opts.providers![provider]!;
          this.send(entry.key, held, workerId, providerAssignment(provider, def, d.state.active[entry.key]));
          return;
        }
        this.registry.workers.get(workerId)?.outstanding.delete(entry.key);
        if (!this.isRunning) {
          held.msg.nak();
          return;
        }
        this.queue.add(entry, this.clock.now());
        this.armProviderTimer(d.until ?? this.clock.now() + PROVIDER_RECHECK_MS);
        this.kick();
      })
      .catch((err) => {
        this.registry.workers.get(workerId)?.outstanding.delete(entry.key);
        this.log.warn({ key: entry.key, provider, err: errorMessage(err) }, "provider permit not decided; the task stays ready");
        held.msg.nak(1_000);
      });
  }

  /** A pass when the earliest provider wait may end (refill, cooldown); a state change in KV kicks one sooner. */
  private armProviderTimer(due: number | undefined): void {
    if (due === undefined) return;
    const now = this.clock.now();
    if (this.providerDue !== undefined && this.providerDue > now && this.providerDue <= due) return;
    clearTimeout(this.providerTimer);
    this.providerDue = due;
    this.providerTimer = setTimeout(() => {
      this.providerDue = undefined;
      this.kick();
    }, Math.max(0, due - now) + 1);
  }

  private send(key: string, held: Held, workerId: string, provider?: ProviderAssignment): void {
    // On a provider, the task runs that provider's agent, in its access mode (which
    // decides the credentials an agent CLI may see: an API key only in an API run).
    const work: TaskWork = provider ? { ...held.work, workerId, provider, task: { ...held.work.task, agent: provider.agent, access: provider.access } } : { ...held.work, workerId };
    const { data, headers } = encode(SCHEMAS.TaskWork, work);
    // The msg id names the ready message (its stream sequence), not just the attempt: a
    // send of the same ready message again (its redelivery) is deduplicated, but work
    // handed back by a draining worker or re-queued by the stealer is a new ready message
    // and must be sent again within the dedupe window. Keyed by attempt alone, that send
    // was dropped as a duplicate of the first (long gone) and the task lost.
    this.js
      .publish(this.ctx.topo.subjects.work(workerId), data, { headers, msgID: msgIds.work(held.work, held.msg.seq) })
      .then(() => {
        held.msg.ack();
        this.assigned++;
      })
      .catch((err) => {
        // Not stored: forget the assignment and let the ready message come back.
        this.registry.workers.get(workerId)?.outstanding.delete(key);
        this.log.warn({ key, err: errorMessage(err) }, "work not stored; the task stays ready");
        held.msg.nak(1_000);
      });
  }

  private armDueTimer(): void {
    clearTimeout(this.dueTimer);
    const due = this.queue.nextDue();
    if (due === undefined) return;
    this.dueTimer = setTimeout(() => this.kick(), Math.max(0, due - this.clock.now()) + 1);
  }
}
