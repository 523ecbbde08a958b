/**
 * Which agent CLIs this host can run: the binary found and answering `--version` (a
 * worker offers only those, and records their versions), and, for `ado doctor`, whether
 * they look logged in, as far as that can be told offline (an API key in the
 * environment for `api` access, the CLI's login file for `subscription`).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import type { CliAgent } from "./cli-agent.js";
import { allowedCredentials, type AccessMode } from "./credentials.js";
import { executablePath } from "./process.js";

/** What a probe found out about one agent CLI on this host. */
export interface AgentProbe {
  name: string;
  /** The binary asked for (config `agents.<name>.bin`, else its name). */
  bin: string;
  /** Where it was found. */
  path?: string;
  available: boolean;
  /** The first line `--version` printed, when it answered. */
  version?: string;
  /** Why it is not available (missing, not executable, `--version` failed). */
  reason?: string;
}

/** How long `<bin> --version` may take (a CLI on Node starts in about a second on a loaded host). */
export const PROBE_TIMEOUT_MS = 10_000;
/** A probe is reused this long (the workers of one process start together). */
const PROBE_TTL_MS = 60_000;
const cache = new Map<string, { at: number; probe: Promise<AgentProbe> }>();

/** Probes one agent CLI: found on PATH, and answering `--version` within the timeout. */
export function probeAgent(agent: CliAgent, opts: { timeoutMs?: number } = {}): Promise<AgentProbe> {
  const env = agent.baseEnv;
  const key = JSON.stringify([agent.name, agent.bin, env.PATH ?? "", env.HOME ?? ""]);
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < PROBE_TTL_MS) return hit.probe;
  const probe = probeNow(agent, env, opts.timeoutMs ?? PROBE_TIMEOUT_MS);
  cache.set(key, { at: Date.now(), probe });
  return probe;
}

async function probeNow(agent: CliAgent, env: Record<string, string | undefined>, timeoutMs: number): Promise<AgentProbe> {
  const base = { name: agent.name, bin: agent.bin };
  const found = executablePath(agent.bin, env.PATH);
  if (found.status !== "ok") {
    const reason =
      found.status === "missing"
        ? `'${agent.bin}' is not on PATH: ${agent.adapter.install}, or set agents.${agent.name}.bin`
        : `'${agent.bin}' is not executable: check its permissions or agents.${agent.name}.bin`;
    return { ...base, available: false, reason };
  }
  const answer = await new Promise<{ ok: boolean; out: string; err: string; why?: string }>((resolve) => {
    execFile(found.path, ["--version"], { env: env as NodeJS.ProcessEnv, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 256 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve({ ok: true, out: String(stdout), err: String(stderr) });
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      const why = e.killed ? `no answer within ${Math.round(timeoutMs / 1000)} s` : typeof e.code === "number" ? `exit ${e.code}` : (e.message ?? String(err));
      resolve({ ok: false, out: String(stdout ?? ""), err: String(stderr ?? ""), why });
    });
  });
  const firstLine = (text: string) => text.split("\n").map((l) => l.trim()).find(Boolean);
  if (!answer.ok) {
    const said = firstLine(answer.err) ?? firstLine(answer.out);
    return { ...base, path: found.path, available: false, reason: `'${agent.bin} --version' failed (${answer.why}${said ? `: ${said}` : ""})` };
  }
  const version = firstLine(answer.out) ?? firstLine(answer.err);
  return { ...base, path: found.path, available: true, ...(version ? { version: version.slice(0, 120) } : {}) };
}

/** Probes every agent CLI at once. */
export function probeAgents(agents: Iterable<CliAgent>, opts: { timeoutMs?: number } = {}): Promise<AgentProbe[]> {
  return Promise.all([...agents].map((a) => probeAgent(a, opts)));
}

/** Forgets earlier probes (tests that change PATH between workers). */
export function forgetProbes(): void {
  cache.clear();
}

/** Whether an agent CLI looks able to log in, as far as can be told without asking its provider. */
export interface LoginCheck {
  access: AccessMode;
  /** `ok`: credentials seen; `missing`: none where they should be; `unknown`: cannot be told offline. */
  state: "ok" | "missing" | "unknown";
  detail: string;
}

/** The offline login check of one agent CLI, for its configured access mode. */
export function checkLogin(agent: CliAgent): LoginCheck {
  const access = agent.access;
  const env = agent.baseEnv;
  const set = (names: Iterable<string>) => [...names].filter((n) => !!env[n]);
  if (access === "local") return { access, state: "ok", detail: "local models: no credentials needed" };
  if (access === "api") {
    const allowed = [...allowedCredentials(agent.adapter.providers, "api")];
    const present = set(allowed);
    return present.length
      ? { access, state: "ok", detail: `${present.join(", ")} set` }
      : { access, state: "missing", detail: `access api, but none of ${allowed.join(", ")} is set in the worker's environment or agents.${agent.name}.env` };
  }
  const tokens = set(allowedCredentials(agent.adapter.providers, "subscription"));
  if (tokens.length) return { access, state: "ok", detail: `${tokens.join(", ")} set` };
  const files = agent.adapter.loginFiles?.(env);
  if (!files?.length) return { access, state: "unknown", detail: "cannot be checked offline: run it once by hand to see" };
  const found = files.find((f) => existsSync(f));
  if (found) return { access, state: "ok", detail: `login found (${found})` };
  return { access, state: "missing", detail: `not logged in? no ${files.join(" or ")}: ${agent.adapter.install} (a login kept elsewhere, such as the macOS keychain, is not seen)` };
}
