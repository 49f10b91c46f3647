"""Security of the data routes on a live server: no existence leak, revocation that reaches every
server process, path attacks, token guessing, credentials and tokens kept out of answers and
logs, honest 5xx for upstream failures, link use accounting, and a loop that never blocks."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
from sqlalchemy import func, update
from sqlalchemy import select as sql_select

from tests.server.conftest import PRIVATE, write_sparse_ome_zarr
from tests.server.live import Answer, LiveServer, fetch, serve_process
from wkjupyter import HttpCredential, S3Credential
from wkjupyter.catalog.models import LinkRecord
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.server.conftest import Served
    from tests.servers import HTTPServerFactory, MotoS3Server, RangeHTTPServer
    from wkjupyter.hub import Dataset

NOT_FOUND_ERROR = "not found"


def raw_request(base: str, target: bytes) -> Answer | None:
    """Send ``GET <target> HTTP/1.1`` byte for byte (no client normalises it); None: dropped."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock, method="GET")
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return Answer(response.status, response.headers, response.read())


#: Every key of the served sparse image below a tree's dataset root (absent chunks included).
SPARSE_KEYS = {
    "zarr": ["", ".zgroup", ".zattrs", ".zmetadata", "datasource-properties.json", "img/",
             "img/.zgroup", "img/.zattrs", "img/.zmetadata", "img/1/", "img/1/.zarray",
             "img/1/.zattrs"],
    "zarr3": ["", "zarr.json", "datasource-properties.json", "img/", "img/zarr.json", "img/1/",
              "img/1/zarr.json"],
}  # fmt: skip
CHUNKS = [f"0/{z}/{y}/{x}" for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def every_key(tree: str) -> list[str]:
    prefix = "img/1/c/" if tree == "zarr3" else "img/1/"
    return SPARSE_KEYS[tree] + [prefix + c for c in CHUNKS]


def new_hub(catalog_url: str, data_dir: Path) -> Hub:
    return Hub(catalog_url, "owner", data_dir=data_dir, public_url="http://example.invalid/")


def expire(hub: Hub, link_id: int) -> None:
    """Make a link expired (the API refuses expiries in the past)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    hub.catalog.run(
        lambda s: s.execute(
            update(LinkRecord).where(LinkRecord.id == link_id).values(expires_at=past)
        )
    )


def total_uses(hub: Hub) -> int:
    return int(hub.catalog.run(lambda s: s.scalar(sql_select(func.sum(LinkRecord.use_count)))) or 0)


@dataclass
class World:
    hub: Hub
    public: Dataset
    private: Dataset
    data_dir: Path
    catalog_url: str


@pytest.fixture
def world(catalog_url: str, tmp_path: Path) -> Iterator[World]:
    """A public and a private copy of the sparse image in a fresh SQLite or PostgreSQL catalog."""
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    hub = new_hub(catalog_url, tmp_path)
    public = hub.add_remote(str(source), name="open-data", public=True)
    private = hub.add_remote(str(source), name="closed-data", public=False)
    yield World(hub, public, private, tmp_path, catalog_url)
    hub.catalog.dispose()


# -- no existence leak ------------------------------------------------------------------------


def test_every_not_found_is_identical(world: World) -> None:
    hub = world.hub
    valid, revoked, expired = (world.private.create_link(label=n) for n in ("ok", "rev", "exp"))
    revoked.revoke()
    expire(hub, expired.id)
    unknown = secrets.token_urlsafe(32)
    names = {"unknown dataset": "no-such-data", "private dataset": world.private.name}
    tokens = {"malformed": "short", "bad characters": "x" * 20 + "!$", "unknown": unknown,
              "expired": expired.token, "revoked": revoked.token}  # fmt: skip
    with LiveServer(world.catalog_url, world.data_dir) as server:
        # The setup is right: the same keys exist for whoever may read them.
        assert fetch(server.url, f"zarr/{world.public.name}/.zattrs").status == 200
        assert fetch(server.url, f"links/{valid.token}/zarr/img/1/0/0/0/0").status == 200
        auth = {"Authorization": f"token {server.token}"}
        assert fetch(server.url, f"zarr/{world.private.name}/.zattrs", **auth).status == 200
        keys = [".zattrs", "img/1/0/0/0/0", "", "img/1/.zarray"]
        paths = [f"zarr/{name}/{key}" for name in names.values() for key in keys]
        paths += [f"links/{token}/zarr/{key}" for token in tokens.values() for key in keys]
        paths += [f"links/{token}/{tree}" for token in tokens.values() for tree in ("zarr3/", "")]
        for method in ("GET", "HEAD"):
            seen: dict[tuple[Any, ...], list[str]] = {}
            for path in paths:
                status, body, headers = fetch(server.url, path, method).comparable()
                seen.setdefault((status, body, tuple(headers)), []).append(path)
            assert len(seen) == 1, f"{method}: distinguishable 404s: {list(seen.values())}"
            status, body, _ = next(iter(seen))
            assert status == 404
            if method == "GET":
                assert json.loads(body)["error"] == NOT_FOUND_ERROR


# -- revocation across processes --------------------------------------------------------------


def test_revocation_reaches_every_server_at_once(world: World) -> None:
    hub, public = world.hub, world.public
    revoked, kept = world.private.create_link(label="revoked"), world.private.create_link()
    chunk, doc = "zarr/img/1/0/0/0/0", "zarr3/img/1/zarr.json"
    api_token = secrets.token_urlsafe(16)
    with (
        LiveServer(world.catalog_url, world.data_dir) as first,
        LiveServer(world.catalog_url, world.data_dir) as second,
        serve_process(
            "--catalog-url",
            world.catalog_url,
            "--data-dir",
            str(world.data_dir),
            "--user",
            "owner",
            log=world.data_dir / "serve.log",
            env={**os.environ, "WKJUPYTER_TOKEN": api_token},
        ) as third,
    ):
        servers = [first.url, second.url, third.url]

        def statuses(path: str) -> list[int]:
            return [fetch(url, path).status for url in servers]

        # Warm every cache there is: views, chunks, grants.
        warm = [f"links/{revoked.token}/{chunk}", f"links/{revoked.token}/{doc}"]
        warm += [f"zarr/{public.name}/.zattrs", f"zarr/{public.name}/img/1/0/0/0/0"]
        for path in warm:
            assert statuses(path) == [200] * 3, path
        revoked.revoke()
        for path in (chunk, doc, "zarr/", ""):
            assert statuses(f"links/{revoked.token}/{path}") == [404] * 3, path
        assert statuses(f"links/{kept.token}/{chunk}") == [200] * 3
        public.public = False
        for path in (".zattrs", "img/1/0/0/0/0", ""):
            assert statuses(f"zarr/{public.name}/{path}") == [404] * 3, path
        owner = {"Authorization": f"token {first.token}"}
        assert fetch(first.url, f"zarr/{public.name}/.zattrs", **owner).status == 200
        owner = {"Authorization": f"token {api_token}"}
        assert fetch(third.url, f"zarr/{public.name}/.zattrs", **owner).status == 200
        public.public = True
        assert statuses(f"zarr/{public.name}/.zattrs") == [200] * 3
    assert hub.link(revoked.id).revoked
    access_log = (world.data_dir / "serve.log").read_text()
    assert "GET /wkjupyter/links/<token>/zarr/img/1/0/0/0/0" in access_log
    assert revoked.token not in access_log
    assert kept.token not in access_log


# -- path attacks -----------------------------------------------------------------------------

SENTINEL = b"wkjupyter-test-sentinel-outside-the-tree"
LONG = "a/" * 3000
ATTACKS = [
    b"/wkjupyter/zarr/ome-zarr/../../sentinel.txt",
    b"/wkjupyter/zarr/ome-zarr/cells/1/../../../../../../../../etc/passwd",
    b"/wkjupyter/zarr/../zarr/ome-zarr/.zattrs",
    b"/wkjupyter/zarr/ome-zarr/%2e%2e/%2e%2e/sentinel.txt",
    b"/wkjupyter/zarr/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    b"/wkjupyter/zarr/ome-zarr/%252e%252e/%252e%252e/sentinel.txt",
    b"/wkjupyter/zarr/ome-zarr/%25%32%65%25%32%65/sentinel.txt",
    b"/wkjupyter/zarr/ome-zarr%2F..%2F..%2Fsentinel.txt",
    b"/wkjupyter/zarr/ome-zarr%2F.zattrs",
    b"/wkjupyter/zarr/ome-zarr/cells%2f1%2f.zarray",
    b"/wkjupyter/zarr/%2Fetc%2Fpasswd",
    b"/wkjupyter/zarr//etc/passwd",
    b"/wkjupyter/zarr/ome-zarr/..%5C..%5Csentinel.txt",
    b"/wkjupyter/zarr/ome-zarr/\\..\\..\\sentinel.txt",
    b"/wkjupyter/zarr/ome-zarr/cells\\1\\.zarray",
    b"/wkjupyter/zarr/ome-zarr/cells/1/0/0/0/%00",
    b"/wkjupyter/zarr/ome-zarr%00/.zattrs",
    b"/wkjupyter/zarr/ome-zarr/cells/1/0/0/0/0%0d%0aSet-Cookie:%20x=1",
    b"/wkjupyter/zarr/ome-zarr/cells/1/0/0/0/%D9%A1",  # ARABIC-INDIC DIGIT ONE
    b"/wkjupyter/zarr/ome-zarr/cells/1/0/%EF%BC%91/0/0",  # FULLWIDTH DIGIT ONE
    b"/wkjupyter/zarr3/ome-zarr/cells/1/c/0/\xe0\xa5\xa6/0/0",  # raw DEVANAGARI DIGIT ZERO
    b"/wkjupyter/zarr/ome-zarr/cells/1/0/0/0/\xd9\xa1",
    b"/wkjupyter/zarr/ome-zarr/cells/" + LONG.encode() + b".zattrs",
    b"/wkjupyter/zarr/" + b"x" * 300 + b"/.zattrs",
    b"/wkjupyter/links/..%2F..%2Fzarr/ome-zarr/.zattrs",
    b"/wkjupyter/links/%2e%2e/zarr/.zattrs",
    b"/wkjupyter/links/" + b"A" * 22 + b"/zarr/../../zarr/ome-zarr/.zattrs",
]


@pytest.mark.parametrize("target", ATTACKS, ids=lambda t: t.decode("latin-1")[11:60])
def test_path_attacks_are_refused(served: Served, target: bytes) -> None:
    for place in (served.data_dir, served.data_dir.parent):
        (place / "sentinel.txt").write_bytes(SENTINEL)
    answer = raw_request(served.url, target)
    assert answer is not None
    if answer.status == 301:  # "zarr//etc/passwd" is the listing "zarr/etc/passwd"
        assert re.fullmatch(r"[A-Za-z0-9._-]+/", answer.headers["Location"])
    else:
        assert answer.status in {400, 404}
    for secret in (SENTINEL, b"root:", b"SQLite format"):
        assert secret not in answer.body


@pytest.mark.parametrize(
    "target", [b"/wkjupyter/zarr/ome-zarr/\x00/.zattrs", b"/" + b"a" * 200_000]
)
def test_unparseable_request_lines_are_refused(served: Served, target: bytes) -> None:
    answer = raw_request(served.url, target)
    assert answer is None or 400 <= answer.status < 500


# -- tokens -----------------------------------------------------------------------------------


def test_guessed_tokens_are_404_and_never_counted(served: Served) -> None:
    link = served.hub.dataset("ome-zarr").create_link(label="guessing")
    served.server.flush_uses()
    before = total_uses(served.hub)
    guesses = [secrets.token_urlsafe(n) for n in (12, 16, 32, 48) for _ in range(40)]
    guesses += [link.token[:-1] + ("A" if link.token[-1] != "A" else "B"), link.token.upper()]
    for i, guess in enumerate(guesses):
        path = [f"links/{guess}/", f"links/{guess}/zarr/.zattrs", f"links/{guess}/zarr3/"][i % 3]
        assert fetch(served.url, path).status == 404, guess
    served.server.flush_uses()
    assert total_uses(served.hub) == before
    assert served.hub.link(link.id).use_count == 0


def test_link_uses_are_counted(served: Served) -> None:
    link = served.hub.dataset("ome-zarr").create_link(label="counted")
    paths = ["", "zarr/.zattrs", "zarr3/zarr.json", "zarr/cells/1/0/0/0/0", "zarr3/cells/"]
    etag = fetch(served.url, f"links/{link.token}/zarr/.zattrs").headers["ETag"]
    uses = 1
    for path in paths:
        for method in ("GET", "HEAD"):
            assert fetch(served.url, f"links/{link.token}/{path}", method).status == 200
            uses += 1
    cached = fetch(served.url, f"links/{link.token}/zarr/.zattrs", If_None_Match=etag)
    assert cached.status == 304
    uses += 1
    served.server.flush_uses()
    record = served.hub.link(link.id)
    assert record.use_count == uses
    assert record.last_used_at is not None
    before = total_uses(served.hub)
    for path in ("zarr/ome-zarr/.zattrs", "zarr3/ome-zarr/cells/1/c/0/0/0/0", "zarr/n5/"):
        assert fetch(served.url, path).status == 200
    served.server.flush_uses()
    assert total_uses(served.hub) == before


def test_token_never_reaches_the_access_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither tornado's access log (``served``) nor a host's ``log_function`` sees a token."""
    token = served.hub.dataset("ome-zarr").create_link(label="logged").token
    lines: list[str] = []

    def log_function(handler: Any) -> None:
        request = handler.request
        lines.append(f"{handler.get_status()} {handler._request_summary()} {request.path}")

    requests = [
        ("", 200), ("zarr/.zattrs", 200), ("zarr/cells/1/0/0/0/0", 200), ("zarr/?format=json", 200),
        ("zarr3/cells", 301), ("zarr/cells/1/9/9/9/9", 404), ("zarr/cells/1/0/x/0/0", 400),
        ("zarr/cells/1/0/0/0", 400), ("zarr2/", 400), ("other/path", 400),
    ]  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="tornado")
    caplog.set_level(logging.DEBUG, logger="wkjupyter")
    catalog_url = f"sqlite:///{served.data_dir / 'catalog.sqlite'}"
    with LiveServer(catalog_url, served.data_dir, log_function=log_function) as own:
        for base in (served.url, own.url):
            for path, status in requests:
                answer = fetch(base, f"links/{token}/{path}")
                assert answer.status == status, path
                assert token.encode() not in answer.body, path
                assert token not in str(answer.headers.items()), path
    logged = lines + [r.getMessage() for r in caplog.records]
    assert len(lines) == len(requests)
    assert sum("/wkjupyter/links/<token>/" in line for line in logged) >= 2 * len(requests)
    assert not [line for line in logged if token in line]


