import { mkdir, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_FILE, LOG_LEVELS, loadConfig, parseConfig } from "../../src/runtime/config.js";
import { ConfigError } from "../../src/runtime/errors.js";
import { useScratch } from "../helpers/scratch.js";

const scratch = useScratch("ado-config-");

let n = 0;
/** A fresh directory holding ado.config.yaml with `text`; returns the dir and file path. */
async function configDir(text: string): Promise<{ dir: string; file: string }> {
  const dir = join(scratch.dir, `c${n++}`);
  await mkdir(dir);
  const file = join(dir, CONFIG_FILE);
  await writeFile(file, text);
  return { dir, file };
}

/** The ConfigError a load throws; fails the test when it loads. */
async function configError(p: Promise<unknown>): Promise<ConfigError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

describe("config - sources and precedence", () => {
  it("uses the defaults with no file, no environment and no flags", async () => {
    const dir = join(scratch.dir, "empty");
    await mkdir(dir);
    const c = await loadConfig({ dir, env: {} });
    expect(c).toMatchObject({ prefix: "ado", workers: 4, slotsFrom: "default", logLevel: "warn", heartbeatMs: 1_000, balancer: { strategy: "least_loaded" } });
    // Slots: auto, from this host (test/unit/hardware.test.ts).
    expect(c.slotsAuto).toMatch(/over 4 workers, \d+ slots? per worker/);
    expect(c.server).toBeUndefined();
    expect(c.shutdown).toEqual({ graceMs: 10_000, forceMs: 5_000 });
    expect(c.nats.replicas).toBe("auto");
  });

  it("config - nats.replicas: auto or 1-5 copies of every stream and bucket; anything else is refused", () => {
    expect(parseConfig({ nats: { replicas: 3 } }).nats.replicas).toBe(3);
    expect(parseConfig({ nats: { user: "u", password: "p" } }).nats.replicas).toBe("auto");
    expect(() => parseConfig({ nats: { replicas: 0 } })).toThrow(/replicas/);
    expect(() => parseConfig({ nats: { replicas: "three" as never } })).toThrow(/replicas/);
  });

  it("reads ado.config.yaml from the directory, keeping defaults for what it omits", async () => {
    const { dir } = await configDir("workers: 2\nserver: nats://10.0.0.1:4222\nshutdown: { graceMs: 100 }\nembedded: { port: 4999 }\n");
    const c = await loadConfig({ dir, env: {} });
    expect(c).toMatchObject({ workers: 2, server: "nats://10.0.0.1:4222", slotsFrom: "default", embedded: { port: 4999 } });
    expect(c.shutdown).toEqual({ graceMs: 100, forceMs: 5_000 });
  });

  it("lets the environment override the file, and flags override both", async () => {
    const { dir } = await configDir("workers: 2\nslots: 3\nlogLevel: info\nprefix: fromfile\n");
    const env = { ADO_WORKERS: "8", ADO_LOG_LEVEL: "debug", ADO_BALANCER_STRATEGY: "least_loaded", ADO_HEARTBEAT_MS: "250" };
    const c = await loadConfig({ dir, env });
    expect(c).toMatchObject({ workers: 8, slots: 3, logLevel: "debug", prefix: "fromfile", heartbeatMs: 250 });

    const f = await loadConfig({ dir, env, flags: { workers: 16, logLevel: undefined, "shutdown.graceMs": 0 } });
    expect(f).toMatchObject({ workers: 16, slots: 3, logLevel: "debug", shutdown: { graceMs: 0, forceMs: 5_000 } });
  });

  it("reads an explicit --config file instead of the directory's", async () => {
    const { dir } = await configDir("workers: 2\n");
    const other = await configDir("workers: 7\n");
    expect((await loadConfig({ dir, file: other.file, env: {} })).workers).toBe(7);
  });

  it("expands ~ in worktreeDir, as the README's example config writes it", async () => {
    // Left as "~/...", the path resolves against the working directory: worktrees
    // would land in a directory named "~" inside the user's checkout.
    const { dir } = await configDir("worktreeDir: ~/.cache/ado/worktrees\n");
    const c = await loadConfig({ dir, env: {} });
    expect(isAbsolute(c.worktreeDir!)).toBe(true);
    expect(c.worktreeDir).toBe(join(homedir(), ".cache", "ado", "worktrees"));
  });

  it("ignores empty environment variables and reads an empty file as no settings", async () => {
    const { dir } = await configDir("# nothing yet\n");
    expect((await loadConfig({ dir, env: { ADO_WORKERS: "", ADO_SERVER: "" } })).workers).toBe(4);
  });
});

