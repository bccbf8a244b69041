// Owns the KV cache's block table: which blocks are free and which a request
// holds. The shard stores KV where the router says; the router alone decides.
//
// BlockAllocator is the seam for prefix caching: a RadixAllocator can return
// already-filled blocks for a prompt's prefix (`prefixLen` > 0) and, on free,
// keep the prompt's blocks in its tree instead of returning them to the free list.

/** Blocks held by one request. */
export interface Allocation {
  /** Block ids in position order: position p lives in blocks[p / blockSize]. */
  readonly blocks: readonly number[];
  /** Leading prompt tokens whose KV is already in `blocks` (0 without prefix caching). */
  readonly prefixLen: number;
}

export interface BlockAllocator {
  readonly blockSize: number;
  /** Blocks requests can hold (block 0 is reserved and not counted). */
  readonly totalBlocks: number;
  readonly freeBlocks: number;
  /**
   * Blocks for `tokens` KV positions, or null when too few are free.
   * `prefixIds` (the prompt) lets a prefix cache reuse blocks; omitted: no reuse.
   */
  allocate(tokens: number, prefixIds?: readonly number[]): Allocation | null;
  /** Returns an allocation's blocks; freeing the same allocation twice is a no-op. */
  free(allocation: Allocation): void;
}

export function blocksFor(tokens: number, blockSize: number): number {
  return Math.ceil(tokens / blockSize);
}

/**
 * TGI's SimpleAllocator: a free list, no prefix reuse. Block 0 is reserved for
 * the health check's one-token prefill, so it is never handed out.
 */
export class SimpleBlockAllocator implements BlockAllocator {
  private readonly free_: number[];
  private readonly live = new WeakSet<Allocation>();

  constructor(
    /** Blocks in the KV cache, reserved block 0 included. */
    numBlocks: number,
    readonly blockSize: number,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`invalid KV block size ${blockSize}`);
    if (!Number.isInteger(numBlocks) || numBlocks < 2) {
      throw new Error(`the KV cache needs at least 2 blocks (one is reserved), got ${numBlocks}`);
    }
    // Descending, so that pop() hands out low block ids first.
    this.free_ = Array.from({ length: numBlocks - 1 }, (_, i) => numBlocks - 1 - i);
    this.totalBlocks = numBlocks - 1;
  }

  readonly totalBlocks: number;

  get freeBlocks(): number {
    return this.free_.length;
  }

  allocate(tokens: number): Allocation | null {
    const needed = blocksFor(Math.max(tokens, 1), this.blockSize);
    if (needed > this.free_.length) return null;
    const blocks = this.free_.splice(this.free_.length - needed, needed).reverse();
    const allocation: Allocation = { blocks, prefixLen: 0 };
    this.live.add(allocation);
    return allocation;
  }

  free(allocation: Allocation): void {
    if (!this.live.delete(allocation)) return;
    for (let i = allocation.blocks.length - 1; i >= 0; i--) this.free_.push(allocation.blocks[i] as number);
  }
}
