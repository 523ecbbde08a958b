import { hostname } from "node:os";
import path from "node:path";
import type { KV } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { packRaw } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { checkoutFingerprint } from "../../src/git/repo.js";
import { WorktreeRegistry } from "../../src/runtime/worktree-registry.js";
import type { WorktreeRecord } from "../../src/git/index.js";
import { WorktreeManager } from "../../src/git/worktrees.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { runAdo } from "../helpers/cli.js";
import { useTestServer, eventually, provisioned } from "../helpers/nats.js";
import { sh, tempDir, tempRepo, writeFiles } from "../helpers/repo.js";
import { ownerGone } from "./worktrees-helpers.js";

const ts = useTestServer();

const now = () => new Date().toISOString();

function rec(taskId: string, over: Partial<WorktreeRecord> = {}): WorktreeRecord {
  return { runId: "r1", taskId, repo: "/repo", path: `/wt/r1/${taskId}`, branch: `ado/r1/${taskId}`, host: "h1", state: "active", createdAt: now(), updatedAt: now(), updatedBy: "test", ...over };
}

async function bucket(): Promise<{ kv: KV; prefix: string }> {
  const { kv, topo } = await provisioned(await ts.connect());
  return { kv: kv.worktrees, prefix: topo.prefix };
}

describe("worktrees registry - KV", () => {
  it("registry - put, update with compare-and-set, and list; a malformed entry is reported, not fatal", async () => {
    const { kv } = await bucket();
    const registry = new WorktreeRegistry(kv);
    await registry.put(rec("a"));
    const updated = await registry.update("r1", "a", { state: "committed", commit: "c".repeat(40), updatedBy: "worker w1" }, rec("x"));
    expect(updated).toMatchObject({ taskId: "a", path: "/wt/r1/a", state: "committed", commit: "c".repeat(40), updatedBy: "worker w1" });
    // No record yet: the fallback supplies what the patch does not.
    await registry.update("r1", "b", { state: "merged", updatedBy: "merger m1" }, rec("b"));
    // Written by something else, not decodable.
    await kv.put("r1.bad", packRaw({ runId: "r1", state: "exploded" }));
    await kv.put("r1.garbage", new TextEncoder().encode("not msgpack \xc1"));

    const { records, malformed } = await registry.list();
    expect(records.map((r) => `${r.taskId}:${r.state}`)).toEqual(["a:committed", "b:merged"]);
    expect(malformed.map((m) => m.key)).toEqual(["r1.bad", "r1.garbage"]);
    expect(malformed[0]!.error).toMatch(/invalid 'worktree.record' payload/);
    // Updating a malformed entry replaces it (and says so in the log), from the fallback.
    expect(await registry.update("r1", "bad", { state: "removed", updatedBy: "cleanup" }, rec("bad"))).toMatchObject({ state: "removed", path: "/wt/r1/bad" });
    // A writer's bad record is refused at the writer: kept needs a reason.
    await expect(registry.put(rec("c", { state: "kept" }))).rejects.toThrow(/a kept worktree needs a reason/);
  });

  it(
    "registry - a run writes each task's worktree story: active, then committed and merged, archived (failed attempt) or removed (no changes)",
    { timeout: 60_000 },
    async () => {
      const { repo, root } = await tempRepo({ "README.md": "hello\n", ".gitignore": ".env\n" });
      await writeFiles(repo, { ".env": "TOKEN=secret\n" });
      const before = await checkoutFingerprint(repo);
      const { topo } = await provisioned(await ts.connect());
      const worktreeDir = path.join(await tempDir(), "wt");
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir, heartbeatMs: 200, worktrees: { include: [".env"] } });
      const stack = await Stack.start({ config, logger: silentLogger });
      const nc = await ts.connect("client");
      try {
        const graph = parseGraph(`
name: registry
tasks:
  - { id: feature, run: "test -f .env && echo A > a.txt" }
  - { id: broken, run: "echo partial > b.txt; exit 3" }
  - { id: noop, run: "true" }
`);
        const outcome = await new AdoClient(nc, topo).run({ graph, repo });
        const byId = new Map(outcome.tasks.map((t) => [t.id, t]));
        expect(byId.get("feature"), JSON.stringify(outcome, null, 1)).toMatchObject({ status: "succeeded" });
        expect(byId.get("broken")!.status).toBe("failed");
        expect(byId.get("noop")!.status).toBe("succeeded");
        // The copied .env let the task run, and stayed out of its commit.
        const integration = outcome.integrationBranch!;
        expect(sh(repo, "ls-tree", "--name-only", integration).split("\n").sort()).toEqual([".gitignore", "README.md", "a.txt"]);

        const runId = outcome.runId;
        const registry = new WorktreeRegistry((await provisioned(nc, topo)).kv.worktrees);
        // The merge coordinator removes a merged task's worktree after reporting the merge
        // (off the merge path), so its record says `merged` moments after the run ends.
        const { records, malformed } = await eventually(async () => {
          const listed = await registry.list();
          return listed.records.some((r) => r.runId === runId && r.taskId === "feature" && r.state === "merged") ? listed : undefined;
        }, 10_000, "the merged worktree's record");
        expect(malformed).toEqual([]);
        const get = (task: string) => records.find((r) => r.runId === runId && r.taskId === task)!;
        const workerId = stack.workers[0]!.id;
        expect(get("feature")).toMatchObject({
          state: "merged",
          branch: `ado/${runId}/feature`,
          path: path.join(worktreeDir, runId, "feature"),
          host: hostname(),
          workerId,
          attempt: 1,
          repo,
        });
        expect(get("feature").updatedBy).toMatch(/^merger /);
        expect(Date.parse(get("feature").finishedAt!)).toBeGreaterThanOrEqual(Date.parse(get("feature").createdAt));
        expect(get("broken")).toMatchObject({ state: "archived", archiveRef: `refs/ado/attempts/${runId}/broken/1`, reason: "attempt 1 failed", workerId });
        expect(sh(repo, "show", `refs/ado/attempts/${runId}/broken/1:b.txt`)).toBe("partial");
        expect(get("noop")).toMatchObject({ state: "removed", reason: "no changes", commit: root });
        expect(await new WorktreeManager({ repo, baseDir: worktreeDir }).list()).toEqual([]);
        expect(await checkoutFingerprint(repo)).toBe(before);
      } finally {
        await stack.close();
      }
    },
  );
});

