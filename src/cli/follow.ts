import type { Stack } from "../actors/stack.js";
import { WatchAbortedError, WatchLostError, type RunOutcome, type WatchOptions } from "../runtime/client.js";
import { sleep } from "../runtime/clock.js";
import type { AdoEvent } from "../runtime/messages.js";
import { dropKeptRun, type KeptRun, markKeptRun } from "./kept-runs.js";
import type { ProgressView } from "./progress.js";
import { plural } from "./progress-state.js";
import { CliError, Exit } from "./common.js";
import { onSignals } from "./signals.js";
import type { TaskLogWriter } from "./task-logs.js";

/**
 * Following a run to its end from a terminal (`ado run`, `ado runs resume`): events go
 * to the view and the task logs, and Ctrl-C does what it says.
 *
 * With the embedded stack (this process runs the workers):
 *   1. The first Ctrl-C stops the workers: nothing new starts, the tasks that run go
 *      on to their end and are merged (the actors still run). The view says which, and
 *      that a second Ctrl-C kills them; merges that land meanwhile show as they happen.
 *      When nothing runs or merges any more, following stops: the run is kept, to be
 *      resumed (`ado runs resume`).
 *   2. The second Ctrl-C interrupts what still runs: each agent is killed, its work so
 *      far committed on its branch as a checkpoint, and the next attempt (after a
 *      resume) continues from it.
 *   3. A third exits at once; the run's store is kept all the same.
 * Against a server (`ado up`, `--server`) the first Ctrl-C only detaches: the run goes on.
 */

export interface FollowOptions {
  runId: string;
  view: ProgressView;
  logs?: TaskLogWriter;
  /** The embedded stack, when this process runs it. */
  stack?: Stack;
  /** Follows the run (the client's watch, or watchWaiting), with the options given. */
  watch: (opts: Pick<WatchOptions, "onEvent" | "signal">) => Promise<RunOutcome>;
  /** Messages for the person (stderr). */
  say: (msg: string) => void;
}

/** How following ended when Ctrl-C stopped it before the run's end. */
export interface Stopped {
  /** False: detached from a run that goes on elsewhere. */
  embedded: boolean;
  /** Tasks merged after the first Ctrl-C. */
  mergedWhileStopping: string[];
  /** Tasks the second Ctrl-C interrupted (their work is checkpointed on their branches). */
  interrupted: string[];
}

export interface Followed {
  outcome?: RunOutcome;
  stopped?: Stopped;
  /**
   * Removes the signal handlers. Until then (while the caller stops the stack and
   * prints the summary) a Ctrl-C exits at once.
   */
  release(): void;
}

/** Follows the run until it ends, waits for a person, or Ctrl-C stops following (see the module comment). */
export async function followRun(o: FollowOptions): Promise<Followed> {
  const abort = new AbortController();
  const state = o.view.state;
  const running = () => state.tasks().filter((t) => t.status === "running");
  const merging = () => state.tasks().filter((t) => t.status === "merging");
  const ids = (ts: { id: string }[]) => {
    const shown = ts.slice(0, 5).map((t) => t.id).join(", ");
    return ts.length > 5 ? `${shown}, …` : shown;
  };
  let stopping: { mergedBefore: number; killed: boolean; interrupted: string[] } | undefined;
  let ended = false;

  const first = async () => {
    if (!o.stack) {
      o.view.setNotice(`detached; the run goes on: ado attach ${o.runId}`);
      abort.abort();
      return;
    }
    const stack = o.stack;
    stopping = { mergedBefore: state.merged.length, killed: false, interrupted: [] };
    const now = running();
    // The promise first (Ctrl-C again), then the names: a narrow terminal cuts the end.
    o.view.setNotice(
      now.length
        ? `Ctrl-C: nothing new starts; waiting for ${plural(now.length, "running task")} to finish and merge (Ctrl-C again kills ${now.length === 1 ? "it" : "them"}): ${ids(now)}`
        : "Ctrl-C: nothing new starts; stopping",
    );
    await stack.stopWorkers();
    // What finished is recorded and merged by the actors, which still run: wait for it.
    while (!abort.signal.aborted && !ended && !stopping.killed && (running().length > 0 || merging().length > 0)) await sleep(100, abort.signal);
    if (!stopping.killed) o.view.setNotice(undefined); // the summary says where it stopped
    abort.abort();
  };
  const second = async () => {
    if (!o.stack || !stopping) return;
    stopping.killed = true;
    const now = running();
    stopping.interrupted = now.map((t) => t.id);
    o.view.setNotice(
      now.length
        ? `Ctrl-C again: killing ${plural(now.length, "running task")}, work so far committed on ${now.length === 1 ? "its branch" : "their branches"} (Ctrl-C once more exits at once): ${ids(now)}`
        : "Ctrl-C again: stopping now (Ctrl-C once more exits at once)",
    );
    await o.stack.interruptWorkers();
    abort.abort();
  };
  let off = onSignals(o.stack ? [first, second] : [first], o.say);
  const release = () => off();
  try {
    const outcome = await o.watch({
      onEvent: (e: AdoEvent) => {
        o.view.onEvent(e);
        o.logs?.onEvent(e);
      },
      signal: abort.signal,
    });
    ended = true;
    return { outcome, release };
  } catch (err) {
    // Following lost the run for good: say so, and never as a success.
    if (err instanceof WatchLostError) throw new CliError(err.message, Exit.failed);
    if (!(err instanceof WatchAbortedError)) throw err;
    // Only a Ctrl-C here or `ado detach` stops following short of the run's end: anything
    // else is a watch that lost the run, and exiting 0 without its outcome would lie.
    if (!abort.signal.aborted && err.by !== "detach") {
      throw new CliError(`stopped following run ${o.runId} before its end (${err.message}): see where it stands with \`ado status ${o.runId}\``, Exit.failed);
    }
    // Not by a signal here: `ado detach` from elsewhere.
    if (!abort.signal.aborted) o.view.setNotice(`detached; the run goes on: ado attach ${o.runId}`);
    return {
      stopped: {
        embedded: !!o.stack,
        mergedWhileStopping: stopping ? state.merged.slice(stopping.mergedBefore).map((m) => m.taskId) : [],
        interrupted: stopping?.interrupted ?? [],
      },
      release,
    };
  } finally {
    ended = true;
    off();
    off = onSignals([], o.say);
    o.view.stop();
    o.logs?.close();
  }
}

/**
 * Stops the embedded stack and keeps or drops the run's store by how following ended:
 * kept while the run can go on (it waits for a person, or Ctrl-C stopped it: marked
 * `interrupted` before the stack stops, so even a stop cut short leaves it resumable),
 * dropped once it ended. When following never happened (the submission failed), the
 * store is dropped, unless `keepIfNotFollowed` (a resume that failed keeps the run).
 */
export async function endEmbedded(o: { kept?: KeptRun; followed?: Followed; keepIfNotFollowed?: boolean; stop: () => Promise<void> }): Promise<void> {
  const { kept, followed } = o;
  const now = () => new Date().toISOString();
  if (kept && (followed?.stopped || (!followed && o.keepIfNotFollowed))) await markKeptRun(kept, { ...kept.marker!, state: "interrupted", updatedAt: now() });
  await o.stop();
  if (!kept) return;
  // The server has stopped, so the store is complete.
  if (followed?.outcome?.status === "needs_attention") await markKeptRun(kept, { ...kept.marker!, state: "needs_attention", updatedAt: now() });
  else if (followed?.outcome || (!followed && !o.keepIfNotFollowed)) await dropKeptRun(kept);
}
