"""Bad input to the REST API is a 4xx with a JSON message, never a 500, on both backends.

Hypothesis draws path parameters (names with any Unicode, NUL and control characters, very
long ones; link ids huge, negative, not numbers), query strings and bodies (JSON values of the
wrong types, unknown keys, deep nesting, huge strings, lone surrogates, non-JSON bytes) for
every route and method of a live ``wkjupyter serve``. Local imports are allowed only from an
empty directory and no URL drawn names a network host, so nothing is fetched.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.catalog.fixtures import BACKENDS
from tests.server.live import LiveServer
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from hypothesis.strategies import DrawFn, SearchStrategy


@dataclass
class Api:
    server: LiveServer

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        url = urlsplit(self.server.url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
        try:
            headers = {"Authorization": f"token {self.server.token}"}
            conn.request(method, url.path + path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def check(self, method: str, path: str, body: bytes | None = None) -> int:
        """Send one request; the answer must not be a 5xx, and an error must be JSON."""
        status, raw = self.call(method, path, body)
        where = f"{method} {path[:200]!r} {(body or b'')[:200]!r}"
        assert status < 500, (where, raw[:500])
        if status >= 400:
            doc = json.loads(raw)
            assert set(doc) == {"error", "message"}, where
            assert isinstance(doc["message"], str)
            assert doc["message"], where
        elif raw:
            json.loads(raw)
        return status


@pytest.fixture
def api(catalog_url: str, tmp_path: Path, demo_sources: dict[str, Path]) -> Iterator[Api]:
    hub = Hub(catalog_url, "owner", data_dir=tmp_path)
    hub.add_remote(str(demo_sources["ome-zarr"]), name="cells", public=True)
    hub.dataset("cells").create_link(expires=None)
    (empty := tmp_path / "empty").mkdir()
    with LiveServer(catalog_url, tmp_path, local_roots=[empty]) as server:
        yield Api(server)
    hub.catalog.dispose()


# -- strategies --------------------------------------------------------------------------------


def repeated(pieces: list[str], most: int) -> SearchStrategy[str]:
    """Long text (Hypothesis draws none this long itself): a piece repeated."""
    return st.builds(lambda piece, n: piece * n, st.sampled_from(pieces), st.integers(1, most))


# Text a URL path can carry (quote() cannot encode lone surrogates; bodies send them).
path_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
names = st.one_of(
    path_text,
    st.sampled_from(["cells", "é\x00x", "\x00", "a/b", "..", "%", "%00", " ", "CELLS", "\t\n"]),
    repeated(["a", "-\x00\x1f\x7f é"], 600),
)
ids = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["1", "0", "-1", "2147483648", "999999999999999999", "9" * 19, "1e3"]),
    path_text,
)
texts = st.one_of(st.text(max_size=30), repeated(["a", "é\x00", "ab-"], 200_000))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), texts)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# URLs that read nothing: absent or refused local paths, unsupported schemes, bad sources.
urls = st.one_of(
    st.text(st.characters(exclude_characters=":"), max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "/nonexistent",
            "file:///etc",
            "~/x",
            "ftp://h/x",
            "zarr://",
            "|zarr:",
            "https://neuroglancer-demo.appspot.com/#!%7B%22layers%22%3A5%7D",
            "x|zip:",
            "http://u:p@127.0.0.1:9/x",
        ]
    ),
)
credentials = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["http", "s3", "gcs", "ftp", ""]) | json_values,
        "username": json_values, "password": json_values, "token": json_values,
        "key": json_values, "secret": json_values, "endpoint_url": json_values,
    },
)  # fmt: skip
KEYS = ["name", "tags", "add_tags", "remove_tags", "public", "description", "teams",
        "dataset", "expires", "label", "layers", "unknown", ""]  # fmt: skip
objects = st.fixed_dictionaries(
    {},
    optional={
        "urls": st.one_of(urls, st.lists(urls, max_size=3), json_values),
        "url": urls,
        "credential": credentials | json_values,
        **{key: json_values | st.sampled_from(["cells", "1d", "cells-2"]) for key in KEYS},
    },
)


@st.composite
def deep(draw: DrawFn) -> bytes:
    depth = draw(st.sampled_from([33, 1000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
    inner = opener * depth + "1" + closer * depth
    return draw(st.sampled_from([inner, f'{{"urls": {inner}}}', f'{{"tags": {inner}}}']))


bodies: SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    objects.map(lambda doc: json.dumps(doc).encode()),
    json_values.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=64),
    deep(),
)


def query(keys: list[str]) -> SearchStrategy[str]:
    pairs = st.lists(st.tuples(st.sampled_from(keys), path_text), max_size=4)
    return pairs.map(lambda p: "?" + urlencode(p) if p else "")


# Each route: a strategy for (method, path, body).
Request = tuple[str, str, "bytes | None"]


def _route(method: st.SearchStrategy[str], path: SearchStrategy[str]) -> SearchStrategy[Request]:
    return st.tuples(method, path, bodies)


ROUTES: dict[str, SearchStrategy[Request]] = {
    "datasets": _route(
        st.sampled_from(["GET", "POST", "PUT"]),
        query(["search", "tag", "public", "limit", "offset", "x"]).map(
            lambda q: "api/datasets" + q
        ),
    ),
    "dataset": _route(
        st.sampled_from(["GET", "PATCH", "DELETE", "POST"]),
        names.map(lambda n: "api/datasets/" + quote(n, safe="")),
    ),
    "explore": _route(st.sampled_from(["POST", "GET"]), st.just("api/explore")),
    "links": _route(
        st.sampled_from(["GET", "POST"]),
        query(["dataset", "x"]).map(lambda q: "api/links" + q),
    ),
    "link": _route(
        st.sampled_from(["GET", "PATCH", "DELETE"]),
        ids.map(lambda i: "api/links/" + quote(i, safe="")),
    ),
    "elsewhere": _route(
        st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
        path_text.map(lambda p: "api/" + quote(p, safe="/")),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("route", list(ROUTES))
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_bad_input_is_never_a_5xx(api: Api, route: str, data: st.DataObject) -> None:
    method, path, body = data.draw(ROUTES[route])
    if method in ("GET", "DELETE"):
        body = None
    api.check(method, path, body)


# -- the cases the issue names, and their messages -------------------------------------------

Case = tuple[str, str, "bytes | None", int, str]
CASES: list[Case] = [
    ("POST", "api/explore", b"[" * 100_000 + b"]" * 100_000, 400, "nested more than 32"),
    ("POST", "api/datasets", b'{"urls": ' + b"[" * 990 + b"]" * 990 + b"}", 400, "nested"),
    ("PATCH", "api/datasets/cells", b'{"tags": ' + b"[" * 33 + b"]" * 33 + b"}", 400, "nested"),
    ("POST", "api/links", b"null", 400, "must be a JSON object"),
    ("GET", "api/datasets/%C3%A9%00x", None, 400, "NUL character"),
    ("DELETE", "api/datasets/%00", None, 400, "NUL character"),
    ("PATCH", "api/datasets/cells", b'{"description": "a\\u0000b"}', 400, "NUL character"),
    ("POST", "api/links", b'{"dataset": "cells", "label": "\\ud800"}', 400, "surrogate"),
    ("POST", "api/explore", b'{"urls": "x", "credential": {"kind": []}}', 400, "'kind'"),
    ("GET", "api/links/999999999999999999", None, 404, "no link 999999999999999999"),
    ("DELETE", "api/links/2147483648", None, 404, "no link 2147483648"),
    ("GET", "api/links/abc", None, 404, "no link 'abc'"),
    ("GET", "api/links/-1", None, 404, "no link '-1'"),
    ("GET", "api/nope", None, 404, "no API route"),
    ("PUT", "api/datasets", b"{}", 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_named_bad_inputs(api: Api) -> None:
    for method, path, body, status, needle in CASES:
        got, raw = api.call(method, path, body)
        doc = json.loads(raw)
        assert (got, set(doc)) == (status, {"error", "message"}), (path, doc)
        assert needle in doc["message"], (path, doc)
    assert api.call("GET", "api/datasets/cells")[0] == 200  # nothing was changed
    assert api.call("GET", "api/links/1")[0] == 200
