import { Command, CommanderError, Option } from "commander";
import { VERSION } from "../runtime/actor.js";
import { AdoError, errorMessage } from "../runtime/errors.js";
import { CliError, Exit, parseIntFlag, parseSlotsFlag } from "./common.js";
import { PROGRESS_MODES } from "./progress.js";

// Each command's module is loaded when the command runs, not for every command: `ado
// attach` then loads the client and the view, not the actors, the dashboard or the
// doctor (a fresh process's import time is part of what a user waits for).
const live = () => import("./live.js");
const serve = () => import("./serve.js");

/**
 * The commands this file defines that need none of the other groups (hitl, worktrees,
 * runs, workers, which come with their modules). Not `completion`: its script names
 * every command.
 */
const OWN_COMMANDS: ReadonlySet<string> = new Set(["run", "up", "dashboard", "worker", "doctor", "actor", "cancel", "pause", "resume", "budget", "attach", "detach", "status", "parallel", "logs", "prune", "nats", "init"]);

/**
 * Builds the `ado` command line. Every action returns its exit code. `command`: the one
 * the command line names; when this file defines it, the modules of the other command
 * groups are not loaded (their commands are left out: they are not the one that runs).
 */
export async function buildProgram(setExit: (code: number) => void, command?: string): Promise<Command> {
  const groups =
    command !== undefined && OWN_COMMANDS.has(command)
      ? undefined
      : await Promise.all([import("./hitl.js"), import("./worktrees.js"), import("./runs.js"), import("./workers.js")]);
  const program = new Command("ado")
    .description("Run many AI coding agents in parallel on one git repository: one worktree and branch per task, merged back for you.")
    .version(VERSION)
    .showHelpAfterError("(run `ado --help` or `ado <command> --help` for usage)")
    .exitOverride();

  const common = (cmd: Command) =>
    cmd
      .option("--server <url>", "NATS server URL (default: ADO_SERVER, the config, the `ado up` stack, or an embedded one)")
      .option("--config <file>", "config file (default: ./ado.config.yaml)")
      .option("--prefix <prefix>", "subject/stream prefix, to share one NATS between installations")
      .option("-q, --quiet", "log errors only")
      .option("-v, --verbose", "log more: -v info, -vv debug, -vvv trace (default: the config's logLevel, else warn)", (_: string, n: number) => n + 1, 0);

  common(
    program
      .command("run")
      .description("run a task graph (or one task) and follow it live; exit 0 only if it succeeded")
      .argument("[prompt]", "prompt of a single task (with --agent and --cmd)")
      .option("-g, --graph <file>", "task graph (YAML)")
      .option("-r, --repo <dir>", "git repository the tasks work on (default: current directory)")
      .option("-w, --workers <n>", "workers of the embedded stack", parseIntFlag("workers", 1, 256))
      .option("--auto-scale [min..max]", "the embedded stack's workers come and go with the work: `ado worker` processes the scaler starts while tasks wait and stops once idle (e.g. 0..6; alone: 0..--workers, or the config's local pool)")
      .option("--json", "print one JSON object with the outcome when the run ends")
      .option("-d, --detach", "submit, print the run id and return; the run goes on (needs `ado up` or --server)")
      .option("--wait", "if the queue is full, wait and submit again until accepted (default: exit 2 with 'queue full')")
      .addOption(new Option("--agent <name>", "agent of a single task").default("shell"))
      .option("--cmd <command>", "command of a single shell task")
      .option("--remote <url>", "git URL every worker can reach: workers without the repository work from clones of it (remote mode)")
      .option("--merge-mode <mode>", "how task branches land on the integration branch: merge, squash or linear (default: the config's, else merge)")
      .option("--validate <cmd>", "run this on every merged tree before the integration branch moves; a failure backs the merge out and asks a person")
      .option("--base <rev>", "start the run from this branch, tag or commit (default: the --merge-into branch if given, else HEAD)")
      .option("--merge-into <branch>", "when the run succeeds, bring this branch up to the integration branch, only when safe (never checked out in your tree); the run starts from it unless --base says otherwise")
      .option("--update-checkout", "with --merge-into: if that branch is checked out in a clean worktree and the update is a fast-forward, fast-forward the checkout too")
      .option("--max-cost <usd>", "the run's budget in USD: nothing new starts once its next task would pass it (default: the graph's maxCost, the config's budget.maxCost)")
      .option("--max-tokens <n>", "the run's budget in tokens (input + output), for agents that report no dollars (2m, 500k)")
      .addOption(new Option("--on-budget <what>", "when the budget would be passed: wait for `ado budget raise` (needs_attention), or stop the run").choices(["wait", "stop"]))
      .addOption(progressOption()),
  ).action(async (prompt, flags) => setExit(await (await import("./run.js")).runCommand(prompt, flags)));

  common(
    program
      .command("up")
      .description("start NATS (embedded) with every actor and some workers, and keep them running for other commands")
      .option("-p, --port <port>", "client port of the embedded server", parseIntFlag("port", 1, 65_535), 4222)
      .option("--store <dir>", "JetStream store directory (default: ~/.local/state/ado/nats)")
      .option("-w, --workers <n>", "workers to start", parseIntFlag("workers", 0, 256))
      .option("--slots <n>", "tasks per worker, or auto (default: auto, from this host's cores, memory and load)", parseSlotsFlag)
      .option("--health-port <port>", "serve GET /health, /ready and /metrics (Prometheus) on this port (0: a free one)", parseIntFlag("health-port", 0, 65_535))
      .option("--dashboard-port <port>", "serve the web dashboard on this port (0: a free one; default 4280, or a free one if taken)", parseIntFlag("dashboard-port", 0, 65_535))
      .option("--no-dashboard", "do not serve the web dashboard")
      .option("--no-auth", "let anyone who reaches the port connect, without credentials (default: a user per role, keys under the store, readable by you only)"),
  ).action(async (flags) => setExit(await (await serve()).upCommand(flags)));

  common(
    program
      .command("dashboard")
      .description("serve the live web dashboard of the runs on a server (a NATS client like the CLI) until interrupted")
      .option("-p, --port <port>", "HTTP port (0: a free one)", parseIntFlag("port", 0, 65_535), 4280)
      .option("--host <host>", "address to listen on (0.0.0.0: every interface; the dashboard can pause and cancel runs, so mind who reaches it)", "127.0.0.1"),
  ).action(async (flags) => setExit(await (await import("./dashboard.js")).dashboardCommand(flags)));

  common(
    program
      .command("worker")
      .description("start workers against a server, in this process, until interrupted")
      .option("-n, --count <n>", "workers to start", parseIntFlag("count", 1, 256), 1)
      .option("--labels <list>", "placement labels, comma-separated (e.g. remote,gpu); tasks select workers by them")
      .option("--capabilities <list>", "capabilities, comma-separated (e.g. docker,node20); tasks may require them")
      .option("--slots <n>", "tasks per worker, or auto (default: auto, from this host's cores, memory and load)", parseSlotsFlag)
      .option("--id <id>", "the worker's id (one worker; the scaler names the workers it starts)")
      .option("--pool <name>", "the scaler pool it belongs to (in its registry record)")
      .option("--exit-on-stdin-close", "drain and stop when stdin ends (how a supervisor, e.g. the scaler, stops it)")
      .option("--health-port <port>", "serve GET /health, /ready and /metrics (Prometheus) on this port (0: a free one)", parseIntFlag("health-port", 0, 65_535)),
  ).action(async (flags) => setExit(await (await serve()).workerCommand(flags)));

  common(
    program
      .command("doctor")
      .description("list the agents this host can run (agent CLIs found, their versions, login as far as it can be checked offline) and why not")
      .option("--json", "print JSON"),
  ).action(async (flags) => setExit(await (await import("./doctor.js")).doctorCommand(flags)));

  common(
    program
      .command("actor")
      .description("start one actor (scheduler, balancer, merger, stealer, recorder, notifier, scaler or api) against a server, until interrupted")
      .addArgument(new Command().createArgument("<name>", "actor to start").choices(["scheduler", "balancer", "merger", "stealer", "recorder", "notifier", "scaler", "api"]))
      .option("--health-port <port>", "serve GET /health, /ready and /metrics (Prometheus) on this port (0: a free one)", parseIntFlag("health-port", 0, 65_535)),
  ).action(async (name, flags) => setExit(await (await serve()).actorCommand(name, flags)));

  for (const action of ["cancel", "pause", "resume"] as const) {
    common(
      program
        .command(action)
        .description(
          {
            cancel: "cancel a run or a task: its agent's processes are killed, it ends cancelled",
            pause: "pause a run or a task: nothing new starts, running agents are suspended",
            resume: "resume a paused run or task",
          }[action],
        )
        .argument("<target>", "a run id, <run>/<task>, or a task id of an active run")
        .option("--reason <text>", "why (recorded in the events)"),
    ).action(async (target, flags) => setExit(await (await live()).controlCommand(action, target, flags)));
  }

  const budget = program.command("budget").description("a run's budget: what it may spend");
  common(
    budget
      .command("raise")
      .description("raise a run's budget (its cap in USD, or --tokens): what waited for the budget starts; `ado cancel <run>` ends it instead")
      .argument("<run>", "run id")
      .argument("[usd]", "the new cap in USD (20), or how much to add (+5)")
      .option("--tokens <n>", "the new token cap (2m, 500k), or how much to add (+500k)")
      .option("-r, --repo <dir>", "a run `ado run` kept in this repository (it stopped for its budget): raised, then followed to its end (default: current directory)")
      .option("--json", "with a kept run: print one JSON object with the outcome when the run ends")
      .addOption(progressOption()),
  ).action(async (run, usd, flags) => setExit(await (await import("./budget.js")).budgetRaiseCommand(run, usd, flags)));

  common(
    program
      .command("attach")
      .description("replay a run's events from the start (or --since), then follow it live; Ctrl-C detaches")
      .argument("<run>", "run id")
      .option("--since <time>", "start from this time (ISO) or age (30s, 5m, 2h)")
      .option("--json", "print one JSON object with the outcome when the run ends")
      .addOption(progressOption()),
  ).action(async (run, flags) => setExit(await (await live()).attachCommand(run, flags)));

  common(
    program
      .command("detach")
      .description("make every client attached to a run detach (for scripts); the run goes on")
      .argument("<run>", "run id"),
  ).action(async (run, flags) => setExit(await (await live()).detachCommand(run, flags)));

  common(
    program
      .command("status")
      .description("a run's state and its tasks (state, worker, elapsed time, attempts); without a run: all active runs")
      .argument("[run]", "run id")
      .option("--all", "include finished runs")
      .option("--providers", "only the providers: circuit, permits and rate, running of the limit in force, spend today, last adaptive step")
      .option("--json", "print JSON"),
  ).action(async (run, flags) => setExit(await (await live()).statusCommand(run, flags)));

  const parallel = program.command("parallel").description("commands across all runs");
  common(
    parallel
      .command("status")
      .description("every active run: each task's state, worker, elapsed time and attempts")
      .option("--all", "include finished runs")
      .option("--json", "print JSON"),
  ).action(async (flags) => setExit(await (await live()).statusCommand(undefined, flags)));

  common(
    program
      .command("logs")
      .description("what a run's tasks printed (the logs kept on this machine, else the event stream), or with --events what their agents did")
      .argument("<run>", "run id, or <run>/<task>")
      .argument("[task]", "only this task")
      .option("-r, --repo <dir>", "the repository whose logs to read (default: current directory)")
      .option("--attempt <n>", "only this attempt", parseIntFlag("attempt", 1, 10_000))
      .option("-f, --follow", "follow the output as it comes until the run (or the task) ends")
      .option("--events", "the agents' activity (attempts, tool calls, messages, usage, how each ended) instead of the output")
      .option("--json", "the events themselves, one JSON object a line"),
  ).action(async (run, task, flags) => setExit(await (await import("./logs.js")).logsCommand(run, task, flags)));

  if (groups) {
    const [hitl, worktrees, runs, workers] = groups;
    hitl.hitlCommands(program, common, setExit);
    worktrees.registerWorktreeCommands(program, common, setExit);
    runs.registerRunsCommands(program, common, setExit);
    workers.registerWorkersCommands(program, common, setExit);
  }

  common(
    program
      .command("prune")
      .description("delete the branches and refs of finished runs (here and on their remote); work no branch holds is archived under refs/ado/archive first")
      .option("-r, --repo <dir>", "the repository (default: current directory)")
      .option("--older-than <age>", "only runs started longer ago than this (12h, 7d, 2w)")
      .option("--dry-run", "show what would be deleted and archived, and change nothing")
      .option("--remote <url>", "also prune runs' refs on this git remote (default: the run's own, else the config's remote)")
      .option("--json", "print JSON"),
  ).action(async (flags) => setExit(await (await import("./prune.js")).pruneCommand(flags)));

  program
    .command("nats")
    .description("NATS server settings for ado")
    .command("config")
    .description("write the server's users (one nkey user per role, least privilege) for a prefix, and each role's seed (0600)")
    .option("--prefix <prefix>", "subject/stream prefix (default: ADO_PREFIX, else ado)")
    .option("--dir <dir>", "where the server config goes (default: ./nats)")
    .option("--creds-dir <dir>", "where the roles' seeds go (default: ~/.config/ado/nats/<prefix>)")
    .action(async (flags) => setExit(await (await import("./nats-config.js")).natsConfigCommand(flags)));

  program
    .command("init")
    .description("write a commented ado.config.yaml and an example graph (ado.graph.yaml) at the top of the repository; never overwrites")
    .option("--dir <dir>", "write them here instead")
    .action(async (flags) => setExit(await (await import("./init.js")).initCommand(flags)));

  program
    .command("completion")
    .description("print a shell completion script: source <(ado completion bash), or zsh")
    .addArgument(new Command().createArgument("<shell>", "bash or zsh").choices(["bash", "zsh"]))
    .action(async (shell: string) => {
      process.stdout.write((await import("./completion.js")).completionScript(program, shell));
      setExit(Exit.ok);
    });

  return program;
}

