import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connectNats } from "../../src/runtime/connection.js";
import { asRunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { ADO_BIN, runAdo } from "../helpers/cli.js";
import { chaosFixture, chaosGraphFile, follow, RestartableNats, startInstallation, verifyPromises } from "../helpers/chaos.js";
import { eventually } from "../helpers/nats.js";

/**
 * Issue 9.8, a full disk. The JetStream store sits on an 8 MB tmpfs; once a run is
 * going, a file fills the disk but for half a megabyte and the tasks' output takes the
 * rest. nats-server 2.9.10 then deadlocks in its file store: pings answer, no JetStream
 * request is answered again, even once space is freed (see src/runtime/server-health.ts).
 * ado must say so, with what to do, in `ado run` (stderr, at most every ~10 s), in
 * `ado status` and on `/ready`; once space is freed and nats-server restarted on the
 * same store, the run must go on to success with ado's promises kept.
 *
 * Needs to mount a tmpfs (root, or CAP_SYS_ADMIN); skipped with the reason otherwise.
 *
 * Opt-in (ADO_CHAOS_DISK=1): it needs a tmpfs mount and takes minutes, and its last
 * step depends on how a 2.9.10 server recovers a store that lost its last writes.
 */
const OPT_IN = process.env.ADO_CHAOS_DISK === "1";

let scratch: string;
let mnt: string;
let mountError: string | undefined;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "ado-chaos-disk-"));
  mnt = join(scratch, "fs");
  if (!OPT_IN) {
    mountError = "not opted in";
    return;
  }
  try {
    execFileSync("mkdir", ["-p", mnt]);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt], { stdio: "pipe" });
  } catch (err) {
    mountError = ((err as { stderr?: Buffer }).stderr?.toString() || String(err)).trim();
  }
});
afterAll(async () => {
  if (!mountError) {
    try {
      execFileSync("umount", [mnt], { stdio: "pipe" });
    } catch {
      execFileSync("umount", ["-l", mnt], { stdio: "pipe" }); // something still holds it: detach it
    }
  }
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

/** `ado run` as a process, with each stderr line and when it came. */
function adoRun(args: string[]): { child: ChildProcess; stderr: Array<{ at: number; line: string }>; stdout: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [ADO_BIN, "run", ...args], { env: { ...process.env, ADO_LOG_LEVEL: "error" }, stdio: ["ignore", "pipe", "pipe"] });
  const stderr: Array<{ at: number; line: string }> = [];
  let out = "";
  let partial = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d: Buffer) => {
    const lines = (partial + d.toString()).split("\n");
    partial = lines.pop()!;
    for (const line of lines) stderr.push({ at: Date.now(), line });
  });
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, stderr, stdout: () => out, exit };
}

const TROUBLE = /nats-server at \S+ is not answering JetStream requests, its store is likely full \(.*\): free space on .* and restart nats-server; ado resumes the run/;

