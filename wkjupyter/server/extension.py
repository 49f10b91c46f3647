"""The Jupyter server extension: the data routes and the REST API under ``{base_url}wkjupyter/``.

Enabled on ``pip install`` by ``jupyter-config/jupyter_server_config.d/wkjupyter.json``.
Data routes are ``@allow_unauthenticated`` (they check access themselves: public datasets,
link tokens, or the logged-in user's rights); the REST API needs a Jupyter login and obeys
jupyter_server's XSRF rules. Configure with ``c.WkJupyter.<trait>`` or ``--WkJupyter.<trait>=``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.application import ExtensionApp
from tornado import web
from traitlets import Bool, Enum, Float, Int, List, Unicode

from wkjupyter.catalog.core import Catalog
from wkjupyter.catalog.users import default_user_name
from wkjupyter.server import runtime
from wkjupyter.server.data import DataService, ServeOptions
from wkjupyter.server.handlers import (
    DATA_ROUTE,
    LANDING_ROUTE,
    LINK_ROOT_ROUTE,
    DataRoutes,
    LandingRoutes,
    LinkRootRoutes,
)
from wkjupyter.server.redact import redact_request_logs
from wkjupyter.server.rest import API_ROLES, ApiRoutes, ApiState, api_handlers
from wkjupyter.server.view import CHUNK_CODECS

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

__all__ = ["WkJupyter"]


class WkJupyter(ExtensionApp):
    """wkjupyter's Jupyter server extension."""

    name = "wkjupyter"
    description = "Serve wkjupyter's datasets and links as OME-Zarr; REST API for the catalog"

    catalog_url = Unicode(
        None,
        allow_none=True,
        help="SQLAlchemy URL of the catalog (default: $WKJUPYTER_CATALOG_URL, else SQLite in "
        "the data dir). Kernels started by this server use the same catalog.",
    ).tag(config=True)
    catalog_dir = Unicode(
        None,
        allow_none=True,
        help="Where the default catalog and its secret key live (default: "
        "$WKJUPYTER_DATA_DIR, else <jupyter data dir>/wkjupyter).",
    ).tag(config=True)
    public_url = Unicode(
        None,
        allow_none=True,
        help="The server's public base URL including its base_url (e.g. "
        "'https://hub.example.org/user/alice/'), for links behind a proxy or JupyterHub. "
        "Default: JupyterHub's public URL, else the server's own URL.",
    ).tag(config=True)
    user = Unicode(
        None,
        allow_none=True,
        help="The catalog user a Jupyter login acts as, unless users_from_login (default: "
        "$JUPYTERHUB_USER, else the OS user who runs the server).",
    ).tag(config=True)
    users_from_login = Bool(
        None,
        allow_none=True,
        help="Act as the logged-in user's own name (each user of a shared server as "
        "themself) rather than as `user`. Default: when the server authenticates through "
        "JupyterHub; a plain Jupyter server's logins are anonymous names of its owner.",
    ).tag(config=True)
    chunk_codec = Enum(
        list(CHUNK_CODECS),
        default_value="zstd",
        help="Codec for chunks that cannot be passed through (decoded and re-encoded).",
    ).tag(config=True)
    chunk_level = Int(1, help="Compression level of chunk_codec.").tag(config=True)
    view_cache_size = Int(64, help="How many opened datasets are kept.").tag(config=True)
    view_ttl = Float(
        300.0, help="Seconds an opened dataset is reused before its source is re-read."
    ).tag(config=True)
    chunk_cache_mb = Int(256, help="Memory (MiB) for re-encoded chunks; 0 disables.").tag(
        config=True
    )
    allowed_local_roots = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Directories the REST import may read local paths (file://) from. Default: "
        "the server's root_dir.",
    ).tag(config=True)

    def initialize_settings(self) -> None:
        data_dir = Path(self.catalog_dir) if self.catalog_dir else None
        # A catalog named in the config must exist (as with --catalog-url): a typo must not
        # start an empty catalog; the default one is created on first use.
        catalog = Catalog(self.catalog_url, data_dir=data_dir, create=not self.catalog_url)
        options = ServeOptions(
            chunk_codec=self.chunk_codec,
            chunk_level=self.chunk_level,
            view_ttl=self.view_ttl,
            view_cache_size=self.view_cache_size,
            chunk_cache_bytes=self.chunk_cache_mb * 2**20,
        )
        self._data = DataService(catalog, options)
        roots = cast("list[str] | None", self.allowed_local_roots)
        if roots is None:
            roots = [self.serverapp.root_dir] if self.serverapp is not None else []
        by_login = self.users_from_login
        if by_login is None:
            provider = getattr(self.serverapp, "identity_provider", None)
            by_login = type(provider).__module__.startswith("jupyterhub")
        api = ApiState(
            data=self._data,
            owner=self.user or default_user_name(),
            users_from_login=bool(by_login),
            public_url=_slash(self.public_url),
            local_roots=[Path(r).expanduser() for r in roots],
        )
        self.settings.update({"wkjupyter_data": self._data, "wkjupyter_api": api})
        # Jupyter logs its own 404s and every request line with its application log, and
        # scrubs only some query parameters (case-sensitively): redact them all there too.
        redact_request_logs(*([self.serverapp.log] if self.serverapp is not None else []))
        self.log.info("wkjupyter: serving the catalog %r", catalog)

    def initialize_handlers(self) -> None:
        prefix = "/wkjupyter/"
        self.handlers.extend(
            [
                ("/" + LANDING_ROUTE, JupyterLandingHandler),  # before DATA_ROUTE ("zarr/")
                (prefix + DATA_ROUTE, JupyterDataHandler),
                (prefix + LINK_ROOT_ROUTE, JupyterLinkRootHandler),
                *api_handlers(prefix, JUPYTER_API),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        # The port is bound by now, so the server's URL is known.
        url = runtime.server_public_url(self.public_url, serverapp.connection_url)
        self.settings["wkjupyter_api"].public_url = _slash(self.public_url)
        info = runtime.ServerInfo(
            pid=os.getpid(),
            url=url,
            # What this server really uses, so kernels use the same catalog and key.
            catalog_url=self.catalog_url or os.environ.get("WKJUPYTER_CATALOG_URL"),
            data_dir=self.catalog_dir or os.environ.get("WKJUPYTER_DATA_DIR"),
        )
        path = runtime.write_server_info(info)
        self.log.info("wkjupyter: data routes at %swkjupyter/ (kernels read %s)", url, path)

    async def stop_extension(self) -> None:
        await self._data.close()
        runtime.remove_server_info(os.getpid())


def _slash(url: str | None) -> str | None:
    if not url:
        return None
    return url if url.endswith("/") else url + "/"


class _JupyterUser:
    """The data routes' user in Jupyter: whoever is logged in (cookie or token), if anyone.

    Listed first among the bases so that it wins over the anonymous default of the routes.
    """

    def _user(self) -> str | None:
        handler: Any = self
        if handler.current_user is None:
            return None
        return _catalog_user(handler)


def _catalog_user(handler: JupyterHandler) -> str:
    # Under JupyterHub the identity is the hub user (maybe someone the owner shared the
    # server with); a plain Jupyter server's logins (random anonymous names) are its owner.
    state: ApiState = handler.settings["wkjupyter_api"]
    if state.users_from_login and handler.current_user is not None:
        return str(handler.current_user.username)
    return state.owner


class JupyterDataHandler(_JupyterUser, DataRoutes, JupyterHandler):
    """Data routes in the Jupyter server."""

    @allow_unauthenticated
    async def get(self, path: str) -> None:
        await self._get(path, head=False)

    @allow_unauthenticated
    async def head(self, path: str) -> None:
        await self._get(path, head=True)

    @allow_unauthenticated
    async def options(self, *args: Any) -> None:
        await self._options()


class JupyterLinkRootHandler(_JupyterUser, LinkRootRoutes, JupyterHandler):
    """A link's root in the Jupyter server."""

    @allow_unauthenticated
    async def get(self, token: str) -> None:
        await self._get(token, head=False)

    @allow_unauthenticated
    async def head(self, token: str) -> None:
        await self._get(token, head=True)

    @allow_unauthenticated
    async def options(self, *args: Any) -> None:
        await self._options()


class JupyterLandingHandler(_JupyterUser, LandingRoutes, JupyterHandler):
    """The landing pages in the Jupyter server: a login shows private datasets too."""

    LOGIN_HINT = "Log in to Jupyter to also see the private datasets you may read."

    @allow_unauthenticated
    async def get(self, rest: str | None) -> None:
        await self._get(rest, head=False)

    @allow_unauthenticated
    async def head(self, rest: str | None) -> None:
        await self._get(rest, head=True)

    @allow_unauthenticated
    async def options(self, *args: Any) -> None:
        await self._options()


class _JupyterApi(ApiRoutes, JupyterHandler):
    """REST routes in the Jupyter server: a login is required (XSRF as jupyter_server)."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.current_user is None:
            raise web.HTTPError(403, "log in to Jupyter to use the wkjupyter API")

    def actor_name(self) -> str:
        return _catalog_user(self)

    def get_login_url(self) -> str:
        # @web.authenticated redirects an anonymous GET to the login page; an API refuses.
        if self.current_user is None:
            raise web.HTTPError(403, "log in to Jupyter to use the wkjupyter API")
        return str(super().get_login_url())


def _logged_in(cls: type[ApiRoutes]) -> type[ApiRoutes]:
    """``cls`` for Jupyter, every method ``@web.authenticated``: jupyter_server then knows
    them protected (no JupyterServerAuthWarning when it requires logins everywhere)."""
    methods = {
        name: web.authenticated(vars(cls)[name])
        for name in ("get", "post", "patch", "delete")
        if name in vars(cls)
    }
    return type(f"Jupyter{cls.__name__}", (cls, _JupyterApi), methods)


JUPYTER_API: dict[str, type[ApiRoutes]] = {role: _logged_in(cls) for role, cls in API_ROLES.items()}
