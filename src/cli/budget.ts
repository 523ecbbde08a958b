/**
 * `ado budget raise <run> <usd> [--tokens N]`: a person lets a run that waits for its
 * budget go on (or gives a running one more room). The scheduler applies the change to
 * the caps it holds and starts what waited (src/actors/scheduler/run-state.ts applyBudget).
 */
import { formatTokens, formatUsd, parseCapChange, type CapChange } from "../runtime/budget.js";
import { CliError, Exit, type CommonFlags } from "./common.js";
import { withClient } from "./live.js";

/** A raise never lowers a cap: `ado budget raise` with a smaller figure is a typo more often than not. */
function checkRaise(change: CapChange, current: number | undefined, what: string, format: (n: number) => string, example: string): void {
  if ("set" in change && current !== undefined && change.set <= current) {
    throw new CliError(`the run's ${what} cap is ${format(current)} already: give a larger one, or raise it by an amount (${example})`);
  }
}

/** `ado budget raise <run> [usd] [--tokens N]` */
export async function budgetRaiseCommand(runId: string, usd: string | undefined, flags: CommonFlags & { tokens?: string }): Promise<number> {
  if (usd === undefined && flags.tokens === undefined) {
    throw new CliError("say how much: ado budget raise <run> 20 (the new cap in USD), +5 (raise it by $5), or --tokens 2m / --tokens +500k");
  }
  let change: { usd?: CapChange; tokens?: CapChange };
  try {
    change = { ...(usd !== undefined ? { usd: parseCapChange(usd, "usd") } : {}), ...(flags.tokens !== undefined ? { tokens: parseCapChange(flags.tokens, "tokens") } : {}) };
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  return withClient(
    flags,
    "ado budget raise",
    async (client) => {
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
      process.stdout.write(`raising run ${runId}'s ${said.join(" and ")} (${spent}); what waited for the budget starts if it fits\n`);
      return Exit.ok;
    },
    runId,
  );
}
