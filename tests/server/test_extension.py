"""The Jupyter server extension in a real jupyter_server, with pytest-jupyter.

The server runs on the test's own event loop (``reference/jupyter-and-clients.md`` §3): the
tests are ``async`` and run blocking clients (zarr-python) with ``asyncio.to_thread``; a
blocking call on the test thread would deadlock the server. Two base URLs: pytest-jupyter's
default ``/a%40b/`` (an escaped character in the prefix) and ``/``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import zarr
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.utils import JupyterServerAuthWarning

# tests/conftest.py's ``http_server`` (a static file server factory) shadows pytest-jupyter's
# tornado server of the same name, which jp_fetch needs: bring it back in this module.
from pytest_jupyter.pytest_tornasync import http_server  # noqa: F401
from traitlets.config import Config

from wkjupyter.errors import PermissionDeniedError
from wkjupyter.hub import Hub
from wkjupyter.server.extension import WkJupyter
from wkjupyter.server.runtime import info_path, read_server_info

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from jupyter_server.serverapp import ServerApp
    from tornado.httpclient import HTTPResponse

OWNER = "owner"
VIEWER = "v"


@dataclass
class Prepared:
    """A SQLite catalog with ``pub`` (public) and ``priv`` (private), both the demo OME-Zarr."""

    url: str
    data_dir: Path
    source: Path  # the OME-Zarr both datasets read
    hub: Hub


@pytest.fixture
def prepared(tmp_path: Path, demo_sources: dict[str, Path]) -> Iterator[Prepared]:
    data_dir = tmp_path / "wkjupyter"
    url = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    hub = Hub(url, OWNER, data_dir=data_dir, public_url="http://example.invalid/")
    source = demo_sources["ome-zarr"]
    hub.add_remote(str(source), name="pub", public=True, tags=["demo"])
    hub.add_remote(str(source), name="priv", public=False)
    hub.add_user(VIEWER, "viewer")
    yield Prepared(url, data_dir, source, hub)
    hub.catalog.dispose()


@pytest.fixture
def server_app_options() -> dict[str, Any]:
    """Extra ``ServerApp`` options; tests parametrize this name to change them."""
    return {}


@pytest.fixture
def wk_user() -> str:
    """``WkJupyter.user``, the catalog user a Jupyter login acts as; tests parametrize it."""
    return OWNER


@pytest.fixture
def jp_server_config(
    prepared: Prepared, server_app_options: dict[str, Any], wk_user: str
) -> Config:
    return Config(
        {
            "ServerApp": {
                # pytest-jupyter adds jupyter_server_terminals unless told otherwise.
                "jpserver_extensions": {"wkjupyter": True, "jupyter_server_terminals": False},
                **server_app_options,
            },
            "WkJupyter": {
                "catalog_url": prepared.url,
                "catalog_dir": str(prepared.data_dir),
                "user": wk_user,
            },
        }
    )


@pytest.fixture(params=["/a%40b/", "/"], ids=["escaped-base", "root-base"])
def jp_base_url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def tornado_logging() -> Iterator[None]:
    """Undo ServerApp.init_logging, which renames tornado's loggers and hangs them under the
    "ServerApp" logger for the whole process. The next ServerApp (pytest-jupyter's cleanup
    makes one after every test) stops that logger propagating: later tests in this worker
    would lose tornado's records (tests/server/test_security.py's log checks)."""
    names = ("tornado", "tornado.access", "tornado.application", "tornado.general")
    saved = [
        (lg, lg.name, lg.parent, lg.propagate, lg.level) for lg in map(logging.getLogger, names)
    ]
    yield
    for logger, name, parent, propagate, level in saved:
        logger.name, logger.parent, logger.propagate = name, parent, propagate
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JUPYTERHUB_USER", "JUPYTERHUB_PUBLIC_URL", "WKJUPYTER_CATALOG_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fetch(jp_fetch: Any) -> Callable[..., Awaitable[HTTPResponse]]:
    """``fetch("wkjupyter", ..., auth=False)``: jp_fetch that returns errors, with or without
    the Jupyter token (``auth``)."""

    def call(*parts: str, auth: bool = True, headers: dict[str, str] | None = None, **kw: Any):
        headers = dict(headers or {})
        if not auth:
            headers["Authorization"] = ""
        return jp_fetch(*parts, headers=headers, raise_error=False, **kw)

    return call


def body_of(response: HTTPResponse) -> Any:
    return json.loads(response.body) if response.body else None


# -- the extension is installed -----------------------------------------------------------------


async def test_extension_is_enabled_and_loaded(jp_serverapp: ServerApp, prepared: Prepared) -> None:
    manager = jp_serverapp.extension_manager
    package = manager.extensions["wkjupyter"]
    assert package.enabled
    assert package.validate()
    assert manager.linked_extensions["wkjupyter"]
    (app,) = manager.extension_apps["wkjupyter"]
    assert isinstance(app, WkJupyter)
    assert (app.catalog_url, app.user) == (prepared.url, OWNER)
    api = jp_serverapp.web_app.settings["wkjupyter_api"]
    assert api.owner == OWNER
    assert api.local_roots == [Path(jp_serverapp.root_dir)]


async def test_runtime_file_while_running(
    jp_serverapp: ServerApp, jp_runtime_dir: Path, prepared: Prepared, jp_base_url: str
) -> None:
    await jp_serverapp._post_start()  # pytest-jupyter never runs the IOLoop's start hook
    path = info_path(os.getpid())
    assert path.parent == jp_runtime_dir
    doc = json.loads(path.read_text())
    assert doc["url"] == jp_serverapp.connection_url
    assert doc["url"].endswith(f":{jp_serverapp.port}{jp_base_url}")
    assert (doc["catalog_url"], doc["data_dir"]) == (prepared.url, str(prepared.data_dir))
    info = read_server_info(os.getpid())
    assert info is not None
    assert info.url == doc["url"]


# -- REST: a Jupyter login -----------------------------------------------------------------------


async def test_rest_with_the_token(
    fetch: Any, prepared: Prepared, jp_http_port: int, jp_base_url: str
) -> None:
    response = await fetch("wkjupyter", "api", "datasets")
    assert response.code == 200
    doc = body_of(response)
    assert [d["name"] for d in doc["datasets"]] == ["priv", "pub"]  # the owner sees all
    root = f"http://127.0.0.1:{jp_http_port}{jp_base_url}wkjupyter/"
    assert doc["datasets"][1]["zarr_url"] == f"{root}zarr/pub/"

    # A token-authenticated POST/PATCH needs no XSRF token.
    response = await fetch(
        "wkjupyter", "api", "datasets", "pub", method="PATCH", body='{"add_tags": ["x"]}'
    )
    assert (response.code, body_of(response)["tags"]) == (200, ["demo", "x"])
    assert set(prepared.hub.dataset("pub").tags) == {"demo", "x"}
    body = json.dumps({"dataset": "priv", "label": "r"})
    response = await fetch("wkjupyter", "api", "links", method="POST", body=body)
    assert response.code == 201
    link = body_of(response)
    assert link["url"].startswith(f"{root}links/")
    assert prepared.hub.link(link["id"]).label == "r"

    token = link["url"].removeprefix(f"{root}links/").strip("/")
    response = await fetch("wkjupyter", "links", token, "zarr", ".zgroup", auth=False)
    assert response.code == 200

    response = await fetch("wkjupyter", "api", "datasets", "nope")
    assert response.code == 404
    with pytest.raises(KeyError) as err:
        prepared.hub.dataset("nope")
    assert body_of(response)["message"] == str(err.value)


def cookie_of(response: HTTPResponse) -> str:
    """The cookies a response sets, as a request's Cookie header."""
    return "; ".join(c.split(";", 1)[0] for c in response.headers.get_list("Set-Cookie"))


