"""Upstream limits (issue 9 §1, §6): one frozen host must not stall the others.

Requests queue per upstream host (and bucket), the timeout covers the wait for a slot, a full
queue answers 503 with ``Retry-After`` at once, and an outage logs its first failure and then
a summary instead of a warning per request. Real servers: a RangeHTTPServer whose requests
hang stands for a frozen host (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from tests.server.conftest import write_sparse_ome_zarr
from tests.server.live import Answer, LiveServer, fetch
from wkjupyter.hub import Hub
from wkjupyter.server._failures import FailureLog

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.servers import HTTPServerFactory, RangeHTTPServer

TIMEOUT = 2.0
CHUNK = "img/1/0/0/0/0"


@pytest.fixture
def two_hosts(
    http_server: HTTPServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LiveServer, RangeHTTPServer, RangeHTTPServer]]:
    """Datasets ``a`` and ``b`` on two upstream hosts, served with small limits."""
    monkeypatch.setenv("WKJUPYTER_TIMEOUT", str(TIMEOUT))  # read when a view opens its stores
    monkeypatch.setenv("WKJUPYTER_CONCURRENCY", "4")
    monkeypatch.setenv("WKJUPYTER_MAX_QUEUED", "8")
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    hosts = [http_server(source.parent, hang_seconds=30) for _ in range(2)]
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = Hub(url, "owner", data_dir=tmp_path, public_url="http://example.invalid/")
    for name, host in zip("ab", hosts, strict=True):
        hub.add_remote(host.url_for(source.name), name=name, public=True)
    with LiveServer(url, tmp_path) as server:
        for name in "ab":  # both views open, their readers too
            assert fetch(server, f"zarr/{name}/{CHUNK}").status == 200
        yield server, hosts[0], hosts[1]
        for host in hosts:
            host.stop()  # releases the hanging requests before the server stops
    hub.catalog.dispose()


def timed(server: LiveServer, path: str) -> tuple[Answer, float]:
    start = time.monotonic()
    answer = fetch(server, path)
    return answer, time.monotonic() - start


def test_frozen_host_does_not_stall_a_healthy_one(
    two_hosts: tuple[LiveServer, RangeHTTPServer, RangeHTTPServer],
) -> None:
    server, frozen, _healthy = two_hosts
    frozen.faults["/"] = "hang"
    with ThreadPoolExecutor(40) as pool:
        stuck = [pool.submit(timed, server, f"zarr/a/{CHUNK}") for _ in range(40)]
        time.sleep(0.5)  # let them reach the server and queue (not an assertion)
        healthy, took = timed(server, f"zarr/b/{CHUNK}")
        answers = [f.result() for f in stuck]
    assert healthy.status == 200
    assert took < TIMEOUT / 2, took  # not queued behind the frozen host
    statuses = sorted(a.status for a, _ in answers)
    assert set(statuses) <= {503, 504}, statuses
    # 4 in flight and 8 waiting time out; the others are refused at once.
    assert statuses.count(504) == 12, statuses
    busy = [(a, t) for a, t in answers if a.status == 503]
    assert all(t < TIMEOUT / 2 for _, t in busy), [t for _, t in busy]
    assert all(1 <= int(a.headers["Retry-After"]) <= TIMEOUT for a, _ in busy)
    assert all("Retry-After" in a.json()["message"] for a, _ in busy)
    # The deadline covers the wait for a slot: nobody waits much longer than the timeout.
    assert max(t for _, t in answers) < TIMEOUT + 1.0, max(t for _, t in answers)


def test_upstream_failures_are_logged_once_then_summarized(
    two_hosts: tuple[LiveServer, RangeHTTPServer, RangeHTTPServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, failing, healthy = two_hosts
    server.data.failures = FailureLog(interval=0.5)
    caplog.set_level(logging.WARNING, logger="wkjupyter.server")
    failing.faults["/"] = 500
    for _ in range(20):
        assert fetch(server, f"zarr/a/{CHUNK}").status == 503
    healthy.faults["/"] = 500
    assert fetch(server, f"zarr/b/{CHUNK}").status == 503  # another host: logged at once
    first = [r.getMessage() for r in caplog.records if r.name == "wkjupyter.server"]
    assert len(first) == 2, first
    assert "HTTP 500" in first[0]
    time.sleep(1.0)  # the summary is due 0.5 s after the first failure
    lines = [r.getMessage() for r in caplog.records if r.name == "wkjupyter.server"]
    summary = [line for line in lines if "more failures" in line]
    assert len(summary) == 1, lines
    assert summary[0].startswith(f"http://127.0.0.1:{failing.port}: 19 more failures"), summary
    assert "HTTP 500" in summary[0]


def test_a_stopping_server_writes_the_pending_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wkjupyter.server")

    async def outage() -> None:  # the summary timer needs a running loop
        failures = FailureLog(interval=60)
        for _ in range(3):
            failures.failed("http://frozen:1", "upstream unavailable for", "/x", TimeoutError())
        failures.close()  # before the timer fired: the two suppressed failures are told

    asyncio.run(outage())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[1].startswith("http://frozen:1: 2 more failures"), messages
