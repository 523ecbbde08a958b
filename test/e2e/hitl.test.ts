import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkoutFingerprint } from "../../src/git/index.js";
import { runAdo, startAdo, stopProcess } from "../helpers/cli.js";
import { uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { useScratch } from "../helpers/scratch.js";

/**
 * `ado hitl` as a person uses it: every command a real `ado` process, against real git
 * repositories and a real nats-server: first a stack started by `ado up` (the run waits
 * there), then `ado run`'s embedded stack (exit 3, state kept in the repository, resumed
 * by `ado hitl`).
 */

const scratch = useScratch("ado-hitl-");

/** Two tasks adding a different line after `start` (the second to merge conflicts), and one that needs both. */
const GRAPH = `name: hitl
tasks:
  - { id: a, prompt: "add A to the list", run: "printf 'start\\\\nA\\\\n' > list.txt" }
  - { id: b, prompt: "add B to the list", run: "sleep 0.3; printf 'start\\\\nB\\\\n' > list.txt" }
  - { id: c, needs: [a, b], run: "cp list.txt final.txt" }
`;

const show = (dir: string, rev: string, file: string) => execFileSync("git", ["show", `${rev}:${file}`], { cwd: dir, encoding: "utf8" });

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Environment of a machine with no `ado up` and no server configured, unless a test adds one. */
async function isolatedEnv(extra: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const home = await mkdtemp(join(scratch.dir, "home-"));
  return {
    ADO_SERVER: "",
    XDG_STATE_HOME: join(home, "state"),
    XDG_CACHE_HOME: join(home, "cache"),
    ADO_WORKTREE_DIR: join(home, "worktrees"),
    ADO_HEARTBEAT_MS: "200",
    ...extra,
  };
}

// Several real `ado` processes per test, each a stack or a CLI started through tsx: at a
// load average of ~40 on 2 cores one test took 114 s (60 s timed out every one of them).
const E2E_TIMEOUT_MS = 300_000;

describe("hitl - with a separate stack (ado up)", { timeout: E2E_TIMEOUT_MS }, () => {
  it("ado run exits 3 and the run waits; hitl list/show; a failed resolution needs attention again; --choose theirs lets it finish", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const env = await isolatedEnv({ ADO_PREFIX: uniqueTopology().prefix });
    const port = await freePort();
    const up = await startAdo(["up", "--port", String(port), "--store", join(scratch.dir, `store-${port}`), "--workers", "2"], /ado is up/, { env });
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(graph, GRAPH);
      const before = await checkoutFingerprint(repo.dir);

      const run = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--json"], { env });
      expect(run.code, run.stderr).toBe(3);
      const out = JSON.parse(run.stdout);
      expect(out.status).toBe("needs_attention");
      const [waiting] = out.attention;
      const id: string = waiting.hitlId;
      expect(id).toMatch(new RegExp(`^${out.runId}\\.(a|b)$`));

      const list = await runAdo(["hitl", "list", "--json"], { env, cwd: repo.dir });
      expect(list.code, list.stderr).toBe(0);
      expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id, state: "open", waiting: true, reason: "conflict", files: ["list.txt"] })]);

      const shown = await runAdo(["hitl", "show", id], { env, cwd: repo.dir });
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toContain("list.txt");
      expect(shown.stdout).toMatch(/base:\n\s+\| start/);
      expect(shown.stdout).toMatch(/add [AB] to the list/);

      // A resolver that fails: the merge needs attention again (round 2), exit 3.
      const failed = await runAdo(["hitl", "resolve", id, "--choose", "agent", "--resolver", "echo giving up; exit 1"], { env, cwd: repo.dir });
      expect(failed.code, failed.stdout + failed.stderr).toBe(3);
      expect(failed.stdout).toMatch(/needs attention again/);
      const again = await runAdo(["hitl", "show", id, "--json"], { env });
      const record = JSON.parse(again.stdout);
      expect(record).toMatchObject({ state: "open", round: 2 });
      expect(record.history).toEqual([expect.objectContaining({ round: 1, choice: "agent", outcome: "conflict" })]);
      expect(record.resolverOutput).toContain("giving up");

      const resolved = await runAdo(["hitl", "resolve", id, "--choose", "theirs"], { env, cwd: repo.dir });
      expect(resolved.code, resolved.stdout + resolved.stderr).toBe(0);
      expect(resolved.stdout).toMatch(/merged; run .* goes on/);

      // The waiting run went on: c ran on top of both, with the task's side of the conflict.
      const attach = await runAdo(["attach", out.runId, "--json"], { env });
      expect(attach.code, attach.stderr).toBe(0);
      expect(JSON.parse(attach.stdout).status).toBe("succeeded");
      const line = id.endsWith(".a") ? "A" : "B";
      expect(show(repo.dir, out.integrationBranch, "final.txt")).toBe(`start\n${line}\n`);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      expect(await stopProcess(up.child)).toBe(0);
      await repo.cleanup();
    }
  });
});

