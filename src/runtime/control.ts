import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, encodeValue } from "./codec.js";
import type { Logger } from "./logger.js";
import { SCHEMAS, type ControlRequest } from "./messages.js";

/** Control bucket key: the run id, or `runId.taskId` for one task. */
export const controlKey = (runId: string, taskId?: string) => (taskId ? `${runId}.${taskId}` : runId);

/** Writes the desired state of a run or task (the latest request wins). */
export async function writeControl(kv: KV, request: ControlRequest): Promise<number> {
  return kv.put(controlKey(request.runId, request.taskId), encodeValue(SCHEMAS.ControlRequest, request));
}

/** The effective state of one run or task, as far as control goes. */
export type ControlState = "running" | "paused" | "cancelled";

/**
 * A live view of the control bucket, kept by a KV watch. The watch replays the current
 * value of every key first and resumes after a reconnect, so a worker or balancer that
 * was disconnected when a request was made still acts on it.
 */
export class ControlView {
  private readonly latest = new Map<string, ControlRequest>();
  private stopWatch?: () => void;
  private stopped = false;

  constructor(
    private readonly kv: KV,
    private readonly log: Logger,
    private readonly onChange: (request: ControlRequest) => void = () => undefined,
    /** When given, the watch is restarted on every reconnect (see start()). */
    private readonly nc?: NatsConnection,
  ) {}

  /**
   * Starts watching. After a reconnect the watch is started afresh rather than left to
   * notice the lost consumer by missed heartbeats (seconds, more under load): a fresh
   * watch replays every key's current value, so requests made meanwhile apply at once.
   */
  async start(): Promise<void> {
    await this.watch();
    if (!this.nc) return;
    void (async () => {
      for await (const s of this.nc!.status()) {
        if (this.stopped) break;
        if (s.type !== "reconnect") continue;
        this.stopWatch?.();
        await this.watch().catch((err) => this.log.warn({ err: String(err) }, "control watch restart failed"));
      }
    })();
  }

  private async watch(): Promise<void> {
    const watch = await this.kv.watch();
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") {
          this.latest.delete(e.key);
          continue;
        }
        try {
          const req = decode(SCHEMAS.ControlRequest, e.value);
          this.latest.set(e.key, req);
          this.onChange(req);
        } catch (err) {
          this.log.warn({ key: e.key, err: String(err) }, "unreadable control record ignored");
        }
      }
    })();
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
  }

  /** The state a task should be in: a run-level cancel or pause applies to all its tasks. */
  stateOf(runId: string, taskId?: string): ControlState {
    const run = this.latest.get(runId)?.action;
    const task = taskId ? this.latest.get(controlKey(runId, taskId))?.action : undefined;
    if (run === "cancel" || task === "cancel") return "cancelled";
    if (run === "pause" || task === "pause") return "paused";
    return "running";
  }
}
