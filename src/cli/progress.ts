import { TaskTracker } from "../runtime/client.js";
import type { AdoEvent, TaskStatus } from "../runtime/messages.js";

/** Something that shows a run's events to a person. */
export interface ProgressView {
  onEvent(e: AdoEvent): void;
  stop(): void;
}

const SYMBOL: Record<TaskStatus, string> = {
  pending: "·",
  queued: "○",
  running: "◐",
  merging: "⇢",
  needs_attention: "?",
  succeeded: "✓",
  failed: "✗",
  skipped: "-",
  cancelled: "⊘",
};

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/**
 * Live view for a terminal: one row per task with its state, elapsed time, worker and
 * last output line, redrawn in place ten times a second. Task state comes from the
 * client's TaskTracker (the same event -> status mapping `ado run --json` reports);
 * this view adds only what it shows beside it.
 */
export class TerminalProgress implements ProgressView {
  private readonly tracker = new TaskTracker();
  /** Per task: its last output line, or the latest thing that happened to it. */
  private readonly lastLine = new Map<string, string>();
  private drawn = 0;
  private timer: NodeJS.Timeout;
  private title = "";
  /** A line under the table: the run waits for a person, or how merge.into went. */
  private footer = "";
  private readonly started = Date.now();

  constructor(private readonly out: NodeJS.WriteStream) {
    this.timer = setInterval(() => this.draw(), 100);
  }

  onEvent(e: AdoEvent): void {
    this.tracker.apply(e);
    switch (e.type) {
      case "run.accepted":
        this.title = `run ${e.runId} (${e.name}): ${e.tasks.length} tasks`;
        return;
      case "run.needs_attention":
        this.footer = `needs attention: ${e.tasks.map((t) => t.taskId).join(", ")} (ado hitl list)`;
        return;
      case "run.continued":
        this.footer = "";
        return;
      case "run.merged_into":
        this.footer = `${e.into}: ${e.status}${e.reason ? ` (${e.reason})` : ""}`;
        return;
    }
    if (!("taskId" in e) || !this.tracker.tasks.has(e.taskId)) return;
    const note = (line: string | undefined) => line && this.lastLine.set(e.taskId, line);
    switch (e.type) {
      case "task.output":
        note(e.data.trimEnd().split("\n").pop());
        break;
      case "task.failed":
        note(e.error);
        break;
      case "task.skipped":
      case "task.cancelled":
        note(e.reason);
        break;
      case "task.paused":
        note("paused");
        break;
      case "task.resumed":
        note("resumed");
        break;
      case "task.retrying":
        note(`retrying in ${seconds(Math.max(0, e.notBefore - Date.parse(e.at)))}: ${e.error}`);
        break;
      case "merge.conflict":
        // A conflict is escalated (merge.hitl_required follows) unless the merger predates HITL.
        note(`conflict in ${e.files.join(", ")}`);
        break;
      case "merge.resolved":
        note(`resolved ${e.paths.map((p) => `${p.path} (${p.by})`).join(", ")}`);
        break;
      case "worker.lost":
        note(`worker ${e.workerId} lost: ${e.outcome === "interrupted" ? "runs again" : "queued again"}`);
        break;
      case "merge.hitl_required":
        note(`${e.reason === "validation" ? "validation failed" : "conflict"}: ado hitl show ${e.hitlId}`);
        break;
    }
  }

  private draw(): void {
    const width = this.out.columns || 100;
    const tasks = this.tracker.tasks;
    const idWidth = Math.min(24, Math.max(4, ...[...tasks.keys()].map((k) => k.length)));
    const lines = [`${this.title || "submitting…"}  ${seconds(Date.now() - this.started)}`];
    // Very large runs: show counts, not one row per task.
    if (tasks.size > 40) {
      const counts = new Map<TaskStatus, number>();
      for (const t of tasks.values()) counts.set(t.status, (counts.get(t.status) ?? 0) + 1);
      lines.push("  " + [...counts].map(([s, n]) => `${SYMBOL[s]} ${s} ${n}`).join("   "));
    } else {
      for (const t of tasks.values()) {
        const started = t.startedAt ? Date.parse(t.startedAt) : undefined;
        const elapsed = started ? seconds((t.finishedAt ? Date.parse(t.finishedAt) : Date.now()) - started) : "";
        const attempt = t.attempts > 1 ? ` (attempt ${t.attempts})` : "";
        const state = t.status === "needs_attention" ? "attention" : t.status;
        const head = `  ${SYMBOL[t.status]} ${t.id.padEnd(idWidth)} ${state.padEnd(9)} ${elapsed.padStart(6)}${attempt}`;
        const last = this.lastLine.get(t.id);
        const tail = last ? `  ${last}` : "";
        lines.push((head + `\x1b[2m${tail}`).slice(0, width + 4) + "\x1b[0m");
      }
    }
    if (this.footer) lines.push(`  ${this.footer}`.slice(0, width));
    let frame = this.drawn ? `\x1b[${this.drawn}F` : "";
    // Erase below too: the footer line comes and goes.
    frame += lines.map((l) => `\x1b[2K${l}`).join("\n") + "\n\x1b[J";
    this.out.write(frame);
    this.drawn = lines.length;
  }

