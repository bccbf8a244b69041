// --device and dtype resolution (shard/device.ts), the shard's new flags, the GPU KV
// sizing arithmetic (shard/warmup.ts), and the launcher passing --device through.
import { join } from "node:path";
import t from "tap";
import { parseArgs } from "../../launcher/args.js";
import { shardCommand } from "../../launcher/command-lines.js";
import { makePlan } from "../../launcher/plan.js";
import { parseShardArgs } from "../cli.js";
import { chooseDtype, resolveDevice } from "../device.js";
import { cudaKvBlockCount, cudaSafetyMargin, MAX_KV_BLOCKS, warmupBlocksNeeded } from "../warmup.js";
import { request } from "./helpers.js";

const probe = (hasCuda: boolean, count: number) => ({ hasCuda: () => hasCuda, cudaDeviceCount: () => count });

t.test("auto picks cuda with the backend and a GPU; with several shards each sees exactly one", async (t) => {
  t.same(resolveDevice("auto", 1, probe(true, 1)), { device: "cuda" });
  t.same(resolveDevice("auto", 1, probe(true, 4)), { device: "cuda" });
  t.match(resolveDevice("auto", 1, probe(true, 0)), { device: "cpu", why: /no CUDA device/ });
  t.match(resolveDevice("auto", 1, probe(false, 0)), { device: "cpu", why: /without CUDA/ });
  t.same(resolveDevice("auto", 2, probe(true, 1)), { device: "cuda" }, "tensor parallel over NCCL");
  t.match(resolveDevice("auto", 2, probe(true, 0)), { device: "cpu" });
  t.same(resolveDevice("cpu", 1, probe(true, 1)), { device: "cpu" });
  t.same(resolveDevice("cuda", 1, probe(true, 1)), { device: "cuda" });
  t.same(resolveDevice("cuda", 8, probe(true, 1)), { device: "cuda" });
  t.throws(() => resolveDevice("cuda", 1, probe(false, 0)), /no CUDA backend/);
  t.throws(() => resolveDevice("cuda", 1, probe(true, 0)), /no CUDA device is visible/);
  const oneEach = "--world-size 2 on cuda runs each rank on one GPU, but this rank sees 2: give each rank its own " +
    "CUDA_VISIBLE_DEVICES (text-gen-launcher does), or pass --device cpu";
  t.throws(() => resolveDevice("cuda", 2, probe(true, 2)), { message: oneEach });
  t.throws(() => resolveDevice("auto", 2, probe(true, 2)), { message: oneEach });
  t.same(parseShardArgs(["--model-id", "m", "--uds-path", "/tmp/s"], {}).rendezvousTimeoutS, 600);
  t.equal(parseShardArgs(["--model-id", "m", "--uds-path", "/tmp/s", "--rendezvous-timeout", "5"], {}).rendezvousTimeoutS, 5);
  t.throws(() => parseShardArgs(["--model-id", "m", "--uds-path", "/tmp/s", "--rendezvous-timeout", "0"], {}), /--rendezvous-timeout must be an integer ≥ 1/);
});

t.test("--cuda-graphs / CUDA_GRAPHS: TGI's comma list, values <= 0 dropped", async (t) => {
  const args = ["--model-id", "m", "--uds-path", "/tmp/s"];
  t.equal(parseShardArgs(args, {}).cudaGraphs, undefined, "unset: the engine's default buckets");
  t.same(parseShardArgs([...args, "--cuda-graphs", "1, 2,4,32"], {}).cudaGraphs, [1, 2, 4, 32]);
  t.same(parseShardArgs(args, { CUDA_GRAPHS: "0" }).cudaGraphs, [], "0 disables");
  t.same(parseShardArgs(args, { CUDA_GRAPHS: "8,-1,0,16" }).cudaGraphs, [8, 16]);
  t.throws(() => parseShardArgs([...args, "--cuda-graphs", "1,x"], {}), /--cuda-graphs must be a comma-separated list of batch sizes \(0 disables\), got '1,x'/);
  t.throws(() => parseShardArgs([...args, "--cuda-graphs", "5000"], {}), /at most 4096/);
});