/** `--progress`: how a followed run is shown (progress.ts). */
function progressOption(): Option {
  return new Option("--progress <mode>", "live (redrawn in place), plain (a line per event, no colour or cursor moves), none, or auto: live on a terminal, plain otherwise")
    .choices([...PROGRESS_MODES])
    .default("auto");
}

/**
 * `ado status | head`: the reader may go before everything is written. What is left
 * goes nowhere, quietly; the command still finishes (a run still runs to its end).
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE" && err.code !== "ERR_STREAM_DESTROYED") throw err;
  });
}

async function main(): Promise<void> {
  quietOnClosedPipe(process.stdout);
  quietOnClosedPipe(process.stderr);
  let code: number = Exit.ok;
  // The command named on the line: the first word that is not an option (the program itself takes only --help and --version).
  const named = process.argv.slice(2).find((a) => !a.startsWith("-"));
  const program = await buildProgram((c) => (code = c), named);
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    code = exitCodeFor(err);
  }
  // stdout/stderr writes are synchronous for files, pipes and terminals on Linux, so
  // exiting now loses no output, and no stray handle can keep a finished command alive.
  process.exit(code);
}

function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    // Help and version print and exit 0; usage errors were already printed by commander.
    return err.exitCode === 0 ? Exit.ok : Exit.usage;
  }
  if (err instanceof CliError) {
    process.stderr.write(`ado: ${err.message}\n`);
    return err.exitCode;
  }
  if (err instanceof AdoError) {
    process.stderr.write(`ado: ${err.message}\n`);
    return Exit.usage;
  }
  process.stderr.write(`ado: unexpected error: ${errorMessage(err)}\n${err instanceof Error ? err.stack : ""}\n`);
  return Exit.failed;
}

await main();
