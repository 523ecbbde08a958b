/**
 * Generates `docs/schemas/`: one JSON Schema (draft 2020-12) per wire schema in `SCHEMAS`
 * (src/runtime/messages.ts) and a README with the subject map, so a service in any
 * language can decode ado's payloads.
 *
 *   npx tsx scripts/gen-schemas.ts           write docs/schemas
 *   npx tsx scripts/gen-schemas.ts --check   compare only; exit 1 when out of date
 *
 * Importable: `generate()` returns every file's text, `check()` lists what differs on
 * disk (test/unit/schemas.test.ts runs it), `write()` updates the directory.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { z } from "zod";
import type { Priority } from "../src/runtime/graph.js";
import { DeadLetter, SCHEMAS, type AdoEvent } from "../src/runtime/messages.js";
import { API, API_ENDPOINTS, API_ERROR_STATUS, API_VERSION, ApiErrorCode, apiSchemaName, replySchema, serviceEndpointName } from "../src/runtime/api.js";
import { API_QUERIES, topology, type ApiEndpointName, type StreamKey } from "../src/runtime/topology.js";

/** Where the files go. */
export const SCHEMAS_DIR = fileURLToPath(new URL("../docs/schemas/", import.meta.url));

/** Printed by `--check` (and thrown at by the test) when the files on disk differ. */
export const OUT_OF_DATE = "docs/schemas is out of date: run npx tsx scripts/gen-schemas.ts";

/** The prefix the docs spell subjects with: the default one. */
const PREFIX = "ado";

/**
 * Which JSON Schema form a file describes.
 *
 * - `output`: what ado writes. Fields with defaults are always present. For these
 *   schemas (no transforms on the wire) every output-form payload is also valid input,
 *   so the output form is the safe contract both for readers and for a service that
 *   stands in for one of ado's writers.
 * - `input`: what ado accepts. Fields with defaults may be left out. Used where the
 *   outside party can only be the writer: the stream is a work queue read by the
 *   scheduler alone, so nobody else should ever read it.
 */
type Form = "input" | "output";

/** One way a payload travels. */
interface Carrier {
  /** `stream`: JetStream; `core`: core NATS, not stored; `kv`: the value of a KV entry. */
  kind: "stream" | "core" | "kv" | "http";
  /** The subject (stream, core) or bucket (kv). */
  where: string;
  /** Stream name, or the KV key layout. */
  detail: string;
  writer: string;
  reader: string;
}

interface WireDoc {
  form: Form;
  /** One sentence: what the payload is. */
  summary: string;
  carriers: Carrier[];
}

type SchemaKey = keyof typeof SCHEMAS;
type SchemaEntry = (typeof SCHEMAS)[SchemaKey];

const eventTypes = (): AdoEvent["type"][] => SCHEMAS.AdoEvent.schema.options.map((o) => o.shape.type.value);

/**
 * What travels where, keyed by wire name. Subjects, streams and buckets come from
 * src/runtime/topology.ts, so a renamed subject shows up here as a stale file; who
 * writes and reads what follows docs/ARCHITECTURE.md.
 */
