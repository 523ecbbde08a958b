import type { AdoEvent } from "./messages.js";
import { formatDuration } from "./duration.js";
import { oneLine } from "./text.js";

/** One line for an agent's tool call: `Bash: npm test`, `edit: src/a.ts (failed)`. */
export function toolLine(e: { tool: string; summary?: string; phase: "started" | "completed"; ok?: boolean }): string {
  const what = oneLine(e.tool) || "tool";
  const summary = oneLine((e.summary ?? "").replace(/\s*\n\s*/g, " "));
  return `${what}${summary ? `: ${summary}` : ""}${e.phase === "completed" && e.ok === false ? " (failed)" : ""}`;
}

/** An agent's message as one line: its lines joined (a view cuts it to its width). */
export function messageLine(text: string): string {
  return text
    .split("\n")
    .map(oneLine)
    .filter((l) => l !== "")
    .join(" ");
}

/** One line for a limit an agent hit: `rate limited (five_hour) until 15:45:00Z`, `rate limited, retrying in 30.0s`. */
export function rateLimitLine(e: { status: string; resetAt?: string; limitType?: string; retryInMs?: number; message?: string }): string {
  const kind = e.limitType ? ` (${oneLine(e.limitType)})` : "";
  if (e.status === "retrying") return `rate limited${kind}, retrying${e.retryInMs !== undefined ? ` in ${formatDuration(e.retryInMs)}` : ""}`;
  const until = e.resetAt ? ` until ${e.resetAt.slice(11, 19)}Z` : "";
  const msg = e.message ? messageLine(e.message) : "";
  return `rate limited${kind}${until}${msg ? `: ${msg}` : ""}`;
}

/**
 * Whether a line of output is a JSON object: an agent CLI's raw stream (the worker
 * parses it into agent.* events), never what to show a person as what a task does.
 */
export function isJsonObjectLine(line: string): boolean {
  const t = line.trim();
  if (!(t.startsWith("{") && t.endsWith("}"))) return false;
  try {
    const v: unknown = JSON.parse(t);
    return typeof v === "object" && v !== null && !Array.isArray(v);
  } catch {
    return false;
  }
}

/**
 * One line saying what an event tells of a task or run (`ado logs --events`, the
 * dashboard's task view), or undefined for those left out (output, checkpoints).
 */
export function activityLine(e: AdoEvent): string | undefined {
  const time = e.at.slice(11, 19);
  const who = "taskId" in e ? `${e.taskId}#${e.attempt}` : "run";
  const line = (what: string) => `${time} ${who} ${oneLine(what)}`;
  switch (e.type) {
    case "task.output":
    case "task.checkpoint":
      return undefined;
    case "task.started":
      return line(`started on ${e.workerId}${"branch" in e && e.branch ? ` (branch ${e.branch})` : ""}`);
    case "task.succeeded":
      return line(`succeeded${e.files.length ? `: ${e.files.length} file(s) changed` : ", nothing changed"}${e.costUsd ? `, $${e.costUsd.toFixed(4)}` : ""}`);
    case "task.failed":
      return line(`failed${e.kind ? ` (${e.kind})` : ""}: ${e.error}${e.willRetry ? "; will retry" : ""}`);
    case "agent.message":
      return line(`says: ${e.text}`);
    case "agent.tool":
      return line(`${e.phase === "started" ? "tool" : "tool done"} ${e.tool}${e.summary ? `: ${e.summary}` : ""}${e.ok === false ? " (failed)" : ""}`);
    case "agent.usage":
      return line(`usage: ${e.inputTokens} in, ${e.outputTokens} out${e.model ? ` (${e.model})` : ""}, $${e.costUsd.toFixed(4)} so far`);
    case "run.accepted":
      return line(`accepted: ${e.tasks.length} task(s)`);
    case "run.completed":
      return line(`ended ${e.status}${"error" in e && e.error ? `: ${e.error}` : ""}`);
    default: {
      const rest = Object.entries(e)
        .filter(([k, v]) => !["type", "runId", "taskId", "attempt", "at", "v"].includes(k) && (typeof v === "string" || typeof v === "number" || typeof v === "boolean"))
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(" ");
      return line(`${e.type.replace(/^(task|run|merge|agent)\./, "")}${rest ? ` ${rest}` : ""}`);
    }
  }
}
