import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock, systemClock } from "../../src/runtime/clock.js";
import { decode } from "../../src/runtime/codec.js";
import { Governor } from "../../src/runtime/governor/governor.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type ProviderEvent } from "../../src/runtime/messages.js";
import { ProvidersConfigSchema } from "../../src/runtime/providers.js";
import { eventually, provisioned, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

const CHILD = fileURLToPath(new URL("../fixtures/governor-child.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

let server: TestServer;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startTestServer();
  nc = await server.connect();
});
afterAll(async () => {
  await server?.stop();
});

interface Child {
  proc: ChildProcess;
  permits: number[];
  ready: Promise<void>;
  done: Promise<void>;
}

function startChild(args: string[]): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", CHILD, ...args], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  const permits: number[] = [];
  let onReady!: () => void;
  let onDone!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const done = new Promise<void>((r) => (onDone = r));
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    if (line === "ready") onReady();
    else if (line === "done") onDone();
    else if (line.startsWith("permit ")) permits.push(Number(line.slice(7)));
  });
  return { proc, permits, ready, done };
}

describe("governor - one bucket shared across processes", () => {
  it("governor - two clients in separate processes drawing from one provider never exceed its rate together", { timeout: 120_000 }, async () => {
    const topo = uniqueTopology();
    await provisioned(nc, topo);
    const perMinute = 600; // 10 a second
    const burst = 3;
    const ms = 3_000;
    const children = [0, 1].map(() => startChild([server.url, topo.prefix, "shared", String(perMinute), String(burst), String(ms)]));
    try {
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.proc.stdin!.write("go\n");
      await Promise.all(children.map((c) => c.done));
    } finally {
      for (const c of children) c.proc.kill();
    }
    // Both drew from the bucket, and together got past the burst (the refill was used).
    for (const c of children) expect(c.permits.length).toBeGreaterThan(0);
    const all = children.flatMap((c) => c.permits).sort((a, b) => a - b);
    expect(all.length).toBeGreaterThan(burst);
    // A token bucket's law, over every window between two permits: at most the burst
    // plus what refilled in between. (Permit times are the stored bucket's refill times,
    // one writer at a time, so they are in one timeline whoever granted them.)
    let worst = 0;
    for (let i = 0; i < all.length; i++) {
      for (let j = i; j < all.length; j++) {
        const allowed = burst + ((all[j]! - all[i]!) * perMinute) / 60_000;
        worst = Math.max(worst, j - i + 1 - allowed);
      }
    }
    expect(worst).toBeLessThanOrEqual(1e-9);
    // And no more than the whole run's budget (the window over the run, plus a little for the end).
    expect(all.length).toBeLessThanOrEqual(burst + Math.ceil((all.at(-1)! - all[0]!) * perMinute / 60_000) + 1);
  });

  it("governor - auth failures reported by a worker open the circuit for every client, with an event; a balancer then refuses", { timeout: 60_000 }, async () => {
    const topo = uniqueTopology();
    const { kv } = await provisioned(nc, topo);
    const js = jetstream(nc);
    const providers = ProvidersConfigSchema.parse({ bad: { agent: "claude", access: "api", circuit: { failures: 2, cooldown: "10m" } } });
    const events: ProviderEvent[] = [];
    const sub = nc.subscribe(topo.subjects.providerEvents, { callback: (_e, m) => void events.push(decode(SCHEMAS.ProviderEvent, m.data, m.headers)) });
    const balancer = new Governor({ kv: kv.providers, nc, js, topo, log: silentLogger, clock: systemClock, providers, running: () => new Set() });
    await balancer.start();
    // A worker in another process would hold its own Governor, without a config.
    const nc2 = await server.connect("worker");
    const worker = new Governor({ kv: kv.providers, nc: nc2, js: jetstream(nc2), topo, log: silentLogger, clock: systemClock });
    const circuit = providers.bad!.circuit;
    for (const n of [1, 2]) {
      expect((await balancer.acquire("bad", `r.t${n}.1`)).type).toBe("permit");
      await worker.report("bad", circuit, { attempt: `r.t${n}.1`, ok: false, kind: "auth", message: "Invalid API key" });
    }
    // Reported twice: counted once.
    await worker.report("bad", circuit, { attempt: "r.t2.1", ok: false, kind: "auth" });
    const refused = await balancer.acquire("bad", "r.t3.1");
    expect(refused).toMatchObject({ type: "refuse", reason: "circuit open: 2 auth failures in a row (last: Invalid API key)" });
    // The balancer's local view has it too (the watch), so its passes wait without asking.
    await eventually(() => balancer.stateOf("bad")?.circuit.state === "open", 10_000, "the watch to show the open circuit");
    const g = balancer.pass(Date.now()).gate(["bad"]);
    expect(g).toMatchObject({ type: "wait", provider: "bad" });
    if (g.type === "wait") expect(g.reason).toMatch(/^waiting for provider bad until \d\d:\d\d UTC: circuit open: 2 auth failures in a row/);
    await eventually(() => events.length >= 1, 10_000, "the provider.circuit event");
    expect(events[0]).toMatchObject({ type: "provider.circuit", provider: "bad", from: "closed", to: "open" });
    sub.unsubscribe();
    balancer.stop();
  });

  it("governor - adaptive concurrency steps a provider down under a 30% error rate and back up when it clears, for every replica, with events", { timeout: 60_000 }, async () => {
    const topo = uniqueTopology();
    const { kv } = await provisioned(nc, topo);
    const clock = new ManualClock(Date.parse("2026-12-05T12:00:00Z"));
    const providers = ProvidersConfigSchema.parse({ ad: { agent: "claude", access: "api", limits: { concurrent: 8, perMinute: 100, burst: 20, adaptive: { cooldown: "1m", minSamples: 10 } } } });
    const events: ProviderEvent[] = [];
    const sub = nc.subscribe(topo.subjects.providerEvents, { callback: (_e, m) => void events.push(decode(SCHEMAS.ProviderEvent, m.data, m.headers)) });
    const js = jetstream(nc);
    const [a, b] = [0, 1].map(() => new Governor({ kv: kv.providers, nc, js, topo, log: silentLogger, clock, providers, running: () => new Set() }));
    await b!.start();
    const worker = new Governor({ kv: kv.providers, nc, js, topo, log: silentLogger, clock });
    // Spread out, so the circuit (3 in a row) stays closed: only the rate is judged.
    const round = async (tag: string, failing: (i: number) => boolean) => {
      for (let i = 0; i < 10; i++) {
        const attempt = `r.${tag}${i}.1`;
        expect((await a!.acquire("ad", attempt)).type).toBe("permit");
        await worker.report("ad", providers.ad!.circuit, { attempt, ok: !failing(i), ...(failing(i) ? { kind: "crash" as const } : {}), latencyMs: 5_000 });
      }
    };
    await round("e", (i) => i % 3 === 0 && i < 9); // 30% of the provider's attempts crash
    clock.advance(1);
    await a!.acquire("ad", "r.probe1.1"); // the next permit judges the window
    await eventually(() => events.some((e) => e.type === "provider.adaptive"), 10_000, "the step down");
    // The other replica applies the new limits: it sees them in the shared state.
    await eventually(() => b!.stateOf("ad")?.adapted?.concurrent === 6, 10_000, "replica b sees concurrent 6");
    expect(b!.stateOf("ad")!.adapted!.perMinute).toBe(50);
    clock.advance(61_000);
    await round("c", () => false);
    clock.advance(1);
    await a!.acquire("ad", "r.probe2.1");
    await eventually(() => events.filter((e) => e.type === "provider.adaptive").length >= 2, 10_000, "the step up");
    const steps = events.filter((e): e is Extract<ProviderEvent, { type: "provider.adaptive" }> => e.type === "provider.adaptive");
    expect(steps.map((e) => [e.direction, e.from, e.to])).toEqual([
      ["down", { concurrent: 8, perMinute: 100 }, { concurrent: 6, perMinute: 50 }],
      ["up", { concurrent: 6, perMinute: 50 }, { concurrent: 8, perMinute: 62.5 }],
    ]);
    expect(steps[0]!.reason).toBe("error rate 30% over the last 10 tasks (above 20%)");
    sub.unsubscribe();
    b!.stop();
  });
});
