#!/usr/bin/env bash
# Batch-1 time per output token through the whole server (launcher, router, shard,
# engine), with the shard's lookahead on and off (TEXT_GEN_LOOKAHEAD), after
# scripts/device-run.sh has built the addon on this machine:
#
#   bash scripts/device-tpot.sh MODEL_DIR [bench/gpu/run.sh flags, e.g. --device cpu --shape tiny]
#
# Each setting is bench/gpu/run.sh's `batch1` scenario (its own launch; concurrency 1,
# 128 prompt / 256 new tokens); prints one RESULT line per setting.
set -uo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: device-tpot.sh MODEL_DIR [run.sh flags]}"
shift
export PATH=/tmp/node-bin:$PATH
for la in 1 0; do
  dir="/tmp/tpot-lookahead-$la"
  rm -rf "$dir"
  TEXT_GEN_LOOKAHEAD=$la bash bench/gpu/run.sh --model-dir "$model" --phase ours --only batch1 --quick \
    --run-dir "$dir" "$@" > "$dir.log" 2>&1 || { echo "RESULT tpot lookahead=$la: the run failed"; tail -n 20 "$dir.log"; continue; }
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).summary;
    console.log(`RESULT tpot lookahead=${process.argv[2]}: batch-1 TPOT p50 ${r.tpotMs.p50.toFixed(2)} ms (mean ${r.tpotMs.mean.toFixed(2)}), ` +
      `TTFT p50 ${r.ttftMs.p50.toFixed(1)} ms, ${r.outputTokensPerS.toFixed(1)} output tok/s, failed ${r.failed}`);
  ' "$dir/ours-batch1.json" "$la"
done
