"""``wkjupyter serve`` under hostile connections: timeouts, oversized heads, a connection cap.

Raw sockets against a real server (``BackgroundServer`` on port 0), with small limits so the
tests stay fast. Tornado alone keeps half-sent headers for an hour, drops oversized heads
without a status and accepts any number of connections.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.server.live import serve_process
from wkjupyter.catalog.core import Catalog
from wkjupyter.server.standalone import BackgroundServer, HttpLimits

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LANDING = "/wkjupyter/?format=json"


@contextlib.contextmanager
def serving(tmp_path: Path, limits: HttpLimits) -> Iterator[tuple[str, int]]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", data_dir=tmp_path)
    with BackgroundServer(catalog, owner="owner", limits=limits) as server:
        address = urlsplit(server.url)
        assert address.hostname is not None
        assert address.port is not None
        yield address.hostname, address.port
    catalog.dispose()


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def request(sock: socket.socket, target: str = LANDING, *, extra: str = "") -> None:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer.status, dict(answer.headers), answer.read()


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reading nothing); fails after ``seconds``."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        assert sock.recv(1) == b""
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


LIMITS = HttpLimits(header_timeout=0.5, body_timeout=0.5, max_request_line=2048,
                    max_header_size=8192)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with serving(tmp_path_factory.mktemp("limits"), LIMITS) as address:
        yield address


def test_heads_within_the_limits_are_served(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        request(sock, LANDING + "&q=" + "a" * 1900, extra="X-Pad: " + "b" * 5000 + "\r\n")
        status, _, body = response(sock)
        assert status == 200, body
        request(sock)  # the connection is kept alive
        assert response(sock)[0] == 200


@pytest.mark.parametrize("size", [3000, 100_000])
def test_a_long_request_line_gets_414(server: tuple[str, int], size: int) -> None:
    with connect(server) as sock:
        request(sock, LANDING + "&q=" + "a" * size)
        status, headers, body = response(sock)
        assert status == 414
        assert headers["Connection"] == "close"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert json.loads(body) == {  # shaped as the REST API's errors
            "error": "URITooLong",
            "message": "the request line is longer than 2048 bytes",
        }
        closed_within(sock, 5)


@pytest.mark.parametrize("size", [9000, 200_000])
def test_oversized_headers_get_431(server: tuple[str, int], size: int) -> None:
    with connect(server) as sock:
        request(sock, extra="X-Big: " + "b" * size + "\r\n")
        status, headers, body = response(sock)
        assert status == 431
        assert headers["Connection"] == "close"
        assert b"8192 bytes" in body
        closed_within(sock, 5)


def test_a_head_without_its_end_gets_431(server: tuple[str, int]) -> None:
    """Header lines and no blank line: the answer comes once the limit is passed."""
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000)
        assert response(sock)[0] == 431


@pytest.mark.parametrize("size", [LIMITS.max_body_size + 1, 5 * LIMITS.max_body_size])
def test_an_oversized_body_gets_413_before_it_is_read(server: tuple[str, int], size: int) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /wkjupyter/api/datasets HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
        )
        sock.sendall(b" " * size)  # the server discards it while closing
        status, _, body = response(sock)
        assert status == 413
        assert json.loads(body)["error"] == "ContentTooLarge"
        closed_within(sock, 5)


def test_half_sent_headers_are_closed_after_the_header_timeout(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /wkjupyter/ HTTP/1.1\r\nHost: te")
        assert closed_within(sock, 5) < 3


def test_a_dribbling_client_does_not_reset_the_header_timeout(server: tuple[str, int]) -> None:
    """Slowloris: a byte every 0.2 s never completes the head; the timeout is for all of it."""
    with connect(server) as sock:
        sock.sendall(b"GET /wkjupyter/ HTTP/1.1\r\n")
        start = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - start < 5:
                sock.sendall(b"X")
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        assert time.monotonic() - start < 3


def test_idle_keep_alive_connections_are_closed(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        request(sock)
        assert response(sock)[0] == 200
        assert closed_within(sock, 5) < 3


def test_a_stalled_body_is_closed_after_the_body_timeout(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /wkjupyter/api/datasets HTTP/1.1\r\nHost: test\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na'
        )
        assert closed_within(sock, 5) < 3


def test_connections_beyond_the_cap_get_503(tmp_path: Path) -> None:
    with serving(tmp_path, HttpLimits(max_connections=3)) as server:
        check_the_cap(server, 3)


def check_the_cap(server: tuple[str, int], cap: int) -> None:
    held = [connect(server) for _ in range(cap)]
    try:
        for sock in held:  # each one accepted and served
            request(sock)
            assert response(sock)[0] == 200
        with connect(server) as extra:
            request(extra)
            status, headers, _ = response(extra)
            assert status == 503
            assert headers["Retry-After"] == "1"
            closed_within(extra, 5)
        for sock in held:  # the others still work
            request(sock)
            assert response(sock)[0] == 200
        held.pop().close()
        time.sleep(0.2)  # the server notices the close
        with connect(server) as again:
            request(again)
            assert response(again)[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections must be positive"):
        HttpLimits(max_connections=0)
    with pytest.raises(ValueError, match="cannot exceed max_header_size"):
        HttpLimits(max_request_line=70_000)


def test_the_serve_command_takes_the_limits(tmp_path: Path) -> None:
    """``wkjupyter serve --header-timeout ... --max-request-line ...`` in a real process."""
    env = {**os.environ, "WKJUPYTER_DATA_DIR": str(tmp_path), "WKJUPYTER_TOKEN": "t"}
    env.pop("WKJUPYTER_CATALOG_URL", None)
    limits = ("--header-timeout", "0.5", "--max-request-line", "1024", "--max-connections", "2")
    with serve_process(*limits, log=tmp_path / "serve.log", env=env) as served:
        url = urlsplit(served.url)
        assert url.hostname is not None
        assert url.port is not None, served.stdout
        address = (url.hostname, url.port)
        with connect(address) as sock:
            request(sock, LANDING + "&q=" + "a" * 1100)
            assert response(sock)[0] == 414
        with connect(address) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            assert closed_within(sock, 5) < 3
