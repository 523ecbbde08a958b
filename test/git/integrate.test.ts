import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { BranchNotFoundError } from "../../src/git/errors.js";
import { InvalidIntegrateOptionsError } from "../../src/git/integrate-errors.js";
import { integrate, integrateChoosing } from "../../src/git/integrate.js";
import { createBranchIfAbsent } from "../../src/git/repo.js";
import { sh, show, tempDir } from "../helpers/repo.js";
import { TARGET, commitChanges, head, integrationRepo, parents } from "./integrate-fixture.js";

const SHARED = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n";

/** Two tasks from the root: a edits a.txt, b edits b.txt. */
async function twoTasks() {
  const fx = await integrationRepo({ "a.txt": "a\n", "b.txt": "b\n", "shared.txt": SHARED });
  const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "a.txt": "a from task a\n" }, "task a");
  const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "b.txt": "b from task b\n" }, "task b");
  return { ...fx, a, b };
}

/** Two tasks editing the same line of shared.txt (and a's other file). */
async function conflictingTasks(files: Record<string, string> = {}) {
  const fx = await integrationRepo({ "shared.txt": SHARED, "CHANGELOG.md": "# Changes\n- initial\n", ...files });
  const a = commitChanges(fx.repo, "ado/r1/a", fx.root, {
    "shared.txt": SHARED.replace("two", "TWO from a"),
    "CHANGELOG.md": "# Changes\n- initial\n- task a\n",
  });
  const b = commitChanges(fx.repo, "ado/r1/b", fx.root, {
    "shared.txt": SHARED.replace("two", "TWO from b").replace("six", "SIX from b"),
    "CHANGELOG.md": "# Changes\n- initial\n- task b\n",
  });
  return { ...fx, a, b };
}

