"""The reader contract every format implements, and the machinery they share.

A :class:`MagArray` presents one mag of a layer in the canonical order
(*additional axes, c, z, y, x), whatever the stored order. Chunk fetches are async and
concurrent; decoding runs in a thread pool so the event loop (the Jupyter server's, or our
own background loop behind the sync facade) never blocks on CPU work.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence

__all__ = ["MagArray", "RawChunk", "RawOrDecoded", "run_cpu", "sync"]

T = TypeVar("T")

_DECODE_POOL = ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="wkjupyter-decode"
)


async def run_cpu(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound work (decompression, decoding) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_DECODE_POOL, fn, *args)


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="wkjupyter-io", daemon=True).start()
        return _loop


def sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on wkjupyter's background I/O loop and wait for its result.

    This is the sync facade notebooks use; it works whether or not the calling thread runs
    an event loop of its own (as a Jupyter kernel does).
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        msg = "sync() called from wkjupyter's own I/O loop; await the coroutine instead"
        raise RuntimeError(msg)
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A chunk's stored bytes, servable as-is with the codec the reader describes."""

    data: bytes


#: What :meth:`MagArray.raw_or_decoded` gives for a stored chunk.
RawOrDecoded: TypeAlias = "RawChunk | np.ndarray[Any, Any]"


class MagArray(ABC):
    """One mag of a layer as a chunked array in (*extra, c, z, y, x) order.

    Subclasses set ``shape``, ``dtype``, ``chunk_shape`` and ``fill_value`` and implement
    :meth:`read_chunk`. :meth:`read` assembles any region from chunks fetched concurrently;
    formats with a faster native path override it. Readers hold only URLs, credentials
    and parsed metadata, so they pickle; storage handles are reopened lazily per event loop.
    """

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunk_shape: tuple[int, ...]
    fill_value: Any

    @abstractmethod
    async def read_chunk(self, index: tuple[int, ...]) -> np.ndarray[Any, Any] | None:
        """The chunk at grid position ``index``, clipped to the array's bounds.

        Returns ``None`` when the chunk is not stored (it reads as the fill value).
        """

    async def raw_chunk(self, index: tuple[int, ...]) -> RawChunk | None:
        """The stored bytes of a chunk when they can be served unchanged, else ``None``.

        Readers whose storage can be described as a Zarr codec chain override this together
        with :attr:`passthrough_codec`.
        """
        return None

    @property
    def passthrough_codec(self) -> dict[str, Any] | None:
        """The Zarr v3 codec chain describing :meth:`raw_chunk` bytes, if any."""
        return None

    async def raw_or_decoded(self, index: tuple[int, ...]) -> RawOrDecoded | None:
        """A chunk for serving: its stored bytes when they can be served as they are, else
        its decoded data (clipped like :meth:`read_chunk`); ``None`` when it is not stored.

        This default may fetch twice (``raw_chunk`` declines, ``read_chunk`` decodes);
        formats override it to fetch each chunk once.
        """
        if self.passthrough_codec is not None:
            raw = await self.raw_chunk(index)
            if raw is not None:
                return raw
        return await self.read_chunk(index)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunk_shape, strict=True))

    def chunk_bounds(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of the array chunk ``index`` covers (clipped at the edges)."""
        return tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, self.chunk_shape, self.shape, strict=True)
        )

    def empty(self, shape: Sequence[int]) -> np.ndarray[Any, Any]:
        return np.full(tuple(shape), self.fill_value, dtype=self.dtype)

    async def read(self, region: Sequence[slice]) -> np.ndarray[Any, Any]:
        """Read ``region`` (one slice with explicit start and stop per dimension).

        The region may extend beyond the array; outside it reads as the fill value.
        """
        starts = [int(r.start) for r in region]
        stops = [max(int(r.stop), int(r.start)) for r in region]
        out = self.empty([b - a for a, b in zip(starts, stops, strict=True)])
        lo = [max(a, 0) for a in starts]
        hi = [min(b, s) for b, s in zip(stops, self.shape, strict=True)]
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            return out
        ranges = [
            range(a // c, -(-b // c)) for a, b, c in zip(lo, hi, self.chunk_shape, strict=True)
        ]

        async def place(index: tuple[int, ...]) -> None:
            src, dst = [], []
            for b, a_lo, a_hi, start in zip(self.chunk_bounds(index), lo, hi, starts, strict=True):
                s0, s1 = max(b.start, a_lo), min(b.stop, a_hi)
                src.append(slice(s0 - b.start, s1 - b.start))
                dst.append(slice(s0 - start, s1 - start))
            await self._place_chunk(index, out, tuple(dst), tuple(src))

        await gather_limited(place(idx) for idx in itertools.product(*ranges))
        return out

    async def _place_chunk(
        self,
        index: tuple[int, ...],
        out: np.ndarray[Any, Any],
        dst: tuple[slice, ...],
        src: tuple[slice, ...],
    ) -> None:
        """Write part ``src`` of chunk ``index`` into ``out[dst]`` (missing: leave the fill).

        Formats that can decode straight into the output override this to save a copy.
        """
        chunk = await self.read_chunk(index)
        if chunk is not None:
            out[dst] = chunk[src]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.url!r}, shape={self.shape}, "
            f"chunks={self.chunk_shape}, dtype={self.dtype})"
        )


async def gather_limited(aws: Iterable[Awaitable[T]], limit: int = 256) -> list[T]:
    """Await many awaitables concurrently, at most ``limit`` in flight at once.

    The storage layer bounds concurrent requests itself; this bound only keeps the number of
    pending coroutines (and decoded chunks held in memory) reasonable for huge regions. The
    first failure stops scheduling, cancels what is in flight and is raised.
    """
    pending: set[asyncio.Future[T]] = set()
    tasks: list[asyncio.Future[T]] = []

    async def settle(when: str) -> None:
        nonlocal pending
        done, pending = await asyncio.wait(pending, return_when=when)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    try:
        it = iter(aws)
        while True:
            # Make room before taking the next awaitable, so none is left un-awaited.
            if len(pending) >= limit:
                await settle(asyncio.FIRST_COMPLETED)
            aw = next(it, None)
            if aw is None:
                break
            task = asyncio.ensure_future(aw)
            tasks.append(task)
            pending.add(task)
        while pending:
            await settle(asyncio.FIRST_EXCEPTION)
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