describe("hitl - with ado run's embedded stack", { timeout: E2E_TIMEOUT_MS }, () => {
  it("exit 3 keeps the run's state in the repository; ado hitl resolve resumes it to the end (exit 0) and removes it", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const env = await isolatedEnv();
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(graph, GRAPH);
      const before = await checkoutFingerprint(repo.dir);

      const run = await runAdo(["run", "--graph", graph, "--repo", repo.dir], { env });
      expect(run.code, run.stdout + run.stderr).toBe(3);
      expect(run.stdout).toMatch(/needs_attention/);
      expect(run.stdout).toMatch(/ado hitl resolve \S+ --choose ours\|theirs/);
      const runId = /run (r\S+): needs_attention/.exec(run.stdout)![1]!;
      const kept = join(repo.dir, ".git", "ado", "runs", runId);
      expect(existsSync(join(kept, "nats"))).toBe(true);

      const list = await runAdo(["hitl", "list"], { env, cwd: repo.dir });
      expect(list.code, list.stderr).toBe(0);
      const id = new RegExp(`(${runId}\\.[ab])\\s+open`).exec(list.stdout)?.[1];
      expect(id, list.stdout).toBeDefined();

      const resolved = await runAdo(["hitl", "resolve", id!, "--choose", "ours"], { env, cwd: repo.dir });
      expect(resolved.code, resolved.stdout + resolved.stderr).toBe(0);
      expect(resolved.stdout).toMatch(new RegExp(`run ${runId}: succeeded`));
      // Ours: the integration branch's side, i.e. the task merged first.
      const first = id!.endsWith(".a") ? "B" : "A";
      expect(show(repo.dir, `ado/${runId}/integration`, "final.txt")).toBe(`start\n${first}\n`);
      // The run is over: its kept state is gone, and nothing is left under .git/ado.
      expect(existsSync(kept)).toBe(false);
      expect(existsSync(join(repo.dir, ".git", "ado"))).toBe(false);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await repo.cleanup();
    }
  });

  // Was: --choose theirs took the task's side of every conflicted path, the changelog the
  // union rule had resolved included, so the other task's line was lost.
  it("--choose theirs applies to what was left for the person: the union rule's changelog keeps both tasks' lines", async () => {
    const repo = await makeRepo({ "CHANGELOG.md": "# Changes\n", "app.txt": "app\n" });
    const env = await isolatedEnv();
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(
        graph,
        `name: union-then-choice
merge:
  rules: [{ paths: ["CHANGELOG.md"], strategy: union }]
tasks:
  - { id: a, run: "printf '# Changes\\\\n- a\\\\n' > CHANGELOG.md; printf 'app by a\\\\n' > app.txt" }
  - { id: b, run: "sleep 0.3; printf '# Changes\\\\n- b\\\\n' > CHANGELOG.md; printf 'app by b\\\\n' > app.txt" }
`,
      );
      const run = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--json"], { env });
      expect(run.code, run.stdout + run.stderr).toBe(3);
      const out = JSON.parse(run.stdout);
      const id: string = out.attention[0].hitlId;
      const shown = JSON.parse((await runAdo(["hitl", "show", id, "--json"], { env, cwd: repo.dir })).stdout);
      // The rule settled the changelog; only app.txt waits for the person.
      expect(shown.files).toEqual(["app.txt"]);

      const resolved = await runAdo(["hitl", "resolve", id, "--choose", "theirs"], { env, cwd: repo.dir });
      expect(resolved.code, resolved.stdout + resolved.stderr).toBe(0);
      expect(resolved.stdout).toMatch(new RegExp(`run ${out.runId}: succeeded`));
      const theirs = id.endsWith(".a") ? "a" : "b";
      const first = theirs === "a" ? "b" : "a";
      const integration = `ado/${out.runId}/integration`;
      expect(show(repo.dir, integration, "CHANGELOG.md")).toBe(`# Changes\n- ${first}\n- ${theirs}\n`);
      expect(show(repo.dir, integration, "app.txt")).toBe(`app by ${theirs}\n`);
    } finally {
      await repo.cleanup();
    }
  });

  it("--manual gives a worktree holding the conflict; the person's commit lands with --continue", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const env = await isolatedEnv();
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(graph, GRAPH);
      const run = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--json"], { env });
      expect(run.code, run.stderr).toBe(3);
      const out = JSON.parse(run.stdout);
      const id: string = out.attention[0].hitlId;

      const manual = await runAdo(["hitl", "resolve", id, "--manual"], { env, cwd: repo.dir });
      expect(manual.code, manual.stdout + manual.stderr).toBe(0);
      const worktree = /is in (\S+) \(branch/.exec(manual.stdout)![1]!;
      const conflicted = execFileSync("git", ["diff", "--name-only", "--diff-filter=U"], { cwd: worktree, encoding: "utf8" }).trim();
      expect(conflicted).toBe("list.txt");
      // Continuing before resolving is refused, and keeps the worktree.
      const early = await runAdo(["hitl", "resolve", id, "--continue"], { env, cwd: repo.dir });
      expect(early.code).toBe(3);
      expect(early.stdout).toMatch(/conflict markers remain in list.txt/);

      await writeFile(join(worktree, "list.txt"), "start\nA and B, by hand\n");
      const g = (...args: string[]) => execFileSync("git", ["-c", "user.name=Person", "-c", "user.email=p@example.com", ...args], { cwd: worktree, stdio: "pipe" });
      g("add", "list.txt");
      g("commit", "-q", "-m", "resolved by hand");

      const done = await runAdo(["hitl", "resolve", id, "--continue"], { env, cwd: repo.dir });
      expect(done.code, done.stdout + done.stderr).toBe(0);
      expect(done.stdout).toMatch(new RegExp(`run ${out.runId}: succeeded`));
      expect(show(repo.dir, `ado/${out.runId}/integration`, "final.txt")).toBe("start\nA and B, by hand\n");
      expect(existsSync(worktree)).toBe(false);
      expect(gitOut(repo.dir, "worktree", "list")).not.toContain(worktree);
      expect(existsSync(join(repo.dir, ".git", "ado"))).toBe(false);
    } finally {
      await repo.cleanup();
    }
  });
});