describe("integrate - modes on a clean merge", () => {
  it("merge - two tasks editing different files: a fast-forward, then a merge commit with two parents", async () => {
    const { repo, a, b, opts, expectUntouched } = await twoTasks();
    expect(await integrate(opts(a))).toEqual({ kind: "merged", commit: a, how: "fast-forward", resolved: [] });
    const outcome = await integrate(opts(b, { message: "merge task b" }));
    expect(outcome).toMatchObject({ kind: "merged", how: "merged", resolved: [] });
    if (outcome.kind !== "merged") return;
    expect(head(repo)).toBe(outcome.commit);
    expect(parents(repo, outcome.commit)).toEqual([a, b]);
    expect(sh(repo, "log", "-1", "--format=%B", outcome.commit)).toBe("merge task b");
    expect(show(repo, TARGET, "a.txt")).toBe("a from task a\n");
    expect(show(repo, TARGET, "b.txt")).toBe("b from task b\n");
    // Merging the same task again changes nothing.
    expect(await integrate(opts(b))).toEqual({ kind: "merged", commit: outcome.commit, how: "up-to-date", resolved: [] });
    await expectUntouched();
  });

  it("squash - each task lands as one commit with one parent; a second squash of it is up to date", async () => {
    const { repo, root, a, b, opts, expectUntouched } = await twoTasks();
    const first = await integrate(opts(a, { mode: "squash", message: "squash a" }));
    expect(first).toMatchObject({ kind: "merged", how: "squashed" });
    if (first.kind !== "merged") return;
    expect(parents(repo, first.commit)).toEqual([root]);
    const second = await integrate(opts(b, { mode: "squash", message: "squash b" }));
    if (second.kind !== "merged") throw new Error(`expected merged, got ${second.kind}`);
    expect(second.how).toBe("squashed");
    expect(parents(repo, second.commit)).toEqual([first.commit]);
    expect(sh(repo, "log", "-1", "--format=%s", second.commit)).toBe("squash b");
    expect(show(repo, TARGET, "a.txt")).toBe("a from task a\n");
    expect(show(repo, TARGET, "b.txt")).toBe("b from task b\n");
    // Neither task's own commit is in the target's history.
    expect(sh(repo, "rev-list", TARGET)).not.toContain(a);
    expect(await integrate(opts(a, { mode: "squash" }))).toEqual({ kind: "merged", commit: second.commit, how: "up-to-date", resolved: [] });
    await expectUntouched();
  });

  it("linear - replays each of the task's commits onto the moved target, keeping authors, dates and messages", async () => {
    const { repo, root, a, opts, expectUntouched } = await twoTasks();
    const ada = { name: "Ada", email: "ada@example.com", date: "1700000000 +0100" };
    const bob = { name: "Bob", email: "bob@example.com", date: "1700000100 -0500" };
    const b1 = commitChanges(repo, "ado/r1/b", root, { "b.txt": "b1\n" }, "b: first\n\nwith a body\n", ada);
    const b2 = commitChanges(repo, "ado/r1/b", b1, { "b2.txt": "b2\n" }, "b: second\n", bob);
    const b3 = commitChanges(repo, "ado/r1/b", b2, { "b.txt": "b3\n" }, "b: third\n", ada);
    expect(await integrate(opts(a, { mode: "linear" }))).toMatchObject({ kind: "merged", how: "fast-forward", commit: a });

    const outcome = await integrate(opts(b3, { mode: "linear" }));
    if (outcome.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(outcome)}`);
    expect(outcome.how).toBe("rebased");
    const log = sh(repo, "log", "--format=%P|%an|%ae|%ad|%s|%b", "--date=raw", `${a}..${TARGET}`).split("\n").filter((l) => l.includes("|"));
    expect(log).toHaveLength(3);
    const replayed = sh(repo, "rev-list", "--reverse", `${a}..${TARGET}`).split("\n");
    // One parent each, in a line on top of the old head, none of them the task's own commits.
    expect(replayed.map((c) => parents(repo, c))).toEqual([[a], [replayed[0]], [replayed[1]]]);
    expect(replayed).not.toContain(b1);
    expect(sh(repo, "log", "--reverse", "--format=%an <%ae> %ad %s", "--date=raw", `${a}..${TARGET}`).split("\n")).toEqual([
      "Ada <ada@example.com> 1700000000 +0100 b: first",
      "Bob <bob@example.com> 1700000100 -0500 b: second",
      "Ada <ada@example.com> 1700000000 +0100 b: third",
    ]);
    expect(sh(repo, "log", "-1", "--format=%B", replayed[0]!)).toBe("b: first\n\nwith a body");
    expect(show(repo, TARGET, "a.txt")).toBe("a from task a\n");
    expect(show(repo, TARGET, "b.txt")).toBe("b3\n");
    expect(show(repo, TARGET, "b2.txt")).toBe("b2\n");
    await expectUntouched();
  });

  it("linear - a task started from the integration branch replays only its own commits", async () => {
    const { repo, root, a, b, opts } = await twoTasks();
    await integrate(opts(a, { mode: "linear" }));
    // c depends on a: it starts from the integration head (a), while b lands first.
    const c = commitChanges(repo, "ado/r1/c", a, { "c.txt": "c\n" }, "task c");
    const landed = await integrate(opts(b, { mode: "linear" }));
    expect(landed).toMatchObject({ kind: "merged", how: "rebased" });
    const before = head(repo);
    const outcome = await integrate(opts(c, { mode: "linear", base: root }));
    expect(outcome).toMatchObject({ kind: "merged", how: "rebased" });
    expect(sh(repo, "rev-list", "--count", `${before}..${TARGET}`)).toBe("1");
    expect(sh(repo, "log", "-1", "--format=%s", TARGET)).toBe("task c");
  });

  it("concurrency - integrations racing on one target all land, each recomputed after a lost compare-and-swap", { timeout: 60_000 }, async () => {
    for (const mode of ["merge", "linear"] as const) {
      const { repo, root, opts } = await integrationRepo({ "r.txt": "r\n" });
      const tasks = Array.from({ length: 5 }, (_, i) => commitChanges(repo, `ado/r1/t${i}`, root, { [`t${i}.txt`]: `task ${i}\n` }));
      const outcomes = await Promise.all(tasks.map((t) => integrate(opts(t, { mode }))));
      expect(outcomes.every((o) => o.kind === "merged" && o.how !== "up-to-date")).toBe(true);
      for (const i of tasks.keys()) expect(show(repo, TARGET, `t${i}.txt`)).toBe(`task ${i}\n`);
      // Every integration moved the branch exactly once.
      expect(sh(repo, "reflog", "show", "--format=%gs", `refs/heads/${TARGET}`).split("\n")).toHaveLength(6);
    }
  });

  it("merge - works in a bare clone (the coordinator's own clone in remote mode)", async () => {
    const { repo, a, b, root } = await twoTasks();
    const bare = path.join(await tempDir(), "coordinator.git");
    execFileSync("git", ["clone", "-q", "--bare", repo, bare]);
    await createBranchIfAbsent(bare, "ado/r2/integration", root);
    const scratchDir = path.join(path.dirname(bare), "scratch");
    const base = { repo: bare, target: "ado/r2/integration", base: root, mode: "merge" as const, message: "m", scratchDir };
    await integrate({ ...base, source: a });
    const outcome = await integrate({ ...base, source: b, validate: { command: "test -f a.txt && test -f b.txt", timeoutMs: 30_000 } });
    expect(outcome).toMatchObject({ kind: "merged", how: "merged" });
    expect(sh(bare, "worktree", "list", "--porcelain").match(/^worktree /gm)).toHaveLength(1);
  });
});

describe("integrate - conflicts and per-path rules", () => {
  it("conflict - the same line in two tasks is a conflict with every side's content; the target does not move", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    await integrate(opts(a));
    const outcome = await integrate(opts(b));
    if (outcome.kind !== "conflict") throw new Error(`expected a conflict, got ${outcome.kind}`);
    expect(outcome.files.sort()).toEqual(["CHANGELOG.md", "shared.txt"]);
    const shared = outcome.conflicts.find((c) => c.path === "shared.txt");
    expect(shared).toEqual({
      path: "shared.txt",
      kind: "content",
      base: SHARED,
      ours: SHARED.replace("two", "TWO from a"),
      theirs: SHARED.replace("two", "TWO from b").replace("six", "SIX from b"),
    });
    expect(outcome.messages).toContain("CONFLICT (content): Merge conflict in shared.txt");
    expect(outcome.reason).toContain("no resolver is configured");
    expect(head(repo)).toBe(a);
    await expectUntouched();
  });

  it("rules - union for the changelog and theirs for the rest resolve it without a worktree", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    await integrate(opts(a));
    const outcome = await integrate(
      opts(b, {
        rules: [
          { paths: ["CHANGELOG.md"], strategy: "union" },
          { paths: ["*.txt"], strategy: "theirs" },
        ],
      }),
    );
    if (outcome.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(outcome)}`);
    expect(outcome.resolved.sort((x, y) => x.path.localeCompare(y.path))).toEqual([
      { path: "CHANGELOG.md", by: "union" },
      { path: "shared.txt", by: "theirs" },
    ]);
    expect(parents(repo, outcome.commit)).toEqual([a, b]);
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task a\n- task b\n");
    expect(show(repo, TARGET, "shared.txt")).toBe(SHARED.replace("two", "TWO from b").replace("six", "SIX from b"));
    await expectUntouched();
  });

  it("rules - ours keeps the target's side of the conflicting hunk and the task's other changes", async () => {
    const { a, b, repo, opts } = await conflictingTasks();
    await integrate(opts(a));
    const outcome = await integrate(opts(b, { rules: [{ paths: ["**"], strategy: "ours" }] }));
    expect(outcome).toMatchObject({ kind: "merged", how: "merged" });
    expect(show(repo, TARGET, "shared.txt")).toBe(SHARED.replace("two", "TWO from a").replace("six", "SIX from b"));
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task a\n");
  });

  it("rules - the first matching rule wins, and a path no rule matches keeps it a conflict", async () => {
    const { a, b, repo, opts } = await conflictingTasks();
    await integrate(opts(a));
    const outcome = await integrate(
      opts(b, {
        rules: [
          { paths: ["*.md"], strategy: "union" },
          { paths: ["CHANGELOG.md"], strategy: "ours" },
        ],
      }),
    );
    if (outcome.kind !== "conflict") throw new Error(`expected a conflict, got ${outcome.kind}`);
    expect(outcome.files).toEqual(["shared.txt"]);
    expect(outcome.reason).toContain("no rule matches shared.txt");
    expect(outcome.reason).toContain("CHANGELOG.md (union)");
    expect(head(repo)).toBe(a);
  });

  it("rules - modify/delete: union cannot decide it; theirs takes the deletion, ours the edit", async () => {
    const fx = await integrationRepo({ "gone.txt": "keep me\n", "x.txt": "x\n" });
    const edit = commitChanges(fx.repo, "ado/r1/a", fx.root, { "gone.txt": "edited\n" });
    const del = commitChanges(fx.repo, "ado/r1/b", fx.root, { "gone.txt": null, "x.txt": "x2\n" });
    await integrate(fx.opts(edit));
    const union = await integrate(fx.opts(del, { rules: [{ paths: ["gone.txt"], strategy: "union" }] }));
    if (union.kind !== "conflict") throw new Error(`expected a conflict, got ${union.kind}`);
    expect(union.conflicts).toEqual([{ path: "gone.txt", kind: "modify/delete", base: "keep me\n", ours: "edited\n" }]);
    expect(union.reason).toContain("union cannot decide modify/delete of gone.txt");

    const theirs = await integrate(fx.opts(del, { mode: "squash", rules: [{ paths: ["gone.txt"], strategy: "theirs" }] }));
    expect(theirs).toMatchObject({ kind: "merged", how: "squashed", resolved: [{ path: "gone.txt", by: "theirs" }] });
    expect(sh(fx.repo, "ls-tree", "--name-only", TARGET)).not.toContain("gone.txt");
    expect(show(fx.repo, TARGET, "x.txt")).toBe("x2\n");
    await fx.expectUntouched();
  });

  it("rules - a binary conflict is resolved by ours/theirs and left to a person by union", async () => {
    const fx = await integrationRepo({ "logo.bin": "\0\x01base" });
    const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "logo.bin": Buffer.from("\0\x01from a") });
    const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "logo.bin": Buffer.from("\0\x01from b") });
    await integrate(fx.opts(a));
    const union = await integrate(fx.opts(b, { rules: [{ paths: ["*.bin"], strategy: "union" }] }));
    expect(union).toMatchObject({ kind: "conflict", files: ["logo.bin"], conflicts: [{ path: "logo.bin", kind: "binary" }] });
    const theirs = await integrate(fx.opts(b, { rules: [{ paths: ["*.bin"], strategy: "theirs" }] }));
    expect(theirs).toMatchObject({ kind: "merged", resolved: [{ path: "logo.bin", by: "theirs" }] });
    expect(sh(fx.repo, "rev-parse", `${TARGET}:logo.bin`)).toBe(sh(fx.repo, "rev-parse", `${b}:logo.bin`));
  });

  it("linear - a conflict in a replayed commit is a conflict of the whole integration; a rule resolves it", async () => {
    const { repo, root, a, opts, expectUntouched } = await conflictingTasks();
    await integrate(opts(a, { mode: "linear" }));
    const b1 = commitChanges(repo, "ado/r1/b", root, { "other.txt": "b1\n" }, "b: clean first");
    const b2 = commitChanges(repo, "ado/r1/b", b1, { "CHANGELOG.md": "# Changes\n- initial\n- task b\n" }, "b: changelog");
    const conflict = await integrate(opts(b2, { mode: "linear" }));
    if (conflict.kind !== "conflict") throw new Error(`expected a conflict, got ${conflict.kind}`);
    expect(conflict.files).toEqual(["CHANGELOG.md"]);
    expect(conflict.reason).toContain(`replaying ${b2.slice(0, 12)} (b: changelog)`);
    expect(head(repo)).toBe(a); // the clean first commit did not land alone

    const outcome = await integrate(opts(b2, { mode: "linear", rules: [{ paths: ["CHANGELOG.md"], strategy: "union" }] }));
    expect(outcome).toMatchObject({ kind: "merged", how: "rebased", resolved: [{ path: "CHANGELOG.md", by: "union" }] });
    expect(sh(repo, "log", "--format=%s", `${a}..${TARGET}`)).toBe("b: changelog\nb: clean first");
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task a\n- task b\n");
    await expectUntouched();
  });
});

