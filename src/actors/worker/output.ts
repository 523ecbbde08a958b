import type { OutputStream } from "../../agents/index.js";

const FLUSH_MS = 25;
const FLUSH_BYTES = 16 * 1024;
const TAIL_CHARS = 4_000;

/**
 * Coalesces an agent's output into events: one per stream per 25 ms or 16 KiB, so a
 * chatty process costs a few messages a second, not one per write. Keeps the last
 * few KiB for the failure report.
 */
export class OutputBuffer {
  private parts: Record<OutputStream, string> = { stdout: "", stderr: "" };
  private timer?: NodeJS.Timeout;
  private last = "";
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(private readonly send: (stream: OutputStream, data: string) => Promise<unknown>) {}

  push(stream: OutputStream, data: string): void {
    this.parts[stream] += data;
    this.last = (this.last + data).slice(-TAIL_CHARS);
    if (this.parts[stream].length >= FLUSH_BYTES) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const stream of ["stdout", "stderr"] as const) {
      const data = this.parts[stream];
      if (!data) continue;
      this.parts[stream] = "";
      const p = this.send(stream, data).catch(() => undefined);
      this.inflight.add(p);
      void p.finally(() => this.inflight.delete(p));
    }
  }

  /** Resolves once every event sent so far is stored. */
  async settled(): Promise<void> {
    await Promise.all([...this.inflight]);
  }

  tail(): string {
    return this.last;
  }
}
