import type { JetStreamManager } from "@nats-io/jetstream";
import type { Topology } from "../src/runtime/topology.js";

/**
 * Counters read before and after a benchmark phase: stream sequences (durable writes),
 * per-connection message counts (who sends and receives how much), and the server's
 * JetStream API total. All come from the server itself, so they cost the pipeline
 * nothing while it runs.
 */

export interface StreamCounts {
  /** Stream name -> { last_seq, messages }. last_seq only grows: its delta counts stored writes. */
  [stream: string]: { lastSeq: number; messages: number };
}

/** The streams of a topology: its own and the KV_ streams of its buckets. */
export async function streamCounts(jsm: JetStreamManager, topo: Topology): Promise<StreamCounts> {
  const own = new Set<string>([
    ...Object.values(topo.streams).map((s) => s.name),
    ...Object.values(topo.buckets).map((b) => `KV_${b}`),
  ]);
  const out: StreamCounts = {};
  for await (const info of jsm.streams.list()) {
    if (!own.has(info.config.name)) continue;
    out[info.config.name] = { lastSeq: info.state.last_seq, messages: info.state.messages };
  }
  return out;
}

export interface StreamDelta {
  stream: string;
  /** Messages stored (sequence numbers used) during the phase. */
  writes: number;
  /** Messages removed (work-queue acks, KV deletes/purges aside). */
  removed: number;
}

export function streamDeltas(before: StreamCounts, after: StreamCounts): StreamDelta[] {
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  return names.map((stream) => {
    const b = before[stream] ?? { lastSeq: 0, messages: 0 };
    const a = after[stream] ?? { lastSeq: 0, messages: 0 };
    const writes = a.lastSeq - b.lastSeq;
    return { stream, writes, removed: writes - (a.messages - b.messages) };
  });
}

/** Role of a connection, from the names the stack gives its connections. */
export function roleOf(name: string, prefix: string): string | undefined {
  if (!name.startsWith(`${prefix}-`)) return undefined;
  const rest = name.slice(prefix.length + 1);
  if (rest.startsWith("scheduler-")) return "scheduler";
  if (rest.startsWith("balancer-")) return "balancer";
  if (rest.startsWith("merger-")) return "merger";
  if (rest.startsWith("w-")) return "workers";
  if (rest.startsWith("admin-")) return "admin";
  if (rest.startsWith("client")) return "client";
  return "other";
}

export interface ConnCounts {
  /** Role -> messages the connection sent to the server (in) and received from it (out). */
  [role: string]: { inMsgs: number; outMsgs: number; inBytes: number; outBytes: number };
}

interface ConnzConn {
  name?: string;
  in_msgs: number;
  out_msgs: number;
  in_bytes: number;
  out_bytes: number;
}

export async function connCounts(monitorUrl: string | undefined, prefix: string): Promise<ConnCounts | undefined> {
  if (!monitorUrl) return undefined;
  try {
    const res = await fetch(`${monitorUrl}/connz?limit=4096`);
    const body = (await res.json()) as { connections?: ConnzConn[] };
    const out: ConnCounts = {};
    for (const c of body.connections ?? []) {
      const role = roleOf(c.name ?? "", prefix);
      if (!role) continue;
      const r = (out[role] ??= { inMsgs: 0, outMsgs: 0, inBytes: 0, outBytes: 0 });
      r.inMsgs += c.in_msgs;
      r.outMsgs += c.out_msgs;
      r.inBytes += c.in_bytes;
      r.outBytes += c.out_bytes;
    }
    return out;
  } catch {
    return undefined;
  }
}

export function connDeltas(before: ConnCounts | undefined, after: ConnCounts | undefined): ConnCounts | undefined {
  if (!before || !after) return undefined;
  const out: ConnCounts = {};
  for (const [role, a] of Object.entries(after)) {
    const b = before[role] ?? { inMsgs: 0, outMsgs: 0, inBytes: 0, outBytes: 0 };
    out[role] = { inMsgs: a.inMsgs - b.inMsgs, outMsgs: a.outMsgs - b.outMsgs, inBytes: a.inBytes - b.inBytes, outBytes: a.outBytes - b.outBytes };
  }
  return out;
}

export interface ServerCounts {
  inMsgs: number;
  outMsgs: number;
  /** JetStream API requests the server handled (stream/consumer/KV-get calls, not publishes). */
  jsApi: number;
}

export async function serverCounts(monitorUrl: string | undefined): Promise<ServerCounts | undefined> {
  if (!monitorUrl) return undefined;
  try {
    const varz = (await (await fetch(`${monitorUrl}/varz`)).json()) as { in_msgs: number; out_msgs: number };
    const jsz = (await (await fetch(`${monitorUrl}/jsz`)).json()) as { api?: { total?: number } };
    return { inMsgs: varz.in_msgs, outMsgs: varz.out_msgs, jsApi: jsz.api?.total ?? 0 };
  } catch {
    return undefined;
  }
}
