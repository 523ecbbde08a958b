/**
 * Stress check of the agent reaper (src/agents/reaper.ts): starts a stand-in worker
 * process that starts agent groups at a steady pace (a third of them long, the rest
 * ending at once), SIGKILLs it at a random moment 0-450 ms after it started, and
 * counts the agents still running 6 s later. Run it under CPU load for the numbers in
 * the reaper's history (docs/ARCHITECTURE.md, "No orphan processes"):
 *
 *   yes > /dev/null & yes > /dev/null &      # then kill both
 *   npx tsx scripts/reaper-stress.ts 25
 *
 * Linux only (reads /proc). Every agent carries a unique marker in its command line.
 */
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { runProcessGroup, Suspender } from "../src/agents/index.js";

const SELF = fileURLToPath(import.meta.url);

async function standInWorker(mark: string, delayMs: number): Promise<void> {
  process.stdout.write("ready\n");
  await new Promise((r) => setTimeout(r, delayMs));
  for (let i = 0; ; i++) {
    void runProcessGroup("sh", ["-c", `sleep ${i % 3 === 0 ? 30 : 0}; : ${mark}-${i}`], {
      env: {},
      task: { id: "t", agent: "shell", prompt: "", run: "" } as never,
      signal: new AbortController().signal,
      suspender: new Suspender(),
      onOutput: () => undefined,
    });
    await new Promise((r) => setTimeout(r, Math.random() * 30));
  }
}

async function withMark(mark: string): Promise<number[]> {
  const pids: number[] = [];
  for (const e of await readdir("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const cmd = (await readFile(`/proc/${e}/cmdline`, "utf8").catch(() => "")).replace(/\0/g, " ");
    const stat = await readFile(`/proc/${e}/stat`, "utf8").catch(() => "");
    if (cmd.includes(mark) && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z") pids.push(Number(e));
  }
  return pids;
}

async function main(iterations: number): Promise<void> {
  let misses = 0;
  for (let i = 0; i < iterations; i++) {
    const mark = `ado-reaper-stress-${process.pid}-${i}`;
    const child = spawn(process.execPath, ["--import", "tsx", SELF, "--worker", mark, String(Math.floor(Math.random() * 50))], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((r) => child.stdout!.once("data", () => r()));
    await new Promise((r) => setTimeout(r, Math.random() * 400));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    await new Promise((r) => setTimeout(r, 6_000));
    const left = await withMark(mark);
    if (left.length) misses++;
    console.log(`iteration ${i}: ${left.length ? `${left.length} agent(s) outlived their worker` : "ok"}`);
    for (const pid of left) process.kill(pid, "SIGKILL");
  }
  console.log(`misses ${misses}/${iterations}`);
}

if (process.argv[2] === "--worker") await standInWorker(process.argv[3]!, Number(process.argv[4] ?? 0));
else await main(Number(process.argv[2] ?? 25));
