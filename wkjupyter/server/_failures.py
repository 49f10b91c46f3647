"""Upstream failures in the log: the first per upstream, then summaries.

An outage answers every request with a 5xx; a warning per failed request would bury
everything else in the log (6 124 warnings in an 8 s outage before this).
"""

from __future__ import annotations

import asyncio
import logging
import time

__all__ = ["FailureLog"]

log = logging.getLogger("wkjupyter.server")


class FailureLog:
    """Upstream failures logged per upstream (host or bucket): the first one, then at most one
    summary every ``interval`` seconds ("N more failures in the last 10 s; the last: ...").

    An outage answers every request with a 5xx (and the access log has a line for each);
    a warning per failed request would bury everything else in the log.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._hosts: dict[str, _Failures] = {}

    def failed(self, upstream: str | None, what: str, path: str, err: Exception) -> None:
        """Log a failure of ``upstream`` on the request for ``path``; failures of no known
        upstream (corrupt data a reader found) are counted by ``what``."""
        key = upstream or what.removesuffix(" for")
        now = time.monotonic()
        state = self._hosts.get(key)
        if state is None or (state.suppressed == 0 and now - state.since >= self.interval):
            self._hosts[key] = _Failures(since=now)
            log.warning("%s %s: %s", what, path, err)
            return
        state.suppressed += 1
        state.last = f"{what} {path}: {err}"
        if state.timer is None:
            delay = max(0.0, state.since + self.interval - now)
            state.timer = asyncio.get_running_loop().call_later(delay, self._summarize, key)

    def close(self) -> None:
        """Log the summaries still waiting for their timer (the server is stopping)."""
        for key, state in self._hosts.items():
            if state.timer is not None:
                state.timer.cancel()
                self._summarize(key)

    def _summarize(self, key: str) -> None:
        state = self._hosts[key]
        now = time.monotonic()
        log.warning(
            "%s: %d more failures in the last %.0f s; the last: %s",
            key, state.suppressed, now - state.since, state.last,
        )  # fmt: skip
        state.since, state.suppressed, state.timer = now, 0, None


class _Failures:
    __slots__ = ("last", "since", "suppressed", "timer")

    def __init__(self, since: float) -> None:
        self.since = since
        self.suppressed = 0
        self.last = ""
        self.timer: asyncio.TimerHandle | None = None
