/**
 * Governor benchmark: what a provider decision costs. The figure: a governor
 * decision (permit or refuse) p99 with 1,000 tasks waiting and 20 providers.
 *
 *   npx tsx bench/governor.ts                 # 1,000 waiting, 20 providers, 200 passes, 500 KV permits
 *   npx tsx bench/governor.ts --quick         # 50 passes, 200 KV permits
 *   npx tsx bench/governor.ts --json
 *   npx tsx bench/governor.ts --waiting 10000 --providers 50 --passes 100 --permits 0
 *
 * Measures:
 *   gate      One held task's decision in a dispatch pass (Governor.pass().gate()): the
 *             first provider of its list (1-3 of the 20) with room, or why it waits. The
 *             pass works out each provider's room once, from the local view of its state
 *             (concurrency held by up to 100 attempts, open circuits, empty buckets), so
 *             the first task to name a provider pays for it: both are in the figure.
 *   pass      All waiting tasks gated once (what one balancer dispatch pass adds).
 *   permit    decidePermit() on a stored state (pure: the CAS write's decision).
 *   outcome   applyOutcome() (pure: a worker's report).
 *   kv        Governor.acquire() against a real nats-server: read, decide, CAS write
 *             (one client; then two clients on one provider, contending).
 *
 * Timed with performance.now() around each call, in microseconds (kv: milliseconds).
 * Figures are printed, never asserted.
 */
import { performance } from "node:perf_hooks";
import { jetstream } from "@nats-io/jetstream";
import { systemClock } from "../src/runtime/clock.js";
import { connectNats } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { applyOutcome, availability, decidePermit, gate, initialState, type ProviderAvailability, type ProviderPolicy } from "../src/runtime/governor/decide.js";
import { Governor } from "../src/runtime/governor/governor.js";
import { silentLogger } from "../src/runtime/logger.js";
import type { ProviderState } from "../src/runtime/messages.js";
import { ProvidersConfigSchema } from "../src/runtime/providers.js";
import { provision, topology } from "../src/runtime/topology.js";
import { flagValues, parseFlags, printReport, runMain, type Log } from "./harness.js";
import { r1, summarize, table, type Summary, prng } from "./stats.js";

const USAGE = "usage: npx tsx bench/governor.ts [--quick] [--json] [--waiting N] [--providers N] [--passes N] [--permits N] [--wait-quiet SEC]";

interface Options {
  waiting: number;
  providers: number;
  passes: number;
  permits: number;
  json: boolean;
  waitQuietMs: number;
  seed: number;
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { waiting: 1_000, providers: 20, passes: quick ? 50 : 200, permits: quick ? 200 : 500, json: false, waitQuietMs: 0, seed: 7 };
  const { int } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--waiting": (v, f) => (o.waiting = int(v, f, 1)),
    "--providers": (v, f) => (o.providers = int(v, f, 1)),
    "--passes": (v, f) => (o.passes = int(v, f, 1)),
    "--permits": (v, f) => (o.permits = int(v, f)),
  });
  return o;
}


interface Report {
  options: Omit<Options, "json" | "waitQuietMs">;
  gateUs: Summary;
  passUs: Summary;
  permitUs: Summary;
  outcomeUs: Summary;
  waitedShare: number;
  kvMs?: { one: Summary; two: Summary; refusedShare: number };
}

