/**
 * The typed events an adapter makes of an agent CLI's stream: the wire events
 * `agent.message|tool|usage|rate_limit` (src/runtime/messages.ts) without what the worker
 * adds when it publishes them (run, task, attempt, time, sequence number).
 */
import type { AdoEvent } from "../runtime/messages.js";
import { clip, MAX_EVENT_TEXT, summaryOf } from "./stream.js";

type WireAgentEvent = Extract<AdoEvent, { type: `agent.${string}` }>;
type Envelope = "runId" | "taskId" | "attempt" | "at" | "seq";
type Body<E> = E extends unknown ? Omit<E, Envelope> : never;

/** One event from an agent's stream, before the worker stamps it for the wire. */
export type AgentEvent = Body<WireAgentEvent>;
export type AgentEventType = AgentEvent["type"];
export type AgentEventOf<T extends AgentEventType> = Extract<AgentEvent, { type: T }>;

/** A message event, cut to the size an event carries. */
export function messageEvent(text: string, raw = false): AgentEventOf<"agent.message"> {
  const c = clip(text, MAX_EVENT_TEXT);
  return { type: "agent.message", text: c.text, raw, truncated: c.truncated };
}

/** A tool event with a one-line summary. */
export function toolEvent(
  phase: "started" | "completed",
  tool: string,
  summary: string,
  extra: { callId?: string; ok?: boolean } = {},
): AgentEventOf<"agent.tool"> {
  return {
    type: "agent.tool",
    phase,
    tool,
    summary: summaryOf(summary),
    ...(extra.callId !== undefined ? { callId: extra.callId } : {}),
    ...(extra.ok !== undefined ? { ok: extra.ok } : {}),
  };
}

/** Stamps an agent event for the wire: the attempt it belongs to, when, and its place in the attempt. */
export function toWireEvent(
  e: AgentEvent,
  stamp: { runId: string; taskId: string; attempt: number; at: string; seq: number },
): WireAgentEvent {
  return { ...e, ...stamp } as WireAgentEvent;
}

/** Argument names that say what a tool call ran or touched, most telling first. */
const SUMMARY_KEYS = ["command", "cmd", "file_path", "filePath", "absolute_path", "path", "notebook_path", "paths", "pattern", "globPattern", "url", "query", "description", "prompt"];

/** A tool call's one-line summary from its arguments: the command run, the file edited, ... */
export function summarizeArgs(args: unknown): string {
  if (typeof args === "string") return args;
  if (!args || typeof args !== "object") return "";
  const a = args as Record<string, unknown>;
  for (const k of SUMMARY_KEYS) {
    const v = a[k];
    if (typeof v === "string" && v) return v;
    if (Array.isArray(v) && v.length) return v.map(String).join(" ");
  }
  return "";
}
