"""``wkjupyter serve``: the data routes and REST API in a plain tornado app.

For deployments and replicas (several stateless processes sharing a PostgreSQL catalog behind
any load balancer), without a Jupyter server and its code-execution power. Data routes answer
everyone (access by public flag or link token); a request bearing the server's API token
(``Authorization: token <token>``) acts as the configured user, for private datasets and the
REST API. The token is printed at start unless given with ``--token-file`` / ``$WKJUPYTER_TOKEN``.
Timeouts, request sizes and a connection cap (:class:`~wkjupyter.server._limits.HttpLimits`)
protect it from clients that hold connections open or send oversized requests.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import signal
import threading
from typing import TYPE_CHECKING, Any

from tornado import web
from tornado.log import access_log
from tornado.netutil import bind_sockets

from wkjupyter.server._limits import HttpLimits, LimitedHTTPServer, limited_server
from wkjupyter.server.data import DataService, ServeOptions
from wkjupyter.server.handlers import (
    DATA_ROUTE,
    LANDING_ROUTE,
    LINK_ROOT_ROUTE,
    DataRoutes,
    LandingRoutes,
    LinkRootRoutes,
)
from wkjupyter.server.redact import redact_request_logs, redact_uri
from wkjupyter.server.rest import API_ROLES, ApiRoutes, ApiState, api_handlers

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from wkjupyter.catalog.core import Catalog

__all__ = ["BackgroundServer", "HttpLimits", "make_app", "serve"]

log = logging.getLogger("wkjupyter.server")


class _TokenUser:
    """Whoever presents the API token acts as the configured user."""

    def _user(self) -> str | None:
        handler: Any = self
        return handler.settings["wkjupyter_api"].owner if _has_token(handler) else None


def _has_token(handler: web.RequestHandler) -> bool:
    expected: str = handler.settings["wkjupyter_token"]
    header = handler.request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() not in {"token", "bearer"} or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class DataHandler(_TokenUser, DataRoutes):
    async def get(self, path: str) -> None:
        await self._get(path, head=False)

    async def head(self, path: str) -> None:
        await self._get(path, head=True)

    async def options(self, *args: Any) -> None:
        await self._options()


class LinkRootHandler(_TokenUser, LinkRootRoutes):
    async def get(self, token: str) -> None:
        await self._get(token, head=False)

    async def head(self, token: str) -> None:
        await self._get(token, head=True)

    async def options(self, *args: Any) -> None:
        await self._options()


class LandingHandler(_TokenUser, LandingRoutes):
    LOGIN_HINT = (
        "Private datasets are listed for requests with the server's API token "
        "(Authorization: token <token>); anyone reads them through a link."
    )

    async def get(self, rest: str | None) -> None:
        await self._get(rest, head=False)

    async def head(self, rest: str | None) -> None:
        await self._get(rest, head=True)

    async def options(self, *args: Any) -> None:
        await self._options()


class _TokenApi(ApiRoutes):
    def prepare(self) -> None:
        if not _has_token(self):
            raise web.HTTPError(
                403,
                "the wkjupyter API needs the server's token: send 'Authorization: token <token>'"
                " (printed when `wkjupyter serve` started, or set with --token)",
            )

    def check_xsrf_cookie(self) -> None:
        """No cookies are used: a forged cross-site request cannot carry the token."""


STANDALONE_API: dict[str, type[ApiRoutes]] = {
    role: type(f"Standalone{cls.__name__}", (cls, _TokenApi), {}) for role, cls in API_ROLES.items()
}


def make_app(
    data: DataService,
    *,
    owner: str,
    token: str,
    base_url: str = "/",
    public_url: str | None = None,
    local_roots: list[Path] | None = None,
    log_function: Callable[[web.RequestHandler], None] | None = None,
) -> web.Application:
    """The tornado application serving ``data`` under ``{base_url}wkjupyter/``."""
    redact_request_logs()
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    prefix = f"{base}wkjupyter/"
    api = ApiState(data=data, owner=owner, public_url=public_url, local_roots=local_roots or [])
    handlers: list[Any] = [
        (base + LANDING_ROUTE, LandingHandler),  # before DATA_ROUTE, which matches "zarr/"
        (prefix + DATA_ROUTE, DataHandler),
        (prefix + LINK_ROOT_ROUTE, LinkRootHandler),
        *api_handlers(prefix, STANDALONE_API),
    ]
    settings: dict[str, Any] = {
        "wkjupyter_data": data,
        "wkjupyter_api": api,
        "wkjupyter_token": token,
        "base_url": base,
    }
    settings["log_function"] = log_function or log_request
    return web.Application(handlers, **settings)


_UPSTREAM_STATUSES = frozenset({502, 503, 504})


def log_request(handler: web.RequestHandler) -> None:
    """Log a finished request as Jupyter does: successes at DEBUG (one line per chunk would
    swamp the log and cost a twentieth of the serving time), client errors at INFO, server
    errors at WARNING, except upstream failures (502, 503, 504) at INFO: the data routes warn
    of those once per upstream and then in summaries, and an outage must not log a warning
    per request. Secrets in the request line (link tokens, credential query parameters) are
    redacted for every route, unmatched paths included."""
    status = handler.get_status()
    level = (
        logging.DEBUG
        if status < 400
        else logging.INFO
        if status < 500 or status in _UPSTREAM_STATUSES
        else logging.WARNING
    )
    if access_log.isEnabledFor(level):
        took = 1000.0 * handler.request.request_time()
        summary = redact_uri(handler._request_summary())
        access_log.log(level, "%d %s %.2fms", status, summary, took)


def listen(
    app: web.Application, host: str, port: int, limits: HttpLimits | None = None
) -> tuple[LimitedHTTPServer, str]:
    """Serve ``app`` on ``host:port`` (0: a free port) on the running loop within ``limits``;
    returns the server and its base URL (``http://host:port{base_url}``)."""
    sockets = bind_sockets(port, host)
    server = limited_server(app, limits)
    server.add_sockets(sockets)
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{sockets[0].getsockname()[1]}{app.settings['base_url']}"


async def serve(
    catalog: Catalog,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    base_url: str = "/",
    owner: str,
    token: str | None = None,
    public_url: str | None = None,
    local_roots: list[Path] | None = None,
    options: ServeOptions | None = None,
    limits: HttpLimits | None = None,
    ready: Callable[[str, str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; ``ready(url, token)`` is called once listening.

    ``limits``: timeouts, request sizes and the connection cap (default :class:`HttpLimits`).
    """
    data = DataService(catalog, options)
    token = token or secrets.token_urlsafe(32)
    app = make_app(
        data, owner=owner, token=token, base_url=base_url, public_url=public_url,
        local_roots=local_roots,
    )  # fmt: skip
    server, bound_url = listen(app, host, port, limits)
    url = public_url or bound_url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(f"{url}wkjupyter/", token)
    try:
        await stop.wait()
    finally:
        server.stop()
        await data.close()
        catalog.dispose()


class BackgroundServer:
    """The standalone app on a thread of its own, for the demo, notebooks and tests.

    Synchronous HTTP clients (zarr-python, tensorstore, xarray) block while they fetch, so
    they cannot share a thread with the server. Use as a context manager, or
    :meth:`start` / :meth:`stop`.

    Attributes
    ----------
    url
        The data routes' root and landing page, ``http://<host>:<port>{base_url}wkjupyter/``
        (set by :meth:`start`).
    token
        The API token (``Authorization: token <token>``).
    data
        The server's :class:`DataService`; touch it only through :meth:`call`.

    ``limits`` (:class:`HttpLimits`) are those of ``wkjupyter serve``: timeouts, request sizes,
    the connection cap.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        owner: str,
        host: str = "127.0.0.1",
        port: int = 0,
        base_url: str = "/",
        token: str | None = None,
        options: ServeOptions | None = None,
        local_roots: list[Path] | None = None,
        log_function: Callable[[web.RequestHandler], None] | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.owner = owner
        self.token = token or secrets.token_urlsafe(32)
        self.url = ""
        self._host, self._port, self._base_url = host, port, base_url
        self._options, self._roots, self._log_function = options, local_roots, log_function
        self._limits = limits
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="wkjupyter-serve", daemon=True
        )
        self.data: DataService
        self.app: web.Application

    def start(self) -> BackgroundServer:
        """Start serving; returns once the port is bound."""
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.data = DataService(self.catalog, self._options)
        self.app = make_app(
            self.data, owner=self.owner, token=self.token, base_url=self._base_url,
            local_roots=self._roots, log_function=self._log_function,
        )  # fmt: skip
        self._server, root = listen(self.app, self._host, self._port, self._limits)
        self.url = f"{root}wkjupyter/"

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop serving, write pending link uses and end the thread."""

        async def shutdown() -> None:
            self._server.stop()
            await self.data.close()

        self.call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
