import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errors } from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { Merger } from "../../src/actors/merger/merger.js";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { checkoutFingerprint } from "../../src/git/index.js";
import { parseGraph, resolveMergeSettings } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent, EventOf } from "../../src/runtime/messages.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { startAdo } from "../helpers/cli.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

/**
 * The merge coordinator end to end: real nats-server, real git repositories, the whole
 * stack in this process (separate processes are in hitl.test.ts). Conflicts are made
 * by two tasks adding a different line at the same place of `list.txt`.
 */

const ts = useTestServer("ado-merge-");

async function stackAndClient(workers = 2) {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
  return {
    client: new AdoClient(nc, topo),
    close: async () => {
      await nc.drain();
      await stack.close();
    },
  };
}

const of = <T extends AdoEvent["type"]>(events: AdoEvent[], type: T) => events.filter((e): e is EventOf<T> => e.type === type);
const show = (dir: string, rev: string, file: string) => execFileSync("git", ["show", `${rev}:${file}`], { cwd: dir, encoding: "utf8" });

/** Two tasks adding a different line after `start` in list.txt: the second to merge conflicts. */
const CONFLICTING = `
  - { id: a, prompt: "add A to the list", run: "printf 'start\\\\nA\\\\n' > list.txt" }
  - { id: b, prompt: "add B to the list", run: "sleep 0.3; printf 'start\\\\nB\\\\n' > list.txt" }`;

