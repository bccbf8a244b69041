#!/usr/bin/env bash
# HF transformers parity on the GPU machine, after scripts/device-run.sh has built the addon
# on the same (warm) machine (node in /tmp/node-bin, dist/ unpacked, native/build/Release):
#
#   bash scripts/device-parity.sh [LLAMA3_8B_DIR (default /tmp/llama3-8b)]
#
# LLAMA3_8B_DIR is written (random-model --preset llama3-8b --seed 1, then a .complete mark)
# unless it has the .complete mark already (device-run.sh's gen_8b writes the same).
#
# 1. tools/make-hf-goldens.sh: the three small random checkpoints and their HF float32 goldens.
# 2. native/tests/cuda/parity.mjs on each in cuda bfloat16 and float16.
# 3. the Llama-3-8B-shaped random checkpoint (tools/random-model.ts --preset llama3-8b):
#    tools/hf_parity.py (HF float32 on the GPU; its process exits, freeing the GPU), then
#    parity.mjs in cuda bfloat16.
# Prints the RESULT lines and a table. Into $OUT: hf-goldens.tgz (tests/golden/hf/ as it
# should be committed: the small goldens with logits, the 8B's golden.json alone),
# parity-logs.tgz (every step's log) and parity-summary.txt. About 4 minutes, most of it the
# 8B (writing it about 15 s on 16 cores, HF's load and 512 float32 steps about 90 s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/device-out}"
work=/tmp/hf-parity
big="${1:-/tmp/llama3-8b}"
export PATH=/tmp/node-bin:/usr/local/cuda/bin:$PATH
if [ ! -x /tmp/node-bin/node ] || [ ! -f native/build/Release/text_gen_engine.node ] || [ ! -f dist/shard/model-config.js ]; then
  echo "device-parity: node, the addon or dist/ is missing: run scripts/device-run.sh first on this machine"
  exit 1
fi
rm -rf "$work" && mkdir -p "$work/logs" "$OUT"

table=()
failed=0
# run NAME COMMAND...: logs to $work/logs/NAME.txt, records status, seconds and the summary line.
run() {
  local name=$1 t0=$SECONDS rc; shift
  echo "=== $name: $*"
  "$@" > "$work/logs/$name.txt" 2>&1
  rc=$?
  grep -h "^RESULT\|^hf_parity\|^wrote" "$work/logs/$name.txt"
  [ $rc -eq 0 ] || { tail -n 20 "$work/logs/$name.txt"; failed=1; }
  local summary
  summary=$(grep -h "summary:" "$work/logs/$name.txt" | tail -n 1 | sed 's/^RESULT parity //')
  [ -n "$summary" ] || summary=$(tail -n 1 "$work/logs/$name.txt")
  summary=${summary:0:150}
  table+=("$(printf '%-22s %-4s %4ss  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$summary")")
  return $rc
}

small=(llama3-gqa mistral-swa qwen2-bias)
run goldens-small env HF_CONTROL=bfloat16 bash tools/make-hf-goldens.sh "$work/golden" "$work/models"
for m in "${small[@]}"; do
  run "parity-$m" node native/tests/cuda/parity.mjs "$work/models/$m" "$work/golden/$m" --device cuda --dtype bfloat16,float16
done

# The same flags and completion mark as device-run.sh's gen_8b, so either may write it.
big_args="--preset llama3-8b --seed 1"
if [ ! -f "$big/.complete" ]; then
  # shellcheck disable=SC2086  # the flags are words
  run gen-8b node dist/tools/random-model.js --out "$big" $big_args && touch "$big/.complete"
fi
run hf-8b "${PYTHON:-python3}" tools/hf_parity.py "$big" "$work/golden/llama3-8b" --name llama3-8b --device "${HF_DEVICE:-cuda}" \
  --generator-args "$big_args" --control-dtype bfloat16
run parity-8b node native/tests/cuda/parity.mjs "$big" "$work/golden/llama3-8b" --device cuda --dtype bfloat16

echo
grep -h "^RESULT parity" "$work"/logs/parity-*.txt | sed 's/^RESULT parity /  /'
{
  echo "card: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) ($(date -u +%FT%TZ))"
  printf '%s\n' "${table[@]}"
} | tee "$OUT/parity-summary.txt"

# The device tool brings back at most 8 files: goldens and logs travel as two archives.
goldens=()
for m in "${small[@]}"; do [ -f "$work/golden/$m/golden.json" ] && goldens+=("$m"); done
[ -f "$work/golden/llama3-8b/golden.json" ] && goldens+=(llama3-8b/golden.json)
[ ${#goldens[@]} -eq 0 ] || tar -czf "$OUT/hf-goldens.tgz" -C "$work/golden" "${goldens[@]}"
tar -czf "$OUT/parity-logs.tgz" -C "$work" logs
exit $failed
