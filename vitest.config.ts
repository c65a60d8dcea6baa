import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Tests start real servers and child processes; give slow CI machines room.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    // Under CI a JSON report too, from which .ci/run prints the closing "N passed, N failed" line.
    reporters: process.env["CI"] === undefined ? ["default"] : ["default", "json"],
    outputFile: { json: ".ci/test-results.json" },
  },
});
