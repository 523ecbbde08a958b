import type { AdoEvent } from "./messages.js";
import { oneLine } from "./text.js";

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