async def test_browser_session_needs_xsrf(fetch: Any, jp_serverapp: ServerApp) -> None:
    """A login cookie alone (what a forged cross-site form would carry) may not change
    anything; with jupyter_server's XSRF token it may, as JupyterLab's requests do."""
    token = jp_serverapp.identity_provider.token
    login = await fetch("wkjupyter", "api", "datasets", params={"token": token}, auth=False)
    xsrf = await fetch("login", auth=False)
    session = cookie_of(login)
    assert session.startswith("username-")
    args = ("wkjupyter", "api", "datasets", "pub")
    body = '{"add_tags": ["x"]}'
    headers = {"Cookie": session}
    response = await fetch(*args, method="PATCH", body=body, headers=headers, auth=False)
    assert response.code == 403
    assert "'_xsrf' argument missing" in body_of(response)["message"]
    assert (await fetch(*args, headers=headers, auth=False)).code == 200  # reading is fine

    both = f"{session}; {cookie_of(xsrf)}"
    headers = {"Cookie": both, "X-XSRFToken": cookie_of(xsrf).removeprefix("_xsrf=")}
    response = await fetch(*args, method="PATCH", body=body, headers=headers, auth=False)
    assert response.code == 200
    assert body_of(response)["tags"] == ["demo", "x"]


