import { describe, expect, it } from "vitest";
import { compileRules } from "../../src/git/conflicts.js";
import { globList, patternProblems } from "../../src/git/globs.js";

describe("globs - one dialect for include lists and merge rules (.gitignore's rule)", () => {
  it("globs - a pattern without '/' matches at any depth; with one, it is anchored at the root", () => {
    const g = globList(["CHANGELOG.md", "docs/*.md", "/.env"]);
    expect(g.matches("CHANGELOG.md")).toBe(true);
    expect(g.matches("packages/web/CHANGELOG.md")).toBe(true);
    expect(g.matches("docs/guide.md")).toBe(true);
    expect(g.matches("site/docs/guide.md")).toBe(false);
    expect(g.matches("docs/deep/guide.md")).toBe(false);
    expect(g.matches(".env")).toBe(true);
    expect(g.matches("packages/.env")).toBe(false);
  });

  it("globs - '*' and '?' stay in a segment and match dotfiles; '**' spans directories; classes work", () => {
    const g = globList(["config/*.json", "src/**/fixture?.[jt]s"]);
    expect(g.matches("config/.local.json")).toBe(true);
    expect(g.matches("config/a/b.json")).toBe(false);
    expect(g.matches("src/fixture1.ts")).toBe(true);
    expect(g.matches("src/a/b/fixture2.js")).toBe(true);
    expect(g.matches("src/a/fixture10.ts")).toBe(false);
  });

  it("globs - '!' excludes what earlier patterns matched; the last match decides; a trailing '/' is for directories", () => {
    const g = globList([".env*", "!.env.test", "build/"]);
    expect(g.matches(".env.local")).toBe(true);
    expect(g.matches(".env.test")).toBe(false);
    expect(g.matches("build", false)).toBe(false);
    expect(g.matches("build", true)).toBe(true);
    // A selected directory selects what is in it.
    expect(g.matches("build/out/app.js")).toBe(true);
  });

  it("globs - mayMatchWithin prunes walks: anchored patterns only below their base, any-depth ones everywhere", () => {
    const anchored = globList(["config/*.local.json"]);
    expect(anchored.mayMatchWithin("config")).toBe(true);
    expect(anchored.mayMatchWithin("src")).toBe(false);
    expect(globList(["secrets/deep/*.key"]).mayMatchWithin("secrets")).toBe(true);
    expect(globList([".env"]).mayMatchWithin("any/where")).toBe(true);
    expect(globList(["!x"]).empty).toBe(true);
  });

  it("globs - merge rules use the same dialect: CHANGELOG.md at any depth, '/CHANGELOG.md' at the root only", () => {
    const anywhere = compileRules([{ paths: ["CHANGELOG.md"], strategy: "union" }]);
    expect(anywhere("docs/CHANGELOG.md")?.strategy).toBe("union");
    const root = compileRules([{ paths: ["/CHANGELOG.md"], strategy: "union" }]);
    expect(root("CHANGELOG.md")?.strategy).toBe("union");
    expect(root("docs/CHANGELOG.md")).toBeUndefined();
  });

  it("globs - mistakes are named: empty, '..', '.git'", () => {
    expect(patternProblems(["ok", "", "../up", "a/.git/config"])).toEqual(["'' is empty", "'../up' may not contain '.' or '..' segments", "'a/.git/config' may not reach into .git"]);
  });
});