async function main(o: Options, log: Log): Promise<number> {
  const rnd = prng(o.seed);
  const now = Date.now();
  const names = Array.from({ length: o.providers }, (_, i) => `p${i}`);
  // A mix of limits: rate-limited, concurrency-limited (most nearly full), both, none.
  const policies = new Map<string, ProviderPolicy>();
  const states = new Map<string, ProviderState>();
  const running = new Set<string>();
  names.forEach((name, i) => {
    const concurrent = i % 4 === 1 || i % 4 === 2 ? 20 + Math.floor(rnd() * 80) : undefined;
    const perMinute = i % 4 === 0 || i % 4 === 2 ? 10 + Math.floor(rnd() * 100) : undefined;
    const policy: ProviderPolicy = { burst: 5, ...(perMinute ? { perMinute } : {}), ...(concurrent ? { concurrent } : {}), circuit: { failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 } };
    policies.set(name, policy);
    const s = initialState(name, policy, now - 120_000);
    s.tokens = rnd() * 3;
    s.refilledAt = now - Math.floor(rnd() * 2_000);
    const held = concurrent ? concurrent - Math.floor(rnd() * 3) : Math.floor(rnd() * 100);
    for (let k = 0; k < held; k++) {
      const key = `run${k % 7}.task-${name}-${k}.1`;
      s.active[key] = now - 90_000 - k;
      running.add(key);
    }
    if (i % 10 === 9) s.circuit = { state: "open", failures: 3, until: now + 3_600_000, probes: [], successes: 0, reason: "3 auth failures in a row", changedAt: now };
    states.set(name, s);
  });
  const tasks = Array.from({ length: o.waiting }, () => {
    const n = 1 + Math.floor(rnd() * 3);
    const list = new Set<string>();
    while (list.size < n) list.add(names[Math.floor(rnd() * names.length)]!);
    return [...list];
  });
  const stillRunning = (key: string, at: number) => now - at < 60_000 || running.has(key);

  log(`gate: ${o.passes} passes x ${o.waiting} waiting tasks, ${o.providers} providers`);
  const gateUs: number[] = [];
  const passUs: number[] = [];
  let waited = 0;
  for (let p = 0; p < o.passes; p++) {
    const passStart = performance.now();
    // As Governor.pass(): rooms worked out lazily, once per provider per pass.
    const rooms = new Map<string, ProviderAvailability>();
    const unknown = (name: string) => availability(states.get(name), policies.get(name)!, now, stillRunning);
    for (const list of tasks) {
      const t0 = performance.now();
      const g = gate(list, rooms, unknown);
      gateUs.push((performance.now() - t0) * 1_000);
      if (g.type === "wait") waited++;
    }
    passUs.push((performance.now() - passStart) * 1_000);
  }

  log("permit / outcome (pure)");
  const permitUs: number[] = [];
  const outcomeUs: number[] = [];
  for (let i = 0; i < o.passes * 50; i++) {
    const name = names[i % names.length]!;
    const t0 = performance.now();
    decidePermit(states.get(name), policies.get(name)!, now, name, `runx.t${i}.1`, stillRunning);
    permitUs.push((performance.now() - t0) * 1_000);
    const t1 = performance.now();
    applyOutcome(states.get(name), policies.get(name)!, now, { attempt: `runx.t${i}.1`, ok: i % 3 !== 0, kind: "auth" }, name);
    outcomeUs.push((performance.now() - t1) * 1_000);
  }

  const report: Report = {
    options: { waiting: o.waiting, providers: o.providers, passes: o.passes, permits: o.permits, seed: o.seed },
    gateUs: summarize(gateUs),
    passUs: summarize(passUs),
    permitUs: summarize(permitUs),
    outcomeUs: summarize(outcomeUs),
    waitedShare: r1((100 * waited) / (o.passes * o.waiting)),
  };

  if (o.permits > 0) {
    log(`kv: ${o.permits} permits through a real nats-server, one client, then two contending`);
    const server = await EmbeddedServer.start({});
    try {
      const topo = topology(`bench${process.pid}`);
      const providers = ProvidersConfigSchema.parse({ kv1: { agent: "shell", access: "api" }, kv2: { agent: "shell", access: "api" } });
      const clients = await Promise.all(
        [0, 1].map(async (i) => {
          const nc = await connectNats({ servers: server.url, name: `bench-governor-${i}`, logger: silentLogger });
          const { kv } = await provision(nc, topo);
          return { nc, governor: new Governor({ kv: kv.providers, nc, js: jetstream(nc), topo, log: silentLogger, clock: systemClock, providers }) };
        }),
      );
      const timeAcquire = async (g: Governor, provider: string, key: string, into: number[]) => {
        const t0 = performance.now();
        const d = await g.acquire(provider, key);
        into.push(performance.now() - t0);
        return d;
      };
      const one: number[] = [];
      for (let i = 0; i < o.permits; i++) await timeAcquire(clients[0]!.governor, "kv1", `r.a${i}.1`, one);
      const two: number[] = [];
      let refused = 0;
      await Promise.all(
        clients.map(async (c, ci) => {
          for (let i = 0; i < o.permits / 2; i++) if ((await timeAcquire(c.governor, "kv2", `r.c${ci}-${i}.1`, two)).type === "refuse") refused++;
        }),
      );
      report.kvMs = { one: summarize(one), two: summarize(two), refusedShare: r1((100 * refused) / o.permits) };
      for (const c of clients) await c.nc.drain();
    } finally {
      await server.stop();
    }
  }
  printReport(report, o.json, render);
  return 0;
}

function render(r: Report): string {
  const row = (name: string, s: Summary, unit: string) => [name, unit, s.n, s.p50, s.p90, s.p99, s.max, s.mean];
  const rows = [row("gate (one task's decision)", r.gateUs, "us"), row(`pass (${r.options.waiting} tasks)`, r.passUs, "us"), row("decidePermit", r.permitUs, "us"), row("applyOutcome", r.outcomeUs, "us")];
  if (r.kvMs) rows.push(row("kv acquire, 1 client", r.kvMs.one, "ms"), row("kv acquire, 2 clients", r.kvMs.two, "ms"));
  return [
    `governor: ${r.options.waiting} tasks waiting, ${r.options.providers} providers (seed ${r.options.seed}); ${r.waitedShare}% of gate decisions were waits`,
    table(["what", "unit", "n", "p50", "p90", "p99", "max", "mean"], rows),
  ].join("\n");
}

runMain("governor", parseArgs, main);
