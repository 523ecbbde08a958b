/** Wire records as their writers make them, for tests that feed the actors' pure parts and the registries. */
import { decode, encode } from "../../src/runtime/codec.js";
import { SCHEMAS, type TaskWork, type WorkerLoad, type WorkerRecord } from "../../src/runtime/messages.js";

/** A worker's heartbeat record (one idle slot on worker `w1` unless overridden). */
export function workerRecord(over: Partial<WorkerRecord> = {}): WorkerRecord {
  return {
    workerId: "w1",
    host: "h",
    pid: 1,
    slots: 1,
    running: 0,
    pending: 0,
    agents: ["shell"],
    labels: [],
    capabilities: [],
    accessMode: "local",
    costPerTask: 0,
    active: [],
    loadSeq: 0,
    startedAt: "2026-01-01T00:00:00.000Z",
    heartbeatAt: "2026-01-01T00:00:00.000Z",
    state: "running",
    ...over,
  };
}

/** A worker's load report. */
export const workerLoad = (over: Partial<WorkerLoad> = {}): WorkerLoad => ({ type: "worker.load", workerId: "w1", running: 0, finished: [], loadSeq: 0, ...over });

/** A work message for attempt `attempt` of task `taskId` of run `r1`, through the wire schema (defaults applied). */
export function taskWork(taskId: string, attempt = 1, over: Partial<TaskWork> = {}): TaskWork {
  return decode(
    SCHEMAS.TaskWork,
    encode(SCHEMAS.TaskWork, {
      type: "task.work",
      runId: "r1",
      taskId,
      attempt,
      priority: "normal",
      task: { id: taskId, run: "true" },
      branch: `ado/r1/${taskId}`,
      baseCommit: "b".repeat(40),
      repo: "/repo",
      readyAt: "2026-01-01T00:00:00.000Z",
      submittedAt: "2026-01-01T00:00:00.000Z",
      workerId: "w-dead",
      ...over,
    } as TaskWork).data,
  );
}
