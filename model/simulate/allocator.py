"""A replay of PyTorch's CUDA caching allocator, to turn a tensor trace into reserved memory.

The tracker feeds it every allocation and free in order. It follows c10/cuda/CUDACachingAllocator
with its defaults (one stream, no expandable segments, no `max_split_size`):

- sizes round up to 512 bytes; requests of at most 1 MiB use the small pool, larger ones the
  large pool;
- a request takes the best-fitting free block of its pool (smallest size, then lowest address),
  split when the rest is >= 512 bytes (small pool) or > 1 MiB (large pool); an unsplit block
  counts whole as allocated;
- with no fitting block a new segment is reserved: 2 MiB for small requests, 20 MiB for requests
  under 10 MiB, otherwise the request rounded up to 2 MiB;
- a freed block merges with free neighbours of its segment; segments are never released (no OOM
  retry: the card is assumed large enough).

`peak_reserved_bytes` is what `torch.cuda.max_memory_reserved()` would report for the same trace.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # 1 MiB: largest small-pool request
SMALL_BUFFER = 2 << 20  # small-pool segment
LARGE_BUFFER = 20 << 20  # segment for large requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


@dataclass(eq=False)
class Block:
    address: int
    size: int
    small: bool
    free: bool = True
    prev: Block | None = None
    next: Block | None = None


def round_size(n_bytes: int) -> int:
    return MIN_BLOCK if n_bytes < MIN_BLOCK else -(-n_bytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class CachingAllocator:
    """Reserved / allocated bytes of a sequence of `malloc` and `free` calls."""

    def __init__(self) -> None:
        self.pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # (size, address)
        self.free_blocks: dict[int, Block] = {}
        self.reserved = self.allocated = 0
        self.peak_reserved_bytes = self.peak_allocated_bytes = 0
        self._next_address = 0

    def malloc(self, n_bytes: int) -> Block:
        size = round_size(n_bytes)
        small = size <= SMALL_SIZE
        block = self._take_free(size, small) or self._new_segment(size, small)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = Block(block.address + size, remaining, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._insert(rest)
        block.free = False
        self.allocated += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated)
        return block

    def free(self, block: Block) -> None:
        self.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert(block)

    def _take_free(self, size: int, small: bool) -> Block | None:
        pool = self.pools[small]
        index = bisect.bisect_left(pool, (size, -1))
        if index == len(pool):
            return None
        _, address = pool.pop(index)
        return self.free_blocks.pop(address)

    def _new_segment(self, size: int, small: bool) -> Block:
        n_bytes = segment_size(size)
        block = Block(self._next_address, n_bytes, small)
        self._next_address += n_bytes + ROUND_LARGE  # segments are never adjacent
        self.reserved += n_bytes
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved)
        return block

    def _insert(self, block: Block) -> None:
        bisect.insort(self.pools[block.small], (block.size, block.address))
        self.free_blocks[block.address] = block

    def _remove(self, block: Block) -> None:
        pool = self.pools[block.small]
        del pool[bisect.bisect_left(pool, (block.size, block.address))]
        del self.free_blocks[block.address]