def test_token_in_an_unrouted_path_never_reaches_the_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    token = served.hub.dataset("ome-zarr").create_link(label="unrouted").token
    caplog.set_level(logging.DEBUG, logger="tornado")
    for target in (f"//wkjupyter/links/{token}/zarr/.zattrs", f"/wkjupyter//links/{token}/"):
        answer = raw_request(served.url, target.encode())
        assert answer is not None
        assert answer.status == 404
    assert not [r.getMessage() for r in caplog.records if token in r.getMessage()]


# -- login ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 404), ("token {t}", 200), ("Bearer {t}", 200), ("token {t}x", 404),
     ("token wrong", 404), ("token", 404), ("Basic {t}", 404), ("{t}", 404)],
)  # fmt: skip
def test_only_the_server_token_reads_private_datasets(
    served: Served, authorization: str | None, status: int
) -> None:
    value = authorization.format(t=served.server.token) if authorization else None
    headers = {"Authorization": value} if value is not None else {}
    for path in (".zattrs", "", "cells/1/0/0/0/0"):
        assert fetch(served.url, f"zarr/{PRIVATE}/{path}", **headers).status == status, path


# -- credentials ------------------------------------------------------------------------------


def secret_forms(*secrets_: str) -> set[str]:
    """How a secret could show up: as is, base64 (also as a Basic pair), URL-encoded."""
    forms = set()
    for secret in secrets_:
        data = secret.encode()
        forms |= {secret, quote(secret, safe=""), quote_plus(secret)}
        forms |= {base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()}
    pair = ":".join(secrets_).encode()
    forms.add(base64.b64encode(pair).decode())
    return forms


