/**
 * The governor's I/O shell: each provider's state (decide.ts) lives in one key of the KV
 * bucket `<p>-providers`, and every change is a compare-and-set on its revision. So
 * every balancer replica on every host draws from one token bucket and sees one circuit:
 * two writers that read the same revision cannot both write, the loser reads again and
 * decides on what the winner wrote. Why not a leader handing out permits: see
 * docs/ARCHITECTURE.md ("Providers and the governor").
 *
 * A balancer keeps a local view of every provider (a KV watch) to decide, within a
 * dispatch pass and without I/O, which provider a held task may try (`pass()`); the
 * permit itself (`acquire()`) is one read and one CAS write against the stored state,
 * which alone decides. Workers report how each attempt ended (`report()`), also by CAS.
 * Every circuit transition is published as a `provider.circuit` event.
 */
import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Clock } from "../clock.js";
import { decode, encode, encodeValue } from "../codec.js";
import { errorMessage } from "../errors.js";
import { KvWatch } from "../kv-watch.js";
import type { Logger } from "../logger.js";
import { SCHEMAS, type ProviderEvent, type ProviderState } from "../messages.js";
import { msgIds } from "../names.js";
import type { ProvidersConfig, Rotation } from "../providers.js";
import { Backoff, retry } from "../retry.js";
import type { Topology } from "../topology.js";
import {
  ACTIVE_GRACE_MS,
  applyOutcome,
  availability,
  decidePermit,
  gate,
  policyOf,
  type Gate,
  type Outcome,
  type PermitDecision,
  type ProviderAvailability,
  type ProviderPolicy,
  type StillRunning,
  type Transition,
  type AdaptiveStep,
  nextCursor,
  rotationOrder,
  type ProviderCost,
} from "./decide.js";

export interface GovernorOptions {
  kv: KV;
  nc: NatsConnection;
  js: JetStreamClient;
  topo: Topology;
  log: Logger;
  clock: Clock;
  /** The providers this process grants permits for (a balancer's config); a worker needs none. */
  providers?: ProvidersConfig;
  /**
   * Attempts seen running on live workers (the balancer's registry). An attempt holding a
   * provider that is in none of them, granted over ACTIVE_GRACE_MS ago, is taken for
   * finished without a report (its worker died).
   */
  running?: () => ReadonlySet<string>;
  /** Called when a provider's state changed (another replica's permit, a circuit moved). */
  onChange?: () => void;
  /** Each provider's expected cost of a task (USD), for `rotation: cost_optimized`; unpriced ones are left out. */
  taskCosts?: Readonly<Record<string, number>>;
}

/** Tries of one compare-and-set before giving up (each lost race means someone else got through). */
const CAS_TRIES = 50;

class CasConflict extends Error {}

/** A provider list as a map key (provider names have no NUL). */
const listKey = (providers: readonly string[]) => providers.join("\u0000");

const isWrongRevision = (err: unknown) => err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;

/** One dispatch pass's view of the providers: rooms are worked out once per provider. */
export interface GovernorPass {
  /** Which provider of the list the task may try now (tried in the order `rotation` gives), or why it waits. */
  gate(providers: readonly string[], rotation?: Rotation): Gate;
}

export class Governor {
  /** The local view: each provider's latest state seen (watch or own read/write), with its revision. */
  private readonly states = new Map<string, { state: ProviderState; revision: number }>();
  private readonly policies = new Map<string, ProviderPolicy>();
  private watch?: KvWatch<ProviderState>;
  /** Permits asked for and not answered yet, per provider: a pass must not count their tokens twice. */
  private readonly pending = new Map<string, number>();
  /** Round robin: per provider list, where this process starts next (nextCursor of the last provider used). */
  private readonly cursors = new Map<string, number>();
  private readonly costs = new Map<string, ProviderCost>();

  constructor(private readonly o: GovernorOptions) {
    for (const [name, def] of Object.entries(o.providers ?? {})) {
      this.policies.set(name, policyOf(def));
      const perTask = o.taskCosts?.[name];
      this.costs.set(name, { access: def.access, ...(perTask !== undefined ? { perTask } : {}) });
    }
  }

