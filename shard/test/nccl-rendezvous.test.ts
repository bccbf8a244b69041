// The NCCL rendezvous (shard/nccl-rendezvous.ts) with a fake id maker: several ranks in this
// process over a Unix socket and over TCP, the timeouts' messages, a refused request, and rank 0
// without NCCL (the real addon's ncclUniqueId pointed at a library that does not exist).
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import t from "tap";
import { loadNative } from "../../native/index.js";
import { readModelConfig } from "../model-config.js";
import { ncclRendezvous, rendezvousAddress, type RendezvousAddress, type RendezvousOptions } from "../nccl-rendezvous.js";

const dir = mkdtempSync(join(tmpdir(), "tg-rdv-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const fakeId = randomBytes(128);
const opts = (address: RendezvousAddress, rank: number, worldSize: number, over: Partial<RendezvousOptions> = {}): RendezvousOptions => ({
  address, rank, worldSize, timeoutMs: 10_000, retryMs: 20, makeId: () => fakeId, ...over,
});

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** All ranks at once; the others start before rank 0 listens, so they must retry. */
async function group(address: RendezvousAddress, worldSize: number): Promise<Buffer[]> {
  const others = Array.from({ length: worldSize - 1 }, (_, i) => ncclRendezvous(opts(address, i + 1, worldSize)));
  await new Promise((r) => setTimeout(r, 100));
  const zero = await ncclRendezvous(opts(address, 0, worldSize));
  const rest = await Promise.all(others);
  await zero.served;
  return [zero.id, ...rest.map((r) => r.id)];
}

t.test("the address: <base>-nccl beside the shard sockets, or TCP when MASTER_ADDR/MASTER_PORT is set", async (t) => {
  t.same(rendezvousAddress("/tmp/text-gen-ab12-1", 1, {}), { kind: "unix", path: "/tmp/text-gen-ab12-nccl" });
  t.same(rendezvousAddress("/tmp/text-gen-ab12-0", 0, { MASTER_ADDR: "node0", MASTER_PORT: "1234" }), { kind: "tcp", host: "node0", port: 1234 });
  t.same(rendezvousAddress("/tmp/s-0", 0, { MASTER_PORT: "1234" }), { kind: "tcp", host: "localhost", port: 1234 });
  t.same(rendezvousAddress("/tmp/s-0", 0, { MASTER_ADDR: "node0" }), { kind: "tcp", host: "node0", port: 29500 });
  t.throws(() => rendezvousAddress("/tmp/s-0", 0, { MASTER_PORT: "http" }), { message: "MASTER_PORT must be a port number in 1..65535 (got 'http')" });
  t.throws(() => rendezvousAddress("/tmp/s", 1, {}), { message: /--uds-path \/tmp\/s must end with -1/ });
});

t.test("three ranks over a Unix socket get rank 0's id; the socket is gone afterwards", async (t) => {
  const address: RendezvousAddress = { kind: "unix", path: join(dir, "a-nccl") };
  const ids = await group(address, 3);
  for (const id of ids) t.same(id, fakeId);
  t.notOk(existsSync(address.path), "removed once every rank has the id");
});

t.test("two ranks over TCP (MASTER_ADDR/MASTER_PORT)", async (t) => {
  const address: RendezvousAddress = { kind: "tcp", host: "127.0.0.1", port: await freePort() };
  const ids = await group(address, 2);
  t.same(ids, [fakeId, fakeId]);
  const again = await group(address, 2);
  t.same(again[1], fakeId, "the port is free again once served");
});

t.test("a rank without rank 0 gives up after the timeout, saying where it looked", async (t) => {
  const started = Date.now();
  await t.rejects(ncclRendezvous(opts({ kind: "unix", path: join(dir, "none-nccl") }, 1, 2, { timeoutMs: 300 })), {
    message: new RegExp(`^rank 1: no NCCL id from rank 0 at unix:${dir}/none-nccl after 0.3 s \\(last error: connect ENOENT .*\\); ` +
      "check that rank 0 is running \\(its log says why not\\)$"),
  });
  t.ok(Date.now() - started < 2000, "soon after the timeout");
  await t.rejects(ncclRendezvous(opts({ kind: "tcp", host: "127.0.0.1", port: await freePort() }, 1, 2, { timeoutMs: 200 })), {
    message: /ECONNREFUSED.* and that MASTER_ADDR\/MASTER_PORT reach its node$/,
  });
});

t.test("rank 0 names the ranks that never fetched the id", async (t) => {
  const address: RendezvousAddress = { kind: "unix", path: join(dir, "late-nccl") };
  const zero = await ncclRendezvous(opts(address, 0, 4, { timeoutMs: 400 }));
  t.same((await ncclRendezvous(opts(address, 2, 4))).id, fakeId);
  await t.rejects(zero.served, {
    message: `rank 0: ranks 1, 3 did not fetch the NCCL id from unix:${address.path} within 0.4 s; check that they started (their logs say why not)`,
  });
  t.notOk(existsSync(address.path), "stopped serving");
});

t.test("a rank of another world size is refused at once, not retried", async (t) => {
  const address: RendezvousAddress = { kind: "unix", path: join(dir, "size-nccl") };
  const zero = await ncclRendezvous(opts(address, 0, 2, { timeoutMs: 5000 }));
  t.teardown(() => zero.close());
  const started = Date.now();
  await t.rejects(ncclRendezvous(opts(address, 1, 3)), { message: /^rank 1: rank 0 at unix:.* refused the NCCL id: rank 0 runs with world size 2, this rank with 3$/ });
  t.ok(Date.now() - started < 1000);
});

t.test("rank 0: a taken TCP port and a bad id are clear errors", async (t) => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, r));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  await t.rejects(ncclRendezvous(opts({ kind: "tcp", host: "localhost", port }, 0, 2)), {
    message: new RegExp(`^rank 0: cannot serve the NCCL id on tcp://localhost:${port}: .*EADDRINUSE.*pick another --master-port\\)$`),
  });
  await t.rejects(ncclRendezvous(opts({ kind: "unix", path: join(dir, "bad-nccl") }, 0, 2, { makeId: () => Buffer.alloc(16) })), {
    message: "ncclUniqueId() gave 16 bytes, not the 128 bytes of an ncclUniqueId",
  });
});