def leaks(text: str | bytes, forms: set[str]) -> list[str]:
    shown = text.decode("latin-1") if isinstance(text, bytes) else text
    return sorted(form for form in forms if form in shown)


def test_leak_scanner_finds_every_form() -> None:
    forms = secret_forms("AKIAEXAMPLEKEY", "s3cr3t/with+chars=")
    assert leaks("nothing here", forms) == []
    assert leaks(b"x-amz: AKIAEXAMPLEKEY;", forms) == ["AKIAEXAMPLEKEY"]
    assert leaks("url?k=s3cr3t%2Fwith%2Bchars%3D", forms)
    assert leaks(base64.b64encode(b"s3cr3t/with+chars=").decode(), forms)
    assert leaks("Basic " + base64.b64encode(b"AKIAEXAMPLEKEY:s3cr3t/with+chars=").decode(), forms)


@dataclass
class S3Source:
    url: str
    credential: S3Credential


@pytest.fixture
def s3_source(moto_s3: MotoS3Server, tmp_path: Path) -> S3Source:
    """The sparse image in a bucket of its own, readable with a key of its own."""
    key_id, secret = moto_s3.create_s3_user()
    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr"), bucket, "img")
    credential = S3Credential(key_id, secret, endpoint_url=moto_s3.endpoint_url)
    return S3Source(f"s3://{bucket}/img", credential)


