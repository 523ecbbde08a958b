/**
 * Pause and resume for one task's process group. The worker holds it; the process
 * runner attaches the group once spawned (a pause requested before that applies at
 * spawn). Listeners let the runner stop its timeout clock while paused.
 */
export class Suspender {
  private pid?: number;
  private paused = false;
  /** Pauses so far: each pause and its resume are the n-th of the attempt (their events' ids). */
  private pauses = 0;
  private readonly listeners = new Set<(paused: boolean) => void>();

  get isPaused(): boolean {
    return this.paused;
  }

  /** How many times the group was paused (the current or last pause's number). */
  get pauseCount(): number {
    return this.pauses;
  }

  attach(pid: number | undefined): void {
    this.pid = pid;
    if (this.paused) signalGroup(pid, "SIGSTOP");
  }

  detach(): void {
    this.pid = undefined;
  }

  pause(): boolean {
    if (this.paused) return false;
    this.paused = true;
    this.pauses++;
    signalGroup(this.pid, "SIGSTOP");
    for (const l of this.listeners) l(true);
    return true;
  }

  resume(): boolean {
    if (!this.paused) return false;
    this.paused = false;
    signalGroup(this.pid, "SIGCONT");
    for (const l of this.listeners) l(false);
    return true;
  }

  onChange(listener: (paused: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is already gone
  }
}
