import type { ChildProcess } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { startAdo } from "./cli.js";

/**
 * ado actors and workers as separate OS processes (`ado actor <name>`, `ado worker`),
 * each under a name, so a test can SIGKILL one and start it again the way an operator
 * (or a supervisor) would. Every process ever started is kept, so the test can check at
 * the end that none is left behind.
 */
export interface AdoProcess {
  name: string;
  child: ChildProcess;
  output(): string;
  /** Worker ids a `ado worker` process printed when it was ready (empty for actors). */
  workerIds: string[];
}

const READY: Record<string, RegExp> = {
  scheduler: /scheduler running/,
  balancer: /balancer running/,
  merger: /merger running/,
  stealer: /stealer running/,
  recorder: /recorder running/,
  notifier: /notifier running/,
  api: /api running/,
  // "2 worker(s) (1 slot(s) each) on nats://...: w-a, w-b" and a newline.
  worker: /worker\(s\) \(\d+ slot\(s\) each\) on \S+: [^\n]+\n/,
};

export class AdoCluster {
  private readonly current = new Map<string, AdoProcess>();
  readonly all: AdoProcess[] = [];

  constructor(private readonly env: NodeJS.ProcessEnv) {}

  /** Starts `ado actor <kind>` under the name `kind`; resolves once it runs. */
  actor(kind: "scheduler" | "balancer" | "merger" | "stealer" | "recorder" | "notifier" | "api"): Promise<AdoProcess> {
    return this.start(kind, ["actor", kind], READY[kind]!);
  }

  /** Starts `ado worker --count <count>` under `name`; resolves once its workers run. */
  worker(name: string, count: number): Promise<AdoProcess> {
    return this.start(name, ["worker", "--count", String(count)], READY.worker!);
  }

  /** Starts `ado <args>` under `name` (e.g. an actor with a health port); resolves once its output matches `ready`. */
  spawn(name: string, args: string[], ready: RegExp): Promise<AdoProcess> {
    return this.start(name, args, ready);
  }

  get(name: string): AdoProcess {
    const p = this.current.get(name);
    if (!p) throw new Error(`no process named '${name}'`);
    return p;
  }

  /** SIGKILLs a process (no handler runs, nothing is drained) and waits until it is gone. */
  async kill(name: string): Promise<AdoProcess> {
    const p = this.get(name);
    this.current.delete(name);
    if (p.child.exitCode === null && p.child.signalCode === null) {
      await new Promise<void>((resolve) => {
        p.child.once("exit", () => resolve());
        p.child.kill("SIGKILL");
      });
    }
    return p;
  }

  /**
   * Stops every process still running with SIGINT (a graceful drain) and returns their
   * exit codes by name; one that does not exit within `ms` is SIGKILLed and reported as
   * "hung".
   */
  async stopAll(ms = 20_000): Promise<Record<string, number | string | null>> {
    const codes: Record<string, number | string | null> = {};
    await Promise.all(
      [...this.current.values()].map(async (p) => {
        const exited = new Promise<number | null>((resolve) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve(p.child.exitCode);
          p.child.once("exit", (code) => resolve(code));
        });
        p.child.kill("SIGINT");
        const timer = new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), ms).unref());
        const code = await Promise.race([exited, timer]);
        if (code === "hung") p.child.kill("SIGKILL");
        codes[p.name] = code;
      }),
    );
    this.current.clear();
    return codes;
  }

  /** Last resort for a failed test: SIGKILL whatever still runs. */
  killAll(): void {
    for (const p of this.all) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    this.current.clear();
  }

  private async start(name: string, args: string[], ready: RegExp): Promise<AdoProcess> {
    if (this.current.has(name)) throw new Error(`a process named '${name}' is already running`);
    const { child, output } = await startAdo(args, ready, { env: this.env });
    const printed = /: (w-[^\n]+)\n/.exec(output());
    const p: AdoProcess = { name, child, output, workerIds: printed ? printed[1]!.split(", ").map((s) => s.trim()) : [] };
    this.current.set(name, p);
    this.all.push(p);
    return p;
  }
}

/** Whether a process still runs (a zombie has ended; it only waits to be reaped). */
export async function isRunning(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

/**
 * Live processes (not zombies) whose command line contains `marker`: agents of a test
 * whose commands name a path unique to it. Linux /proc only.
 */
export async function processesWith(marker: string): Promise<Array<{ pid: number; cmd: string }>> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const cmd = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).replace(/\0/g, " ").trim();
    if (cmd.includes(marker) && (await isRunning(pid))) found.push({ pid, cmd });
  }
  return found;
}

/**
 * Waits until no process with `marker` in its command line runs (agents of a killed
 * worker, stopped by its reaper). If some still run after `ms`, prints what they are
 * (state, parent, group, session, and the reapers present) and kills them, so the rest
 * of the test can go on; returns them, for the test to assert there are none (the
 * reaper's own tests are test/runtime/agent-reaper.test.ts).
 */
export async function awaitAgentsGone(marker: string, ms: number): Promise<Array<{ pid: number; cmd: string }>> {
  const deadline = Date.now() + ms;
  let left = await processesWith(marker);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = await processesWith(marker);
  }
  if (left.length === 0) return [];
  const stat = async (pid: number) => {
    const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return `state ${f[0]} ppid ${f[1]} pgrp ${f[2]} session ${f[3]}`;
  };
  const reapers = await processesWith("ado-agent-reaper");
  console.warn(
    [
      `AGENTS OUTLIVED THEIR WORKER by ${ms} ms (marker ${marker}):`,
      ...(await Promise.all(left.map(async (p) => `  ${p.pid} ${await stat(p.pid)}: ${p.cmd.slice(0, 200)}`))),
      `reapers running: ${reapers.length ? (await Promise.all(reapers.map(async (r) => `${r.pid} (${await stat(r.pid)})`))).join(", ") : "none"}`,
    ].join("\n"),
  );
  for (const p of left) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  return left;
}
