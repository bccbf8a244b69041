// The launcher's side of tensor parallelism on GPUs: one GPU per rank (CUDA_VISIBLE_DEVICES),
// NCCL settings in each shard's environment, the rendezvous flags (--master-addr/--master-port)
// and the node split (--nnodes/--node-rank). Plans not about GPUs pass --device cpu, so that
// the GPUs of the machine running the tests do not matter.
import t from "tap";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, type LauncherArgs } from "../args.js";
import { shardCommand } from "../command-lines.js";
import { deriveAndValidate, nodeShare } from "../defaults.js";
import { countNvidiaGpus, gpuPerRank } from "../gpus.js";
import { makePlan } from "../plan.js";

const stub = join(import.meta.dirname, "..", "test-fixtures", "stub-shard.mjs");
const scripts = { TEXT_GEN_SHARD_SCRIPT: stub, TEXT_GEN_ROUTER_SCRIPT: stub };
const plan = (argv: string[], env: NodeJS.ProcessEnv = {}) => makePlan(parseArgs(argv, env), { ...scripts, ...env }, "info");

t.test("rank i gets entry i of CUDA_VISIBLE_DEVICES, or i when it is unset", async (t) => {
  t.same(gpuPerRank("cuda", 2, {}, undefined), ["0", "1"]);
  t.same(gpuPerRank(undefined, 2, { CUDA_VISIBLE_DEVICES: "4, 5,6" }, 8), ["4", "5"]);
  t.same(gpuPerRank("cuda", 1, { CUDA_VISIBLE_DEVICES: "GPU-1234" }, 8), ["GPU-1234"], "UUIDs pass through");
  t.equal(gpuPerRank("cpu", 2, { CUDA_VISIBLE_DEVICES: "3" }, 8), undefined, "a CPU run keeps what it inherits");
  t.equal(gpuPerRank("auto", 2, { CUDA_VISIBLE_DEVICES: "3" }, undefined), undefined, "auto without a GPU driver runs on the CPU");
  t.equal(gpuPerRank("auto", 2, {}, 0), undefined);
});

t.test("a GPU run with fewer visible GPUs than shards is a clear error", async (t) => {
  t.throws(() => gpuPerRank("cuda", 2, { CUDA_VISIBLE_DEVICES: "3" }, undefined),
    { message: "2 shards on this node need one GPU each, but 1 is visible (CUDA_VISIBLE_DEVICES=3): lower --num-shard, make more GPUs visible, or pass --device cpu" });
  t.throws(() => gpuPerRank(undefined, 4, {}, 2), { message: /^4 shards on this node need one GPU each, but 2 are visible: / }, "auto with the driver's count");
  t.throws(() => gpuPerRank("cuda", 1, { CUDA_VISIBLE_DEVICES: "" }, 8), { message: /but 0 are visible \(CUDA_VISIBLE_DEVICES=\)/ });
  t.throws(() => deriveAndValidate({ ...parseArgs(["--num-shard", "3", "--device", "cuda"], {}) }, {}, { CUDA_VISIBLE_DEVICES: "0,1" }),
    { message: /^3 shards on this node need one GPU each, but 2 are visible/ }, "checked when the launch is planned");
});

t.test("the driver's GPU count comes from /proc/driver/nvidia/gpus", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nvidia-gpus-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const bus of ["0000:18:00.0", "0000:2a:00.0"]) mkdirSync(join(dir, bus));
  t.equal(countNvidiaGpus(dir), 2);
  t.equal(countNvidiaGpus(join(dir, "absent")), undefined);
});

t.test("each shard's environment: its GPU, NCCL_* passed through, NCCL_NVLS_ENABLE=0 always", async (t) => {
  const env = { CUDA_VISIBLE_DEVICES: "6,7", NCCL_DEBUG: "INFO", NCCL_SOCKET_IFNAME: "eth0", NCCL_NVLS_ENABLE: "1" };
  const p = plan(["--num-shard", "2", "--device", "cuda"], env);
  const [r0, r1] = [shardCommand(p, 0, env), shardCommand(p, 1, env)];
  t.match(r0.env, { CUDA_VISIBLE_DEVICES: "6", NCCL_NVLS_ENABLE: "0", NCCL_DEBUG: "INFO", NCCL_SOCKET_IFNAME: "eth0", RANK: "0", WORLD_SIZE: "2" });
  t.match(r1.env, { CUDA_VISIBLE_DEVICES: "7", NCCL_NVLS_ENABLE: "0", RANK: "1" });
  t.equal(r1.args[r1.args.indexOf("--rendezvous-timeout") + 1], "1800", "the rendezvous waits as long as startup may take");
  t.notOk("MASTER_ADDR" in r0.env || "MASTER_PORT" in r0.env, "no --master-addr/--master-port: the Unix socket rendezvous");
  const single = plan([], {});
  t.equal(shardCommand(single, 0, {}).env.NCCL_NVLS_ENABLE, "0", "one shard too");
  t.notOk(shardCommand(single, 0, {}).args.includes("--rendezvous-timeout"));
  const cpu = plan(["--num-shard", "2", "--device", "cpu"], { CUDA_VISIBLE_DEVICES: "5" });
  t.equal(shardCommand(cpu, 1, { CUDA_VISIBLE_DEVICES: "5" }).env.CUDA_VISIBLE_DEVICES, "5", "a CPU run inherits it unchanged");
  t.equal(shardCommand(plan(["--cuda-graphs", "1,2,4"], {}), 0, {}).env.CUDA_GRAPHS, "1,2,4", "--cuda-graphs reaches the shards");
  t.notOk("CUDA_GRAPHS" in shardCommand(single, 0, {}).env, "unset: the engine's default buckets");
});

