"""The REST API (``api/...``) of ``wkjupyter serve``: token auth, JSON shapes, side effects.

Every test runs a live standalone server on a fresh catalog holding the demo datasets as
``cells`` (OME-Zarr, public), ``n5`` (N5, public) and ``secret`` (OME-Zarr, private) and
checks the stored result through a :class:`~wkjupyter.hub.Hub`, not only the responses.
Error messages must equal the Python API's messages for the same failure. Permission tests
run on both backends.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pytest
import zarr

from tests.catalog.fixtures import BACKENDS
from tests.server.live import LiveServer
from wkjupyter.errors import WkJupyterError
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.servers import HTTPServerFactory

SECRET = "pw-Zq81-never-leaks"


@pytest.fixture
def backend() -> str:
    """SQLite unless a test parametrizes ``backend`` itself (the permission tests)."""
    return "sqlite"


@dataclass
class Rest:
    """A live server, a Hub on its catalog (as the admin "owner"), and every body seen."""

    server: LiveServer
    hub: Hub
    demo: Path  # the allowed local root with the demo datasets
    outside: Path  # a directory outside the allowed roots
    empty: Path  # an allowed directory holding nothing
    seen: list[bytes] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = "",
        server: LiveServer | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); ``token=""`` uses the server's, None sends none."""
        server = server or self.server
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(server.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"token {token or server.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
        self.seen.append(text)
        return status, json.loads(text) if text else None

    def names(self, query: str = "") -> tuple[list[str], int]:
        status, doc = self.call("GET", f"api/datasets{query}")
        assert status == 200, doc
        return [d["name"] for d in doc["datasets"]], doc["total"]


@pytest.fixture
def rest(catalog_url: str, tmp_path: Path, demo_sources: dict[str, Path]) -> Iterator[Rest]:
    demo = demo_sources["ome-zarr"].parent
    (tmp_path / "outside").mkdir()
    (empty := tmp_path / "allowed" / "empty").mkdir(parents=True)
    hub = Hub(catalog_url, "owner", data_dir=tmp_path, public_url="http://example.invalid/")
    ome = str(demo_sources["ome-zarr"])
    hub.add_remote(ome, name="cells", tags=["em", "demo"], public=True, description="cortex")
    hub.add_remote(str(demo_sources["n5"]), name="n5", tags=["n5"], public=True)
    hub.add_remote(ome, name="secret", tags=["em"], public=False)
    roots = [demo, tmp_path / "allowed"]
    with LiveServer(catalog_url, tmp_path, owner="owner", local_roots=roots) as server:
        yield Rest(server, hub, demo, tmp_path / "outside", empty)
    hub.catalog.dispose()


def message_of(call: Callable[[], object]) -> str:
    """The message of the error the Python API raises for ``call``."""
    with pytest.raises((WkJupyterError, ValueError, KeyError)) as info:
        call()
    return str(info.value)


# -- datasets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "search", "tags", "public"),
    [
        ("", None, None, None),
        ("?search=cortex", "cortex", None, None),
        ("?search=CELLS", "CELLS", None, None),  # layer names are searched too
        ("?tag=em", None, ["em"], None),
        ("?tag=em&tag=demo", None, ["em", "demo"], None),
        ("?public=false", None, None, False),
        ("?public=true&tag=em", None, ["em"], True),
    ],
)
def test_list_filters_as_the_hub(
    rest: Rest, query: str, search: str | None, tags: list[str] | None, public: bool | None
) -> None:
    names, total = rest.names(query)
    expected = [s["name"] for s in rest.hub.summaries(search=search, tags=tags, public=public)]
    assert expected
    assert names == expected
    assert total == len(expected)


def test_list_pages_and_urls(rest: Rest) -> None:
    assert rest.names() == (["cells", "n5", "secret"], 3)
    assert rest.names("?limit=1&offset=1") == (["n5"], 3)
    _, doc = rest.call("GET", "api/datasets?tag=n5")
    (n5,) = doc["datasets"]
    assert n5["zarr_url"] == f"{rest.server.url}zarr/n5/"
    assert n5["zarr3_url"] == f"{rest.server.url}zarr3/n5/"
    assert n5["layers"] == ["raw", "segmentation"]
    assert (n5["public"], n5["owner"], n5["tags"]) == (True, "owner", ["n5"])


