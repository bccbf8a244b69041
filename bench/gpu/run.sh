#!/usr/bin/env bash
# The GPU benchmark in one script: a Llama-3-shaped random checkpoint, our server
# (text-gen-launcher) on the standard scenarios, HF transformers on the scenarios it
# can run, and a results file with every figure and the ratios.
#
#   bench/gpu/run.sh [--shape llama3-8b|llama3-70b|tiny] [--num-shard N] [--device cuda|cpu]
#                    [--card NAME] [--phase all|model|ours|hf|report] [--run-dir DIR]
#                    [--model-dir DIR] [--results-dir DIR] [--quick] [--skip-hf] [--port P] [--only NAMES]
#                    [--max-batch-prefill-tokens N] [--max-batch-size N]
#
# Phases keep each step inside one device call (10 min): `--phase model`, then
# `--phase ours`, `--phase hf`, `--phase report`, all with the same --run-dir (the
# machine keeps /tmp while it stays warm). --device cpu with --shape tiny is the
# dry run of everything but the GPU (CPU backend, tiny model, small scenarios).
# --only NAME[,NAME...] runs just those of our scenarios (e.g. batch1,sharegpt).
# --max-batch-prefill-tokens: the server's token budget of one forward (default 8192); with
# all prompts sent at once it sets how long decoding requests wait behind each prefill chunk.
# --max-batch-size: the server's cap on requests per batch (default none: the KV cache's tokens
# bound the batch), as vLLM's max_num_seqs caps it at 256.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

SHAPE=llama3-8b
NUM_SHARD=1
DEVICE=cuda
CARD=""
PHASE=all
RUN_DIR=""
MODEL_DIR=""
QUICK=0
ONLY=""
SKIP_HF=0
PORT=""
RESULTS_DIR=bench/results
PREFILL_TOKENS=8192
MAX_BATCH_SIZE=""

die() { echo "bench/gpu/run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE="$2"; shift 2 ;;
    --num-shard) NUM_SHARD="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --card) CARD="$2"; shift 2 ;;
    --phase) PHASE="$2"; shift 2 ;;
    --run-dir) RUN_DIR="$2"; shift 2 ;;
    --model-dir) MODEL_DIR="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --skip-hf) SKIP_HF=1; shift ;;
    --port) PORT="$2"; shift 2 ;;
    --results-dir) RESULTS_DIR="$2"; shift 2 ;;
    --max-batch-prefill-tokens) PREFILL_TOKENS="$2"; shift 2 ;;
    --max-batch-size) MAX_BATCH_SIZE="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
done

case "$SHAPE" in
  llama3-8b) MODEL_ARGS=(--preset llama3-8b --shards 4) ;;
  # Meta-Llama-3-70B's shape; 141 GB of bf16: --num-shard 4 or more, and disk for it.
  llama3-70b) MODEL_ARGS=(--kind llama3 --hidden 8192 --intermediate 28672 --layers 80 --heads 64 --kv-heads 8
                          --vocab 128256 --dtype BF16 --max-position-embeddings 131072 --shards 30) ;;
  # The CPU dry run's model: Llama-3 layout, small enough for the CPU backend.
  tiny) MODEL_ARGS=(--kind llama3 --hidden 256 --intermediate 688 --layers 4 --heads 8 --kv-heads 2 --vocab 512 --dtype F32) ;;
  *) die "--shape must be llama3-8b, llama3-70b or tiny" ;;
esac
case "$DEVICE" in cuda|cpu) ;; *) die "--device must be cuda or cpu" ;; esac
case "$PHASE" in all|model|ours|hf|report) ;; *) die "--phase must be all, model, ours, hf or report" ;; esac

command -v node >/dev/null || die "node (>= 20.17) is not on PATH"
[ -d node_modules ] || die "node_modules is missing: run npm ci first"
[ -f dist/launcher/main.js ] || die "dist/ is not built: npm run build"
if [ -z "$CARD" ]; then
  if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
    CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
    COUNT="$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)"
    [ "$COUNT" -gt 1 ] && CARD="${COUNT}x ${CARD}"
  else
    CARD="cpu-$(nproc)core"
  fi
fi
CARD_SLUG="$(echo "$CARD" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')"
DATE="$(date -u +%Y-%m-%d)"
RUN_DIR="${RUN_DIR:-/tmp/text-gen-bench-run-$SHAPE-$CARD_SLUG}"
MODEL_DIR="${MODEL_DIR:-/tmp/text-gen-bench-model-$SHAPE}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
mkdir -p "$RUN_DIR"
# A TypeScript entry point: compiled (dist/) if built, else from sources through tsx.
ts() {
  local src=$1 js="dist/${1%.ts}.js"; shift
  if [ -f "$js" ]; then node "$js" "$@"; else node --import tsx "$src" "$@"; fi
}
BENCH=(ts bench/cli.ts)
# Keep NVLink multicast off (shared hosts; see the device notes).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

echo "shape $SHAPE, $NUM_SHARD shard(s), device $DEVICE, card \"$CARD\", run dir $RUN_DIR, model $MODEL_DIR" >&2

phase_model() {
  if [ -f "$MODEL_DIR/config.json" ] && [ -f "$MODEL_DIR/.complete" ]; then
    echo "model: $MODEL_DIR already written" >&2; return
  fi
  rm -rf "$MODEL_DIR"
  local t0=$SECONDS
  ts tools/random-model.ts --out "$MODEL_DIR" "${MODEL_ARGS[@]}" --seed 1
  touch "$MODEL_DIR/.complete"
  echo "model: written in $((SECONDS - t0)) s ($(du -sh "$MODEL_DIR" | cut -f1))" >&2
}

