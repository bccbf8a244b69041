// Which device and dtype the shard runs the engine in: `--device auto|cpu|cuda`
// (auto: cuda when the addon has the CUDA backend and sees a GPU) and the dtype that
// device computes in. Tensor parallelism on cuda gives each rank one GPU (the launcher
// sets CUDA_VISIBLE_DEVICES per rank) and joins them over NCCL.
import type { ComputeDtype } from "../native/engine-types.js";
import { CliError, type DeviceChoice } from "./cli.js";

export interface CudaProbe {
  hasCuda(): boolean;
  cudaDeviceCount(): number;
}

export function resolveDevice(choice: DeviceChoice, worldSize: number, probe: CudaProbe): { device: "cpu" | "cuda"; why?: string } {
  if (choice === "cpu") return { device: "cpu" };
  const count = probe.hasCuda() ? probe.cudaDeviceCount() : 0;
  if (choice === "cuda") {
    if (!probe.hasCuda()) throw new CliError("--device cuda: this build of the native engine has no CUDA backend (nvcc was not found at build time)");
    if (count === 0) throw new CliError("--device cuda: no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)");
  } else if (count === 0) {
    return { device: "cpu", why: probe.hasCuda() ? "no CUDA device visible" : "the engine was built without CUDA" };
  }
  if (worldSize > 1 && count > 1) {
    throw new CliError(`--world-size ${worldSize} on cuda runs each rank on one GPU, but this rank sees ${count}: give each rank its own ` +
      "CUDA_VISIBLE_DEVICES (text-gen-launcher does), or pass --device cpu");
  }
  return { device: "cuda" };
}

/**
 * The dtype to load in. CPU: --dtype, else the checkpoint's, else float32 (it computes in
 * float32 whatever this says). CUDA computes in bfloat16 or float16: --dtype, else the
 * checkpoint's float16, else bfloat16; `note` says when float32 weights are narrowed.
 */
export function chooseDtype(device: "cpu" | "cuda", requested: ComputeDtype | undefined, checkpoint: ComputeDtype | undefined): { dtype: ComputeDtype; note?: string } {
  if (device === "cpu") return { dtype: requested ?? checkpoint ?? "float32" };
  if (requested === "float32") throw new CliError("--dtype float32 is not supported on cuda; use bfloat16 or float16, or --device cpu");
  if (requested) return { dtype: requested };
  if (checkpoint === "float16") return { dtype: "float16" };
  if (checkpoint === "float32") return { dtype: "bfloat16", note: "float32 checkpoint loaded as bfloat16 on cuda (pass --dtype float16 for float16)" };
  return { dtype: "bfloat16" };
}
