#!/usr/bin/env bash
# Prepares .device/ (git-ignored; name it in the device tool's `carry`) for
# scripts/device-run.sh on the GPU machine, which has no node, npm or network:
#   node.xz            this machine's node binary, xz-compressed
#   dist.tar           the compiled TypeScript (dist/), rebuilt here every time
#   node_modules.tar.xz  the production dependency closure of package.json (the addon
#                      build's cmake-js, node-addon-api, node-api-headers, and what the
#                      launcher, router and shard load at run time), xz-compressed
#   models/            small random checkpoints (tools/random-model.ts) for the
#                      logits checks: llama3 GQA 4 d64, llama3 GQA 8 d128, qwen2 with biases
#   baseline/          with BASELINE_REF set: that ref's native/ sources (refab)
# The whole tree that travels must stay under 64 MiB; the script prints the size.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device/models

if [ ! -f .device/node.xz ]; then
  echo "compressing $(command -v node)"
  xz -T2 -6 -c "$(command -v node)" > .device/node.xz
fi

npx tsc -p tsconfig.json  # dist/ must match the sources the device builds the addon from
tar -cf .device/dist.tar dist

# The production dependency closure of package.json (flat node_modules): about 38 MB,
# 5 MB once xz-compressed.
rm -f .device/node_modules.tar
node -e '
  const fs = require("fs"), path = require("path");
  const seen = new Set(), todo = Object.keys(JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies);
  while (todo.length) {
    const name = todo.pop();
    if (seen.has(name)) continue;
    const pj = path.join("node_modules", name, "package.json");
    if (!fs.existsSync(pj)) throw new Error("missing " + pj);
    seen.add(name);
    const pkg = JSON.parse(fs.readFileSync(pj, "utf8"));
    todo.push(...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {}).filter((n) => fs.existsSync(path.join("node_modules", n))));
  }
  fs.writeFileSync(".device/node_modules.list", [...seen].sort().map((n) => "node_modules/" + n).join("\n") + "\n");
'
tar -cf - -T .device/node_modules.list | xz -T2 -6 > .device/node_modules.tar.xz

make_model() {  # name, then random-model.ts flags
  local name=$1; shift
  [ -f ".device/models/$name/config.json" ] && return
  node --import tsx tools/random-model.ts --out ".device/models/$name" --dtype BF16 "$@"
}
make_model llama3-gqa4-d64 --kind llama3 --hidden 256 --heads 4 --kv-heads 1 --layers 2 --intermediate 688 --vocab 1024 --seed 11
make_model llama3-gqa8-d128 --kind llama3 --hidden 512 --heads 8 --kv-heads 1 --head-dim 128 --layers 2 --intermediate 512 --vocab 512 --seed 12
make_model qwen2-bias --kind qwen2 --hidden 256 --heads 4 --kv-heads 2 --layers 2 --intermediate 512 --vocab 512 --seed 13

# BASELINE_REF=<git ref>: that ref's native/ sources into .device/baseline, for device-run.sh's
# refab (its kernel timings against this tree's in one call). Without it, none travels.
rm -rf .device/baseline
if [ -n "${BASELINE_REF:-}" ]; then
  mkdir -p .device/baseline
  git archive "$BASELINE_REF" native | tar -x -C .device/baseline
  echo "$BASELINE_REF ($(git rev-parse --short "$BASELINE_REF"))" > .device/baseline/REF
fi

du -sh .device
echo "travels with the tree: $(du -cb .device | tail -1 | cut -f1) bytes in .device (limit 64 MiB with the repo)"
