/**
 * Agents run as leaders of their own process group (and session), so that a timeout, a
 * cancel or a shutdown can stop the whole tree they started. The same detachment would
 * orphan them when the worker itself dies without cleaning up (SIGKILL, OOM killer, a
 * crash): nothing would ever stop them, and a paused (SIGSTOPped) one would sit stopped
 * forever.
 *
 * The reaper closes that gap. It is one small `sh` per worker process, in a session of
 * its own (so neither a pause of an agent group nor a signal to the worker's group stops
 * it), reading the worker's pipe. The worker writes `+<pgid>` when an agent group starts
 * and `-<pgid>` once it is gone. The pipe closes however the worker ends, and the reaper
 * then continues, terminates and, after a grace period, kills every group still listed.
 * Only builtins run in the loop, so registering a group costs one pipe write.
 *
 * A group the reaper does not know of is a group it cannot stop, so an agent must not
 * run before its group is registered. It did once: the reaper was started lazily, by
 * the first registration, and an agent is running from the moment spawn() returns, so
 * the first agent of every worker process ran unregistered while the worker forked and
 * exec'd the reaper (tens to hundreds of ms on a loaded machine). A worker SIGKILLed
 * then (a test kills it as soon as the agent has written a file) left that agent
 * running for good, with a reaper that had read nothing. Now (process.ts) the reaper
 * is started before the agent, and the agent's command waits behind a gate until its
 * group is registered (`afterTracked`): a worker that dies before that leaves a gate
 * that reads end-of-file and exits, never an agent.
 */
import { spawn, type ChildProcess } from "node:child_process";

const REAPER = `
trap '' INT TERM HUP
groups=""
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups \${line#+}" ;;
    -*) g=\${line#-}; kept=""
        for x in $groups; do [ "$x" = "$g" ] || kept="$kept $x"; done
        groups=$kept ;;
  esac
done
[ -n "$groups" ] || exit 0
for g in $groups; do kill -CONT -"$g"; kill -TERM -"$g"; done 2>/dev/null
sleep "$1"
for g in $groups; do kill -KILL -"$g"; done 2>/dev/null
exit 0
`;

/** Seconds between TERM and KILL when the reaper stops the groups of a dead worker. */
export const REAPER_GRACE_S = 2;

/** Tracks this process's agent groups in a reaper process, started on first use. */
export class GroupReaper {
  private child?: ChildProcess;

  /**
   * Registers a newly started group. `afterTracked` runs once the registration is in the
   * reaper's pipe (the kernel has it: it survives this process), or at once when there
   * is no reaper. Never throws: a reaper that cannot start only loses the safety net.
   */
  track(pgid: number | undefined, afterTracked?: () => void): void {
    if (pgid) this.send(`+${pgid}`, afterTracked);
    else afterTracked?.();
  }

  /** Starts the reaper now, if it does not run, so that registering a group costs no process start. */
  start(): void {
    this.ensure();
  }

  /** Forgets a group that is gone, so its id (which the kernel may reuse) is never signalled. */
  untrack(pgid: number | undefined): void {
    if (pgid) this.send(`-${pgid}`);
  }

  /** The reaper's pid, for tests. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private send(line: string, written?: () => void): void {
    const child = this.ensure();
    if (!child?.stdin) return written?.();
    let called = false;
    const once = () => {
      if (!called) (called = true), written?.();
    };
    try {
      // The callback runs once the line was handed to the kernel, or failed (EPIPE: the
      // reaper died; the next write starts another). Either way the agent may go on.
      child.stdin.write(`${line}\n`, once);
    } catch {
      once();
    }
  }

  private ensure(): ChildProcess | undefined {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null && this.child.stdin?.writable) {
      return this.child;
    }
    try {
      const child = spawn("sh", ["-c", REAPER, "ado-agent-reaper", String(REAPER_GRACE_S)], {
        stdio: ["pipe", "ignore", "ignore"],
        detached: true,
      });
      // A reaper that died (someone killed it) is replaced on the next write.
      child.stdin!.on("error", () => undefined);
      child.once("error", () => undefined);
      // Neither the reaper nor its pipe keeps the worker alive.
      child.unref();
      (child.stdin as unknown as { unref?: () => void }).unref?.();
      this.child = child;
      return child;
    } catch {
      return undefined;
    }
  }
}

/** The reaper of this process. */
export const reaper = new GroupReaper();
