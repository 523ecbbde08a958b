import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const ADO_BIN = fileURLToPath(new URL("../../bin/ado.mjs", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `ado` binary to completion. */
export function runAdo(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; onStderr?: (all: string) => void } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ADO_BIN, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, ADO_LOG_LEVEL: "warn", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => {
      stderr += d;
      opts.onStderr?.(stderr);
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ado ${args.join(" ")} timed out\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts a long-running `ado` command (worker, actor, up) and resolves once it printed `ready`. */
export function startAdo(args: string[], ready: RegExp, opts: { env?: NodeJS.ProcessEnv } = {}): Promise<{ child: ChildProcess; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ADO_BIN, ...args], {
      env: { ...process.env, ADO_LOG_LEVEL: "warn", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const onData = (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolve({ child, output: () => out });
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`ado ${args.join(" ")} exited (${code}) before ready:\n${out}`)));
  });
}

/** Sends a signal and waits for the exit code. */
export function stopProcess(child: ChildProcess, signal: NodeJS.Signals = "SIGINT"): Promise<number | null> {
  return new Promise((resolve) => {
    // Exited already: by itself (exitCode), or killed by a signal (exitCode stays null,
    // signalCode says which; waiting for "exit" then waits forever).
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill(signal);
  });
}
