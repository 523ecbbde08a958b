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
  },
});