t.test("dtype: cuda defaults to bfloat16, keeps float16, narrows float32 with a note", async (t) => {
  t.same(chooseDtype("cpu", undefined, undefined), { dtype: "float32" });
  t.same(chooseDtype("cpu", undefined, "bfloat16"), { dtype: "bfloat16" });
  t.same(chooseDtype("cuda", undefined, undefined), { dtype: "bfloat16" });
  t.same(chooseDtype("cuda", undefined, "float16"), { dtype: "float16" });
  t.same(chooseDtype("cuda", undefined, "bfloat16"), { dtype: "bfloat16" });
  t.match(chooseDtype("cuda", undefined, "float32"), { dtype: "bfloat16", note: /float32 checkpoint loaded as bfloat16/ });
  t.same(chooseDtype("cuda", "float16", "float32"), { dtype: "float16" });
  t.throws(() => chooseDtype("cuda", "float32", undefined), /--dtype float32 is not supported on cuda/);
});

t.test("shard flags: --device and --cuda-memory-fraction (or CUDA_MEMORY_FRACTION)", async (t) => {
  const base = ["--model-id", "m", "--uds-path", "/tmp/s"];
  t.match(parseShardArgs(base, {}), { device: "auto", cudaMemoryFraction: 1 });
  t.match(parseShardArgs([...base, "--device", "cuda", "--cuda-memory-fraction", "0.5"], {}), { device: "cuda", cudaMemoryFraction: 0.5 });
  t.match(parseShardArgs(base, { CUDA_MEMORY_FRACTION: "0.8" }), { cudaMemoryFraction: 0.8 });
  t.throws(() => parseShardArgs([...base, "--device", "tpu"], {}), /--device 'tpu' is not one of auto, cpu, cuda/);
  t.throws(() => parseShardArgs([...base, "--cuda-memory-fraction", "0"], {}), /must be in \(0, 1\]/);
});

t.test("GPU KV sizing: free after warm-up, plus the warm-up cache, less the withheld share and the margin", async (t) => {
  const gib = 1024 ** 3;
  const m = { freeBytes: 60 * gib, totalBytes: 80 * gib, currentKvBytes: gib, memoryFraction: 1, kvBytesPerBlock: 2 * 1024 ** 2 };
  t.equal(cudaSafetyMargin(80 * gib), Math.floor(0.03 * 80 * gib));
  t.equal(cudaSafetyMargin(gib), 512 * 1024 ** 2);
  t.equal(cudaKvBlockCount(m), Math.floor((61 * gib - cudaSafetyMargin(80 * gib)) / m.kvBytesPerBlock));
  t.equal(cudaKvBlockCount({ ...m, memoryFraction: 0.9 }), Math.floor((61 * gib - 8 * gib - cudaSafetyMargin(80 * gib)) / m.kvBytesPerBlock));
  t.equal(cudaKvBlockCount({ ...m, kvBytesPerBlock: 1024 }), MAX_KV_BLOCKS);
  t.throws(() => cudaKvBlockCount({ ...m, freeBytes: 0, currentKvBytes: 0 }), /not enough for a KV cache/);
  t.equal(warmupBlocksNeeded([request(0, 40, { blocks: [] }), request(1, 15, { blocks: [] })], 16), 1 + 3 + 1);
  t.equal(warmupBlocksNeeded([], 16), 2);
});

t.test("the launcher passes --device to every shard", async (t) => {
  const stub = join(import.meta.dirname, "..", "..", "launcher", "test-fixtures", "stub-shard.mjs");
  const env = { TEXT_GEN_SHARD_SCRIPT: stub, TEXT_GEN_ROUTER_SCRIPT: stub };
  const plan = makePlan(parseArgs(["--device", "cuda", "--cuda-memory-fraction", "0.9"], {}), env, "info");
  const cmd = shardCommand(plan, 0, {});
  t.match(cmd.args.join(" "), /--device cuda/);
  t.match(cmd.env, { CUDA_MEMORY_FRACTION: "0.9" });
  t.notOk(shardCommand(makePlan(parseArgs([], {}), env, "info"), 0, {}).args.includes("--device"), "unset: the shard's auto");
  t.equal(parseArgs([], { DEVICE: "cpu" }).device, "cpu", "DEVICE in the environment");
  t.throws(() => parseArgs(["--device", "gpu"], {}), /must be one of auto, cpu, cuda/);
});
