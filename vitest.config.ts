import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Each server test file starts its own nats-server; two files at a time fit 2 cores.
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 60_000,
    reporters: ["default", "./test/helpers/summary-reporter.ts"],
    hookTimeout: 60_000,
    // Slots per worker where a test's config says nothing: the default, auto, would follow
    // this host's cores, memory and load, so tests would behave differently on a bigger or
    // idler machine. Every config the tests build (parseConfig, loadConfig, the ado
    // processes they spawn, which inherit it) gets 1, as before auto; tests of the default
    // itself set their own environment.
    env: { ADO_SLOTS: "1" },
  },
});
