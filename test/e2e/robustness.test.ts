import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode, encode, packRaw } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { GraphError } from "../../src/runtime/errors.js";
import { checkoutFingerprint } from "../../src/git/index.js";
import { parseGraph, TaskDefSchema, type GraphInput } from "../../src/runtime/graph.js";
import { newRunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { z } from "zod";
import { SCHEMAS, type AdoEvent, type DeadLetter, type TaskWork } from "../../src/runtime/messages.js";
import type { Topology } from "../../src/runtime/topology.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { isRunning } from "../helpers/cluster.js";

const ts = useTestServer("ado-robust-");
let main: Harness;
beforeAll(async () => {
  main = await harness(2);
});
afterAll(async () => {
  await main?.close();
});

interface Harness {
  stack: Stack;
  client: AdoClient;
  topo: Topology;
  close(): Promise<void>;
}

/** A stack of every actor plus `workers` workers, under a prefix of its own, and a client. */
async function harness(workers: number): Promise<Harness> {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 });
  const stack = await Stack.start({ config, logger: silentLogger, server: ts.url });
  const nc = await connectNats({ servers: ts.url, name: "robustness-client", logger: silentLogger });
  return {
    stack,
    topo,
    client: new AdoClient(nc, topo),
    close: async () => {
      await nc.drain();
      await stack.close();
    },
  };
}

/** A repository whose checkout has untracked, modified and staged changes, and its fingerprint. */
async function dirtyRepo(files: Record<string, string> = { "README.md": "# sample\n" }) {
  const repo = await makeRepo(files);
  await writeFile(join(repo.dir, "scratch.txt"), "untracked\n");
  await writeFile(join(repo.dir, "README.md"), "# edited by the user\n");
  await writeFile(join(repo.dir, "staged.txt"), "staged\n");
  gitOut(repo.dir, "add", "staged.txt");
  return { ...repo, before: await checkoutFingerprint(repo.dir) };
}

/** A graph as an object, through the same parser as a graph file (JSON is YAML). */
const graphOf = (g: { name?: string; tasks: Array<Record<string, unknown>> }): GraphInput => parseGraph(JSON.stringify(g));

/** Publishes a submission straight to the submit subject, skipping the client's checks. */
async function submitRaw(h: Harness, runId: string, tasks: Array<{ id: string; needs?: string[] }>): Promise<void> {
  const { data, headers } = encode(SCHEMAS.SubmitRun, {
    type: "run.submit",
    runId,
    graph: { name: "raw", tasks: tasks.map((t) => TaskDefSchema.parse({ agent: "noop", ...t })) },
    submittedAt: new Date().toISOString(),
  });
  await h.client.js.publish(h.topo.subjects.submit, data, { headers });
}


/** Bounds a watch, so a missing event fails the test instead of hanging it. */
const bounded = () => ({ signal: AbortSignal.timeout(30_000) });

const noopGraph = () =>
  graphOf({ name: "noop", tasks: [{ id: "a", agent: "noop" }, { id: "b", agent: "noop", needs: ["a"] }, { id: "c", agent: "noop", needs: ["a"] }] });

describe("scheduler - graph checks on raw submissions", () => {
  it("rejects a cycle with a run.rejected event that names its path", async () => {
    const runId = newRunId();
    await submitRaw(main, runId, [{ id: "a", needs: ["c"] }, { id: "b", needs: ["a"] }, { id: "c", needs: ["b"] }, { id: "d" }]);
    const events: AdoEvent[] = [];
    const outcome = await main.client.watch(runId, { ...bounded(), onEvent: (e) => events.push(e) });
    expect(outcome.status).toBe("rejected");
    expect(outcome.error).toContain("a -> c -> b -> a");
    const rejected = events.find((e) => e.type === "run.rejected");
    expect(rejected && rejected.type === "run.rejected" && [...new Set(rejected.tasks)].sort()).toEqual(["a", "b", "c"]);
    expect(events.some((e) => e.type === "run.accepted" || e.type === "task.queued")).toBe(false);
  });

  it("rejects an unknown dependency, naming both tasks", async () => {
    const runId = newRunId();
    await submitRaw(main, runId, [{ id: "a" }, { id: "b", needs: ["a", "ghost"] }]);
    const outcome = await main.client.watch(runId, bounded());
    expect(outcome.status).toBe("rejected");
    expect(outcome.error).toContain("'b'");
    expect(outcome.error).toContain("'ghost'");
  });

  it("AdoClient.submit refuses both locally with a GraphError and publishes nothing", async () => {
    const cycle: GraphInput = { name: "c", tasks: ["x", "y"].map((id, i) => TaskDefSchema.parse({ id, agent: "noop", needs: [i ? "x" : "y"] })) };
    const unknown: GraphInput = { name: "u", tasks: [TaskDefSchema.parse({ id: "x", agent: "noop", needs: ["nowhere"] })] };
    const ids = [newRunId(), newRunId()];
    await expect(main.client.submit({ graph: cycle, runId: ids[0] })).rejects.toThrow(GraphError);
    await expect(main.client.submit({ graph: cycle, runId: ids[0] })).rejects.toThrow(/x -> y -> x/);
    await expect(main.client.submit({ graph: unknown, runId: ids[1] })).rejects.toThrow(/'x' needs 'nowhere'/);
    // Submissions are handled in order: once a later run has completed, anything
    // published for the refused ones would have produced an event by now.
    expect((await main.client.run({ ...bounded(), graph: noopGraph() })).status).toBe("succeeded");
    const js = jetstream(main.client.nc);
    for (const runId of ids) {
      const c = await js.consumers.get(main.topo.streams.events.name, { filter_subjects: main.topo.subjects.runEvents(runId), deliver_policy: DeliverPolicy.All });
      expect((await c.info()).num_pending).toBe(0);
    }
  });
});