  /** Starts the local view (a watch of the bucket). Only a process that gates tasks needs it. */
  async start(): Promise<void> {
    this.watch = new KvWatch({
      kv: this.o.kv,
      nc: this.o.nc,
      log: this.o.log,
      schema: SCHEMAS.ProviderState,
      what: "provider state",
      onPut: (key, value, entry) => {
        if (this.see(key, value, entry.revision)) this.o.onChange?.();
      },
      onDelete: (key) => {
        this.states.delete(key);
        this.o.onChange?.();
      },
    });
    await this.watch.start();
  }

  stop(): void {
    this.watch?.stop();
  }

  /** Whether this process knows the provider (it is in its config). */
  knows(provider: string): boolean {
    return this.policies.has(provider);
  }

  /** The local view of a provider's state (what the watch last delivered). */
  stateOf(provider: string): ProviderState | undefined {
    return this.states.get(provider)?.state;
  }

  /**
   * Takes a state into the local view unless a newer one is there already (a read or a
   * write of ours can be ahead of the watch). Returns whether it was taken.
   */
  private see(provider: string, state: ProviderState, revision: number): boolean {
    const known = this.states.get(provider);
    if (known && known.revision >= revision) return false;
    this.states.set(provider, { state, revision });
    return true;
  }

  /** A view for one dispatch pass at `now`. */
  pass(now: number): GovernorPass {
    const rooms = new Map<string, ProviderAvailability>();
    const still = this.stillRunning(now);
    const unknown = (name: string): ProviderAvailability => {
      const policy = this.policies.get(name);
      if (!policy) return { room: 0, reason: `provider '${name}' is not in this balancer's config (providers:)` };
      const a = availability(this.states.get(name)?.state, policy, now, still);
      const pending = this.pending.get(name) ?? 0;
      return pending ? { ...a, room: Math.max(0, a.room - pending) } : a;
    };
    const cost = (name: string) => this.costs.get(name);
    return { gate: (providers, rotation) => gate(rotationOrder(providers, rotation, this.cursors.get(listKey(providers)), cost), rooms, unknown) };
  }

  /**
   * A task of this provider list was placed on `provider`: with `round_robin` the next
   * task of the list starts after it. Only placements move the turn (not a pass that
   * merely looks, nor a task that found no worker), so turns follow what was sent.
   */
  used(providers: readonly string[], rotation: Rotation | undefined, provider: string): void {
    if (rotation === "round_robin") this.cursors.set(listKey(providers), nextCursor(providers, provider));
  }

  /**
   * Asks the stored state for a permit for `attempt` on `provider` (CAS: read, decide,
   * write with the revision read; a lost race reads again). A refusal that changed the
   * state (a circuit half-opened, stale attempts dropped) is written too.
   */
  async acquire(provider: string, attempt: string): Promise<PermitDecision> {
    const policy = this.policies.get(provider);
    if (!policy) return { type: "refuse", reason: `provider '${provider}' is not in this balancer's config (providers:)`, transitions: [], steps: [] };
    this.pending.set(provider, (this.pending.get(provider) ?? 0) + 1);
    try {
      return await this.cas(provider, (current, now) => {
        const d = decidePermit(current, policy, now, provider, attempt, this.stillRunning(now));
        return { result: d, ...(d.type === "permit" ? { state: d.state } : d.state ? { state: d.state } : {}), transitions: d.transitions, steps: d.steps };
      });
    } finally {
      const left = (this.pending.get(provider) ?? 1) - 1;
      if (left > 0) this.pending.set(provider, left);
      else this.pending.delete(provider);
    }
  }

  /**
   * Applies how an attempt on `provider` ended (a worker calls this once its result is
   * stored), with the circuit settings it was granted under.
   */
  async report(provider: string, circuit: ProviderPolicy["circuit"], outcome: Outcome): Promise<void> {
    const policy: ProviderPolicy = this.policies.get(provider) ?? { burst: 1, circuit };
    await this.cas(provider, (current, now) => {
      const applied = applyOutcome(current, { ...policy, circuit }, now, outcome, provider);
      return { result: undefined, ...(applied ? { state: applied.state } : {}), transitions: applied?.transitions ?? [] };
    });
  }

