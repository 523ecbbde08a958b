/**
 * What a person reads at the end of a run, and the task logs behind it: a failed task's
 * last lines and where its log is (text and --json), archived attempts, a --merge-into
 * refusal said once, the Ctrl-C stop summary, and why a task of `ado status` waits.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { LineProgress } from "../../src/cli/progress.js";
import { RunProgress } from "../../src/cli/progress-state.js";
import { summarize, summarizeStop } from "../../src/cli/summary.js";
import { taskReason } from "../../src/cli/task-reasons.js";
import { listTaskLogs, tailOfFile, taskLogPath, TaskLogWriter } from "../../src/cli/task-logs.js";
import type { RunOutcome, RunStatusView, TaskStatusView } from "../../src/runtime/client.js";
import type { RunId } from "../../src/runtime/ids.js";
import type { AdoEvent, RunRecord } from "../../src/runtime/messages.js";
import { attemptRef } from "../../src/runtime/names.js";
import { useScratch } from "../helpers/scratch.js";

const scratch = useScratch("ado-summary-");

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const ev = (e: Record<string, unknown>): AdoEvent => ({ runId: "r1", attempt: 1, at: at(0), ...e }) as unknown as AdoEvent;
const thirtyLines = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join("\n") + "\n";

function failedRun(): { events: AdoEvent[]; outcome: RunOutcome } {
  const events = [
    ev({ type: "run.accepted", name: "n", tasks: [{ id: "build", needs: [], priority: "normal" }, { id: "ok", needs: [], priority: "normal" }], queued: ["build", "ok"] }),
    ev({ type: "task.started", taskId: "build", workerId: "w1", at: at(1) }),
    ev({ type: "task.output", taskId: "build", stream: "stdout", data: thirtyLines, at: at(2) }),
    ev({ type: "task.failed", taskId: "build", workerId: "w1", error: "exited with code 2", willRetry: false, outputTail: thirtyLines, startedAt: at(1), finishedAt: at(3), at: at(3) }),
  ];
  const outcome: RunOutcome = {
    runId: "r1" as RunId,
    status: "failed",
    error: "task 'build' failed",
    tasks: [
      { id: "build", status: "failed", attempts: 1, startedAt: at(1), finishedAt: at(3), error: "exited with code 2" },
      { id: "ok", status: "succeeded", attempts: 1 },
    ],
  };
  return { events, outcome };
}

describe("summary - a failed task", () => {
  it("summary - shows the last 20 lines of a failed task and where its whole log is, in text and in --json", async () => {
    const root = join(scratch.dir, "logs-a");
    const { events, outcome } = failedRun();
    const progress = new RunProgress();
    const logs = new TaskLogWriter(root, "r1");
    for (const e of events) {
      progress.apply(e);
      logs.onEvent(e);
    }
    logs.close();
    const log = taskLogPath(root, "r1", "build", 1);
    expect(readFileSync(log, "utf8")).toBe(thirtyLines);

    const text = (await summarize(outcome, false, { progress, logsRoot: root })).stdout;
    expect(text).toMatch(/✗ build: exited with code 2 \(attempt 1, 2\.0s\)/);
    expect(text).toContain("last 20 lines of its output:");
    expect(text).toContain("| line 11\n");
    expect(text).toContain("| line 30\n");
    expect(text).not.toContain("| line 10\n");
    expect(text).toContain(`log: ${log}`);

    const json = JSON.parse((await summarize(outcome, true, { progress, logsRoot: root })).stdout);
    const build = json.tasks.find((t: { id: string }) => t.id === "build");
    expect(build.outputTail).toHaveLength(20);
    expect(build.outputTail.at(-1)).toBe("line 30");
    expect(build.log).toBe(log);
    expect(json.tasks.find((t: { id: string }) => t.id === "ok").outputTail).toBeUndefined();
  });

  it("summary - without the events (a late attach), the tail comes from the log", async () => {
    const root = join(scratch.dir, "logs-b");
    const { events, outcome } = failedRun();
    const logs = new TaskLogWriter(root, "r1");
    for (const e of events) logs.onEvent(e);
    logs.close();
    const text = (await summarize(outcome, false, { logsRoot: root })).stdout;
    expect(text).toContain("| line 30\n");
  });

  it("summary - names every archived attempt (git log refs/ado/attempts/<run>/<task>/<n>)", async () => {
    const repo = join(scratch.dir, "repo");
    execFileSync("git", ["init", "-q", "-b", "main", repo]);
    execFileSync("git", ["-C", repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "init"]);
    execFileSync("git", ["-C", repo, "update-ref", attemptRef("r1", "build", 1), "HEAD"]);
    execFileSync("git", ["-C", repo, "update-ref", attemptRef("r1", "build", 2), "HEAD"]);
    const { events, outcome } = failedRun();
    const progress = new RunProgress();
    for (const e of events) progress.apply(e);
    // A lost attempt's ref reaches the client through worker.lost (remote repositories too).
    progress.apply(ev({ type: "worker.lost", taskId: "ok", workerId: "w9", outcome: "interrupted", reason: "died", archiveRef: attemptRef("r1", "ok", 1) }));
    const text = (await summarize(outcome, false, { progress, repo })).stdout;
    expect(text).toContain(`git log ${attemptRef("r1", "build", 1)}\n`);
    expect(text).toContain(`git log ${attemptRef("r1", "build", 2)}\n`);
    expect(text).toContain(`git log ${attemptRef("r1", "ok", 1)}\n`);
    const json = JSON.parse((await summarize(outcome, true, { progress, repo })).stdout);
    expect(json.tasks[0].archivedAttempts).toEqual([attemptRef("r1", "build", 1), attemptRef("r1", "build", 2)]);
  });
});

describe("summary - --merge-into refused", () => {
  it("summary - the reason is printed once, whatever the mode (it was three times)", async () => {
    const reason = "main is checked out in /home/me/app: run git merge --ff-only there";
    const events = [
      ev({ type: "run.accepted", name: "n", tasks: [{ id: "a", needs: [], priority: "normal" }], queued: ["a"] }),
      ev({ type: "run.merged_into", into: "main", status: "refused", reason }),
    ];
    const outcome: RunOutcome = { runId: "r1" as RunId, status: "succeeded", integrationBranch: "ado/r1/integration", tasks: [], mergeInto: { into: "main", status: "refused", reason } };
    for (const json of [false, true]) {
      const out = new PassThrough();
      let progress = "";
      out.on("data", (d: Buffer) => (progress += d.toString()));
      const view = new LineProgress(out);
      for (const e of events) view.onEvent(e);
      view.stop();
      const s = await summarize(outcome, json, { progress: view.state });
      // What a person reads: progress, then the summary (with --json, stdout is data: it carries the reason too).
      const all = progress + (json ? "" : s.stdout) + s.stderr;
      expect(all.split(reason).length - 1, `json=${json}:\n${all}`).toBe(1);
      if (json) expect(JSON.parse(s.stdout).mergeInto.reason).toBe(reason);
      expect(all).toMatch(/main: not updated \(refused; see below\)/);
    }
  });
});

describe("summary - Ctrl-C", () => {
  it("summary - a stopped run says what merged meanwhile, what was interrupted, and how to resume or remove it", () => {
    const p = new RunProgress();
    for (const e of [
      ev({ type: "run.accepted", name: "n", tasks: ["a", "b", "c"].map((id) => ({ id, needs: [], priority: "normal" })), queued: ["a", "b", "c"] }),
      ev({ type: "task.started", taskId: "a", workerId: "w" }),
      ev({ type: "task.succeeded", taskId: "a", workerId: "w", commit: "a".repeat(40), files: ["x"], startedAt: at(0), finishedAt: at(1) }),
      ev({ type: "task.merged", taskId: "a", integrationCommit: "b".repeat(40) }),
      ev({ type: "task.started", taskId: "b", workerId: "w" }),
    ])
      p.apply(e);
    const text = summarizeStop("r1", { mergedWhileStopping: ["a"], interrupted: ["b"] }, false, { progress: p, keptStore: "/repo/.git/ado/runs/r1" });
    expect(text).toContain("merged while stopping: a");
    expect(text).toMatch(/interrupted: b \(work so far committed on ado\/r1\/<task>/);
    expect(text).toContain("not finished: b, c");
    expect(text).toContain("ado runs resume r1");
    expect(text).toContain("ado runs remove r1");
    const json = JSON.parse(summarizeStop("r1", { mergedWhileStopping: ["a"], interrupted: ["b"] }, true, { progress: p, keptStore: "/k" }));
    expect(json).toMatchObject({ status: "interrupted", mergedWhileStopping: ["a"], interrupted: ["b"], resume: "ado runs resume r1" });
  });
});

describe("task logs", () => {
  it("task logs - one file per attempt, only for attempts seen from their start; the reader lists and tails them", async () => {
    const root = join(scratch.dir, "logs-c");
    const w = new TaskLogWriter(root, "r1");
    // Output of an attempt whose start this client did not see: not written (it would be a fragment).
    w.onEvent(ev({ type: "task.output", taskId: "x", stream: "stdout", data: "late\n" }));
    w.onEvent(ev({ type: "task.started", taskId: "x", attempt: 2, workerId: "w" }));
    w.onEvent(ev({ type: "task.output", taskId: "x", attempt: 2, stream: "stdout", data: "out\n" }));
    w.onEvent(ev({ type: "task.output", taskId: "x", attempt: 2, stream: "stderr", data: "err\n" }));
    w.close();
    expect(existsSync(taskLogPath(root, "r1", "x", 1))).toBe(false);
    expect(readFileSync(taskLogPath(root, "r1", "x", 2), "utf8")).toBe("out\nerr\n");
    const listed = await listTaskLogs(root, "r1");
    expect(listed.map((l) => [l.taskId, l.attempt, l.bytes])).toEqual([["x", 2, 8]]);
    expect(await tailOfFile(listed[0]!.path, 1)).toEqual(["err"]);
    // A replay rewrites the log from the attempt's start: the same content, not twice.
    const again = new TaskLogWriter(root, "r1");
    again.onEvent(ev({ type: "task.started", taskId: "x", attempt: 2, workerId: "w" }));
    again.onEvent(ev({ type: "task.output", taskId: "x", attempt: 2, stream: "stdout", data: "out\n" }));
    again.close();
    expect(readFileSync(taskLogPath(root, "r1", "x", 2), "utf8")).toBe("out\n");
  });

  it("task logs - two clients on one machine: the second writes only once the first is gone", async () => {
    const root = join(scratch.dir, "logs-d");
    const first = new TaskLogWriter(root, "r1");
    first.onEvent(ev({ type: "task.started", taskId: "x", workerId: "w" }));
    // Another live process holds the run's logs: this one stays out.
    const other = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
    const dead = Number(other.stdout.trim());
    await writeFile(join(root, "r1", ".writer"), JSON.stringify({ pid: process.ppid, host: (await import("node:os")).hostname(), at: at(0) }));
    const second = new TaskLogWriter(root, "r1");
    second.onEvent(ev({ type: "task.started", taskId: "y", workerId: "w" }));
    second.onEvent(ev({ type: "task.output", taskId: "y", stream: "stdout", data: "y\n" }));
    expect(existsSync(taskLogPath(root, "r1", "y", 1))).toBe(false);
    // Its holder died (a pid that no longer runs): the next attempt's log is written.
    await writeFile(join(root, "r1", ".writer"), JSON.stringify({ pid: dead, host: (await import("node:os")).hostname(), at: at(0) }));
    second.onEvent(ev({ type: "task.started", taskId: "y", attempt: 2, workerId: "w" }));
    second.onEvent(ev({ type: "task.output", taskId: "y", attempt: 2, stream: "stdout", data: "y2\n" }));
    second.close();
    first.close();
    expect(readFileSync(taskLogPath(root, "r1", "y", 2), "utf8")).toBe("y2\n");
  });
});

describe("status - why a task waits", () => {
  const run = { runId: "r1", status: "running", paused: false } as RunRecord;
  const t = (id: string, status: TaskStatusView["status"], needs: string[] = [], attempts = 1): TaskStatusView => ({ id, status, attempts, needs });
  const view = (tasks: TaskStatusView[], r = run): RunStatusView => ({ run: r, tasks });

  it("status - pending on its dependencies, placement (task.waiting), paused, or a person", () => {
    const tasks = [t("a", "succeeded"), t("b", "running"), t("c", "pending", ["a", "b"], 0), t("d", "queued"), t("e", "needs_attention"), t("f", "queued", [], 2)];
    const v = view(tasks);
    expect(taskReason(tasks[2]!, v, { paused: false })).toBe("waiting for b");
    expect(taskReason(tasks[3]!, v, { paused: false, waiting: { attempt: 1, reason: "no worker has label gpu" } })).toBe("no worker has label gpu");
    expect(taskReason(tasks[3]!, v, { paused: false })).toBeUndefined();
    // A waiting event of an earlier attempt says nothing about this one.
    expect(taskReason(tasks[5]!, v, { paused: false, waiting: { attempt: 1, reason: "old" } })).toBeUndefined();
    expect(taskReason(tasks[1]!, v, { paused: true })).toBe("paused");
    expect(taskReason(tasks[4]!, v, { paused: false })).toBe("needs a person: ado hitl show r1.e");
    // A finished run waits for nothing.
    expect(taskReason(tasks[2]!, view(tasks, { ...run, status: "failed" }), { paused: false })).toBeUndefined();
  });
});