describe("integrate - human choices and bad input", () => {
  it("integrateChoosing - ours keeps the integration branch's side, theirs the task's", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    await integrate(opts(a));
    const theirs = await integrateChoosing(opts(b), "theirs");
    if (theirs.kind !== "merged") throw new Error(`expected merged, got ${theirs.kind}`);
    expect(theirs.resolved.map((r) => r.by)).toEqual(["theirs", "theirs"]);
    expect(show(repo, TARGET, "shared.txt")).toBe(SHARED.replace("two", "TWO from b").replace("six", "SIX from b"));
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task b\n");

    const c = commitChanges(repo, "ado/r1/c", a, { "shared.txt": SHARED.replace("two", "TWO from c") });
    const ours = await integrateChoosing(opts(c), "ours");
    expect(ours).toMatchObject({ kind: "merged", resolved: [{ path: "shared.txt", by: "ours" }] });
    expect(show(repo, TARGET, "shared.txt")).toBe(SHARED.replace("two", "TWO from b").replace("six", "SIX from b"));
    await expectUntouched();
  });

  // Was: a `**` rule took the chosen side of every path, so the union rule's changelog
  // lost the other task's line. The choice is about the paths left for the person.
  it.each(["theirs", "ours"] as const)("integrateChoosing - %s applies to the paths the rules left; a union rule's changelog keeps both lines", async (choice) => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks();
    await integrate(opts(a));
    const rules = [{ paths: ["CHANGELOG.md"], strategy: "union" as const }];
    // The first merge: the changelog is resolved, shared.txt is left for a person.
    expect(await integrate(opts(b, { rules }))).toMatchObject({ kind: "conflict", files: ["shared.txt"] });
    const outcome = await integrateChoosing(opts(b, { rules }), choice);
    if (outcome.kind !== "merged") throw new Error(`expected merged, got ${outcome.kind}`);
    expect(outcome.resolved).toEqual([
      { path: "CHANGELOG.md", by: "union" },
      { path: "shared.txt", by: choice },
    ]);
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task a\n- task b\n");
    expect(show(repo, TARGET, "shared.txt")).toBe(
      choice === "theirs" ? SHARED.replace("two", "TWO from b").replace("six", "SIX from b") : SHARED.replace("two", "TWO from a").replace("six", "SIX from b"),
    );
    await expectUntouched();
  });

  it("integrateChoosing - a path a rule cannot decide (union of a deletion) and one a regenerate command fails on take the choice", async () => {
    const { repo, a, b, opts, expectUntouched } = await conflictingTasks({ "gone.txt": "base\n" });
    const a2 = commitChanges(repo, "ado/r1/a", a, { "gone.txt": null });
    const b2 = commitChanges(repo, "ado/r1/b", b, { "gone.txt": "edited by b\n" });
    await integrate(opts(a2));
    const rules = [
      { paths: ["CHANGELOG.md", "gone.txt"], strategy: "union" as const },
      { paths: ["shared.txt"], strategy: "regenerate" as const, command: "echo cannot; exit 1" },
    ];
    const outcome = await integrateChoosing(opts(b2, { rules }), "theirs");
    if (outcome.kind !== "merged") throw new Error(`expected merged, got ${outcome.kind}`);
    expect([...outcome.resolved].sort((x, y) => x.path.localeCompare(y.path))).toEqual([
      { path: "CHANGELOG.md", by: "union" },
      { path: "gone.txt", by: "theirs" },
      { path: "shared.txt", by: "theirs" },
    ]);
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("# Changes\n- initial\n- task a\n- task b\n");
    expect(show(repo, TARGET, "gone.txt")).toBe("edited by b\n");
    expect(show(repo, TARGET, "shared.txt")).toBe(SHARED.replace("two", "TWO from b").replace("six", "SIX from b"));
    await expectUntouched();
  });

  it("bad input - a missing target, an unknown source and invalid rules are clear errors", async () => {
    const { a, opts } = await twoTasks();
    await expect(integrate(opts(a, { target: "ado/none" }))).rejects.toBeInstanceOf(BranchNotFoundError);
    await expect(integrate(opts("no-such-rev"))).rejects.toThrow(/does not name a commit/);
    await expect(integrate(opts(a, { rules: [{ paths: ["*.lock"], strategy: "regenerate" }] }))).rejects.toThrow(
      InvalidIntegrateOptionsError,
    );
    await expect(integrate(opts(a, { rules: [{ paths: [], strategy: "union" }] }))).rejects.toThrow(/non-empty list of globs/);
    await expect(integrate(opts(a, { mode: "rebase" as never }))).rejects.toThrow(/use merge, squash or linear/);
    await expect(integrate(opts(a, { validate: { command: "true", timeoutMs: 0 } }))).rejects.toThrow(/positive number/);
    await expect(integrateChoosing(opts(a), "agent" as never)).rejects.toThrow(/use ours or theirs/);
  });
});
