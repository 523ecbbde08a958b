import { describe, expect, it } from "vitest";
import { RunFold } from "../../src/runtime/run-fold.js";
import { foldOf, snapshotOf } from "../../src/runtime/run-snapshot.js";
import { decode, encodeValue } from "../../src/runtime/codec.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { RunProgress } from "../../src/cli/progress-state.js";

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const ev = (e: Record<string, unknown>): AdoEvent => SCHEMAS.AdoEvent.schema.parse({ runId: "r1", attempt: 1, ...e }) as AdoEvent;

// What claude's stream-json looks like on stdout: the worker parses it into agent.* events.
const claudeLine = (o: unknown) => JSON.stringify(o) + "\n";

/** Two tasks: `a` runs claude (raw JSON on stdout, agent events), `b` a shell command; then `a`'s second attempt runs aider (text output). */
function history(): AdoEvent[] {
  return [
    ev({ type: "run.accepted", at: at(0), name: "demo", tasks: [{ id: "a", needs: [], priority: "normal" }, { id: "b", needs: [], priority: "normal" }], queued: ["a", "b"], integrationBranch: "ado/r1/integration" }),
    ev({ type: "task.started", taskId: "a", at: at(1), workerId: "w1", agent: "claude" }),
    ev({ type: "task.started", taskId: "b", at: at(1), workerId: "w1", agent: "shell" }),
    ev({ type: "task.output", taskId: "a", at: at(2), stream: "stdout", data: claudeLine({ type: "system", subtype: "init", session_id: "s1" }) }),
    ev({ type: "agent.message", taskId: "a", at: at(2), seq: 0, text: "I will fix the parser.\nThen run the tests." }),
    ev({ type: "task.output", taskId: "a", at: at(3), stream: "stdout", data: claudeLine({ type: "assistant", message: { content: [{ type: "tool_use", name: "Edit", input: { file_path: "src/x.ts" } }] } }) }),
    ev({ type: "agent.tool", taskId: "a", at: at(3), seq: 1, phase: "started", tool: "Edit", summary: "src/x.ts", callId: "c1" }),
    ev({ type: "task.output", taskId: "b", at: at(3), stream: "stdout", data: "compiling\nlinking bin/x\n" }),
    ev({ type: "task.output", taskId: "a", at: at(4), stream: "stdout", data: claudeLine({ type: "user", message: { content: [{ type: "tool_result", tool_use_id: "c1" }] } }) }),
    ev({ type: "agent.tool", taskId: "a", at: at(4), seq: 2, phase: "started", tool: "Bash", summary: "npm test", callId: "c2" }),
    ev({ type: "task.output", taskId: "a", at: at(5), stream: "stdout", data: claudeLine({ type: "user", message: { content: [{ type: "tool_result", tool_use_id: "c2" }] } }) }),
    ev({ type: "task.failed", taskId: "a", at: at(6), workerId: "w1", error: "exit 1", willRetry: true, startedAt: at(1), finishedAt: at(6) }),
    ev({ type: "task.queued", taskId: "a", attempt: 2, at: at(7) }),
    ev({ type: "task.started", taskId: "a", attempt: 2, at: at(8), workerId: "w2", agent: "aider" }),
    // A late event of attempt 1: not what the task does now.
    ev({ type: "agent.tool", taskId: "a", at: at(8), seq: 3, phase: "completed", tool: "Bash", summary: "npm test", callId: "c2", ok: false }),
    ev({ type: "agent.tool", taskId: "a", attempt: 2, at: at(9), seq: 0, phase: "completed", tool: "edit", summary: "src/y.ts", ok: true }),
    // aider's stdout is text the messages carry too: the agent events say what it does.
    ev({ type: "task.output", taskId: "a", attempt: 2, at: at(9), stream: "stdout", data: "Applied edit to src/y.ts\n" }),
  ];
}

/** The activity of each task after each event, as a person would see it. */
function activities(fold: RunFold, events: AdoEvent[], from = 0): (string | undefined)[][] {
  return events.slice(from).map((e, i) => {
    fold.apply(e, from + i + 1);
    return fold.ids().map((id) => fold.task(id)!.activity);
  });
}

describe("run fold activity", () => {
  it("fold activity - an agent CLI's activity is its tool calls and messages as text, never its raw JSON stream", () => {
    const seen = activities(new RunFold(), history());
    const texts = seen.flat().filter((s): s is string => s !== undefined);
    for (const s of texts) expect(s.trimStart().startsWith("{"), `raw JSON shown as activity: ${s}`).toBe(false);
    // After each step: [a, b].
    expect(seen[4]).toEqual(["I will fix the parser. Then run the tests.", undefined]);
    expect(seen[6]![0]).toBe("Edit: src/x.ts");
    expect(seen[7]).toEqual(["Edit: src/x.ts", "linking bin/x"]);
    expect(seen[9]![0]).toBe("Bash: npm test");
    expect(seen[10]![0]).toBe("Bash: npm test");
    expect(seen[14]![0]).toBe(seen[13]![0]); // attempt 1's late completion changes nothing
    expect(seen[15]![0]).toBe("edit: src/y.ts");
    expect(seen[16]![0]).toBe("edit: src/y.ts");
  });

  it("fold activity - a fold loaded from a snapshot taken anywhere shows what a full replay shows, raw JSON never", () => {
    const events = history();
    const full = activities(new RunFold(), events);
    for (let cut = 1; cut < events.length; cut++) {
      const head = new RunFold();
      events.slice(0, cut).forEach((e, i) => head.apply(e, i + 1));
      // Through the wire codec, as a reader gets it.
      const stored = decode(SCHEMAS.RunSnapshot, encodeValue(SCHEMAS.RunSnapshot, snapshotOf(head, new Date(T0))));
      const resumed = activities(foldOf(stored), events, cut);
      expect(resumed, `snapshot after event ${cut}`).toEqual(full.slice(cut));
    }
  });

  it("fold activity - a fold that never saw the attempt start still shows no JSON line as activity", () => {
    const fold = new RunFold();
    fold.apply(history()[0]!, 1);
    // As if seen from the middle of claude's attempt: no task.started, no agent event yet.
    fold.apply(ev({ type: "task.output", taskId: "a", at: at(2), stream: "stdout", data: claudeLine({ type: "assistant", message: { content: [] } }) }), 2);
    expect(fold.task("a")!.activity).toBeUndefined();
    fold.apply(ev({ type: "agent.tool", taskId: "a", at: at(3), seq: 1, phase: "started", tool: "Bash", summary: "npm test" }), 3);
    expect(fold.task("a")!.activity).toBe("Bash: npm test");
  });

  it("fold activity - the terminal's view shows the fold's text (a view seeded from a snapshot too)", () => {
    const events = history();
    const live = new RunProgress();
    for (const e of events.slice(0, 11)) live.apply(e);
    expect(live.task("a")!.activity).toBe("Bash: npm test");
    const head = new RunFold();
    events.slice(0, 11).forEach((e, i) => head.apply(e, i + 1));
    const seeded = new RunProgress(foldOf(snapshotOf(head)));
    expect(seeded.task("a")!.activity).toBe("Bash: npm test");
    expect(seeded.task("b")!.activity).toBe("linking bin/x");
  });
});
