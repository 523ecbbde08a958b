import { describe, expect, it } from "vitest";
import { BranchNotFoundError } from "../../src/git/errors.js";
import { mergeIntoBranch } from "../../src/git/merge.js";
import { createBranchIfAbsent, isAncestor, readBranch } from "../../src/git/repo.js";
import { commitOnBranch, sh, show, tempRepo, withoutGlobalGitConfig } from "../helpers/repo.js";

const TARGET = "ado/r1/integration";

/** A repository with an integration branch at the first commit. */
async function setup(files?: Record<string, string>) {
  const fixture = await tempRepo(files);
  await createBranchIfAbsent(fixture.repo, TARGET, fixture.root);
  return fixture;
}

describe("mergeIntoBranch", () => {
  it("merge - two branches editing different files merge cleanly with both contents", async () => {
    const { repo, root } = await setup({ "a.txt": "a\n", "b.txt": "b\n" });
    const a = commitOnBranch(repo, "ado/r1/a", root, { "a.txt": "a from task a\n" });
    const b = commitOnBranch(repo, "ado/r1/b", root, { "b.txt": "b from task b\n" });

    expect(await mergeIntoBranch(repo, { target: TARGET, source: "ado/r1/a", message: "merge a" })).toEqual({
      kind: "fast-forward",
      commit: a,
    });
    const outcome = await mergeIntoBranch(repo, { target: TARGET, source: b, message: "merge b" });
    if (outcome.kind !== "merged") throw new Error(`expected a merge, got ${outcome.kind}`);
    expect(await readBranch(repo, TARGET)).toBe(outcome.commit);
    expect(sh(repo, "rev-parse", `${outcome.commit}^{tree}`)).toBe(outcome.tree);
    expect(sh(repo, "log", "-1", "--format=%P|%s", outcome.commit)).toBe(`${a} ${b}|merge b`);
    expect(show(repo, TARGET, "a.txt")).toBe("a from task a\n");
    expect(show(repo, TARGET, "b.txt")).toBe("b from task b\n");
  });

  it("merge - fast-forwards when the target is an ancestor of the source", async () => {
    const { repo, root } = await setup();
    const child = commitOnBranch(repo, "ado/r1/t", root, { "t.txt": "t\n" });
    expect(await mergeIntoBranch(repo, { target: TARGET, source: child, message: "m" })).toEqual({
      kind: "fast-forward",
      commit: child,
    });
    expect(await readBranch(repo, TARGET)).toBe(child);
  });

  it("merge - is up to date when the source is already in the target", async () => {
    const { repo, root } = await setup();
    const child = commitOnBranch(repo, "ado/r1/t", root, { "t.txt": "t\n" });
    await mergeIntoBranch(repo, { target: TARGET, source: child, message: "m" });
    expect(await mergeIntoBranch(repo, { target: TARGET, source: root, message: "m" })).toEqual({
      kind: "up-to-date",
      commit: child,
    });
    expect(await mergeIntoBranch(repo, { target: TARGET, source: child, message: "m" })).toEqual({
      kind: "up-to-date",
      commit: child,
    });
  });

  it("merge - the same line edited on two branches is a conflict naming the file, target unchanged", async () => {
    const { repo, root } = await setup({ "shared.txt": "one\ntwo\nthree\n", "other.txt": "o\n" });
    const a = commitOnBranch(repo, "ado/r1/a", root, { "shared.txt": "one\nTWO from a\nthree\n", "other.txt": "o2\n" });
    const b = commitOnBranch(repo, "ado/r1/b", root, { "shared.txt": "one\nTWO from b\nthree\n" });
    await mergeIntoBranch(repo, { target: TARGET, source: a, message: "merge a" });

    const outcome = await mergeIntoBranch(repo, { target: TARGET, source: b, message: "merge b" });
    expect(outcome.kind).toBe("conflict");
    if (outcome.kind !== "conflict") return;
    expect(outcome.files).toEqual(["shared.txt"]);
    expect(outcome.messages).toContain("CONFLICT (content): Merge conflict in shared.txt");
    expect(await readBranch(repo, TARGET)).toBe(a);
  });

  it("merge - concurrent merges of five branches into one target all land", { timeout: 60_000 }, async () => {
    const { repo, root } = await setup();
    const sources = Array.from({ length: 5 }, (_, i) => commitOnBranch(repo, `ado/r1/t${i}`, root, { [`file${i}.txt`]: `task ${i}\n` }));

    const outcomes = await Promise.all(
      sources.map((source, i) => mergeIntoBranch(repo, { target: TARGET, source, message: `merge t${i}` })),
    );
    expect(outcomes.every((o) => o.kind === "merged" || o.kind === "fast-forward")).toBe(true);
    const head = await readBranch(repo, TARGET);
    for (const [i, source] of sources.entries()) {
      expect(await isAncestor(repo, source, head ?? "")).toBe(true);
      expect(show(repo, TARGET, `file${i}.txt`)).toBe(`task ${i}\n`);
    }
    // Every merge moved the branch once: none overwrote another.
    expect(sh(repo, "reflog", "show", "--format=%gs", `refs/heads/${TARGET}`).split("\n")).toEqual([
      ...Array<string>(5).fill("ado: merge"),
      "ado: create branch",
    ]);
  });

  it("merge - merge commits work with no git identity configured, committing as ado", async () => {
    const { repo, root } = await setup();
    const a = commitOnBranch(repo, "ado/r1/a", root, { "a.txt": "a\n" });
    const b = commitOnBranch(repo, "ado/r1/b", root, { "b.txt": "b\n" });
    await mergeIntoBranch(repo, { target: TARGET, source: a, message: "merge a" });
    const outcome = await withoutGlobalGitConfig(() => mergeIntoBranch(repo, { target: TARGET, source: b, message: "merge b" }));
    expect(outcome.kind).toBe("merged");
    expect(sh(repo, "log", "-1", "--format=%an <%ae>", TARGET)).toBe("ado <ado@localhost>");
  });

  it("merge - rejects a target branch that does not exist", async () => {
    const { repo, root } = await tempRepo();
    await expect(mergeIntoBranch(repo, { target: "ado/missing", source: root, message: "m" })).rejects.toBeInstanceOf(
      BranchNotFoundError,
    );
  });
});
