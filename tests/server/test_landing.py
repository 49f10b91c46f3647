"""Where a user lands: ``{base_url}wkjupyter/``, ``zarr/`` and ``zarr3/`` of ``wkjupyter serve``.

A browser gets an HTML page of the datasets the caller may see (their Zarr v2/v3 URLs, a
Neuroglancer link, zarr-python and xarray snippets); a JSON client the same as
``{"entries": [...], "datasets": [...]}``, the shape of the directory listings. Private
datasets stay invisible without the server's token. The extension's pages are tested in
test_extension.py.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import fsspec
import pytest

from tests.server.conftest import DATASETS, PRIVATE
from tests.server.live import fetch
from wkjupyter.catalog.core import Catalog
from wkjupyter.server.proxy import setup_wkjupyter_serve
from wkjupyter.server.standalone import BackgroundServer

if TYPE_CHECKING:
    from tests.server.conftest import Served

PUBLIC = sorted(DATASETS.values())  # ["n5", "ome-zarr", "precomputed"]
JSON_WAYS = [{"Accept": "application/json"}, {"query": "?format=json"}]


def get_json(served: Served, path: str, how: dict[str, str], **headers: str) -> Any:
    query = how.get("query", "")
    accept = {"Accept": how["Accept"]} if "Accept" in how else {}
    answer = fetch(served.server, path + query, **accept, **headers)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


def snippets(page: str) -> list[str]:
    """The Python snippets of a landing page, as a user copies them."""
    return [
        html.unescape(s) for s in re.findall(r'<pre class="python"><code>(.*?)</code>', page, re.S)
    ]


@pytest.mark.parametrize("how", JSON_WAYS, ids=["accept", "query"])
def test_root_json_lists_public_datasets(served: Served, how: dict[str, str]) -> None:
    doc = get_json(served, "", how)
    assert doc["entries"] == ["zarr/", "zarr3/"]
    assert [d["name"] for d in doc["datasets"]] == PUBLIC
    assert doc["total"] == len(PUBLIC)
    ome = next(d for d in doc["datasets"] if d["name"] == "ome-zarr")
    assert ome["zarr_url"] == f"{served.url}zarr/ome-zarr/"
    assert ome["zarr3_url"] == f"{served.url}zarr3/ome-zarr/"
    assert ome["layers"] == ["cells", "segmentation"]
    assert ome["public"] is True
    assert ome["neuroglancer_url"].startswith("https://neuroglancer-demo.appspot.com/#!")
    assert f"zarr2://{served.url}zarr/ome-zarr/cells/" in ome["neuroglancer_url"]


@pytest.mark.parametrize("tree", ["zarr", "zarr3"])
def test_tree_json_is_a_listing_of_datasets(served: Served, tree: str) -> None:
    doc = get_json(served, f"{tree}/", {"query": "?format=json"})
    assert doc["entries"] == [f"{name}/" for name in PUBLIC]
    assert [d["name"] for d in doc["datasets"]] == PUBLIC
    # The same answer as the data routes' listings to a HEAD, and CORS for browsers' viewers.
    head = fetch(served.server, f"{tree}/", "HEAD")
    assert head.status == 200
    assert head.headers["Access-Control-Allow-Origin"] == "*"
    assert int(head.headers["Content-Length"]) == len(fetch(served.server, f"{tree}/").body)


def test_the_server_token_sees_private_datasets(served: Served) -> None:
    token = {"Authorization": f"token {served.server.token}"}
    for path in ("", "zarr/", "zarr3/"):
        doc = get_json(served, path, {"query": "?format=json"}, **token)
        assert [d["name"] for d in doc["datasets"]] == sorted([*PUBLIC, PRIVATE])
        assert next(d for d in doc["datasets"] if d["name"] == PRIVATE)["public"] is False
    page = fetch(served.server, "", **token).body.decode()
    assert f"zarr/{PRIVATE}/" in page
    wrong = {"Authorization": f"token {served.server.token}x"}
    doc = get_json(served, "", {"query": "?format=json"}, **wrong)
    assert [d["name"] for d in doc["datasets"]] == PUBLIC


@pytest.mark.parametrize("path", ["", "zarr/", "zarr3/"])
def test_html_page_for_browsers(served: Served, path: str) -> None:
    answer = fetch(served.server, path, Accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Vary"] == "Accept"
    page = answer.body.decode()
    assert page.startswith("<!DOCTYPE html>")
    for name in PUBLIC:
        assert f"{served.url}zarr/{name}/" in page or path == "zarr3/"
        assert f"{served.url}zarr3/{name}/" in page or path == "zarr/"
    assert PRIVATE not in page
    assert "https://neuroglancer-demo.appspot.com/#!" in page
    assert "with the server's API token" in page  # says why private datasets are missing
    codes = snippets(page)
    assert any("zarr.open_group(" in code for code in codes)
    assert any("xr.open_zarr(" in code for code in codes)


def test_snippets_run(served: Served) -> None:
    """The copyable snippets work as they are, for both trees."""
    for path in ("zarr/", "zarr3/"):
        page = fetch(served.server, path).body.decode()
        codes = [c for c in snippets(page) if "ome-zarr/" in c]
        assert len(codes) >= 2, codes
        for code in codes:
            namespace: dict[str, Any] = {}
            exec(code, namespace)  # our own page's snippet
            assert namespace.get("group") is not None or namespace.get("ds") is not None


def test_names_and_descriptions_are_escaped(served: Served) -> None:
    ds = served.hub.dataset("n5")
    ds.description = '<script>alert("x")</script> & <b>bold</b>'
    try:
        page = fetch(served.server, "").body.decode()
        doc = get_json(served, "", {"query": "?format=json"})
    finally:
        ds.description = ""
    assert "<script>alert" not in page
    assert "<b>bold" not in page
    assert "&lt;script&gt;alert(" in page
    n5 = next(d for d in doc["datasets"] if d["name"] == "n5")
    assert n5["description"] == '<script>alert("x")</script> & <b>bold</b>'


def test_tree_page_lists_exactly_its_datasets_for_fsspec(served: Served) -> None:
    """fsspec's HTTP ``ls`` scrapes every link and bare URL of a page: the tree pages show the
    other URLs so that it still finds exactly the datasets."""
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    for tree in ("zarr", "zarr3"):
        listed = fs.ls(f"{served.url}{tree}/", detail=False)
        assert sorted(u.rstrip("/") for u in listed) == [f"{served.url}{tree}/{n}" for n in PUBLIC]


@pytest.mark.parametrize(("path", "location"), [("", "wkjupyter/"), ("zarr", "zarr/"),
                                                 ("zarr3", "zarr3/")])  # fmt: skip
def test_without_trailing_slash_redirects(served: Served, path: str, location: str) -> None:
    base = served.url.removesuffix("/") if not path else served.url
    answer = fetch(base, path + "?format=json")
    assert answer.status == 301
    assert answer.headers["Location"] == f"{location}?format=json"


def test_landing_under_a_base_url(served: Served) -> None:
    catalog = Catalog(f"sqlite:///{served.data_dir / 'catalog.sqlite'}", data_dir=served.data_dir)
    with BackgroundServer(catalog, owner="owner", base_url="/data/") as server:
        assert server.url.endswith("/data/wkjupyter/")
        doc = fetch(server.url, "?format=json").json()
        assert [d["name"] for d in doc["datasets"]] == PUBLIC
        assert doc["datasets"][0]["zarr_url"] == f"{server.url}zarr/n5/"
        page = fetch(server.url, "zarr3/").body.decode()
        assert f"{server.url}zarr3/ome-zarr/" in page
        assert fetch(server.url.replace("/data/", "/"), "").status == 404
    catalog.dispose()


def test_the_launcher_opens_the_landing_page(served: Served) -> None:
    """jupyter-server-proxy strips ``wkjupyter-serve/`` and serves the app at "/"."""
    entry = setup_wkjupyter_serve()["launcher_entry"]
    path = entry["path_info"].removeprefix("wkjupyter-serve/")
    answer = fetch(served.url.removesuffix("wkjupyter/"), path)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
