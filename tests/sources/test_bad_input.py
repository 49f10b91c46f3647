"""Bad input: every failure gives a report step (or an error) that says what went wrong, where.

Broken and missing metadata, refused and failing servers, unreachable hosts, timeouts,
unsupported data types and encodings, and hostile keys. Messages are user-facing, so the
tests assert their key phrases and that they name the URL; no message may carry a secret.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from wkjupyter.demo import make_volume, write_demo
from wkjupyter.errors import (
    HostUnreachableError,
    InvalidKeyError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
)
from wkjupyter.sources._fs import (
    AccessOptions,
    GcsCredential,
    S3Credential,
    Store,
    join_url,
    translate_error,
)
from wkjupyter.sources.explore import ExploreReport, ExploreStep, explore

if TYPE_CHECKING:
    from tests.servers import GCSEmulator, HTTPServerFactory, MotoS3Server

SHAPE = (40, 80, 100)  # two demo chunks along each axis


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "demo"
    write_demo(root, make_volume(SHAPE, cells=6))
    return root


def failed(report: ExploreReport, *phrases: str) -> ExploreStep:
    """The failed step whose message holds every phrase; the report found nothing."""
    assert not report, report
    for step in report.errors:
        if all(p in step.message for p in phrases):
            return step
    raise AssertionError(f"no failed step says {phrases}:\n{report}")


# -- malformed and missing metadata --------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


ZGROUP = json.dumps({"zarr_format": 2})
BROKEN = '{"multiscales": [ {"version": "0.4", '  # cut off mid-document


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("badmeta")
    # Malformed JSON, one document per format.
    write(root / "bad_zattrs" / ".zgroup", ZGROUP)
    write(root / "bad_zattrs" / ".zattrs", BROKEN)
    write(root / "bad_zarr3" / "zarr.json", '{"zarr_format": 3, "node_type": ')
    write(root / "bad_info" / "info", '{"@type": "neuroglancer_multiscale_volume", "scales": [}')
    write(root / "bad_n5" / "attributes.json", '{"n5": "4.0.0",, }')
    # Missing documents: multiscales naming an array that is not there; a precomputed scale
    # directory with a chunk but no info.
    multiscales = {
        "multiscales": [
            {
                "version": "0.4",
                "axes": [{"name": a, "type": "space"} for a in "zyx"],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}],
                    }
                ],
            }
        ]
    }
    write(root / "no_array.ome.zarr" / ".zgroup", ZGROUP)
    write(root / "no_array.ome.zarr" / ".zattrs", json.dumps(multiscales))
    write(root / "no_info" / "8_8_8" / "0-8_0-8_0-8", "\0" * 512)
    # Unsupported data type and encodings.
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "float64",
        "num_channels": 1,
        "scales": [
            {
                "key": "s0",
                "size": [8, 8, 8],
                "resolution": [1, 1, 1],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [[8, 8, 8]],
                "encoding": "raw",
            }
        ],
    }
    write(root / "float64" / "info", json.dumps(info))
    info["data_type"] = "uint8"
    info["scales"][0]["encoding"] = "fpzip"  # type: ignore[index]
    write(root / "fpzip" / "info", json.dumps(info))
    n5 = {"dimensions": [8, 8, 8], "blockSize": [4, 4, 4], "dataType": "uint8",
          "compression": {"type": "fancy-codec"}}  # fmt: skip
    write(root / "codec.n5" / "attributes.json", json.dumps(n5))
    zarray = {"zarr_format": 2, "shape": [8, 8, 8], "chunks": [4, 4, 4], "dtype": "<c16",
              "compressor": None, "fill_value": None, "order": "C", "filters": None}  # fmt: skip
    write(root / "complex.zarr" / ".zarray", json.dumps(zarray))
    return root


@pytest.fixture(params=["local", "http"])
def bad_url(request: pytest.FixtureRequest, bad_root: Path, http_server: HTTPServerFactory) -> Any:
    """``bad_url(name)``: the URL of a bad dataset, as a local path or over HTTP."""
    if request.param == "local":
        return lambda name: str(bad_root / name)
    return http_server(bad_root).url_for


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("bad_zattrs", ".zattrs"),
        ("bad_zarr3", "zarr.json"),
        ("bad_info", "info"),
        ("bad_n5", "attributes.json"),
    ],
)
def test_malformed_json(bad_url: Any, name: str, document: str) -> None:
    url = bad_url(name)
    step = failed(explore(url), "not valid JSON")
    assert f"{url}/{document}" in step.message
    assert step.url == url


def test_multiscales_pointing_at_a_missing_array(bad_url: Any) -> None:
    url = bad_url("no_array.ome.zarr")
    report = explore(url)
    step = failed(report, f"{url}/0/.zarray", "does not exist")
    assert step.format == "ome-ngff"


def test_precomputed_without_info(bad_url: Any) -> None:
    url = bad_url("no_info")
    report = explore(url)
    assert not report
    assert not report.ok
    tried = [s for s in report.steps if s.url == url]
    assert {s.format for s in tried} >= {"neuroglancer-precomputed", "zarr", "n5"}
    assert all(s.outcome == "no match" for s in tried if s.format != "explore"), report
    (last,) = [s for s in tried if s.format == "explore"]
    assert "no format recognised what is there" in last.message
    assert "datasource-properties.json" in last.message
    assert "found no dataset" in str(report)


@pytest.mark.parametrize(
    ("name", "phrases"),
    [
        ("float64", ("data_type 'float64' is not supported",)),
        ("fpzip", ("encoding 'fpzip' is not supported",)),
        ("codec.n5", ("compression 'fancy-codec'", "cannot read")),
        ("complex.zarr", ("complex128", "not an image type")),
    ],
)
def test_unsupported_dtype_or_encoding(bad_url: Any, name: str, phrases: tuple[str, ...]) -> None:
    url = bad_url(name)
    step = failed(explore(url), *phrases)
    assert url in step.message


# -- server failures -----------------------------------------------------------------------


def test_refused_403(http_server: HTTPServerFactory, demo_root: Path) -> None:
    server = http_server(demo_root)
    server.faults["/cells.ome.zarr"] = 403
    url = server.url_for("cells.ome.zarr")
    step = failed(explore(url), "was refused", "check the credential")
    assert url in step.message
    assert "no credential was given" in step.message


def test_nothing_there_404(http_server: HTTPServerFactory, demo_root: Path) -> None:
    server = http_server(demo_root)
    url = server.url_for("no/such/dataset")
    report = explore(url)
    assert not report
    assert report.steps
    assert all(s.outcome == "no match" for s in report.steps[:-1]), report
    assert all(s.url.startswith(url) for s in report.steps)
    assert f"found no dataset\n  [no match] webknossos at {url}" in str(report)
    assert "a plain HTTP server cannot list folders" in report.steps[-1].message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host() -> None:
    url = f"http://127.0.0.1:{closed_port()}/data/cells.ome.zarr"
    step = failed(explore(url), "cannot reach", "check the host name")
    assert url in step.message
    with pytest.raises(RemoteUnavailableError, match="cannot reach"):
        asyncio.run(Store(url).get(".zattrs"))


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unreachable_host_is_one_step(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{closed_port()}/x.zarr"
    report = explore(url)
    (step,) = report.steps  # not one per format
    assert (step.url, step.format, step.outcome) == (url, "host", "failed")
    assert step.message.startswith("the host did not answer, so no format was tried: cannot reach")
    assert step.message.endswith("; check the host name and your network")
    with pytest.raises(HostUnreachableError) as info:
        asyncio.run(Store(url).get(".zattrs"))
    assert isinstance(info.value, RemoteUnavailableError)


def test_an_unsupported_scheme_speaks_of_the_url() -> None:
    report = explore("ftp://example.org/x.zarr")
    (step,) = report.steps
    assert (step.format, step.outcome) == ("url", "failed")
    assert step.message == (
        "'ftp://example.org/x.zarr' uses 'ftp://', which wkjupyter cannot read; give a local "
        "path or a URL at http(s)://, gs://, s3://, s3+http(s):// or file:// (Neuroglancer "
        "sources such as precomputed://gs://bucket/path or gs://bucket/path|zarr3: work too)"
    )
    # A Neuroglancer source keeps speaking of the source.
    (step,) = explore("zarr://ftp://example.org/x.zarr").steps
    assert step.message.startswith("The Neuroglancer source 'zarr://ftp://example.org/x.zarr'")


def test_timeout(http_server: HTTPServerFactory, demo_root: Path) -> None:
    server = http_server(demo_root)
    server.faults["/cells.n5"] = "hang"
    url = server.url_for("cells.n5")
    start = time.perf_counter()
    report = explore(url, options=AccessOptions(timeout=1))
    assert time.perf_counter() - start < 5
    step = failed(report, "timed out", "AccessOptions(timeout=")
    assert url in step.message


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_in_metadata(
    http_server: HTTPServerFactory, demo_root: Path, status: int
) -> None:
    server = http_server(demo_root)
    server.faults["/cells_precomputed/image/info"] = status
    url = server.url_for("cells_precomputed/image")
    step = failed(explore(url), "failed", "try again later", str(status))
    assert f"{url}/info" in step.message


CHUNK_PREFIXES = {
    "cells.ome.zarr": "/cells.ome.zarr/0/0",  # chunk keys "0/0/0" below array "0"
    "cells.n5": "/cells.n5/raw/s0/0",  # blocks "s0/0/0/0"
    "cells_precomputed": "/cells_precomputed/image/8_8_40/",  # chunk files of the first scale
}


@pytest.mark.parametrize("dataset", list(CHUNK_PREFIXES))
@pytest.mark.parametrize("fault", [500, 503])
def test_server_error_on_a_chunk_raises(
    http_server: HTTPServerFactory, demo_root: Path, dataset: str, fault: int
) -> None:
    server = http_server(demo_root)
    report = explore(server.url_for(dataset))
    assert report.datasource is not None, report
    layer = next(la for la in report.datasource.layers.values() if la.category == "color")
    server.faults[CHUNK_PREFIXES[dataset]] = fault
    with pytest.raises(RemoteUnavailableError, match=f"{fault}.*try again later"):
        layer.read(mag="1")  # never the fill value
    del server.faults[CHUNK_PREFIXES[dataset]]
    assert np.any(layer.read(mag="1"))


def test_hanging_chunk_times_out(
    http_server: HTTPServerFactory, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WKJUPYTER_TIMEOUT", "1")
    server = http_server(demo_root)
    report = explore(server.url_for("cells.n5"))
    assert report.datasource is not None, report
    layer = report.datasource.layers["raw"]
    server.faults["/cells.n5/raw/s1/0"] = "hang"
    with pytest.raises(RemoteUnavailableError, match="timed out"):
        layer.read(mag="2")


def test_s3_missing_bucket_and_wrong_key(moto_s3: MotoS3Server) -> None:
    cred = S3Credential(moto_s3.key_id, moto_s3.secret, endpoint_url=moto_s3.endpoint_url)
    report = explore("s3://no-such-bucket-here/data.zarr", credential=cred)
    assert not report
    wrong = S3Credential("AKIAWRONG000000", "the-wrong-secret", endpoint_url=moto_s3.endpoint_url)
    bucket = moto_s3.make_bucket()
    url = f"s3://{bucket}/data.zarr"
    report = explore(url, credential=wrong)
    step = failed(report, "was refused", "S3Credential")
    assert url in step.message
    assert "the-wrong-secret" not in str(report)
    with pytest.raises(RemoteAccessError):
        asyncio.run(Store(url, wrong).get(".zattrs"))


def test_gcs_credential_secrets_stay_out_of_messages(gcs_emulator: GCSEmulator) -> None:
    private = (
        "-----BEGIN PRIVATE KEY-----\nnot-really-a-key-but-secret\n-----END PRIVATE KEY-----\n"
    )
    account = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "0123456789abcdef",
        "private_key": private,
        "client_email": "x@p.iam.gserviceaccount.com",
        "token_uri": f"{gcs_emulator.endpoint_url}/token",
    }
    cred = GcsCredential(json.dumps(account), endpoint_url=gcs_emulator.endpoint_url)
    bucket = gcs_emulator.make_bucket()
    report = explore(f"gs://{bucket}/x.zarr", credential=cred, options=AccessOptions(timeout=5))
    assert not report
    text = str(report) + repr(report) + "".join(s.message for s in report.steps)
    for secret in ("not-really-a-key-but-secret", "0123456789abcdef"):
        assert secret not in text
    assert report.errors, report


# -- hostile keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "..",
        "../x",
        "a/../../x",
        "./../x",
        "a/b/../../../x",
        "/etc/passwd",
        "s3://other/x",
        "a\\b",
        "a\0b",
        "a\nb",
    ],
)
def test_hostile_keys_are_refused(
    key: str, http_server: HTTPServerFactory, demo_root: Path
) -> None:
    server = http_server(demo_root)
    for url in (str(demo_root / "cells.n5"), server.url_for("cells.n5"), "s3://bucket/x"):
        store = Store(url)
        for call in (store.get(key), store.exists(key), store.list_dir(key)):
            with pytest.raises(InvalidKeyError, match="invalid storage key"):
                asyncio.run(call)
    assert server.requests == []


def test_dot_segments_inside_the_store_are_fine(demo_root: Path) -> None:
    store = Store(str(demo_root / "cells.n5"))
    doc = asyncio.run(store.read_json("raw/../raw/./s0//attributes.json"))
    assert isinstance(doc, dict)
    assert doc["dataType"] == "uint8"


def test_urls_cannot_climb_above_their_root() -> None:
    with pytest.raises(InvalidKeyError, match="climbs above"):
        Store("https://host/a").child("../../etc")
    with pytest.raises(InvalidKeyError, match="climbs above"):
        Store("s3://bucket/a").child("../../other-bucket")


def test_weird_characters_in_keys(http_server: HTTPServerFactory, tmp_path: Path) -> None:
    names = ["a b", "50%", "x#y", "q?s=1", "ü€", "a+b&c=d", "%2F", "semi;colon", "'quote'"]
    for name in names:
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(name.encode())
    server = http_server(tmp_path)
    for url in (str(tmp_path / "d"), server.url_for("d")):
        store = Store(url)

        async def check(store: Store = store) -> None:
            got = await asyncio.gather(*(store.get(n) for n in names))
            assert got == [n.encode() for n in names]
            assert sorted(await store.list_dir()) == sorted(names)
            assert all(await asyncio.gather(*(store.exists(n) for n in names)))

        asyncio.run(check())
    assert Store(server.url_for("d")).join("x#y") == server.url_for("d") + "/x%23y"


def test_query_strings_stay_at_the_end() -> None:
    assert (
        join_url("https://h/data.zarr?sig=abc", "0/.zarray")
        == "https://h/data.zarr/0/.zarray?sig=abc"
    )
    assert Store("https://h/d?x=1").child("a b").url == "https://h/d/a%20b?x=1"


def test_user_info_never_reaches_messages() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*") as info:
        Store("s3://AKIA:very-secret@bucket/x")
    assert "very-secret" not in str(info.value)
    with pytest.raises(ValueError, match=r"\*\*\*.*HttpCredential") as info:
        Store("http://alice:very-secret@127.0.0.1:9/x")
    assert "very-secret" not in str(info.value)
    assert "alice" not in str(info.value)


# -- error mapping of the libraries' own exceptions ----------------------------------------


def aiohttp_status(status: int) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(URL("https://h/x"), "GET", CIMultiDictProxy(CIMultiDict()))
    return aiohttp.ClientResponseError(info, (), status=status, message="boom")


def botocore_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error: Exception = ClientError(response, "GetObject")
    return error


def s3fs_error(code: str, status: int) -> Exception:
    from s3fs.errors import translate_boto_error

    return translate_boto_error(botocore_error(code, status))  # type: ignore[no-any-return]


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def gcsfs_error(status: int) -> Exception:
    from gcsfs.retry import HttpError

    return HttpError({"code": status, "message": "backend error"})  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "kind", "phrase"),
    [
        (lambda: aiohttp_status(500), RemoteUnavailableError, "try again later"),
        (lambda: aiohttp_status(401), RemoteAccessError, "refused"),
        (lambda: s3fs_error("InternalError", 500), RemoteUnavailableError, "try again later"),
        (lambda: s3fs_error("ServiceUnavailable", 503), RemoteUnavailableError, "try again"),
        (lambda: s3fs_error("SlowDown", 503), RemoteUnavailableError, "try again later"),
        (lambda: s3fs_error("AccessDenied", 403), RemoteAccessError, "check the credential"),
        (lambda: s3fs_error("NoSuchKey", 404), RemoteNotFoundError, "does not exist"),
        (lambda: gcsfs_error(503), RemoteUnavailableError, "try again later"),
        (lambda: OSError("Forbidden: b/x\nno access"), RemoteAccessError, "refused"),
        # fsspec's HTTP info() turns any failure into FileNotFoundError: a 5xx stays a 5xx.
        (
            lambda: wrapped(FileNotFoundError("x"), aiohttp_status(502)),
            RemoteUnavailableError,
            "try again later",
        ),
        (
            lambda: wrapped(OSError(errno.EIO, "x"), TimeoutError()),
            RemoteUnavailableError,
            "timed out",
        ),
    ],
)
def test_library_errors_map_to_ours(make: Any, kind: type, phrase: str) -> None:
    mapped = translate_error(make(), "s3://bucket/x/.zattrs")
    assert type(mapped) is kind
    assert phrase in str(mapped)
    assert "'s3://bucket/x/.zattrs'" in str(mapped)


class _FailingFs:
    """A filesystem whose reads fail with a 5xx wrapped as "not found"."""

    async def _cat_file(self, path: str, start: Any = None, end: Any = None) -> bytes:
        raise wrapped(FileNotFoundError(path), gcsfs_error(503))

    async def _info(self, path: str) -> dict[str, Any]:
        raise wrapped(FileNotFoundError(path), gcsfs_error(503))


def test_a_5xx_is_never_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store("gs://bucket/data", GcsCredential("{}"))

    async def fake_fs(self: Store) -> Any:
        return _FailingFs()

    monkeypatch.setattr(Store, "filesystem", fake_fs)
    for call in (store.get("0/0/0"), store.exists("0/0/0"), store.get("x", (0, 4))):
        with pytest.raises(RemoteUnavailableError, match="try again later"):
            asyncio.run(call)
