"""HTTP semantics of the data routes, as every Zarr client needs them (docs/architecture.md §6,
``reference/jupyter-and-clients.md`` §4): GET and HEAD everywhere, CORS on every answer,
byte ranges, strong ETags, directory redirects and listings, and 404 only for absent keys."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from tests.server.conftest import DATASETS, write_sparse_ome_zarr
from tests.server.live import Answer, LiveServer, fetch
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.server.conftest import Served
    from tests.servers import HTTPServerFactory, RangeHTTPServer

CHUNK = "zarr/ome-zarr/cells/1/0/0/0/0"
DOC = "zarr/ome-zarr/.zattrs"
EXPOSED = ("ETag", "Content-Length", "Content-Range")


def assert_cors(answer: Answer) -> None:
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {
        h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {h.lower() for h in EXPOSED} <= exposed


@pytest.fixture(scope="module")
def token(served: Served) -> str:
    return served.hub.dataset("ome-zarr").create_link(label="http semantics").token


@pytest.fixture(scope="module")
def sparse(served: Served) -> str:
    """A public dataset whose array has chunks that were never written."""
    path = write_sparse_ome_zarr(served.data_dir / "sparse.ome.zarr")
    return served.hub.add_remote(str(path), name="sparse", public=True).name


def crawl(server: LiveServer, root: str) -> list[str]:
    """Every listing, document and the first chunk of every array below ``root``."""
    found, todo = [], [root]
    while todo:
        directory = todo.pop()
        found.append(directory)
        listing = fetch(server, directory + "?format=json")
        assert listing.status == 200, directory
        for entry in listing.json()["entries"]:
            (todo if entry.endswith("/") else found).append(directory + entry)
        for name in (".zarray", "zarr.json"):
            if f"{directory}{name}" in found:
                doc = fetch(server, directory + name).json()
                if doc.get("node_type", "array") == "array":
                    prefix = "c/" if name == "zarr.json" else ""
                    found.append(directory + prefix + "/".join("0" * len(doc["shape"])))
    return found


# -- every route ------------------------------------------------------------------------------


def test_get_and_head_agree_on_every_route(served: Served, token: str) -> None:
    roots = [f"{tree}/{name}/" for tree in ("zarr", "zarr3") for name in DATASETS.values()]
    roots += [f"links/{token}/zarr/", f"links/{token}/zarr3/"]
    paths = [f"links/{token}/"] + [p for root in roots for p in crawl(served.server, root)]
    kinds = {p.rsplit("/", 1)[-1] or "listing" for p in paths}
    assert {".zgroup", ".zattrs", ".zmetadata", ".zarray", "zarr.json", "listing"} <= kinds
    assert {"datasource-properties.json", "0"} <= kinds
    for path in paths:
        get, head = fetch(served.server, path), fetch(served.server, path, "HEAD")
        assert (get.status, head.status) == (200, 200), path
        assert head.body == b"", path
        assert get.body, path
        assert get.headers["Content-Length"] == head.headers["Content-Length"] == str(len(get.body))
        for name in ("ETag", "Content-Type", "Cache-Control"):
            assert get.headers[name] == head.headers[name], (path, name)
        assert_cors(head)


@pytest.mark.parametrize("path", [DOC, CHUNK, "zarr3/ome-zarr/", "links/{token}/"])
def test_preflight(served: Served, token: str, path: str) -> None:
    path = path.format(token=token)
    asked = fetch(
        served.server,
        path,
        "OPTIONS",
        Origin="https://neuroglancer-demo.appspot.com",
        Access_Control_Request_Method="GET",
        Access_Control_Request_Headers="range",
    )
    plain = fetch(served.server, path, "OPTIONS", Origin="https://x.example")
    for answer in (asked, plain):
        assert answer.status == 204
        assert answer.body == b""
        assert_cors(answer)
        methods = {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "HEAD"} <= methods
        assert "range" in answer.headers["Access-Control-Allow-Headers"].lower()


# -- CORS on every status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "path", "headers"),
    [
        (200, DOC, {}),
        (206, CHUNK, {"Range": "bytes=0-9"}),
        (304, DOC, {"If-None-Match": "*"}),
        (400, "zarr/ome-zarr/cells/1/0/0/x/0", {}),
        (404, "zarr/no-such-dataset/.zattrs", {}),
        (404, "links/AAAAAAAAAAAAAAAAAAAAAA/zarr/.zattrs", {}),
        (416, DOC, {"Range": "bytes=99999-"}),
    ],
)
def test_cors_on_every_status(
    served: Served, status: int, path: str, headers: dict[str, str]
) -> None:
    for method in ("GET", "HEAD"):
        answer = fetch(served.server, path, method, **headers)
        assert answer.status == status
        assert_cors(answer)


@pytest.fixture
def upstream(
    demo_sources: dict[str, Path], http_server: HTTPServerFactory, tmp_path: Path
) -> Iterator[tuple[LiveServer, RangeHTTPServer]]:
    """The demo OME-Zarr on a RangeHTTPServer (to inject faults), served as ``remote``."""
    source = demo_sources["ome-zarr"]
    remote = http_server(source.parent)
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = Hub(url, "owner", data_dir=tmp_path, public_url="http://example.invalid/")
    hub.add_remote(remote.url_for(source.name), name="remote", public=True)
    with LiveServer(url, tmp_path) as server:
        yield server, remote
    hub.catalog.dispose()


@pytest.mark.parametrize(("fault", "status"), [(503, 503), (500, 503), (403, 502)])
def test_cors_on_upstream_failures(
    upstream: tuple[LiveServer, RangeHTTPServer], fault: int, status: int
) -> None:
    server, remote = upstream
    remote.faults["/"] = fault
    for path in ("zarr/remote/cells/.zattrs", "zarr3/remote/cells/1/c/0/0/0/0"):
        answer = fetch(server, path)
        assert answer.status == status, path
        assert_cors(answer)
        assert answer.json()["message"]


# -- Range ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHUNK, DOC, "zarr/n5/raw/1/0/0/0/0"])
@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 10), ("bytes=-5", -5, None), ("bytes=10-", 10, None)],
)
def test_single_range(served: Served, path: str, header: str, start: int, end: int | None) -> None:
    whole = fetch(served.server, path).body
    size = len(whole)
    expected = whole[start:end]
    first = start % size
    for method in ("GET", "HEAD"):
        answer = fetch(served.server, path, method, Range=header)
        assert answer.status == 206
        assert (
            answer.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
        )
        assert answer.headers["Content-Length"] == str(len(expected))
        assert answer.body == (expected if method == "GET" else b"")


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(served: Served, header: str) -> None:
    size = len(fetch(served.server, CHUNK).body)
    answer = fetch(served.server, CHUNK, Range=header)
    assert answer.status == 416
    assert answer.headers["Content-Range"] == f"bytes */{size}"
    assert "not satisfiable" in answer.json()["message"]


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=0-0, -1", "bytes=9-2", "items=0-5"])
def test_multi_or_malformed_range_serves_everything(served: Served, header: str) -> None:
    """_http.parse_range's contract: several ranges or a malformed one are ignored (200)."""
    whole = fetch(served.server, CHUNK)
    answer = fetch(served.server, CHUNK, Range=header)
    assert answer.status == 200
    assert answer.body == whole.body
    assert "Content-Range" not in answer.headers


