"""Store-level upstream limits and gone sources (issue 9 §1, §2); the server side is in
tests/server/test_upstream_limits.py and tests/server/test_source_failures.py."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.server.conftest import write_sparse_ome_zarr
from wkjupyter.errors import RemoteUnavailableError, SourceGoneError, UpstreamBusyError
from wkjupyter.sources._fs import AccessOptions, S3Credential, Store, serving

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import HTTPServerFactory, MotoS3Server

CHUNK = "0/0/0"


async def gather_timed(store: Store, n: int) -> list[tuple[str, float]]:
    async def one() -> tuple[str, float]:
        start = time.monotonic()
        try:
            await store.get(CHUNK)
            outcome = "ok"
        except UpstreamBusyError:
            outcome = "busy"
        except RemoteUnavailableError as err:
            outcome = "timeout" if "timed out" in str(err) else f"failed: {err}"
        return outcome, time.monotonic() - start

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_serving_bounds_the_wait_per_host(http_server: HTTPServerFactory, tmp_path: Path) -> None:
    source = write_sparse_ome_zarr(tmp_path / "img.ome.zarr")
    frozen = http_server(source, hang_seconds=30)
    healthy = http_server(source)
    frozen.faults["/"] = "hang"
    options = AccessOptions(concurrency=2, timeout=1.0, max_queued=3)

    async def run() -> tuple[list[tuple[str, float]], float]:
        with serving():
            frozen_store = Store(frozen.url_for("0"), None, options)
            stuck = asyncio.ensure_future(gather_timed(frozen_store, 10))
            await asyncio.sleep(0.1)
            start = time.monotonic()
            assert await Store(healthy.url_for("0"), None, options).get(CHUNK)
            took = time.monotonic() - start
            return await stuck, took

    outcomes, took = asyncio.run(run())
    assert took < 0.5, took  # another host's slots
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["busy"] * 5 + ["timeout"] * 5, kinds  # 2 in flight + 3 waiting time out
    assert max(t for kind, t in outcomes if kind == "busy") < 0.5
    assert max(t for _, t in outcomes) < 1.5  # the deadline covers the wait for a slot


def test_library_reads_wait_for_a_slot(http_server: HTTPServerFactory, tmp_path: Path) -> None:
    """Outside ``serving`` a read's own requests queue as long as needed: none refused."""
    source = write_sparse_ome_zarr(tmp_path / "img.ome.zarr")
    slow = http_server(source, latency=0.1)
    options = AccessOptions(concurrency=2, timeout=0.5, max_queued=1)
    outcomes = asyncio.run(gather_timed(Store(slow.url_for("0"), None, options), 16))
    assert [kind for kind, _ in outcomes] == ["ok"] * 16  # 8 waves of 0.1 s > the timeout


def test_deleted_bucket_is_gone_not_absent(moto_s3: MotoS3Server, tmp_path: Path) -> None:
    key_id, secret = moto_s3.create_s3_user()
    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(write_sparse_ome_zarr(tmp_path / "img.ome.zarr"), bucket, "img")
    credential = S3Credential(key_id, secret, endpoint_url=moto_s3.endpoint_url)
    store = Store(f"s3://{bucket}/img/0", credential)
    assert asyncio.run(store.get("9/9/9")) is None  # not stored
    s3 = moto_s3.client()
    for item in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)
    for read in (store.get(CHUNK), store.exists(".zarray"), store.list_dir("")):
        with pytest.raises(SourceGoneError, match="NoSuchBucket"):
            asyncio.run(read)  # type: ignore[arg-type]


def test_vanished_metadata_makes_misses_fail(
    http_server: HTTPServerFactory, tmp_path: Path
) -> None:
    source = write_sparse_ome_zarr(tmp_path / "img.ome.zarr")
    remote = http_server(source)
    store = Store(remote.url_for("0"), None, AccessOptions(recheck=0.2))

    async def run() -> None:
        assert await store.read_json(".zarray")
        assert await store.get("1/1/1") is None  # seen just now: no re-check
        (source / "0" / ".zarray").unlink()
        assert await store.get("1/1/1") is None  # within the interval
        await asyncio.sleep(0.25)
        with pytest.raises(SourceGoneError, match=r"\.zarray"):
            await store.get("1/1/1")
        assert await store.get(CHUNK)  # stored chunks still read
        heads = [r for r in remote.requests if r.method == "HEAD"]
        assert len(heads) == 1, heads  # one re-check per interval

    asyncio.run(run())