# name | bench flags. The standard scenarios (bench/README.md); --quick and the CPU dry run shrink them.
scenarios() {
  if [ "$SHAPE" = tiny ]; then
    echo "batch1|--concurrency 1 --input-len 16 --output-len 16 --num-prompts 3"
    echo "c4|--concurrency 4 --input-len 64 --output-len 16 --num-prompts 8"
    echo "b8-static|--rate inf --input-len 16 --output-len 16 --num-prompts 8"
    echo "sharegpt|--workload sharegpt --rate inf --num-prompts 12"
    return
  fi
  local k=2; [ "$QUICK" = 1 ] && k=1
  echo "batch1|--concurrency 1 --input-len 128 --output-len 256 --num-prompts $((3 * k))"
  echo "c16|--concurrency 16 --input-len 1024 --output-len 256 --num-prompts $((16 * k))"
  echo "c64|--concurrency 64 --input-len 1024 --output-len 256 --num-prompts $((64 * k))"
  echo "c256|--concurrency 256 --input-len 1024 --output-len 256 --num-prompts $((256 * k))"
  echo "b64-static|--rate inf --input-len 128 --output-len 128 --num-prompts 64"
  echo "sharegpt|--workload sharegpt --rate inf --num-prompts $([ "$QUICK" = 1 ] && echo 200 || echo 500)"
}

phase_ours() {
  [ -f "$MODEL_DIR/.complete" ] || die "no model at $MODEL_DIR: run --phase model first"
  local log="$RUN_DIR/launcher.log"
  node dist/launcher/main.js --model-id "$MODEL_DIR" --num-shard "$NUM_SHARD" --hostname 127.0.0.1 --port "$PORT" \
    --json-output --max-concurrent-requests 2048 --max-input-tokens 2047 --max-total-tokens 4096 \
    --max-batch-prefill-tokens "$PREFILL_TOKENS" ${MAX_BATCH_SIZE:+--max-batch-size "$MAX_BATCH_SIZE"} >"$log" 2>&1 &
  local pid=$!
  trap "kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true" EXIT
  local waited=0
  until grep -q '"text-gen ready"' "$log"; do
    kill -0 "$pid" 2>/dev/null || { tail -30 "$log" >&2; die "the launcher exited before it was ready"; }
    [ "$waited" -ge 900 ] && { tail -30 "$log" >&2; die "the launcher was not ready after 900 s"; }
    sleep 1; waited=$((waited + 1))
  done
  echo "server ready after ${waited} s" >&2
  scenarios | while IFS='|' read -r name flags; do
    [ -z "$ONLY" ] || [[ ",$ONLY," == *",$name,"* ]] || continue
    echo "== ours: $name ($flags)" >&2
    # shellcheck disable=SC2086
    "${BENCH[@]}" run --url "http://127.0.0.1:$PORT" --api tgi --tokenizer "$MODEL_DIR" $flags --seed 0 --warmup 2 \
      --label "text-gen $name" --card "$CARD" --notes "shape $SHAPE, $NUM_SHARD shard(s), device $DEVICE" \
      --out "$RUN_DIR/ours-$name.json" --no-progress || echo "scenario $name failed" >&2
    # The router's Prometheus counters after the scenario (cumulative since the launch): how its
    # steps split between prefill and decode, forward and the router's own turnaround.
    node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))' \
      "http://127.0.0.1:$PORT/metrics" >"$RUN_DIR/metrics-$name.txt" 2>/dev/null || true
  done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  trap - EXIT
}

phase_hf() {
  [ "$SKIP_HF" = 1 ] && { echo "hf: skipped (--skip-hf)" >&2; return; }
  [ -f "$MODEL_DIR/.complete" ] || die "no model at $MODEL_DIR: run --phase model first"
  if ! python3 -c 'import torch, transformers' 2>/dev/null; then
    echo "hf: python3 has no torch/transformers; skipped" >&2
    echo '{"skipped": "python3 has no torch/transformers"}' >"$RUN_DIR/hf.json"
    return
  fi
  local extra=()
  if [ "$SHAPE" = tiny ]; then extra=(--batch1-in 16 --batch1-out 16 --static-batch 8 --static-in 16 --static-out 16 --repeats 1); fi
  [ "$QUICK" = 1 ] && extra+=(--repeats 1)
  python3 bench/gpu/hf_baseline.py --model "$MODEL_DIR" --device "$DEVICE" --out "$RUN_DIR/hf.json" "${extra[@]}"
}

phase_report() {
  ts bench/gpu/report.ts --run-dir "$RUN_DIR" --card "$CARD" --shape "$SHAPE" --num-shard "$NUM_SHARD" \
    --device "$DEVICE" --model-dir "$MODEL_DIR" --max-batch-prefill-tokens "$PREFILL_TOKENS" \
    ${MAX_BATCH_SIZE:+--max-batch-size "$MAX_BATCH_SIZE"} \
    --out-prefix "$RESULTS_DIR/$DATE-$CARD_SLUG-$SHAPE"
}

case "$PHASE" in
  model) phase_model ;;
  ours) phase_ours ;;
  hf) phase_hf ;;
  report) phase_report ;;
  all) phase_model; phase_ours; phase_hf; phase_report ;;
esac
