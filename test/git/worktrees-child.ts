/**
 * A separate OS process for the multi-process worktree test (worktrees-concurrency.test.ts):
 * its own WorktreeManager, so nothing in memory serializes it with its siblings; only
 * git's lock files and the manager's retries stand between them.
 *
 *   node --import tsx worktrees-child.ts <add|remove> <repo> <baseDir> <base> <prefix> <count> <startAtMs>
 *
 * Waits until startAtMs (so all children start together after loading), runs `count`
 * adds (or removes) at once, and prints one JSON line: { ok, failed: [messages], warnings }.
 */
import { pino } from "pino";
import { WorktreeManager } from "../../src/git/worktrees.js";

const [mode, repo, baseDir, base, prefix, countArg, startAtArg] = process.argv.slice(2);
const count = Number(countArg);
const warnings: string[] = [];
const logger = pino({ level: "warn" }, { write: (line: string) => void warnings.push(JSON.parse(line).msg as string) });
const manager = new WorktreeManager({ repo: repo!, baseDir: baseDir!, logger });

await new Promise((r) => setTimeout(r, Math.max(0, Number(startAtArg) - Date.now())));
const names = Array.from({ length: count }, (_, i) => `${prefix}/t${i}`);
const results = await Promise.allSettled(
  names.map((name) =>
    mode === "add" ? manager.add({ name, branch: `ado/${name}`, base: base!, lockReason: `child ${process.pid}` }) : manager.remove(`${baseDir}/${name}`),
  ),
);
const failed = results.flatMap((r) => (r.status === "rejected" ? [String((r.reason as Error).message)] : []));
process.stdout.write(JSON.stringify({ ok: count - failed.length, failed, warnings }) + "\n");
