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

/** What a judge said: the variant it named, or why it named none. */
export interface JudgeVerdict {
  n?: number;
  error?: string;
}

/** The variants of an ended round that may win: those whose attempt succeeded, in the order they ended. */
export function candidates(variants: readonly VariantRecord[]): VariantRecord[] {
  return [...variants]
    .sort((a, b) => (a.order ?? Infinity) - (b.order ?? Infinity) || a.n - b.n)
    .filter((v) => v.status === "succeeded" || v.status === "won" || v.status === "lost");
}

/** Whether an ended round must ask its judge first: `select: { judge }` with two candidates or more, and no verdict yet. */
export function needsJudge(select: Select, variants: readonly VariantRecord[], verdict: JudgeVerdict | undefined): boolean {
  return selectRule(select) === "judge" && verdict === undefined && candidates(variants).length > 1;
}

/**
 * Picks the winner of a round whose variants have all ended. Only variants whose attempt
 * succeeded compete. `validate`: the first of them (in the order they ended, then by
 * number) that passed; `score`: the highest score, ties going to the one that ended
 * first. No winner: `reason` says what each variant did, for the task's error.
 */
export function selectVariant(select: Select, variants: readonly VariantRecord[], verdict?: JudgeVerdict): SelectOutcome {
  const rule = selectRule(select);
  const byEnd = [...variants].sort((a, b) => (a.order ?? Infinity) - (b.order ?? Infinity) || a.n - b.n);
  const done = candidates(variants);
  const of = `of ${variants.length}`;
  if (rule === "judge") {
    if (done.length === 1) return { winner: done[0]!, reason: `variant ${done[0]!.n} ${of} was the only one that succeeded: nothing to judge` };
    const winner = done.find((v) => v.n === verdict?.n);
    if (winner) return { winner, reason: `the judge (${select.judge}) chose variant ${winner.n} ${of}` };
    if (done.length > 1) {
      const why = verdict?.error
        ? `the judge (${select.judge}) failed: ${firstLine(verdict.error)}`
        : `the judge (${select.judge}) named no variant that succeeded (${verdict?.n === undefined ? "no number on the last line of its answer" : `it said ${verdict.n}`}; candidates: ${done.map((v) => v.n).join(", ")})`;
      return { reason: why };
    }
  }
  if (rule === "validate") {
    const winner = done.find((v) => v.passed === true);
    if (winner) return { winner, reason: `variant ${winner.n} ${of} was the first to pass \`${select.validate}\`` };
  } else if (rule === "score") {
    let winner: VariantRecord | undefined;
    for (const v of done) if (v.score !== undefined && (winner === undefined || v.score > winner.score!)) winner = v;
    if (winner) return { winner, reason: `variant ${winner.n} ${of} scored highest (${winner.score}) by \`${select.score}\`` };
  }
  const what = byEnd.map((v) => `variant ${v.n}: ${describe(v, rule)}`).join("; ");
  const cmd = rule === "validate" ? `passed \`${select.validate}\`` : rule === "score" ? `printed a score with \`${select.score}\`` : "succeeded";
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
