#!/usr/bin/env bash
# Makes the Hugging Face parity goldens of the three small random checkpoints that CI
# checks the CPU engine against (native/test/hf-parity.test.ts). Runs where PyTorch and
# transformers are (the GPU machine, through scripts/device-parity.sh), with node on PATH:
#
#   bash tools/make-hf-goldens.sh [GOLDEN_ROOT (tests/golden/hf)] [MODELS_DIR (/tmp/hf-parity-models)]
#
# For each model: writes the checkpoint with tools/random-model (dist/tools/random-model.js
# when dist/ is built, else tsx), then tools/hf_parity.py writes GOLDEN_ROOT/NAME/golden.json
# and logits.f32, recording the generator flags and the weights' sha256 so that CI can
# rebuild the same checkpoint. Environment: PYTHON (python3), HF_DEVICE (cuda when
# nvidia-smi sees a GPU, else cpu), HF_ATTN (eager).
#
# The shapes: head_dim 64 everywhere (a CUDA fast path), 4 layers, vocabulary 4096, std 0.08
# (std^2 x hidden 1.6, as the Llama-3-8B preset's 0.02 at 4096: attention is far from uniform).
set -euo pipefail
cd "$(dirname "$0")/.."
golden_root="${1:-tests/golden/hf}"
models_dir="${2:-/tmp/hf-parity-models}"
python="${PYTHON:-python3}"
device="${HF_DEVICE:-$(nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}"

if [ -f dist/tools/random-model.js ]; then generator=(node dist/tools/random-model.js)
else generator=(node --import tsx tools/random-model.ts); fi

# NAME|random-model flags. Keep in step with the names in native/test/hf-parity.test.ts.
MODELS=(
  "llama3-gqa|--kind llama3 --dtype BF16 --hidden 256 --heads 8 --kv-heads 2 --head-dim 64 --intermediate 768 --layers 4 --vocab 4096 --std 0.08 --seed 21"
  "mistral-swa|--kind mistral --dtype BF16 --hidden 256 --heads 4 --kv-heads 1 --intermediate 768 --layers 4 --vocab 4096 --sliding-window 200 --std 0.08 --seed 22"
  "qwen2-bias|--kind qwen2 --dtype F32 --hidden 256 --heads 4 --kv-heads 2 --intermediate 768 --layers 4 --vocab 4096 --std 0.08 --seed 23"
)

for entry in "${MODELS[@]}"; do
  name="${entry%%|*}" args="${entry#*|}"
  rm -rf "${models_dir:?}/$name"
  # shellcheck disable=SC2086  # the flags are words
  "${generator[@]}" --out "$models_dir/$name" --threads 1 $args
  "$python" tools/hf_parity.py "$models_dir/$name" "$golden_root/$name" --name "$name" --device "$device" \
    --attn "${HF_ATTN:-eager}" --generator-args "$args" ${HF_CONTROL:+--control-dtype "$HF_CONTROL"}
done
echo "goldens in $golden_root: $(du -sh "$golden_root" | cut -f1)"
