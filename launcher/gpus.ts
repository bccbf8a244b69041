// One GPU per shard: the CUDA_VISIBLE_DEVICES each of this node's ranks gets, and the check that
// a GPU run has a GPU for every one of them.
import { readdirSync } from "node:fs";
import { LauncherError } from "./errors.js";

/** One entry per NVIDIA GPU the driver knows (containers see only theirs). */
export const NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus";

/** GPUs the NVIDIA driver reports, or undefined without the driver (or without /proc). */
export function countNvidiaGpus(dir = NVIDIA_GPUS_DIR): number | undefined {
  try {
    return readdirSync(dir).length;
  } catch {
    return undefined;
  }
}

/**
 * CUDA_VISIBLE_DEVICES of each local rank: entry i of the launcher's own list, or "i" when it is
 * unset. Undefined on a CPU run (the variable is passed on as inherited). A GPU run (--device cuda,
 * or auto with an NVIDIA GPU present) with fewer visible GPUs than local shards is an error.
 */
export function gpuPerRank(device: string | undefined, localShards: number, env: NodeJS.ProcessEnv, nvidiaGpus: number | undefined): string[] | undefined {
  if (device === "cpu") return undefined;
  const raw = env.CUDA_VISIBLE_DEVICES;
  const list = raw === undefined ? undefined : raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const visible = list ? list.length : nvidiaGpus;
  const gpuRun = device === "cuda" || ((nvidiaGpus ?? 0) > 0 && (visible ?? 0) > 0);
  if (visible !== undefined && localShards > visible) {
    if (!gpuRun) return undefined; // auto on a machine without GPUs: the shards run on the CPU
    const seen = list ? ` (CUDA_VISIBLE_DEVICES=${raw})` : "";
    throw new LauncherError(`${localShards} shard${localShards > 1 ? "s" : ""} on this node need one GPU each, but ${visible} ` +
      `${visible === 1 ? "is" : "are"} visible${seen}: lower --num-shard, make more GPUs visible, or pass --device cpu`);
  }
  return Array.from({ length: localShards }, (_, i) => (list ? list[i]! : String(i)));
}