def test_get_one_dataset(rest: Rest) -> None:
    status, doc = rest.call("GET", "api/datasets/cells")
    assert status == 200
    assert (doc["name"], doc["description"], doc["public"]) == ("cells", "cortex", True)
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert list(layers) == ["cells", "segmentation"]
    assert layers["cells"]["category"] == "color"
    assert layers["segmentation"]["dtype"] == "uint32"
    assert layers["cells"]["mags"] == ["1", "2", "4"]
    assert layers["cells"]["bbox"] == {"offset": [0, 0, 0], "shape": [64, 160, 192]}
    assert layers["cells"]["voxel_size"] == {"zyx": [40.0, 8.0, 8.0], "unit": "nanometer"}
    group = zarr.open_group(doc["zarr_url"], mode="r", zarr_format=2)
    assert group["cells/4"].shape == (1, 16, 40, 48)


def test_patch_tags_description_public(rest: Rest) -> None:
    def patch(**changes: Any) -> dict[str, Any]:
        status, doc = rest.call("PATCH", "api/datasets/cells", changes)
        assert status == 200, doc
        return doc

    assert patch(tags=["b", "A"])["tags"] == ["a", "b"]
    assert patch(add_tags=["c", "a"])["tags"] == ["a", "b", "c"]
    assert patch(remove_tags=["b", "zzz"], description="layer 5")["tags"] == ["a", "c"]
    cells = rest.hub.dataset("cells")
    assert (set(cells.tags), cells.description) == ({"a", "c"}, "layer 5")

    assert patch(public=False)["public"] is False
    assert rest.server.get("zarr/cells/.zgroup")[0] == 404
    assert rest.hub.dataset("cells").public is False
    patch(public=True)
    assert rest.server.get("zarr/cells/.zgroup")[0] == 200


def test_rename_keeps_the_old_name(rest: Rest) -> None:
    status, doc = rest.call("PATCH", "api/datasets/cells", {"name": "cortex"})
    assert (status, doc["name"]) == (200, "cortex")
    assert doc["zarr_url"].endswith("/zarr/cortex/")
    assert rest.call("GET", "api/datasets/cells")[1]["name"] == "cortex"
    assert rest.hub.dataset("cells").name == "cortex"
    assert rest.server.get("zarr/cortex/.zgroup")[0] == 200
    assert rest.server.get("zarr/cells/.zgroup")[0] == 200


def test_delete(rest: Rest) -> None:
    assert rest.call("DELETE", "api/datasets/n5") == (204, None)
    assert rest.call("GET", "api/datasets/n5")[0] == 404
    assert [d.name for d in rest.hub.datasets()] == ["cells", "secret"]
    assert rest.server.get("zarr/n5/.zgroup")[0] == 404


# -- import and explore ------------------------------------------------------------------------


def test_import_local_is_readable_once_public(rest: Rest) -> None:
    source = rest.demo / "cells.ome.zarr"
    body = {"urls": [str(source)], "name": "imported", "tags": ["new"], "description": "d"}
    status, doc = rest.call("POST", "api/datasets", body)
    assert status == 201, doc
    assert (doc["name"], doc["public"], doc["tags"]) == ("imported", False, ["new"])
    assert any(step["outcome"] == "ok" for step in doc["steps"])
    assert rest.hub.dataset("imported").description == "d"
    assert rest.server.get("zarr/imported/.zgroup")[0] == 404

    rest.call("PATCH", "api/datasets/imported", {"public": True})
    served = zarr.open_array(f"{doc['zarr_url']}cells/2/", mode="r", zarr_format=2)
    stored = zarr.open_array(source / "1", mode="r")
    np.testing.assert_array_equal(served[0], stored[...].reshape(served.shape[1:]))


def _state(source: str) -> str:
    layers = [{"name": "x", "type": "image", "source": source}]
    return "https://neuroglancer-demo.appspot.com/#!" + quote(json.dumps({"layers": layers}))


