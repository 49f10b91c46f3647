"""A live ``wkjupyter serve`` app on a background thread, for tests with synchronous clients.

zarr-python, tensorstore, xarray, dask and ome-zarr-py block while they fetch, so the server
must not run on the test's own thread (as pytest-jupyter's does): this is the package's own
:class:`~wkjupyter.server.standalone.BackgroundServer` on a catalog of its own, plus a plain
HTTP helper that follows no redirects, and :func:`serve_process`: the ``wkjupyter serve``
command in a real process, for what only a process shows (signals, stderr, CLI options).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wkjupyter.catalog.core import Catalog
from wkjupyter.server.data import ServeOptions
from wkjupyter.server.standalone import BackgroundServer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from email.message import Message
    from pathlib import Path

__all__ = ["Answer", "LiveServer", "ServeProcess", "fetch", "serve_process"]


class LiveServer(BackgroundServer):
    """``wkjupyter serve`` for one catalog on 127.0.0.1, port 0 (see BackgroundServer).

    Link uses are flushed every 50 ms by default, so tests see them quickly.
    """

    def __init__(
        self,
        catalog_url: str,
        data_dir: Path,
        *,
        owner: str = "owner",
        options: ServeOptions | None = None,
        local_roots: list[Path] | None = None,
        log_function: Any = None,
    ) -> None:
        super().__init__(
            Catalog(catalog_url, data_dir=data_dir),
            owner=owner,
            options=options or ServeOptions(use_flush_interval=0.05),
            local_roots=local_roots,
            log_function=log_function,
        )

    def start(self) -> LiveServer:
        super().start()
        return self

    def __enter__(self) -> LiveServer:
        return self.start()

    def flush_uses(self) -> None:
        """Write the counted link uses now."""
        self.call(self.data.flush_uses())

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain GET of ``url + path``: (status, headers, body); no redirects followed."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stop(self) -> None:
        super().stop()
        self.catalog.dispose()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as a client sees it."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def comparable(self) -> tuple[int, bytes, list[tuple[str, str]]]:
        """Everything a client sees except the Date header."""
        headers = sorted((k.lower(), v) for k, v in self.headers.items() if k.lower() != "date")
        return self.status, self.body, headers


def fetch(base: LiveServer | str, path: str, method: str = "GET", **headers: str) -> Answer:
    """One request to ``base + path`` (``base``: a server or its URL ending in ``wkjupyter/``);
    no redirects followed; ``_`` in header names is ``-``."""
    url = urlsplit(base.url if isinstance(base, LiveServer) else base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        conn.request(method, url.path + path, headers=sent)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


@dataclass
class ServeProcess:
    """A running ``wkjupyter serve`` process: its URL, what it printed, how it ended."""

    url: str
    log: Path  # its stderr
    stdout: str = ""  # the whole of it once the process has ended
    returncode: int | None = None

    @property
    def stderr(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def serve_process(
    *args: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    stop: signal.Signals = signal.SIGTERM,
) -> Iterator[ServeProcess]:
    """``wkjupyter serve --port 0 *args`` in a real process, stderr to ``log``; yields it once
    it printed its URL, then stops it with ``stop`` and waits for it to end."""
    command = [sys.executable, "-m", "wkjupyter.cli", "serve", "--port", "0", *args]
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    with proc:  # closes the pipe
        assert proc.stdout is not None
        served = ServeProcess("", log)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            assert " at http://" in line, f"serve did not start: {line!r} {log.read_text()}"
            served.url, served.stdout = line.rsplit(" at ", 1)[1].strip(), line
            yield served
        finally:
            proc.send_signal(stop)
            try:
                served.returncode = proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            served.stdout += proc.stdout.read()