t.test("--master-addr/--master-port (TGI's names) reach the shards as MASTER_ADDR/MASTER_PORT, only when given", async (t) => {
  const a = parseArgs([], {});
  t.equal(a.masterAddr, undefined);
  t.equal(a.masterPort, undefined);
  const port = plan(["--num-shard", "2", "--master-port", "12345", "--device", "cpu"]);
  t.match(shardCommand(port, 1, {}).env, { MASTER_ADDR: "localhost", MASTER_PORT: "12345" });
  const fromEnv = { MASTER_ADDR: "10.0.0.1" };
  const addr = plan(["--num-shard", "2", "--device", "cpu"], fromEnv);
  t.match(shardCommand(addr, 0, fromEnv).env, { MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29500" });
  t.throws(() => parseArgs(["--master-port", "x"], {}), /--master-port expects an integer/);
  t.throws(() => plan(["--master-port", "70000"]), /--master-port 70000 is not a valid port/);
});

t.test("--nnodes/--node-rank (torchrun's names): each node runs its consecutive share of the ranks", async (t) => {
  const args = (over: Partial<LauncherArgs>) => ({ ...parseArgs([], {}), ...over });
  t.match(parseArgs(["--nnodes", "2", "--node-rank", "1"], {}), { nnodes: 2, nodeRank: 1 });
  t.match(parseArgs([], { NNODES: "4", NODE_RANK: "3" }), { nnodes: 4, nodeRank: 3 });
  t.match(parseArgs([], {}), { nnodes: 1, nodeRank: 0 });
  t.same(nodeShare(args({}), 2), { firstRank: 0, localShards: 2 });
  t.same(nodeShare(args({ nnodes: 2, nodeRank: 1, masterAddr: "n0" }), 4), { firstRank: 2, localShards: 2 });
  t.throws(() => nodeShare(args({ nnodes: 2, nodeRank: 0 }), 4), { message: /--nnodes 2 needs --master-addr/ });
  t.throws(() => nodeShare(args({ nnodes: 2, nodeRank: 2, masterAddr: "n0" }), 4), { message: "--node-rank 2 must be in 0..1 (--nnodes 2)" });
  t.throws(() => nodeShare(args({ nnodes: 2, masterAddr: "n0" }), 3), { message: /--num-shard 3 must be a multiple of --nnodes 2/ });
  t.throws(() => nodeShare(args({ nnodes: 0 }), 1), { message: "--nnodes must be >= 1" });

  t.throws(() => plan(["--num-shard", "2", "--nnodes", "2", "--master-addr", "n0", "--device", "cpu"]), { message: /--nnodes > 1 needs GPUs/ });
  const env = { CUDA_VISIBLE_DEVICES: "2,3" };
  const p = plan(["--num-shard", "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "node0", "--device", "cuda"], env);
  t.match(p.derived, { numShard: 4, firstRank: 2, localShards: 2, gpus: ["2", "3"] });
  t.match(shardCommand(p, 3, env), { env: { RANK: "3", WORLD_SIZE: "4", CUDA_VISIBLE_DEVICES: "3", MASTER_ADDR: "node0", MASTER_PORT: "29500" } });
});

t.test("the rendezvous socket <base>-nccl must fit a Unix socket path too", async (t) => {
  const base = "/tmp/" + "x".repeat(92); // <base>-1 fits in 100 bytes, <base>-nccl does not
  t.ok(plan(["--shard-uds-path", base]), "one shard: no rendezvous socket");
  t.throws(() => plan(["--shard-uds-path", base, "--num-shard", "2", "--device", "cpu"]), { message: /-nccl is 102 bytes; Unix sockets need < 100/ });
});
