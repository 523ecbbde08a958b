import { describe, expect, it } from "vitest";
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