@pytest.mark.parametrize(
    "form",
    ["path", "file-url", "dot-dot", "relative", "ng-prefix", "ng-pipeline", "ng-state"],
)
def test_import_outside_allowed_roots_is_refused(rest: Rest, form: str) -> None:
    target = rest.outside / "data.zarr"
    url = {
        "path": str(target),
        "file-url": target.as_uri(),
        "dot-dot": "/".join([str(rest.demo), *[".."] * len(rest.demo.parts)]) + str(target),
        # explore reads a relative path from the server's working directory
        "relative": os.path.relpath(target),
        "ng-prefix": "zarr://" + target.as_uri(),
        "ng-pipeline": target.as_uri() + "|zarr2:",
        "ng-state": _state("zarr://" + target.as_uri()),
    }[form]
    for route in ("api/datasets", "api/explore"):
        status, doc = rest.call("POST", route, {"urls": [url]})
        assert status == 403, doc
        assert "is outside the directories this server may import from" in doc["message"]
        assert str(rest.demo) in doc["message"]
        assert "allowed_local_roots" in doc["message"]
    assert rest.names()[1] == 3


def test_explore(rest: Rest) -> None:
    status, doc = rest.call("POST", "api/explore", {"urls": str(rest.demo / "cells.n5")})
    assert (status, doc["found"]) == (200, True)
    assert [layer["name"] for layer in doc["datasource"]["dataLayers"]] == ["raw", "segmentation"]
    assert {s["format"] for s in doc["steps"] if s["outcome"] == "ok"} == {"n5"}

    status, doc = rest.call("POST", "api/explore", {"urls": [str(rest.empty)]})
    assert (status, doc["found"], doc["datasource"]) == (200, False, None)
    assert doc["steps"]
    assert {s["outcome"] for s in doc["steps"]} <= {"no match", "failed"}
    assert all(s["url"] == str(rest.empty) for s in doc["steps"])


def test_import_of_nothing_is_422(rest: Rest) -> None:
    status, doc = rest.call("POST", "api/datasets", {"urls": [str(rest.empty)]})
    assert status == 422
    assert doc["message"] == message_of(lambda: rest.hub.add_remote(str(rest.empty)))
    assert doc["message"].startswith("nothing to import")


