import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { runAdo, startAdo, stopProcess } from "../helpers/cli.js";
import { provisioned, uniqueTopology, useTestServer } from "../helpers/nats.js";

/**
 * Slots where nothing sets them: the default, auto, from this host (src/runtime/hardware.ts),
 * reported with its reasons by `ado doctor` and a worker's start line. These tests unset
 * the suite's pin of the default (vitest.config.ts ADO_SLOTS=1), so the number is this
 * host's: they check that it is said and why, never what it is.
 */

const ts = useTestServer("ado-slots-default-");

/** No config file, no ADO_SLOTS (empty is unset), a home and PATH of the test's own. */
async function silentEnv(name: string): Promise<NodeJS.ProcessEnv> {
  const home = join(ts.scratch, name);
  await mkdir(home, { recursive: true });
  return { ADO_SLOTS: "", HOME: home, XDG_CACHE_HOME: join(home, "cache"), XDG_STATE_HOME: join(home, "state"), PATH: `${dirname(process.execPath)}:/usr/bin:/bin` };
}

describe("slots - the default, auto, says what it gave and why", () => {
  it("doctor - nothing sets slots: --json and the text give the number auto decided, its reasons, and that it is the default; ADO_SLOTS sets them instead", async () => {
    const env = await silentEnv("doctor");
    const json = await runAdo(["doctor", "--json"], { env, cwd: env.HOME });
    expect(json.code, json.stderr).toBe(0);
    const hw = (JSON.parse(json.stdout) as { hardware: { slots: number; slotsFrom: string; slotsAuto: boolean; slotsWhy?: string; slotsLine: string; workers: number } }).hardware;
    expect(hw).toMatchObject({ slotsFrom: "default", slotsAuto: true, workers: 4 });
    // The embedded stack's 4 workers share what the host holds.
    expect(hw.slotsWhy).toMatch(new RegExp(`^\\d+ cores? at load [\\d.]+ \\(\\d+ idle\\), .* over 4 workers, ${hw.slots} slots? per worker`));
    expect(hw.slotsLine).toBe(`slots: ${hw.slots} per worker (default: auto: ${hw.slotsWhy})`);

    const text = await runAdo(["doctor"], { env, cwd: env.HOME });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/\nHardware: slots: \d+ per worker \(default: auto: \d+ cores? at load .* over 4 workers, \d+ slots? per worker.*\)\n {2}slots: auto gives \d+ per worker here for one worker: /);

    const pinned = await runAdo(["doctor", "--json"], { env: { ...env, ADO_SLOTS: "3" }, cwd: env.HOME });
    expect(pinned.code, pinned.stderr).toBe(0);
    expect((JSON.parse(pinned.stdout) as { hardware: Record<string, unknown> }).hardware).toMatchObject({ slots: 3, slotsFrom: "environment ADO_SLOTS", slotsAuto: false, slotsLine: "slots: 3 per worker (from environment ADO_SLOTS)" });
  });

  it("worker - nothing sets slots: the start line says how many each worker got, that it is the default, and why", async () => {
    const topo = uniqueTopology();
    const nc = await ts.connect();
    await provisioned(nc, topo);
    const env = await silentEnv("worker");
    const { child, output } = await startAdo(["worker", "--server", ts.url, "--prefix", topo.prefix, "--count", "2"], /slots: \d+ per worker \(default: auto: .*\)\n/, { env });
    try {
      const slots = Number(/\((\d+) slot\(s\) each\)/.exec(output())![1]);
      expect(output()).toMatch(new RegExp(`\\nado: slots: ${slots} per worker \\(default: auto: \\d+ cores? at load .* over 2 workers, ${slots} slots? per worker`));
    } finally {
      // Drained and exited 0: its start lines come once its signal handlers are set.
      expect(await stopProcess(child), output()).toBe(0);
    }
  });

  it("worker --slots auto overrides ADO_SLOTS and says so; a wrong --slots is refused with what it takes", async () => {
    const topo = uniqueTopology();
    const nc = await ts.connect();
    await provisioned(nc, topo);
    const env = { ...(await silentEnv("worker-flag")), ADO_SLOTS: "1" };
    const bad = await runAdo(["worker", "--server", ts.url, "--prefix", topo.prefix, "--slots", "many"], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--slots must be a whole number from 1 to 1024 or 'auto', got 'many'/);
    const { child, output } = await startAdo(["worker", "--server", ts.url, "--prefix", topo.prefix, "--slots", "auto"], /slots: \d+ per worker \(auto, from command-line flag: .*\)\n/, { env });
    expect(await stopProcess(child), output()).toBe(0);
  });
});