describe("actors - malformed messages", () => {
  it("dead-letter every malformed message on every subject they consume, keep running, and reject a malformed submission by its run id", async () => {
    const h = await harness(1);
    const repo = await makeRepo();
    try {
      const { topo, stack, client } = h;
      const js = jetstream(client.nc);
      const runId = newRunId();
      const now = new Date().toISOString();
      const work: z.input<typeof TaskWork> = {
        type: "task.work",
        runId,
        taskId: "x",
        attempt: 1,
        priority: "normal",
        task: { id: "x", prompt: "", agent: "noop", priority: "normal", retry: { attempts: 1 } },
        branch: `ado/${runId}/x`,
        inputs: [],
        readyAt: now,
        submittedAt: now,
      };
      // A valid payload for each subject, sent under a wrong schema header.
      const valid = {
        submit: encode(SCHEMAS.SubmitRun, { type: "run.submit", runId: newRunId(), graph: noopGraph(), submittedAt: now }).data,
        ready: encode(SCHEMAS.TaskWork, work).data,
        work: encode(SCHEMAS.TaskWork, { ...work, workerId: stack.workers[0]!.id }).data,
        results: encode(SCHEMAS.SchedulerInput, { type: "merge.result", runId, taskId: "x", status: "merged", integrationCommit: "a".repeat(40), files: [], message: "" }).data,
        merge: encode(SCHEMAS.MergeRequest, {
          type: "merge.request",
          runId,
          taskId: "x",
          repo: repo.dir,
          commit: "a".repeat(40),
          branch: "b",
          baseCommit: "a".repeat(40),
          integrationBranch: `ado/${runId}/integration`,
        }).data,
      };
      const targets = [
        { key: "submit", subject: topo.subjects.submit, actor: "scheduler" },
        { key: "ready", subject: topo.subjects.ready("normal"), actor: "balancer" },
        { key: "work", subject: topo.subjects.work(stack.workers[0]!.id), actor: "worker" },
        { key: "results", subject: topo.subjects.results(runId), actor: "scheduler" },
        { key: "merge", subject: topo.subjects.merge(runId), actor: "merger" },
      ] as const;

      const sent: Array<{ subject: string; actor: string; kind: string; payload: Uint8Array }> = [];
      for (const [i, t] of targets.entries()) {
        const garbage = new Uint8Array([0xc1, ...new TextEncoder().encode(`garbage ${i}`)]);
        const shape = packRaw({ type: "nonsense", target: t.key });
        const wrongHeader = natsHeaders();
        wrongHeader.set("Ado-Schema", "bogus.kind/1");
        await js.publish(t.subject, garbage);
        await js.publish(t.subject, shape);
        await js.publish(t.subject, valid[t.key], { headers: wrongHeader });
        sent.push(
          { subject: t.subject, actor: t.actor, kind: "garbage", payload: garbage },
          { subject: t.subject, actor: t.actor, kind: "shape", payload: shape },
          { subject: t.subject, actor: t.actor, kind: "header", payload: valid[t.key] },
        );
      }
      // A submission that cannot be read but carries a run id: its sender must hear back.
      const salvageId = newRunId();
      const salvage = packRaw({ type: "run.submit", runId: salvageId, graph: "not a graph" });
      await js.publish(topo.subjects.submit, salvage);
      sent.push({ subject: topo.subjects.submit, actor: "scheduler", kind: "salvage", payload: salvage });

      const rejected = await client.watch(salvageId, bounded());
      expect(rejected.status).toBe("rejected");
      expect(rejected.error).toMatch(/could not be read/);

      const jsm = await js.jetstreamManager();
      await eventually(async () => (await jsm.streams.info(topo.streams.dlq.name)).state.messages >= sent.length, 15_000, "dead letters");
      const letters: DeadLetter[] = [];
      const dlq = await js.consumers.get(topo.streams.dlq.name);
      for (let i = 0; i < sent.length; i++) {
        const m = await dlq.next({ expires: 5_000 });
        if (!m) break;
        letters.push(decode(SCHEMAS.DeadLetter, m.data, m.headers));
      }
      const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
      for (const s of sent) {
        const letter = letters.find((l) => hex(l.payload) === hex(s.payload));
        expect(letter, `a dead letter for the ${s.kind} message on ${s.subject}`).toBeDefined();
        expect(letter!.subject).toBe(s.subject);
        expect(letter!.actor).toBe(s.actor);
        expect(letter!.reason.trim()).not.toBe("");
        if (s.kind === "header") {
          expect(letter!.headers["Ado-Schema"]).toBe("bogus.kind/1");
          expect(letter!.reason).toContain("bogus.kind/1");
        }
      }

      // Every actor is still at work: a noop run (scheduler, balancer, the one worker)
      // and a run with a merge (merge coordinator) both succeed.
      expect((await client.run({ ...bounded(), graph: noopGraph() })).status).toBe("succeeded");
      const withMerge = await client.run({ ...bounded(), graph: graphOf({ tasks: [{ id: "w", run: "echo ok > after.txt" }] }), repo: repo.dir });
      expect(withMerge.status).toBe("succeeded");
      expect(gitOut(repo.dir, "show", `${withMerge.integrationBranch}:after.txt`)).toBe("ok");
      for (const a of [...stack.actors, ...stack.workers]) expect(a.state).toBe("running");
      // Nothing else was dead-lettered on the way.
      expect((await jsm.streams.info(topo.streams.dlq.name)).state.messages).toBe(sent.length);
    } finally {
      await h.close();
      await repo.cleanup();
    }
  });
});

