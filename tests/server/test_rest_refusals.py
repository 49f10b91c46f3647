"""REST explore and import refuse before fetching: viewers (explore is the first step of an
import and makes the server fetch URLs), and URLs with a password in them (the password
would be lost on import and ends up in logs). A real upstream HTTP server records that no
request reached it; both catalog backends."""

from __future__ import annotations

import http.client
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.catalog.fixtures import BACKENDS
from tests.server.live import LiveServer
from wkjupyter.errors import NothingFoundError, PermissionDeniedError
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import HTTPServerFactory

SECRET = "pw-Zq81-never-leaks"


def post(server: LiveServer, route: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    try:
        headers = {"Authorization": f"token {server.token}"}
        conn.request("POST", url.path + route, json.dumps(body).encode(), headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw), raw
    finally:
        conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_viewers_may_not_make_the_server_fetch(
    catalog_url: str,
    tmp_path: Path,
    demo_sources: dict[str, Path],
    http_server: HTTPServerFactory,
) -> None:
    upstream = http_server(demo_sources["ome-zarr"].parent)
    url = upstream.url_for("cells.ome.zarr")
    hub = Hub(catalog_url, "owner", data_dir=tmp_path)
    hub.add_user("v", "viewer")
    viewer = Hub(catalog_url, "v", data_dir=tmp_path)
    with pytest.raises(PermissionDeniedError) as info:
        viewer.add_remote(hub.explore(url))
    expected = str(info.value)
    upstream.reset_log()
    with LiveServer(catalog_url, tmp_path, owner="v") as server:
        for route in ("api/explore", "api/datasets"):
            status, doc, _ = post(server, route, {"urls": [url]})
            assert status == 403, doc
            assert doc["error"] == "PermissionDeniedError"
            assert doc["message"].startswith(expected)
            assert "v (viewer) may not import datasets" in doc["message"]
    assert upstream.requests == []  # refused before any fetch
    assert hub.datasets() == []
    with LiveServer(catalog_url, tmp_path, owner="owner") as server:  # an admin may
        status, doc, _ = post(server, "api/explore", {"urls": [url]})
        assert (status, doc["found"]) == (200, True)
    assert upstream.requests
    viewer.catalog.dispose()
    hub.catalog.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_urls_with_a_password_are_refused_with_how_to_give_one(
    catalog_url: str,
    tmp_path: Path,
    demo_sources: dict[str, Path],
    http_server: HTTPServerFactory,
) -> None:
    upstream = http_server(demo_sources["ome-zarr"].parent, basic_auth=("reader", SECRET))
    plain = upstream.url_for("cells.ome.zarr")
    url = plain.replace("http://", f"http://reader:{SECRET}@")
    hub = Hub(catalog_url, "owner", data_dir=tmp_path)
    with pytest.raises(NothingFoundError) as info:
        hub.add_remote(url)
    python = str(info.value)
    assert "HttpCredential(username, password)" in python
    assert '"kind": "http"' in python
    with LiveServer(catalog_url, tmp_path, owner="owner") as server:
        status, doc, raw = post(server, "api/datasets", {"urls": [url], "name": "x"})
        assert (status, doc["message"]) == (422, python)
        status, doc, raw2 = post(server, "api/explore", {"urls": [url]})
        assert (status, doc["found"]) == (200, False)
        (step,) = doc["steps"]
        assert "give the user name and password as a credential" in step["message"]
        assert upstream.requests == []  # refused before any fetch
        assert SECRET.encode() not in raw + raw2
        assert SECRET not in python

        credential = {"kind": "http", "username": "reader", "password": SECRET}
        status, doc, _ = post(server, "api/datasets", {"urls": [plain], "credential": credential})
        assert status == 201, doc  # the way the message points to works
    assert [d.name for d in hub.datasets()] == ["cells"]
    assert [c.kind for c in hub.credentials()] == ["http"]
    hub.catalog.dispose()