function wireDocs(): Record<string, WireDoc> {
  const t = topology(PREFIX);
  const s = t.subjects;
  const stream = (k: StreamKey) => `stream \`${t.streams[k].name}\``;
  const kept = (k: StreamKey) => `${stream(k)}, kept ${duration(t.streams[k].max_age)}`;
  const eventSubject = (type: string, taskId?: string) =>
    s.event({ type: type as AdoEvent["type"], runId: "<runId>", ...(taskId ? { taskId } : {}) });
  return {
    "run.submit": {
      // Written by outside services (nobody else may read a work queue), and a graph
      // spelled with every retry and placement default would be tedious: input form.
      form: "input",
      summary: "A run submission: the task graph, the repository and the commit every root task starts from.",
      carriers: [
        {
          kind: "stream",
          where: s.submit,
          detail: `${stream("submit")}; \`Nats-Msg-Id: <runId>\`, a repeat within ${duration(t.streams.submit.duplicate_window)} is dropped`,
          writer: "clients (`ado run`, services)",
          reader: "scheduler",
        },
      ],
    },
    "task.work": {
      // An outside worker reads it: output form, like every other schema from here on
      // (events and records are published by ado; services read them).
      form: "output",
      summary: "A task whose dependencies are met, with everything needed to run one attempt of it.",
      carriers: [
        { kind: "stream", where: s.ready("<priority>" as Priority), detail: stream("ready"), writer: "scheduler", reader: "balancer" },
        {
          kind: "stream",
          where: s.work("<workerId>"),
          detail: `${stream("work")}; \`workerId\` is set`,
          writer: "balancer",
          reader: "that worker",
        },
      ],
    },
    "scheduler.input": {
      // Read by the scheduler alone; an outside service can only stand in for a worker
      // or merge coordinator, or send a control request: input form.
      form: "input",
      summary:
        "What the scheduler consumes after submission: attempt results (`task.result`), merge outcomes (`merge.result`) and control requests (`control`).",
      carriers: [
        {
          kind: "stream",
          where: s.results("<runId>"),
          detail: stream("results"),
          writer: "workers (`task.result`), merge coordinator (`merge.result`), clients and the scheduler (`control`)",
          reader: "scheduler",
        },
      ],
    },
    "merge.request": {
      form: "output",
      summary:
        "What the merge coordinator consumes: fold a finished task's commit into the run's integration branch with the run's merge settings (with `releaseOnly`, only free its worktree; with `resolution`, carry out a person's choice), or (`merge.into`) update the branch a successful run asked for.",
      carriers: [
        {
          kind: "stream",
          where: s.merge("<runId>"),
          detail: stream("merge"),
          writer: "scheduler; `ado hitl resolve` (with `resolution`)",
          reader: "merge coordinator",
        },
      ],
    },
    event: {
      form: "output",
      summary: "Run and task events, the audit trail of a run: a union discriminated by `type`; the README lists each type's subject.",
      carriers: [
        {
          kind: "stream",
          where: eventSubject("run.<kind>"),
          detail: kept("events"),
          writer: "scheduler",
          reader: "anyone",
        },
        {
          kind: "stream",
          where: eventSubject("task.<kind>", "<taskId>"),
          detail: stream("events"),
          writer: "scheduler, workers, balancer (`waiting`), stealer (`worker_lost`), merge coordinator (`merge_*`)",
          reader: "anyone",
        },
      ],
    },
    "worker.record": {
      form: "output",
      summary: "A worker's registry entry, refreshed by its heartbeat and deleted when it stops cleanly.",
      carriers: [{ kind: "kv", where: t.buckets.workers, detail: "key `<workerId>`", writer: "that worker", reader: "balancer, operators" }],
    },
    "worker.load": {
      form: "output",
      summary: "A worker's load report, sent whenever its running count changes.",
      carriers: [{ kind: "core", where: s.load("<workerId>"), detail: "core NATS, not stored", writer: "that worker", reader: "balancer" }],
    },
    "worker.drain": {
      form: "output",
      summary: "A request to one worker to drain: stop taking work, let running tasks finish (then checkpoint and hand back what is left), and stop. The reply is JSON `{ok, worker, state}`.",
      carriers: [{ kind: "core", where: s.drain("<workerId>"), detail: "core NATS request/reply", writer: "`ado workers drain`, the scaler", reader: "that worker" }],
    },
    "scaler.policy": {
      form: "output",
      summary: "A pool's scaling policy as set live, over its config: only the fields given. The scaler applies it at its next decision, without a restart.",
      carriers: [{ kind: "kv", where: t.buckets.scaler, detail: "key `policy.<pool>`", writer: "`ado workers scale|autoscale`", reader: "scaler, `ado workers list`" }],
    },
    "scaler.state": {
      form: "output",
      summary: "The scaler leader's memory of one pool: cooldowns, stabilization windows, idle times, workers starting and stopping, warm-up times, crash backoff and its last decision.",
      carriers: [{ kind: "kv", where: t.buckets.scaler, detail: "key `state.<pool>`", writer: "the scaler holding the lease", reader: "its successor, `ado workers list`, operators" }],
    },
    "attempt.claim": {
      form: "output",
      summary: "The claim on one attempt: created (never overwritten) by the worker that runs it, so an attempt runs once.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.claims,
          detail: "key `<runId>.<taskId>.<attempt>`, create only",
          writer: "the worker that runs the attempt",
          reader: "workers",
        },
      ],
    },
    control: {
      // Output, although clients write it too: the bucket is read by workers, the
      // balancer and dashboards, and writing `reason` and `by` (or "") costs nothing.
      form: "output",
      summary:
        "The desired state of a run or one task (cancel, pause, resume): the latest request wins. Also sent to the scheduler as a `scheduler.input` member.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.control,
          detail: "key `<runId>` or `<runId>.<taskId>`",
          writer: "clients, scheduler",
          reader: "workers, balancer",
        },
      ],
    },
    "run.record": {
      form: "output",
      summary: "The scheduler's record of a run.",
      carriers: [{ kind: "kv", where: t.buckets.runs, detail: "key `<runId>`", writer: "scheduler", reader: "scheduler, operators" }],
    },
    "task.record": {
      form: "output",
      summary: "The scheduler's record of one task.",
      carriers: [
        { kind: "kv", where: t.buckets.tasks, detail: "key `<runId>.<taskId>`", writer: "scheduler", reader: "scheduler, operators" },
      ],
    },
    "run.backlog": {
      form: "output",
      summary: "The tasks of an accepted run not finished yet: what the scheduler counts against `maxQueued` (queue full). Deleted when the run ends.",
      carriers: [{ kind: "kv", where: t.buckets.backlog, detail: "key `<runId>`", writer: "scheduler", reader: "scheduler replicas, operators" }],
    },
    "stage.state": {
      form: "output",
      summary:
        "A stage's limits in one run: its `perMinute` rate window (the next free start) and its circuit breaker (failures in a row, open until). Written by compare-and-set before the work that takes a slot is published, so a restarted scheduler or another replica keeps the limits. Deleted when the run ends.",
      carriers: [{ kind: "kv", where: t.buckets.stages, detail: "key `<runId>.<stage>`", writer: "scheduler", reader: "scheduler replicas, operators" }],
    },
    "cost.history": {
      form: "output",
      summary:
        "What tasks of one agent and prompt size cost in past runs (a running mean per attempt): what a run's budget reserves for a task with no cost history in its own run.",
      carriers: [
        { kind: "kv", where: t.buckets.costs, detail: "key `<agent>.<size class>`, folded in when a run ends", writer: "scheduler", reader: "scheduler replicas, operators" },
      ],
    },
    "hitl.record": {
      form: "output",
      summary:
        "A merge that needs a person (conflict nothing resolved, or a failed validation): what `ado hitl show` prints and `ado hitl resolve` needs.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.hitl,
          detail: "key `<runId>.<taskId>`",
          writer: "merge coordinator; `ado hitl resolve --manual` (compare-and-set)",
          reader: "`ado hitl`, operators",
        },
      ],
    },
    "worktree.record": {
      form: "output",
      summary: "One task's worktree: path, branch, host, worker, state (active, committed, merged, archived, removed, kept) and times; what `ado worktrees list` shows.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.worktrees,
          detail: "key `<runId>.<taskId>`",
          writer: "the worker that made it; the merge coordinator when it removes it; `ado worktrees cleanup`",
          reader: "`ado worktrees`, operators",
        },
      ],
    },
    "checkpoint.record": {
      form: "output",
      summary:
        "A task's latest checkpoint while its agent CLI works (or when its attempt was interrupted): the commit and ref of the work so far, the agent's session id, where the session ran, and the object holding a copy of the session's files.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.sessions,
          detail: "key `<runId>.<taskId>`; the session's files in object store `" + t.objects.sessions + "`, object `<runId>.<taskId>.<attempt>.<n>`",
          writer: "the worker running the attempt (compare-and-set; never over a later attempt's)",
          reader: "the stealer (a lost attempt resumes from it); the worker of the next attempt",
        },
      ],
    },
    webhook: {
      form: "output",
      summary:
        "What the notifier posts to each configured webhook (config `notifications.webhooks`) when a run ends or waits for a person: JSON, with `Ado-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's secret>`, `Ado-Event` and `Ado-Delivery` (the same on every retry of one delivery). Tried `notifications.attempts` times with backoff; then dead-lettered.",
      carriers: [{ kind: "http", where: "POST <webhook url>", detail: "JSON body, not MessagePack", writer: "notifier", reader: "your services" }],
    },
    "run.snapshot": {
      form: "output",
      summary:
        "A run's state at one sequence of the event stream (`seq`): every task's state, attempts, times, worker, cost and latest activity in columns, the run's state and integration head. A reader loads it and applies the run's events after `seq` to get what a replay of every event gives. Past 512 KB the task columns go to parts (`run.snapshot.part`) and `parts` says how many.",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.snapshots,
          detail: "key `<runId>` (the key `_cursor` holds the recorder's place in the stream, not a snapshot)",
          writer: "recorder (the replica holding lease `recorder`), every 1,000 events of the run or second",
          reader: "`ado attach`, `ado status`, the dashboard, operators",
        },
      ],
    },
    "run.snapshot.part": {
      form: "output",
      summary: "Task columns of a large run's snapshot, written before its head and tagged with the head's `seq` (a part of another sequence means a newer snapshot was being written: read again).",
      carriers: [
        {
          kind: "kv",
          where: t.buckets.snapshots,
          detail: "key `<runId>.p<n>`",
          writer: "recorder",
          reader: "whoever reads the run's snapshot",
        },
      ],
    },
    "provider.state": {
      form: "output",
      summary: "One provider's governor state: its token bucket, the attempts holding its concurrency, its circuit breaker. Written only with compare-and-set.",
      carriers: [{ kind: "kv", where: t.buckets.providers, detail: "key `<provider>`", writer: "balancers (permits), workers (outcomes)", reader: "balancers, operators" }],
    },
    "provider.event": {
      form: "output",
      summary: "A provider's circuit changed state (closed, open, half_open), with the reason and until when it stays open; or adaptive concurrency stepped its limits down or up, with the reason.",
      carriers: [
        { kind: "stream", where: s.providerEvent("<provider>", "circuit"), detail: kept("providers"), writer: "whoever made the change (a balancer or a worker)", reader: "anyone" },
        { kind: "stream", where: s.providerEvent("<provider>", "adaptive"), detail: kept("providers"), writer: "a balancer (its permit took the step)", reader: "anyone" },
      ],
    },
    "dead.letter": {
      form: "output",
      summary: "A message an actor could not accept, kept with its headers and the reason.",
      carriers: [
        {
          kind: "stream",
          where: s.deadLetter("<actor>"),
          detail: kept("dlq"),
          writer: "any actor",
          reader: "operators",
        },
      ],
    },
  };
}