describe("worktrees - a worker applies the cleanup policy", () => {
  it("worktrees left by a dead worker, past cleanupAfter, are archived and removed after the next task", { timeout: 60_000 }, async () => {
    const { repo, root } = await tempRepo();
    const { topo, kv } = await provisioned(await ts.connect());
    const worktreeDir = path.join(await tempDir(), "wt");
    // Left by an earlier worker process that died 3 days ago, one with uncommitted work.
    const old = new WorktreeManager({ repo, baseDir: worktreeDir });
    const stale = (await old.add({ name: "r0/stale", branch: "ado/r0/stale", base: root, owner: { runId: "r0", taskId: "stale" } })).path;
    await writeFiles(stale, { "unsaved.txt": "the dead agent's work\n" });
    await ownerGone(stale, new Date(Date.now() - 3 * 86_400_000));
    const recent = (await old.add({ name: "r0/recent", branch: "ado/r0/recent", base: root, owner: { runId: "r0", taskId: "recent" } })).path;
    await writeFiles(recent, { "unsaved.txt": "newer work\n" });
    await ownerGone(recent);

    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir, heartbeatMs: 200, worktrees: { cleanupAfter: "1d" } });
    const stack = await Stack.start({ config, logger: silentLogger });
    try {
      const outcome = await new AdoClient(await ts.connect("client"), topo).run({ graph: parseGraph("name: p\ntasks:\n  - { id: t, run: 'echo x > x.txt' }\n"), repo });
      expect(outcome.status).toBe("succeeded");
      const registry = new WorktreeRegistry(kv.worktrees);
      const archived = await eventually(
        async () => {
          const r = await registry.get("r0", "stale");
          return r?.state === "archived" ? r : undefined;
        },
        15_000,
        "the stale worktree archived",
      );
      expect(archived.archiveRef).toMatch(/^refs\/ado\/archive\/r0\/stale\//);
      expect(archived.updatedBy).toMatch(/^worker .* \(cleanup policy\)$/);
      expect(sh(repo, "show", `${archived.archiveRef}:unsaved.txt`)).toBe("the dead agent's work");
      expect((await old.list()).map((w) => w.path)).toEqual([recent]); // under cleanupAfter: kept
    } finally {
      await stack.close();
    }
  });
});

