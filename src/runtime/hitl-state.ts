/**
 * The life of a HITL record (KV `hitl`, key `<runId>.<taskId>`), as one pure function:
 * record + event -> the new record, or a refusal saying why. Both writers use it, the
 * merge coordinator (escalate, start, decide) and `ado hitl resolve --manual|--continue`
 * through the API's `hitl.manual` (prepare_manual, reopen), and each stores the result with compare-and-set, so the rules of who may
 * move a record where live here and nowhere else.
 *
 *   (none) --escalate--> open --start / prepare_manual--> resolving --decide--> resolved
 *                         ^                                  |   \--reopen (--manual abandoned)--> open
 *                         +------ escalate (round + 1) ------+
 *
 * A round is decided once: its entry in the history is what a redelivered request
 * replays, and a request for another round than the record's is stale.
 */
import type { HitlChoice, HitlRecord } from "./messages.js";

/** One decided (or failed) round, as the record's history keeps it. */
export type HitlHistoryEntry = HitlRecord["history"][number];

/** What describes the merge and what went wrong: everything of a record but its life (round, state, choice, history, times). */
export type HitlDetails = Omit<HitlRecord, "round" | "state" | "choice" | "by" | "manual" | "history" | "createdAt" | "updatedAt" | "resolvedAt">;

export type HitlEvent =
  /**
   * The merge needs a person: the first round (no record, or one for another commit of
   * the task), or the next one after a resolution that did not land (`tried` says how
   * it ended; the record must be `resolving`).
   */
  | { type: "escalate"; at: string; details: HitlDetails; tried?: { outcome: "conflict" | "validation_failed"; message: string } }
  /**
   * The merge coordinator starts carrying out a person's choice for `round` (again,
   * after a crash); for `manual`, it checks the commit the person landed by hand.
   */
  | { type: "start"; at: string; round: number; choice: HitlChoice; by: string }
  /** `--manual`: a worktree holding the conflict was made on the person's host. */
  | { type: "prepare_manual"; at: string; by: string; manual: NonNullable<HitlRecord["manual"]> }
  /** The round that is being resolved ended for good: merged, or skipped by the person. */
  | { type: "decide"; at: string; round: number; outcome: "merged" | "skipped"; message: string; commit?: string }
  /** `--manual` abandoned: its worktree is gone and nothing landed; the merge waits again. */
  | { type: "reopen"; at: string };

/** Why an event does not apply. `decided`: that round's entry, to replay. */
export type HitlRefusal =
  | { code: "missing"; message: string }
  | { code: "decided"; message: string; entry: HitlHistoryEntry }
  | { code: "stale"; message: string }
  | { code: "busy"; message: string }
  | { code: "waiting"; message: string }
  | { code: "not_resolving"; message: string };

export type HitlTransition = { ok: true; record: HitlRecord } | { ok: false; refusal: HitlRefusal };

const refuse = (refusal: HitlRefusal): HitlTransition => ({ ok: false, refusal });

