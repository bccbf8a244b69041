#!/usr/bin/env bash
# The GPU machine's side of one device call (the device tool's `run`, carrying
# .device/ as prepared by scripts/device-pack.sh):
#
#   bash scripts/device-run.sh [ARCH, default 90a] [MODE...]
#
# Always: unpacks node, the compiled JS and the build's node_modules from .device/,
# builds the addon with the CUDA backend (and the CUDA tests), compiles the cuBLASLt
# and NCCL shim checks against the real headers, and runs the kernel tests
# (cuda_ops_test, prefill_attention_test, silu_gate_up_gemm_test, gemv_test, gate_up_choice_test,
# gemm_tuning_test; peer_collectives_test
# with 2+ GPUs)
# and the end-to-end checks
# through the addon (stories260k greedy, random models' logits against the CPU).
# Then each MODE, in order:
#   perf      kernel timings at Llama-3-8B shapes (cuda_ops_test, prefill_attention_test
#             and gemv_test with --perf; the peer all-reduce's time per call on 2+ GPUs)
#   opsperf   only perf's cuda_ops_test timings (GEMMs, attention, decode attention in graphs)
#   gemmtune  the GEMMs of a decode step timed in the order a server meets them (70B TP 4 slices and the
#             8B), cuBLASLt tuned per power-of-two row bucket, per row_bucket.h's buckets, and with 32
#             candidates (gemm_tuning_test --perf)
#   peerperf  only perf's peer collective timings (both protocols, plain and fused with RMSNorm)
#   gemvab    the GEMV timings (gemv_test --perf at TP 1 and 2 slices, the exchanging GEMVs with 2+
#             GPUs) once per entry of $ENV_SETS (default TEXT_GEN_GEMV_EXCHANGE_BATCH=1, then =4)
#   refab     the same GEMV and peer timings for this tree and for the native/ of git ref
#             $BASELINE_REF (scripts/device-pack.sh packs it when BASELINE_REF is set), built beside it,
#             alternating twice: the A/B of a change no switch can turn off (codegen, launch bounds);
#             the baseline's whole addon is built too, for tpsets entries that name it (see refab below)
#   serve     the GPU sampler's own test, the sampler through the engine, and the real
#             launcher with --device cuda on stories260k
#   tp        tensor parallelism over NCCL on the first two GPUs (scripts/device-tp.sh)
#   tpparity  on two GPUs: HF float32 on the 8B shape, then the engine against it at TP 1 and
#             TP 2 (parity.mjs, float16 and bfloat16, bfloat16 held to transformers' own bfloat16
#             error where larger than the fixed bar; with 4+ GPUs TP 4 too), and the launcher's
#             TP2-vs-TP1 check in float16
#   tpot      batch-1 time per output token through the launcher, shard lookahead on and off
#             (scripts/device-tpot.sh)
#   bench     a random Llama-3-8B-shaped bf16 checkpoint at /tmp/llama3-8b (if not there),
#             the copy and read bandwidth (membw), and the engine's timings on it
#             (e2e.mjs bench: load, prefill 1k/4k/8k, decode with and without CUDA graphs, the graph
#             steps also run ahead as the shard runs them)
#   membw     the copy and read bandwidth of the GPU (torch: 1 GiB copy, 1 GiB sum)
#   prefill   the prefill attention's and the gate/up GEMM's timings (prefill_attention_test and
#             silu_gate_up_gemm_test --perf), then the 8B's prefills of 1k/4k/8k tokens (e2e.mjs
#             bench, E2E_BENCH=prefill) as built alternating with $PREFILL_AB (default
#             TEXT_GEN_SILU_GEMM=0: without the Hopper gate/up GEMM), then without the Hopper
#             attention kernel (TEXT_GEN_PREFILL_WGMMA=0)
#   tpbench   our serving scenarios at --num-shard 2 (bench/gpu/run.sh --num-shard 2 --skip-hf --quick;
#             TPBENCH_FULL=1: the full scenario set, as gpubench runs it on one GPU)
#   tp70b     4+ GPUs: a random Llama-3-70B-shaped bf16 checkpoint (141 GB, /tmp/llama3-70b) served
#             with --num-shard 4: batch-1 and the ShareGPT-like scenario (bench/gpu/run.sh --quick, 200
#             prompts; TP70B_FULL=1: 500, the count of the vLLM anchor it is compared with;
#             TP70B_PREFILL_TOKENS: the server's --max-batch-prefill-tokens, default 8192; several
#             values, one run each: "8192 2048"; TP70B_MAX_BATCH_SIZES likewise for --max-batch-size)
#   pdlsets   the 8B's batch-1 and 16 graph decode steps with Programmatic Dependent Launch for each
#             set of kernels in $PDL_SETS (TEXT_GEN_PDL values; e2e.mjs bench, E2E_BENCH=decode)
#   envsets   A/B of environment switches: the 8B's graph decode steps (batches $E2E_BATCHES, default
#             1,16) once per entry of $ENV_SETS ("K=V K=V;K=V;...", default TEXT_GEN_PDL=0), e.g.
#             TEXT_GEN_STEP_SKIP ablations; pdlsets is this with TEXT_GEN_PDL=<each of $PDL_SETS>
#   tpsets    the same entries at --num-shard 2 (TPSETS_SHARDS: the counts, e.g. "1 2" for the TP 2 /
#             TP 1 ratio, or 4) through the launcher: batch-1 TPOT (bench/gpu/run.sh --only batch1,
#             logs tpset-N.txt at TP 2, tpset-tpK-N.txt at K); $TPSETS_ENV is added to every entry there
#             (e.g. TEXT_GEN_STEP_PROFILE=300 TEXT_GEN_STEP_PROFILE_OPS=0: GPU busy time per step in
#             /tmp/tpset-N-run/launcher.log)
#   sgsets    the ShareGPT-like scenario (500 prompts) on the 8B at --num-shard $SGSETS_SHARDS (default 1)
#             once per entry of $ENV_SETS, $SGSETS_ROUNDS times alternating (default 2)
#   profile   where the 8B's decode step spends its GPU time, op by op (TEXT_GEN_STEP_PROFILE): graph
#             steps at batch 1 and 16 on one GPU (e2e.mjs bench), again with no event between ops
#             (the step's GPU and host time only), then batch 1 through the launcher at --num-shard
#             2 (and 4 with 4+ GPUs; $PROFILE_SHARDS picks, 1 included; PROFILE_OPS=0: the split only);
#             the tables in profile-*.txt
#   gpubench  the serving benchmark through the launcher with HF in the same call
#             (bench/gpu/run.sh), results into $OUT
#   parity    HF transformers against the engine (scripts/device-parity.sh): the small
#             Qwen2/Mistral/Llama-3 goldens and the 8B shape
# A short table comes last. Logs travel back as $OUT/logs.tgz (the device tool brings
# back at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90a}"
shift || true
modes=" $* "
OUT="${OUT:-/tmp/device-out}"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
export PATH=/tmp/node-bin:/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0
has() { [[ "$modes" == *" $1 "* ]]; }
# Seconds a long step may take: at most $1, and never past ~575 s of the whole call (the
# device tool stops a command at 600 s, and the table and logs must still be written).
budget() { local left=$((575 - SECONDS)); echo $(( left < $1 ? (left > 10 ? left : 10) : $1 )); }

