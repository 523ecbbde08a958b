import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ADO_BIN, runAdo } from "../helpers/cli.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { useScratch } from "../helpers/scratch.js";

/**
 * What a person at a terminal sees and does, with real `ado` processes, real git and the
 * embedded nats-server: a failing task's output and its log, Ctrl-C (once: finish and
 * keep; twice: kill and keep), a killed `ado run` (its worktrees orphaned, `ado runs`
 * resumes or removes it), and the live view on a real terminal (tmux).
 */

const scratch = useScratch("ado-progress-");

/** A machine with no `ado up` and no server, fast heartbeats (the stealer acts sooner on a resume). */
async function isolatedEnv(): Promise<NodeJS.ProcessEnv> {
  const home = await mkdtemp(join(scratch.dir, "home-"));
  return {
    ADO_SERVER: "",
    XDG_STATE_HOME: join(home, "state"),
    XDG_CACHE_HOME: join(home, "cache"),
    ADO_WORKTREE_DIR: join(home, "worktrees"),
    ADO_HEARTBEAT_MS: "300",
  };
}

/** A running `ado` whose output we watch, to signal it at the right moment. */
function startRun(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, [ADO_BIN, ...args], { env: { ...process.env, ADO_LOG_LEVEL: "error", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async until(re: RegExp, timeoutMs = 60_000): Promise<void> {
      const end = Date.now() + timeoutMs;
      while (!re.test(out)) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`never saw ${re} (exit ${child.exitCode}):\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

const runIdOf = (text: string) => /run (r\d{8}t\d{6}-[a-z0-9]+)/.exec(text)![1]!;

describe("progress - a failed task on a terminal's summary", () => {
  it("shows its last lines and where its log is; the log holds all of it; --json carries both", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const cmd = "for i in $(seq 1 40); do echo step $i; done; echo 'it broke here' >&2; exit 2";
      const r = await runAdo(["run", "check", "--cmd", cmd, "--repo", repo.dir, "--progress", "none"], { env });
      expect(r.code, r.stderr).toBe(1);
      // Nothing was shown while it ran (--progress none): the summary alone shows the output.
      expect(r.stdout).toMatch(/✗ task: exited with code 2 \(attempt 1/);
      expect(r.stdout).toContain("| step 40\n");
      expect(r.stdout).toContain("| it broke here\n");
      expect(r.stdout).not.toContain("| step 20\n");
      const log = /log: (\S+task\.1\.log)/.exec(r.stdout)?.[1];
      expect(log, r.stdout).toBeDefined();
      expect(log!.startsWith(join(repo.dir, ".git", "ado", "logs"))).toBe(true);
      const text = readFileSync(log!, "utf8");
      expect(text).toContain("step 1\n");
      expect(text).toContain("it broke here\n");

      const j = await runAdo(["run", "check", "--cmd", cmd, "--repo", repo.dir, "--json"], { env });
      expect(j.code).toBe(1);
      const out = JSON.parse(j.stdout);
      expect(out.tasks[0].outputTail).toHaveLength(20);
      expect(out.tasks[0].outputTail.at(-1)).toBe("it broke here");
      expect(readFileSync(out.tasks[0].log, "utf8")).toContain("step 1\n");
      // Progress went to stderr as plain lines (not a terminal): no escape codes anywhere.
      expect(j.stderr).not.toMatch(/\x1b/);
    } finally {
      await repo.cleanup();
    }
  }, 120_000);
});

describe("progress - Ctrl-C", () => {
  it("once: says what it waits for, the running task finishes and merges, the run is kept; ado runs resume finishes it", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    // slow ends when the test opens the gate, after the Ctrl-C was taken (a 3 s sleep could end before it on a loaded machine).
    const gate = join(scratch.dir, "ctrl-c-gate");
    try {
      const graph = join(scratch.dir, "ctrl-c.yaml");
      await writeFile(graph, `name: cc\ntasks:\n  - { id: slow, run: "while [ ! -f ${gate} ]; do sleep 0.05; done; echo slow > slow.txt" }\n  - { id: after, needs: [slow], run: "echo after > after.txt" }\n`);
      const run = startRun(["run", "--graph", graph, "--repo", repo.dir, "--workers", "1"], env);
      await run.until(/slow: started/);
      run.child.kill("SIGINT");
      await run.until(/Ctrl-C: nothing new starts; waiting for 1 running task to finish and merge \(Ctrl-C again kills it\): slow/, 10_000);
      await writeFile(gate, "");
      expect(await run.exited).toBe(130);
      const out = run.output();
      const runId = runIdOf(out);
      expect(out).toMatch(/slow: merged/);
      expect(out).toContain("merged while stopping: slow");
      expect(out).toContain(`ado runs resume ${runId}`);
      expect(gitOut(repo.dir, "show", `ado/${runId}/integration:slow.txt`)).toBe("slow");

      const list = await runAdo(["runs", "list", "--json"], { env, cwd: repo.dir });
      expect(JSON.parse(list.stdout).runs).toMatchObject([{ runId, state: "interrupted" }]);

      const resumed = await runAdo(["runs", "resume", runId, "--json"], { env, cwd: repo.dir, timeoutMs: 90_000 });
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(JSON.parse(resumed.stdout)).toMatchObject({ runId, status: "succeeded" });
      expect(gitOut(repo.dir, "show", `ado/${runId}/integration:after.txt`)).toBe("after");
      expect(existsSync(join(repo.dir, ".git", "ado", "runs", runId))).toBe(false);
    } finally {
      await writeFile(gate, ""); // a failed test leaves no agent waiting on it
      await repo.cleanup();
    }
  }, 150_000);

  it("twice: the running task is killed, its work checkpointed; the resumed run continues from it", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const graph = join(scratch.dir, "ctrl-c2.yaml");
      // The first attempt leaves step1.txt and hangs; the next one finds it (from the checkpoint) and finishes.
      await writeFile(graph, 'name: cc2\ntasks:\n  - { id: long, run: "if [ -f step1.txt ]; then echo done > done.txt; else echo 1 > step1.txt; echo waiting; sleep 60; fi" }\n');
      const run = startRun(["run", "--graph", graph, "--repo", repo.dir, "--workers", "1", "--progress", "plain"], env);
      await run.until(/long\| waiting/);
      run.child.kill("SIGINT");
      await run.until(/Ctrl-C again kills it/, 10_000);
      run.child.kill("SIGINT");
      await run.until(/Ctrl-C again: killing 1 running task, work so far committed on its branch \(Ctrl-C once more exits at once\): long/, 10_000);
      // Not 60 s: the agent was killed.
      expect(await run.exited).toBe(130);
      const out = run.output();
      const runId = runIdOf(out);
      expect(out).toMatch(/interrupted: long/);
      expect(gitOut(repo.dir, "show", `ado/${runId}/long:step1.txt`)).toBe("1");

      const resumed = await runAdo(["runs", "resume", runId, "--progress", "plain"], { env, cwd: repo.dir, timeoutMs: 90_000 });
      expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0);
      expect(gitOut(repo.dir, "show", `ado/${runId}/integration:done.txt`)).toBe("done");
    } finally {
      await repo.cleanup();
    }
  }, 150_000);
});

describe("progress - after kill -9 of ado run", () => {
  it("its worktrees show as orphaned, ado runs list says what to do, ado runs remove archives their work and removes them", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const run = startRun(["run", "hang", "--cmd", "echo work > work.txt; echo started; sleep 60", "--repo", repo.dir, "--progress", "plain"], env);
      await run.until(/task\| started/);
      run.child.kill("SIGKILL");
      await run.exited;
      const runId = runIdOf(run.output());

      const wt = await runAdo(["worktrees", "list"], { env, cwd: repo.dir });
      expect(wt.stdout).toMatch(new RegExp(`${runId}/task\\s+\\S+\\s+orphaned .*ado runs resume ${runId}, or ado runs remove ${runId}`));
      const list = await runAdo(["runs", "list"], { env, cwd: repo.dir });
      expect(list.stdout).toMatch(new RegExp(`${runId}\\s+orphaned\\s+.*\\s1\\s+its ado \\(pid \\d+\\) is gone`));

      const removed = await runAdo(["runs", "remove", runId], { env, cwd: repo.dir });
      expect(removed.code, removed.stdout + removed.stderr).toBe(0);
      const ref = /git log (refs\/ado\/archive\/\S+);/.exec(removed.stdout)?.[1];
      expect(ref, removed.stdout).toBeDefined();
      // The uncommitted work is in the archive, then the worktree and the store went.
      expect(gitOut(repo.dir, "show", `${ref}:work.txt`)).toBe("work");
      expect(gitOut(repo.dir, "worktree", "list")).not.toContain(runId);
      expect(existsSync(join(repo.dir, ".git", "ado", "runs", runId))).toBe(false);
      expect((await runAdo(["runs", "list"], { env, cwd: repo.dir })).stdout).toMatch(/no kept runs/);
    } finally {
      await repo.cleanup();
    }
  }, 120_000);
});

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;

/** Runs a graph of `size` tasks in `ado` on a 100x20 tmux terminal; returns the scrollback and the screen. */
async function onTerminal(bin: string, size: number): Promise<string> {
  const repo = await makeRepo();
  const env = await isolatedEnv();
  const socket = `ado-test-${process.pid}-${size}`;
  const tmux = (...args: string[]) => execFileSync("tmux", ["-L", socket, "-f", "/dev/null", ...args], { encoding: "utf8" });
  try {
    const graph = join(scratch.dir, `tasks-${size}.yaml`);
    // Mostly tasks that need no worktree (fast on a loaded machine); a few that run long
    // enough for many frames to be drawn while the rows would not fit.
    const tasks = Array.from({ length: size }, (_, i) =>
      i < 4 ? `  - { id: t${i}, run: "for s in 1 2 3 4 5 6; do echo step $s of ${i}; sleep 0.5; done" }` : `  - { id: t${i}, agent: noop, needs: [t${i % 4}] }`,
    ).join("\n");
    await writeFile(graph, `name: many\ntasks:\n${tasks}\n`);
    const vars = Object.entries({ ...env, ADO_LOG_LEVEL: "error", PATH: process.env.PATH ?? "" }).map(([k, v]) => `${k}='${v}'`);
    const cmd = `env ${vars.join(" ")} '${process.execPath}' '${bin}' run --graph '${graph}' --repo '${repo.dir}' --workers 4; echo ADO-EXIT-$?; sleep 600`;
    tmux("new-session", "-d", "-x", "100", "-y", "20", "-s", "ado", cmd);
    tmux("set-option", "-t", "ado", "history-limit", "50000");
    let screen = "";
    const end = Date.now() + 150_000;
    while (!/ADO-EXIT-\d+/.test(screen)) {
      if (Date.now() > end) throw new Error(`the run did not end:\n${screen}`);
      await new Promise((r) => setTimeout(r, 500));
      screen = tmux("capture-pane", "-p", "-J", "-t", "ado", "-S", "-", "-E", "-");
    }
    return screen;
  } finally {
    try {
      tmux("kill-server");
    } catch {
      // already gone
    }
    await repo.cleanup();
  }
}

describe.skipIf(!hasTmux)("progress - on a real terminal (tmux)", () => {
  // 30 tasks: more rows than the terminal has (each redraw used to scroll a copy of the
  // frame into the scrollback); 60: more than the old view listed at all.
  it.each([30, 60])("%i tasks on a 20-row terminal: redrawn in place, one frame in the scrollback, no line wider than the terminal", async (size) => {
    const screen = await onTerminal(ADO_BIN, size);
    expect(screen).toMatch(/ADO-EXIT-0/);
    const lines = screen.split("\n");
    // A row of task t0 is in a frame only while t0 runs: drawn over, it leaves no copy behind.
    expect(lines.filter((l) => /^\s+\S\s+t0\s/.test(l)).length, screen).toBeLessThanOrEqual(1);
    // Every frame starts with the header: only the last one is left, the rest were drawn over.
    const headers = lines.filter((l) => / done · /.test(l));
    expect(headers, screen).toHaveLength(1);
    expect(headers[0]).toMatch(new RegExp(`^${size}/${size} done · `));
    for (const l of lines) expect(l.length, l).toBeLessThan(100);
  }, 200_000);
});
