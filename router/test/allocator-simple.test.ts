import t from "tap";
import { SimpleBlockAllocator, blocksFor } from "../scheduler/block-allocator.js";

t.test("allocates whole blocks, never block 0, and frees them back", async (t) => {
  const allocator = new SimpleBlockAllocator(5, 16); // blocks 1..4 usable
  t.equal(allocator.totalBlocks, 4);
  t.equal(allocator.freeBlocks, 4);
  const a = allocator.allocate(17)!;
  t.same(a.blocks, [1, 2]);
  t.equal(a.prefixLen, 0);
  const b = allocator.allocate(16)!;
  t.same(b.blocks, [3]);
  t.equal(allocator.freeBlocks, 1);
  allocator.free(a);
  t.equal(allocator.freeBlocks, 3);
  const c = allocator.allocate(48)!;
  t.equal(c.blocks.length, 3);
  t.notOk(c.blocks.includes(0), "block 0 is reserved");
  t.notOk(c.blocks.includes(3), "a held block is not handed out twice");
  allocator.free(b);
  allocator.free(c);
  t.equal(allocator.freeBlocks, allocator.totalBlocks);
});

t.test("exhaustion returns null and takes nothing", async (t) => {
  const allocator = new SimpleBlockAllocator(4, 8); // 3 usable blocks = 24 tokens
  t.equal(allocator.allocate(25), null);
  t.equal(allocator.freeBlocks, 3);
  const a = allocator.allocate(24)!;
  t.equal(allocator.freeBlocks, 0);
  t.equal(allocator.allocate(1), null);
  allocator.free(a);
  t.ok(allocator.allocate(1));
});

t.test("freeing twice is a no-op", async (t) => {
  const allocator = new SimpleBlockAllocator(3, 4);
  const a = allocator.allocate(4)!;
  allocator.free(a);
  allocator.free(a);
  t.equal(allocator.freeBlocks, 2);
  const b = allocator.allocate(8)!;
  t.same([...b.blocks].sort(), [1, 2]);
});

t.test("rejects a cache too small to hold anything", async (t) => {
  t.throws(() => new SimpleBlockAllocator(1, 16), /at least 2 blocks/);
  t.throws(() => new SimpleBlockAllocator(8, 0), /block size/);
  t.equal(blocksFor(0, 16), 0);
  t.equal(blocksFor(33, 16), 3);
});
