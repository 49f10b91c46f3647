"""The test servers themselves: HTTP semantics, auth, faults, request log, S3 auth, GCS access."""

from __future__ import annotations

import base64
import gzip
import http.client
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import fsspec
import pytest

from tests.servers import RangeHTTPServer, RequestRecord, count_round_trips

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import GCSEmulator, HTTPServerFactory, MotoS3Server

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable modulo 256
PLAIN_CHUNK = b"0123456789abcdef" * 64


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(
    server: RangeHTTPServer,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One raw request; no redirects followed, no decompression, errors returned not raised."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "data.bin").write_bytes(DATA)
    (root / "with space.txt").write_text("spaced")
    (root / "sub" / "info.json").write_text('{"a": 1}')
    (root / "sub" / "deeper" / "c").write_bytes(b"c")
    (root / "chunk_0.gz").write_bytes(gzip.compress(PLAIN_CHUNK))
    (root / "empty").write_bytes(b"")
    return root


# ---------------------------------------------------------------------------------------------
# RangeHTTPServer: HTTP semantics
# ---------------------------------------------------------------------------------------------


def test_get_and_head(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree)
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.root == tree.resolve()

    got = fetch(server, "/data.bin")
    assert got.status == 200
    assert got.body == DATA
    assert got.headers["content-length"] == "1024"
    assert got.headers["accept-ranges"] == "bytes"

    head = fetch(server, "/data.bin", method="HEAD")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "1024")

    assert fetch(server, "/with%20space.txt").body == b"spaced"
    assert fetch(server, "/sub/info.json").headers["content-type"] == "application/json"
    assert fetch(server, "/empty").body == b""
    assert fetch(server, "//sub//info.json").body == b'{"a": 1}'
    assert server.url_for(".zattrs") == f"{server.url}/.zattrs"
    assert server.url_for("x/a b") == f"{server.url}/x/a%20b"
    assert server.url_for("") == f"{server.url}/"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=1020-5000", 1020, 1023),
        ("bytes=-5000", 0, 1023),
        ("bytes=5-5", 5, 5),
    ],
)
def test_single_range(
    http_server: HTTPServerFactory, tree: Path, header: str, start: int, end: int
) -> None:
    got = fetch(http_server(tree), "/data.bin", headers={"Range": header})
    assert got.status == 206
    assert got.body == DATA[start : end + 1]
    assert got.headers["content-range"] == f"bytes {start}-{end}/1024"
    assert got.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize(("path", "header"), [("/data.bin", "bytes=1024-"), ("/empty", "bytes=0-")])
def test_unsatisfiable_range(
    http_server: HTTPServerFactory, tree: Path, path: str, header: str
) -> None:
    got = fetch(http_server(tree), path, headers={"Range": header})
    assert got.status == 416
    size = (tree / path.lstrip("/")).stat().st_size
    assert got.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=-"])
def test_multi_or_malformed_range_gets_whole_file(
    http_server: HTTPServerFactory, tree: Path, header: str
) -> None:
    got = fetch(http_server(tree), "/data.bin", headers={"Range": header})
    assert (got.status, got.body) == (200, DATA)


def test_missing_and_escaping_paths_are_404(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree)
    (tree.parent / "secret").write_text("outside the root")
    for path in ["/nope", "/sub/nope.json", "/../secret", "/sub/../../secret", "/%2e%2e/secret"]:
        assert fetch(server, path).status == 404, path