describe("chaos - the disk under the JetStream store fills up", () => {
  it("ado run, ado status and /ready say the store is full or unresponsive and what to do; after space is freed and nats-server restarted on the same store, the run succeeds", async (ctx) => {
    if (!OPT_IN) ctx.skip("the full-disk scenario runs with ADO_CHAOS_DISK=1 (its restart step is an open defect: the run can stall after nats-server restarts on the freed store)");
    if (mountError) ctx.skip(`cannot mount a tmpfs to fill (${mountError}): run as root or with CAP_SYS_ADMIN`);
    const nats = await RestartableNats.start(join(mnt, "store"));
    const f = await chaosFixture("disk-full", scratch, nats.url);
    const filler = join(mnt, "filler");
    let run: ReturnType<typeof adoRun> | undefined;
    try {
      await startInstallation(f, 3);
      const health = await f.cluster.spawn("scheduler-probe", ["actor", "scheduler", "--health-port", "0"], /health: http:\/\/0\.0\.0\.0:\d+\/health/);
      const port = Number(/health: http:\/\/0\.0\.0\.0:(\d+)\//.exec(health.output())![1]);
      const ready = async () => {
        const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(15_000) });
        return { status: res.status, body: (await res.json()) as { status: string; reason: string } };
      };
      expect((await ready()).status).toBe(200);

      const graphFile = join(f.dir, "graph.json");
      await writeFile(graphFile, chaosGraphFile(f.log, { failFirst: ["r02", "r11"], outputKb: 64 }));
      run = adoRun(["--graph", graphFile, "--repo", f.repo.dir, "--server", nats.url, "--prefix", f.topo.prefix]);
      // ado run is a process of its own: starting it takes a minute at a load average of ~40.
      const runId = asRunId(await eventually(async () => (await f.client.runs({ active: true }))[0]?.runId, 180_000, "the run accepted"));
      // JetStream stays silent from the fill until the restart: more than a minute without events is expected.
      const watched = follow(f, runId, { idleMs: 180_000, maxMs: 600_000 });
      // Merges going on when the store stops answering.
      await watched.until(() => watched.count("task.merged") >= 2, "2 tasks merged");

      // The disk fills: all but half a megabyte taken by something else, the rest by the tasks' output.
      const fs = await statfs(mnt);
      await writeFile(filler, Buffer.alloc(Math.max(0, fs.bavail * fs.bsize - 512 * 1024)));
      const filledAt = Date.now();
      f.notes.push(`filled the disk at ${new Date(filledAt).toISOString()} with ${watched.count("task.merged")} merged`);
      // Under load the tasks may have printed most of their output before the fill: a
      // stream of the test's own takes what is left, on a connection of its own (the
      // write that fails jams the connection it came on), until a write goes unanswered.
      const fillConn = await connectNats({ servers: nats.url, name: "disk-full-filler", logger: silentLogger });
      try {
        await (await jetstreamManager(fillConn)).streams.add({ name: `${f.topo.prefix}-FILL`, subjects: [`${f.topo.prefix}.fill`] });
        const js = jetstream(fillConn, { timeout: 10_000 });
        let unanswered = false;
        for (let i = 0; i < 200 && !unanswered; i++) await js.publish(`${f.topo.prefix}.fill`, new Uint8Array(64 * 1024)).catch(() => (unanswered = true));
        f.notes.push(`the test's own writes: ${unanswered ? "one went unanswered" : "all answered"}`);
      } finally {
        await fillConn.close().catch(() => undefined);
      }

      // ado run says what is wrong and what to do.
      const first = await eventually(() => run!.stderr.find((l) => TROUBLE.test(l.line)), 120_000, "ado run's line about the server").catch((err) => {
        throw new Error(`${(err as Error).message}; ado run's stderr:\n${run!.stderr.map((l) => l.line).join("\n")}\nnats-server:\n${nats.log}`);
      });
      f.notes.push(`ado run said it ${Math.round((first.at - filledAt) / 1000)} s after the fill: ${first.line}`);
      // ado status says it too, instead of timing out.
      const status = await runAdo(["status", runId, "--server", nats.url, "--prefix", f.topo.prefix], { timeoutMs: 180_000 });
      expect(status.code, status.stderr).toBe(1);
      expect(status.stderr).toMatch(/is not answering JetStream requests, its store is likely full .*: free space on .* and restart nats-server; ado resumes the run/);
      // And /ready fails with the reason; /health (liveness) does not: restarting ado would not help.
      const probe = await eventually(async () => {
        const r = await ready();
        return r.status === 503 && /not answering JetStream requests/.test(r.body.reason) ? r : undefined;
      }, 60_000, "/ready failing with the reason");
      expect(probe.body.reason).toMatch(/free space on .* and restart nats-server/);
      expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
      // Repeated while it lasts, but not more often than every ~10 s.
      await eventually(() => run!.stderr.filter((l) => TROUBLE.test(l.line)).length >= 2, 60_000, "ado run repeating its line");
      const said = run.stderr.filter((l) => TROUBLE.test(l.line)).map((l) => l.at);
      for (let i = 1; i < said.length; i++) expect(said[i]! - said[i - 1]!, "time between two repeats of the line").toBeGreaterThanOrEqual(9_000);

      // What the line says to do: free space, restart nats-server on the same store.
      await rm(filler);
      await nats.kill(); // a deadlocked 2.9.10 ignores SIGTERM
      await nats.restart();
      f.notes.push(`nats-server restarted at ${new Date().toISOString()}`);

      const code = await Promise.race([run.exit, watched.outcome.then(() => run!.exit), new Promise<string>((r) => setTimeout(() => r("still running"), 600_000))]);
      // Without the tasks' output lines (`  r01| xxx`), which would bury the rest.
      const printed = run.stdout().split("\n").filter((l) => !/^\s+\S+\| /.test(l)).join("\n");
      expect(code, `ado run's exit; stdout:\n${printed}\nstderr:\n${run.stderr.map((l) => l.line).join("\n")}`).toBe(0);
      expect(run.stdout()).toMatch(new RegExp(`run ${runId}: succeeded`));
      expect(run.stderr.some((l) => /answers again; the run goes on/.test(l.line))).toBe(true);
      await eventually(async () => (await ready()).status === 200, 60_000, "/ready passing again");
      // Every worker was cut off by the restart, none died.
      await verifyPromises(f, await watched.outcome, { cutOff: () => true });
      const lines = run.stderr.filter((l) => TROUBLE.test(l.line)).length;
      // What the schedulers' sweep of the work queues did after the restart (moveSkipped).
      const logged = f.cluster.all.flatMap((p) => p.output().split("\n"));
      for (const key of ["removed", "moved", "padded"]) {
        const n = logged.flatMap((l) => (l.includes('"actor":"scheduler"') ? [new RegExp(`"${key}":(\\d+)`).exec(l)?.[1]] : [])).filter((x) => x !== undefined);
        if (n.length) f.notes.push(`the sweep ${key}: ${n.join(", ")}`);
      }
      console.log(`[disk-full] ${f.notes.join("; ")}; ado run said it ${lines} time(s) in all, then that the server answers again; the run succeeded`);
    } catch (err) {
      await f.diagnose();
      console.log(`[disk-full] nats-server log:\n${nats.log}`);
      throw err;
    } finally {
      run?.child.kill("SIGKILL");
      await rm(filler, { force: true });
      await f.cleanup();
      await nats.stop(1_000);
    }
  }, 900_000);
});
