import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { encodeValue } from "./codec.js";
import { KvWatch } from "./kv-watch.js";
import type { Logger } from "./logger.js";
import { SCHEMAS, type ControlRequest } from "./messages.js";
import { controlKey } from "./names.js";

/** Writes the desired state of a run or task (the latest request wins). */
export async function writeControl(kv: KV, request: ControlRequest): Promise<number> {
  return kv.put(controlKey(request.runId, request.taskId), encodeValue(SCHEMAS.ControlRequest, request));
}

/** The effective state of one run or task, as far as control goes. */
export type ControlState = "running" | "paused" | "cancelled";

/**
 * A live view of the control bucket, kept by a KV watch. The watch replays the current
 * value of every key first and restarts after a reconnect, so a worker or balancer that
 * was disconnected when a request was made still acts on it.
 */
export class ControlView {
  private readonly latest = new Map<string, ControlRequest>();
  private readonly watch: KvWatch<ControlRequest>;

  constructor(kv: KV, log: Logger, onChange: (request: ControlRequest) => void, nc: NatsConnection) {
    this.watch = new KvWatch({
      kv,
      nc,
      log,
      schema: SCHEMAS.ControlRequest,
      what: "control record",
      onPut: (key, req) => {
        this.latest.set(key, req);
        onChange(req);
      },
      onDelete: (key) => this.latest.delete(key),
    });
  }

  start(): Promise<void> {
    return this.watch.start();
  }

  stop(): void {
    this.watch.stop();
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