def test_credentials_never_reach_answers_or_logs(
    s3_source: S3Source, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cred = s3_source.credential
    forms = secret_forms(cred.key_id, cred.secret)
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = new_hub(url, tmp_path)
    dataset = hub.add_remote(s3_source.url, name="in-s3", public=True, credential=cred)
    token = dataset.create_link().token
    caplog.set_level(logging.DEBUG, logger="tornado")
    caplog.set_level(logging.DEBUG, logger="wkjupyter")
    lines: list[str] = []
    seen: list[str | bytes] = []
    with LiveServer(
        url, tmp_path, log_function=lambda h: lines.append(h._request_summary())
    ) as server:
        api = {"Authorization": f"token {server.token}"}
        requests = [(f"{root}{key}", {}) for tree in ("zarr", "zarr3")
                    for root in (f"{tree}/in-s3/", f"links/{token}/{tree}/")
                    for key in every_key(tree)]  # fmt: skip
        requests += [("zarr/in-s3/img/1/0/0/x/0", {}), ("zarr/in-s3/img/1/0/9/0/0", {})]
        requests = [(path, method, h) for path, h in requests for method in ("GET", "HEAD")]
        apis = ("api/datasets", "api/datasets/in-s3", "api/links", "api/links/1")
        requests += [(path, "GET", api) for path in apis]
        statuses = set()
        for path, method, headers in requests:
            answer = fetch(server.url, path, method, **headers)
            statuses.add(answer.status)
            seen += [answer.body, str(answer.headers.items())]
    hub.catalog.dispose()
    assert statuses == {200, 400, 404}  # chunks read through the credential, absent ones 404
    records = [r for r in caplog.records if r.name.startswith(("wkjupyter", "tornado"))]
    seen += lines + [r.getMessage() + (r.exc_text or "") for r in records]
    assert len(lines) == len(requests)
    assert [(i, leaks(text, forms)) for i, text in enumerate(seen) if leaks(text, forms)] == []


# -- upstream failures ------------------------------------------------------------------------

PASSWORD = "upstream-pa55word"


@dataclass
class Upstream:
    server: LiveServer
    remote: RangeHTTPServer
    hub: Hub
    token: str
    catalog_url: str
    data_dir: Path


@pytest.fixture
def upstream(http_server: HTTPServerFactory, tmp_path: Path) -> Iterator[Upstream]:
    """The sparse image behind HTTP basic auth (faults injectable), served as ``remote``."""
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    remote = http_server(source.parent, basic_auth=("reader", PASSWORD), hang_seconds=10)
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = new_hub(url, tmp_path)
    credential = HttpCredential("reader", PASSWORD)
    dataset = hub.add_remote(
        remote.url_for(source.name), name="remote", public=True, credential=credential
    )
    token = dataset.create_link().token
    with LiveServer(url, tmp_path) as server:
        yield Upstream(server, remote, hub, token, url, tmp_path)
    hub.catalog.dispose()


def assert_upstream_failure(answer: Answer, status: int, upstream: Upstream) -> None:
    assert answer.status == status
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    error = answer.json()
    assert error["message"]
    assert "storage" in error["message"]
    text = answer.body.decode()
    assert str(upstream.remote.port) not in text
    assert not leaks(text, secret_forms("reader", PASSWORD))


@pytest.mark.parametrize(
    ("fault", "status"), [(500, 503), (503, 503), (502, 503), (429, 503), (403, 502), (401, 502)]
)
def test_upstream_failure_is_5xx_never_404(
    upstream: Upstream, fault: int, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wkjupyter")
    base = upstream.server.url
    upstream.remote.faults["/"] = fault  # the view cannot even open
    assert_upstream_failure(fetch(base, "zarr/remote/img/.zattrs"), status, upstream)
    upstream.remote.faults.clear()
    assert fetch(base, "zarr/remote/img/.zattrs").status == 200  # not cached as failed
    upstream.remote.faults["/img.ome.zarr/0/0"] = fault  # an opened view, a failing chunk
    for path in ("zarr/remote/img/1/0/0/0/0", f"links/{upstream.token}/zarr3/img/1/c/0/0/0/0"):
        assert_upstream_failure(fetch(base, path), status, upstream)
    assert not [r for r in caplog.records if upstream.token in r.getMessage()]


@pytest.mark.parametrize("slowness", ["hang", "latency"])
def test_slow_upstream_is_504(
    upstream: Upstream, slowness: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WKJUPYTER_TIMEOUT", "0.3")  # read when the view opens its stores
    if slowness == "hang":
        upstream.remote.faults["/"] = "hang"
    else:
        upstream.remote.latency = 2.0
    assert_upstream_failure(fetch(upstream.server.url, "zarr/remote/img/1/0/0/0/0"), 504, upstream)


def test_wrong_http_credential_is_502(upstream: Upstream) -> None:
    (info,) = upstream.hub.credentials()
    upstream.hub.rotate_credential(info.name, HttpCredential("reader", "wrong-password"))
    with LiveServer(upstream.catalog_url, upstream.data_dir) as fresh:  # no view cached yet
        answer = fetch(fresh.url, "zarr/remote/img/1/0/0/0/0")
    assert_upstream_failure(answer, 502, upstream)
    assert "credential" in answer.json()["message"]
    assert "wrong-password" not in answer.body.decode()


def test_wrong_s3_secret_is_502(s3_source: S3Source, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = new_hub(url, tmp_path)
    cred = s3_source.credential
    hub.add_remote(s3_source.url, name="in-s3", public=True, credential=cred)
    (info,) = hub.credentials()
    wrong = S3Credential(cred.key_id, "x" * 40, endpoint_url=cred.endpoint_url)
    hub.rotate_credential(info.name, wrong)
    with LiveServer(url, tmp_path) as server:
        answers = [
            fetch(server.url, p) for p in ("zarr/in-s3/img/.zattrs", "zarr3/in-s3/img/1/c/0/0/0/0")
        ]
    hub.catalog.dispose()
    for answer in answers:
        assert answer.status == 502
        assert "credential" in answer.json()["message"]
        assert not leaks(answer.body, secret_forms(cred.key_id, cred.secret, wrong.secret))
        assert s3_source.url.split("/")[2] not in answer.body.decode()  # no bucket name either


# -- the event loop ---------------------------------------------------------------------------


def test_slow_chunk_does_not_hold_up_other_requests(
    http_server: HTTPServerFactory, tmp_path: Path
) -> None:
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    remote = http_server(source.parent)
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    hub = new_hub(url, tmp_path)
    hub.add_remote(remote.url_for(source.name), name="slow", public=True)
    hub.add_remote(str(source), name="fast", public=True)
    finished: list[str] = []
    with LiveServer(url, tmp_path) as server:
        for name in ("slow", "fast"):  # both views open, the metadata cached
            assert fetch(server.url, f"zarr/{name}/img/1/.zarray").status == 200
        remote.latency = 1.5

        def slow() -> None:
            finished.append(f"slow {fetch(server.url, 'zarr/slow/img/1/0/0/0/0').status}")

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.2)  # let the slow request reach the upstream (not an assertion)
        for path in (
            "zarr/fast/img/1/.zarray",
            "zarr3/fast/img/zarr.json",
            "zarr/fast/img/1/0/0/0/0",
        ):
            finished.append(f"fast {fetch(server.url, path).status}")
        thread.join(30)
    hub.catalog.dispose()
    assert finished == ["fast 200"] * 3 + ["slow 200"]
