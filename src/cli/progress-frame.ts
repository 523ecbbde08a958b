import { formatDuration } from "../runtime/duration.js";
import type { TaskStatus } from "../runtime/messages.js";
import { countTasks, type LiveTask, type RunProgress, stateWord } from "./progress-state.js";

/**
 * The live view's frame as a pure function of (state, width, height, clock): what
 * `TerminalProgress` draws in place, ten times a second. The frame always fits: never
 * more lines than the terminal has rows minus one (the cursor's line; a taller frame
 * scrolls, and redrawing "in place" then leaves a copy in the scrollback every time),
 * and never a line as wide as the terminal (a line that wraps takes two rows).
 *
 * What a person needs first comes first: the header (progress, time, cost), then the
 * running tasks with their latest activity, then failures, then tasks that wait for a
 * reason; everything else is counted on one line. A run small enough to fit shows every
 * task, in the graph's order, so rows do not jump around.
 */

export interface FrameOptions {
  /** Terminal columns. */
  width: number;
  /** Terminal rows. */
  height: number;
  /** Epoch ms, for elapsed times. */
  now: number;
  color: boolean;
  /** A line under the tasks from the command itself (e.g. what Ctrl-C is waiting for). */
  notice?: string;
}

const SYMBOL: Record<TaskStatus | "paused", string> = {
  pending: "·",
  queued: "○",
  running: "◐",
  paused: "‖",
  merging: "⇢",
  needs_attention: "?",
  succeeded: "✓",
  failed: "✗",
  skipped: "-",
  cancelled: "⊘",
};

/** SGR codes per status (only with colour). */
const COLOR: Partial<Record<TaskStatus | "paused", string>> = {
  running: "33",
  paused: "33",
  merging: "36",
  needs_attention: "35",
  succeeded: "32",
  failed: "31",
  cancelled: "31",
};

/** A piece of a line and its SGR style. */
type Seg = { text: string; sgr?: string };

/** Columns a character takes in a terminal: 0 for combining marks, 2 for wide East Asian and emoji. */
function charWidth(ch: string): number {
  const cp = ch.codePointAt(0)!;
  if (cp < 0x300) return 1; // Latin, the common case: no combining marks below U+0300
  if (/\p{Mn}|\p{Me}|\p{Cf}/u.test(ch) || (cp >= 0xfe00 && cp <= 0xfe0f)) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}

/** Columns a string takes (no escape sequences in it). */
export function textWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += charWidth(ch);
  return w;
}

/**
 * Joins segments into one line of at most `max` columns (cut with `…`), with colour
 * codes only when asked: the cut is made on the visible text, never inside a code.
 */
function fit(segs: Seg[], max: number, color: boolean): string {
  let used = 0;
  let out = "";
  const total = segs.reduce((n, s) => n + textWidth(s.text), 0);
  const limit = total > max ? max - 1 : max; // room for the ellipsis
  for (const seg of segs) {
    let text = "";
    for (const ch of seg.text) {
      const w = charWidth(ch);
      if (used + w > limit) break;
      text += ch;
      used += w;
    }
    if (text) out += color && seg.sgr ? `\x1b[${seg.sgr}m${text}\x1b[0m` : text;
    if (used >= limit && total > max) break;
  }
  if (total > max && max >= 1) out += "…";
  return out.replace(/\s+$/, "");
}

const elapsedOf = (t: LiveTask, now: number) => (t.startedAt === undefined ? "" : formatDuration((t.finishedAt ?? now) - t.startedAt));

/** Header: progress, elapsed time, cost, and which run. */
function header(p: RunProgress, tasks: readonly LiveTask[], now: number): string {
  if (!p.runId) return "submitting…";
  const c = countTasks(tasks);
  const parts = [`${c.finished}/${tasks.length} done`];
  if (c.running) parts.push(`${c.running} running`);
  if (c.paused) parts.push(`${c.paused} paused`);
  if (c.merging) parts.push(`${c.merging} merging`);
  if (c.needs_attention) parts.push(`${c.needs_attention} need${c.needs_attention === 1 ? "s" : ""} a person`);
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.skipped) parts.push(`${c.skipped} skipped`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  const since = p.acceptedAt ?? now;
  parts.push(formatDuration((p.ended?.at ?? now) - since));
  if (p.costKnown || p.budget?.maxCostUsd !== undefined) parts.push(`$${p.costUsd.toFixed(2)}${p.budget?.maxCostUsd !== undefined ? ` of $${p.budget.maxCostUsd.toFixed(2)}` : ""}`);
  if (p.runPaused && !p.ended) parts.push("run paused");
  if (p.ended) parts.push(p.ended.status);
  return `${parts.join(" · ")}  ${p.name ? `${p.name} ` : ""}(${p.runId})`;
}

