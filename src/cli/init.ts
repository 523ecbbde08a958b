import { rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { openRepo } from "../git/index.js";
import { CONFIG_FILE } from "../runtime/config.js";
import { CliError, Exit } from "./common.js";

/** The example graph `ado init` writes. */
export const EXAMPLE_GRAPH = "ado.graph.yaml";

const CONFIG_TEXT = `# ado's settings for this repository. Every one is optional: each line shows the
# default (or an example), commented out. Environment variables (ADO_SERVER,
# ADO_WORKERS, ADO_LOG_LEVEL, ...) and command-line flags override this file.

# A NATS server with JetStream. Without one, ado run starts its own for the run, and
# ado up keeps one running for every command on this machine.
# server: nats://127.0.0.1:4222

# prefix: ado                # subjects, streams and buckets: lets installations share one NATS
# workers: 4                 # workers of the embedded stack
# slots: auto                # tasks one worker runs at once; default auto: this host's idle cores and
#                            # free memory (agentMemoryMb per agent) within its container's limits,
#                            # shared by its workers; or a number (ADO_SLOTS, --slots)
# agentMemoryMb: 1536        # memory one agent is taken to need, for auto (set what your agents use)
# logLevel: warn             # fatal | error | warn | info | debug | trace | silent (-q / -v on the command line)

# Each task works in its own git worktree, outside your checkout by default (inside it
# only if git ignores the directory).
# worktreeDir: ~/.cache/ado/worktrees
# worktrees:
#   include: [.env]          # files git does not carry, copied into each task's worktree
#   cleanupAfter: 7d         # finished worktrees with work: archived, then removed

# How finished tasks land on the run's integration branch (a graph's merge: overrides this).
# merge:
#   mode: merge              # merge | squash | linear
#   rules:
#     - { paths: [CHANGELOG.md], strategy: union }
#   validate: { run: npm test, timeout: 10m }   # a merge that breaks it is backed out

# balancer: { strategy: least_loaded }   # round_robin | random | capability_match | cost_optimized

# Hosts without this repository work from clones of a git remote (ado run --remote).
# remote: git@git.example.com:team/app.git
`;

const GRAPH_TEXT = `# An example task graph. Run it:   ado run --graph ${EXAMPLE_GRAPH}
# Each task runs in its own worktree and branch (ado/<run>/<task>); what it changes is
# committed there and merged into ado/<run>/integration. Your checkout is not touched.
name: example
tasks:
  - id: hello
    prompt: Write a greeting            # the agent's prompt (ADO_PROMPT); or promptFile: prompts/hello.md
    run: echo "hello from $ADO_TASK_ID" > hello.txt   # the shell agent runs this with sh -c
  - id: world
    run: echo world > world.txt
    env: { GREETING: hi }               # extra environment for this task
  - id: both
    needs: [hello, world]               # starts from a commit holding hello's and world's work
    run: cat hello.txt world.txt > both.txt
    timeout: 5m                         # its process group is killed past this
    retry: { attempts: 2 }
`;

/**
 * \`ado init\`: writes a commented ado.config.yaml and an example graph at the top of
 * the repository (or in --dir). Refuses, writing nothing, when either exists.
 */
export async function initCommand(flags: { dir?: string }): Promise<number> {
  let dir = flags.dir;
  let note = "";
  if (!dir) {
    const repo = await openRepo(process.cwd()).catch(() => undefined);
    dir = repo?.topLevel ?? process.cwd();
    if (!repo) note = "note: this is not a git repository with a commit yet, and ado runs on one: git init && git commit first";
  }
  const files = [
    { path: join(dir, CONFIG_FILE), text: CONFIG_TEXT },
    { path: join(dir, EXAMPLE_GRAPH), text: GRAPH_TEXT },
  ];
  const written: string[] = [];
  try {
    // "wx": create only, so a file that appears meanwhile is not overwritten either.
    for (const f of files) {
      await writeFile(f.path, f.text, { flag: "wx" });
      written.push(f.path);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    for (const w of written) await rm(w, { force: true });
    const exists = (err as NodeJS.ErrnoException).path ?? "";
    throw new CliError(`${exists} exists already: ado init writes nothing over it (move it away, or edit it)`);
  }
  const rel = (p: string) => relative(process.cwd(), p) || p;
  process.stdout.write(
    [
      `wrote ${rel(files[0]!.path)} (every setting, commented out) and ${rel(files[1]!.path)} (an example graph)`,
      `run the example: ado run --graph ${rel(files[1]!.path)}`,
      "",
    ].join("\n"),
  );
  if (note) process.stderr.write(`ado: ${note}\n`);
  return Exit.ok;
}