describe("worker - timeouts, retries and environment", () => {
  it("fails a task that outlives its timeout, kills its processes, and leaves the checkout alone", async () => {
    const repo = await dirtyRepo();
    const pids = await mkdtemp(join(ts.scratch, "pids-"));
    try {
      const graph = graphOf({
        tasks: [
          {
            id: "slow",
            // Long enough for the agent to write both pid files before it is killed (500 ms could pass first on a loaded machine).
            timeout: "3s",
            retry: { attempts: 1 },
            run: `echo $$ > ${pids}/sh.pid; sleep 30 & echo $! > ${pids}/sleep.pid; wait`,
          },
          { id: "after", needs: ["slow"], run: "true" },
        ],
      });
      const events: AdoEvent[] = [];
      const outcome = await main.client.run({ ...bounded(), graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("failed");
      expect(outcome.error).toMatch(/'slow'.*timed out after 3000 ms/);
      expect(Object.fromEntries(outcome.tasks.map((t) => [t.id, t.status]))).toEqual({ slow: "failed", after: "skipped" });
      const failed = events.filter((e) => e.type === "task.failed");
      expect(failed).toHaveLength(1);
      for (const name of ["sh.pid", "sleep.pid"]) {
        const pid = Number((await readFile(join(pids, name), "utf8")).trim());
        expect(pid).toBeGreaterThan(1);
        await eventually(async () => !(await isRunning(pid)), 5_000, `process ${pid} (${name}) to be gone`);
      }
      expect(await checkoutFingerprint(repo.dir)).toBe(repo.before);
      expect(gitOut(repo.dir, "worktree", "list")).not.toContain(outcome.runId);
    } finally {
      await repo.cleanup();
    }
  });

  it("retries a failed attempt from a clean base, and succeeds on attempt 2", async () => {
    const repo = await makeRepo();
    try {
      const graph = graphOf({
        tasks: [{ id: "flaky", retry: { attempts: 2 }, run: `echo "attempt $ADO_ATTEMPT" >> log.txt; [ "$ADO_ATTEMPT" = 2 ]` }],
      });
      const events: AdoEvent[] = [];
      const outcome = await main.client.run({ ...bounded(), graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("succeeded");
      expect(outcome.tasks).toEqual([expect.objectContaining({ id: "flaky", status: "succeeded", attempts: 2 })]);
      const failures = events.flatMap((e) => (e.type === "task.failed" ? [e] : []));
      expect(failures.map((e) => [e.attempt, e.willRetry])).toEqual([[1, true]]);
      expect(failures[0]!.error).toMatch(/exited with code 1/);
      // Attempt 2 started from the base, not on top of attempt 1's leftovers.
      expect(gitOut(repo.dir, "show", `ado/${outcome.runId}/flaky:log.txt`)).toBe("attempt 2");
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:log.txt`)).toBe("attempt 2");
      // Attempt 1's work is kept aside, not lost.
      expect(gitOut(repo.dir, "show", `refs/ado/attempts/${outcome.runId}/flaky/1:log.txt`)).toBe("attempt 1");
    } finally {
      await repo.cleanup();
    }
  });

  it("gives a shell task its run id, task id, prompt, attempt, branch and inputs in the environment", async () => {
    const repo = await makeRepo();
    try {
      const prompt = `write "hello" & say it's done`;
      const graph = graphOf({
        tasks: [
          { id: "dep", run: "echo dep > dep.txt" },
          {
            id: "envtask",
            needs: ["dep"],
            prompt,
            run: `printf '%s\\n' "$ADO_RUN_ID" "$ADO_TASK_ID" "$ADO_PROMPT" "$ADO_ATTEMPT" "$ADO_BRANCH" > env.txt; printf '%s' "$ADO_INPUTS" > inputs.json`,
          },
        ],
      });
      const outcome = await main.client.run({ ...bounded(), graph, repo: repo.dir });
      expect(outcome.status).toBe("succeeded");
      const branch = `ado/${outcome.runId}/envtask`;
      expect(gitOut(repo.dir, "show", `${branch}:env.txt`).split("\n")).toEqual([outcome.runId, "envtask", prompt, "1", branch]);
      const depCommit = gitOut(repo.dir, "rev-parse", `ado/${outcome.runId}/dep`);
      expect(JSON.parse(gitOut(repo.dir, "show", `${branch}:inputs.json`))).toMatchObject([{ taskId: "dep", status: "succeeded", commit: depCommit, branch: `ado/${outcome.runId}/dep` }]);
    } finally {
      await repo.cleanup();
    }
  });
});

describe("merge - conflicts", () => {
  it("stops the run for a person naming both tasks and the file, keeps exactly one side, and leaves the checkout alone", async () => {
    const repo = await dirtyRepo({ "README.md": "# sample\n", "shared.txt": "base\n" });
    try {
      const graph = graphOf({
        tasks: [
          { id: "left", run: "echo left > shared.txt" },
          { id: "right", run: "echo right > shared.txt" },
          { id: "join", needs: ["left", "right"], run: "true" },
        ],
      });
      const events: AdoEvent[] = [];
      const outcome = await main.client.run({ ...bounded(), graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      // With no rule or resolver configured, a conflict waits for a person (ado hitl).
      expect(outcome.status).toBe("needs_attention");
      expect(outcome.error).toContain("'left'");
      expect(outcome.error).toContain("'right'");
      expect(outcome.error).toContain("shared.txt");

      const conflicts = events.flatMap((e) => (e.type === "merge.conflict" ? [e] : []));
      expect(conflicts).toHaveLength(1);
      expect(conflicts[0]!.files).toEqual(["shared.txt"]);
      const loser = conflicts[0]!.taskId;
      const winner = loser === "left" ? "right" : "left";
      const status = Object.fromEntries(outcome.tasks.map((t) => [t.id, t.status]));
      expect(status).toEqual({ [winner]: "succeeded", [loser]: "needs_attention", join: "pending" });
      expect(outcome.attention?.map((a) => a.taskId)).toEqual([loser]);

      // The integration branch is the winner's work and nothing of the loser's.
      const integration = outcome.integrationBranch!;
      expect(gitOut(repo.dir, "show", `${integration}:shared.txt`)).toBe(winner);
      expect(gitOut(repo.dir, "rev-parse", integration)).toBe(gitOut(repo.dir, "rev-parse", `ado/${outcome.runId}/${winner}`));
      // The losing branch is kept for the person to resolve.
      expect(gitOut(repo.dir, "show", `ado/${outcome.runId}/${loser}:shared.txt`)).toBe(loser);
      expect(await checkoutFingerprint(repo.dir)).toBe(repo.before);
    } finally {
      await repo.cleanup();
    }
  });

  it("leaves no worktree of a conflicting run registered (and locked) in the repository", async () => {
    const repo = await makeRepo({ "shared.txt": "base\n" });
    try {
      const graph = graphOf({
        tasks: [
          { id: "left", run: "echo left > shared.txt" },
          { id: "right", run: "echo right > shared.txt" },
        ],
      });
      const outcome = await main.client.run({ ...bounded(), graph, repo: repo.dir });
      expect(outcome.status).toBe("needs_attention");
      // A locked worktree survives `git worktree prune` and keeps its branch from being
      // deleted; once the run is over nothing may hold on to either. The merge coordinator
      // removes a merged task's worktree after reporting the merge (off the merge path), so
      // the winner's goes a moment later; the loser's was never kept.
      await eventually(() => !gitOut(repo.dir, "worktree", "list", "--porcelain").includes(outcome.runId), 30_000, "no worktree of the run left registered");
    } finally {
      await repo.cleanup();
    }
  });
});
