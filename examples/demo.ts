/**
 * The demo: makes a small sample repository in a temp directory, runs
 * examples/demo/graph.yaml on it with `ado run` (embedded NATS, four workers), then
 * shows the merged history and where the result is. Run with `npm run demo`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const repo = mkdtempSync(join(tmpdir(), "ado-demo-"));
const git = (...args: string[]) => execFileSync("git", args, { cwd: repo, encoding: "utf8" }).trim();

git("init", "-q", "-b", "main");
writeFileSync(join(repo, "README.md"), "# demo site\n");
git("add", "-A");
git("-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "-q", "-m", "initial commit");

const say = (s: string) => process.stdout.write(`\x1b[1m${s}\x1b[0m\n`);
say(`sample repository: ${repo}`);
say("running examples/demo/graph.yaml with 4 workers (api, ui, styles, docs in parallel; then tests; then bundle)\n");

const run = spawnSync(
  process.execPath,
  [join(here, "..", "bin", "ado.mjs"), "run", "--graph", join(here, "demo", "graph.yaml"), "--repo", repo, "--workers", "4", "--json"],
  { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" },
);
if (run.status !== 0) {
  process.stderr.write(run.stdout);
  process.exit(run.status ?? 1);
}
const outcome = JSON.parse(run.stdout) as { runId: string; integrationBranch: string; tasks: { id: string; workerId: string; startedAt: string; finishedAt: string }[] };

say("\ntasks (worker, start -> finish):");
const t0 = Math.min(...outcome.tasks.map((t) => Date.parse(t.startedAt)));
for (const t of outcome.tasks) {
  const from = ((Date.parse(t.startedAt) - t0) / 1000).toFixed(2);
  const to = ((Date.parse(t.finishedAt) - t0) / 1000).toFixed(2);
  process.stdout.write(`  ${t.id.padEnd(7)} ${t.workerId.padEnd(22)} ${from}s -> ${to}s\n`);
}
say(`\nmerged history of ${outcome.integrationBranch}:`);
process.stdout.write(git("log", "--oneline", "--graph", "--decorate=no", outcome.integrationBranch) + "\n");
say("\nfiles on the integration branch:");
process.stdout.write(git("ls-tree", "-r", "--name-only", outcome.integrationBranch) + "\n");
say("\nyour checkout was not touched:");
process.stdout.write(`  ${git("rev-parse", "--abbrev-ref", "HEAD")} at ${git("log", "-1", "--format=%h %s")}, status: ${git("status", "--porcelain") || "clean"}\n`);
say(`\nthe result: branch ${outcome.integrationBranch} in ${repo}`);
process.stdout.write(`  cd ${repo} && git merge ${outcome.integrationBranch}\n`);