  private stillRunning(now: number): StillRunning {
    let running: ReadonlySet<string> | undefined;
    return (key, at) => {
      if (now - at < ACTIVE_GRACE_MS) return true;
      running ??= this.o.running?.() ?? new Set();
      // Without a view of the workers (a worker reporting), nothing is taken for lost.
      return this.o.running ? running.has(key) : true;
    };
  }

  /**
   * Read, decide, write with the revision read; again on a lost race (someone else's
   * write got in between: decide again on theirs). Transitions are published only once
   * their state is stored.
   */
  private async cas<R>(
    provider: string,
    decideOn: (current: ProviderState | undefined, now: number) => { result: R; state?: ProviderState; transitions: Transition[]; steps?: AdaptiveStep[] },
  ): Promise<R> {
    const { kv } = this.o;
    return retry(
      async () => {
        const entry = await kv.get(provider);
        let current: ProviderState | undefined;
        if (entry && entry.operation === "PUT") {
          try {
            current = decode(SCHEMAS.ProviderState, entry.value);
          } catch (err) {
            // Unreadable (another version wrote it): start afresh rather than block the provider.
            this.o.log.warn({ provider, err: errorMessage(err) }, "unreadable provider state replaced");
          }
        }
        // What was read is news to the local view too: a refused permit must not be
        // asked for again and again while the watch has yet to deliver the state behind it.
        if (current && entry) this.see(provider, current, entry.revision);
        const now = this.o.clock.now();
        const d = decideOn(current, now);
        if (d.state) {
          const value = encodeValue(SCHEMAS.ProviderState, d.state);
          let revision: number;
          try {
            // A deleted key keeps a revision: update over it so the CAS still holds.
            revision = entry ? await kv.update(provider, value, entry.revision) : await kv.create(provider, value);
          } catch (err) {
            if (isWrongRevision(err)) throw new CasConflict(`provider '${provider}': state changed while deciding`);
            throw err;
          }
          this.see(provider, d.state, revision);
          for (const t of d.transitions) this.announce(provider, t, d.state.circuit.changedAt);
          for (const step of d.steps ?? []) this.announceStep(provider, step, now);
        }
        return d.result;
      },
      { attempts: CAS_TRIES, backoff: Backoff.cas, retryIf: (err) => err instanceof CasConflict },
    );
  }

  private announceStep(provider: string, step: AdaptiveStep, at: number): void {
    const event: ProviderEvent = { type: "provider.adaptive", provider, at: new Date(at).toISOString(), ...step };
    this.o.log.info({ provider, direction: step.direction, from: step.from, to: step.to, reason: step.reason }, `provider limits stepped ${step.direction}`);
    const { data, headers } = encode(SCHEMAS.ProviderEvent, event);
    this.o.js
      .publish(this.o.topo.subjects.providerEvent(provider, "adaptive"), data, { headers, msgID: msgIds.providerAdaptive(provider, at) })
      .catch((err) => this.o.log.warn({ provider, err: errorMessage(err) }, "provider.adaptive event not published"));
  }

  private announce(provider: string, t: Transition, changedAt: number): void {
    const event: ProviderEvent = {
      type: "provider.circuit",
      provider,
      at: new Date(changedAt).toISOString(),
      from: t.from,
      to: t.to,
      reason: t.reason,
      ...(t.until !== undefined ? { until: new Date(t.until).toISOString() } : {}),
    };
    this.o.log.info({ provider, from: t.from, to: t.to, reason: t.reason }, `provider circuit ${t.to}`);
    const { data, headers } = encode(SCHEMAS.ProviderEvent, event);
    this.o.js
      .publish(this.o.topo.subjects.providerEvent(provider, "circuit"), data, { headers, msgID: msgIds.providerCircuit(provider, t.to, changedAt) })
      .catch((err) => this.o.log.warn({ provider, err: errorMessage(err) }, "provider.circuit event not published"));
  }
}
