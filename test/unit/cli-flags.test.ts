import { describe, expect, it } from "vitest";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AUTO_SCALE_POOL, autoScaleConfig, parseAutoScaleRange } from "../../src/cli/auto-scale.js";
import { configFrom, logLevelOf } from "../../src/cli/common.js";
import { useScratch } from "../helpers/scratch.js";

const scratch = useScratch("ado-flags-");

describe("cli flags - -q and -v set the log level", () => {
  it("cli flags - -q is errors only; -v, -vv, -vvv go up to trace; neither leaves the config's", async () => {
    expect(logLevelOf({ quiet: true })).toBe("error");
    expect([1, 2, 3].map((verbose) => logLevelOf({ verbose }))).toEqual(["info", "debug", "trace"]);
    expect(logLevelOf({ verbose: 0 })).toBeUndefined();
    const saved = process.env.ADO_LOG_LEVEL;
    process.env.ADO_LOG_LEVEL = "warn";
    try {
      expect((await configFrom({ verbose: 2 }, scratch.dir)).config.logLevel).toBe("debug");
      expect((await configFrom({ quiet: true }, scratch.dir)).config.logLevel).toBe("error");
      expect((await configFrom({}, scratch.dir)).config.logLevel).toBe("warn");
    } finally {
      if (saved === undefined) delete process.env.ADO_LOG_LEVEL;
      else process.env.ADO_LOG_LEVEL = saved;
    }
  });
});

describe("cli flags - ado run --auto-scale", () => {
  const base = async (file = "") => {
    if (file) await writeFile(join(scratch.dir, "ado.config.yaml"), file);
    return (await configFrom({}, scratch.dir)).config;
  };

  it("auto-scale - a range, or max alone, gives a local pool 'run' shaped like the run's workers; the run starts none of its own", async () => {
    const config = { ...(await base()), slots: 2, worker: { labels: ["fast"], capabilities: ["node20"], accessMode: "local" as const, costPerTask: 0 } };
    const c = autoScaleConfig(config, "0..6");
    expect(c.workers).toBe(0);
    expect(c.scaler.pools).toHaveLength(1);
    expect(c.scaler.pools[0]).toMatchObject({ name: AUTO_SCALE_POOL, backend: "local", min: 0, max: 6, slots: 2, labels: ["fast"], capabilities: ["node20"], idleTimeout: 60_000 });
    expect(autoScaleConfig(config, "2..3").scaler.pools[0]).toMatchObject({ min: 2, max: 3 });
    expect(autoScaleConfig(config, "5").scaler.pools[0]).toMatchObject({ min: 0, max: 5 });
    // Alone: up to --workers, else the config's workers.
    expect(autoScaleConfig(config, true, 3).scaler.pools[0]).toMatchObject({ min: 0, max: 3 });
    expect(autoScaleConfig({ ...config, workers: 4 }, true).scaler.pools[0]).toMatchObject({ min: 0, max: 4 });
  });

  it("auto-scale - the config's local pool is used (the range replaces its min and max); other pools are kept", async () => {
    const config = await base(
      ["scaler:", "  pools:", "    - { name: gpu, backend: command, command: { up: 'true', down: 'true' } }", "    - { name: mine, backend: local, min: 1, max: 2, idleTimeout: 5s, slots: 3 }", ""].join("\n"),
    );
    const alone = autoScaleConfig(config, true);
    expect(alone.scaler.pools.map((p) => [p.name, p.min, p.max])).toEqual([["gpu", 0, 4], ["mine", 1, 2]]);
    const ranged = autoScaleConfig(config, "0..6");
    expect(ranged.scaler.pools.map((p) => [p.name, p.min, p.max, p.slots, p.idleTimeout])).toEqual([["gpu", 0, 4, 1, 60_000], ["mine", 0, 6, 3, 5_000]]);
    await rm(join(scratch.dir, "ado.config.yaml"));
  });

  it("auto-scale - a bad range, or a range with --workers, is refused saying what to give", async () => {
    const config = await base();
    for (const bad of ["6..2", "0..0", "a..b", "-1..3", "0..1000", "0-6"]) expect(() => autoScaleConfig(config, bad), bad).toThrow(/--auto-scale '.*' is not a range of workers: give min\.\.max .*e\.g\. --auto-scale 0\.\.6/);
    expect(() => autoScaleConfig(config, "0..6", 3)).toThrow(/--workers and --auto-scale 0\.\.6 both size the pool: give one/);
    expect(parseAutoScaleRange(" 1 .. 4 ")).toEqual({ min: 1, max: 4 });
  });
});
