/**
 * `ado budget raise <run> <usd> [--tokens N]`: a person lets a run that waits for its
 * budget go on (or gives a running one more room). The scheduler applies the change to
 * the caps it holds and starts what waited (src/actors/scheduler/run-state.ts applyBudget).
 */
import { formatTokens, formatUsd, parseCapChange, type CapChange } from "../runtime/budget.js";
import type { AdoClient } from "../runtime/client.js";
import { openRepo } from "../git/index.js";
import { sleep } from "../runtime/clock.js";
import { CliError, Exit, type CommonFlags } from "./common.js";
import { findKeptRun, keptRunOwner } from "./kept-runs.js";
import { withClient } from "./live.js";
import type { ProgressMode } from "./progress.js";
import { resumeKeptRun } from "./runs.js";

/** A raise never lowers a cap: `ado budget raise` with a smaller figure is a typo more often than not. */
function checkRaise(change: CapChange, current: number | undefined, what: string, format: (n: number) => string, example: string): void {
  if ("set" in change && current !== undefined && change.set <= current) {
    throw new CliError(`the run's ${what} cap is ${format(current)} already: give a larger one, or raise it by an amount (${example})`);
  }
}

/** `ado budget raise <run> [usd] [--tokens N]` */
export async function budgetRaiseCommand(
  runId: string,
  usd: string | undefined,
  flags: CommonFlags & { tokens?: string; repo?: string; json?: boolean; progress?: ProgressMode },
): Promise<number> {
  if (usd === undefined && flags.tokens === undefined) {
    throw new CliError("say how much: ado budget raise <run> 20 (the new cap in USD), +5 (raise it by $5), or --tokens 2m / --tokens +500k");
  }
  let change: { usd?: CapChange; tokens?: CapChange };
  try {
    change = { ...(usd !== undefined ? { usd: parseCapChange(usd, "usd") } : {}), ...(flags.tokens !== undefined ? { tokens: parseCapChange(flags.tokens, "tokens") } : {}) };
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  // A run `ado run` kept in this repository (it stopped for its budget and its stack
  // went with it): raised on a stack started on its state, then followed to its end.
  if (!flags.server) {
    const repo = await openRepo(flags.repo ?? process.cwd()).catch(() => undefined);
    const kept = repo ? await findKeptRun(repo.gitCommonDir, runId) : undefined;
    if (kept && keptRunOwner(kept) === undefined) {
      return resumeKeptRun(runId, { ...flags, progress: flags.progress ?? "auto" }, async (client) => {
        const before = await client.runRecord(runId);
        await raise(client, runId, change, process.stderr);
        await applied(client, runId, before?.budget?.changes ?? 0);
      });
    }
  }
  return withClient(
    flags,
    "ado budget raise",
    async (client) => {
      await raise(client, runId, change);
      return Exit.ok;
    },
    runId,
  );
}

/** Checks the run can take the change, sends it, and says what was asked. */
async function raise(client: AdoClient, runId: string, change: { usd?: CapChange; tokens?: CapChange }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const run = await client.runRecord(runId);
  if (!run) throw new CliError(`no run '${runId}': list runs with \`ado parallel status --all\``);
  if (run.status !== "running" && run.status !== "needs_attention") throw new CliError(`run ${runId} has already ended (${run.status}): its budget cannot change any more`);
  if (run.budgetStopped) throw new CliError(`run ${runId} was stopped by its budget (onExceed: stop) and does not start anything new: ${run.budgetStopped}`);
  if (change.usd) checkRaise(change.usd, run.budget?.maxCostUsd, "USD", formatUsd, `+${Math.max(1, Math.ceil((run.budget?.maxCostUsd ?? 0) / 2))}`);
  if (change.tokens) checkRaise(change.tokens, run.budget?.maxTokens, "token", formatTokens, "+500k");
  await client.budget(runId, change);
  const said = [
    change.usd ? ("set" in change.usd ? `USD cap to ${formatUsd(change.usd.set)}` : `USD cap by ${formatUsd(change.usd.add)}`) : "",
    change.tokens ? ("set" in change.tokens ? `token cap to ${formatTokens(change.tokens.set)}` : `token cap by ${formatTokens(change.tokens.add)}`) : "",
  ].filter(Boolean);
  const spent = `spent so far ${formatUsd(run.costUsd)}${run.tokens ? `, ${formatTokens(run.tokens)} tokens` : ""}`;
  out.write(`raising run ${runId}'s ${said.join(" and ")} (${spent}); what waited for the budget starts if it fits\n`);
}

/**
 * Waits until the scheduler has recorded the raise (the run's budget changed once more),
 * so that following the run does not stop at the budget wait the raise ends.
 */
async function applied(client: AdoClient, runId: string, changesBefore: number): Promise<void> {
  for (let waited = 0; waited < 60_000; waited += 100) {
    const run = await client.runRecord(runId);
    if (!run || (run.budget?.changes ?? 0) > changesBefore) return;
    await sleep(100);
  }
  throw new CliError(`the run's scheduler did not take the raise within a minute: \`ado runs resume ${runId}\` follows the run, the raise stays queued for it`);
}