t.test("rank 0 without NCCL: the addon's ncclUniqueId says what it tried and what to install", async (t) => {
  // Read when NCCL is first loaded; a library that cannot exist makes this hold on GPU machines too.
  process.env.TEXT_GEN_NCCL_LIBRARY = "/nonexistent/libnccl.so.2";
  const native = loadNative();
  const expected = native.hasCuda()
    ? /^NCCL is needed for --num-shard > 1 on GPUs and was not found: tried \/nonexistent\/libnccl\.so\.2 from TEXT_GEN_NCCL_LIBRARY \(.*\); install libnccl2 or set TEXT_GEN_NCCL_LIBRARY/
    : /^NCCL is needed for --num-shard > 1 on GPUs, and this build of the native engine has no CUDA backend/;
  t.throws(() => native.ncclUniqueId(), { message: expected });
  await t.rejects(ncclRendezvous(opts({ kind: "unix", path: join(dir, "nonccl-nccl") }, 0, 2, { makeId: () => native.ncclUniqueId() })), { message: expected },
    "rank 0's rendezvous fails with it, before serving anything");
  t.notOk(existsSync(join(dir, "nonccl-nccl")));

  const modelDir = resolve(import.meta.dirname, "../../models/stories260k");
  const { config } = readModelConfig(modelDir);
  const load = { modelDir, config, dtype: "bfloat16" as const, device: "cuda" as const, rank: 0, worldSize: 2, blockSize: 16 };
  t.throws(() => native.loadEngine({ ...load, ncclId: Buffer.alloc(127) }), { message: "options.ncclId must hold the 128 bytes of an ncclUniqueId, got 127" });
  t.throws(() => native.loadEngine({ ...load, ncclId: "x" as unknown as Buffer }), { message: /options.ncclId must be a Buffer/ });
  await t.rejects(native.loadEngine(load), { message: /^worldSize > 1 on device cuda needs ncclId/ });
});
