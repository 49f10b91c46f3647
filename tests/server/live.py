"""A live ``wkjupyter serve`` app on a background thread, for tests with synchronous clients.

zarr-python, tensorstore, xarray, dask and ome-zarr-py block while they fetch, so the server
must not run on the test's own thread (as pytest-jupyter's does): this one runs the same
standalone application (:func:`wkjupyter.server.standalone.make_app`) on its own event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from wkjupyter.catalog.core import Catalog
from wkjupyter.server.data import DataService, ServeOptions
from wkjupyter.server.standalone import make_app

if TYPE_CHECKING:
    from tornado import web

__all__ = ["LiveServer"]


class LiveServer:
    """``wkjupyter serve`` for one catalog on 127.0.0.1, port 0.

    Attributes
    ----------
    url
        The data routes' root, ``http://127.0.0.1:<port>/wkjupyter/``.
    token
        The API token (``Authorization: token <token>``).
    data
        The server's :class:`DataService` (use it only through :meth:`call`).
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
        self.catalog = Catalog(catalog_url, data_dir=data_dir)
        self.token = secrets.token_urlsafe(16)
        self.owner = owner
        self._options = options or ServeOptions(use_flush_interval=0.05)
        self._roots = local_roots
        self._log_function = log_function
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""
        self.data: DataService
        self.app: web.Application

    def start(self) -> LiveServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self.data = DataService(self.catalog, self._options)
        self.app = make_app(
            self.data, owner=self.owner, token=self.token, local_roots=self._roots,
            log_function=self._log_function,
        )  # fmt: skip
        sockets = bind_sockets(0, "127.0.0.1")
        self._server = HTTPServer(self.app)
        self._server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/wkjupyter/"

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. ``data.flush_uses()``) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def flush_uses(self) -> None:
        """Write the counted link uses now."""
        self.call(self.data.flush_uses())

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A plain GET of ``url + path``: (status, headers, body); no redirects followed."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.stop()
            await self.data.close()

        self.call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.catalog.dispose()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