@pytest.mark.parametrize("wk_user", [VIEWER])
async def test_login_acts_as_the_configured_user(fetch: Any, prepared: Prepared) -> None:
    response = await fetch("wkjupyter", "api", "datasets")
    assert [d["name"] for d in body_of(response)["datasets"]] == ["pub"]  # a viewer's view
    body = '{"add_tags": ["x"]}'
    response = await fetch("wkjupyter", "api", "datasets", "pub", method="PATCH", body=body)
    viewer = Hub(prepared.url, VIEWER, data_dir=prepared.data_dir)
    with pytest.raises(PermissionDeniedError) as err:
        viewer.dataset("pub").tags.add("x")
    viewer.catalog.dispose()
    assert (response.code, body_of(response)["message"]) == (403, str(err.value))
    assert (await fetch("wkjupyter", "zarr", "priv", ".zgroup")).code == 404


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", '{"urls": ["x"]}'), ("PATCH", '{"public": false}')],
)
async def test_rest_without_login_is_refused(
    fetch: Any, prepared: Prepared, method: str, body: str | None
) -> None:
    path = ("wkjupyter", "api", "datasets") + (("pub",) if method == "PATCH" else ())
    response = await fetch(*path, method=method, body=body, auth=False)
    assert response.code == 403
    assert set(body_of(response)) == {"error", "message"}
    assert prepared.hub.dataset("pub").public


# -- data routes: no login needed ----------------------------------------------------------------


async def test_data_routes_are_anonymous(fetch: Any) -> None:
    response = await fetch("wkjupyter", "zarr", "pub", ".zgroup", auth=False)
    assert (response.code, body_of(response)) == (200, {"zarr_format": 2})
    private = await fetch("wkjupyter", "zarr", "priv", ".zgroup", auth=False)
    unknown = await fetch("wkjupyter", "zarr", "nope", ".zgroup", auth=False)
    assert private.code == unknown.code == 404
    assert private.body == unknown.body  # no existence leak
    head = await fetch(
        "wkjupyter", "zarr", "pub", "cells", "1", ".zarray", method="HEAD", auth=False
    )
    assert head.code == 200
    assert int(head.headers["Content-Length"]) > 0


async def test_logged_in_owner_reads_private(fetch: Any) -> None:
    response = await fetch("wkjupyter", "zarr", "priv", ".zgroup")
    assert response.code == 200
    response = await fetch("wkjupyter", "zarr3", "priv", "cells", "zarr.json")
    assert response.code == 200


LOGIN_REQUIRED = pytest.mark.parametrize(
    "server_app_options", [{"allow_unauthenticated_access": False}], ids=["login-required"]
)


