import { formatTokens, formatUsd } from "../runtime/budget.js";
import { formatDuration } from "../runtime/duration.js";
import type { AdoEvent } from "../runtime/messages.js";
import { renderFrame } from "./progress-frame.js";
import { countTasks, oneLine, plural, rateLimitLine, RunProgress, toolLine } from "./progress-state.js";
import type { RunFold } from "../runtime/run-fold.js";
import { CLI_AGENT_NAMES } from "../agents/index.js";
import { divertLogs, formatLogLine } from "../runtime/logger.js";

/**
 * How a run's progress is shown: `live` (a frame redrawn in place; a terminal only),
 * `plain` (one line per event, no escape codes: logs, pipes, dumb terminals), `none`
 * (only the summary at the end). `auto` picks live on a terminal that can move its
 * cursor, plain otherwise.
 */
export const PROGRESS_MODES = ["auto", "live", "plain", "none"] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/** Something that shows a run's events to a person, and keeps what it saw. */
export interface ProgressView {
  /** Everything the events said so far (the summary reads it too). */
  readonly state: RunProgress;
  onEvent(e: AdoEvent): void;
  /** A message for the person, printed where it does not break the view. */
  say(message: string): void;
  /** A standing line under the tasks (live) or printed once (plain); undefined removes it. */
  setNotice(notice: string | undefined): void;
  /** Draws the last frame and lets go of the terminal. Idempotent. */
  stop(): void;
  /**
   * Starts from a state already known (`ado attach`: the run's snapshot and the events
   * after it) instead of the run's first event; the plain view says where the run stands.
   */
  seed(fold: RunFold): void;
}

/** What the environment allows: the view to use, with colour or not, and why not live when asked. */
export function pickProgress(
  requested: ProgressMode,
  out: Pick<NodeJS.WriteStream, "isTTY">,
  env: NodeJS.ProcessEnv = process.env,
): { mode: "live" | "plain" | "none"; color: boolean; note?: string } {
  if (requested === "none" || requested === "plain") return { mode: requested, color: false };
  const dumb = env.TERM === "dumb";
  const canMove = !!out.isTTY && !dumb;
  if (!canMove) {
    const why = !out.isTTY ? "the output is not a terminal" : "TERM=dumb";
    return { mode: "plain", color: false, ...(requested === "live" ? { note: `--progress live: ${why}; showing plain lines` } : {}) };
  }
  // https://no-color.org: any non-empty value turns colour off.
  return { mode: "live", color: !env.NO_COLOR };
}

/** Builds the view `pickProgress` chose, on `out`. */
export function createProgress(requested: ProgressMode, out: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): ProgressView {
  const pick = pickProgress(requested, out, env);
  if (pick.note) process.stderr.write(`ado: ${pick.note}\n`);
  if (pick.mode === "live") return new TerminalProgress(out, { color: pick.color });
  if (pick.mode === "plain") return new LineProgress(out);
  return new QuietProgress(out);
}

const HIDE_CURSOR = "\x1b[?25l";
const SHOW_CURSOR = "\x1b[?25h";

/**
 * The live view: the frame of progress-frame.ts, redrawn in place ten times a second.
 * The frame never has more lines than the terminal has rows (minus the cursor's), so
 * moving up over it always reaches its first line and nothing scrolls into the
 * scrollback; lines never wrap. Messages (`say`) are printed above the frame.
 */
export class TerminalProgress implements ProgressView {
  readonly state = new RunProgress();
  private drawn = 0;
  private last = "";
  private notice?: string;
  private stopped = false;
  private readonly timer: NodeJS.Timeout;
  private readonly color: boolean;
  private readonly restore = () => this.out.write(SHOW_CURSOR);
  private readonly onResize = () => this.draw(true);

  constructor(
    private readonly out: NodeJS.WriteStream,
    opts: { color?: boolean; intervalMs?: number; takeLogs?: boolean } = {},
  ) {
    this.color = opts.color ?? true;
    this.out.write(HIDE_CURSOR);
    // Whatever ends the process, the cursor comes back.
    process.once("exit", this.restore);
    this.out.on?.("resize", this.onResize);
    this.timer = setInterval(() => this.draw(), opts.intervalMs ?? 100);
    this.timer.unref?.();
    // Logs written to the same terminal would be drawn over (or break the frame): print them above it.
    if (opts.takeLogs ?? process.stderr.isTTY) divertLogs((line) => this.say(formatLogLine(line)));
  }

