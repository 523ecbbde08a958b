import { randomBytes } from "node:crypto";

/**
 * Branded ids, so a task id cannot be passed where a run id is expected. Both are
 * used as NATS subject tokens, KV key tokens and git ref components, hence the
 * restricted alphabet.
 */
export type RunId = string & { readonly __brand: "RunId" };
export type TaskId = string & { readonly __brand: "TaskId" };
export type WorkerId = string & { readonly __brand: "WorkerId" };

/** Letters, digits, `_` and `-`: safe in a subject token, a KV key and a branch name. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** A new run id: sortable by creation time, e.g. `r20261123t201127-7k2m9q`. */
export function newRunId(now = new Date()): RunId {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\..*$/, "").toLowerCase();
  return `r${stamp}-${randomToken(6)}` as RunId;
}

export function newWorkerId(host: string): WorkerId {
  const safeHost = host.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 24) || "host";
  return `w-${safeHost}-${randomToken(6)}` as WorkerId;
}

function randomToken(length: number): string {
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  const bytes = randomBytes(length);
  let out = "";
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

export const asRunId = (s: string) => s as RunId;
