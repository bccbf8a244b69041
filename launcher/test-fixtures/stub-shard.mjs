// Stand-in shard for the launcher's tests: speaks the shard's process contract (pino JSON on stderr,
// one ready line on stdout, exit 0 on SIGTERM) without loading anything.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const argv = process.argv.slice(2);
const arg = (name) => argv[argv.indexOf(name) + 1];
const rank = Number(arg("--rank"));
const log = (level, msg) => process.stderr.write(JSON.stringify({ level, time: Date.now(), pid: process.pid, msg, rank }) + "\n");

if (process.env.STUB_RECORD_DIR) {
  writeFileSync(join(process.env.STUB_RECORD_DIR, `shard-${rank}.json`), JSON.stringify({
    argv, pid: process.pid, env: Object.fromEntries(["RANK", "WORLD_SIZE", "LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "NCCL_NVLS_ENABLE", "NCCL_DEBUG",
      "MASTER_ADDR", "MASTER_PORT"].map((k) => [k, process.env[k]])),
  }));
}
log(30, `shard ${rank} loading`);
if (process.env.STUB_FAIL_RANK === String(rank)) {
  log(50, `cannot load weights for rank ${rank}`);
  process.exit(1);
}
if (process.env.STUB_IGNORE_SIGTERM !== String(rank)) {
  process.on("SIGTERM", () => { log(30, "stopping"); process.exit(0); });
} else {
  process.on("SIGTERM", () => log(40, "ignoring SIGTERM"));
}
setInterval(() => {}, 1000);
// STUB_READY_DELAY_RANK: only that rank is slow.
const slow = process.env.STUB_READY_DELAY_RANK === undefined || process.env.STUB_READY_DELAY_RANK === String(rank);
const delay = slow ? Number(process.env.STUB_READY_DELAY_MS ?? 0) : 0;
setTimeout(() => {
  process.stdout.write(JSON.stringify({ ready: true, rank, socket: arg("--uds-path") }) + "\n");
}, delay);
