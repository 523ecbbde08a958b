/**
 * The live view as a pure function of (state, width, height, clock) -> frame, and the
 * shells around it: which view the environment gets, plain lines without escape codes,
 * and a redraw that never scrolls (checked on a tiny terminal emulator that keeps a
 * scrollback, the way a real one does).
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { LineProgress, pickProgress, TerminalProgress } from "../../src/cli/progress.js";
import { createLogger } from "../../src/runtime/logger.js";
import { renderFrame, textWidth } from "../../src/cli/progress-frame.js";
import { RunProgress } from "../../src/cli/progress-state.js";
import type { AdoEvent } from "../../src/runtime/messages.js";

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const sha = (c: string) => c.repeat(40);
const accepted = (ids: string[], queued = ids, needs: Record<string, string[]> = {}): AdoEvent =>
  ({ type: "run.accepted", runId: "r1", at: at(0), name: "demo", tasks: ids.map((id) => ({ id, needs: needs[id] ?? [], priority: "normal" })), queued }) as AdoEvent;
const ev = (e: Record<string, unknown>): AdoEvent => ({ runId: "r1", attempt: 1, ...e }) as unknown as AdoEvent;
const started = (taskId: string, s: number, attempt = 1) => ev({ type: "task.started", taskId, attempt, at: at(s), workerId: "w1" });
const output = (taskId: string, s: number, data: string, stream = "stdout") => ev({ type: "task.output", taskId, at: at(s), stream, data });
const succeeded = (taskId: string, s0: number, s1: number, files: string[] = ["x"]) =>
  ev({ type: "task.succeeded", taskId, at: at(s1), workerId: "w1", ...(files.length ? { commit: sha("a") } : {}), files, startedAt: at(s0), finishedAt: at(s1) });
const merged = (taskId: string, s: number) => ev({ type: "task.merged", taskId, at: at(s), integrationCommit: sha("b") });

function progressOf(events: AdoEvent[]): RunProgress {
  const p = new RunProgress();
  for (const e of events) p.apply(e);
  return p;
}
const strip = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
const frame = (p: RunProgress, width = 100, height = 30, now = T0 + 10_000, color = false) => renderFrame(p, { width, height, now, color });

describe("progress - the frame", () => {
  it("progress - a small run shows every task: state, elapsed time, attempt and its last line", () => {
    const p = progressOf([
      accepted(["a", "b", "c"], ["a", "b"], { c: ["a"] }),
      started("a", 1),
      output("a", 2, "building\ncompiling 3 files\n"),
      succeeded("a", 1, 3),
      merged("a", 4),
      started("b", 1),
      ev({ type: "task.failed", taskId: "b", at: at(2), workerId: "w1", error: "exited with code 3", willRetry: true, startedAt: at(1), finishedAt: at(2), outputTail: "" }),
      ev({ type: "task.queued", taskId: "b", attempt: 2, at: at(3) }),
    ]);
    const lines = frame(p);
    expect(lines[0]).toMatch(/^1\/3 done · 10\.0s {2}demo \(r1\)$/);
    expect(lines[1]).toMatch(/✓ a\s+succeeded\s+2\.0s\s+compiling 3 files$/);
    expect(lines[2]).toMatch(/○ b\s+queued\s+1\.0s attempt 2\s+exited with code 3 \(will retry\)$/);
    expect(lines[3]).toMatch(/· c\s+pending$/);
    expect(lines).toHaveLength(4);
  });

  it("progress - a task that succeeds with no changes is succeeded, not merging forever (also in the final frame)", () => {
    const p = progressOf([accepted(["quiet", "busy"]), started("quiet", 1), succeeded("quiet", 1, 2, []), started("busy", 1), succeeded("busy", 1, 3), merged("busy", 4)]);
    expect(p.task("quiet")!.status).toBe("succeeded");
    expect(frame(p).join("\n")).not.toMatch(/merging/);
    // run.completed is the scheduler's final word, also for ends without a task event.
    const halted = progressOf([
      accepted(["x"]),
      started("x", 1),
      succeeded("x", 1, 2),
      ev({ type: "run.completed", at: at(3), status: "failed", counts: {}, tasks: [{ id: "x", status: "skipped", attempts: 1 }] }),
    ]);
    expect(halted.task("x")!.status).toBe("skipped");
  });

  it("progress - a paused task shows paused, and running again once resumed", () => {
    const p = progressOf([accepted(["a"]), started("a", 1), ev({ type: "task.paused", taskId: "a", at: at(2), workerId: "w1" })]);
    expect(frame(p)[1]).toMatch(/‖ a\s+paused/);
    expect(frame(p)[0]).toMatch(/1 paused/);
    p.apply(ev({ type: "task.resumed", taskId: "a", at: at(3), workerId: "w1" }));
    expect(frame(p)[1]).toMatch(/◐ a\s+running/);
  });

  it("progress - a task that cannot be placed shows why (task.waiting), until it starts", () => {
    const p = progressOf([accepted(["gpu"]), ev({ type: "task.waiting", taskId: "gpu", at: at(1), reason: "no worker has label gpu (3 workers)", workers: 3 })]);
    expect(frame(p)[1]).toMatch(/○ gpu\s+queued\s+waiting: no worker has label gpu \(3 workers\)/);
    p.apply(started("gpu", 2));
    expect(frame(p)[1]).not.toMatch(/waiting/);
  });

  it("progress - durations read as people write them (4m05s, not 245.0s)", () => {
    const p = progressOf([accepted(["long"]), started("long", 0)]);
    const lines = frame(p, 100, 30, T0 + 245_000);
    expect(lines[1]).toMatch(/long\s+running\s+4m05s/);
    expect(lines[0]).toMatch(/· 4m05s/);
    expect(lines.join("\n")).not.toMatch(/\d{3,}\.\ds/);
  });

  it("progress - a run taller than the terminal: running tasks first with their activity, the rest counted, header with totals", () => {
    const ids = Array.from({ length: 30 }, (_, i) => `t${String(i).padStart(2, "0")}`);
    const events: AdoEvent[] = [accepted(ids)];
    for (const id of ids.slice(0, 12)) events.push(started(id, 1), succeeded(id, 1, 2), merged(id, 3));
    for (const id of ids.slice(12, 14))
      events.push(started(id, 1), ev({ type: "task.failed", taskId: id, at: at(2), workerId: "w1", error: "exited with code 2", willRetry: false, startedAt: at(1), finishedAt: at(2), outputTail: "boom\n" }));
    for (const id of ids.slice(14, 17)) events.push(started(id, 4), output(id, 5, `step of ${id}\n`));
    const p = progressOf(events);
    const lines = frame(p, 100, 10, T0 + 65_000);
    expect(lines.length).toBeLessThanOrEqual(9);
    expect(lines[0]).toMatch(/^14\/30 done · 3 running · 2 failed · 1m05s {2}demo \(r1\)/);
    expect(lines.slice(1, 4).join("\n")).toMatch(/◐ t14\s+running\s+1m01s\s+step of t14\n.*◐ t15.*\n.*◐ t16/);
    expect(lines.join("\n")).toMatch(/✗ t1[23]\s+failed/);
    expect(lines.at(-1)).toMatch(/✓ 12 succeeded\s+○ 13 queued/);
  });

  it("progress - a 60-task run's frames never exceed the terminal's height or width, at any size", () => {
    const ids = Array.from({ length: 60 }, (_, i) => `task-with-a-long-name-${i}`);
    const events: AdoEvent[] = [accepted(ids, ids.slice(0, 40), Object.fromEntries(ids.slice(40).map((id) => [id, [ids[0]!]])))];
    for (const [i, id] of ids.slice(0, 25).entries()) {
      events.push(started(id, i), output(id, i + 1, `\x1b[32mline ${"x".repeat(i * 7)} 漢字 ✓\x1b[0m\r\n`));
      if (i % 3 === 0) events.push(succeeded(id, i, i + 2), merged(id, i + 3));
      if (i % 5 === 1) events.push(ev({ type: "task.paused", taskId: id, at: at(i + 2), workerId: "w1" }));
    }
    events.push(ev({ type: "run.needs_attention", at: at(50), round: 1, tasks: [{ taskId: ids[3], hitlId: `r1.${ids[3]}`, message: "conflict" }] }));
    const p = progressOf(events);
    for (let height = 1; height <= 70; height++) {
      for (const width of [10, 20, 41, 80, 200]) {
        for (const color of [false, true]) {
          const lines = renderFrame(p, { width, height, now: T0 + 99_000, color, notice: "Ctrl-C: waiting for 17 running tasks" });
          expect(lines.length, `${width}x${height}`).toBeLessThanOrEqual(Math.max(1, height - 1));
          for (const l of lines) expect(textWidth(strip(l)), `${width}x${height}: ${l}`).toBeLessThan(width);
          if (!color) for (const l of lines) expect(l).not.toMatch(/\x1b/);
        }
      }
    }
    // The notice (what Ctrl-C waits for) survives even a short terminal.
    expect(renderFrame(p, { width: 80, height: 4, now: T0, color: false, notice: "Ctrl-C: waiting" }).join("\n")).toMatch(/Ctrl-C: waiting/);
  });
});

describe("progress - what an agent is doing", () => {
  const startedWith = (taskId: string, s: number, agent: string, attempt = 1) => ev({ type: "task.started", taskId, attempt, at: at(s), workerId: "w1", agent });
  const tool = (taskId: string, s: number, phase: string, name: string, summary: string, extra: Record<string, unknown> = {}) =>
    ev({ type: "agent.tool", taskId, at: at(s), seq: s, phase, tool: name, summary, ...extra });
  const message = (taskId: string, s: number, text: string, attempt = 1) => ev({ type: "agent.message", taskId, attempt, at: at(s), seq: s, text, raw: false, truncated: false });
  const claudeLine = '{"type":"assistant","message":{"content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"npm test"}}]}}';

  it("progress - an agent CLI's row shows its last tool call or message, never its raw JSON lines", () => {
    const p = progressOf([accepted(["fix"]), startedWith("fix", 1, "claude"), output("fix", 2, `${claudeLine}\n`), tool("fix", 2, "started", "Bash", "npm test", { callId: "toolu_1" })]);
    expect(frame(p)[1]).toMatch(/◐ fix\s+running\s+9\.0s\s+Bash: npm test$/);
    // Its next raw line (the tool's result, as JSON) does not replace it.
    p.apply(output("fix", 3, '{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}}\n'));
    expect(frame(p)[1]).toMatch(/Bash: npm test$/);
    // A failed call says so; then what the agent says takes its place, on one line.
    p.apply(tool("fix", 4, "completed", "Bash", "npm test", { callId: "toolu_1", ok: false }));
    expect(frame(p)[1]).toMatch(/Bash: npm test \(failed\)$/);
    p.apply(message("fix", 5, "The test fails on an off-by-one.\n\nFixing \x1b[1mparse_range\x1b[0m now."));
    expect(frame(p)[1]).toMatch(/\s+The test fails on an off-by-one\. Fixing parse_range now\.$/);
    expect(frame(p).join("\n")).not.toMatch(/[{}"]/);
    // A follower that did not see which agent started (seeded mid-run) learns it from the agent's events.
    const q = progressOf([accepted(["fix"]), started("fix", 1), tool("fix", 2, "started", "Bash", "ls", { callId: "t" }), output("fix", 3, `${claudeLine}\n`)]);
    expect(frame(q)[1]).toMatch(/Bash: ls$/);
  });

  it("progress - the agent's line is cut to the terminal's width; a shell task still shows its output; an ended attempt's late events do not count", () => {
    const long = `Edit: src/${"deep/".repeat(40)}file.ts`;
    const p = progressOf([
      accepted(["a", "sh"]),
      startedWith("a", 1, "codex"),
      tool("a", 2, "started", "Edit", long.slice("Edit: ".length)),
      startedWith("sh", 1, "shell"),
      output("sh", 2, "compiling\n"),
    ]);
    for (const width of [45, 80, 120]) {
      const row = frame(p, width)[1]!;
      expect(textWidth(row), row).toBeLessThan(width);
      expect(row).toMatch(/Edit: src\/deep\/.*…$/);
    }
    expect(frame(p)[2]).toMatch(/sh\s+running.*compiling$/);
    // Attempt 2 of a: attempt 1's late message is not what it does now.
    p.apply(ev({ type: "task.failed", taskId: "a", at: at(3), workerId: "w1", error: "crashed", willRetry: true, startedAt: at(1), finishedAt: at(3), outputTail: "" }));
    p.apply(ev({ type: "task.queued", taskId: "a", attempt: 2, at: at(3) }));
    p.apply(startedWith("a", 4, "codex", 2));
    p.apply(message("a", 5, "late words of attempt 1", 1));
    expect(frame(p)[1]).not.toMatch(/late words/);
    p.apply(message("a", 6, "attempt 2 starts from the checkpoint", 2));
    expect(frame(p)[1]).toMatch(/attempt 2\s+attempt 2 starts from the checkpoint$/);
  });

  it("progress - a rate limit the agent hit is its activity, with when it resets", () => {
    const p = progressOf([
      accepted(["a"]),
      startedWith("a", 1, "claude"),
      ev({ type: "agent.rate_limit", taskId: "a", at: at(2), seq: 1, status: "allowed", message: "" }),
    ]);
    // "allowed" is no news: the row still says where it runs.
    expect(frame(p)[1]).toMatch(/running\s+9\.0s\s+on w1$/);
    p.apply(ev({ type: "agent.rate_limit", taskId: "a", at: at(3), seq: 2, status: "rejected", resetAt: "2026-11-23T15:45:00.000Z", limitType: "five_hour", message: "" }));
    expect(frame(p)[1]).toMatch(/rate limited \(five_hour\) until 15:45:00Z$/);
  });

  it("progress - plain lines: tool calls as lines, messages as the agent's lines, no raw JSON; a shell task's output as before", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (d: Buffer) => (text += d.toString()));
    const view = new LineProgress(out);
    for (const e of [
      accepted(["fix", "ed", "sh"]),
      startedWith("fix", 1, "claude"),
      output("fix", 2, `${claudeLine}\n`),
      tool("fix", 2, "started", "Bash", "npm test", { callId: "toolu_1" }),
      tool("fix", 3, "completed", "Bash", "npm test", { callId: "toolu_1", ok: true }),
      tool("fix", 4, "started", "Read", "src/range.ts", { callId: "toolu_2" }),
      tool("fix", 5, "completed", "Read", "src/range.ts", { callId: "toolu_2", ok: false }),
      message("fix", 6, "Fixed the off-by-one.\nTests pass."),
      output("fix", 6, "Warning: something on stderr\n", "stderr"),
      ev({ type: "agent.rate_limit", taskId: "fix", at: at(7), seq: 7, status: "retrying", retryInMs: 30_000, message: "" }),
      // aider reports an edit only once it is done: printed, since its start never was.
      startedWith("ed", 1, "aider"),
      output("ed", 2, "Applied edit to src/a.py\n"),
      tool("ed", 2, "completed", "edit", "src/a.py", { ok: true }),
      startedWith("sh", 1, "shell"),
      output("sh", 2, "plain output\n"),
    ])
      view.onEvent(e);
    view.stop();
    expect(text).toMatch(/\] fix: started on w1 \(claude\)\n/);
    expect(text).toMatch(/\] fix: Bash: npm test\n/);
    expect(text.match(/Bash: npm test/g)).toHaveLength(1); // its successful completion adds nothing
    expect(text).toMatch(/\] fix: Read: src\/range\.ts\n.*\] fix: Read: src\/range\.ts \(failed\)\n/s);
    expect(text).toContain("  fix| Fixed the off-by-one.\n  fix| Tests pass.\n");
    expect(text).toContain("  fix! Warning: something on stderr\n");
    expect(text).toMatch(/\] fix: rate limited, retrying in 30\.0s\n/);
    expect(text).not.toContain('"type"');
    expect(text).toMatch(/\] ed: edit: src\/a\.py\n/);
    expect(text).not.toContain("Applied edit");
    expect(text).toContain("  sh| plain output\n");
  });
});

describe("progress - which view", () => {
  const tty = { isTTY: true };
  it("progress - live only on a terminal that moves its cursor; colour unless NO_COLOR; plain into pipes", () => {
    expect(pickProgress("auto", tty, { TERM: "xterm" })).toEqual({ mode: "live", color: true });
    expect(pickProgress("auto", tty, { TERM: "xterm", NO_COLOR: "1" })).toEqual({ mode: "live", color: false });
    expect(pickProgress("auto", tty, { TERM: "dumb" })).toEqual({ mode: "plain", color: false });
    expect(pickProgress("auto", { isTTY: false }, {})).toEqual({ mode: "plain", color: false });
    expect(pickProgress("live", { isTTY: false }, {})).toMatchObject({ mode: "plain", note: expect.stringMatching(/not a terminal/) });
    expect(pickProgress("plain", tty, {})).toEqual({ mode: "plain", color: false });
    expect(pickProgress("none", tty, {})).toEqual({ mode: "none", color: false });
  });

  it("progress - plain lines: one per event, '1 task', formatted durations, no escape codes even from the task's output", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (d: Buffer) => (text += d.toString()));
    const view = new LineProgress(out);
    for (const e of [accepted(["a"]), started("a", 1), output("a", 2, "\x1b[31mred\x1b[0m\rdone\n"), succeeded("a", 1, 95), merged("a", 96)]) view.onEvent(e);
    view.stop();
    expect(text).toMatch(/accepted: 1 task(,|\n)/);
    expect(text).toMatch(/a: done in 1m34s, 1 file changed/);
    expect(text).toContain("a| reddone");
    expect(text).not.toMatch(/\x1b/);
  });
});

/**
 * A terminal as far as the live view uses one: a screen of `rows` lines, a scrollback
 * that receives what scrolls off the top, cursor up (`ESC[nF`), erase line and below.
 */
