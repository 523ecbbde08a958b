import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { check, generate, OUT_OF_DATE } from "../../scripts/gen-schemas.js";
import { encode, unpackRaw } from "../../src/runtime/codec.js";
import { SCHEMAS, SubmitRun, type AdoEvent } from "../../src/runtime/messages.js";

const files = generate();

/**
 * Ajv as docs/schemas/README.md tells other services to set it up: strict, with the
 * `discriminator` keyword and a `date-time` format (zod also emits a pattern for it).
 */
function validatorFor(file: string): ValidateFunction {
  const text = files.get(file);
  if (text === undefined) throw new Error(`the generator wrote no ${file}; it wrote ${[...files.keys()].join(", ")}`);
  const ajv = new Ajv2020({
    strict: true,
    allErrors: true,
    discriminator: true,
    formats: { "date-time": { type: "string", validate: (s: string) => !Number.isNaN(Date.parse(s)) } },
  });
  return ajv.compile(JSON.parse(text) as object);
}

/** What a service in another language sees: the MessagePack payload ado sends, decoded. */
function overTheWire(event: AdoEvent): { value: unknown; header: string | undefined } {
  const { data, headers } = encode(SCHEMAS.AdoEvent, event);
  return { value: unpackRaw(data), header: headers.get("Ado-Schema") };
}

const at = "2026-05-01T12:00:00.000Z";
const sha = "0123456789abcdef0123456789abcdef01234567";

describe("schemas - generated docs", () => {
  it("docs/schemas is up to date with src/runtime/messages.ts", () => {
    // On failure: run `npx tsx scripts/gen-schemas.ts` and commit docs/schemas.
    expect(check(), OUT_OF_DATE).toEqual([]);
  });

  it("generation is deterministic and every file ends with a newline", () => {
    const again = generate();
    expect([...again.keys()]).toEqual([...files.keys()]);
    for (const [name, text] of files) {
      expect(again.get(name), name).toBe(text);
      expect(text.endsWith("\n"), name).toBe(true);
    }
  });

  it("writes one file per wire schema, each compiling in strict Ajv with an $id and its subjects", () => {
    for (const { name, version } of Object.values(SCHEMAS)) {
      const file = `${name}.v${version}.json`;
      expect(() => validatorFor(file), file).not.toThrow();
      const doc = JSON.parse(files.get(file)!) as { $id: string; $schema: string; description: string };
      expect(doc.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
      expect(doc.$id).toBe(`urn:ado:schema:${name}/${version}`);
      expect(doc.description).toMatch(/Travels on: /);
      expect(doc.description).toMatch(/MessagePack/);
    }
    expect(files.get("README.md")).toContain("| `event/1` | [event.v1.json](event.v1.json) |");
  });

  it("describes events as a union discriminated by type, with each member's subject", () => {
    const doc = JSON.parse(files.get("event.v1.json")!) as {
      discriminator: { propertyName: string };
      oneOf: Array<{ title: string; description: string; required: string[] }>;
    };
    expect(doc.discriminator).toEqual({ propertyName: "type" });
    const failed = doc.oneOf.find((m) => m.title === "task.failed");
    expect(failed?.description).toBe("Subject: ado.evt.<runId>.task.<taskId>.failed");
    // Output form: defaulted fields are always present, so they are required.
    expect(failed?.required).toEqual(expect.arrayContaining(["runId", "taskId", "attempt", "error", "willRetry", "outputTail"]));
  });

  it("marks the dead letter's bytes as unconstrained, with a description", () => {
    const doc = JSON.parse(files.get("dead.letter.v1.json")!) as { properties: { payload: Record<string, unknown> } };
    expect(Object.keys(doc.properties.payload)).toEqual(["description"]);
    expect(doc.properties.payload.description).toMatch(/MessagePack bin/);
  });
});

describe("schemas - round trip through MessagePack", () => {
  const validateEvent = validatorFor("event.v1.json");

  it("a run.accepted event as sent validates against event.v1.json", () => {
    const { value, header } = overTheWire({
      type: "run.accepted",
      runId: "r1",
      at,
      name: "demo",
      tasks: [
        { id: "api", needs: [], priority: "high" },
        { id: "ui", needs: ["api"], priority: "normal" },
      ],
      queued: ["api"],
      integrationBranch: "ado/r1/integration",
      baseCommit: sha,
    });
    expect(header).toBe("event/1");
    expect(validateEvent(value), JSON.stringify(validateEvent.errors)).toBe(true);
  });

  it("a task.failed event as sent validates, defaults filled in", () => {
    const { value } = overTheWire({
      type: "task.failed",
      runId: "r1",
      taskId: "api",
      attempt: 2,
      workerId: "w-host-abc123",
      error: "exit code 1",
      willRetry: false,
      outputTail: "",
      finishedAt: at,
      at,
    });
    expect(validateEvent(value), JSON.stringify(validateEvent.errors)).toBe(true);
  });

  it("readers accept fields a newer ado adds, and reject unknown types and missing fields", () => {
    const base = { type: "task.skipped", runId: "r1", taskId: "ui", attempt: 1, reason: "'api' failed", at };
    expect(validateEvent({ ...base, addedLater: true })).toBe(true);
    expect(validateEvent({ ...base, type: "task.exploded" })).toBe(false);
    expect(validateEvent.errors?.[0]?.keyword).toBe("discriminator");
    const { reason: _, ...noReason } = base;
    expect(validateEvent(noReason)).toBe(false);
    expect(validateEvent({ ...base, attempt: 0 })).toBe(false);
    expect(validateEvent({ ...base, at: "yesterday" })).toBe(false);
  });

  it("a run.submit written by hand (input form, defaults left out) validates, and ado accepts it", () => {
    const validate = validatorFor("run.submit.v1.json");
    const submit = {
      type: "run.submit" as const,
      runId: "r2",
      graph: { tasks: [{ id: "build", run: "make" }, { id: "test", run: "make test", needs: ["build"] }] },
      submittedAt: at,
    };
    expect(validate(submit), JSON.stringify(validate.errors)).toBe(true);
    const parsed = SubmitRun.safeParse(submit);
    expect(parsed.success).toBe(true);
    // What ado itself sends (the output form, defaults filled in) is valid input too.
    expect(validate(unpackRaw(encode(SCHEMAS.SubmitRun, submit).data))).toBe(true);
  });

  it("run.submit rejects what ado rejects: unknown task fields, bad ids, an empty graph", () => {
    const validate = validatorFor("run.submit.v1.json");
    const ok = { type: "run.submit", runId: "r3", submittedAt: at };
    const cases = [
      { graph: { tasks: [{ id: "a", run: "true", timeout: "5m" }] } },
      { graph: { tasks: [{ id: "a b" }] } },
      { graph: { tasks: [] } },
    ];
    for (const c of cases) {
      const payload = { ...ok, ...c };
      expect(validate(payload), JSON.stringify(c)).toBe(false);
      expect(SubmitRun.safeParse(payload).success, JSON.stringify(c)).toBe(false);
    }
    expect(validate({ ...ok, graph: { tasks: [{ id: "a" }] } })).toBe(true);
    const { runId: _, ...noRunId } = { ...ok, graph: { tasks: [{ id: "a" }] } };
    expect(validate(noRunId)).toBe(false);
  });
});
