#!/usr/bin/env bash
# A long fuzz run (test/fuzz/README.md): CASES cases per seed, new seeds until one fails or ROUNDS ran.
# Usage: test/fuzz/long-run.sh [CASES=50000] [ROUNDS=infinite]
set -euo pipefail
cd "$(dirname "$0")/../.."
cases=${1:-50000}
rounds=${2:-0}
i=0
while [ "$rounds" -eq 0 ] || [ "$i" -lt "$rounds" ]; do
  seed=$(( (RANDOM << 17) ^ (RANDOM << 2) ^ RANDOM ))
  echo "=== round $((i + 1)): seed $seed, $cases cases"
  # The test's own timeout scales with the case count (MCP_FUZZ_CASES).
  MCP_FUZZ_SEED=$seed MCP_FUZZ_CASES=$cases npx vitest run test/fuzz --testTimeout=0 || { echo "failed: replay with MCP_FUZZ_SEED=$seed MCP_FUZZ_CASES=$cases"; exit 1; }
  i=$((i + 1))
done