/** A JetStream duration (nanoseconds) as "2 min" or "7 days". */
function duration(ns: number | undefined): string {
  const ms = (ns ?? 0) / 1_000_000;
  if (ms >= 86_400_000 && ms % 86_400_000 === 0) return `${ms / 86_400_000} days`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

const fileName = (e: SchemaEntry) => `${e.name}.v${e.version}.json`;
const headerValue = (e: SchemaEntry) => `${e.name}/${e.version}`;

function carrierText(c: Carrier): string {
  const plain = (md: string) => md.replace(/`/g, "");
  if (c.kind === "kv") return `KV bucket ${c.where}, ${plain(c.detail)} (the value; KV entries carry no header)`;
  if (c.kind === "http") return `${c.where} (${plain(c.detail)})`;
  return `${c.where} (${c.kind === "core" ? plain(c.detail) : `JetStream, ${plain(c.detail)}`})`;
}

const BYTES_NOTE =
  "Raw bytes: a MessagePack bin holding the rejected message's payload, untouched (usually MessagePack itself; " +
  "the Ado-Schema entry in `headers`, when present, names its schema). JSON Schema has no bytes type, so this " +
  "field is left unconstrained here.";

/** The JSON Schema document of one wire schema. */
function schemaDocument(key: SchemaKey, entry: SchemaEntry, doc: WireDoc): Record<string, unknown> {
  // Titles and subjects for the members of a top-level discriminated union, by identity.
  const members = new Map<z.core.$ZodType, { title: string; description?: string }>();
  const schema: z.ZodType = entry.schema;
  if (schema instanceof z.ZodDiscriminatedUnion) {
    const discriminator = schema.def.discriminator;
    for (const option of schema.options as z.ZodObject[]) {
      const tag = (option.shape[discriminator] as z.ZodLiteral<string>).value;
      const subject = entry.name === "event" ? eventSubjectOf(tag) : undefined;
      members.set(option, { title: tag, ...(subject ? { description: `Subject: ${subject}` } : {}) });
    }
  }
  const generated = z.toJSONSchema(entry.schema, {
    target: "draft-2020-12",
    io: doc.form,
    // Inline every use: the files stand alone, and no reader has to resolve $refs.
    reused: "inline",
    cycles: "throw",
    unrepresentable: ({ zodSchema, message }) => {
      if (zodSchema === DeadLetter.shape.payload) return { description: BYTES_NOTE };
      // Anything else new that JSON Schema cannot say must be decided here, not become `{}`.
      throw new Error(`${key} (${headerValue(entry)}): ${message}; describe it in scripts/gen-schemas.ts`);
    },
    override: ({ zodSchema, jsonSchema }) => {
      const zdef = zodSchema._zod.def;
      // zod strips unknown keys, and ado adds optional fields without changing a schema's
      // version: an output-form schema (what readers check) must not reject them. The
      // input form keeps `false` where ado itself rejects unknown keys (strict objects).
      if (doc.form === "output" && zdef.type === "object" && jsonSchema.additionalProperties === false) {
        delete jsonSchema.additionalProperties;
      }
      if (zdef.type === "union" && "discriminator" in zdef && jsonSchema.oneOf) {
        // OpenAPI-style annotation (JSON Schema 2020-12 keeps unknown keywords as
        // annotations): code generators and Ajv (`discriminator: true`) use it to pick the
        // member by `type` instead of trying each. Rebuilt so the keys read in order.
        const oneOf = jsonSchema.oneOf;
        delete jsonSchema.oneOf;
        Object.assign(jsonSchema, { type: "object", discriminator: { propertyName: zdef.discriminator }, oneOf });
      }
      const member = members.get(zodSchema);
      if (member) {
        const rest = { ...jsonSchema };
        for (const k of Object.keys(jsonSchema)) delete (jsonSchema as Record<string, unknown>)[k];
        Object.assign(jsonSchema, member, rest);
      }
    },
  }) as Record<string, unknown>;

  const { $schema, ...body } = generated;
  const formText =
    doc.form === "output"
      ? "Output form: what ado writes; fields with defaults are always present. Readers must ignore fields they do not know: ado adds optional fields without changing the version."
      : "Input form: what ado accepts; fields with a `default` may be left out.";
  const description = [
    `${doc.summary}`,
    `Travels on: ${doc.carriers.map(carrierText).join("; ")}.`,
    "Encoding: MessagePack (plain, no extension types), not JSON." +
      (doc.carriers.some((c) => c.kind !== "kv" && c.kind !== "http") ? ` Messages carry the header Ado-Schema: ${headerValue(entry)}.` : ""),
    formText,
    `Generated from ${key} in src/runtime/messages.ts by scripts/gen-schemas.ts; do not edit.`,
  ].join(" ");
  return { $schema, $id: `urn:ado:schema:${headerValue(entry)}`, title: key, description, ...body };
}

const apiFileName = (endpoint: ApiEndpointName, part: "request" | "reply") => `${apiSchemaName(endpoint, part)}.v${API_VERSION}.json`;

/**
 * The JSON Schema of an API endpoint's request (input form: what the API accepts; it
 * refuses unknown fields) or reply (output form: the envelope around its result).
 */
function apiSchemaDocument(endpoint: ApiEndpointName, part: "request" | "reply"): Record<string, unknown> {
  const io = part === "request" ? "input" : "output";
  const zschema: z.ZodType = part === "request" ? API[endpoint].request : replySchema(API[endpoint].result);
  const generated = z.toJSONSchema(zschema, {
    target: "draft-2020-12",
    io,
    reused: "inline",
    cycles: "throw",
    unrepresentable: ({ message }) => {
      throw new Error(`api ${endpoint} ${part}: ${message}; describe it in scripts/gen-schemas.ts`);
    },
    override: ({ zodSchema, jsonSchema }) => {
      // As for the wire schemas: replies may grow optional fields, readers ignore what they do not know.
      if (io === "output" && zodSchema._zod.def.type === "object" && jsonSchema.additionalProperties === false) delete jsonSchema.additionalProperties;
    },
  }) as Record<string, unknown>;
  const { $schema, ...body } = generated;
  const t = topology(PREFIX);
  const kind = (API_QUERIES as readonly string[]).includes(endpoint) ? "query" : "mutation";
  const description = [
    API[endpoint].summary,
    `API ${kind} \`${endpoint}\`: request/reply on ${t.subjects.api(endpoint)} (services endpoint ${serviceEndpointName(endpoint)} of ${t.service("api")}).`,
    part === "request"
      ? "The request: a JSON object (UTF-8); an empty body is {}. Input form: fields with a default may be left out; unknown fields are refused (bad_request)."
      : `The reply: JSON, {ok: true, result} or {ok: false, error: {code, message}}, header Ado-Schema: ${apiSchemaName(endpoint, "reply")}/${API_VERSION}. Output form: ignore fields you do not know.`,
    "Generated from API in src/runtime/api.ts by scripts/gen-schemas.ts; do not edit.",
  ].join(" ");
  return { $schema, $id: `urn:ado:schema:${apiSchemaName(endpoint, part)}/${API_VERSION}`, title: `${endpoint} ${part}`, description, ...body };
}

function eventSubjectOf(type: string): string {
  return topology(PREFIX).subjects.event({ type: type as AdoEvent["type"], runId: "<runId>", taskId: "<taskId>" });
}

/** Stable text: two-space JSON with a trailing newline (key order is the schema's field order). */
const jsonText = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

/**
 * Every file of docs/schemas, by file name, in a stable order. Throws when a schema in
 * SCHEMAS has no entry in the subject map here (or the map names one that is gone), so
 * the docs cannot silently miss a payload.
 */
export function generate(): Map<string, string> {
  const docs = wireDocs();
  const entries = Object.entries(SCHEMAS) as [SchemaKey, SchemaEntry][];
  const names = new Set<string>(entries.map(([, e]) => e.name));
  for (const [key, e] of entries) {
    if (!docs[e.name]) {
      throw new Error(
        `SCHEMAS.${key} ('${headerValue(e)}') has no entry in wireDocs() in scripts/gen-schemas.ts: add which subject or bucket carries it, who writes and who reads it`,
      );
    }
  }
  for (const name of Object.keys(docs)) {
    if (!names.has(name)) throw new Error(`wireDocs() in scripts/gen-schemas.ts describes '${name}', which is no longer in SCHEMAS: remove it`);
  }
  const files = new Map<string, string>();
  for (const [key, e] of entries) files.set(fileName(e), jsonText(schemaDocument(key, e, docs[e.name]!)));
  for (const endpoint of API_ENDPOINTS) {
    for (const part of ["request", "reply"] as const) files.set(apiFileName(endpoint, part), jsonText(apiSchemaDocument(endpoint, part)));
  }
  files.set("README.md", readme(entries, docs));
  return files;
}

/** Files docs/schemas may hold that the generator owns (anything else there is left alone). */
const isGeneratedName = (f: string) => f === "README.md" || /\.v\d+\.json$/.test(f);

/**
 * What differs between `generate()` and `dir`: one line per changed, missing or stale
 * file; empty when up to date.
 */
export function check(dir = SCHEMAS_DIR): string[] {
  const files = generate();
  const problems: string[] = [];
  for (const [name, text] of files) {
    const path = join(dir, name);
    if (!existsSync(path)) problems.push(`missing: ${name}`);
    else if (readFileSync(path, "utf8") !== text) problems.push(`changed: ${name}`);
  }
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      if (isGeneratedName(name) && !files.has(name)) problems.push(`stale: ${name} (no schema generates it)`);
    }
  }
  return problems;
}

