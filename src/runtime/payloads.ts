/**
 * Payloads too large for a NATS message (a server refuses one over its `max_payload`,
 * 1 MB by default): a long prompt, the inputs of a wide fan-in. They go to the JetStream
 * object store `<prefix>-payloads`, named by the SHA-256 of their bytes (so a retried
 * put is the same object and two tasks with one prompt share it), and the message
 * carries the name: `TaskDef.promptRef` (with the prompt's beginning still inline, for
 * merge requests and HITL records), `TaskWork.inputsRef`. Whoever runs the task reads
 * them back (`loadWork`). Everything smaller travels inline, compressed by the codec
 * when large (see COMPRESSION_HEADER).
 */
import { createHash } from "node:crypto";
import { StorageType } from "@nats-io/jetstream";
import { Objm, type ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { encode } from "./codec.js";
import { PayloadMissingError } from "./errors.js";
import type { Graph } from "./graph.js";
import { SCHEMAS, TaskWork } from "./messages.js";
import { ns, PAYLOAD_TTL_MS, type Topology } from "./topology.js";

/** Prompts longer than this (UTF-8 bytes) go to the object store; the message keeps this much of their beginning. */
export const PROMPT_INLINE_MAX_BYTES = 64 * 1024;
/** Room kept under the server's max payload for headers and the rest of the message. */
const HEADROOM_BYTES = 16 * 1024;


/** The payload object store of one prefix, opened on first use. */
export class PayloadStore {
  private store?: Promise<ObjectStore>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly topo: Topology,
  ) {}

  /** The largest message the server takes, less room for headers. */
  get maxInline(): number {
    return (this.nc.info?.max_payload ?? 1024 * 1024) - HEADROOM_BYTES;
  }

  private open(): Promise<ObjectStore> {
    // create() is idempotent: it opens the store when it exists with the same settings.
    this.store ??= new Objm(this.nc).create(this.topo.objects.payloads, { storage: StorageType.File, ttl: ns(PAYLOAD_TTL_MS) }).catch((err: unknown) => {
      this.store = undefined;
      throw err;
    });
    return this.store;
  }

  /** Stores `data` (idempotent) and returns its name, `sha256-<hex>`. */
  async put(data: Uint8Array): Promise<string> {
    const name = payloadName(data);
    const os = await this.open();
    // Content-addressed: present means identical, so it is stored at most once.
    if (!(await os.info(name))) await os.putBlob({ name }, data);
    return name;
  }

  /** The bytes stored under `name`; PayloadMissingError when they are gone. */
  async get(name: string): Promise<Uint8Array> {
    const os = await this.open();
    const data = await os.getBlob(name);
    if (!data) {
      throw new PayloadMissingError(
        `payload ${name} is not in the object store ${this.topo.objects.payloads} (kept ${PAYLOAD_TTL_MS / 86_400_000} days): submit the run again`,
      );
    }
    if (payloadName(data) !== name) throw new PayloadMissingError(`payload ${name} in ${this.topo.objects.payloads} does not match its checksum: submit the run again`, { retryable: true });
    return data;
  }
}

/** The name of a payload: the SHA-256 of its bytes. */
export function payloadName(data: Uint8Array): string {
  return `sha256-${createHash("sha256").update(data).digest("hex")}`;
}

/** The beginning of `text`, at most `maxBytes` of UTF-8, never a broken character. */
export function utf8Head(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return text;
  return bytes.subarray(0, maxBytes).toString("utf8").replace(/\uFFFD$/, "");
}

/**
 * The graph as it can be submitted: every prompt over PROMPT_INLINE_MAX_BYTES stored in
 * the object store, the task keeping its beginning and `promptRef`.
 */
export async function offloadPrompts(graph: Graph, store: PayloadStore): Promise<Graph> {
  if (!graph.tasks.some((t) => t.prompt.length > PROMPT_INLINE_MAX_BYTES / 4 && Buffer.byteLength(t.prompt) > PROMPT_INLINE_MAX_BYTES)) return graph;
  const tasks = [];
  for (const t of graph.tasks) {
    if (t.promptRef || Buffer.byteLength(t.prompt) <= PROMPT_INLINE_MAX_BYTES) {
      tasks.push(t);
      continue;
    }
    const promptRef = await store.put(Buffer.from(t.prompt, "utf8"));
    tasks.push({ ...t, prompt: utf8Head(t.prompt, PROMPT_INLINE_MAX_BYTES), promptRef });
  }
  return { ...graph, tasks };
}

/**
 * Work as it can be published: when its encoding would not fit the server's max payload
 * (a fan-in of many or long results), its inputs go to the object store.
 */
export async function fitWork(work: TaskWork, store: PayloadStore): Promise<TaskWork> {
  if (!work.inputs.length || encode(SCHEMAS.TaskWork, work).data.length <= store.maxInline) return work;
  const inputsRef = await store.put(Buffer.from(JSON.stringify(work.inputs), "utf8"));
  return { ...work, inputs: [], inputsRef };
}

/** Work with its stored payloads read back: the whole prompt, the inputs. */
export async function loadWork(work: TaskWork, store: PayloadStore): Promise<TaskWork> {
  let out = work;
  if (work.task.promptRef) {
    const prompt = Buffer.from(await store.get(work.task.promptRef)).toString("utf8");
    const { promptRef: _ref, ...task } = work.task;
    out = { ...out, task: { ...task, prompt } };
  }
  if (work.inputsRef) {
    const text = Buffer.from(await store.get(work.inputsRef)).toString("utf8");
    const inputs = TaskWork.shape.inputs.safeParse(JSON.parse(text));
    if (!inputs.success) throw new PayloadMissingError(`payload ${work.inputsRef} does not hold a task's inputs: submit the run again`);
    const { inputsRef: _ref, ...rest } = out;
    out = { ...rest, inputs: inputs.data };
  }
  return out;
}