describe("ado worktrees - the commands", () => {
  it("list and cleanup work without a server: reasons per worktree, dry run changes nothing, --force archives", { timeout: 120_000 }, async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const done = (await manager.add({ name: "r9/done", branch: "ado/r9/done", base: root, owner: { runId: "r9", taskId: "done" } })).path;
    const wip = (await manager.add({ name: "r9/wip", branch: "ado/r9/wip", base: root, owner: { runId: "r9", taskId: "wip" } })).path;
    await writeFiles(wip, { "draft.md": "unfinished\n" });
    await ownerGone(done);
    await ownerGone(wip);
    // A prefix of its own: no `ado up` state of another test applies.
    const env = { ADO_WORKTREE_DIR: worktrees, ADO_SERVER: "", ADO_PREFIX: `t${process.pid}x` };

    const list = await runAdo(["worktrees", "list", "--json", "--repo", repo], { env });
    expect(list.code).toBe(0);
    const listed = JSON.parse(list.stdout) as { registry: string; worktrees: Array<{ name: string; changes: string[]; inUse: boolean; cleanup: { kind: string; why: string } }> };
    expect(listed.registry).toMatch(/no server configured/);
    expect(listed.worktrees.map((w) => [w.name, w.changes.length, w.inUse, w.cleanup.kind])).toEqual([
      ["r9/done", 0, false, "remove"],
      ["r9/wip", 1, false, "keep"],
    ]);

    const dry = await runAdo(["worktrees", "cleanup", "--dry-run", "--repo", repo], { env });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/^dry run: nothing changed/);
    expect(dry.stdout).toMatch(/would remove r9\/done: no changes and no commits of its own/);
    expect(dry.stdout).toMatch(/keep {6}r9\/wip: has 1 uncommitted change\(s\) \(--force archives it and removes it, or set worktrees.cleanupAfter\)/);
    expect((await manager.list()).length).toBe(2);

    const forced = await runAdo(["worktrees", "cleanup", "--force", "--repo", repo], { env });
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/removed {3}r9\/done/);
    expect(forced.stdout).toMatch(/archived  r9\/wip: has 1 uncommitted change\(s\); --force -> refs\/ado\/archive\/r9\/wip\/\S+ \([0-9a-f]{12}\), then remove/);
    expect(forced.stdout).toMatch(/1 removed, 1 archived and removed, 0 cleared, 0 kept, 0 failed/);
    expect(await manager.list()).toEqual([]);
    const ref = sh(repo, "for-each-ref", "--format=%(refname)", "refs/ado/archive/r9/wip/");
    expect(sh(repo, "show", `${ref}:draft.md`)).toBe("unfinished");

    // Outside a repository: a clear error, exit 2.
    const outside = await runAdo(["worktrees", "list", "--repo", await tempDir()], { env });
    expect(outside.code).toBe(2);
    expect(outside.stderr).toMatch(/is not a git repository: pass --repo/);
  });

  it("list adds the registry's view when a server is reachable, and reports malformed entries without failing", { timeout: 60_000 }, async () => {
    const { repo, worktrees, root } = await tempRepo();
    const { kv, prefix } = await bucket();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = (await manager.add({ name: "r5/t", branch: "ado/r5/t", base: root, owner: { runId: "r5", taskId: "t" } })).path;
    const registry = new WorktreeRegistry(kv);
    await registry.put(rec("t", { runId: "r5", path: wt, repo, state: "kept", reason: "the merge coordinator could not remove it" }));
    await registry.put(rec("old", { runId: "r4", path: "/gone/r4/old", state: "merged", finishedAt: now() }));
    await kv.put("r5.broken", packRaw({ nonsense: true }));
    const env = { ADO_WORKTREE_DIR: worktrees };

    const json = await runAdo(["worktrees", "list", "--json", "--all", "--repo", repo, "--server", ts.url, "--prefix", prefix], { env });
    expect(json.code).toBe(0);
    const out = JSON.parse(json.stdout) as {
      registry: string;
      worktrees: Array<{ name: string; state: string; inUse: boolean; note: string }>;
      history: WorktreeRecord[];
      malformed: Array<{ key: string }>;
    };
    expect(out.registry).toBe("read");
    expect(out.worktrees).toMatchObject([{ name: "r5/t", state: "kept", note: "kept: the merge coordinator could not remove it" }]);
    expect(out.history.map((r) => `${r.runId}/${r.taskId}:${r.state}`)).toEqual(["r4/old:merged"]);
    expect(out.malformed.map((m) => m.key)).toEqual(["r5.broken"]);

    const text = await runAdo(["worktrees", "list", "--repo", repo, "--server", ts.url, "--prefix", prefix], { env });
    expect(text.code).toBe(0);
    expect(text.stderr).toMatch(/registry entry 'r5.broken' is malformed and was ignored/);
    expect(text.stdout).toMatch(/r5\/t\s+ado\/r5\/t\s+kept/);

    // A server that does not answer: git's view, and a note saying so.
    const down = await runAdo(["worktrees", "list", "--repo", repo, "--server", "nats://127.0.0.1:1", "--prefix", prefix], { env });
    expect(down.code).toBe(0);
    expect(down.stderr).toMatch(/the registry at nats:\/\/127.0.0.1:1 could not be read .*showing what git knows/);
    expect(down.stdout).toMatch(/r5\/t/);
  });
});
