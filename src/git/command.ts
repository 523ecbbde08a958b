/**
 * Runs the merge coordinator's shell commands (a regenerate rule, the resolver agent,
 * the validation) as `sh -c` leading its own process group, so a timeout or an abort
 * kills everything the command started, and nothing outlives the call.
 *
 * This is a small sibling of the worker's runProcessGroup (src/agents/
 * process.ts) rather than a use of it: that one is tied to the worker's agent context
 * (suspender, task failure kinds), and the runtime layer must not import an actor's
 * code. One difference matters: the group is killed as soon as the leader exits, so a
 * backgrounded grandchild that keeps the output pipes open cannot hold the call open.
 */
import { spawn } from "node:child_process";

/** Time between SIGTERM and SIGKILL when a command's process group is stopped. */
export const COMMAND_KILL_GRACE_MS = 2_000;

/** Bytes of combined output kept for the caller (the tail; the rest is streamed only). */
export const OUTPUT_TAIL_BYTES = 8 * 1024;

export interface ShellOptions {
  cwd: string;
  timeoutMs: number;
  env?: Record<string, string>;
  signal?: AbortSignal;
  onOutput?: (stream: "stdout" | "stderr", chunk: string) => void;
  killGraceMs?: number;
}

export interface ShellResult {
  /** null when the command was killed by a signal (timeout, abort) or could not start. */
  exitCode: number | null;
  timedOut: boolean;
  aborted: boolean;
  /** The last OUTPUT_TAIL_BYTES of stdout and stderr, interleaved as they arrived. */
  output: string;
}

/** Runs `sh -c command`; never rejects (a spawn failure is a result with exitCode null). */
export function runShell(command: string, opts: ShellOptions): Promise<ShellResult> {
  return new Promise((resolve) => {
    let tail = "";
    const keep = (chunk: string) => {
      tail += chunk;
      if (tail.length > OUTPUT_TAIL_BYTES * 2) tail = tail.slice(-OUTPUT_TAIL_BYTES);
    };
    let stopped: "timeout" | "abort" | undefined;
    let exited = false;
    let settled = false;
    const child = spawn("sh", ["-c", command], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const pid = child.pid;
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      keep(d);
      opts.onOutput?.("stdout", d);
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      keep(d);
      opts.onOutput?.("stderr", d);
    });

    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: "timeout" | "abort") => {
      if (stopped || exited) return;
      stopped = why;
      signalGroup(pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(pid, "SIGKILL"), opts.killGraceMs ?? COMMAND_KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop("timeout"), Math.max(0, opts.timeoutMs));
    const onAbort = () => stop("abort");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();

    const finish = (exitCode: number | null, note?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (stopped === "timeout") keep(`\n[ado] timed out after ${opts.timeoutMs} ms; its process group was killed\n`);
      if (stopped === "abort") keep("\n[ado] aborted; its process group was killed\n");
      if (note) keep(note);
      resolve({
        exitCode: stopped ? null : exitCode,
        timedOut: stopped === "timeout",
        aborted: stopped === "abort",
        output: tail.slice(-OUTPUT_TAIL_BYTES),
      });
    };
    child.once("error", (err) => finish(null, `\n[ado] could not run sh: ${err.message}\n`));
    child.once("exit", () => {
      exited = true;
      // The leader is gone; take the rest of its group with it (a backgrounded child
      // holding the pipes open would otherwise keep 'close' from ever firing).
      signalGroup(pid, "SIGKILL");
    });
    // 'close' comes after the pipes drained, so no output is lost.
    child.once("close", (code) => finish(code));
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