class MiniTerminal {
  screen: string[];
  scrollback: string[] = [];
  row = 0;
  constructor(
    readonly rows: number,
    readonly columns: number,
  ) {
    this.screen = Array.from({ length: rows }, () => "");
  }
  write(data: string): void {
    const re = /\x1b\[(\??[0-9;]*)([A-Za-z])|\n|([^\x1b\n]+)/g;
    for (const m of data.matchAll(re)) {
      if (m[0] === "\n") {
        if (this.row === this.rows - 1) {
          this.scrollback.push(this.screen.shift()!);
          this.screen.push("");
        } else this.row++;
      } else if (m[3] !== undefined) {
        this.screen[this.row] += m[3];
        // A line wider than the terminal wraps onto the next row.
        if (textWidth(this.screen[this.row]!) > this.columns) throw new Error(`line wider than the terminal: ${this.screen[this.row]}`);
      } else if (m[2] === "F") this.row = Math.max(0, this.row - Number(m[1] || 1));
      else if (m[2] === "K") this.screen[this.row] = "";
      else if (m[2] === "J") for (let r = this.row; r < this.rows; r++) this.screen[r] = "";
    }
  }
}

describe("progress - the live view on a terminal", () => {
  it("progress - redrawn in place: a 60-task run on a 12-row terminal leaves nothing in the scrollback", async () => {
    const term = new MiniTerminal(12, 80);
    const out = Object.assign(new PassThrough(), { columns: 80, rows: 12, isTTY: true }) as unknown as NodeJS.WriteStream;
    (out as unknown as PassThrough).on("data", (d: Buffer) => term.write(d.toString()));
    const view = new TerminalProgress(out, { color: true, intervalMs: 5 });
    const ids = Array.from({ length: 60 }, (_, i) => `t${i}`);
    view.onEvent(accepted(ids));
    for (const [i, id] of ids.entries()) {
      view.onEvent(started(id, i));
      view.onEvent(output(id, i, `working on ${id}\n`));
      await new Promise((r) => setTimeout(r, 2));
      if (i % 2) view.onEvent(succeeded(id, i, i + 1));
    }
    view.say("ado: a message above the frame");
    await new Promise((r) => setTimeout(r, 20));
    view.stop();
    await new Promise((r) => setImmediate(r));
    // Only the message went up; every frame was drawn over the last one.
    expect(term.scrollback.filter((l) => l !== "")).toEqual([]);
    expect(term.screen[0]).toBe("ado: a message above the frame");
    expect(strip(term.screen[1]!)).toMatch(/^0\/60 done · 30 running · 30 merging/);
  });

  it("progress - a log line written while the frame is up is printed above it, not over it; after the view stops it goes to stderr again", async () => {
    const term = new MiniTerminal(12, 80);
    const out = Object.assign(new PassThrough(), { columns: 80, rows: 12, isTTY: true }) as unknown as NodeJS.WriteStream;
    (out as unknown as PassThrough).on("data", (d: Buffer) => term.write(d.toString()));
    const view = new TerminalProgress(out, { color: false, intervalMs: 5, takeLogs: true });
    view.onEvent(accepted(["a"]));
    view.onEvent(started("a", 0));
    await new Promise((r) => setTimeout(r, 20));
    createLogger("warn").warn({ worker: "w-1" }, "stealer: a worker went quiet");
    await new Promise((r) => setTimeout(r, 20));
    view.stop();
    await new Promise((r) => setImmediate(r));
    expect(term.screen[0]).toBe("warn: stealer: a worker went quiet (worker=w-1)");
    expect(strip(term.screen[1]!)).toMatch(/^0\/1 done · 1 running/);
    // Given back: nothing more reaches the view's terminal.
    const before = term.screen.join("\n");
    createLogger("error").warn("after the view (below the level: nothing is written anywhere)");
    createLogger("warn").warn("after the view: to stderr");
    await new Promise((r) => setImmediate(r));
    expect(term.screen.join("\n")).toBe(before);
  });
});
