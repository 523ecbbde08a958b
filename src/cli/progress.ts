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
  succeeded: "✓",
  failed: "✗",
  skipped: "-",
  cancelled: "⊘",
};

interface Row {
  id: string;
  status: TaskStatus;
  attempt: number;
  worker?: string;
  startedAt?: number;
  finishedAt?: number;
  lastLine?: string;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/**
 * Live view for a terminal: one row per task with its state, elapsed time, worker and
 * last output line, redrawn in place ten times a second.
 */
export class TerminalProgress implements ProgressView {
  private rows = new Map<string, Row>();
  private drawn = 0;
  private timer: NodeJS.Timeout;
  private title = "";
  private readonly started = Date.now();

  constructor(private readonly out: NodeJS.WriteStream) {
    this.timer = setInterval(() => this.draw(), 100);
  }

  onEvent(e: AdoEvent): void {
    if (e.type === "run.accepted") {
      this.title = `run ${e.runId} (${e.name}): ${e.tasks.length} tasks`;
      for (const t of e.tasks) this.rows.set(t.id, { id: t.id, status: "pending", attempt: 0 });
      for (const id of e.queued) this.rows.set(id, { id, status: "queued", attempt: 1 });
      return;
    }
    if (!("taskId" in e)) return;
    const row = this.rows.get(e.taskId);
    if (!row) return;
    switch (e.type) {
      case "task.queued":
        Object.assign(row, { status: "queued", attempt: e.attempt });
        break;
      case "task.started":
        Object.assign(row, { status: "running", worker: e.workerId, startedAt: Date.parse(e.at), finishedAt: undefined });
        break;
      case "task.output": {
        const line = e.data.trimEnd().split("\n").pop();
        if (line) row.lastLine = line;
        break;
      }
      case "task.succeeded":
        Object.assign(row, { status: "merging", finishedAt: Date.parse(e.finishedAt) });
        break;
      case "task.merged":
        row.status = "succeeded";
        break;
      case "task.failed":
        Object.assign(row, { status: e.willRetry ? "queued" : "failed", finishedAt: Date.parse(e.finishedAt), lastLine: e.error });
        break;
      case "task.skipped":
        Object.assign(row, { status: "skipped", lastLine: e.reason });
        break;
      case "task.cancelled":
        Object.assign(row, { status: "cancelled", lastLine: e.reason });
        break;
      case "task.paused":
        row.lastLine = "paused";
        break;
      case "task.resumed":
        row.lastLine = "resumed";
        break;
      case "task.retrying":
        Object.assign(row, { status: "queued", lastLine: `retrying in ${seconds(Math.max(0, e.notBefore - Date.parse(e.at)))}: ${e.error}` });
        break;
      case "merge.conflict":
        Object.assign(row, { status: "failed", lastLine: `conflict in ${e.files.join(", ")}` });
        break;
    }
  }

  private draw(): void {
    const width = this.out.columns || 100;
    const idWidth = Math.min(24, Math.max(4, ...[...this.rows.keys()].map((k) => k.length)));
    const lines = [`${this.title || "submitting…"}  ${seconds(Date.now() - this.started)}`];
    // Very large runs: show counts, not one row per task.
    if (this.rows.size > 40) {
      const counts = new Map<TaskStatus, number>();
      for (const r of this.rows.values()) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
      lines.push("  " + [...counts].map(([s, n]) => `${SYMBOL[s]} ${s} ${n}`).join("   "));
    } else {
      for (const r of this.rows.values()) {
        const elapsed = r.startedAt ? seconds((r.finishedAt ?? Date.now()) - r.startedAt) : "";
        const attempt = r.attempt > 1 ? ` (attempt ${r.attempt})` : "";
        const head = `  ${SYMBOL[r.status]} ${r.id.padEnd(idWidth)} ${r.status.padEnd(9)} ${elapsed.padStart(6)}${attempt}`;
        const tail = r.lastLine ? `  ${r.lastLine}` : "";
        lines.push((head + `\x1b[2m${tail}`).slice(0, width + 4) + "\x1b[0m");
      }
    }
    let frame = this.drawn ? `\x1b[${this.drawn}F` : "";
    frame += lines.map((l) => `\x1b[2K${l}`).join("\n") + "\n";
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
