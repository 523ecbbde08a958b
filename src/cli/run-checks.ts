/**
 * What `ado run` checks and tells before anything starts: the agents a graph names, the
 * commit the run starts from, a checkout with changes the run will not see, and a
 * worktree directory that would spoil the checkout. Each refusal is exit 2 with nothing
 * created.
 */
import { AGENT_NAMES as NAMES } from "../agents/index.js";
import type { Config } from "../runtime/config.js";
import { checkAgents, type Graph } from "../runtime/graph.js";
import { commitsMissingFrom, readBranch, resolveCommit, uncommittedChanges, UnknownRevisionError, worktreeDirProblem } from "../git/index.js";
import { didYouMean } from "../runtime/suggest.js";
import { checkProviderAgents, checkProviders } from "../runtime/providers.js";
import { CliError } from "./common.js";

/** Every agent ado has (the agents index's one list). */
const AGENT_NAMES: readonly string[] = NAMES;

/** The one task of `ado run "<prompt>" --agent X [--cmd C]`: the flags must fit the agent. */
export function checkSingleTaskFlags(flags: { agent: string; cmd?: string }): void {
  if (!AGENT_NAMES.includes(flags.agent)) {
    throw new CliError(`--agent '${flags.agent}': no such agent${didYouMean(flags.agent, AGENT_NAMES)}; the agents are: ${AGENT_NAMES.join(", ")}`);
  }
  if (flags.cmd !== undefined && flags.agent !== "shell") {
    throw new CliError(`--cmd is for the shell agent (--agent shell, the default); agent '${flags.agent}' works from the prompt: leave --cmd out`);
  }
}

/** Every task's agent is one ado has: a task for an agent nobody has would wait forever. */
export function checkGraphAgents(graph: Graph): void {
  checkAgents(graph, AGENT_NAMES);
}

/**
 * Every provider a task names is in the config, and every provider's agent is one ado
 * has: a task for a provider nobody configured would wait forever.
 */
export function checkGraphProviders(graph: Graph, config: Pick<Config, "providers">): void {
  try {
    checkProviderAgents(config.providers, AGENT_NAMES);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  checkProviders(graph, config.providers);
}

/**
 * The commit the run starts from, and what to tell the person about it:
 * - `--base <rev>`: that commit;
 * - else with `--merge-into <branch>`: that branch (the result goes there, so it should
 *   start there: starting from HEAD would bring HEAD's other commits into it too);
 * - else HEAD.
 * With a base that has commits the merge-into branch lacks, a note says they come along.
 */
export async function chooseBase(repo: string, opts: { base?: string; mergeInto?: string }, note: (msg: string) => void): Promise<{ commit: string; rev: string }> {
  const resolve = async (rev: string, what: string) => {
    try {
      return await resolveCommit(repo, rev);
    } catch (err) {
      if (err instanceof UnknownRevisionError) throw new CliError(`${what} '${rev}': no such branch, tag or commit in ${repo}`);
      throw err;
    }
  };
  let rev = opts.base ?? "HEAD";
  let commit: string;
  if (opts.base !== undefined) {
    commit = await resolve(opts.base, "--base");
  } else if (opts.mergeInto !== undefined && (await readBranch(repo, opts.mergeInto)) !== undefined) {
    rev = opts.mergeInto;
    commit = (await readBranch(repo, opts.mergeInto))!;
    const head = await resolveCommit(repo, "HEAD");
    if (head !== commit) note(`the run starts from ${opts.mergeInto} (${commit.slice(0, 10)}), where its result goes, not from HEAD; --base HEAD starts from your checkout`);
  } else {
    commit = await resolve("HEAD", "HEAD");
  }
  if (opts.mergeInto !== undefined && rev !== opts.mergeInto) {
    const into = await readBranch(repo, opts.mergeInto);
    const extra = into === undefined ? 0 : await commitsMissingFrom(repo, into, commit);
    if (extra > 0) {
      note(`${rev} has ${extra} commit(s) that ${opts.mergeInto} lacks: --merge-into ${opts.mergeInto} will bring them in too (git log ${opts.mergeInto}..${rev})`);
    }
  }
  return { commit, rev };
}

/** One line when the checkout has changes a run from HEAD will not see. */
export async function noteUncommitted(repo: string, note: (msg: string) => void): Promise<void> {
  const n = await uncommittedChanges(repo);
  if (n > 0) note(`${n} uncommitted change(s) in ${repo} are not part of the run, which starts from the last commit; commit them to include them`);
}

/** Refuses a worktree directory inside the checkout that git does not ignore, before anything is created. */
export async function checkWorktreeDir(repo: string, config: Pick<Config, "worktreeDir">): Promise<void> {
  const problem = await worktreeDirProblem(repo, config.worktreeDir);
  if (problem) throw new CliError(problem);
}