  onEvent(e: AdoEvent): void {
    this.state.apply(e);
  }

  seed(fold: RunFold): void {
    this.state.seed(fold);
  }

  say(message: string): void {
    if (this.stopped) {
      this.out.write(message + "\n");
      return;
    }
    this.out.write(this.erase() + message + "\n");
    this.drawn = 0;
    this.draw(true);
  }

  setNotice(notice: string | undefined): void {
    this.notice = notice;
    this.draw();
  }

  /** Moves to the frame's first line and clears from there down. */
  private erase(): string {
    return this.drawn ? `\x1b[${this.drawn}F\x1b[J` : "";
  }

  private lastDraw = 0;

  private draw(force = false): void {
    if (this.stopped) return;
    // A frame of a very large run costs a few ms to build: twice a second is enough there.
    const now = Date.now();
    if (!force && this.state.tasks().length > 1_000 && now - this.lastDraw < 500) return;
    this.lastDraw = now;
    const lines = renderFrame(this.state, {
      width: this.out.columns || 80,
      height: this.out.rows || 24,
      now,
      color: this.color,
      ...(this.notice ? { notice: this.notice } : {}),
    });
    const body = lines.map((l) => `\x1b[2K${l}`).join("\n") + "\n";
    if (!force && body === this.last) return;
    // Up to the first line, rewrite each line, then clear whatever the last frame had below.
    this.out.write((this.drawn ? `\x1b[${this.drawn}F` : "") + body + "\x1b[J");
    this.last = body;
    this.drawn = lines.length;
  }

  stop(): void {
    if (this.stopped) return;
    clearInterval(this.timer);
    this.draw(true);
    this.stopped = true;
    divertLogs(undefined);
    this.out.off?.("resize", this.onResize);
    process.off("exit", this.restore);
    this.out.write(SHOW_CURSOR);
  }
}

/** Plain lines for logs and pipes: one line per meaningful event, output lines prefixed by task; no escape codes. */
export class LineProgress implements ProgressView {
  readonly state = new RunProgress();
  private readonly partial = new Map<string, string>();
  /** The last waiting reason printed per task: a balancer says it again on every pass. */
  private readonly waiting = new Map<string, string>();
  /**
   * Tasks whose attempt under way runs an agent CLI (its stdout is the stream the worker
   * parses: the agent.* events are printed instead; the raw lines stay in the task's log).
   */
  private readonly parsed = new Set<string>();
  /** Tool calls whose start was printed, per task: their completion is printed only if it failed. */
  private readonly calls = new Map<string, Set<string>>();

  constructor(private readonly out: NodeJS.WritableStream) {}

  say(message: string): void {
    this.out.write(message + "\n");
  }

  setNotice(notice: string | undefined): void {
    if (notice) this.say(`ado: ${notice}`);
  }

  /** Where the run stands: its counts, then each task under way (at most a worker's slots each, not the whole graph). */
  seed(fold: RunFold): void {
    this.state.seed(fold);
    const tasks = this.state.tasks();
    const c = countTasks(tasks);
    const shown = (["running", "paused", "merging", "needs_attention", "queued", "pending", "succeeded", "failed", "skipped", "cancelled"] as const).filter((k) => c[k] > 0).map((k) => `${c[k]} ${k}`);
    this.say(`run ${fold.runId}${fold.name ? ` (${fold.name})` : ""}: ${plural(tasks.length, "task")}${shown.length ? `: ${shown.join(", ")}` : ""} (as of event ${fold.seq})`);
    for (const t of tasks) {
      if (t.status !== "running" && t.status !== "merging" && t.status !== "needs_attention") continue;
      const where = t.status === "running" ? `started on ${t.workerId ?? "?"}${t.attempt > 1 ? ` (attempt ${t.attempt})` : ""}` : t.status === "merging" ? "merging" : "needs attention";
      this.say(`${t.id}: ${t.paused ? "paused, " : ""}${where}${t.activity ? `: ${plainText(t.activity)}` : ""}`);
    }
  }

