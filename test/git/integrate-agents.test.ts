/**
 * The parts of integrate that run commands: regenerate rules, the resolver agent (a
 * fake one: a shell script) and validation, each in a scratch worktree that must be
 * gone afterwards, with no process left behind.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { IntegrationAbortedError } from "../../src/git/integrate-errors.js";
import { integrate } from "../../src/git/integrate.js";
import { show, sh, tempDir } from "../helpers/repo.js";
import { TARGET, commitChanges, stillAliveAfter, head, integrationRepo, parents } from "./integrate-fixture.js";

const SHARED = "one\ntwo\nthree\n";

async function conflictingTasks() {
  const fx = await integrationRepo({ "shared.txt": SHARED, "notes.txt": "n\n" });
  const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "shared.txt": "one\nTWO from a\nthree\n" }, "task a");
  const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "shared.txt": "one\nTWO from b\nthree\n", "notes.txt": "n from b\n" }, "task b");
  await integrate(fx.opts(a));
  return { ...fx, a, b };
}

describe("integrate - resolver agent", () => {
  it("resolver - a fake agent resolves the conflict in a scratch worktree; it gets the sides and the context", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    const seen = path.join(await tempDir(), "seen");
    const outcome = await integrate(
      opts(b, {
        resolver: {
          // It checks it is in a merge in progress with markers, keeps a copy of what it was given, and resolves.
          command: `git rev-parse -q --verify MERGE_HEAD >/dev/null && grep -q '^<<<<<<<' shared.txt && cp "$ADO_CONFLICTS_FILE" ${seen}.json && pwd > ${seen}.cwd && printf 'one\\nTWO from a and b\\nthree\\n' > shared.txt && echo resolved`,
          timeoutMs: 30_000,
          context: { prompts: { a: "do a", b: "do b" } },
        },
      }),
    );
    if (outcome.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(outcome)}`);
    expect(outcome).toMatchObject({ how: "merged", resolved: [{ path: "shared.txt", by: "agent" }] });
    expect(parents(repo, outcome.commit)).toEqual([a, b]);
    expect(show(repo, TARGET, "shared.txt")).toBe("one\nTWO from a and b\nthree\n");
    expect(show(repo, TARGET, "notes.txt")).toBe("n from b\n");

    const given = JSON.parse(await readFile(`${seen}.json`, "utf8"));
    expect(given).toEqual({
      conflicts: [{ path: "shared.txt", kind: "content", base: SHARED, ours: "one\nTWO from a\nthree\n", theirs: "one\nTWO from b\nthree\n" }],
      context: { prompts: { a: "do a", b: "do b" } },
    });
    // It ran outside the user's checkout, in a worktree that is gone now.
    const cwd = (await readFile(`${seen}.cwd`, "utf8")).trim();
    expect(cwd.startsWith(path.join(path.dirname(repo), "ado-scratch", "scratch"))).toBe(true);
    await expectUntouched();
  });

  it("resolver - after a union rule: the agent gets only what the rule left, and the rule's resolution stays", async () => {
    const fx = await integrationRepo({ "shared.txt": SHARED, "CHANGELOG.md": "- initial\n" });
    const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "shared.txt": "one\nTWO from a\nthree\n", "CHANGELOG.md": "- initial\n- a\n" });
    const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "shared.txt": "one\nTWO from b\nthree\n", "CHANGELOG.md": "- initial\n- b\n" });
    await integrate(fx.opts(a));
    const seen = path.join(await tempDir(), "seen.json");
    const outcome = await integrate(
      fx.opts(b, {
        rules: [{ paths: ["CHANGELOG.md"], strategy: "union" }],
        resolver: { command: `cp "$ADO_CONFLICTS_FILE" ${seen} && printf 'one\\nTWO by the agent\\nthree\\n' > shared.txt`, timeoutMs: 30_000 },
      }),
    );
    expect(outcome).toMatchObject({ kind: "merged", resolved: [{ path: "CHANGELOG.md", by: "union" }, { path: "shared.txt", by: "agent" }] });
    expect(JSON.parse(await readFile(seen, "utf8")).conflicts.map((c: { path: string }) => c.path)).toEqual(["shared.txt"]);
    expect(show(fx.repo, TARGET, "CHANGELOG.md")).toBe("- initial\n- a\n- b\n");
    expect(show(fx.repo, TARGET, "shared.txt")).toBe("one\nTWO by the agent\nthree\n");
    await fx.expectUntouched();
  });

  it("resolver - a result that leaves conflict markers is rejected with its output; the target does not move", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    const outputs: string[] = [];
    const outcome = await integrate(
      opts(b, {
        resolver: { command: "echo 'I looked at it'; sed -i 's/TWO from b/TWO!/' shared.txt", timeoutMs: 30_000 },
        onOutput: (_stream, chunk, phase) => outputs.push(`${phase}:${chunk}`),
      }),
    );
    if (outcome.kind !== "conflict") throw new Error(`expected a conflict, got ${outcome.kind}`);
    expect(outcome.files).toEqual(["shared.txt"]);
    expect(outcome.reason).toContain("shared.txt still has conflict markers");
    expect(outcome.resolverOutput).toContain("I looked at it");
    expect(outputs).toContain("resolver:I looked at it\n");
    expect(head(repo)).toBe(a);
    await expectUntouched();
  });

  it("resolver - one that deletes a file both sides have, or fails, is rejected", async () => {
    const { b, opts } = await conflictingTasks();
    const deleted = await integrate(opts(b, { resolver: { command: "rm shared.txt", timeoutMs: 30_000 } }));
    expect(deleted).toMatchObject({ kind: "conflict", reason: expect.stringContaining("shared.txt was deleted, but both sides have it") });
    const failed = await integrate(opts(b, { resolver: { command: "echo nope >&2; exit 3", timeoutMs: 30_000 } }));
    expect(failed).toMatchObject({ kind: "conflict", reason: expect.stringContaining("exited with code 3"), resolverOutput: "nope\n" });
    const aborted = await integrate(opts(b, { resolver: { command: "git merge --abort", timeoutMs: 30_000 } }));
    expect(aborted).toMatchObject({ kind: "conflict", reason: expect.stringContaining("abandoned the merge") });
  });

  it("resolver - one that hangs is killed at its timeout with everything it started", { timeout: 30_000 }, async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    const pids = path.join(await tempDir(), "pids");
    const started = Date.now();
    const outcome = await integrate(
      opts(b, {
        // A background child that ignores SIGTERM, and the shell waiting for it.
        resolver: { command: `(trap '' TERM; sleep 300) & echo "$$ $!" > ${pids}; wait`, timeoutMs: 500 },
      }),
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(outcome).toMatchObject({ kind: "conflict", reason: expect.stringContaining("the resolver timed out and was killed") });
    const [shell, child] = (await readFile(pids, "utf8")).trim().split(" ").map(Number);
    expect(await stillAliveAfter(shell!)).toBe(false);
    expect(await stillAliveAfter(child!)).toBe(false);
    expect(head(repo)).toBe(a);
    await expectUntouched();
  });

  it("abort - an abort while the resolver runs kills it, removes the worktree and throws", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    const controller = new AbortController();
    const run = integrate(
      opts(b, {
        resolver: { command: "echo started; sleep 60", timeoutMs: 60_000 },
        signal: controller.signal,
        onOutput: (_s, chunk) => chunk.includes("started") && controller.abort(),
      }),
    );
    await expect(run).rejects.toBeInstanceOf(IntegrationAbortedError);
    expect(head(repo)).toBe(a);
    await expectUntouched();
  });
});

describe("integrate - regenerate rules", () => {
  it("regenerate - a lockfile in conflict is rebuilt by its command from the merged inputs", async () => {
    const deps = "alpha\nbeta\ngamma\ndelta\nepsilon\n";
    const lock = (d: string) => `# lock of ${d.split("\n").filter(Boolean).length} deps: ${d.split("\n").filter(Boolean).sort().join(",")}\n`;
    const fx = await integrationRepo({ "deps.txt": deps, "deps.lock": lock(deps) });
    const depsA = deps.replace("alpha", "alpha2");
    const depsB = deps.replace("epsilon", "epsilon2");
    const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "deps.txt": depsA, "deps.lock": lock(depsA) });
    const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "deps.txt": depsB, "deps.lock": lock(depsB) });
    await integrate(fx.opts(a));
    const command = `test "$ADO_REGENERATE_PATHS" = deps.lock && n=$(grep -c . deps.txt) && echo "# lock of $n deps: $(sort deps.txt | paste -sd, -)" > deps.lock`;

    const outcome = await integrate(fx.opts(b, { mode: "squash", rules: [{ paths: ["*.lock"], strategy: "regenerate", command }] }));
    expect(outcome).toMatchObject({ kind: "merged", how: "squashed", resolved: [{ path: "deps.lock", by: "regenerate" }] });
    const merged = "alpha2\nbeta\ngamma\ndelta\nepsilon2\n";
    expect(show(fx.repo, TARGET, "deps.txt")).toBe(merged);
    expect(show(fx.repo, TARGET, "deps.lock")).toBe(lock(merged));
    await fx.expectUntouched();
  });

  it("regenerate - a failing command leaves the path to the resolver, or a conflict without one", async () => {
    const { b, opts, expectUntouched } = await conflictingTasks();
    const rules = [{ paths: ["shared.txt"], strategy: "regenerate" as const, command: "echo cannot; exit 1" }];
    const outcome = await integrate(opts(b, { rules }));
    expect(outcome).toMatchObject({ kind: "conflict", files: ["shared.txt"], reason: expect.stringContaining("exited with code 1") });
    const rescued = await integrate(
      opts(b, { rules, resolver: { command: "printf 'one\\nboth\\nthree\\n' > shared.txt", timeoutMs: 30_000 } }),
    );
    expect(rescued).toMatchObject({ kind: "merged", resolved: [{ path: "shared.txt", by: "agent" }] });
    await expectUntouched();
  });
});

describe("integrate - validation", () => {
  it("validation - a failing validation backs the merge out: the target stays and the output is returned", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    const outcome = await integrate(
      opts(b, {
        rules: [{ paths: ["shared.txt"], strategy: "theirs" }],
        validate: { command: `echo "checking $ADO_CANDIDATE"; grep -q 'TWO from a' shared.txt || { echo 'test failed: a is gone' >&2; exit 7; }`, timeoutMs: 30_000 },
      }),
    );
    if (outcome.kind !== "validation_failed") throw new Error(`expected validation_failed, got ${JSON.stringify(outcome)}`);
    expect(outcome.exitCode).toBe(7);
    expect(outcome.output).toContain(`checking ${outcome.candidate}`);
    expect(outcome.output).toContain("test failed: a is gone");
    expect(parents(repo, outcome.candidate)).toEqual([a, b]);
    expect(head(repo)).toBe(a);
    await expectUntouched();
  });

  it("validation - a passing validation lets the merge land; a hanging one times out and fails", { timeout: 30_000 }, async () => {
    const { repo, b, opts, expectUntouched } = await conflictingTasks();
    const timedOut = await integrate(opts(b, { rules: [{ paths: ["**"], strategy: "ours" }], validate: { command: "sleep 30", timeoutMs: 300 } }));
    expect(timedOut).toMatchObject({ kind: "validation_failed", exitCode: null, output: expect.stringContaining("timed out after 300 ms") });
    const outcome = await integrate(
      opts(b, { rules: [{ paths: ["**"], strategy: "ours" }], validate: { command: "test \"$(cat notes.txt)\" = 'n from b'", timeoutMs: 30_000 } }),
    );
    expect(outcome).toMatchObject({ kind: "merged", resolved: [{ path: "shared.txt", by: "ours" }] });
    expect(show(repo, TARGET, "shared.txt")).toBe("one\nTWO from a\nthree\n");
    expect(sh(repo, "rev-parse", TARGET)).toBe(outcome.kind === "merged" ? outcome.commit : "");
    await expectUntouched();
  });

  it("validation - a fast-forward is validated too, on the task's own commit", async () => {
    const fx = await integrationRepo({ "a.txt": "a\n" });
    const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "a.txt": "broken\n" });
    const outcome = await integrate(fx.opts(a, { validate: { command: "grep -qv broken a.txt", timeoutMs: 30_000 } }));
    expect(outcome).toMatchObject({ kind: "validation_failed", candidate: a, exitCode: 1 });
    expect(head(fx.repo)).toBe(fx.root);
    await fx.expectUntouched();
  });
});

describe("integrate - scratch worktrees", () => {
  it("scratch - one left behind by a process that died is swept by the next integration", async () => {
    const { repo, root, b, opts, scratchDir, expectUntouched } = await conflictingTasks();
    // A pid that existed and is gone now.
    const dead = spawnSync("true").pid;
    const host = hostname().replace(/[^A-Za-z0-9.]/g, "_");
    const stale = path.join(scratchDir, "scratch", `${host}-${dead}-1-abcdef`);
    const live = path.join(scratchDir, "scratch", `${host}-${process.ppid}-1-abcdef`);
    for (const dir of [stale, live]) execFileSync("git", ["worktree", "add", "-q", "--detach", dir, root], { cwd: repo });
    await writeFile(path.join(stale, "half-done.txt"), "left by a crash\n");

    await integrate(opts(b, { rules: [{ paths: ["**"], strategy: "theirs" }], validate: { command: "true", timeoutMs: 30_000 } }));
    const listed = sh(repo, "worktree", "list", "--porcelain");
    expect(listed).not.toContain(stale);
    // A live process's scratch worktree is not touched.
    expect(listed).toContain(live);
    execFileSync("git", ["worktree", "remove", "--force", live], { cwd: repo });
    await expectUntouched();
  });
});

