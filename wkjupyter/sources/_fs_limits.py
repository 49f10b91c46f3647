"""Request limits per upstream: slots per host (and bucket), a bounded wait, one deadline.

One slow or frozen upstream must not stall the others. Requests therefore queue per
*upstream* (``http(s)``: scheme and host:port; ``s3``/``gs``: endpoint and bucket; local
files: one for the machine), on the running event loop: ``concurrency`` in flight.

Requests made while :func:`serving` (for a client waiting on the server) also have a bounded
wait: at most ``max_queued`` wait for a slot, a request beyond that is refused at once
(:class:`~wkjupyter.errors.UpstreamBusyError`, which the server answers 503 with
``Retry-After``), and the timeout is a deadline that covers the wait for a slot as well as
the request itself. Outside it (``Layer.read`` in a notebook) a read's own chunk requests
fill the queue, so they wait for a slot as long as it takes and the timeout counts from
the moment the request is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from wkjupyter.errors import UpstreamBusyError
from wkjupyter.sources._fs_clients import loop_cache

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Iterator

    from wkjupyter.sources._fs_urls import ParsedUrl

__all__ = [
    "Call",
    "Slots",
    "is_serving",
    "serving",
    "slots",
    "upstream_label",
    "upstream_of",
]

_SERVING: contextvars.ContextVar[bool] = contextvars.ContextVar("wkjupyter_serving", default=False)


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """Storage requests made inside (in this task and the tasks it starts) serve a waiting
    client: their wait for a slot is bounded in length and by the timeout."""
    token = _SERVING.set(True)
    try:
        yield
    finally:
        _SERVING.reset(token)


def is_serving() -> bool:
    """Whether the running code is inside :func:`serving`."""
    return _SERVING.get()


T = TypeVar("T")


class Slots:
    """Request slots of one upstream on one event loop."""

    def __init__(self, concurrency: int, max_queued: int) -> None:
        self._free = asyncio.Semaphore(concurrency)
        self.max_queued = max_queued
        self._deadlines: list[float] = []  # of the requests waiting for a slot

    @contextlib.asynccontextmanager
    async def hold(self, deadline: float | None, label: str) -> AsyncIterator[None]:
        """Hold a slot until the block ends; wait for one until ``deadline`` (loop time).

        With a deadline, raises ``TimeoutError`` when it passes first, and
        :class:`UpstreamBusyError` at once when ``max_queued`` requests wait already;
        without one, waits as long as it takes.
        """
        if deadline is not None and self._free.locked():
            if len(self._deadlines) >= self.max_queued:
                # The earliest a waiting place frees up: the first waiter gives up then.
                wait = min(self._deadlines) - asyncio.get_running_loop().time()
                msg = (
                    f"{label} is busy: {len(self._deadlines)} requests already wait for it "
                    f"(WKJUPYTER_MAX_QUEUED); try again later"
                )
                raise UpstreamBusyError(msg, retry_after=max(1, math.ceil(wait)))
            self._deadlines.append(deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._free.acquire()
            finally:
                self._deadlines.remove(deadline)
        else:
            await self._free.acquire()
        try:
            yield
        finally:
            self._free.release()


def slots(upstream: tuple[str, ...], concurrency: int, max_queued: int) -> Slots:
    """The slots of ``upstream`` (see :func:`upstream_of`) on the running loop."""
    cache = loop_cache()
    key = ("slots", upstream, concurrency, max_queued)
    found = cache.get(key)
    if found is None:
        found = cache[key] = Slots(concurrency, max_queued)
    assert isinstance(found, Slots)
    return found


def upstream_of(parsed: ParsedUrl, endpoint_url: str | None) -> tuple[str, ...]:
    """What requests to ``parsed`` queue for: ``(scheme, host:port[, bucket])``.

    ``endpoint_url`` is the credential's S3/GCS endpoint, if it names one.
    """
    scheme = parsed.scheme
    if scheme == "file":
        return ("file",)
    if scheme in ("http", "https"):
        import yarl

        url = yarl.URL(parsed.root, encoded=True)
        return (scheme, f"{url.host}:{url.port}")
    bucket = parsed.root.split("/", 1)[0]
    if scheme == "s3":
        endpoint = endpoint_url or parsed.endpoint_url or "aws"
    else:
        endpoint = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST") or "google"
    return (scheme, endpoint.rstrip("/"), bucket)


def upstream_label(upstream: tuple[str, ...]) -> str:
    """A readable name of an upstream: ``http://host:port``, ``s3://bucket (endpoint)``."""
    if upstream[0] in ("http", "https"):
        return f"{upstream[0]}://{upstream[1]}"
    if upstream[0] == "file":
        return "the local disk"
    scheme, endpoint, bucket = upstream
    return f"{scheme}://{bucket} ({endpoint})"


@dataclass(frozen=True, slots=True)
class Call:
    """One request's URL and deadline (event-loop time)."""

    url: str
    deadline: float

    async def run(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` until the deadline; ``TimeoutError`` after it."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(coro, max(remaining, 0.0))