# -- ETag and caching -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DOC, CHUNK, "zarr3/ome-zarr/cells/", "links/{token}/"])
def test_etag_and_if_none_match(served: Served, token: str, path: str) -> None:
    path = path.format(token=token)
    first = fetch(served.server, path)
    etag = first.headers["ETag"]
    assert etag[0] == etag[-1] == '"'  # strong: no W/ prefix
    assert fetch(served.server, path).headers["ETag"] == etag
    assert first.headers["Cache-Control"] == "no-cache"
    for header in (etag, "*", f'"other", {etag}', f"W/{etag}", f'"a",W/"b", {etag} '):
        for method in ("GET", "HEAD"):
            answer = fetch(served.server, path, method, If_None_Match=header)
            assert answer.status == 304, header
            assert answer.body == b""
            assert answer.headers["ETag"] == etag
            assert_cors(answer)
    stale = fetch(served.server, path, If_None_Match='"0123", "4567"')
    assert (stale.status, stale.body) == (200, first.body)


def test_etags_differ_between_chunks(served: Served) -> None:
    chunks = [CHUNK, "zarr/ome-zarr/cells/1/0/1/2/2", "zarr3/precomputed/image/1/c/0/0/0/0"]
    answers = [fetch(served.server, c) for c in chunks]
    assert len({a.body for a in answers}) == len({a.headers["ETag"] for a in answers}) == 3


