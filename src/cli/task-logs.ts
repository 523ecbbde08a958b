import { closeSync, mkdirSync, openSync, readFileSync, rmdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { open, readdir, readFile, stat } from "node:fs/promises";
import { homedir, hostname } from "node:os";
import { join } from "node:path";
import { openRepo } from "../git/index.js";
import type { AdoEvent } from "../runtime/messages.js";

/**
 * Every task attempt's output, kept after the run: `<root>/<run>/<task>.<attempt>.log`,
 * the attempt's stdout and stderr as they arrived (what a terminal would have shown).
 * `root` is `<git common dir>/ado/logs` for a run on a repository on this machine (git
 * never looks there, every worktree of the repository shares it, and the user's
 * checkout is not touched), else `$XDG_STATE_HOME/ado/logs`.
 *
 * The logs are written by the client that follows the run (`ado run`, `ado attach`,
 * `ado runs resume`, `ado hitl resolve`), from the `task.output` events it receives
 * anyway, so they exist wherever the run was followed, whichever host ran the task. An
 * attempt's log is written only by a client that saw the attempt start (its
 * `task.started`): a log is then whole, never the tail of a late join. A client that
 * replays a run's events rewrites the logs of the attempts it sees start, identically.
 * Two clients following one run on one machine do not both write: the first takes
 * `<root>/<run>/.writer` (its pid), the other writes only once that process is gone.
 *
 * The reader half (listTaskLogs, tailOfFile) is what `ado logs` (logs.ts) uses.
 */

const WRITER_FILE = ".writer";
const LOG_NAME = /^([A-Za-z0-9][A-Za-z0-9_-]*)\.(\d+)\.log$/;

/** Where a repository's (or this machine's) task logs live. */
export function logsRoot(gitCommonDir: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (gitCommonDir) return join(gitCommonDir, "ado", "logs");
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), ".local", "state"), "ado", "logs");
}

/** The logs root for a run on `repo`: in the repository when it is on this machine. */
export async function logsRootFor(repo: string | undefined): Promise<string> {
  const info = repo ? await openRepo(repo).catch(() => undefined) : undefined;
  return logsRoot(info?.gitCommonDir);
}

export const runLogsDir = (root: string, runId: string) => join(root, runId);
export const taskLogPath = (root: string, runId: string, taskId: string, attempt: number) => join(root, runId, `${taskId}.${attempt}.log`);

/** One attempt's log. */
export interface TaskLog {
  runId: string;
  taskId: string;
  attempt: number;
  path: string;
  bytes: number;
  modifiedAt: string;
}

/** The logs of a run (or of one of its tasks), by task id, then attempt. */
export async function listTaskLogs(root: string, runId: string, taskId?: string): Promise<TaskLog[]> {
  const dir = runLogsDir(root, runId);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: TaskLog[] = [];
  for (const name of names) {
    const m = LOG_NAME.exec(name);
    if (!m || (taskId !== undefined && m[1] !== taskId)) continue;
    const s = await stat(join(dir, name)).catch(() => undefined);
    if (!s?.isFile()) continue;
    out.push({ runId, taskId: m[1]!, attempt: Number(m[2]), path: join(dir, name), bytes: s.size, modifiedAt: s.mtime.toISOString() });
  }
  return out.sort((a, b) => (a.taskId === b.taskId ? a.attempt - b.attempt : a.taskId < b.taskId ? -1 : 1));
}

/** The whole log. */
export function readTaskLog(path: string): Promise<string> {
  return readFile(path, "utf8");
}

/** The last `lines` lines of a file, reading only its end (a log can be large). */
export async function tailOfFile(path: string, lines: number, maxBytes = 256 * 1024): Promise<string[]> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    let text = buf.toString("utf8");
    if (start > 0) text = text.slice(text.indexOf("\n") + 1); // a partial first line
    const all = text.replace(/\n+$/, "").split("\n");
    return text.trim() === "" ? [] : all.slice(-lines);
  } finally {
    await fh.close();
  }
}

interface WriterMark {
  pid: number;
  host: string;
  at: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Writes the logs of one run from its events (see the module comment). Never throws
 * from `onEvent`: a log that cannot be written is reported once and the run goes on.
 */
export class TaskLogWriter {
  private readonly dir: string;
  /** Open logs by attempt key (`task.attempt`). */
  private readonly fds = new Map<string, number>();
  /** Attempts whose log this writer writes (it saw them start). */
  private readonly mine = new Set<string>();
  private owner = false;
  private failed?: string;

  constructor(
    private readonly root: string,
    readonly runId: string,
    private readonly warn: (msg: string) => void = () => undefined,
  ) {
    this.dir = runLogsDir(root, runId);
  }

  /** Where the log of an attempt is (or would be: an attempt that printed nothing has none). */
  pathOf(taskId: string, attempt: number): string {
    return taskLogPath(this.root, this.runId, taskId, attempt);
  }

  onEvent(e: AdoEvent): void {
    if (this.failed || !("taskId" in e) || e.runId !== this.runId) return;
    const key = `${e.taskId}.${e.attempt}`;
    try {
      if (e.type === "task.started") {
        if (!this.own()) return;
        this.closeAttempt(key);
        // A replay rewrites the log from the attempt's start; the file is made by the
        // first output (a task that prints nothing leaves no empty file).
        rmSync(this.pathOf(e.taskId, e.attempt), { force: true });
        this.mine.add(key);
        return;
      }
      if (!this.mine.has(key)) return;
      if (e.type === "task.output") {
        const fd = this.fds.get(key) ?? openSync(this.pathOf(e.taskId, e.attempt), "a");
        this.fds.set(key, fd);
        writeSync(fd, e.data);
      } else if (e.type === "task.succeeded" || e.type === "task.failed" || e.type === "task.cancelled" || e.type === "worker.lost") {
        // The attempt is over: no more output for it.
        this.closeAttempt(key);
      }
    } catch (err) {
      this.failed = (err as Error).message;
      this.warn(`task logs are not written: ${this.failed}`);
      this.close();
    }
  }

  /** Whether this process may write the run's logs: it holds `.writer`, or takes it from a process that is gone. */
  private own(): boolean {
    if (this.owner) return true;
    const path = join(this.dir, WRITER_FILE);
    mkdirSync(this.dir, { recursive: true });
    let mark: WriterMark | undefined;
    try {
      mark = JSON.parse(readFileSync(path, "utf8")) as WriterMark;
    } catch {
      mark = undefined;
    }
    if (mark && mark.pid !== process.pid && (mark.host !== hostname() || alive(mark.pid))) return false;
    writeFileSync(path, JSON.stringify({ pid: process.pid, host: hostname(), at: new Date().toISOString() } satisfies WriterMark) + "\n");
    this.owner = true;
    return true;
  }

  private closeAttempt(key: string): void {
    const fd = this.fds.get(key);
    if (fd === undefined) return;
    this.fds.delete(key);
    closeSync(fd);
  }

  /** Closes every log and lets another process write this run's logs. Idempotent. */
  close(): void {
    for (const key of [...this.fds.keys()]) {
      try {
        this.closeAttempt(key);
      } catch {
        // closing is best effort: the data is written already
      }
    }
    if (this.owner) {
      rmSync(join(this.dir, WRITER_FILE), { force: true });
      this.owner = false;
      // Nothing was printed (tasks without output, noop agents): no empty directory left.
      for (const dir of [this.dir, this.root]) {
        try {
          rmdirSync(dir);
        } catch {
          break; // not empty: it holds logs
        }
      }
    }
  }
}
