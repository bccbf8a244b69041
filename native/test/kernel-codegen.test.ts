// The kernels whose speed was measured compile the way they were measured, for sm_90a (needs
// nvcc, which CI has; without one each check says it skipped):
// - the Hopper kernels (the prefill attention, the gate/up GEMM): ptxas must not serialise their
//   wgmma's (it does so silently, with only an info line, when a wgmma sits under a branch it
//   cannot prove uniform or registers run short, and the prefill attention then ran at half its
//   speed: bench/results/cuda-notes.md, session 7), nor spill (the gate/up GEMM's fp16 epilogue
//   did, at first);
// - every kernel of a decode step (the GEMV and the peer collectives run 64-160 times a step):
//   no spills (each change to the GEMV and the peer kernels was checked by hand for this until
//   session 17; a spill in the GEMV's k loop costs more than most changes to it gain), and no
//   stack frame past what each file's comment in `kernels` names: a kernel parameter indexed by
//   rank at run time without __grid_constant__ (PeerGroup's regions, GemvNorm's mailboxes), or a
//   register array indexed by rank, made every thread copy it to local memory first (128-272
//   byte frames, 0.3-3 us a call; session 18).
import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const srcDir = resolve(import.meta.dirname, "../src");
const kernels = [
  { file: "backend/cuda/prefill_attention_wgmma.cu", wgmma: true },
  { file: "backend/cuda/silu_gate_up_gemm.cu", wgmma: true },
  // 40: the RoPE epilogue's double sincos keeps a frame for reducing huge angles.
  { file: "backend/cuda/gemv.cu", maxStackBytes: 40 },
  // 24: the printf that reports a lost peer.
  { file: "backend/cuda/peer/peer_collectives.cu", maxStackBytes: 24 },
  { file: "backend/cuda/decode_attention.cu", maxStackBytes: 0 },
  { file: "backend/cuda/paged_attention.cu", maxStackBytes: 0 },
  { file: "backend/cuda/add_rms_norm.cu", maxStackBytes: 0 },
  { file: "backend/cuda/rope_kv_write.cu", maxStackBytes: 40 },  // sincos, as the GEMV's
  { file: "backend/cuda/embedding.cu", maxStackBytes: 0 },
  { file: "backend/cuda/silu_mul.cu", maxStackBytes: 0 },
  { file: "backend/cuda/vocab_shards.cu", maxStackBytes: 0 },
  { file: "backend/cuda/sampling/greedy_rows.cu", maxStackBytes: 0 },
  // 80: the sampled row's parameters and row view, passed by reference to the draw, which ptxas
  // keeps as a call (once a step, and only for rows that sample).
  { file: "backend/cuda/sampling/gpu_sampler.cu", maxStackBytes: 80 },
];

function findNvcc(): string | undefined {
  const fromPath = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
  if (fromPath.status === 0) return "nvcc";
  const standard = "/usr/local/cuda/bin/nvcc";
  return existsSync(standard) ? standard : undefined;
}

const nvcc = findNvcc();
for (const { file: kernel, wgmma, maxStackBytes } of kernels) {
  const frames = maxStackBytes === undefined ? "" : `, stack frames of at most ${maxStackBytes} bytes`;
  const name = `${kernel} for sm_90a: ${wgmma ? "no serialised wgmma, " : ""}no spills${frames}`;
  t.test(name, { skip: nvcc ? false : "no nvcc here" }, async (t) => {
    const out = mkdtempSync(join(tmpdir(), "kernel-codegen-"));
    try {
      const run = spawnSync(
        nvcc!,
        ["-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a", `-I${srcDir}`, "-DTG_CUDA_SM90A=1",
          "-Xptxas", "-v", "-c", join(srcDir, kernel), "-o", join(out, "kernel.o")],
        { encoding: "utf8", timeout: 240_000 },
      );
      const report = `${run.stdout}${run.stderr}`;
      t.equal(run.status, 0, `nvcc compiled it:\n${report}`);
      if (wgmma) t.notMatch(report, /wgmma\.mma_async instructions are serialized/, "ptxas keeps every wgmma asynchronous");
      const spills = [...report.matchAll(/(\d+) bytes spill stores/g)].map((m) => Number(m[1]));
      t.ok(spills.length > 0, "ptxas reported each kernel's registers");
      t.same(spills.filter((n) => n > 0), [], "no kernel spills registers");
      if (maxStackBytes !== undefined) {
        const frames = [...report.matchAll(/(\d+) bytes stack frame/g)].map((m) => Number(m[1]));
        t.same(frames.filter((n) => n > maxStackBytes), [], `no kernel's stack frame exceeds ${maxStackBytes} bytes`);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}