# -- listings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("zarr/ome-zarr", "ome-zarr/"),
        ("zarr3/ome-zarr/cells", "cells/"),
        ("zarr/ome-zarr/cells/2", "2/"),
        ("zarr3/n5/raw/1", "1/"),
        ("zarr/ome-zarr?format=json", "ome-zarr/?format=json"),
        ("links/{token}", "{token}/"),
        ("links/{token}/zarr3/cells", "cells/"),
    ],
)
def test_listing_without_slash_redirects(
    served: Served, token: str, path: str, location: str
) -> None:
    path, location = path.format(token=token), location.format(token=token)
    for method in ("GET", "HEAD"):
        answer = fetch(served.server, path, method)
        assert answer.status == 301
        assert answer.headers["Location"] == location  # relative: works behind any prefix
        assert_cors(answer)


@pytest.mark.parametrize("path", ["zarr/ome-zarr/", "zarr3/n5/raw/", "zarr/ome-zarr/cells/1/"])
def test_listing_as_html_or_json(served: Served, path: str) -> None:
    html = fetch(served.server, path)
    assert html.headers["Content-Type"].startswith("text/html")
    assert "Accept" in html.headers["Vary"]
    by_query = fetch(served.server, path + "?format=json")
    by_accept = fetch(served.server, path, Accept="application/json")
    assert by_query.body == by_accept.body
    assert by_accept.headers["Content-Type"].startswith("application/json")
    for entry in by_query.json()["entries"]:
        assert f'href="{entry}"' in html.body.decode()
    assert html.headers["ETag"] != by_accept.headers["ETag"]


# -- honest 404 and 400 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "zarr/ome-zarr/zarr.json",
        "zarr/ome-zarr/cells/zarr.json",
        "zarr/ome-zarr/cells/1/zarr.json",
        "zarr3/ome-zarr/.zgroup",
        "zarr3/ome-zarr/cells/.zattrs",
        "zarr3/ome-zarr/cells/1/.zarray",
        "zarr/ome-zarr/cells/1/.zgroup",
        "zarr/ome-zarr/nope/",
        "zarr/ome-zarr/nope/.zattrs",
        "zarr/ome-zarr/cells/64/",
        "zarr3/ome-zarr/cells/3-3-3/zarr.json",
        "zarr/ome-zarr/cells/64/0/0/0/0",
        "zarr/ome-zarr/cells/datasource-properties.json",
    ],
)
def test_absent_names_are_404(served: Served, path: str) -> None:
    for method in ("GET", "HEAD"):
        answer = fetch(served.server, path, method)
        assert answer.status == 404, path
        assert_cors(answer)
    assert fetch(served.server, path).json()["error"] == "not found"


def test_chunk_outside_grid_is_404(served: Served) -> None:
    meta = fetch(served.server, "zarr/ome-zarr/cells/1/.zarray").json()
    grid = [math.ceil(s / c) for s, c in zip(meta["shape"], meta["chunks"], strict=True)]
    last = "/".join(str(g - 1) for g in grid)
    assert fetch(served.server, f"zarr/ome-zarr/cells/1/{last}").status == 200
    for axis, size in enumerate(grid):
        index = [0] * len(grid)
        index[axis] = size
        key = "/".join(map(str, index))
        assert fetch(served.server, f"zarr/ome-zarr/cells/1/{key}").status == 404, key
        assert fetch(served.server, f"zarr3/ome-zarr/cells/1/c/{key}").status == 404, key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("0/0/0", "got 3"),
        ("0/0/0/0/0", "the key has 5 indices"),
        ("/".join("0" * 33), "got 33"),
        ("0/0/x/0", "'x'"),
        ("0/0/-1/0", "'-1'"),
        ("0/0/01/0", "'01'"),
        ("0/0/1.0/0", "'1.0'"),
        ("c/0/0/0/0", "no 'c/' prefix"),
    ],
)
def test_malformed_chunk_key_is_400(served: Served, key: str, problem: str) -> None:
    trees = ["zarr"] if key.startswith("c/") else ["zarr", "zarr3"]
    for tree in trees:
        prefix = "c/" if tree == "zarr3" else ""
        answer = fetch(served.server, f"{tree}/ome-zarr/cells/1/{prefix}{key}")
        assert answer.status == 400
        assert_cors(answer)
        error = answer.json()
        assert error["error"] == "Bad Request"
        assert problem in error["message"]


def test_never_written_chunk_is_404(served: Served, sparse: str) -> None:
    for tree, prefix in (("zarr", ""), ("zarr3", "c/")):
        array = f"{tree}/{sparse}/img/1/{prefix}"
        stored = fetch(served.server, array + "0/0/0/0")
        assert stored.status == 200
        assert stored.body
        for key in ("0/1/0/0", "0/0/1/1", "0/1/1/1"):
            missing = fetch(served.server, array + key)
            assert missing.status == 404, (tree, key)
            assert_cors(missing)
