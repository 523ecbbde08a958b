/**
 * Best-of-N, the pure part: which variant of a round wins under a task's `select` rule,
 * and what number a `score` command printed. The scheduler decides with selectVariant();
 * the worker that ran a variant reads its score with parseScore(). No I/O here.
 */
import type { Select } from "./graph.js";
import type { VariantRecord } from "./messages.js";

/** The rule a task's `select` names. */
export type SelectRule = "validate" | "score" | "judge";

/** The rule `select` names (validateGraph allows exactly one). */
export function selectRule(select: Select): SelectRule {
  return select.validate !== undefined ? "validate" : select.score !== undefined ? "score" : "judge";
}

/** The command a worker runs in a variant's worktree for the rule (none for a judge). */
export function selectCommand(select: Select): string | undefined {
  return select.validate ?? select.score;
}

export type SelectOutcome = { winner: VariantRecord; reason: string } | { winner?: undefined; reason: string };

/**
 * Picks the winner of a round whose variants have all ended. Only variants whose attempt
 * succeeded compete. `validate`: the first of them (in the order they ended, then by
 * number) that passed; `score`: the highest score, ties going to the one that ended
 * first. No winner: `reason` says what each variant did, for the task's error.
 */
export function selectVariant(select: Select, variants: readonly VariantRecord[]): SelectOutcome {
  const rule = selectRule(select);
  const byEnd = [...variants].sort((a, b) => (a.order ?? Infinity) - (b.order ?? Infinity) || a.n - b.n);
  const done = byEnd.filter((v) => v.status === "succeeded" || v.status === "won" || v.status === "lost");
  const of = `of ${variants.length}`;
  if (rule === "validate") {
    const winner = done.find((v) => v.passed === true);
    if (winner) return { winner, reason: `variant ${winner.n} ${of} was the first to pass \`${select.validate}\`` };
  } else if (rule === "score") {
    let winner: VariantRecord | undefined;
    for (const v of done) if (v.score !== undefined && (winner === undefined || v.score > winner.score!)) winner = v;
    if (winner) return { winner, reason: `variant ${winner.n} ${of} scored highest (${winner.score}) by \`${select.score}\`` };
  }
  const what = byEnd.map((v) => `variant ${v.n}: ${describe(v, rule)}`).join("; ");
  const cmd = rule === "validate" ? `passed \`${select.validate}\`` : rule === "score" ? `printed a score with \`${select.score}\`` : "was chosen";
  return { reason: `no variant ${cmd} (${what})` };
}

function describe(v: VariantRecord, rule: SelectRule): string {
  if (v.status === "failed" || v.status === "queued") return `its attempt failed${v.error ? `: ${firstLine(v.error)}` : ""}`;
  const detail = v.detail ? `: ${firstLine(lastLines(v.detail))}` : "";
  if (rule === "validate") return `did not pass${detail}`;
  if (rule === "score") return `no score${detail}`;
  return "not chosen";
}

const firstLine = (s: string) => {
  const line = s.trim().split("\n")[0] ?? "";
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
};
const lastLines = (s: string) => s.trim().split("\n").slice(-1).join("\n");

/**
 * The score a `score` command printed: the last number on its last non-empty line
 * (`0.87`, `score: 42`, `-3`, `1e3`), or undefined when that line holds none.
 */
export function parseScore(output: string): number | undefined {
  const lines = output.split("\n").map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1];
  if (last === undefined) return undefined;
  const numbers = last.match(/[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/g);
  if (!numbers) return undefined;
  const n = Number(numbers[numbers.length - 1]);
  return Number.isFinite(n) ? n : undefined;
}
