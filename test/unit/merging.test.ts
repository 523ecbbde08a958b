import { describe, expect, it } from "vitest";
import { PROMPT_IN_MESSAGE_BYTES } from "../../src/runtime/commit-message.js";
import { integrateOptionsFor, mergeMessage, type TaskMerge } from "../../src/runtime/merging.js";

const merge: TaskMerge = {
  runId: "r1",
  taskId: "docs",
  repo: "/repo",
  integrationBranch: "ado/r1/integration",
  branch: "ado/r1/docs",
  commit: "a".repeat(40),
  baseCommit: "b".repeat(40),
  settings: { mode: "squash", rules: [] },
  prompt: "Document the merge coordinator\n\nDescribe batches and retries.",
};

describe("mergeMessage", () => {
  it("names the task and carries its prompt as the body", () => {
    expect(mergeMessage(merge)).toBe(
      "ado: merge task 'docs' (ado/r1/docs) into ado/r1/integration\n\nDocument the merge coordinator\n\nDescribe batches and retries.",
    );
  });

  it("is the subject alone when the task has no prompt", () => {
    expect(mergeMessage({ ...merge, prompt: "" })).toBe("ado: merge task 'docs' (ado/r1/docs) into ado/r1/integration");
    expect(mergeMessage({ ...merge, prompt: undefined })).toBe("ado: merge task 'docs' (ado/r1/docs) into ado/r1/integration");
  });

  it("cuts a long prompt on a character boundary and says so", () => {
    const prompt = "é".repeat(PROMPT_IN_MESSAGE_BYTES); // two bytes each: 16 KiB
    const message = mergeMessage({ ...merge, prompt });
    const body = message.split("\n\n")[1]!;
    expect(body).toBe("é".repeat(PROMPT_IN_MESSAGE_BYTES / 2));
    expect(message).toMatch(/\[prompt cut at 8 KiB of 16 KiB\]$/);
  });

  it("is the message of every merge built from a TaskMerge (a resolver's, a person's)", () => {
    expect(integrateOptionsFor(merge, "/scratch").message).toBe(mergeMessage(merge));
  });
});