def test_credentials_never_leave_the_server(
    rest: Rest, http_server: HTTPServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    remote = http_server(rest.demo, basic_auth=("reader", SECRET))
    url = f"{remote.url}/cells.ome.zarr/"
    status, doc = rest.call("POST", "api/datasets", {"urls": [url]})
    assert status == 422
    assert "401" in doc["message"]
    credential = {"kind": "http", "username": "reader", "password": SECRET}
    status, doc = rest.call("POST", "api/explore", {"urls": [url], "credential": credential})
    assert (status, doc["found"]) == (200, True)
    status, doc = rest.call(
        "POST", "api/datasets", {"urls": [url], "name": "remote", "credential": credential}
    )
    assert status == 201, doc
    rest.call("GET", "api/datasets")
    rest.call("GET", "api/datasets/remote")
    _, link = rest.call("POST", "api/links", {"dataset": "remote"})
    rest.call("GET", "api/links?dataset=remote")
    for path in ("datasource-properties.json", ".zattrs", ".zmetadata", "cells/1/.zarray"):
        status, _, body = rest.server.get(
            f"zarr/remote/{path}", {"Authorization": f"token {rest.server.token}"}
        )
        assert status == 200
        rest.seen.append(body)
    status, _, chunk = rest.server.get(
        link["zarr_url"].removeprefix(rest.server.url) + "cells/1/0/0/0/0"
    )
    assert status == 200  # read with the stored credential
    assert chunk

    basic = base64.b64encode(f"reader:{SECRET}".encode())
    stored = [path.read_bytes() for path in tmp_path.glob("catalog.sqlite*")]  # + WAL
    assert stored
    for text in [*rest.seen, *stored, caplog.text.encode()]:
        assert SECRET.encode() not in text
        assert basic not in text
    assert [c.kind for c in rest.hub.credentials()] == ["http"]  # stored, encrypted


# -- links -------------------------------------------------------------------------------------


def test_link_lifecycle(rest: Rest) -> None:
    body = {"dataset": "secret", "expires": "1d", "label": "reviewer", "layers": ["cells"]}
    status, link = rest.call("POST", "api/links", body)
    assert status == 201, link
    assert (link["dataset"], link["label"], link["layers"]) == ("secret", "reviewer", ["cells"])
    assert (link["status"], link["revoked"], link["use_count"]) == ("active", False, 0)
    assert link["expires_at"] is not None
    token = link["url"].removeprefix(f"{rest.server.url}links/").strip("/")
    assert rest.hub.resolve_token(token) is not None
    assert link["zarr_url"] == f"{link['url']}zarr/"
    relative = link["zarr_url"].removeprefix(rest.server.url)

    assert rest.server.get(link["url"].removeprefix(rest.server.url))[0] == 200
    assert rest.server.get(f"{relative}cells/1/.zarray")[0] == 200
    assert rest.server.get(f"{relative}segmentation/1/.zarray")[0] == 404  # not granted
    assert rest.server.get("zarr/secret/.zgroup")[0] == 404  # the dataset stays private
    served = zarr.open_array(f"{link['zarr_url']}cells/4/", mode="r", zarr_format=2)
    assert served.shape == (1, 16, 40, 48)
    rest.server.flush_uses()

    status, listing = rest.call("GET", "api/links?dataset=secret")
    assert [(lk["id"], lk["url"]) for lk in listing["links"]] == [(link["id"], link["url"])]
    assert listing["links"][0]["use_count"] > 0
    assert rest.call("GET", "api/links?dataset=cells")[1] == {"links": []}

    ident = link["id"]
    status, changed = rest.call("PATCH", f"api/links/{ident}", {"expires": "2d", "label": "r2"})
    assert status == 200
    assert changed["label"] == rest.hub.link(ident).label == "r2"
    assert changed["expires_at"] > link["expires_at"]
    assert rest.call("PATCH", f"api/links/{ident}", {"expires": None})[1]["expires_at"] is None

    assert rest.call("DELETE", f"api/links/{ident}") == (204, None)
    status, revoked = rest.call("GET", f"api/links/{ident}")
    assert (revoked["revoked"], revoked["status"]) == (True, "revoked")
    assert rest.hub.link(ident).revoked
    assert rest.server.get(f"{relative}cells/1/.zarray")[0] == 404
    assert rest.server.get(link["url"].removeprefix(rest.server.url))[0] == 404


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "api/datasets", b"{nope", 400, "not JSON"),
        ("POST", "api/links", b"[1]", 400, "must be a JSON object"),
        ("POST", "api/datasets", b"{}", 400, "'urls' must be"),
        ("POST", "api/explore", b'{"urls": []}', 400, "'urls' must be"),
        ("POST", "api/explore", b'{"urls": "x", "credential": {"kind": "ftp"}}', 400, "'kind'"),
        ("PATCH", "api/datasets/cells", b'{"colour": 1}', 400, "unknown fields ['colour']"),
        ("PATCH", "api/datasets/cells", b'{"public": "yes"}', 400, "'public' must be true"),
        ("PATCH", "api/links/1", b'{"dataset": "x"}', 400, "unknown fields ['dataset']"),
        ("POST", "api/links", b"{}", 400, "'dataset'"),
        ("GET", "api/datasets?public=maybe", None, 400, "'public' must be"),
        ("GET", "api/datasets?limit=-1", None, 400, "'limit' must be"),
        ("GET", "api/datasets/nope", None, 404, "no dataset 'nope'"),
        ("PATCH", "api/datasets/nope", b'{"public": true}', 404, "no dataset 'nope'"),
        ("DELETE", "api/datasets/nope", None, 404, "no dataset 'nope'"),
        ("GET", "api/links?dataset=nope", None, 404, "no dataset 'nope'"),
        ("GET", "api/links/99", None, 404, "no link 99"),
        pytest.param("POST", "api/datasets", b" " * (2 << 20), 413, "larger", id="too-large"),
    ],
)
def test_client_errors(
    rest: Rest, method: str, path: str, body: bytes | None, status: int, needle: str
) -> None:
    got, doc = rest.call(method, path, raw=body)
    assert got == status, doc
    assert set(doc) == {"error", "message"}
    assert needle in doc["message"]


def test_messages_equal_the_python_api(rest: Rest) -> None:
    hub = rest.hub
    cases = [
        ("GET", "api/datasets/nope", None, 404, lambda: hub.dataset("nope")),
        ("PATCH", "api/datasets/cells", {"name": "n5"}, 409,
         lambda: hub.dataset("cells").rename("n5")),
        ("PATCH", "api/datasets/cells", {"name": "Bad name!"}, 400,
         lambda: hub.dataset("cells").rename("Bad name!")),
        ("PATCH", "api/datasets/cells", {"tags": ["-x"]}, 400,
         lambda: hub.dataset("cells").tags.set(["-x"])),
        ("POST", "api/links", {"dataset": "cells", "expires": "soon"}, 400,
         lambda: hub.dataset("cells").create_link(expires="soon")),
        ("POST", "api/links", {"dataset": "cells", "layers": ["nope"]}, 404,
         lambda: hub.dataset("cells").create_link(layers=["nope"])),
    ]  # fmt: skip
    for method, path, body, status, python in cases:
        got, doc = rest.call(method, path, body)
        expected = message_of(python)
        assert (got, doc["message"]) == (status, expected), path
        assert doc["error"] != "InternalError"


