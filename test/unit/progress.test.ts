/**
 * The terminal view shows the same task states the client reports (TaskTracker), plus
 * each task's last line. Drawn into a stream that records what a terminal would get.
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { TerminalProgress } from "../../src/cli/progress.js";
import type { AdoEvent } from "../../src/runtime/messages.js";

const at = (s: number) => new Date(Date.UTC(2026, 10, 23, 12, 0, s)).toISOString();
const base = { runId: "r1", at: at(0) };
const events: AdoEvent[] = [
  { type: "run.accepted", ...base, name: "demo", tasks: [{ id: "a", needs: [], priority: "normal" }, { id: "b", needs: [], priority: "normal" }, { id: "c", needs: ["a"], priority: "normal" }], queued: ["a", "b"] },
  { type: "task.started", ...base, taskId: "a", attempt: 1, workerId: "w1", at: at(1) },
  { type: "task.output", ...base, taskId: "a", attempt: 1, at: at(2), stream: "stdout", data: "building\ncompiling 3 files\n" },
  { type: "task.succeeded", ...base, taskId: "a", attempt: 1, workerId: "w1", at: at(3), commit: "a".repeat(40), files: ["x"], startedAt: at(1), finishedAt: at(3) },
  { type: "task.merged", ...base, taskId: "a", attempt: 1, at: at(4), integrationCommit: "b".repeat(40) },
  { type: "task.started", ...base, taskId: "b", attempt: 1, workerId: "w2", at: at(1) },
  { type: "task.failed", ...base, taskId: "b", attempt: 1, workerId: "w2", at: at(2), error: "exited with code 3", willRetry: true, startedAt: at(1), finishedAt: at(2), outputTail: "" },
  { type: "task.queued", ...base, taskId: "b", attempt: 2, at: at(3) },
] as AdoEvent[];

describe("TerminalProgress", () => {
  it("shows each task's state, attempt and last line from the events", () => {
    const out = Object.assign(new PassThrough(), { columns: 120 }) as unknown as NodeJS.WriteStream;
    let text = "";
    (out as unknown as PassThrough).on("data", (d: Buffer) => (text += d.toString()));
    const view = new TerminalProgress(out);
    for (const e of events) view.onEvent(e);
    view.stop();
    // The last frame, without colour codes.
    const frame = text.split("\x1b[2K").slice(-4).join("").replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
    expect(frame).toMatch(/run r1 \(demo\): 3 tasks/);
    expect(frame).toMatch(/✓ a\s+succeeded\s+2\.0s\s+compiling 3 files/);
    expect(frame).toMatch(/○ b\s+queued\s+1\.0s \(attempt 2\)\s+exited with code 3/);
    expect(frame).toMatch(/· c\s+pending/);
  });
});
