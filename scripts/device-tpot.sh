#!/usr/bin/env bash
# Batch-1 time per output token through the whole server (launcher, router, shard,
# engine) on the GPU, with the shard's lookahead on and off (TEXT_GEN_LOOKAHEAD), after
# scripts/device-run.sh has built the addon on this machine:
#
#   bash scripts/device-tpot.sh MODEL_DIR [PROMPTS (default 3)]
#
# One launch per setting; text-gen-bench at concurrency 1, 128 prompt / 256 new tokens.
# Prints one RESULT line per setting. TPOT_DEVICE=cpu tries it where there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: device-tpot.sh MODEL_DIR [PROMPTS]}"
prompts="${2:-3}"
OUT="${OUT:-/tmp/device-out}"
export PATH=/tmp/node-bin:$PATH NCCL_NVLS_ENABLE=0
for la in 1 0; do
  log="/tmp/tpot-launcher-$la.log"
  TEXT_GEN_LOOKAHEAD=$la node dist/launcher/main.js --model-id "$model" --num-shard 1 --device "${TPOT_DEVICE:-cuda}" --port 0 \
    --hostname 127.0.0.1 --json-output --max-input-tokens 2047 --max-total-tokens 4096 > "$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 240); do
    port=$(grep -o '"msg":"text-gen ready"[^}]*' "$log" | grep -o '"port":[0-9]*' | head -1 | cut -d: -f2)
    [ -z "$port" ] && port=$(grep '"text-gen ready"' "$log" | grep -o '"port":[0-9]*' | head -1 | cut -d: -f2)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ -z "$port" ]; then echo "RESULT tpot lookahead=$la: the server did not start"; tail -n 20 "$log"; kill "$pid" 2>/dev/null; continue; fi
  node dist/bench/cli.js run --url "http://127.0.0.1:$port" --api tgi --tokenizer "$model" --concurrency 1 \
    --input-len 128 --output-len 256 --num-prompts "$prompts" --warmup 1 --seed 0 --no-progress \
    --out "/tmp/tpot-$la.json" > "/tmp/tpot-$la.txt" 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).summary;
    console.log(`RESULT tpot lookahead=${process.argv[2]}: batch-1 TPOT p50 ${r.tpotMs.p50.toFixed(2)} ms (mean ${r.tpotMs.mean.toFixed(2)}), ` +
      `TTFT p50 ${r.ttftMs.p50.toFixed(1)} ms, ${r.outputTokensPerS?.toFixed?.(1) ?? "?"} output tok/s, failed ${r.failed ?? 0}`);
  ' "/tmp/tpot-$la.json" "$la" || tail -n 20 "/tmp/tpot-$la.txt"
done
