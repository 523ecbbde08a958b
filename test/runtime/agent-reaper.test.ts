/**
 * An agent must not outlive its worker. Agents lead their own process group, so a
 * worker that is SIGKILLed cannot stop them itself: the reaper must. Real processes, no
 * fakes but the agent (a shell with a background grandchild).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { runProcessGroup, Suspender } from "../../src/agents/index.js";
import { processesWith } from "../helpers/cluster.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CHILD = fileURLToPath(new URL("../fixtures/agent-child.ts", import.meta.url));
const started: ChildProcess[] = [];
const groups: number[] = [];
afterAll(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const g of groups) alive(-g) && process.kill(-g, "SIGKILL");
});

/** Whether a process (pid) or group (-pgid) exists. A zombie still counts until reaped. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function gone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

async function startAgentChild(mode: "running" | "paused"): Promise<{ child: ChildProcess; pgid: number; grandchild: number; reaper: number }> {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  started.push(child);
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve(out.split("\n")[0]!);
    });
    child.once("exit", (code) => reject(new Error(`agent child exited (${code}): ${err}`)));
  });
  const info = JSON.parse(line) as { pgid: number; grandchild: number; reaper: number };
  groups.push(info.pgid);
  return { child, ...info };
}

describe("agent reaper", () => {
  for (const mode of ["running", "paused"] as const) {
    it(`kills a ${mode} agent's whole group when its worker is SIGKILLed`, async () => {
      const { child, pgid, grandchild, reaper } = await startAgentChild(mode);
      expect(alive(-pgid)).toBe(true);
      expect(alive(grandchild)).toBe(true);
      expect(reaper).toBeGreaterThan(0);
      child.kill("SIGKILL");
      // TERM at once, KILL after the reaper's grace (2 s); the waits end as soon as the
      // group is gone and are generous for a loaded machine (starting the child there
      // can take seconds too).
      expect(await gone(-pgid, 15_000)).toBe(true);
      expect(alive(grandchild)).toBe(false);
      expect(await gone(reaper, 15_000)).toBe(true);
    }, 60_000);
  }
});

describe("agent reaper - a worker killed the moment its agent starts", () => {
  /**
   * The agent's first act is to SIGKILL its worker: the worker dies in the instant
   * between spawning the agent and registering its group with the reaper (for the first
   * agent of a process, while the reaper itself is being started). The agent must not
   * outlive it. Before agents started behind a gate this failed every time for the first
   * agent (the reaper had read nothing when its pipe closed).
   */
  for (const mode of ["suicide-first", "suicide-later"] as const) {
    it(`${mode === "suicide-first" ? "the first agent of the process" : "a later agent (the reaper already runs)"}: nothing of it is left`, async () => {
      for (let round = 0; round < 3; round++) {
        const marker = `ado-reaper-test-${process.pid}-${mode}-${round}`;
        const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode, marker], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
        started.push(child);
        let err = "";
        child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
        const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.once("exit", (_code, s) => resolve(s)));
        expect(signal, err).toBe("SIGKILL"); // killed by its agent
        const deadline = Date.now() + 10_000;
        let left = await processesWith(marker);
        while (left.length > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          left = await processesWith(marker);
        }
        for (const p of left) process.kill(p.pid, "SIGKILL");
        expect(left, `round ${round}`).toEqual([]);
      }
    }, 60_000);
  }
});

describe("agent process group", () => {
  it("ends when the agent exits, though a background process still holds its output, and kills that process", async () => {
    let out = "";
    const started = Date.now();
    const outcome = await runProcessGroup("sh", ["-c", "sleep 60 & echo bg=$!; echo done"], {
      env: {},
      task: { id: "t", agent: "shell", prompt: "", run: "" } as never,
      signal: new AbortController().signal,
      suspender: new Suspender(),
      onOutput: (_s, d) => (out += d),
    }, { timeoutMs: 30_000 });
    expect(outcome.ok).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000); // not the 60 s sleep, nor the timeout
    expect(out).toContain("done");
    const bg = Number(/bg=(\d+)/.exec(out)![1]);
    expect(await gone(bg, 2_000)).toBe(true);
  }, 40_000);

  it("a timeout longer than 24.8 days (Node's longest timer) does not stop the agent at once", async () => {
    // Before: setTimeout(stop, 30 days) fired after 1 ms and a task with timeout "30d" failed as it started.
    const outcome = await runProcessGroup("sh", ["-c", "sleep 0.5; echo done"], {
      env: {},
      task: { id: "t", agent: "shell", prompt: "", run: "" } as never,
      signal: new AbortController().signal,
      suspender: new Suspender(),
      onOutput: () => undefined,
    }, { timeoutMs: 30 * 86_400_000 });
    expect(outcome).toMatchObject({ ok: true });
  }, 40_000);
});
