"""A source that is gone is a failure, never "chunk not stored" (issue 9 §2).

A deleted bucket (S3 NoSuchBucket, a GCS bucket removed) or an HTTP dataset whose array
metadata vanished must answer 502, so that a Zarr client raises instead of painting the
volume with the fill value. Real servers: moto, the GCS emulator, a RangeHTTPServer.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import zarr

from tests.server.conftest import write_sparse_ome_zarr
from tests.server.live import LiveServer, fetch
from wkjupyter.hub import Hub
from wkjupyter.sources._fs import S3Credential

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.servers import GCSEmulator, HTTPServerFactory, MotoS3Server

STORED = "zarr/gone/img/1/0/0/0/0"  # the one chunk the sparse image stores
ABSENT = "zarr/gone/img/1/0/1/1/1"  # never stored: the fill value, while the source exists


def new_hub(tmp_path: Path) -> tuple[Hub, str]:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return Hub(url, "owner", data_dir=tmp_path, public_url="http://example.invalid/"), url


@contextlib.contextmanager
def serve_and_remove(
    tmp_path: Path, source_url: str, remove: Callable[[], None], **import_options: object
) -> Iterator[tuple[LiveServer, zarr.Array[Any]]]:
    """Import ``source_url`` as ``gone``, serve it, check it reads, open it with zarr-python
    (its metadata in hand, a client then reads chunks only), then ``remove()`` it."""
    hub, url = new_hub(tmp_path)
    hub.add_remote(source_url, name="gone", public=True, **import_options)  # type: ignore[arg-type]
    with LiveServer(url, tmp_path) as server:
        assert fetch(server, STORED).status == 200  # the view is open and cached
        assert fetch(server, ABSENT).status == 404  # not stored: clients fill it
        # A client that opened the array before (its metadata in hand) reads chunks only.
        array = zarr.open_array(f"{server.url}zarr/gone/img/1", mode="r")
        remove()
        yield server, array
    hub.catalog.dispose()


def assert_gone(
    served: tuple[LiveServer, zarr.Array[Any]], paths: tuple[str, ...] = (STORED, ABSENT)
) -> None:
    server, array = served
    for path in paths:
        answer = fetch(server, path)
        assert answer.status == 502, (path, answer.status, answer.body)
        assert "no longer has the data" in answer.json()["message"]
    # zarr-python reading through the server raises instead of returning zeros.
    with pytest.raises(Exception, match="502"):
        array[...]
    # The view was dropped: its metadata is not served from memory either.
    assert fetch(server, "zarr/gone/img/1/.zarray").status == 502


@pytest.fixture
def recheck_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A missing key re-checks the array's metadata when it was seen longer ago than this
    # (10 s by default); read when the server's view opens its stores.
    monkeypatch.setenv("WKJUPYTER_RECHECK", "0")


def test_deleted_s3_bucket_is_502(moto_s3: MotoS3Server, tmp_path: Path) -> None:
    key_id, secret = moto_s3.create_s3_user()
    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr"), bucket, "img")
    credential = S3Credential(key_id, secret, endpoint_url=moto_s3.endpoint_url)

    def delete_bucket() -> None:
        s3 = moto_s3.client()
        for item in s3.list_objects_v2(Bucket=bucket)["Contents"]:
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    # No recheck needed: S3 names the missing bucket (NoSuchBucket) on every request.
    source = f"s3://{bucket}/img"
    with serve_and_remove(tmp_path, source, delete_bucket, credential=credential) as served:
        assert_gone(served)


def test_deleted_gcs_bucket_is_502(
    gcs_emulator: GCSEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recheck_at_once: None,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint_url)
    bucket = gcs_emulator.make_bucket()
    keys = gcs_emulator.upload_tree(
        write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr"), bucket, "img"
    )

    def delete_bucket() -> None:
        base = f"{gcs_emulator.endpoint_url}/storage/v1/b/{bucket}"
        for key in keys:
            name = urllib.request.quote(key, safe="")
            urllib.request.urlopen(urllib.request.Request(f"{base}/o/{name}", method="DELETE"))
        urllib.request.urlopen(urllib.request.Request(base, method="DELETE"))
        with pytest.raises(urllib.error.HTTPError):  # really gone
            urllib.request.urlopen(base)

    with serve_and_remove(tmp_path, f"gs://{bucket}/img", delete_bucket) as served:
        assert_gone(served)


def test_http_array_metadata_removed_is_502(
    http_server: HTTPServerFactory, tmp_path: Path, recheck_at_once: None
) -> None:
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    remote = http_server(source.parent)
    zarray = source / "0" / ".zarray"
    with serve_and_remove(tmp_path, remote.url_for(source.name), zarray.unlink) as served:
        assert_gone(served, (ABSENT,))  # the stored chunk is still there, and served


def test_missing_chunks_of_a_present_source_still_read_as_fill(
    http_server: HTTPServerFactory, tmp_path: Path, recheck_at_once: None
) -> None:
    source = write_sparse_ome_zarr(tmp_path / "src" / "img.ome.zarr")
    remote = http_server(source.parent)
    with serve_and_remove(tmp_path, remote.url_for(source.name), lambda: None) as (server, array):
        remote.reset_log()
        assert fetch(server, ABSENT).status == 404
        expected = np.zeros((8, 32, 32), "uint8")
        expected[:4, :16, :16] = 7
        np.testing.assert_array_equal(array[0], expected)
        # With recheck 0 every miss re-checks the array's metadata (a HEAD), nothing else.
        heads = [r for r in remote.requests if r.method == "HEAD"]
        assert heads, remote.requests
        assert all(r.path.endswith("/0/.zarray") for r in heads), heads