describe("config - errors", () => {
  it("names the field, the file and the allowed values for a bad value in the file", async () => {
    const { dir, file } = await configDir("logLevel: loud\n");
    const err = await configError(loadConfig({ dir, env: {} }));
    expect(err.message).toContain(`logLevel (from ${file})`);
    for (const level of LOG_LEVELS) expect(err.message).toContain(`"${level}"`);
  });

  it("names the environment variable a bad value came from", async () => {
    const { dir } = await configDir("logLevel: info\nworkers: 2\n");
    const err = await configError(loadConfig({ dir, env: { ADO_LOG_LEVEL: "chatty" } }));
    expect(err.message).toContain("logLevel (from environment ADO_LOG_LEVEL)");
    expect(err.message).toContain('"trace"');

    const nested = await configError(loadConfig({ dir, env: { ADO_BALANCER_STRATEGY: "fastest" } }));
    expect(nested.message).toContain("balancer.strategy (from environment ADO_BALANCER_STRATEGY)");
    expect(nested.message).toContain('"least_loaded"');

    const num = await configError(loadConfig({ dir, env: { ADO_WORKERS: "many" } }));
    expect(num.message).toContain("workers (from environment ADO_WORKERS)");
    expect(num.message).toMatch(/number/);
  });

  it("names the flag a bad value came from, and the allowed range", async () => {
    const { dir } = await configDir("workers: 2\n");
    const err = await configError(loadConfig({ dir, env: { ADO_SLOTS: "3" }, flags: { slots: 0 } }));
    expect(err.message).toContain("slots (from command-line flag)");
    expect(err.message).toMatch(/>=\s*1/);
  });

  it("reports every bad field at once", async () => {
    const { dir, file } = await configDir("workers: -1\nlogLevel: loud\n");
    const err = await configError(loadConfig({ dir, env: {} }));
    expect(err.message).toContain(`workers (from ${file})`);
    expect(err.message).toContain(`logLevel (from ${file})`);
  });

  it("refuses an unknown setting, naming it and the known ones", async () => {
    const { dir } = await configDir("workers: 2\ncolour: red\n");
    const err = await configError(loadConfig({ dir, env: {} }));
    expect(err.message).toContain("'colour'");
    expect(err.message).toMatch(/known: .*workers.*logLevel/);
    const nested = await configDir("balancer: { strategy: least_loaded, mode: fast }\n");
    expect((await configError(loadConfig({ dir: nested.dir, env: {} }))).message).toContain("'mode'");
  });

  it("says in which file an unknown setting was written", async () => {
    const { dir, file } = await configDir("workers: 2\ncolour: red\n");
    const err = await configError(loadConfig({ dir, env: {} }));
    expect(err.message).toContain(file);
    expect(err.message).not.toContain("from default");
  });

  it("errors when an explicit --config file is missing, naming it; a missing directory file is fine", async () => {
    const missing = join(scratch.dir, "nope", "ado.yaml");
    const err = await configError(loadConfig({ file: missing, env: {} }));
    expect(err.message).toContain(`'${missing}'`);
    expect(err.message).toMatch(/cannot be read/);
    await expect(loadConfig({ dir: join(scratch.dir, "nope"), env: {} })).resolves.toMatchObject({ workers: 4 });
  });

  it("errors on invalid YAML and on a file that is not a mapping, naming the file", async () => {
    const bad = await configDir("workers: [2\n");
    const err = await configError(loadConfig({ dir: bad.dir, env: {} }));
    expect(err.message).toContain(`'${bad.file}' is not valid YAML`);
    const list = await configDir("- workers: 2\n");
    expect((await configError(loadConfig({ dir: list.dir, env: {} }))).message).toMatch(/must be a mapping/);
  });
});