  stop(): void {
    clearInterval(this.timer);
    this.draw();
  }
}

/** Plain lines for logs and pipes: one line per meaningful event, output lines prefixed by task. */
export class LineProgress implements ProgressView {
  private readonly partial = new Map<string, string>();

  constructor(private readonly out: NodeJS.WritableStream) {}

  onEvent(e: AdoEvent): void {
    const time = e.at.slice(11, 23);
    const say = (msg: string): void => void this.out.write(`[${time}] ${msg}\n`);
    switch (e.type) {
      case "run.accepted":
        say(`run ${e.runId} accepted: ${e.tasks.length} tasks${e.integrationBranch ? `, integrating into ${e.integrationBranch}` : ""}`);
        if (e.queued.length) say(`queued: ${e.queued.join(", ")}`);
        return;
      case "run.rejected":
        return say(`run ${e.runId} rejected: ${e.reason}`);
      case "run.completed":
        return say(`run ${e.runId} ${e.status}`);
      case "task.queued":
        return say(`${e.taskId}: queued${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}`);
      case "task.started":
        return say(`${e.taskId}: started on ${e.workerId}`);
      case "task.output": {
        const key = `${e.taskId}/${e.stream}`;
        const text = (this.partial.get(key) ?? "") + e.data;
        const lines = text.split("\n");
        this.partial.set(key, lines.pop() ?? "");
        for (const line of lines) this.out.write(`  ${e.taskId}${e.stream === "stderr" ? "!" : "|"} ${line}\n`);
        return;
      }
      case "task.succeeded":
        return say(`${e.taskId}: done in ${seconds(Date.parse(e.finishedAt) - Date.parse(e.startedAt))}${e.files.length ? `, ${e.files.length} file(s) changed` : ", no changes"}`);
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
        return say(`run needs attention: ${e.tasks.map((t) => t.taskId).join(", ")}`);
      case "run.continued":
        return say(`run continues`);
      case "run.merged_into":
        return say(`${e.into}: ${e.status === "refused" || e.status === "error" ? `not updated (${e.status}): ${e.reason}` : `${e.status} to ${e.commit?.slice(0, 10)}`}`);
      case "task.cancelled":
        return say(`${e.taskId}: cancelled: ${e.reason}`);
      case "task.retrying":
        return say(`${e.taskId}: attempt ${e.attempt} in ${seconds(Math.max(0, e.notBefore - Date.parse(e.at)))}`);
      case "task.paused":
        return say(`${e.taskId}: paused on ${e.workerId}`);
      case "task.resumed":
        return say(`${e.taskId}: resumed on ${e.workerId}`);
      case "task.checkpoint":
        return say(`${e.taskId}: checkpoint ${e.commit.slice(0, 10)} (${e.reason})`);
      case "worker.lost":
        return say(`${e.taskId}: worker ${e.workerId} lost (${e.outcome === "interrupted" ? "its attempt runs again" : "queued again"}): ${e.reason}`);
      case "run.paused":
        return say(`run paused by ${e.by}`);
      case "run.resumed":
        return say(`run resumed by ${e.by}`);
      case "run.cancelling":
        return say(`run cancelling: ${e.reason}`);
    }
  }

  stop(): void {
    for (const [key, rest] of this.partial) if (rest) this.out.write(`  ${key.split("/")[0]}| ${rest}\n`);
    this.partial.clear();
  }
}
