import { Actor, type ActorContext } from "../../runtime/actor.js";
import { encode } from "../../runtime/codec.js";
import { BatchLoop, type Delivery, type Outcome } from "../../runtime/consume.js";
import { SCHEMAS, type TaskWork } from "../../runtime/messages.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";
import { WorkerRegistry } from "./registry.js";
import { leastLoaded } from "./strategy.js";

export interface BalancerOptions {
  heartbeatMs: number;
  /** Wait before a task with no eligible worker is offered again. */
  retryMs?: number;
}

/**
 * The balancer actor: takes ready tasks and assigns each to a worker's own work subject,
 * choosing the least-loaded live worker that has the task's agent. With no eligible
 * worker the task is not acked: it stays in the ready stream (backpressure) and is
 * offered again shortly.
 */
export class Balancer extends Actor {
  private registry!: WorkerRegistry;
  private loop?: BatchLoop<TaskWork>;
  private assigned = 0;
  private deferred = 0;
  private warned = new Set<string>();

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: BalancerOptions,
  ) {
    super("balancer", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    const { topo, nc, kv } = this.ctx;
    this.registry = new WorkerRegistry(nc, kv.workers, topo, this.clock, this.opts.heartbeatMs, this.log);
    await this.registry.start();
    const jsm = await this.js.jetstreamManager();
    await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
    this.loop = new BatchLoop<TaskWork>({
      js: this.js,
      topo,
      consumer: await this.js.consumers.get(topo.streams.ready.name, consumers.ready),
      schema: SCHEMAS.TaskWork,
      actor: "balancer",
      logger: this.log,
      // The handler only publishes: a failure is the server's, never the message's.
      maxDeliver: Number.POSITIVE_INFINITY,
      handle: (batch) => this.assign(batch),
    });
    await this.loop.start();
  }

  protected async onDrain(): Promise<void> {
    await this.loop?.stop();
    this.registry?.stop();
  }

  override stats() {
    return { assigned: this.assigned, deferred: this.deferred, workers: this.registry?.live().length ?? 0 };
  }

  private async assign(batch: Delivery<TaskWork>[]): Promise<Outcome[]> {
    const live = this.registry.live();
    const outcomes: Outcome[] = [];
    const pubs: Promise<unknown>[] = [];
    for (const { data } of batch) {
      const worker = leastLoaded(live, data.task.agent);
      if (!worker) {
        this.deferred++;
        if (!this.warned.has(data.task.agent)) {
          this.warned.add(data.task.agent);
          this.log.warn({ agent: data.task.agent }, "no live worker can run this agent; tasks wait in the ready queue");
        }
        outcomes.push({ kind: "nak", delayMs: this.opts.retryMs ?? 250 });
        continue;
      }
      const key = `${data.runId}.${data.taskId}.${data.attempt}`;
      worker.outstanding.add(key);
      const { data: payload, headers } = encode(SCHEMAS.TaskWork, { ...data, workerId: worker.record.workerId });
      pubs.push(this.js.publish(this.ctx.topo.subjects.work(worker.record.workerId), payload, { headers, msgID: key }));
      outcomes.push({ kind: "ack" });
      this.assigned++;
    }
    // Ack only what is durably on a worker's subject; a failed publish throws and redelivers the batch.
    await Promise.all(pubs);
    if (outcomes.some((o) => o.kind === "ack")) this.warned.clear();
    return outcomes;
  }
}