# -- who may do what ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_viewer_is_read_only(rest: Rest, catalog_url: str, tmp_path: Path) -> None:
    rest.hub.add_user("v", "viewer")
    viewer = Hub(catalog_url, "v", data_dir=tmp_path)
    source = str(rest.demo / "cells.n5")
    denied = [
        ("PATCH", "api/datasets/cells", {"add_tags": ["x"]},
         lambda: viewer.dataset("cells").tags.add("x")),
        ("PATCH", "api/datasets/cells", {"public": False},
         lambda: setattr(viewer.dataset("cells"), "public", False)),
        ("DELETE", "api/datasets/cells", None, lambda: viewer.dataset("cells").delete()),
        ("POST", "api/links", {"dataset": "cells"}, lambda: viewer.dataset("cells").create_link()),
        ("POST", "api/datasets", {"urls": [source]}, lambda: viewer.add_remote(source)),
    ]  # fmt: skip
    with LiveServer(catalog_url, tmp_path, owner="v", local_roots=[rest.demo]) as server:
        assert rest.call("GET", "api/datasets", server=server)[1]["total"] == 2
        status, doc = rest.call("GET", "api/datasets/secret", server=server)
        assert (status, doc["message"]) == (404, message_of(lambda: viewer.dataset("secret")))
        for method, path, body, python in denied:
            status, doc = rest.call(method, path, body, server=server)
            assert status == 403, (path, doc)
            assert doc == {"error": "PermissionDeniedError", "message": message_of(python)}
            assert "v (viewer) may not" in doc["message"]
    cells = rest.hub.dataset("cells")
    assert (set(cells.tags), cells.public, len(cells.links())) == ({"em", "demo"}, True, 0)
    assert len(rest.hub.datasets()) == 3
    viewer.catalog.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_editor_may_not_administer_others_datasets(
    rest: Rest, catalog_url: str, tmp_path: Path
) -> None:
    rest.hub.add_user("e", "editor")
    editor = Hub(catalog_url, "e", data_dir=tmp_path)
    with LiveServer(catalog_url, tmp_path, owner="e", local_roots=[rest.demo]) as server:
        status, doc = rest.call("PATCH", "api/datasets/cells", {"public": False}, server=server)
        expected = message_of(lambda: setattr(editor.dataset("cells"), "public", False))
        assert (status, doc["message"]) == (403, expected)
        assert rest.call("GET", "api/datasets/secret", server=server)[0] == 404
        body = {"urls": [str(rest.demo / "cells.n5")], "name": "mine"}
        assert rest.call("POST", "api/datasets", body, server=server)[0] == 201
        assert rest.call("DELETE", "api/datasets/mine", server=server)[0] == 204
    assert rest.hub.dataset("cells").public is True
    editor.catalog.dispose()


@pytest.mark.parametrize("token", [None, "wrong"])
def test_token_is_required(rest: Rest, token: str | None) -> None:
    routes = [
        ("GET", "api/datasets"),
        ("GET", "api/datasets/cells"),
        ("POST", "api/datasets"),
        ("PATCH", "api/datasets/cells"),
        ("DELETE", "api/datasets/cells"),
        ("POST", "api/explore"),
        ("GET", "api/links"),
        ("DELETE", "api/links/1"),
    ]
    for method, path in routes:
        body = {"urls": [str(rest.demo)], "public": False} if method in ("POST", "PATCH") else None
        status, doc = rest.call(method, path, body, token=token)
        assert status == 403, (method, path)
        assert doc["error"] == "Forbidden"
        assert "needs the server's token" in doc["message"]
    assert rest.names() == (["cells", "n5", "secret"], 3)  # nothing happened
    assert rest.hub.dataset("cells").public
    assert rest.server.get("zarr/cells/.zgroup")[0] == 200  # data routes need no token


def test_bearer_scheme_works_too(rest: Rest) -> None:
    request = urllib.request.Request(
        f"{rest.server.url}api/datasets", headers={"Authorization": f"Bearer {rest.server.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["total"] == 3
