#!/usr/bin/env bash
# On the GPU machine, from the repository root: builds the GPU sampler's test
# (native/tests/cuda_sampling/sampling_test.cu, which CMake does not build)
# with nvcc and runs it. One device call:
#   bash scripts/device-sampling-test.sh [arch, default sm_90a]
# `cuda_sampling_test timing` runs the timings alone.
# The log goes to $OUT/cuda-sampling.txt when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-sm_90a}"
export PATH=/usr/local/cuda/bin:$PATH
bin=/tmp/cuda_sampling_test
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -1
nvcc -std=c++17 -O3 -gencode="arch=compute_${arch#sm_},code=${arch}" -Inative/src -Inative/tests \
  native/tests/cuda_sampling/sampling_test.cu native/src/backend/cuda/sampling/*.cu \
  native/src/sampling/sampler.cc -o "$bin"
"$bin" 2>&1 | tee "${OUT:-/tmp}/cuda-sampling.txt"