rows=()
# step NAME LOGFILE COMMAND...: runs it, logs it, and records status, seconds and its summary line.
step() {
  local name=$1 log="$LOGS/$2"; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$LOGS/device-run.log"
  "$@" > "$log" 2>&1
  local rc=$?
  local summary
  summary=$(grep -E "^([0-9]+ passed|skipped)" "$log" | tail -n 1)
  [ -n "$summary" ] || summary=$(grep -c "^RESULT" "$log" | sed 's/$/ results/')
  [ "$summary" != "0 results" ] || summary=$(tail -n 1 "$log" | cut -c1-100)
  rows+=("$(printf '%-14s %-4s %4ss  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$summary")")
  tail -n 30 "$log" >> "$LOGS/device-run.log"
  return $rc
}
finish() {
  echo
  grep -h "FAIL\|not ok" "$LOGS"/kernels*.txt "$LOGS"/prefill-attn.txt "$LOGS"/silu-gemm*.txt "$LOGS"/gemv*.txt "$LOGS"/gate-up*.txt "$LOGS"/peer.txt 2>/dev/null | head -n 20
  grep -h "^worst relative error" -A12 "$LOGS"/kernels.txt 2>/dev/null | head -n 14
  grep -h "^RESULT" "$LOGS"/*.txt | sed 's/^RESULT /  /'
  echo "card: $card ($(date -u +%FT%TZ)), arch sm_$arch"
  printf '%s\n' "${rows[@]}"
  (cd "$OUT" && tar -czf logs.tgz logs && rm -rf logs)
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -n 1
} > "$OUT/machine.txt" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
gpus=$(nvidia-smi -L | wc -l)

mkdir -p /tmp/node-bin
xz -d -c .device/node.xz > /tmp/node-bin/node && chmod +x /tmp/node-bin/node
tar -xJf .device/node_modules.tar.xz
tar -xf .device/dist.tar
ln -sfn ../models dist/models  # tools/random-model.js finds the tokenizer beside its repository root

step build build.txt node node_modules/cmake-js/bin/cmake-js compile -d native -O native/build -G Ninja \
  "--CDCMAKE_CUDA_ARCHITECTURES=$arch" || { tail -n 40 "$LOGS/build.txt"; finish; exit 1; }
# refab's baseline (device-pack.sh's .device/baseline): the whole addon and its kernel tests, built
# while the tests run, as the tree's were; its addon serves any step through TEXT_GEN_NATIVE_ADDON.
baseline_addon=/tmp/baseline-build/Release/text_gen_engine.node
if has refab && [ -f .device/baseline/REF ]; then
  node node_modules/cmake-js/bin/cmake-js compile -d .device/baseline/native -O /tmp/baseline-build -G Ninja \
    "--CDCMAKE_CUDA_ARCHITECTURES=$arch" > "$LOGS/baseline-build.txt" 2>&1 &
  baseline_build=$!
fi
# tp70b writes its 141 GB checkpoint while the other steps run (CPU and disk, not the GPUs).
if has tp70b; then
  bash bench/gpu/run.sh --shape llama3-70b --model-dir /tmp/llama3-70b --phase model > "$LOGS/gen-70b.txt" 2>&1 &
  gen70b=$!
fi
# SKIP_TESTS=1: build only, for a short measuring call.
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step shim-check shim-check.txt g++ -std=c++17 -fsyntax-only -Inative/src -I/usr/local/cuda/include \
    native/tests/cuda/shim_check.cc
  step nccl-shim nccl-shim.txt g++ -std=c++17 -fsyntax-only -Inative/src -I/usr/local/cuda/include \
    native/tests/cuda/nccl_shim_check.cc
  step kernels kernels.txt native/build/tests/cuda/cuda_ops_test
  # The decode attention's cp.async pipeline at its other depths (the default picks 3 on an H100).
  step kernels-2st kernels-2st.txt env TEXT_GEN_DECODE_STAGES=2 native/build/tests/cuda/cuda_ops_test
  step kernels-4st kernels-4st.txt env TEXT_GEN_DECODE_STAGES=4 native/build/tests/cuda/cuda_ops_test
  step prefill-attn prefill-attn.txt native/build/tests/cuda/prefill_attention_test
  step silu-gemm silu-gemm.txt native/build/tests/cuda/silu_gate_up_gemm_test
  step gemv gemv.txt native/build/tests/cuda/gemv_test
  step gate-up-choice gate-up-choice.txt native/build/tests/cuda/gate_up_choice_test
  step gemm-tuning gemm-tuning.txt native/build/tests/cuda/gemm_tuning_test
  # Programmatic Dependent Launch is off by default; its kernels must stay correct with it on.
  step kernels-pdl kernels-pdl.txt env TEXT_GEN_PDL=all native/build/tests/cuda/cuda_ops_test
  step gemv-pdl gemv-pdl.txt env TEXT_GEN_PDL=all native/build/tests/cuda/gemv_test
  step logits-pdl logits-pdl.txt env TEXT_GEN_PDL=all node native/tests/cuda/e2e.mjs logits .device/models/llama3-gqa4-d64 \
    .device/models/llama3-gqa8-d128 .device/models/qwen2-bias
  # Every step's MLP through the Hopper gate/up GEMM (from one row; the default is from 1,024),
  # where the models' shapes allow it (not llama3-gqa4-d64's intermediate size of 688).
  step logits-silu logits-silu.txt env TEXT_GEN_SILU_GEMM=1 node native/tests/cuda/e2e.mjs logits \
    .device/models/llama3-gqa8-d128 .device/models/qwen2-bias
  step peer peer.txt native/build/tests/cuda/peer_collectives_test  # skips with fewer than 2 GPUs
  step stories260k stories.txt node native/tests/cuda/e2e.mjs stories models/stories260k
  step logits logits.txt node native/tests/cuda/e2e.mjs logits .device/models/llama3-gqa4-d64 \
    .device/models/llama3-gqa8-d128 .device/models/qwen2-bias
fi

if has gemmtune; then
  step gemm-served gemm-served.txt native/build/tests/cuda/gemm_tuning_test --perf
fi
# perf runs opsperf's and peerperf's timings among its own.
if has perf || has opsperf; then
  step kernel-perf kernel-perf.txt native/build/tests/cuda/cuda_ops_test --perf
fi
if has prefill && [ "${SKIP_TESTS:-0}" = 1 ]; then  # a measuring call still checks the kernels it times
  step prefill-attn prefill-attn.txt native/build/tests/cuda/prefill_attention_test
  step silu-gemm silu-gemm.txt native/build/tests/cuda/silu_gate_up_gemm_test
fi
if has perf || has prefill; then
  step attn-perf attn-perf.txt native/build/tests/cuda/prefill_attention_test --perf
  step silu-gemm-perf silu-gemm-perf.txt native/build/tests/cuda/silu_gate_up_gemm_test --perf
fi
if has perf; then
  step kernel-perf-old kernel-perf-old.txt env TEXT_GEN_DECODE_ATTENTION=0 native/build/tests/cuda/cuda_ops_test --perf
  step gemv-perf gemv-perf.txt native/build/tests/cuda/gemv_test --perf
  step gemv-perf-tp2 gemv-perf-tp2.txt env GEMV_PERF_TP=2 native/build/tests/cuda/gemv_test --perf
fi
if has peerperf && [ "${SKIP_TESTS:-0}" = 1 ]; then  # likewise for the peer collectives
  step peer peer.txt native/build/tests/cuda/peer_collectives_test
fi
if has perf || has peerperf; then
  step peer-perf peer-perf.txt native/build/tests/cuda/peer_collectives_test --perf
fi

# gemvab: the GEMV timings (gemv_test --perf at TP 1 and TP 2 slices; the exchanging GEMVs of
# peer_collectives_test --perf with 2+ GPUs) once per entry of $ENV_SETS, e.g.
# "TEXT_GEN_GEMV_EXCHANGE_BATCH=1;TEXT_GEN_GEMV_EXCHANGE_BATCH=4".
# gemv_timings NAME SUFFIX LABEL TESTS [K=V...]: gemv_test --perf at TP 1 and TP 2 slices and, with
# 2+ GPUs, peer_collectives_test --perf, from the test binaries in TESTS with the assignments given,
# logged as NAME[-tp2|-peer]-SUFFIX.txt with every RESULT line labelled [LABEL].
gemv_timings() {
  local name=$1 suffix=$2 label=$3 tests=$4; shift 4
  step "$name#$suffix" "$name-$suffix.txt" env "$@" "$tests/gemv_test" --perf
  step "$name-tp2#$suffix" "$name-tp2-$suffix.txt" env "$@" GEMV_PERF_TP=2 "$tests/gemv_test" --perf
  if [ "$gpus" -ge 2 ]; then
    step "$name-peer#$suffix" "$name-peer-$suffix.txt" env "$@" "$tests/peer_collectives_test" --perf
  fi
  local log
  for log in "$LOGS/$name-$suffix.txt" "$LOGS/$name-tp2-$suffix.txt" "$LOGS/$name-peer-$suffix.txt"; do
    [ -f "$log" ] && sed -i "s|^RESULT |RESULT [$label] |" "$log"
  done
}

if has gemvab; then
  IFS=';' read -ra gemv_sets <<< "${ENV_SETS:-TEXT_GEN_GEMV_EXCHANGE_BATCH=1;TEXT_GEN_GEMV_EXCHANGE_BATCH=4};"
  for i in "${!gemv_sets[@]}"; do
    # shellcheck disable=SC2086 # the entry's words are separate assignments
    gemv_timings gemvab "$i" "${gemv_sets[$i]}" native/build/tests/cuda ${gemv_sets[$i]}
  done
fi

# refab: this tree's kernel timings against the baseline ref's (device-pack.sh's .device/baseline),
# each side's lines labelled [tree] or [<ref>]. With tpsets too, its entries may name the baseline's
# addon: ENV_SETS="TEXT_GEN_REFAB=tree;TEXT_GEN_NATIVE_ADDON=/tmp/baseline-build/Release/text_gen_engine.node"
# times the whole decode step of both builds through the launcher.
if has refab; then
  if [ ! -f .device/baseline/REF ]; then
    echo "refab: no .device/baseline: pack with BASELINE_REF=<ref> bash scripts/device-pack.sh" | tee -a "$LOGS/device-run.log"
  else
    ref=$(cat .device/baseline/REF)
    step baseline-build baseline-build-wait.txt wait "$baseline_build"
    if [ ! -f "$baseline_addon" ]; then tail -n 40 "$LOGS/baseline-build.txt"; fi
    for round in 0 1; do
      gemv_timings refab "tree-$round" tree native/build/tests/cuda
      gemv_timings refab "baseline-$round" "$ref" /tmp/baseline-build/tests/cuda
    done
  fi
fi

if has serve; then
  step sampler sampler.txt node native/tests/cuda/e2e.mjs sampler models/stories260k
  # float16: the exact-text check needs the dtype that reproduces llama2.c (192/192); in
  # bfloat16 one line parts at a near-tie (0.036 nats, e2e.mjs stories reports it).
  step serve serve.txt node native/tests/cuda/serve.mjs models/stories260k --dtype float16
  step sampling sampling.txt env OUT= bash scripts/device-sampling-test.sh "sm_$arch"
fi

gen_8b() {
  [ -f /tmp/llama3-8b/.complete ] && return 0
  step gen-8b gen-8b.txt timeout 200 node dist/tools/random-model.js --preset llama3-8b --out /tmp/llama3-8b --seed 1 &&
    touch /tmp/llama3-8b/.complete
}

if has tp; then
  gen_8b
  tp_s=$(budget $([ "$gpus" -ge 4 ] && echo 450 || echo 320))
  step tp tp.txt timeout "$((tp_s + 20))" env OUT="$LOGS" TP_BUDGET_S="$tp_s" bash scripts/device-tp.sh /tmp/llama3-8b
fi

# The memory roofline: a 1 GiB device-to-device copy (bytes read + written) and a 1 GiB
# sum (bytes read only: what a GEMV streaming weights can at best reach), through torch.
membw() {
  step membw membw.txt python3 -c '
import torch
def timed(fn):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / 20
x = torch.randn(2**28, device="cuda"); y = torch.empty_like(x)
ms = timed(lambda: y.copy_(x))
print(f"RESULT copy bandwidth {2 * x.numel() * 4 / ms / 1e6:.0f} GB/s (1 GiB device-to-device copy, bytes read + written)")
ms = timed(lambda: x.sum())
print(f"RESULT read bandwidth {x.numel() * 4 / ms / 1e6:.0f} GB/s (torch.sum of 1 GiB f32, bytes read)")'
}

if has membw; then membw; fi

if has prefill; then
  gen_8b
  step prefill-8b prefill-8b.txt timeout "$(budget 120)" env E2E_BENCH=prefill E2E_LABEL=best \
    E2E_AB="${PREFILL_AB:-TEXT_GEN_SILU_GEMM=0}" node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
  step prefill-8b-mma prefill-8b-mma.txt timeout "$(budget 90)" env E2E_BENCH=prefill TEXT_GEN_PREFILL_WGMMA=0 \
    E2E_LABEL=mma.sync node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
fi

if has bench; then
  gen_8b
  membw
  step bench-8b bench-8b.txt timeout "$(budget 150)" env E2E_AHEAD=1 node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
fi

# decode_sets NAME ENTRY...: the 8B's graph decode steps (e2e.mjs bench) once per entry, whose
# words are K=V assignments for env; logs NAME-0.txt, NAME-1.txt, ...
decode_sets() {
  local name=$1 i=0 set
  shift
  gen_8b
  for set in "$@"; do
    # shellcheck disable=SC2086 # the entry's words are separate assignments
    step "$name#$i" "$name-$i.txt" timeout "$(budget 70)" env $set E2E_LABEL="$set" E2E_BENCH=decode \
      E2E_BATCHES="${E2E_BATCHES:-1,16}" node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
    i=$((i + 1))
  done
}

if has pdlsets; then
  pdl_sets=()
  for set in ${PDL_SETS:-0 all gemv norm,rope,attention,silu,embedding attention}; do pdl_sets+=("TEXT_GEN_PDL=$set"); done
  decode_sets pdl "${pdl_sets[@]}"
fi

# ENV_SETS entries, split at ';' (an empty entry, the baseline, may come last too: `read -a`
# drops one trailing empty field, so every split here appends a ';').
IFS=';' read -ra env_sets <<< "${ENV_SETS:-TEXT_GEN_PDL=0};"
if has envsets; then
  decode_sets envset "${env_sets[@]}"
fi

# TPSETS_SHARDS: the shard counts, each run once per entry ("1 2": TP 1 then TP 2, for the ratio).
if has tpsets; then
  gen_8b
  for i in "${!env_sets[@]}"; do
    set=${env_sets[$i]}
    for n in ${TPSETS_SHARDS:-2}; do
      run="$([ "$n" = 2 ] || echo "tp$n-")$i"
      # shellcheck disable=SC2086
      step "tp$n#$i" "tpset-$run.txt" timeout "$(budget 120)" env $set ${TPSETS_ENV:-} bash bench/gpu/run.sh \
        --shape llama3-8b --model-dir /tmp/llama3-8b --num-shard "$n" --skip-hf --quick --only batch1 \
        --results-dir "/tmp/tpset-$run" --run-dir "/tmp/tpset-$run-run"
      echo "RESULT tp$n [$set] $(grep -h '^| batch1' /tmp/tpset-"$run"/*.md | cut -d'|' -f9 | head -n 1) TPOT p50/p99 ms" \
        >> "$LOGS/tpset-$run.txt"
    done
  done
fi

# The ShareGPT-like scenario (500 prompts, the vLLM anchor's count) on the 8B at SGSETS_SHARDS
# (default 1), once per entry, alternating SGSETS_ROUNDS times (default 2): a serving A/B of a
# switch where the 70B's 4 GPUs are not lent.
if has sgsets; then
  gen_8b
  for round in $(seq 1 "${SGSETS_ROUNDS:-2}"); do
    for i in "${!env_sets[@]}"; do
      set=${env_sets[$i]}
      run="sg-$i-$round"
      rm -rf "/tmp/$run" "/tmp/$run-run"
      # shellcheck disable=SC2086
      step "sg#$i.$round" "$run.txt" timeout "$(budget 150)" env $set bash bench/gpu/run.sh \
        --shape llama3-8b --model-dir /tmp/llama3-8b --num-shard "${SGSETS_SHARDS:-1}" --skip-hf --only sharegpt \
        --results-dir "/tmp/$run" --run-dir "/tmp/$run-run"
      echo "RESULT sharegpt [$set] round $round: $(grep -h '^| sharegpt' /tmp/"$run"/*.md | cut -d'|' -f5,8 | head -n 1)" \
        "req/s | TTFT p50/p99 ms" >> "$LOGS/$run.txt"
      grep -h "decode steps warmed up\|text-gen ready" "/tmp/$run-run/launcher.log" | cut -c1-400 >> "$LOGS/$run.txt"
      cp "/tmp/$run-run/metrics-sharegpt.txt" "$LOGS/$run-metrics.txt" 2>/dev/null
    done
  done
fi

if has profile; then
  gen_8b
  step profile-tp1 profile-tp1.txt timeout "$(budget 90)" env TEXT_GEN_STEP_PROFILE=16 E2E_BENCH=decode \
    E2E_BATCHES=1,16 node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
  # The whole step's split between GPU and host, with no event between ops.
  step profile-split profile-split.txt timeout "$(budget 90)" env TEXT_GEN_STEP_PROFILE=16 TEXT_GEN_STEP_PROFILE_OPS=0 \
    E2E_BENCH=decode E2E_BATCHES=1,16 node native/tests/cuda/e2e.mjs bench /tmp/llama3-8b
  for n in ${PROFILE_SHARDS:-2 4}; do
    [ "$gpus" -ge "$n" ] || continue
    step "profile-server-tp$n" "profile-server-tp$n-run.txt" timeout "$(budget 150)" env TEXT_GEN_STEP_PROFILE=300 \
      TEXT_GEN_STEP_PROFILE_OPS="${PROFILE_OPS:-1}" bash bench/gpu/run.sh \
      --shape llama3-8b --model-dir /tmp/llama3-8b --num-shard "$n" --skip-hf --quick --only batch1 \
      --results-dir "/tmp/profile-tp$n" --run-dir "/tmp/profile-tp$n-run"
    # The shards' stderr reaches the launcher's log as pino lines: their messages.
    grep -h "step profile" "/tmp/profile-tp$n-run/launcher.log" | sed -E 's/.*"msg":"([^"]*)".*/\1/' \
      > "$LOGS/profile-server-tp$n.txt"
  done
fi

if has gpubench; then
  gen_8b
  step gpubench gpubench.txt timeout "$(budget 330)" bash bench/gpu/run.sh --shape llama3-8b --model-dir /tmp/llama3-8b \
    --results-dir "$OUT" --run-dir /tmp/gpubench-run
fi

if has tpbench; then
  gen_8b
  step tpbench tpbench.txt timeout "$(budget 330)" bash bench/gpu/run.sh --shape llama3-8b --model-dir /tmp/llama3-8b \
    --num-shard 2 --skip-hf $([ "${TPBENCH_FULL:-0}" = 1 ] || echo --quick) --results-dir "$OUT" --run-dir /tmp/tpbench-run
fi

if has tp70b; then
  step gen-70b gen-70b-wait.txt wait "$gen70b"
  # TP70B_FULL=1: the ShareGPT-like scenario at its full 500 prompts (the anchor's count), not --quick's 200.
  # TP70B_PREFILL_TOKENS: one run per value (the batch-1 scenario in each entry's first only, none
  # with TP70B_ONLY=sharegpt), results in $OUT/prefill-N-batch-M.
  # TP70B_MAX_BATCH_SIZES: the same for the server's --max-batch-size ("none 256": uncapped, then 256).
  # TP70B_ENVS: entries split at ';', each K=V words for the server (e.g. "TEXT_GEN_STEP_PROFILE=10
  # TEXT_GEN_STEP_PROFILE_OPS=0"): one more round of runs per entry, results in $OUT/envN-prefill-….
  # Each run leaves its shards' step profile lines and the router's step counters in the logs.
  IFS=';' read -ra tp70b_envs <<< "${TP70B_ENVS:-};"
  for e in "${!tp70b_envs[@]}"; do
    only=${TP70B_ONLY:-batch1,sharegpt}
    for tokens in ${TP70B_PREFILL_TOKENS:-8192}; do
      for size in ${TP70B_MAX_BATCH_SIZES:-none}; do
        run="$([ "$e" = 0 ] || echo "env$e-")prefill-$tokens-batch-$size"
        rm -rf "/tmp/tp70b-run-$run"  # a warm machine's earlier run: its results would be reported again
        # shellcheck disable=SC2086 # the entry's words are separate assignments
        step "tp70b-$e-$tokens-$size" "tp70b-$run.txt" timeout "$(budget 560)" env ${tp70b_envs[$e]} \
          bash bench/gpu/run.sh --shape llama3-70b \
          --model-dir /tmp/llama3-70b --num-shard 4 --skip-hf $([ "${TP70B_FULL:-0}" = 1 ] || echo --quick) \
          --only "$only" --results-dir "$OUT/$run" --max-batch-prefill-tokens "$tokens" \
          $([ "$size" = none ] || echo --max-batch-size "$size") --run-dir "/tmp/tp70b-run-$run"
        grep -h "step profile\\|text-gen gemm" "/tmp/tp70b-run-$run/launcher.log" | sed -E 's/.*"msg":"([^"]*)".*/\1/' \
          > "$LOGS/tp70b-$run-profile.txt"
        grep -h "^tgi_batch_\(inference\|forward\|filter\)_duration_\(sum\|count\)\|^tgi_batch_concat" \
          "/tmp/tp70b-run-$run"/metrics-*.txt > "$LOGS/tp70b-$run-metrics.txt" 2>/dev/null
        only=sharegpt
      done
    done
  done
fi

if has parity; then
  gen_8b
  step parity parity.txt timeout "$(budget 420)" env OUT="$OUT" bash scripts/device-parity.sh /tmp/llama3-8b
fi

if has tpparity; then
  gen_8b
  step hf-8b hf-8b.txt timeout "$(budget 150)" python3 tools/hf_parity.py /tmp/llama3-8b /tmp/hf8b --name llama3-8b \
    --generator-args "--preset llama3-8b --seed 1" --control-dtype bfloat16
  step parity-tp1 parity-tp1.txt timeout "$(budget 120)" node native/tests/cuda/parity.mjs /tmp/llama3-8b /tmp/hf8b \
    --device cuda --dtype float16,bfloat16
  step parity-tp2 parity-tp2.txt timeout "$(budget 150)" env CUDA_VISIBLE_DEVICES=0 PARITY_GPUS=0,1 \
    node native/tests/cuda/parity.mjs /tmp/llama3-8b /tmp/hf8b --device cuda --dtype float16,bfloat16 --world-size 2
  if [ "$gpus" -ge 4 ]; then
    step parity-tp4 parity-tp4.txt timeout "$(budget 150)" env CUDA_VISIBLE_DEVICES=0 PARITY_GPUS=0,1,2,3 \
      node native/tests/cuda/parity.mjs /tmp/llama3-8b /tmp/hf8b --device cuda --dtype float16,bfloat16 --world-size 4
  fi
  tp_s=$(budget 200)
  # Its own log folder: device-tp.sh's tp.txt and launcher logs would overwrite the bf16 `tp` step's.
  step tp-fp16 tp-fp16.txt timeout "$((tp_s + 20))" env OUT="$LOGS/fp16" TP_DTYPE=float16 TP_BUDGET_S="$tp_s" \
    bash scripts/device-tp.sh /tmp/llama3-8b
fi

if has tpot; then
  gen_8b
  step tpot tpot.txt timeout "$(budget 200)" bash scripts/device-tpot.sh /tmp/llama3-8b
fi

finish
