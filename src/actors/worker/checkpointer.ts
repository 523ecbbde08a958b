import { homedir, hostname } from "node:os";
import { pushRef, type RepoTarget, type WorktreeManager } from "../../git/index.js";
import type { Agent, SessionPlace } from "../../agents/index.js";
import type { CheckpointStore } from "../../runtime/checkpoints.js";
import { errorMessage } from "../../runtime/errors.js";
import type { WorkerId } from "../../runtime/ids.js";
import type { Logger } from "../../runtime/logger.js";
import type { TaskWork } from "../../runtime/messages.js";
import { CHECKPOINT_TRAILER, checkpointRef, msgIds } from "../../runtime/names.js";
import type { publishEvent } from "../../runtime/events.js";

type AttemptEvent = Parameters<typeof publishEvent>[2];

/** What a checkpointer needs from its attempt. */
export interface CheckpointerOptions {
  workerId: WorkerId;
  log: Logger;
  store: CheckpointStore;
  emit(event: AttemptEvent, msgID?: string): Promise<unknown>;
  work: TaskWork;
  agent: Agent;
  wt: WorktreeManager;
  /** The task's worktree, and where its agent runs (with the environment it sees). */
  cwd: string;
  place: SessionPlace;
  target: RepoTarget;
  /** Where the task started (an earlier attempt's checkpoint names it): each checkpoint commit carries it. */
  taskStart(): Promise<string>;
}

/** Where an agent's session files are: this host and the home its CLI sees. */
export function sessionHost(place: SessionPlace): string {
  return `${hostname()}:${place.env.HOME || homedir()}`;
}

/**
 * An attempt's checkpoints while its agent CLI works: every interval, the agent's
 * session files are packed, then the worktree is committed through a temporary index
 * (the agent's index, HEAD and branch untouched) and the attempt's checkpoint ref moved
 * to that commit (pushed in remote mode), then the record and the session copy are
 * stored (CheckpointStore) and `task.checkpoint` published. The session is packed first,
 * so the copy never tells of steps whose files the commit lacks. A checkpoint whose
 * worktree did not change since the last is skipped; one never overlaps another.
 */
export class Checkpointer {
  /** The agent's session, once its stream named it. */
  sessionId?: string;
  private n = 0;
  private last?: { tree: string; head: string };
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly ref: string;

  constructor(private readonly o: CheckpointerOptions) {
    this.ref = checkpointRef(o.work.runId, o.work.taskId, o.work.attempt);
  }

  /** Takes a checkpoint every `intervalMs` until stop(). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.periodic()
        .catch((err) => this.o.log.warn({ task: this.o.work.taskId, err: errorMessage(err) }, "checkpoint failed; the next one tries again"))
        .finally(() => (this.running = undefined));
    }, intervalMs);
    this.timer.unref();
  }

  /** No more checkpoints; resolves once one under way has finished. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** The commits of the attempt's periodic checkpoints are reachable from this ref. */
  get checkpointRef(): string {
    return this.ref;
  }

  private async periodic(): Promise<void> {
    const { work, wt, cwd } = this.o;
    const packed = await this.pack();
    const taskStart = await this.o.taskStart();
    const n = this.n + 1;
    const snap = await wt.snapshot(cwd, {
      ref: this.ref,
      message: `ado: ${work.taskId} checkpoint ${n} (attempt ${work.attempt}, agent at work)\n\n${CHECKPOINT_TRAILER}: ${taskStart}`,
      ...(this.last ? { unless: this.last } : {}),
    });
    if (!snap.commit) return;
    this.n = n;
    this.last = { tree: snap.tree, head: snap.head };
    const { target } = this.o;
    if (target.remote) {
      // Another host resumes from this commit: it fetches the run's refs, this one among them.
      await pushRef(target.dir, target.remote, snap.commit, this.ref).catch((err) =>
        this.o.log.warn({ task: work.taskId, err: errorMessage(err) }, "checkpoint committed here, but not pushed: another host cannot resume from it"),
      );
    }
    await this.record(n, snap.commit, this.ref, packed, "periodic");
  }

  /**
   * The interruption's checkpoint: its commit is on the task branch already; the record
   * and the session copy are stored, so the next attempt resumes the session anywhere.
   */
  async final(commit: string, branch: string, reason: string): Promise<void> {
    await this.stop();
    this.n++;
    await this.record(this.n, commit, `refs/heads/${branch}`, await this.pack(), reason);
  }

  private async pack(): Promise<Uint8Array | undefined> {
    const { agent, place } = this.o;
    if (!this.sessionId || !agent.sessions?.portable) return undefined;
    return agent.sessions.pack(this.sessionId, place).catch((err) => {
      this.o.log.warn({ task: this.o.work.taskId, err: errorMessage(err) }, "the agent's session files could not be read; the checkpoint is stored without them");
      return undefined;
    });
  }

  private async record(n: number, commit: string, ref: string, packed: Uint8Array | undefined, reason: string): Promise<void> {
    const { work, agent, workerId } = this.o;
    const at = new Date().toISOString();
    const sessionId = this.sessionId;
    const base = { runId: work.runId, taskId: work.taskId, attempt: work.attempt, at, workerId };
    const written = await this.o.store.put({ ...base, n, agent: agent.name, sessionHost: sessionHost(this.o.place), commit, ref, ...(sessionId ? { sessionId } : {}) }, packed);
    if (written.kind === "stale") return; // a later attempt runs already: this one's checkpoint is history
    await this.o
      .emit({ type: "task.checkpoint", ...base, commit, reason, ref, ...(sessionId ? { sessionId } : {}) }, msgIds.checkpoint(work, n))
      .catch((err) => this.o.log.debug({ task: work.taskId, err: errorMessage(err) }, "task.checkpoint event not stored"));
  }
}