def test_keep_alive_survives_errors(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path, status in [("/data.bin", 200), ("/nope", 404), ("/sub/info.json", 200)]:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == status
    finally:
        conn.close()


def test_directory_listing_works_with_fsspec(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree)
    listing = fetch(server, "/sub/")
    assert listing.headers["content-type"].startswith("text/html")
    assert b'<a href="deeper/">' in listing.body
    assert b'<a href="info.json">' in listing.body

    redirect = fetch(server, "/sub?x=1")
    assert (redirect.status, redirect.headers["location"]) == (301, "/sub/?x=1")
    assert fetch(server, "//sub").headers["location"] == "/sub/"

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    names = set(fs.ls(server.url + "/", detail=False))
    assert names == {
        f"{server.url}/{name}"
        for name in ["sub/", "data.bin", "with%20space.txt", "chunk_0.gz", "empty"]
    }
    assert set(fs.ls(server.url + "/sub", detail=False)) == {
        f"{server.url}/sub/deeper/",
        f"{server.url}/sub/info.json",
    }
    assert fs.cat_file(server.url + "/data.bin", start=10, end=20) == DATA[10:20]
    assert fs.info(server.url + "/data.bin")["size"] == 1024
    with pytest.raises(FileNotFoundError):
        fs.cat(server.url + "/nope")


# ---------------------------------------------------------------------------------------------
# RangeHTTPServer: auth, faults, gzip
# ---------------------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree, basic_auth=("ann", "s3cret"))
    for headers in [{}, basic("ann", "wrong"), basic("bob", "s3cret"), {"Authorization": "Basic"}]:
        denied = fetch(server, "/data.bin", headers=headers)
        assert denied.status == 401
        assert denied.headers["www-authenticate"].startswith("Basic ")
    assert fetch(server, "/data.bin", headers=basic("ann", "s3cret")).body == DATA
    server.basic_auth = ("änn", "pässwort")  # read per request; non-ASCII must not crash
    assert fetch(server, "/data.bin", headers=basic("änn", "pässwort")).status == 200
    assert fetch(server, "/data.bin", headers=basic("ann", "s3cret")).status == 401


def test_bearer_auth(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree, bearer_token="tok")
    missing = fetch(server, "/data.bin")
    assert missing.status == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert fetch(server, "/data.bin", headers={"Authorization": "Bearer nope"}).status == 403
    assert fetch(server, "/data.bin", headers={"Authorization": "Bearer tok"}).body == DATA


def test_basic_and_bearer_are_exclusive(tree: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        RangeHTTPServer(tree, basic_auth=("a", "b"), bearer_token="c")


@pytest.mark.parametrize("status", [403, 500, 503])
def test_status_faults_by_prefix(http_server: HTTPServerFactory, tree: Path, status: int) -> None:
    server = http_server(tree)
    server.faults["/sub"] = status
    server.faults["/sub/deeper"] = 404  # the longest prefix wins
    assert fetch(server, "/sub/info.json").status == status
    assert fetch(server, "/sub/deeper/c").status == 404
    assert fetch(server, "/data.bin").status == 200
    del server.faults["/sub"]
    assert fetch(server, "/sub/info.json").status == 200


def test_hang_fault_times_out_clients_but_not_stop(tree: Path) -> None:
    server = RangeHTTPServer(tree, hang_seconds=60).start()
    try:
        server.faults["/data.bin"] = "hang"
        with pytest.raises(TimeoutError):
            fetch(server, "/data.bin", timeout=0.2)
        # A second client stuck in the hang while we stop: stop() must release it at once.
        outcome: list[BaseException] = []

        def wait_for_answer() -> None:
            try:
                fetch(server, "/data.bin", timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                outcome.append(exc)

        stuck = threading.Thread(target=wait_for_answer)
        stuck.start()
        time.sleep(0.1)
    finally:
        began = time.perf_counter()
        server.stop()
    assert time.perf_counter() - began < 2
    stuck.join(timeout=2)
    assert not stuck.is_alive()
    assert isinstance(outcome[0], http.client.RemoteDisconnected)  # dropped, never answered


def test_gzip_encoded(http_server: HTTPServerFactory, tree: Path) -> None:
    plain = http_server(tree)
    assert fetch(plain, "/chunk_0").status == 404

    server = http_server(tree, gzip_encoded=True)
    raw = fetch(server, "/chunk_0")
    assert raw.status == 200
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.body == (tree / "chunk_0.gz").read_bytes()
    assert fetch(server, "/chunk_0.gz").headers.get("content-encoding") is None
    assert b'<a href="chunk_0">' in fetch(server, "/").body

    # aiohttp undoes the Content-Encoding, as for cloud-volume chunks on GCS.
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert fs.cat(server.url + "/chunk_0") == PLAIN_CHUNK


# ---------------------------------------------------------------------------------------------
# RangeHTTPServer: request log and round trips
# ---------------------------------------------------------------------------------------------


def test_request_log_and_round_trips(http_server: HTTPServerFactory, tree: Path) -> None:
    server = http_server(tree, latency=0.05)
    fetch(server, "/sub/info.json", method="HEAD")
    fetch(server, "/sub/info.json")
    barrier = threading.Barrier(4)

    def concurrent_read(i: int) -> None:
        barrier.wait()
        fetch(server, f"/data.bin?part={i}", headers={"Range": f"bytes={i}-{i}"})

    threads = [threading.Thread(target=concurrent_read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    log = server.requests
    assert [(r.method, r.path) for r in log[:2]] == [
        ("HEAD", "/sub/info.json"),
        ("GET", "/sub/info.json"),
    ]
    assert sorted(r.path for r in log[2:]) == [f"/data.bin?part={i}" for i in range(4)]
    assert all(r.end - r.start >= 0.05 for r in log)
    assert server.round_trips() == 3  # HEAD, then GET, then the concurrent wave

    server.reset_log()
    assert server.requests == []
    assert server.round_trips() == 0


def waves(*spans: tuple[float, float]) -> list[RequestRecord]:
    return [RequestRecord("GET", f"/{i}", start, end) for i, (start, end) in enumerate(spans)]


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (waves(), 0),
        (waves((0, 1)), 1),
        (waves((0, 1), (0.1, 1.1), (0.2, 0.9)), 1),
        (waves((0, 1), (1, 2), (2, 3)), 3),
        # metadata, then a wave of chunks overlapping each other
        (waves((0, 1), (1.1, 2), (1.2, 2.5), (1.5, 3)), 2),
        # a long request overlapping a short chain: the chain decides
        (waves((0, 10), (0, 1), (2, 3), (4, 5)), 3),
        # order of the log does not matter
        (waves((4, 5), (2, 3), (0, 1)), 3),
    ],
)
def test_count_round_trips(records: list[RequestRecord], expected: int) -> None:
    assert count_round_trips(records) == expected


# ---------------------------------------------------------------------------------------------
# moto S3 with authentication
# ---------------------------------------------------------------------------------------------


def test_s3_right_key_lists_and_reads(moto_s3: MotoS3Server, tree: Path) -> None:
    import s3fs

    bucket = moto_s3.make_bucket()
    keys = moto_s3.upload_tree(tree, bucket, "ds/")
    assert "ds/sub/deeper/c" in keys
    assert "ds/with space.txt" in keys

    fs = s3fs.S3FileSystem(
        key=moto_s3.key_id,
        secret=moto_s3.secret,
        client_kwargs={"endpoint_url": moto_s3.endpoint_url},
        skip_instance_cache=True,
    )
    assert set(fs.ls(f"{bucket}/ds/sub")) == {
        f"{bucket}/ds/sub/deeper",
        f"{bucket}/ds/sub/info.json",
    }
    assert fs.cat(f"{bucket}/ds/data.bin") == DATA
    assert fs.cat_file(f"{bucket}/ds/data.bin", start=100, end=110) == DATA[100:110]
    assert fs.cat(f"{bucket}/ds/with space.txt") == b"spaced"
    assert len(fs.find(f"{bucket}/ds")) == len(keys)

    fs2 = s3fs.S3FileSystem(**moto_s3.storage_options, skip_instance_cache=True)
    assert fs2.cat(f"{bucket}/ds/sub/info.json") == b'{"a": 1}'


@pytest.mark.parametrize("credentials", ["wrong-secret", "unknown-key", "anonymous"])
def test_s3_refuses_bad_credentials(moto_s3: MotoS3Server, tree: Path, credentials: str) -> None:
    import s3fs

    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(tree / "sub", bucket)
    auth = {
        "wrong-secret": {"key": moto_s3.key_id, "secret": moto_s3.secret + "x"},
        "unknown-key": {"key": "AKIAUNKNOWNKEY000000", "secret": moto_s3.secret},
        "anonymous": {"anon": True},
    }[credentials]
    fs = s3fs.S3FileSystem(
        **auth,
        client_kwargs={"endpoint_url": moto_s3.endpoint_url},
        skip_instance_cache=True,
    )
    with pytest.raises(PermissionError):
        fs.ls(bucket)
    with pytest.raises(PermissionError):
        fs.cat(f"{bucket}/info.json")


def test_s3_policy_is_enforced(moto_s3: MotoS3Server, tree: Path) -> None:
    import s3fs

    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(tree / "sub", bucket)
    key_id, secret = moto_s3.create_s3_user(actions=["s3:GetObject"])
    fs = s3fs.S3FileSystem(
        key=key_id,
        secret=secret,
        client_kwargs={"endpoint_url": moto_s3.endpoint_url},
        skip_instance_cache=True,
    )
    assert fs.cat_file(f"{bucket}/info.json") == b'{"a": 1}'
    with pytest.raises(PermissionError):
        fs.ls(bucket)


# ---------------------------------------------------------------------------------------------
# GCS emulator
# ---------------------------------------------------------------------------------------------


def test_gcs_emulator_serves_gcsfs(gcs_emulator: GCSEmulator, tree: Path) -> None:
    import gcsfs

    bucket = gcs_emulator.make_bucket()
    keys = gcs_emulator.upload_tree(tree, bucket, "ds")
    assert "ds/sub/info.json" in keys

    fs = gcsfs.GCSFileSystem(**gcs_emulator.storage_options, skip_instance_cache=True)
    assert fs.cat(f"{bucket}/ds/data.bin") == DATA
    assert fs.cat_file(f"{bucket}/ds/data.bin", start=1000, end=1010) == DATA[1000:1010]
    assert fs.cat(f"{bucket}/ds/with space.txt") == b"spaced"
    assert set(fs.ls(f"{bucket}/ds/sub")) == {
        f"{bucket}/ds/sub/deeper",
        f"{bucket}/ds/sub/info.json",
    }
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{bucket}/ds/nope")