@LOGIN_REQUIRED
async def test_every_endpoint_declares_its_authentication(
    jp_configurable_serverapp: Callable[[], ServerApp],
) -> None:
    """jupyter_server warns at start about endpoints that are neither @allow_unauthenticated
    nor @web.authenticated when it requires logins; none of them may be ours."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jp_configurable_serverapp()
    ours = [
        str(w.message)
        for w in caught
        if issubclass(w.category, JupyterServerAuthWarning) and "wkjupyter" in str(w.message)
    ]
    assert ours == []


@LOGIN_REQUIRED
async def test_data_routes_stay_public_when_login_is_required(
    fetch: Any, jp_serverapp: ServerApp
) -> None:
    assert jp_serverapp.allow_unauthenticated_access is False
    response = await fetch("wkjupyter", "zarr", "pub", ".zgroup", auth=False)
    assert response.code == 200
    response = await fetch("wkjupyter", "zarr", "pub", "", auth=False, method="OPTIONS")
    assert response.code == 204
    assert (await fetch("wkjupyter", "zarr", "priv", ".zgroup", auth=False)).code == 404
    for method in ("GET", "DELETE"):
        response = await fetch(
            "wkjupyter", "api", "datasets", "pub", method=method, auth=False, follow_redirects=False
        )
        assert response.code == 403  # JSON clients get a refusal, not the login page
        assert body_of(response)["error"] == "Forbidden"
    assert (await fetch("wkjupyter", "api", "datasets")).code == 200


async def test_cross_origin_data_request(fetch: Any) -> None:
    origin = {"Origin": "https://example.org"}
    response = await fetch("wkjupyter", "zarr", "pub", ".zattrs", auth=False, headers=origin)
    assert response.code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    missing = await fetch("wkjupyter", "zarr", "pub", "nope", ".zattrs", auth=False, headers=origin)
    assert missing.code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == "*"
    preflight = {**origin, "Access-Control-Request-Method": "GET"}
    preflight["Access-Control-Request-Headers"] = "range"
    response = await fetch(
        "wkjupyter", "zarr", "pub", ".zattrs", auth=False, headers=preflight, method="OPTIONS"
    )
    assert response.code == 204
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "range"


def data_url(port: int, base_url: str, path: str) -> str:
    return f"http://127.0.0.1:{port}{base_url}wkjupyter/{path}"


@pytest.mark.parametrize("jp_base_url", ["/"])
async def test_zarr_python_reads_over_http(
    http_server_client: Any, jp_http_port: int, jp_base_url: str, prepared: Prepared
) -> None:
    """Only at "/": aiohttp (yarl) normalises "/a%40b/" to "/a@b/", a path jupyter_server
    does not route, so no aiohttp client reaches a server with such a base URL at all."""
    url = data_url(jp_http_port, jp_base_url, "zarr/pub/cells/4/")

    def read() -> np.ndarray[Any, Any]:
        return zarr.open_array(url, mode="r", zarr_format=2)[...]

    served = await asyncio.to_thread(read)
    stored = zarr.open_array(prepared.source / "2", mode="r")[...]
    assert served.shape == (1, 16, 40, 48)
    np.testing.assert_array_equal(served[0], stored.reshape(served.shape[1:]))


async def test_blocking_client_reads_in_a_thread(
    http_server_client: Any, jp_http_port: int, jp_base_url: str
) -> None:
    url = data_url(jp_http_port, jp_base_url, "zarr/pub/cells/4/0/0/0/0")

    def read() -> tuple[int, bytes]:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()

    status, chunk = await asyncio.to_thread(read)
    assert status == 200
    assert chunk


# -- the jupyter-server-proxy entry point ---------------------------------------------------------


def test_server_proxy_entry_point() -> None:
    from importlib.metadata import entry_points

    from jupyter_server_proxy.config import get_entrypoint_server_processes

    (entry,) = [
        e for e in entry_points(group="jupyter_serverproxy_servers") if e.name == "wkjupyter-serve"
    ]
    assert entry.value == "wkjupyter.server.proxy:setup_wkjupyter_serve"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # jupyter-server-proxy only warns about a bad entry
        processes = {p.name: p for p in get_entrypoint_server_processes()}
    process = processes["wkjupyter-serve"]
    assert process.command[1:4] == ["-m", "wkjupyter.cli", "serve"]
    assert "{port}" in process.command
    assert (process.absolute_url, process.timeout) == (False, 30)
    assert process.launcher_entry.enabled
    assert process.launcher_entry.title == "wkjupyter server"


# -- under JupyterHub ------------------------------------------------------------------------------


class HubLikeIdentity(IdentityProvider):
    """Logins with the server's token are the hub user "alice" (as JupyterHub's provider
    names each user of a shared singleuser server)."""

    async def get_user(self, handler: Any) -> Any:
        user = super().get_user(handler)
        if inspect.isawaitable(user):
            user = await user
        return None if user is None else User(username="alice")


@pytest.mark.parametrize("jp_base_url", ["/"])
@pytest.mark.parametrize(
    "server_app_options", [{"identity_provider_class": HubLikeIdentity}], ids=["hub-identity"]
)
@pytest.mark.parametrize("wk_user", [OWNER])
async def test_users_from_login_act_as_themselves(
    fetch: Any, prepared: Prepared, jp_serverapp: ServerApp
) -> None:
    jp_serverapp.web_app.settings["wkjupyter_api"].users_from_login = True
    response = await fetch("wkjupyter", "api", "datasets")
    assert [d["name"] for d in body_of(response)["datasets"]] == ["pub"]  # alice's view
    assert (await fetch("wkjupyter", "zarr", "priv", ".zgroup")).code == 404
    assert dict(prepared.hub.users())["alice"] == "editor"  # registered on first use
    prepared.hub.dataset("priv").allowed_teams = []
    prepared.hub.add_team("lab")
    prepared.hub.add_member("lab", "alice", "viewer")
    prepared.hub.dataset("priv").allowed_teams = ["lab"]
    assert (await fetch("wkjupyter", "zarr", "priv", ".zgroup")).code == 200


async def test_plain_jupyter_logins_are_the_owner(fetch: Any, prepared: Prepared) -> None:
    # jupyter_server names every token-authenticated request anew; none becomes a user.
    for _ in range(3):
        assert (await fetch("wkjupyter", "api", "datasets")).code == 200
    assert sorted(name for name, _ in prepared.hub.users()) == [OWNER, VIEWER]


@pytest.mark.parametrize("jp_base_url", ["/"])
async def test_links_of_every_dataset(fetch: Any, prepared: Prepared) -> None:
    for name in ("pub", "priv"):
        body = json.dumps({"dataset": name, "expires": "1d", "label": name})
        assert (await fetch("wkjupyter", "api", "links", method="POST", body=body)).code == 201
    response = await fetch("wkjupyter", "api", "links")
    links = body_of(response)["links"]
    assert sorted(link["dataset"] for link in links) == ["priv", "pub"]
    assert all(link["url"].endswith("/") and "/wkjupyter/links/" in link["url"] for link in links)


# -- where a user lands ----------------------------------------------------------------------------


async def landing_names(fetch: Any, path: str, auth: bool) -> list[str]:
    response = await fetch(path, params={"format": "json"}, auth=auth)
    assert response.code == 200, response.body
    return [d["name"] for d in body_of(response)["datasets"]]


@pytest.mark.parametrize("path", ["wkjupyter/", "wkjupyter/zarr/", "wkjupyter/zarr3/"])
async def test_landing_pages_show_what_the_caller_may_see(
    fetch: Any, path: str, jp_http_port: int, jp_base_url: str
) -> None:
    assert await landing_names(fetch, path, auth=False) == ["pub"]
    assert await landing_names(fetch, path, auth=True) == ["priv", "pub"]  # the owner
    response = await fetch(path, auth=False, headers={"Accept": "text/html"})
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    root = f"http://127.0.0.1:{jp_http_port}{jp_base_url}wkjupyter/"
    tree = path.removeprefix("wkjupyter/") or "zarr/"
    assert f"{root}{tree}pub/" in page
    assert "/priv/" not in page
    assert "neuroglancer-demo.appspot.com/#!" in page
    response = await fetch(path, auth=False, headers={"Accept": "application/json"})
    doc = body_of(response)
    assert doc["entries"] == (["zarr/", "zarr3/"] if path == "wkjupyter/" else ["pub/"])
    assert doc["datasets"][0]["zarr_url"] == f"{root}zarr/pub/"
    assert doc["datasets"][0]["zarr3_url"] == f"{root}zarr3/pub/"


@pytest.mark.parametrize("wk_user", [VIEWER])
async def test_landing_page_of_a_viewer(fetch: Any, prepared: Prepared) -> None:
    assert await landing_names(fetch, "wkjupyter/", auth=True) == ["pub"]
    prepared.hub.dataset("priv").public = True
    assert await landing_names(fetch, "wkjupyter/zarr3/", auth=False) == ["priv", "pub"]


async def test_landing_page_escapes(fetch: Any, prepared: Prepared) -> None:
    prepared.hub.dataset("pub").description = "<img src=x onerror=alert(1)> & co"
    page = (await fetch("wkjupyter/", auth=False)).body.decode()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; co" in page


async def test_landing_redirects_to_the_slash(fetch: Any) -> None:
    for path, location in (("wkjupyter", "wkjupyter/"), ("wkjupyter/zarr", "zarr/")):
        response = await fetch(path, auth=False, follow_redirects=False)
        assert (response.code, response.headers["Location"]) == (301, location)


# -- logs --------------------------------------------------------------------------------------

LOGGED_SECRETS = {
    "token": "tok3n-abc",
    "password": "hunt3r2",
    "Secret": "s3cret-val",
    "X-Amz-Signature": "deadbeefcafe",
    "X-Amz-Credential": "AKIAEXAMPLE",
}


async def test_no_secret_query_parameter_reaches_the_jupyter_log(
    fetch: Any, jp_serverapp: ServerApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Jupyter scrubs only some names (``token``, ``key``, ... case-sensitively), and tornado's
    warnings not at all; the extension redacts the rest in every record of its server."""
    logger = jp_serverapp.log
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    params = {"format": "json", **LOGGED_SECRETS}
    try:
        for path, status in (
            ("wkjupyter/api/datasets", 403),  # refused: a warning with the URL
            ("wkjupyter/zarr/nope/.zgroup", 404),
            ("wkjupyter/zarr/pub/.zgroup", 200),
            ("wkjupyter/", 200),
            ("wkjupyter/no/such/route", 404),  # Jupyter's own 404
        ):
            response = await fetch(path, params=params, auth=False)
            assert response.code == status, path
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
    logged = [r.getMessage() for r in caplog.records]
    assert len([line for line in logged if "password=[secret]" in line]) >= 5, logged
    assert not [line for line in logged if any(v in line for v in LOGGED_SECRETS.values())]
