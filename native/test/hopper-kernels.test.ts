// The Hopper kernels (the prefill attention, the gate/up GEMM) compile for sm_90a the way
// they were measured: ptxas must not serialise their wgmma's (it does so silently, with only
// an info line, when a wgmma sits under a branch it cannot prove uniform or registers run
// short, and the prefill attention then ran at half its speed: bench/results/cuda-notes.md,
// session 7), nor spill (the gate/up GEMM's fp16 epilogue did, at first). Needs nvcc (CI has
// it); without one the check says it skipped.
import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const srcDir = resolve(import.meta.dirname, "../src");
const kernels = ["backend/cuda/prefill_attention_wgmma.cu", "backend/cuda/silu_gate_up_gemm.cu"];

function findNvcc(): string | undefined {
  const fromPath = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
  if (fromPath.status === 0) return "nvcc";
  const standard = "/usr/local/cuda/bin/nvcc";
  return existsSync(standard) ? standard : undefined;
}

const nvcc = findNvcc();
for (const kernel of kernels) {
  t.test(`${kernel} for sm_90a: no serialised wgmma, no spills`, { skip: nvcc ? false : "no nvcc here" }, async (t) => {
    const out = mkdtempSync(join(tmpdir(), "hopper-kernels-"));
    try {
      const run = spawnSync(
        nvcc!,
        ["-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a", `-I${srcDir}`, "-DTG_CUDA_SM90A=1",
          "-Xptxas", "-v", "-c", join(srcDir, kernel), "-o", join(out, "kernel.o")],
        { encoding: "utf8", timeout: 240_000 },
      );
      const report = `${run.stdout}${run.stderr}`;
      t.equal(run.status, 0, `nvcc compiled it:\n${report}`);
      t.notMatch(report, /wgmma\.mma_async instructions are serialized/, "ptxas keeps every wgmma asynchronous");
      const spills = [...report.matchAll(/(\d+) bytes spill stores/g)].map((m) => Number(m[1]));
      t.ok(spills.length > 0, "ptxas reported each kernel's registers");
      t.same(spills.filter((n) => n > 0), [], "no kernel spills registers");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}
