import { spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import type { TaskFailure } from "../runtime/messages.js";
import { reaper } from "./reaper.js";
import { signalGroup } from "./suspender.js";
import type { AgentContext, AgentOutcome, StopReason } from "./types.js";

/** Time between SIGTERM and SIGKILL when a process group is stopped. */
export const KILL_GRACE_MS = 2_000;
/** The longest delay setTimeout honours; beyond it Node fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;


/**
 * Where a task's agent starts: its worktree, or the subdirectory of it the task names
 * (`cwd:` in the graph, checked to stay inside by the graph's schema).
 */
export function taskDir(worktree: string | undefined, task: { cwd?: string }): string | undefined {
  return worktree && task.cwd ? join(worktree, task.cwd) : worktree;
}

/**
 * The gate every agent starts behind: a `sh` that waits for one line on its stdin and
 * only then execs the agent's command (stdin from /dev/null, as before). The worker
 * writes the line once the agent's group is registered with the reaper; should the
 * worker die before that, the gate reads end-of-file and exits without running anything
 * (reaper.ts says why). It costs one exec of `sh` per agent.
 */
const GATE = `IFS= read -r go && [ "$go" = go ] || exit 0
exec "$@" </dev/null`;
/**
 * The gate of a command fed text on its stdin: the same, but the command keeps the pipe,
 * positioned after the gate's line (`read` takes a pipe one byte at a time, so it never
 * reads past its line): what follows is the text, then end-of-file.
 */
const GATE_FED = `IFS= read -r go && [ "$go" = go ] || exit 0
exec "$@"`;

/** How the runner stops a group from outside: the abort signal's reason. */
export type AbortReason = StopReason | (string & {});

/** What the runner was told, beyond the agent's context. */
export interface RunOptions {
  /** Running time (paused time does not count) after which the group is killed: failure `timeout`. */
  timeoutMs?: number;
  killGraceMs?: number;
  /** Inherited variables the command must not see (credentials of another access mode, CLAUDECODE). */
  unsetEnv?: readonly string[];
  /** `ignore` (default): the command reads end-of-file at once; `text`: it reads the text, then end-of-file. */
  stdin?: "ignore" | { text: string };
}

/** How the process ended, beyond ok and failure: what a caller judging its output needs. */
export interface RunOutcome extends AgentOutcome {
  /** The signal that ended the command, when one did (its leader was killed). */
  signal?: string;
  /** The abort reason that stopped it, when the caller aborted it (any reason, not only cancelled or interrupted). */
  stoppedBy?: AbortReason;
}

/**
 * Runs a command as the leader of its own process group, streams its output, and on
 * timeout or abort kills the whole group (TERM, then KILL), so nothing it started is
 * left behind. If this process dies first, the reaper (reaper.ts) kills the group; the
 * command runs only once the group is registered with it.
 */
export function runProcessGroup(command: string, args: readonly string[], ctx: AgentContext, opts: RunOptions = {}): Promise<RunOutcome> {
  // Spawning in a directory that is not there fails as ENOENT, which would read as
  // "the command is not installed".
  if (ctx.cwd && !statSync(ctx.cwd, { throwIfNoEntry: false })?.isDirectory()) {
    const where = ctx.task.cwd ? `the task's cwd '${ctx.task.cwd}' (${ctx.cwd})` : `the directory ${ctx.cwd}`;
    return Promise.resolve({
      ok: false,
      failure: { kind: "invalid", retryable: false, message: `${where} is not a directory in the task's worktree: create it in the repository, or fix cwd: in the graph` },
    });
  }
  const env: NodeJS.ProcessEnv = { ...process.env, ...ctx.env };
  for (const name of opts.unsetEnv ?? []) delete env[name];
  // The gate's sh always exists, so a missing command is found here, as spawn's ENOENT was.
  const found = findExecutable(command, env.PATH, ctx.cwd);
  if (found !== "ok") {
    // Not executable: what the shell would report (126), for callers that read exit codes.
    return Promise.resolve(
      found === "missing"
        ? { ok: false, failure: { kind: "agent_missing", retryable: false, message: `'${command}' is not installed or not on PATH` } }
        : { ok: false, failure: { kind: "exit", retryable: true, exitCode: 126, message: `'${command}' is not executable (exit 126)` } },
    );
  }
  const fed = typeof opts.stdin === "object" ? opts.stdin.text : undefined;
  // Running before the agent, so registering its group is one pipe write, not a process start.
  reaper.start();
  return new Promise((resolve) => {
    let settled = false;
    let stopReason: "timeout" | "abort" | undefined;
    const child = spawn("sh", ["-c", fed === undefined ? GATE : GATE_FED, "ado-agent", command, ...args], {
      cwd: ctx.cwd,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    child.stdout.setEncoding("utf8").on("data", (d: string) => ctx.onOutput("stdout", d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => ctx.onOutput("stderr", d));
    child.stdin.on("error", () => undefined); // the gate was killed before it read: 'close' reports it

    // Should this worker die before the group is stopped, the reaper stops it; the
    // command starts only once the reaper knows the group.
    reaper.track(child.pid, () => child.stdin.end(fed === undefined ? "go\n" : `go\n${fed}`));
    ctx.suspender.attach(child.pid);

    let killTimer: NodeJS.Timeout | undefined;
    const stop = (reason: "timeout" | "abort") => {
      if (stopReason || settled) return;
      stopReason = reason;
      // A stopped (paused) process cannot handle TERM until it is continued.
      signalGroup(child.pid, "SIGCONT");
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), opts.killGraceMs ?? KILL_GRACE_MS);
    };
    // The timeout counts running time only: paused time does not use it up.
    let timer: NodeJS.Timeout | undefined;
    let remaining = opts.timeoutMs;
    let runningSince = Date.now();
    const armTimeout = () => {
      if (remaining === undefined) return;
      // Node fires a setTimeout of more than 2^31-1 ms (~24.8 days) at once: a task
      // timeout of "30d" killed its agent as it started. Longer waits go in steps.
      const step = Math.min(Math.max(0, remaining), MAX_TIMER_MS);
      timer = setTimeout(() => {
        if (remaining !== undefined && remaining > step) {
          remaining -= step;
          runningSince = Date.now();
          armTimeout();
        } else stop("timeout");
      }, step);
    };
    if (!ctx.suspender.isPaused) armTimeout();
    const offSuspend = ctx.suspender.onChange((paused) => {
      if (remaining === undefined) return;
      if (paused) {
        clearTimeout(timer);
        remaining -= Date.now() - runningSince;
      } else {
        runningSince = Date.now();
        armTimeout();
      }
    });
    const onAbort = () => stop("abort");
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) onAbort();

    const finish = (outcome: RunOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      offSuspend();
      ctx.suspender.detach();
      ctx.signal.removeEventListener("abort", onAbort);
      // The leader is gone; make sure its group is too (a backgrounded grandchild).
      signalGroup(child.pid, "SIGKILL");
      reaper.untrack(child.pid);
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
    // The agent is done when its leader exits: what it left running in the background
    // (a dev server, a watcher) would otherwise hold the output pipes open, and the task,
    // until its timeout. What they already wrote is still in the pipes and is read.
    child.once("exit", () => signalGroup(child.pid, "SIGKILL"));
    // 'close' waits for the output pipes, so no output is lost after exit.
    child.once("close", (code, signal) => {
      if (stopReason === "timeout") {
        return finish({ ok: false, failure: { kind: "timeout", retryable: true, message: `timed out after ${opts.timeoutMs} ms; its process group was killed`, exitCode: code } });
      }
      const sig = signal ? { signal } : {};
      if (stopReason === "abort") {
        const why = ctx.signal.reason as AbortReason | undefined;
        return finish({
          ok: false,
          ...sig,
          ...(why !== undefined ? { stoppedBy: why } : {}),
          failure:
            why === "cancelled"
              ? { kind: "cancelled", retryable: false, message: "cancelled; its process group was killed", exitCode: code }
              : why === undefined || why === "interrupted"
                ? { kind: "interrupted", retryable: true, message: "interrupted: its worker shut down before it finished", exitCode: code }
                : { kind: "internal", retryable: true, message: `stopped (${String(why)}); its process group was killed`, exitCode: code },
        });
      }
      if (code === 0) return finish({ ok: true });
      const failure: TaskFailure = {
        kind: "exit",
        retryable: true,
        exitCode: code,
        message: code === null ? `killed by ${signal}` : `exited with code ${code}`,
      };
      finish({ ok: false, ...sig, failure });
    });
  });
}

/**
 * Whether `command` names an executable file: a path (relative to `cwd`), or a name
 * found on `PATH`. What spawn's ENOENT (missing) and EACCES (not executable) told before
 * agents started behind the gate.
 */
export function findExecutable(command: string, path = "", cwd = process.cwd()): "ok" | "missing" | "not_executable" {
  return executablePath(command, path, cwd).status;
}

/** The file `command` names (as findExecutable finds it), and whether it can be run. */
export function executablePath(command: string, path = "", cwd = process.cwd()): { status: "ok"; path: string } | { status: "missing" | "not_executable" } {
  const candidates = command.includes("/") ? [isAbsolute(command) ? command : join(cwd, command)] : path.split(delimiter).filter(Boolean).map((d) => join(d, command));
  let seen = false;
  for (const c of candidates) {
    if (!isFile(c)) continue;
    seen = true;
    try {
      accessSync(c, constants.X_OK);
      return { status: "ok", path: c };
    } catch {
      // a file, but not executable: a later PATH entry may still have one
    }
  }
  return { status: seen ? "not_executable" : "missing" };
}

function isFile(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
  } catch {
    return false; // a directory on the way we may not enter
  }
}
