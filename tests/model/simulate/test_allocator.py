"""The caching-allocator replay on sequences whose reserved / allocated bytes are known."""

from __future__ import annotations

from vram_ml.model.simulate.allocator import (
    LARGE_BUFFER,
    SMALL_BUFFER,
    CachingAllocator,
    round_size,
    segment_size,
)

MIB = 1 << 20


def test_sizes_and_segments():
    assert round_size(1) == 512 and round_size(513) == 1024
    assert segment_size(100) == SMALL_BUFFER
    assert segment_size(5 * MIB) == LARGE_BUFFER
    assert segment_size(11 * MIB + 1) == 12 * MIB


def test_small_requests_share_a_2mib_segment():
    allocator = CachingAllocator()
    blocks = [allocator.malloc(1000) for _ in range(4)]
    assert allocator.reserved == SMALL_BUFFER
    assert allocator.allocated == 4 * 1024
    for block in blocks:
        allocator.free(block)
    assert allocator.allocated == 0 and allocator.reserved == SMALL_BUFFER
    assert len(allocator.free_blocks) == 1  # merged back into one free block


def test_large_remainders_under_1mib_stay_allocated():
    allocator = CachingAllocator()
    first = allocator.malloc(12 * MIB - 100)  # segment of 12 MiB, the 100 bytes are not split
    assert allocator.reserved == 12 * MIB and allocator.allocated == 12 * MIB
    allocator.free(first)
    second = allocator.malloc(3 * MIB)  # reuses the cached segment, splits off 9 MiB
    assert allocator.reserved == 12 * MIB and allocator.allocated == 3 * MIB
    third = allocator.malloc(10 * MIB)  # does not fit the 9 MiB rest: a new segment
    assert allocator.reserved == 22 * MIB
    assert allocator.peak_allocated_bytes == 13 * MIB
    assert second.size == 3 * MIB and third.size == 10 * MIB


def test_best_fit_picks_the_smallest_free_block():
    allocator = CachingAllocator()
    big, small = allocator.malloc(30 * MIB), allocator.malloc(16 * MIB)
    allocator.free(big)
    allocator.free(small)
    reused = allocator.malloc(15 * MIB)
    assert reused.address == small.address
    assert allocator.reserved == 46 * MIB
