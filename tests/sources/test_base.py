"""The machinery every reader shares: region assembly, bounded gathering, the sync facade."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wkjupyter.sources._base import MagArray, gather_limited, sync


class InMemoryArray(MagArray):
    """A MagArray over a numpy array, with some chunks marked as not stored."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, ...], missing: set = frozenset()):
        self.url = "memory://"
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.chunk_shape = chunks
        self.fill_value = 9
        self.missing = missing
        self.fetched: list[tuple[int, ...]] = []

    async def read_chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        self.fetched.append(index)
        await asyncio.sleep(0)
        if index in self.missing:
            return None
        return self.data[self.chunk_bounds(index)].copy()


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 12),) * 4),
    chunks=st.tuples(*(st.integers(1, 5),) * 4),
    lo=st.tuples(*(st.integers(-4, 12),) * 4),
    size=st.tuples(*(st.integers(0, 10),) * 4),
)
def test_read_equals_numpy_with_fill_outside(shape, chunks, lo, size) -> None:
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    arr = InMemoryArray(data, chunks)
    region = tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))
    got = asyncio.run(arr.read(region))
    want = np.full(size, 9, dtype=np.int32)
    for idx in itertools.product(*(range(s) for s in size)):
        src = tuple(a + i for a, i in zip(lo, idx, strict=True))
        if all(0 <= p < n for p, n in zip(src, shape, strict=True)):
            want[idx] = data[src]
    np.testing.assert_array_equal(got, want)
    # Only chunks overlapping the region were fetched, each once.
    assert len(arr.fetched) == len(set(arr.fetched))


def test_missing_chunks_read_as_fill() -> None:
    data = np.ones((1, 4, 4, 4), dtype=np.uint8)
    arr = InMemoryArray(data, (1, 2, 2, 2), missing={(0, 0, 0, 0)})
    got = asyncio.run(arr.read((slice(0, 1), slice(0, 4), slice(0, 4), slice(0, 4))))
    assert (got[0, :2, :2, :2] == 9).all()
    assert got.sum() == 9 * 8 + 56


def test_gather_limited_bounds_concurrency_and_keeps_order() -> None:
    running = 0
    peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return i

    result = asyncio.run(gather_limited((job(i) for i in range(50)), limit=7))
    assert result == list(range(50))
    assert peak == 7


def test_gather_limited_stops_at_the_first_failure() -> None:
    started: list[int] = []

    async def job(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ConnectionError("upstream 503")
        await asyncio.sleep(0.05)
        return i

    with pytest.raises(ConnectionError, match="503"):
        asyncio.run(gather_limited((job(i) for i in range(1000)), limit=4))
    assert len(started) < 20  # scheduling stopped instead of running all 1000


def test_sync_works_inside_a_running_loop() -> None:
    async def inner() -> int:
        await asyncio.sleep(0)
        return 42

    async def notebook_cell() -> Any:
        # A Jupyter kernel runs cells while its own loop runs; the facade still works.
        return sync(inner())

    assert asyncio.run(notebook_cell()) == 42
