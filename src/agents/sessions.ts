/**
 * Where agent CLIs keep their sessions on disk, and packing them for another host. A
 * session lives on the host that ran it (Claude Code's transcript under
 * `~/.claude/projects/...`, Codex's rollout under `~/.codex/sessions/...`); an attempt
 * that resumes on another host needs those files first. The worker stores what `pack`
 * makes with a checkpoint and `unpack`s it where the CLI will look on the resuming host.
 *
 * ASSUMPTIONS (from the CLIs' sources and docs, agent-cli-formats.md; exercised here only
 * against the fake CLIs, which keep their sessions the same way): Claude Code names a
 * project directory after the cwd with every character but letters and digits replaced
 * by '-', and looks up `--resume <id>` in the current cwd's directory only; Codex finds
 * `resume <id>` under any date directory of `$CODEX_HOME/sessions`. Gemini CLI and
 * Cursor keep theirs in places not documented well enough to move: their sessions
 * resume on the host (and home) that made them, and elsewhere start afresh.
 */
import { mkdir, readdir, readFile, realpath, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, normalize, sep } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { pack as msgpack, unpack as msgunpack } from "msgpackr";
import type { SessionPlace } from "./types.js";

/** Where one CLI keeps a session's files. */
export interface SessionLayout {
  /** The session's files on this host, each with the key it is stored under (a relative name `place` understands). */
  find(sessionId: string, at: SessionPlace): Promise<Array<{ key: string; path: string }>>;
  /** Where a stored file goes on this host, for a session resumed in `at.cwd`. */
  place(key: string, at: SessionPlace): Promise<string>;
}

const home = (env: SessionPlace["env"]) => env.HOME || homedir();

/** Files under `dir` (recursively), as paths relative to it; none when it is not there. */
async function filesUnder(dir: string, depth = 8): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) {
    if (e.isDirectory() && depth > 0) out.push(...(await filesUnder(join(dir, e.name), depth - 1)).map((f) => join(e.name, f)));
    else if (e.isFile()) out.push(e.name);
  }
  return out;
}

const isFile = (p: string) => stat(p).then((s) => s.isFile(), () => false);

/** Claude Code: `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<cwd as a name>/<id>.jsonl`, and `<id>/` (subagents' transcripts) beside it. */
export const claudeSessionLayout: SessionLayout = {
  async find(sessionId, at) {
    const dir = await claudeProjectDir(at);
    const found: Array<{ key: string; path: string }> = [];
    const transcript = join(dir, `${sessionId}.jsonl`);
    if (await isFile(transcript)) found.push({ key: `${sessionId}.jsonl`, path: transcript });
    for (const f of await filesUnder(join(dir, sessionId))) found.push({ key: join(sessionId, f), path: join(dir, sessionId, f) });
    return found;
  },
  async place(key, at) {
    return join(await claudeProjectDir(at), safeKey(key));
  },
};

async function claudeProjectDir(at: SessionPlace): Promise<string> {
  const root = at.env.CLAUDE_CONFIG_DIR || join(home(at.env), ".claude");
  // The CLI names the directory after its cwd as the system reports it (symlinks resolved).
  const cwd = await realpath(at.cwd).catch(() => at.cwd);
  return join(root, "projects", cwd.replace(/[^A-Za-z0-9]/g, "-"));
}

/** Codex: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl` (CODEX_HOME default ~/.codex). */
export const codexSessionLayout: SessionLayout = {
  async find(sessionId, at) {
    const root = codexSessionsDir(at);
    return (await filesUnder(root, 4)).filter((f) => f.endsWith(`-${sessionId}.jsonl`)).map((f) => ({ key: f, path: join(root, f) }));
  },
  async place(key, at) {
    return join(codexSessionsDir(at), safeKey(key));
  },
};

const codexSessionsDir = (at: SessionPlace) => join(at.env.CODEX_HOME || join(home(at.env), ".codex"), "sessions");

/** A stored key as a relative path that stays inside its directory: a record from the bucket is not trusted to name `../..`. */
function safeKey(key: string): string {
  const n = normalize(key);
  if (!n || isAbsolute(n) || n === ".." || n.startsWith(`..${sep}`) || n.split(sep).includes("..")) {
    throw new Error(`a stored session file names '${key}', which is not a path inside the session's directory`);
  }
  return n;
}

/** What `packSession` makes: gzip of MessagePack `{v: 1, files: [{key, mode, data}]}`. */
interface Packed {
  v: 1;
  files: Array<{ key: string; mode: number; data: Uint8Array }>;
}

/** Packs the session's files found by `layout`; undefined when there are none. */
export async function packSession(layout: SessionLayout, sessionId: string, at: SessionPlace): Promise<Uint8Array | undefined> {
  const found = await layout.find(sessionId, at);
  if (!found.length) return undefined;
  const files: Packed["files"] = [];
  for (const f of found) {
    // A file that went away meanwhile (the CLI rotates one) is just not in this copy.
    const [data, st] = await Promise.all([readFile(f.path).catch(() => undefined), stat(f.path).catch(() => undefined)]);
    if (data && st) files.push({ key: f.key, mode: st.mode & 0o777, data });
  }
  if (!files.length) return undefined;
  return gzipSync(msgpack({ v: 1, files } satisfies Packed));
}

/** Unpacks what packSession made where `layout` says the CLI looks on this host. */
export async function unpackSession(layout: SessionLayout, packed: Uint8Array, at: SessionPlace): Promise<{ files: number }> {
  let value: Packed;
  try {
    value = msgunpack(gunzipSync(packed)) as Packed;
  } catch (err) {
    throw new Error(`a stored session could not be read (${(err as Error).message}): it was not written by this version of ado, or is damaged`);
  }
  if (value?.v !== 1 || !Array.isArray(value.files)) throw new Error("a stored session has a format this version of ado does not know");
  for (const f of value.files) {
    const path = await layout.place(f.key, at);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(path, f.data, { mode: f.mode || 0o600 });
  }
  return { files: value.files.length };
}
