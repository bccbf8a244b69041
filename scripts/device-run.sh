#!/usr/bin/env bash
# The GPU machine's side of one device call (the device tool's `run`, carrying
# .device/ as prepared by scripts/device-pack.sh):
#
#   bash scripts/device-run.sh [arch, default 90a] [bench | serve]
#
# unpacks node, the compiled JS and the build's node_modules from .device/, builds
# the addon with the CUDA backend, compiles the cuBLASLt shim check against the
# real cublasLt.h, runs the CUDA kernel tests and the end-to-end checks through the
# addon (stories260k greedy, random models' logits against the CPU backend, a quick
# decode timing), times the kernels at Llama-3-8B shapes (cuda_ops_test --perf), and
# prints a short table last. Full logs go to $OUT. With `serve` it skips the kernel
# timings and instead runs the GPU sampler's own test (scripts/device-sampling-test.sh),
# the GPU sampler through the engine (e2e.mjs sampler) and the real launcher with
# --device cuda on stories260k (native/tests/cuda/serve.mjs). With `bench` it also writes a
# random Llama-3-8B-shaped bf16 checkpoint (tools/random-model.ts, about 2 minutes),
# measures the device-to-device copy bandwidth, and times the engine on it
# (native/tests/cuda/e2e.mjs bench).
set -uo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90a}"
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
export PATH=/tmp/node-bin:/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0

rows=()
# step NAME LOGFILE COMMAND...: runs it, logs it, and records status, seconds and its summary line.
step() {
  local name=$1 log="$OUT/$2"; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$OUT/device-run.log"
  "$@" > "$log" 2>&1
  local rc=$?
  local summary
  summary=$(grep -E "^([0-9]+ passed|skipped)" "$log" | tail -n 1)
  [ -n "$summary" ] || summary=$(grep -c "^RESULT" "$log" | sed 's/$/ results/')
  [ "$summary" != "0 results" ] || summary=$(tail -n 1 "$log" | cut -c1-100)
  rows+=("$(printf '%-12s %-4s %4ss  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$summary")")
  tail -n 30 "$log" >> "$OUT/device-run.log"
  return $rc
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -n 1
} > "$OUT/machine.txt" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)

mkdir -p /tmp/node-bin
xz -d -c .device/node.xz > /tmp/node-bin/node && chmod +x /tmp/node-bin/node
tar -xJf .device/node_modules.tar.xz
tar -xf .device/dist.tar

step build build.txt node node_modules/cmake-js/bin/cmake-js compile -d native -O native/build -G Ninja \
  "--CDCMAKE_CUDA_ARCHITECTURES=$arch" || { cat "$OUT/build.txt" | tail -n 40; printf '%s\n' "${rows[@]}"; exit 1; }
step shim-check shim-check.txt g++ -std=c++17 -fsyntax-only -Inative/src -I/usr/local/cuda/include \
  native/tests/cuda/shim_check.cc
step kernels kernels.txt native/build/tests/cuda/cuda_ops_test
[ "${2:-}" = serve ] || step kernel-perf kernel-perf.txt native/build/tests/cuda/cuda_ops_test --perf
step stories260k stories.txt node native/tests/cuda/e2e.mjs stories models/stories260k
step logits logits.txt node native/tests/cuda/e2e.mjs logits .device/models/llama3-gqa4-d64 \
  .device/models/llama3-gqa8-d128 .device/models/qwen2-bias

if [ "${2:-}" = serve ]; then
  step sampler sampler.txt node native/tests/cuda/e2e.mjs sampler models/stories260k
  step serve serve.txt node native/tests/cuda/serve.mjs models/stories260k
  step sampling sampling.txt env OUT= bash scripts/device-sampling-test.sh "sm_$arch"
fi

if [ "${2:-}" = bench ]; then
  ln -sfn ../models dist/models  # random-model.js finds the tokenizer beside its repository root
  step gen-8b gen-8b.txt node dist/tools/random-model.js --preset llama3-8b --out /tmp/llama3-8b
  step copy-bw copy-bw.txt python3 -c '
import torch
x = torch.randn(2**28, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
ms = s.elapsed_time(e) / 20
print(f"RESULT copy bandwidth {2 * x.numel() * 4 / ms / 1e6:.0f} GB/s (1 GiB device-to-device copy, bytes read + written)")'
  step bench-8b bench-8b.txt node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
fi

echo
grep -h "FAIL\|not ok" "$OUT/kernels.txt" | head -n 20
sed -n '/^worst relative error/,$p' "$OUT/kernels.txt"
grep -h "^RESULT" "$OUT"/*.txt | sed 's/^RESULT /  /'
grep -h "FAIL\|DIFFERS\|DIFFERENT\|serve failed" "$OUT"/sampling.txt "$OUT"/sampler.txt "$OUT"/serve.txt 2>/dev/null | head -n 20
echo "card: $card ($(date -u +%FT%TZ)), arch sm_$arch"
printf '%s\n' "${rows[@]}"
# The device tool brings back at most 8 files: in serve mode the logs travel as one archive.
if [ "${2:-}" = serve ]; then
  (cd "$OUT" && tar -czf logs.tgz ./*.txt && rm -f ./*.txt)
fi