/** Applies `event` to `record` (undefined: there is none yet). Pure: no I/O, no clock. */
export function hitlTransition(record: HitlRecord | undefined, event: HitlEvent): HitlTransition {
  switch (event.type) {
    case "escalate":
      return escalate(record, event);
    case "start": {
      if (!record) return refuse({ code: "missing", message: "no merge of this task waits for a person" });
      const decided = record.history.find((h) => h.round === event.round);
      if (decided) return refuse({ code: "decided", message: `round ${event.round} was decided already (${decided.outcome})`, entry: decided });
      if (record.round !== event.round || record.state === "resolved") {
        return refuse({ code: "stale", message: `a resolution for round ${event.round}, but ${record.id} is at round ${record.round} (${record.state})` });
      }
      // From `open`, or `resolving` again: a merge coordinator that died while carrying it out left it so.
      return { ok: true, record: { ...record, state: "resolving", choice: event.choice, by: event.by, updatedAt: event.at } };
    }
    case "prepare_manual": {
      if (!record) return refuse({ code: "missing", message: "no merge of this task waits for a person" });
      if (record.state !== "open") return refuse({ code: "busy", message: busyMessage(record) });
      return { ok: true, record: { ...record, state: "resolving", choice: "manual", by: event.by, manual: event.manual, updatedAt: event.at } };
    }
    case "decide": {
      if (!record) return refuse({ code: "missing", message: "no merge of this task waits for a person" });
      if (record.state !== "resolving" || record.round !== event.round) {
        return refuse({ code: "not_resolving", message: `${record.id} is ${record.state} at round ${record.round}: round ${event.round} cannot be decided` });
      }
      const entry = historyEntry(record, event.round, event.at, event.outcome, event.message, event.commit);
      return { ok: true, record: { ...record, state: "resolved", history: [...record.history, entry], updatedAt: event.at, resolvedAt: event.at } };
    }
    case "reopen": {
      if (!record) return refuse({ code: "missing", message: "no merge of this task waits for a person" });
      if (record.state !== "resolving" || record.choice !== "manual") {
        return refuse({ code: "not_resolving", message: `${record.id} is ${record.state}${record.choice ? ` (${record.choice})` : ""}, not a --manual resolution` });
      }
      const { manual: _, ...rest } = record;
      return { ok: true, record: { ...rest, state: "open", updatedAt: event.at } };
    }
  }
}

function escalate(record: HitlRecord | undefined, event: Extract<HitlEvent, { type: "escalate" }>): HitlTransition {
  const fresh = !record || record.source !== event.details.source;
  if (fresh) {
    return { ok: true, record: { ...event.details, round: 1, state: "open", history: [], createdAt: event.at, updatedAt: event.at } };
  }
  if (record.state === "open") return refuse({ code: "waiting", message: `${record.id} waits for a person already (round ${record.round})` });
  if (record.state === "resolved") return refuse({ code: "decided", message: `${record.id} was decided already`, entry: record.history[record.history.length - 1]! });
  const tried = event.tried ? [historyEntry(record, record.round, event.at, event.tried.outcome, event.tried.message)] : [];
  return {
    ok: true,
    record: {
      ...event.details,
      round: record.round + 1,
      state: "open",
      history: [...record.history, ...tried],
      createdAt: record.createdAt,
      updatedAt: event.at,
    },
  };
}

function historyEntry(record: HitlRecord, round: number, at: string, outcome: HitlHistoryEntry["outcome"], message: string, commit?: string): HitlHistoryEntry {
  return { round, choice: record.choice ?? "skip", by: record.by ?? "", at, outcome, message, ...(commit ? { commit } : {}) };
}

function busyMessage(record: HitlRecord): string {
  const where = record.manual ? `: resolve it in ${record.manual.worktree}, then \`ado hitl resolve ${record.id} --continue\`` : "";
  return `${record.id} is being resolved already (${record.choice ?? "?"} by ${record.by || "?"})${where}`;
}

/**
 * Whether a person may ask for `choice` now (`ado hitl resolve --choose|--skip`): not
 * while the merge coordinator carries out another choice. Over a `--manual`
 * resolution in progress it may (the manual worktree is then left to its owner).
 */
export function mayRequest(record: HitlRecord, choice: HitlChoice): HitlRefusal | undefined {
  if (record.state === "resolved") return { code: "stale", message: `${record.id} was resolved already (${record.choice ?? "?"})` };
  if (choice === "manual") return mayContinue(record);
  if (record.state === "resolving" && record.choice !== "manual") return { code: "busy", message: busyMessage(record) };
  return undefined;
}

/** Whether `--continue` applies: a `--manual` resolution is in progress. */
export function mayContinue(record: HitlRecord): HitlRefusal | undefined {
  if (record.state !== "resolving" || record.choice !== "manual" || !record.manual) {
    return { code: "not_resolving", message: `nothing was prepared for ${record.id} with --manual: run \`ado hitl resolve ${record.id} --manual\` first` };
  }
  return undefined;
}