  onEvent(e: AdoEvent): void {
    this.state.apply(e);
    const time = e.at.slice(11, 23);
    const say = (msg: string): void => void this.out.write(`[${time}] ${msg}\n`);
    const w = e as unknown as { type: string; taskId?: string; reason?: string };
    if (w.type === "task.waiting" && w.taskId && typeof w.reason === "string") {
      if (this.waiting.get(w.taskId) !== w.reason) say(`${w.taskId}: waiting: ${oneLine(w.reason)}`);
      this.waiting.set(w.taskId, w.reason);
      return;
    }
    if ("taskId" in e && (e.type === "task.started" || e.type === "task.queued")) this.waiting.delete(e.taskId);
    switch (e.type) {
      case "run.accepted":
        say(`run ${e.runId} accepted: ${plural(e.tasks.length, "task")}${e.integrationBranch ? `, integrating into ${e.integrationBranch}` : ""}`);
        if (e.queued.length) say(`queued: ${e.queued.join(", ")}`);
        return;
      case "run.rejected":
        return say(`run ${e.runId} rejected: ${e.reason}`);
      case "run.completed":
        return say(`run ${e.runId} ${e.status}${e.costUsd ? `, cost ${formatUsd(e.costUsd)}` : ""}`);
      case "task.queued":
        return say(`${e.taskId}: queued${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}`);
      case "task.started":
        if (e.agent !== undefined && (CLI_AGENT_NAMES as readonly string[]).includes(e.agent)) this.parsed.add(e.taskId);
        else this.parsed.delete(e.taskId);
        this.calls.delete(e.taskId);
        return say(`${e.taskId}: started on ${e.workerId}${e.agent && e.agent !== "shell" ? ` (${e.agent})` : ""}${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}`);
      case "agent.tool": {
        const calls = this.calls.get(e.taskId) ?? new Set<string>();
        this.calls.set(e.taskId, calls);
        if (e.phase === "started") {
          if (e.callId !== undefined) calls.add(e.callId);
          return say(`${e.taskId}: ${toolLine(e)}`);
        }
        // A completion alone says something only when it failed or its start was never seen (aider reports edits done).
        const seen = e.callId !== undefined && calls.delete(e.callId);
        return seen && e.ok !== false ? undefined : say(`${e.taskId}: ${toolLine(e)}`);
      }
      case "agent.message":
        // What the agent said, line by line, as a shell command's output is printed.
        for (const line of e.text.split("\n")) if (line.trim() !== "") this.out.write(`  ${e.taskId}| ${plainText(line)}\n`);
        return;
      case "agent.rate_limit":
        return e.status === "rejected" || e.status === "retrying" || e.status === "warning" ? say(`${e.taskId}: ${e.status === "warning" ? `near its rate limit${e.utilization !== undefined ? ` (${Math.round(e.utilization * 100)}% used)` : ""}` : rateLimitLine(e)}`) : undefined;
      case "task.output": {
        // The fold knows too when it was seeded from a snapshot taken after the attempt started.
        if (e.stream === "stdout" && (this.parsed.has(e.taskId) || this.state.fold.parts(e.taskId)?.notes.agentAttempt === e.attempt)) return;
        const key = `${e.taskId}/${e.stream}`;
        const text = (this.partial.get(key) ?? "") + e.data;
        const lines = text.split("\n");
        this.partial.set(key, lines.pop() ?? "");
        for (const line of lines) this.out.write(`  ${e.taskId}${e.stream === "stderr" ? "!" : "|"} ${plainText(line)}\n`);
        return;
      }
      case "task.succeeded":
        return say(
          `${e.taskId}: done in ${formatDuration(Date.parse(e.finishedAt) - Date.parse(e.startedAt))}${e.files.length ? `, ${plural(e.files.length, "file")} changed` : ", no changes"}${e.costUsd ? `, ${formatUsd(e.costUsd)}` : ""}`,
        );
      case "task.merged":
        return say(`${e.taskId}: merged (${e.integrationCommit.slice(0, 10)})`);
      case "task.failed":
        return say(`${e.taskId}: failed: ${e.error}${e.willRetry ? " (will retry)" : ""}`);
      case "task.skipped":
        return say(`${e.taskId}: skipped: ${e.reason}`);
      case "merge.conflict":
        return say(`${e.taskId}: merge conflict in ${e.files.join(", ")}`);
      case "merge.resolved":
        return say(`${e.taskId}: resolved ${e.paths.map((p) => `${p.path} (${p.by})`).join(", ")}`);
      case "merge.hitl_required":
        return say(`${e.taskId}: needs attention (${e.reason}): ${e.message} - ado hitl show ${e.hitlId}`);
      case "run.needs_attention":
        if (e.budget) say(`run waits for its budget: ${e.budget.message}; ado budget raise ${e.runId} <usd>, or ado cancel ${e.runId}`);
        return e.tasks.length || !e.budget ? say(`run needs attention: ${e.tasks.map((t) => t.taskId).join(", ")}`) : undefined;
      case "run.budget":
        return say(`run budget ${e.maxCostUsd !== undefined ? `${formatUsd(e.maxCostUsd)}` : ""}${e.maxTokens !== undefined ? ` ${formatTokens(e.maxTokens)} tokens` : ""} (was ${e.previousMaxCostUsd !== undefined ? formatUsd(e.previousMaxCostUsd) : "none"}), by ${e.by}`);
      case "run.continued":
        return say(`run continues`);
      case "run.merged_into":
        // A refusal's reason is printed once, in the summary.
        return say(`${e.into}: ${e.status === "refused" || e.status === "error" ? `not updated (${e.status}; see below)` : `${e.status} to ${e.commit?.slice(0, 10)}`}`);
      case "task.cancelled":
        return say(`${e.taskId}: cancelled: ${e.reason}`);
      case "task.selected":
        // Best-of-N: which variant is merged, and where the others' work is.
        return say(
          `${e.taskId}: ${e.winner !== undefined ? `variant ${e.winner} won` : "no variant won"}: ${e.reason}` +
            (e.variants.some((v) => v.ref && v.n !== e.winner) ? `; the others: git log ${e.variants.find((v) => v.ref && v.n !== e.winner)!.ref!.replace(/\/\d+$/, "/<n>")}` : ""),
        );
      case "task.retrying":
        return say(`${e.taskId}: attempt ${e.attempt} in ${formatDuration(e.notBefore - Date.parse(e.at))}`);
      case "task.paused":
        return say(`${e.taskId}: paused on ${e.workerId}`);
      case "task.resumed":
        return say(`${e.taskId}: resumed on ${e.workerId}`);
      case "task.checkpoint":
        return say(`${e.taskId}: checkpoint ${e.commit.slice(0, 10)} (${e.reason})`);
      case "worker.lost":
        return say(
          `${e.taskId}: worker ${e.workerId} lost (${e.outcome === "interrupted" ? "its attempt runs again" : "queued again"}): ${e.reason}${e.archiveRef ? `; its work: git log ${e.archiveRef}` : ""}`,
        );
      case "run.paused":
        return say(`run paused by ${e.by}`);
      case "run.resumed":
        return say(`run resumed by ${e.by}`);
      case "run.cancelling":
        return say(`run cancelling: ${e.reason}`);
    }
  }

  stop(): void {
    for (const [key, rest] of this.partial) if (rest) this.out.write(`  ${key.split("/")[0]}${key.endsWith("/stderr") ? "!" : "|"} ${plainText(rest)}\n`);
    this.partial.clear();
  }
}

/** No progress at all (`--progress none`): only the state, for the summary; messages still show. */
export class QuietProgress implements ProgressView {
  readonly state = new RunProgress();

  constructor(private readonly out: NodeJS.WritableStream) {}

  seed(fold: RunFold): void {
    this.state.seed(fold);
  }

  onEvent(e: AdoEvent): void {
    this.state.apply(e);
  }

  say(message: string): void {
    this.out.write(message + "\n");
  }

  setNotice(notice: string | undefined): void {
    if (notice) this.say(`ado: ${notice}`);
  }

  stop(): void {}
}

/** A line of a task's output without escape codes or control characters (plain output goes to files and pipes). */
function plainText(line: string): string {
  return line
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-Z\\-_]/g, "")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
}