/** Writes every file that differs and removes stale ones; returns the names touched. */
export function write(dir = SCHEMAS_DIR): string[] {
  const files = generate();
  mkdirSync(dir, { recursive: true });
  const touched: string[] = [];
  for (const [name, text] of files) {
    const path = join(dir, name);
    if (existsSync(path) && readFileSync(path, "utf8") === text) continue;
    writeFileSync(path, text);
    touched.push(name);
  }
  for (const name of readdirSync(dir).sort()) {
    if (isGeneratedName(name) && !files.has(name)) {
      rmSync(join(dir, name));
      touched.push(`${name} (removed)`);
    }
  }
  return touched;
}

// ---- README ----

function readme(entries: [SchemaKey, SchemaEntry][], docs: Record<string, WireDoc>): string {
  const t = topology(PREFIX);
  const events = t.streams.events.name;
  const cell = (s: string) => s.replace(/\|/g, "\\|");
  const where = (c: Carrier) =>
    c.kind === "kv" ? `KV \`${c.where}\`, ${c.detail}` : `\`${c.where}\` (${c.kind === "core" ? "core NATS" : c.detail})`;

  const schemaRows = entries.map(([key, e]) => {
    const d = docs[e.name]!;
    return `| \`${headerValue(e)}\` | [${fileName(e)}](${fileName(e)}) | ${key} | ${d.form} | ${cell(d.carriers.map(where).join("<br>"))} | ${cell(d.carriers.map((c) => `${c.writer} -> ${c.reader}`).join("<br>"))} |`;
  });
  const kvBuckets = [...new Set(entries.flatMap(([, e]) => docs[e.name]!.carriers.filter((c) => c.kind === "kv").map((c) => `\`${c.where}\``)))];
  const eventRows = eventTypes().map((type) => `| \`${type}\` | \`${eventSubjectOf(type)}\` |`);
  // The run's filter around a variable run id, for the code samples.
  const [runFilterHead, runFilterTail] = t.subjects.runEvents("<runId>").split("<runId>") as [string, string];

  const lines = [
    "# ado wire schemas",
    "",
    "<!-- Generated by scripts/gen-schemas.ts from src/runtime/messages.ts and src/runtime/topology.ts: do not edit. -->",
    "",
    "JSON Schema (draft 2020-12) for every payload ado puts on NATS, so a service in any",
    "language can read ado's events and records, or submit runs. Regenerate with",
    "`npx tsx scripts/gen-schemas.ts`; `--check` fails when these files are out of date.",
    "",
    "## Encoding",
    "",
    "- Payloads are **MessagePack** (plain: no extension types, maps with string keys), not",
    "  JSON. Decode with any MessagePack library, then treat the result as the JSON value the",
    "  schema describes. Times are ISO-8601 strings; `notBefore` and `deadline` are epoch",
    "  milliseconds. The only binary value is `payload` in `dead.letter` (a MessagePack bin).",
    "- Stream and core messages carry the header **`Ado-Schema: <name>/<version>`**, e.g.",
    "  `Ado-Schema: event/1`. Check the name; refuse a version newer than you know, as ado does.",
    "  KV values carry no header: the bucket names the schema.",
    "- Payloads over 8 KiB may be **compressed** with zlib (deflate): a message then carries",
    "  the header `Ado-Compression: deflate`, and a KV value starts with the bytes `0xc1 0x01`",
    "  (0xc1 is never used by MessagePack) followed by the zlib stream. Inflate, then decode.",
    "- A prompt over 64 KiB travels in the object store `ado-payloads`: the task keeps its",
    "  beginning in `prompt` and names the object in `promptRef` (`sha256-<hex>` of the whole",
    "  prompt's UTF-8); a fan-in's inputs too large for a message likewise in `inputsRef`.",
    `- Subjects below use the default prefix \`${PREFIX}\`; an installation may use another one`,
    `  (streams are named after it upper-cased: \`${events}\`).`,
    "- ado adds optional fields and new event types without changing a version. Ignore fields",
    "  you do not know, and dispatch on `type` before validating, skipping types you do not know.",
    "",
    "## Input and output forms",
    "",
    "Each file describes one form of its schema. **output**: what ado writes; fields with",
    "defaults are always present, and unknown fields are allowed (see above). **input**: what",
    "ado accepts; fields with a `default` may be left out, and the graph, task and placement",
    "objects reject unknown fields as ado does. `run.submit` and `scheduler.input` are input",
    "form: their streams are work queues read by the scheduler alone, so an outside service",
    "can only be their writer. An output-form payload is always valid input too.",
    "",
    "## Schemas",
    "",
    "| schema (`Ado-Schema`) | file | in messages.ts | form | travels on | writer -> reader |",
    "|---|---|---|---|---|---|",
    ...schemaRows,
    "",
    "## Events",
    "",
    `Every event is stored in the \`${events}\` stream (kept ${duration(t.streams.events.max_age)}) on its own`,
    "subject, so a reader can filter by run, task or kind:",
    "",
    "| type | subject |",
    "|---|---|",
    ...eventRows,
    "",
    `\`${t.subjects.runEvents("<runId>")}\` is everything about one run, \`${t.subjects.allEvents}\` everything.`,
    "",
    "## Subscribing from another language",
    "",
    "**Follow a run, with replay.** Create an ordered consumer on the events stream filtered",
    `to \`${t.subjects.runEvents("<runId>")}\`, deliver policy *all*. It replays the run's events from`,
    "the start and then follows live ones, in order, without gaps or duplicates across",
    "reconnects (the client library recreates it at the next sequence); it needs no acks and",
    "leaves nothing behind. The run is over at `run.completed` (or `run.rejected`). This is",
    "what `ado run` does.",
    "",
    "Go (`github.com/nats-io/nats.go/jetstream`, `github.com/vmihailenco/msgpack/v5`):",
    "",
    "```go",
    "js, _ := jetstream.New(nc)",
    `cons, _ := js.OrderedConsumer(ctx, "${events}", jetstream.OrderedConsumerConfig{`,
    `    FilterSubjects: []string{"${runFilterHead}" + runID + "${runFilterTail}"},`,
    "    DeliverPolicy:  jetstream.DeliverAllPolicy,",
    "})",
    "cc, _ := cons.Consume(func(m jetstream.Msg) {",
    '    if m.Headers().Get("Ado-Schema") != "event/1" { return }',
    "    var ev map[string]any",
    "    _ = msgpack.Unmarshal(m.Data(), &ev)",
    '    switch ev["type"] { case "run.completed": /* done */ }',
    "})",
    "defer cc.Stop()",
    "```",
    "",
    "Python (`nats-py`, `msgpack`):",
    "",
    "```python",
    "from nats.js.api import DeliverPolicy",
    "",
    "js = nc.jetstream()",
    `sub = await js.subscribe(f"${runFilterHead}{run_id}${runFilterTail}", stream="${events}",`,
    "                         ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)",
    "async for msg in sub.messages:",
    '    if (msg.headers or {}).get("Ado-Schema") != "event/1":',
    "        continue",
    "    event = msgpack.unpackb(msg.data)",
    '    if event["type"] == "run.completed":',
    "        break",
    "```",
    "",
    `**Live only.** A plain core subscription to \`${t.subjects.allEvents}\` (or a narrower subject)`,
    "receives events as they are published, with no replay and no delivery guarantee.",
    "",
    "**Submit a run.** Publish a `run.submit` payload (input form) with JetStream to",
    `\`${t.subjects.submit}\`, headers \`Ado-Schema: run.submit/1\` and \`Nats-Msg-Id: <runId>\`.`,
    "The publish acknowledgement means the submission is stored; a retry with the same run id",
    `within ${duration(t.streams.submit.duplicate_window)} is dropped as a duplicate. Run ids are 1-64 letters, digits, \`_\` or \`-\`,`,
    "starting with a letter or digit. Then follow the run's events as above: `run.accepted`",
    "or `run.rejected` (with the reason) comes first.",
    "",
    "**Read state, control runs.** Ask the API (below): runs, task status, cancel, pause,",
    "resume, HITL, workers, budget. Operators with a user that may read them can also watch or",
    `get the KV buckets (${kvBuckets.join(", ")}); values are MessagePack as above, without a header.`,
    "",
    "**Do not consume the work-queue streams** (`" +
      (["submit", "ready", "work", "results", "merge"] as const).map((k) => t.streams[k].name).join("`, `") +
      "`): a message",
    "there is removed once read, so a consumer of yours would take work from ado's actors.",
    "",
    "## The API (request/reply)",
    "",
    `Queries and commands go to the typed API, served by the \`api\` actor (its replicas share`,
    "the requests through the services framework's queue group). Send a **JSON** object (an",
    "empty body is `{}`) to the endpoint's subject and read the JSON reply:",
    "`{\"ok\": true, \"result\": ...}` or `{\"ok\": false, \"error\": {\"code\", \"message\"}}`. The reply",
    "carries `Ado-Schema: api.<endpoint>.reply/1`; an error reply also the services framework's",
    "`Nats-Service-Error-Code` (" + ApiErrorCode.options.map((c) => `\`${c}\` ${API_ERROR_STATUS[c]}`).join(", ") + ").",
    "A reply over 8 KiB may be deflated like the other payloads (`Ado-Compression: deflate`):",
    "inflate it, then parse the JSON.",
    "The codes are a closed set: `bad_request` (the message says which field and why),",
    "`not_found`, `conflict` (the run or task has ended, the record moved on), `forbidden`",
    "(your NATS user may not call it: an observer may call only the queries), `unavailable`",
    "(try again; a client that gets *no responders* has no API on that server).",
    "",
    `Discovery: \`nats micro ls\`, \`$SRV.PING.${topology(PREFIX).service("api")}\`, \`$SRV.INFO.${topology(PREFIX).service("api")}\` (each endpoint's`,
    "subject and, in its metadata, its request and reply schema names).",
    "",
    "| endpoint | kind | subject | request | reply | what it does |",
    "|---|---|---|---|---|---|",
    ...API_ENDPOINTS.map(
      (e) =>
        `| \`${e}\` | ${(API_QUERIES as readonly string[]).includes(e) ? "query" : "mutation"} | \`${t.subjects.api(e)}\` | [${apiFileName(e, "request")}](${apiFileName(e, "request")}) | [${apiFileName(e, "reply")}](${apiFileName(e, "reply")}) | ${cell(API[e].summary)} |`,
    ),
    "",
    "```sh",
    `nats req ${t.subjects.api("runs.list")} '{"active": true}'`,
    `nats req ${t.subjects.api("runs.cancel")} '{"runId": "r-123", "reason": "wrong branch"}'`,
    "```",
    "",
    "`examples/ado_client.py` drives ado from these files alone: it submits a run (MessagePack,",
    "as above), follows its events and asks the API, over a plain socket with the standard",
    "library.",
    "",
    "## Validating",
    "",
    "The schemas carry formats (`date-time`) and an OpenAPI-style `discriminator` on `type`,",
    "which JSON Schema 2020-12 keeps as an annotation. Validators that do not know it ignore",
    "it; Ajv in strict mode needs `new Ajv2020({ discriminator: true })` and the `date-time`",
    "format (`ajv-formats`). Patterns are ECMA-262 regular expressions.",
    "",
    "## What JSON Schema cannot say",
    "",
    "- `dead.letter` `payload` is raw bytes (MessagePack bin); its schema is `{}` with a",
    "  description. The original message's schema is named by the `Ado-Schema` entry of its",
    "  `headers`.",
    "- Rules across fields or across messages are checked by ado, not the schema: task ids",
    "  unique in a graph, `needs` naming tasks of the graph, no cycles, the shell agent",
    "  needing `run`, a run whose tasks need a repository naming `repo` and `baseCommit`.",
    "",
  ];
  return lines.join("\n");
}

// ---- CLI ----

function main(argv: string[]): number {
  const args = argv.slice(2);
  const unknown = args.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    console.error(`unknown argument(s) ${unknown.join(" ")}: usage: npx tsx scripts/gen-schemas.ts [--check]`);
    return 2;
  }
  if (args.includes("--check")) {
    const problems = check();
    if (problems.length > 0) {
      console.error(`${OUT_OF_DATE}\n${problems.map((p) => `  ${p}`).join("\n")}`);
      return 1;
    }
    console.log(`docs/schemas is up to date (${generate().size} files)`);
    return 0;
  }
  const touched = write();
  console.log(touched.length ? `docs/schemas: wrote ${touched.join(", ")}` : "docs/schemas: already up to date");
  return 0;
}

const invokedPath = process.argv[1];
if (invokedPath && import.meta.url === pathToFileURL(realpathSync(invokedPath)).href) {
  process.exitCode = main(process.argv);
}