/** The line under the tasks: a person is needed, how --merge-into went, or the command's notice. */
function footers(p: RunProgress, notice: string | undefined): string[] {
  const out: string[] = [];
  if (p.attention?.length) out.push(`needs a person: ${p.attention.map((a) => a.taskId).join(", ")} (ado hitl list)`);
  if (p.budgetWait) out.push(`budget: '${p.budgetWait.nextTaskId}' would pass it; ado budget raise ${p.runId ?? "<run>"} <usd>, or ado cancel`);
  if (p.mergedInto) {
    const m = p.mergedInto;
    // The reason of a refusal is printed once, in the summary.
    out.push(m.status === "refused" || m.status === "error" ? `${m.into}: not updated (${m.status}; see below)` : `${m.into}: ${m.status}${m.commit ? ` to ${m.commit.slice(0, 10)}` : ""}`);
  }
  if (notice) out.push(notice);
  return out;
}

/** What the row says after the times: the reason it waits, its error, or its latest activity. */
function detail(t: LiveTask): string {
  if ((t.status === "queued" || t.status === "pending") && t.waiting) return `waiting: ${t.waiting}`;
  if (t.status === "failed" && t.error) return t.error;
  if (t.status === "running" && !t.activity && t.workerId) return `on ${t.workerId}`;
  return t.activity ?? "";
}

/** Which group a task's row belongs to when the run does not fit; undefined: counted, not listed. */
function rank(t: LiveTask): number | undefined {
  if (t.paused || t.status === "running") return 0;
  if (t.status === "merging" || t.status === "needs_attention") return 1;
  if (t.status === "failed") return 2;
  if ((t.status === "queued" || t.status === "pending") && t.waiting) return 3;
  return undefined;
}

/** The frame: one string per line, `height - 1` lines at most, each narrower than `width`. */
export function renderFrame(p: RunProgress, o: FrameOptions): string[] {
  const width = Math.max(10, o.width || 80);
  const maxLines = Math.max(1, (o.height || 24) - 1);
  const maxCols = width - 1;
  const tasks = p.tasks();
  const lines: string[] = [fit([{ text: header(p, tasks, o.now), sgr: "1" }], maxCols, o.color)];
  const foot = footers(p, o.notice).map((f) => fit([{ text: `  ${f}` }], maxCols, o.color));
  let budget = maxLines - lines.length - foot.length;
  if (budget < 0) {
    // Too short a terminal for the footers: the latest one (the command's notice) wins.
    return [...lines, ...foot].slice(-maxLines);
  }

  const all = tasks.length <= budget;
  let listed: readonly LiveTask[] = [];
  let more: readonly LiveTask[] = [];
  if (all) {
    listed = tasks;
  } else if (budget >= 1) {
    const candidates = tasks
      .filter((t) => rank(t) !== undefined)
      .sort((a, b) => rank(a)! - rank(b)! || (a.startedAt ?? Infinity) - (b.startedAt ?? Infinity) || (b.finishedAt ?? 0) - (a.finishedAt ?? 0));
    const room = budget - 1; // one line counts the rest
    if (candidates.length > room) {
      // The last row's place says how many more there are (when there is a place).
      const keep = Math.max(0, room - 1);
      listed = candidates.slice(0, keep);
      if (room >= 1) more = candidates.slice(keep);
    } else {
      listed = candidates;
    }
  }

  const rows: string[] = [];
  const idWidth = Math.min(24, Math.max(4, ...listed.map((t) => textWidth(t.id))));
  for (const t of listed) {
    const key = t.paused ? "paused" : t.status;
    const attempt = t.attempt > 1 ? ` attempt ${t.attempt}` : "";
    const id = textWidth(t.id) > idWidth ? `${[...t.id].slice(0, idWidth - 1).join("")}…` : t.id.padEnd(idWidth);
    const what = detail(t);
    rows.push(
      fit(
        [
          { text: "  " },
          { text: SYMBOL[key], ...(COLOR[key] ? { sgr: COLOR[key] } : {}) },
          { text: ` ${id}  ${stateWord(t).padEnd(9)} ${elapsedOf(t, o.now).padStart(6)}${attempt}` },
          ...(what ? [{ text: `  ${what}`, sgr: "2" }] : []),
        ],
        maxCols,
        o.color,
      ),
    );
  }
  if (more.length) {
    const c = countTasks(more);
    const kinds = (["running", "paused", "merging", "needs_attention", "failed"] as const).filter((k) => c[k]).map((k) => `${c[k]} ${k === "needs_attention" ? "need a person" : k}`);
    const waiting = more.filter((t) => t.status === "queued" || t.status === "pending").length;
    if (waiting) kinds.push(`${waiting} waiting`);
    rows.push(fit([{ text: `  … ${more.length} more: ${kinds.join(", ")}` }], maxCols, o.color));
  }
  if (!all && budget >= 1) {
    const shown = new Set([...listed, ...more].map((t) => t.id));
    const rest = countTasks(tasks.filter((t) => !shown.has(t.id)));
    const segs: Seg[] = [{ text: " " }];
    for (const k of ["running", "paused", "merging", "needs_attention", "failed", "succeeded", "cancelled", "skipped", "queued", "pending"] as const) {
      if (!rest[k]) continue;
      segs.push({ text: " " }, { text: SYMBOL[k], ...(COLOR[k] ? { sgr: COLOR[k] } : {}) }, { text: ` ${rest[k]} ${k === "needs_attention" ? "need a person" : k}` });
    }
    if (segs.length > 1) rows.push(fit(segs, maxCols, o.color));
  }
  return [...lines, ...rows.slice(0, budget), ...foot];
}

