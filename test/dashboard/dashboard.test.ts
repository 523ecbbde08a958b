import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { startDashboard, type Dashboard } from "../../src/dashboard/server.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { asRunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

/**
 * The web dashboard in a real browser: Debian's chromium driven by playwright-core (no
 * browser download is possible here; scripts/setup.sh installs the package). A real
 * stack runs real graphs; the test looks at the page only.
 */
const CHROMIUM = process.env.ADO_CHROMIUM ?? "/usr/bin/chromium";
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`dashboard browser tests skipped: no chromium at ${CHROMIUM} (apt-get install chromium, or set ADO_CHROMIUM)`);

let ts: TestServer;
let scratch: string;
let browser: Browser;
beforeAll(async () => {
  if (!haveBrowser) return;
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-dash-"));
  // Root in a container has no user namespaces for chromium's sandbox.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  await ts?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function setup(workers = 2) {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: join(scratch, `wt-${topo.prefix}`), heartbeatMs: 200 });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
  const dnc = await connectNats({ servers: ts.url, name: "test-dashboard", logger: silentLogger });
  const dashboard: Dashboard = await startDashboard({ nc: dnc, topo, logger: silentLogger, port: 0 });
  const page: Page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  return {
    topo,
    client: new AdoClient(nc, topo),
    dashboard,
    page,
    errors,
    close: async () => {
      await page.close();
      await dashboard.close();
      await dnc.drain();
      await nc.drain();
      await stack.close();
    },
  };
}

const stateOf = (page: Page, task: string) => page.locator(`tr[data-task="${task}"]`).getAttribute("data-state", { timeout: 1_000 }).catch(() => null);

describe.skipIf(!haveBrowser)("dashboard - in a real browser", () => {
  it("shows tasks changing state live and a task's output; pause pauses the run and resume lets it finish", async () => {
    const repo = await makeRepo();
    const { client, dashboard, page, errors, close } = await setup();
    try {
      const gate = join(scratch, "gate-1");
      const graph = parseGraph(`
name: live
tasks:
  - { id: slow, run: "echo hello-from-slow; while [ ! -f '${gate}' ]; do sleep 0.05; done; echo bye > s.txt" }
  - { id: after, needs: [slow], run: "echo after > a.txt" }
  - { id: quick, run: "echo quick > q.txt" }
`);
      const events: { e: AdoEvent; seen: number }[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const watching = client.watch(asRunId(runId), { onEvent: (e) => events.push({ e, seen: Date.now() }) });
      await page.goto(`${dashboard.url}#run=${runId}`);

      await eventually(async () => (await stateOf(page, "slow")) === "running", 60_000, "slow running in the page");
      expect(await stateOf(page, "after")).toBe("pending");
      await eventually(async () => (await stateOf(page, "quick")) === "succeeded", 60_000, "quick succeeded in the page");
      // The runs view lists it.
      await expect.poll(() => page.locator(`#runs tr[data-run="${runId}"]`).count(), { timeout: 10_000 }).toBe(1);

      // The task's output, live.
      await page.click('tr[data-task="slow"]');
      await eventually(async () => (await page.textContent("#output"))?.includes("hello-from-slow"), 20_000, "slow's output in the page");
      await eventually(async () => /slow#1 started on w-/.test((await page.textContent("#activity")) ?? ""), 20_000, "slow's activity in the page");

      // Pause from the page: the run is paused (the scheduler's record says so), and the page shows it.
      await page.click('#runhead button[data-action="pause"]');
      await eventually(async () => (await client.status(runId))?.run.paused, 20_000, "the run paused");
      await eventually(async () => (await page.textContent("#run-status")) === "paused", 20_000, "paused in the page");
      await writeFile(gate, "");
      // Paused: slow's agent is suspended, so it cannot see the gate, and nothing new starts.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(await stateOf(page, "after")).toBe("pending");
      expect((await client.status(runId))!.tasks.find((t) => t.id === "slow")!.status).toBe("running");

      await page.click('#runhead button[data-action="resume"]');
      await eventually(async () => (await page.textContent("#run-status")) === "succeeded", 60_000, "the run succeeded in the page");
      for (const t of ["slow", "after", "quick"]) expect(await stateOf(page, t)).toBe("succeeded");
      const outcome = await watching;
      expect(outcome.status).toBe("succeeded");

      // How long after its event each task's state showed in the page (both clocks are this machine's).
      const { seen, firstState } = (await page.evaluate("({ seen: window.__ado.seen, firstState: window.__ado.firstState })")) as { seen: { id: string; status: string; at: number }[]; firstState: number };
      // Only what started while the page was open: the rest was there when it loaded.
      const started = events.filter((x) => x.e.type === "task.started" && Date.parse(x.e.at) > firstState);
      expect(started.length).toBeGreaterThan(0);
      const lags = started.map(({ e }) => {
        const shown = seen.find((s) => "taskId" in e && s.id === e.taskId && s.status === "running");
        return shown ? shown.at - Date.parse(e.at) : undefined;
      });
      console.info(`dashboard: task.started -> shown in the page: ${lags.map((l) => (l === undefined ? "not seen running" : `${l} ms`)).join(", ")}`);
      expect(errors).toEqual([]);
    } finally {
      await close();
      await repo.cleanup();
    }
  }, 180_000);

  it("a merge conflict waiting for a person is shown with its files and both sides, and resolved from the page", async () => {
    const repo = await makeRepo({ "list.txt": "start\n" });
    const { client, dashboard, page, errors, close } = await setup();
    try {
      const graph = parseGraph(`
name: conflict
tasks:
  - { id: a, run: "printf 'start\\\\nA\\\\n' > list.txt" }
  - { id: b, run: "sleep 0.3; printf 'start\\\\nB\\\\n' > list.txt" }
  - { id: c, needs: [a, b], run: "cp list.txt final.txt" }
`);
      const { runId } = await client.submit({ graph, repo: repo.dir });
      await page.goto(`${dashboard.url}#run=${runId}`);
      const card = page.locator(`.hitl[data-hitl^="${runId}."]`);
      await card.waitFor({ timeout: 90_000 });
      const text = (await card.textContent()) ?? "";
      expect(text).toContain("list.txt");
      // Both sides of the conflict are shown.
      expect(text).toMatch(/A/);
      expect(text).toMatch(/B/);
      const hitlId = (await card.getAttribute("data-hitl"))!;
      const loser = hitlId.split(".")[1]!;
      await eventually(async () => (await stateOf(page, loser)) === "needs_attention", 20_000, "the task needing attention in the page");

      await card.locator('button[data-choice="theirs"]').click();
      await eventually(async () => (await page.textContent("#run-status")) === "succeeded", 90_000, "the run succeeded after the resolution");
      const outcome = await eventually(() => client.finishedOutcome(runId), 20_000, "the run's end in its record");
      expect(outcome.status).toBe("succeeded");
      // The task's side won, as `ado hitl resolve --choose theirs` would have it.
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:final.txt`)).toBe(`start\n${loser.toUpperCase()}`);
      expect(await page.locator(".hitl").count()).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await close();
      await repo.cleanup();
    }
  }, 240_000);
});