describe("merge - clean merges", () => {
  it.each(["merge", "squash"] as const)("two tasks editing different files merge cleanly (%s mode); the checkout is untouched", async (mode) => {
    const repo = await makeRepo();
    await writeFile(join(repo.dir, "notes.txt"), "the user's untracked notes\n");
    const before = await checkoutFingerprint(repo.dir);
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph(`
merge: { mode: ${mode} }
tasks:
  - { id: a, prompt: "write A to a.txt", run: "echo A > a.txt" }
  - { id: b, prompt: "write B to b.txt", run: "echo B > b.txt" }
`);
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const branch = outcome.integrationBranch!;
      expect(show(repo.dir, branch, "a.txt")).toBe("A\n");
      expect(show(repo.dir, branch, "b.txt")).toBe("B\n");
      // Squash: every commit on the integration branch since the base has one parent.
      const parents = gitOut(repo.dir, "log", "--format=%P", `main..${branch}`).split("\n").map((p) => p.split(" ").length);
      // Merge: the first lands by fast-forward, the second with a merge commit (two parents).
      expect(parents.filter((n) => n === 2)).toHaveLength(mode === "squash" ? 0 : 1);
      // The integration branch's own history says what each task was asked to do: a
      // squash commit is all it keeps of a task, a merge commit is what --first-parent shows.
      const messages = gitOut(repo.dir, "log", "--first-parent", "--format=%B", `main..${branch}`);
      expect(messages).toContain("write A to a.txt");
      expect(messages).toContain("write B to b.txt");
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("merge - conflicts resolved by per-path rules", () => {
  it.each(["union", "ours", "theirs"] as const)("the same line changed by two tasks is resolved by a '%s' rule", async (strategy) => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const before = await checkoutFingerprint(repo.dir);
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph(`
merge:
  rules: [{ paths: ["*.txt"], strategy: ${strategy} }]
tasks:${CONFLICTING}
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      // The second task to be merged is the one whose conflict was resolved.
      const [resolved] = of(events, "merge.resolved");
      expect(resolved!.paths).toEqual([{ path: "list.txt", by: strategy }]);
      const second = resolved!.taskId;
      const first = second === "a" ? "b" : "a";
      const line: Record<string, string> = { a: "A", b: "B" };
      const expected = {
        union: `start\n${line[first]}\n${line[second]}\n`,
        ours: `start\n${line[first]}\n`,
        theirs: `start\n${line[second]}\n`,
      }[strategy];
      expect(show(repo.dir, outcome.integrationBranch!, "list.txt")).toBe(expected);
      expect(of(events, "merge.hitl_required")).toEqual([]);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a fake resolver agent resolves a conflict, given the conflict and both tasks' prompts", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const dir = await mkdtemp(join(ts.scratch, "resolver-"));
    const seen = join(dir, "seen.json");
    // The resolver: keeps every line of both sides (no markers), and records what it was told.
    const script = join(dir, "resolver.mjs");
    await writeFile(
      script,
      `import { readFileSync, writeFileSync } from "node:fs";
const input = JSON.parse(readFileSync(process.env.ADO_CONFLICTS_FILE, "utf8"));
writeFileSync(${JSON.stringify(seen)}, JSON.stringify(input));
for (const c of input.conflicts) {
  const lines = [...new Set([...(c.ours ?? "").split("\\n"), ...(c.theirs ?? "").split("\\n")].filter(Boolean))];
  writeFileSync(c.path, lines.join("\\n") + "\\n");
}
`,
    );
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph(`tasks:${CONFLICTING}\n`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({
        graph,
        repo: repo.dir,
        merge: resolveMergeSettings({ resolver: { run: `${process.execPath} ${script}`, timeoutMs: 30_000 } }),
        onEvent: (e) => events.push(e),
      });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const [resolved] = of(events, "merge.resolved");
      expect(resolved!.paths).toEqual([{ path: "list.txt", by: "agent" }]);
      const content = show(repo.dir, outcome.integrationBranch!, "list.txt");
      expect(content.split("\n").sort()).toEqual(["", "A", "B", "start"]);
      const told = JSON.parse(await readFile(seen, "utf8"));
      expect(told.conflicts).toEqual([expect.objectContaining({ path: "list.txt", kind: expect.any(String) })]);
      // The resolver knows what both tasks were asked to do.
      const second = resolved!.taskId;
      const first = second === "a" ? "b" : "a";
      expect(told.context.task).toMatchObject({ id: second, prompt: `add ${second.toUpperCase()} to the list` });
      expect(told.context.merged).toEqual([{ taskId: first, prompt: `add ${first.toUpperCase()} to the list`, files: ["list.txt"] }]);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("merge - escalation and validation", () => {
  it("a validation failure backs the merge out and escalates with the failing output; skipping it ends the run", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph(`
merge:
  validate: { run: "if [ -f bad.txt ]; then echo 'bad.txt is not allowed here' >&2; exit 4; fi", timeout: 30s }
tasks:
  - { id: good, run: "echo fine > good.txt" }
  - { id: bad, prompt: "add bad.txt", run: "echo nope > bad.txt" }
  - { id: after, needs: [bad], run: "echo later > after.txt" }
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      // The run waits for a person: not an end.
      expect(outcome.status).toBe("needs_attention");
      expect(outcome.attention).toEqual([expect.objectContaining({ taskId: "bad", hitlId: `${outcome.runId}.bad` })]);
      const [hitl] = of(events, "merge.hitl_required");
      expect(hitl).toMatchObject({ taskId: "bad", reason: "validation", round: 1 });
      const { record } = (await client.hitlRecord(`${outcome.runId}.bad`))!;
      expect(record).toMatchObject({ state: "open", reason: "validation", files: ["bad.txt"], round: 1 });
      expect(record.validationOutput).toContain("bad.txt is not allowed here");
      expect(record.message).toMatch(/exit 4/);
      expect(record.prompts.task).toBe("add bad.txt");
      // Backed out: the integration branch has good's work and not bad's.
      const integration = `ado/${outcome.runId}/integration`;
      expect(show(repo.dir, integration, "good.txt")).toBe("fine\n");
      expect(() => execFileSync("git", ["cat-file", "-e", `${integration}:bad.txt`], { cwd: repo.dir, stdio: "pipe" })).toThrow();
      // The scheduler publishes, then persists: the record follows the event within moments.
      // (Waited for with a generous bound: 5 s of polling could pass on a loaded machine.)
      const status = await eventually(async () => {
        const s = await client.status(outcome.runId);
        return s?.run.status === "needs_attention" ? s : undefined;
      }, 30_000, "the run record needs_attention");
      expect(Object.fromEntries(status!.tasks.map((t) => [t.id, t.status]))).toEqual({ good: "succeeded", bad: "needs_attention", after: "pending" });

      // A person skips it: the task and what needs it are skipped, and the run ends.
      const after = await client.lastEventSequence();
      await client.requestResolution(record, { choice: "skip" });
      const done = await client.watch(outcome.runId, { afterSequence: after });
      expect(done.status).toBe("failed");
      expect(done.error).toMatch(/'bad' was not merged/);
      expect(Object.fromEntries(done.tasks.map((t) => [t.id, t.status]))).toEqual({ good: "succeeded", bad: "skipped", after: "skipped" });
      const skipped = (await client.hitlRecord(`${outcome.runId}.bad`))!.record;
      expect(skipped).toMatchObject({ state: "resolved", choice: "skip" });

      // The first merge request delivered again past the dedupe window: merging it again
      // would fail validation again and reopen the record; it must replay the decision.
      const { encode } = await import("../../src/runtime/codec.js");
      const { SCHEMAS } = await import("../../src/runtime/messages.js");
      const again = encode(SCHEMAS.MergeRequest, {
        type: "merge.request",
        runId: record.runId,
        taskId: record.taskId,
        repo: record.repo,
        commit: record.source,
        branch: record.branch,
        baseCommit: record.base,
        integrationBranch: record.integrationBranch,
        settings: record.settings,
      });
      await client.js.publish(client.topo.subjects.merge(record.runId), again.data, { headers: again.headers, msgID: "again" });
      const jsm = await client.js.jetstreamManager();
      await eventually(async () => (await jsm.streams.info(client.topo.streams.merge.name)).state.messages === 0, 10_000, "the merger to take it");
      await new Promise((r) => setTimeout(r, 500));
      expect((await client.hitlRecord(`${outcome.runId}.bad`))!.record).toEqual(skipped);
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a conflict nothing resolves waits for a person; choosing 'theirs' lets the waiting run continue to its end", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const before = await checkoutFingerprint(repo.dir);
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph(`tasks:${CONFLICTING}\n  - { id: c, needs: [a, b], run: "cp list.txt final.txt" }\n`);
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status).toBe("needs_attention");
      const [waiting] = outcome.attention!;
      const { record } = (await client.hitlRecord(waiting!.hitlId))!;
      expect(record.reason).toBe("conflict");
      expect(record.conflicts).toEqual([expect.objectContaining({ path: "list.txt", base: "start\n" })]);
      const first = record.taskId === "a" ? "b" : "a";
      expect(record.prompts.related).toEqual([{ taskId: first, prompt: `add ${first.toUpperCase()} to the list`, files: ["list.txt"] }]);

      const after = await client.lastEventSequence();
      await client.requestResolution(record, { choice: "theirs" });
      const done = await client.watch(outcome.runId, { afterSequence: after });
      expect(done.status, done.error).toBe("succeeded");
      const line = record.taskId.toUpperCase();
      expect(show(repo.dir, done.integrationBranch!, "final.txt")).toBe(`start\n${line}\n`);
      const settled = (await client.hitlRecord(record.id))!.record;
      expect(settled).toMatchObject({ state: "resolved", choice: "theirs" });

      // Redeliveries past the dedupe window (new msg ids): the first merge request and
      // the resolution again. Neither reopens nor redoes what the person decided.
      const { encode } = await import("../../src/runtime/codec.js");
      const { SCHEMAS } = await import("../../src/runtime/messages.js");
      const original = {
        type: "merge.request" as const,
        runId: record.runId,
        taskId: record.taskId,
        repo: record.repo,
        commit: record.source,
        branch: record.branch,
        baseCommit: record.base,
        integrationBranch: record.integrationBranch,
      };
      const head = gitOut(repo.dir, "rev-parse", done.integrationBranch!);
      const seq = await client.lastEventSequence();
      for (const [i, request] of [original, { ...original, resolution: { round: 1, choice: "ours" as const, by: "x", at: new Date().toISOString() } }].entries()) {
        const { data, headers } = encode(SCHEMAS.MergeRequest, request);
        await client.js.publish(client.topo.subjects.merge(record.runId), data, { headers, msgID: `again-${i}` });
      }
      const jsm = await client.js.jetstreamManager();
      const stored = async (stream: string) => (await jsm.streams.info(stream)).state.messages;
      // Both were handled (taken off the work queue) and neither was dead-lettered.
      await eventually(async () => (await stored(client.topo.streams.merge.name)) === 0, 10_000, "the merger to take both requests");
      await new Promise((r) => setTimeout(r, 500));
      expect(await stored(client.topo.streams.dlq.name)).toBe(0);
      expect((await client.hitlRecord(record.id))!.record).toEqual(settled);
      expect(gitOut(repo.dir, "rev-parse", done.integrationBranch!)).toBe(head);
      expect((await client.runRecord(record.runId))!.status).toBe("succeeded");
      expect(await client.lastEventSequence()).toBe(seq); // no event: nothing happened again
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("merge - into a target branch", () => {
  it("--merge-into fast-forwards a branch that has not moved; a branch checked out in the user's tree is left alone with the reason", async () => {
    const repo = await makeRepo();
    gitOut(repo.dir, "branch", "release");
    const before = await checkoutFingerprint(repo.dir);
    const mainBefore = gitOut(repo.dir, "rev-parse", "main");
    const { client, close } = await stackAndClient();
    try {
      const graph = parseGraph('tasks:\n  - { id: a, run: "echo A > a.txt" }\n');
      const events: AdoEvent[] = [];
      const ok = await client.run({ graph, repo: repo.dir, merge: resolveMergeSettings({ into: "release" }), onEvent: (e) => events.push(e) });
      expect(ok.status).toBe("succeeded");
      expect(ok.mergeInto).toMatchObject({ into: "release", status: "fast-forward", commit: ok.integrationCommit });
      expect(gitOut(repo.dir, "rev-parse", "release")).toBe(ok.integrationCommit);
      expect(of(events, "run.merged_into")).toEqual([expect.objectContaining({ into: "release", status: "fast-forward" })]);

      // main is checked out in the user's tree: refused, the run still succeeds.
      const refused = await client.run({ graph, repo: repo.dir, merge: resolveMergeSettings({ into: "main" }) });
      expect(refused.status).toBe("succeeded");
      expect(refused.mergeInto).toMatchObject({ into: "main", status: "refused" });
      expect(refused.mergeInto!.reason).toMatch(/checked out/);
      expect(gitOut(repo.dir, "rev-parse", "main")).toBe(mainBefore);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("merge - settings from config, graph and flags", () => {
  it("bad merge settings are refused before anything runs, naming the field and what is allowed", async () => {
    const { loadConfig } = await import("../../src/runtime/config.js");
    const dir = await mkdtemp(join(ts.scratch, "cfg-"));
    await writeFile(join(dir, "ado.config.yaml"), "merge:\n  mode: fast\n  rules: [{ paths: [lock.json], strategy: regenerate }]\n");
    const err = await loadConfig({ dir, env: {} }).catch((e: Error) => e);
    expect(String(err)).toMatch(/merge\.mode .*"merge", "squash", "linear"/);
    expect(String(err)).toMatch(/merge\.rules\.0\.command .*regenerate" needs a command/);

    expect(() => parseGraph('merge: { validate: { run: "npm test", timeout: soon } }\ntasks:\n  - { id: a, run: "true" }\n')).toThrow(
      /merge\.validate\.timeout: expected a duration/,
    );
    const graph = parseGraph('merge: { mode: linear, validate: { run: "npm test", timeout: 2m } }\ntasks:\n  - { id: a, run: "true" }\n');
    expect(graph.merge).toEqual({ mode: "linear", validate: { run: "npm test", timeoutMs: 120_000 } });
    // Layers: the graph's rules are tried before the config's; flags win for the rest.
    const settings = resolveMergeSettings(
      { mode: "squash", rules: [{ paths: ["*.md"], strategy: "union" }] },
      { rules: [{ paths: ["CHANGELOG.md"], strategy: "ours" }] },
      { into: "main" },
    );
    expect(settings).toEqual({
      mode: "squash",
      rules: [
        { paths: ["CHANGELOG.md"], strategy: "ours" },
        { paths: ["*.md"], strategy: "union" },
      ],
      into: "main",
    });
  });

  it("ado run refuses an unknown --merge-mode and a --merge-into branch that does not exist, before starting anything", async () => {
    const { runAdo } = await import("../helpers/cli.js");
    const repo = await makeRepo();
    try {
      const env = { ADO_SERVER: "", XDG_STATE_HOME: join(ts.scratch, "no-up-state") };
      const mode = await runAdo(["run", "x", "--cmd", "true", "--repo", repo.dir, "--merge-mode", "fast"], { env });
      expect(mode.code).toBe(2);
      expect(mode.stderr).toMatch(/--merge-mode must be one of merge, squash, linear, got 'fast'/);
      const into = await runAdo(["run", "x", "--cmd", "true", "--repo", repo.dir, "--merge-into", "nosuch"], { env });
      expect(into.code).toBe(2);
      expect(into.stderr).toMatch(/merge into 'nosuch': no such branch/);
      expect(gitOut(repo.dir, "branch", "--list", "ado/*")).toBe("");
    } finally {
      await repo.cleanup();
    }
  });

  it("ado run --merge-into main --update-checkout fast-forwards a clean checked-out main, and leaves a dirty one alone", async () => {
    const { runAdo } = await import("../helpers/cli.js");
    const repo = await makeRepo();
    try {
      const env = { ADO_SERVER: "", XDG_STATE_HOME: join(ts.scratch, "no-up-state"), ADO_WORKTREE_DIR: join(ts.scratch, "wt-update-checkout") };
      const args = ["run", "x", "--cmd", "echo A > a.txt", "--repo", repo.dir, "--merge-into", "main", "--update-checkout", "--json"];
      const clean = await runAdo(args, { env });
      expect(clean.code, clean.stderr).toBe(0);
      const out = JSON.parse(clean.stdout);
      expect(out.mergeInto).toMatchObject({ into: "main", status: "fast-forward" });
      // The user's main moved, and its checkout with it: nothing looks changed.
      expect(gitOut(repo.dir, "rev-parse", "main")).toBe(out.integrationCommit);
      expect(gitOut(repo.dir, "status", "--porcelain")).toBe("");
      expect(gitOut(repo.dir, "show", "HEAD:a.txt")).toBe("A");

      // With uncommitted work in the checkout: refused, nothing of theirs touched.
      await writeFile(join(repo.dir, "README.md"), "mine, not committed\n");
      const before = await checkoutFingerprint(repo.dir);
      const mainBefore = gitOut(repo.dir, "rev-parse", "main");
      const dirty = await runAdo([...args.slice(0, 3), "echo B > b.txt", ...args.slice(4)], { env });
      expect(dirty.code, dirty.stderr).toBe(0);
      expect(JSON.parse(dirty.stdout).mergeInto).toMatchObject({ into: "main", status: "refused" });
      expect(dirty.stderr).toMatch(/uncommitted changes/);
      expect(gitOut(repo.dir, "rev-parse", "main")).toBe(mainBefore);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await repo.cleanup();
    }
  }, 60_000);
});

/** How many times `commit` landed on `branch`: on its first-parent line (a fast-forward) or as a merge's second parent. */
function timesLanded(dir: string, branch: string, commit: string): number {
  return gitOut(dir, "log", "--first-parent", "--format=%H %P", branch)
    .split("\n")
    .filter((line) => {
      const [self, , second] = line.split(" ");
      return self === commit || second === commit;
    }).length;
}

describe("merge - failures the merge coordinator outlives", () => {
  it("a merger process SIGKILLed with merges queued: another merger process merges them within seconds, each once", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const worktreeDir = join(ts.scratch, "wt-kill");
    const markers = await mkdtemp(join(ts.scratch, "validating-"));
    // Everything but the merge coordinator in this process; the coordinators are `ado actor merger` processes.
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, slots: 3, worktreeDir, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "balancer", "stealer"] });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const env = { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix, ADO_WORKTREE_DIR: worktreeDir };
    const procs = [await startAdo(["actor", "merger"], /merger running/, { env })];
    try {
      // Each merge is validated by a command that takes a second: the merges queue up behind it.
      const graph = parseGraph(`
merge:
  validate: { run: "touch ${markers}/$ADO_TASK_ID; sleep 1", timeout: 60s }
tasks:
${[1, 2, 3, 4, 5, 6].map((i) => `  - { id: t${i}, run: "echo ${i} > t${i}.txt" }`).join("\n")}
`);
      const events: AdoEvent[] = [];
      const done = client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      const jsm = await client.js.jetstreamManager();
      // Killed while it validates a merge, with more requests waiting behind it.
      await eventually(
        async () => {
          const info = await jsm.consumers.info(topo.streams.merge.name, "merger");
          return (await readdir(markers)).length >= 1 && info.num_pending + info.num_ack_pending >= 3;
        },
        60_000,
        "a merge in progress with requests queued",
      );
      expect(of(events, "task.merged").length).toBeLessThan(6);
      procs[0]!.child.kill("SIGKILL");
      await new Promise<void>((r) => procs[0]!.child.once("exit", () => r()));
      procs.push(await startAdo(["actor", "merger"], /merger running/, { env }));
      // The old ack wait (300 s) held the queue for minutes; now it is seconds (6 s, plus a
      // loaded machine's slack).
      const outcome = await Promise.race([
        done,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the successor did not merge the queued requests within 90 s")), 90_000)),
      ]);
      expect(outcome.status, outcome.error).toBe("succeeded");
      const branch = outcome.integrationBranch!;
      for (const t of outcome.tasks) {
        expect(show(repo.dir, branch, `${t.id}.txt`)).toBe(`${t.id.slice(1)}\n`);
        expect(timesLanded(repo.dir, branch, gitOut(repo.dir, "rev-parse", `ado/${outcome.runId}/${t.id}`)), t.id).toBe(1);
      }
      expect(of(events, "task.merged").map((e) => e.taskId).sort()).toEqual(["t1", "t2", "t3", "t4", "t5", "t6"]);
    } finally {
      for (const p of procs) if (p.child.exitCode === null) p.child.kill("SIGKILL");
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 240_000);

  it("a KV timeout during a merge is retried, not a failed run: the merge still lands", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const worktreeDir = join(ts.scratch, "wt-flaky");
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, worktreeDir, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "balancer", "stealer"] });
    // A merge coordinator whose HITL bucket times out once, as a slow server does.
    const mnc = await connectNats({ servers: ts.url, name: "flaky-merger", logger: silentLogger });
    const kv = await openBuckets(mnc, topo);
    let reads = 0;
    const hitl = new Proxy(kv.hitl, {
      get(target, prop) {
        if (prop === "get") {
          return async (key: string) => {
            if (reads++ === 0) throw new errors.TimeoutError();
            return target.get(key);
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const merger = await new Merger("merger-flaky", { nc: mnc, topo, kv: { ...kv, hitl }, logger: silentLogger }, { worktreeDir, cloneDir: join(ts.scratch, "clones"), ackWaitMs: 2_000 }).start();
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    try {
      const graph = parseGraph('tasks:\n  - { id: a, run: "echo A > a.txt" }\n  - { id: b, run: "echo B > b.txt" }\n');
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(show(repo.dir, outcome.integrationBranch!, "a.txt")).toBe("A\n");
      expect(show(repo.dir, outcome.integrationBranch!, "b.txt")).toBe("B\n");
      expect(reads).toBeGreaterThan(1);
      expect(merger.stats().retried).toBeGreaterThanOrEqual(1);
    } finally {
      await nc.drain();
      await merger.close();
      await mnc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 120_000);
});
