import { spawn } from "node:child_process";
import type { TaskFailure } from "../../../runtime/messages.js";
import type { AgentContext, AgentOutcome } from "./types.js";

/** Time between SIGTERM and SIGKILL when a process group is stopped. */
export const KILL_GRACE_MS = 2_000;

/**
 * Runs a command as the leader of its own process group, streams its output, and on
 * timeout or abort kills the whole group (TERM, then KILL), so nothing it started is
 * left behind.
 */
export function runProcessGroup(
  command: string,
  args: readonly string[],
  ctx: AgentContext,
  opts: { timeoutMs?: number; killGraceMs?: number } = {},
): Promise<AgentOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    let stopReason: "timeout" | "abort" | undefined;
    const child = spawn(command, args, {
      cwd: ctx.cwd,
      env: { ...process.env, ...ctx.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    child.stdout.setEncoding("utf8").on("data", (d: string) => ctx.onOutput("stdout", d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => ctx.onOutput("stderr", d));

    let killTimer: NodeJS.Timeout | undefined;
    const stop = (reason: "timeout" | "abort") => {
      if (stopReason || settled) return;
      stopReason = reason;
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), opts.killGraceMs ?? KILL_GRACE_MS);
    };
    const timer = opts.timeoutMs ? setTimeout(() => stop("timeout"), opts.timeoutMs) : undefined;
    const onAbort = () => stop("abort");
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) onAbort();

    const finish = (outcome: AgentOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ctx.signal.removeEventListener("abort", onAbort);
      // The leader is gone; make sure its group is too (a backgrounded grandchild).
      signalGroup(child.pid, "SIGKILL");
      clearTimeout(killTimer);
      resolve(outcome);
    };
    child.once("error", (err: NodeJS.ErrnoException) => {
      const missing = err.code === "ENOENT";
      finish({
        ok: false,
        failure: {
          kind: missing ? "agent_missing" : "internal",
          retryable: !missing,
          message: missing ? `'${command}' is not installed or not on PATH` : `could not start '${command}': ${err.message}`,
        },
      });
    });
    // 'close' waits for the output pipes, so no output is lost after exit.
    child.once("close", (code, signal) => {
      if (stopReason === "timeout") {
        return finish({ ok: false, failure: { kind: "timeout", retryable: true, message: `timed out after ${opts.timeoutMs} ms; its process group was killed`, exitCode: code } });
      }
      if (stopReason === "abort") {
        return finish({ ok: false, failure: { kind: "internal", retryable: true, message: "stopped before it finished", exitCode: code } });
      }
      if (code === 0) return finish({ ok: true });
      const failure: TaskFailure = {
        kind: "exit",
        retryable: true,
        exitCode: code,
        message: code === null ? `killed by ${signal}` : `exited with code ${code}`,
      };
      finish({ ok: false, failure });
    });
  });
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is already gone
  }
}
