import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { errorMessage } from "../../../runtime/errors.js";
import type { Logger } from "../../../runtime/logger.js";

/** How a supervised process ended. */
export interface ProcessEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Whether its stop had been asked for. */
  requested: boolean;
  /** `exit code 1`, `signal SIGKILL`, `spawn failed: ...`. */
  detail: string;
}

export interface ProcessHandleOptions {
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** Where its stdout and stderr go (appended). */
  logFile: string;
  log: Logger;
  onExit: (end: ProcessEnd) => void;
}

/**
 * One supervised worker process (a local `ado worker`, or the `ssh` client running one on
 * a host): its own process group and session (so a signal to the scaler's terminal
 * never reaches it, and its group can be killed whole), output to a log file, and its
 * stdin held as a lifeline. Ending stdin is the graceful stop: the worker, started with
 * `--exit-on-stdin-close`, drains and exits; through `ssh` the end of stdin reaches the
 * remote worker the same way. Should the scaler die, its end of the pipe closes too, so
 * no worker outlives its supervisor for long.
 */
export class ProcessHandle {
  private readonly child: ChildProcess;
  private stopRequested = false;
  private ended?: ProcessEnd;
  private forceTimer?: NodeJS.Timeout;
  private readonly done: Promise<ProcessEnd>;
  readonly startedAt = Date.now();

  constructor(o: ProcessHandleOptions) {
    mkdirSync(dirname(o.logFile), { recursive: true });
    const out = openSync(o.logFile, "a");
    let resolveDone!: (e: ProcessEnd) => void;
    this.done = new Promise((r) => (resolveDone = r));
    const finish = (end: Omit<ProcessEnd, "requested">) => {
      if (this.ended) return;
      clearTimeout(this.forceTimer);
      this.ended = { ...end, requested: this.stopRequested };
      o.onExit(this.ended);
      resolveDone(this.ended);
    };
    try {
      this.child = spawn(o.command, [...o.args], { env: o.env, cwd: o.cwd, detached: true, stdio: ["pipe", out, out] });
    } finally {
      closeSync(out); // the child has its own copy
    }
    // EPIPE when it is gone already: its exit is what matters.
    this.child.stdin?.on("error", () => undefined);
    this.child.on("error", (err) => {
      o.log.warn({ command: o.command, err: errorMessage(err) }, "worker process could not be started");
      finish({ code: null, signal: null, detail: `spawn failed: ${errorMessage(err)}` });
    });
    this.child.on("exit", (code, signal) => finish({ code, signal, detail: signal ? `signal ${signal}` : `exit code ${code}` }));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.ended;
  }

  get requested(): boolean {
    return this.stopRequested;
  }

  /** Resolves when the process has ended. */
  exited(): Promise<ProcessEnd> {
    return this.done;
  }

  /**
   * The graceful stop: its stdin ends, so it drains and exits. Past `forceAfterMs` its
   * process group is sent SIGTERM, then SIGKILL 5 s later.
   */
  stop(forceAfterMs: number): void {
    if (this.ended) return;
    this.stopRequested = true;
    this.child.stdin?.end();
    if (this.forceTimer) return;
    this.forceTimer = setTimeout(() => {
      this.signalGroup("SIGTERM");
      this.forceTimer = setTimeout(() => this.signalGroup("SIGKILL"), 5_000);
      this.forceTimer.unref();
    }, forceAfterMs);
    this.forceTimer.unref();
  }

  /** Kills its whole group now (a start given up on). */
  kill(): void {
    this.stopRequested = true;
    this.signalGroup("SIGKILL");
  }

  private signalGroup(signal: NodeJS.Signals): void {
    if (this.ended || !this.child.pid) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}
