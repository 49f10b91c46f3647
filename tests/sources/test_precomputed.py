"""Neuroglancer precomputed (formats.md §3) written by tensorstore and cloud-volume.

Datasets: raw uint8 (three scales, voxel offsets, a deleted chunk) and uint16 (two
channels, a negative offset); compressed_segmentation uint64 and uint32; sharded
segmentation (murmurhash3, gzip indices and data, an unwritten region) and sharded image
(identity hash); jpeg (three channels) and png (uint16); cloud-volume's ``.gz`` chunk files.
Each is read locally and over HTTP: a server with Range support, one that serves
``Content-Encoding: gzip``, and S3 (moto).
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tensorstore as ts

from tests.sources.conformance import Case, ExpectedLayer, ExpectedMag, expected_region
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.sources import precomputed
from wkjupyter.sources._fs import S3Credential, Store

if TYPE_CHECKING:
    from tests.servers import HTTPServerFactory
    from wkjupyter.datasource import Layer

SIZE = (70, 90, 44)  # x, y, z of mag 1: chunks of (32, 32, 16) leave partial edge chunks
CHUNK = (32, 32, 16)
SHARDING = {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 1,
            "hash": "murmurhash3_x86_128", "minishard_bits": 2, "shard_bits": 2,
            "minishard_index_encoding": "gzip", "data_encoding": "gzip"}  # fmt: skip
IDENTITY_SHARDING = {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
                     "hash": "identity", "minishard_bits": 1, "shard_bits": 1}  # fmt: skip


@dataclass
class Dataset:
    path: Path
    layer: ExpectedLayer


def scale(
    res: tuple[float, float, float],
    size: tuple[int, int, int],
    offset: tuple[int, int, int] = (0, 0, 0),
    chunk: tuple[int, int, int] = CHUNK,
    encoding: str = "raw",
    **extra: Any,
) -> dict[str, Any]:
    return {"resolution": list(res), "size": list(size), "voxel_offset": list(offset),
            "chunk_size": list(chunk), "encoding": encoding, **extra}  # fmt: skip


def image(rng: np.random.Generator, c: int, size: tuple[int, ...], dtype: str) -> np.ndarray:
    """Smooth-ish (c, z, y, x) data, so lossy codecs keep it recognisable."""
    x, y, z = size
    info = np.iinfo(dtype)
    base = rng.integers(0, info.max // 2, (c, z, y, x), dtype=np.int64)
    ramp = (np.arange(x)[None, None, None, :] * 3 + np.arange(y)[None, None, :, None]) % 64
    return (base + ramp * (info.max // 256)).astype(dtype)


def labels(rng: np.random.Generator, size: tuple[int, ...], dtype: str) -> np.ndarray:
    x, y, z = size
    table = rng.integers(1, np.iinfo(dtype).max, 12, dtype=dtype, endpoint=True)
    table[0] = 0
    blocks = rng.integers(0, 12, (z // 4 + 1, y // 4 + 1, x // 4 + 1))
    return table[blocks.repeat(4, 0).repeat(4, 1).repeat(4, 2)[None, :z, :y, :x]]


def write_ts(
    path: Path,
    multiscale: dict[str, Any],
    scales: list[tuple[dict[str, Any], np.ndarray]],
    skip_z: int = 0,
) -> list[np.ndarray]:
    """Write (scale_metadata, (c, z, y, x) data) pairs with tensorstore.

    Returns what tensorstore reads back (for lossy jpeg). ``skip_z`` leaves the first
    ``skip_z`` z-planes of the first scale unwritten (missing chunks).
    """
    out = []
    for i, (meta, data) in enumerate(scales):
        spec: dict[str, Any] = {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{path}/",
            "scale_metadata": meta,
        }
        if i == 0:
            spec["multiscale_metadata"] = multiscale
        store = ts.open(spec, create=True, delete_existing=i == 0).result()
        local = store.translate_to[0, 0, 0, 0]
        skip = skip_z if i == 0 else 0
        local[:, :, skip:, :] = data.T[:, :, skip:, :]
        out.append(np.ascontiguousarray(local.read().result().T))
    return out


def expected(
    name: str,
    category: str,
    scales: list[tuple[dict[str, Any], np.ndarray]],
    data: list[np.ndarray],
    missing: list[BoundingBox] | None = None,
) -> ExpectedLayer:
    first = scales[0][0]["resolution"]
    mags = {}
    for (meta, _), arr in zip(scales, data, strict=True):
        factors = [round(r / f) for r, f in zip(meta["resolution"], first, strict=True)]
        ox, oy, oz = meta["voxel_offset"]
        mags[str(Mag.from_xyz(factors))] = ExpectedMag(arr, (oz, oy, ox))
    dtype = str(data[0].dtype)
    return ExpectedLayer(
        name, category, dtype, (first[2], first[1], first[0]), mags, missing=missing or []
    )


def half(size: tuple[int, int, int], z: bool = False) -> tuple[int, int, int]:
    return (-(-size[0] // 2), -(-size[1] // 2), -(-size[2] // 2) if z else size[2])


def build_tensorstore(root: Path, rng: np.random.Generator) -> dict[str, Dataset]:
    out = {}
    s2, s4 = half(SIZE), half(half(SIZE), z=True)

    # raw uint8, three scales with offsets; chunk (1, 1, 1) of mag 1 deleted.
    scales = [
        (scale((4, 4, 40), SIZE, (5, 6, 7)), image(rng, 1, SIZE, "uint8")),
        (scale((8, 8, 40), s2, (2, 3, 7)), image(rng, 1, s2, "uint8")),
        (scale((16, 16, 80), s4, (1, 1, 3), (16, 16, 16)), image(rng, 1, s4, "uint8")),
    ]
    multi = {"type": "image", "data_type": "uint8", "num_channels": 1}
    data = write_ts(root / "raw_u8", multi, scales)
    (root / "raw_u8" / "4_4_40" / "37-69_38-70_23-39").unlink()
    data[0][:, 16:32, 32:64, 32:64] = 0
    gone = BoundingBox.of((23, 38, 37), (16, 32, 32))
    out["raw_u8"] = Dataset(root / "raw_u8", expected("raw_u8", "color", scales, data, [gone]))

    # raw uint16, two channels, a negative offset.
    scales = [
        (scale((4, 4, 40), SIZE, (-10, 0, 3)), image(rng, 2, SIZE, "uint16")),
        (scale((8, 8, 40), s2, (-5, 0, 3)), image(rng, 2, s2, "uint16")),
    ]
    multi = {"type": "image", "data_type": "uint16", "num_channels": 2}
    data = write_ts(root / "raw_u16", multi, scales)
    out["raw_u16"] = Dataset(root / "raw_u16", expected("raw_u16", "color", scales, data))

    for dtype, block in (("uint64", [8, 8, 8]), ("uint32", [4, 4, 2])):
        name = f"cseg_{dtype}"
        cseg = {"compressed_segmentation_block_size": block}
        scales = [
            (scale((4, 4, 40), SIZE, (1, 2, 3), CHUNK, "compressed_segmentation", **cseg),
             labels(rng, SIZE, dtype)),
            (scale((8, 8, 40), s2, (0, 1, 3), CHUNK, "compressed_segmentation", **cseg),
             labels(rng, s2, dtype)),
        ]  # fmt: skip
        multi = {"type": "segmentation", "data_type": dtype, "num_channels": 1}
        data = write_ts(root / name, multi, scales)
        out[name] = Dataset(root / name, expected(name, "segmentation", scales, data))

    # Sharded cseg segmentation (murmur, gzip), z < 16 unwritten; an unsharded raw mag 2.
    sharded = {"compressed_segmentation_block_size": [8, 8, 8], "sharding": SHARDING}
    scales = [
        (scale((4, 4, 40), SIZE, (5, 6, 7), CHUNK, "compressed_segmentation", **sharded),
         labels(rng, SIZE, "uint64")),
        (scale((8, 8, 40), s2, (2, 3, 7)), labels(rng, s2, "uint64")),
    ]  # fmt: skip
    multi = {"type": "segmentation", "data_type": "uint64", "num_channels": 1}
    data = write_ts(root / "sharded_murmur", multi, scales, skip_z=16)
    gone = BoundingBox.of((7, 6, 5), (16, 90, 70))
    layer = expected("sharded_murmur", "segmentation", scales, data, [gone])
    out["sharded_murmur"] = Dataset(root / "sharded_murmur", layer)

    scales = [
        (scale((4, 4, 40), SIZE, (0, 0, 0), CHUNK, sharding=IDENTITY_SHARDING),
         image(rng, 1, SIZE, "uint8")),
        (scale((8, 8, 80), half(SIZE, z=True), (0, 0, 0), CHUNK, sharding=IDENTITY_SHARDING),
         image(rng, 1, half(SIZE, z=True), "uint8")),
    ]  # fmt: skip
    multi = {"type": "image", "data_type": "uint8", "num_channels": 1}
    data = write_ts(root / "sharded_identity", multi, scales)
    out["sharded_identity"] = Dataset(
        root / "sharded_identity", expected("sharded_identity", "color", scales, data)
    )

    scales = [(scale((4, 4, 40), SIZE, (3, 0, 1), CHUNK, "jpeg"), image(rng, 3, SIZE, "uint8"))]
    multi = {"type": "image", "data_type": "uint8", "num_channels": 3}
    data = write_ts(root / "jpeg_rgb", multi, scales)  # lossy: expect tensorstore's reading
    out["jpeg_rgb"] = Dataset(root / "jpeg_rgb", expected("jpeg_rgb", "color", scales, data))

    scales = [(scale((4, 4, 40), SIZE, (0, 7, 0), CHUNK, "png"), image(rng, 1, SIZE, "uint16"))]
    multi = {"type": "image", "data_type": "uint16", "num_channels": 1}
    data = write_ts(root / "png_u16", multi, scales)
    out["png_u16"] = Dataset(root / "png_u16", expected("png_u16", "color", scales, data))
    return out


def build_cloudvolume(root: Path, rng: np.random.Generator) -> Dataset:
    """cloud-volume's defaults: gzip-compressed chunk files named ``*.gz`` (formats.md §3)."""
    from cloudvolume import CloudVolume  # type: ignore[import-untyped]

    path = root / "cv_gz"
    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="image", data_type="uint8", encoding="raw",
        resolution=[4, 4, 40], voxel_offset=[3, 4, 5], volume_size=list(SIZE),
        chunk_size=list(CHUNK),
    )  # fmt: skip
    vol = CloudVolume(f"file://{path}", info=info, progress=False)
    vol.add_scale((2, 2, 1), chunk_size=[16, 16, 16])
    vol.commit_info()
    mags = [image(rng, 1, SIZE, "uint8"), image(rng, 1, half(SIZE), "uint8")]
    vol[:, :, :] = mags[0].T
    CloudVolume(f"file://{path}", mip=1, progress=False)[:, :, :] = mags[1].T
    (path / "4_4_40" / "35-67_36-68_21-37.gz").unlink()
    mags[0][:, 16:32, 32:64, 32:64] = 0
    gone = BoundingBox.of((21, 36, 35), (16, 32, 32))
    doc = json.loads((path / "info").read_text())
    scales = list(zip(doc["scales"], mags, strict=True))
    return Dataset(path, expected("cv_gz", "color", scales, mags, [gone]))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    root = tmp_path_factory.mktemp("precomputed")
    rng = np.random.default_rng(42)
    out = build_tensorstore(root, rng)
    out["cv_gz"] = build_cloudvolume(root, rng)
    return out


# -- helpers --------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def explore_one(url: str, credential: Any = None) -> Layer:
    layers = await precomputed.explore(Store(url, credential))
    assert layers is not None
    assert len(layers) == 1
    return layers[0]


async def read_layer(layer: Layer, mag: str, box: BoundingBox | None = None) -> np.ndarray:
    """Layer.read's arithmetic over this module's own open_array."""
    m = Mag(mag)
    level = layer.mags[m]
    array = await precomputed.open_array(Store(level.path, layer.credential), level)
    box = (box or layer.bbox).in_mag(m)
    start, end = box.offset - level.offset, box.end - level.offset
    region = [slice(0, array.shape[0])] + [slice(a, b) for a, b in zip(start, end, strict=True)]
    return await array.read(region)


def assert_layer_reads(layer: Layer, exp: ExpectedLayer) -> None:
    for name, mag_exp in exp.mags.items():
        got = run(read_layer(layer, name))
        want = expected_region(mag_exp, exp.bbox.in_mag(Mag(name)), 0, exp.dtype)
        np.testing.assert_array_equal(got, want, err_msg=f"{exp.name} mag {name}")


ALL = ["raw_u8", "raw_u16", "cseg_uint64", "cseg_uint32", "sharded_murmur",
       "sharded_identity", "jpeg_rgb", "png_u16", "cv_gz"]  # fmt: skip


# -- the conformance suite --------------------------------------------------------------------


def _explore_ready() -> bool:
    try:
        for name in ("n5", "ngff", "webknossos", "zarr"):
            importlib.import_module(f"wkjupyter.sources.{name}")
    except ImportError:
        return False
    return True


@pytest.fixture(params=[*ALL, "http-gzip:cv_gz", "http:sharded_murmur"])
def case(request: pytest.FixtureRequest, datasets: dict[str, Dataset]) -> Case:
    transport, _, name = str(request.param).rpartition(":")
    ds = datasets[name]
    url = str(ds.path)
    if transport:
        factory: HTTPServerFactory = request.getfixturevalue("http_server")
        server = factory(ds.path.parent, gzip_encoded=transport == "http-gzip")
        url = server.url_for(name)
    return Case(url, [ds.layer], format="neuroglancer-precomputed")


if _explore_ready():
    from tests.sources.conformance import SourceTests

    class TestPrecomputedConformance(SourceTests):
        """The shared suite over every dataset above (explore picks the format)."""


# -- explore and read, directly ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_explore_metadata(datasets: dict[str, Dataset], name: str) -> None:
    ds = datasets[name]
    layer = run(explore_one(str(ds.path)))
    exp = ds.layer
    info = json.loads((ds.path / "info").read_text())
    assert layer.name == name
    assert layer.category == exp.category
    assert layer.dtype == np.dtype(exp.dtype)
    assert layer.num_channels == exp.num_channels == info["num_channels"]
    assert layer.bbox == exp.bbox
    assert layer.voxel_size.as_tuple() == pytest.approx(exp.voxel_size)
    assert layer.voxel_size.unit == "nanometer"
    assert [str(m) for m in layer.mags] == list(exp.mags)
    for (mag, level), s in zip(layer.mags.items(), info["scales"], strict=True):
        assert level.format == "neuroglancerPrecomputed"
        assert level.path == str(ds.path)
        assert level.hints == {"scale": s["key"]}
        assert level.offset == Vec3.from_xyz(s["voxel_offset"])
        assert level.offset == Vec3.of(exp.mags[str(mag)].offset)


@pytest.mark.parametrize("name", ALL)
def test_read_every_mag(datasets: dict[str, Dataset], name: str) -> None:
    ds = datasets[name]
    assert_layer_reads(run(explore_one(str(ds.path))), ds.layer)


@pytest.mark.parametrize("name", ["raw_u16", "sharded_murmur", "jpeg_rgb", "cv_gz"])
def test_partial_reads_across_chunk_edges(datasets: dict[str, Dataset], name: str) -> None:
    ds = datasets[name]
    layer = run(explore_one(str(ds.path)))
    rng = np.random.default_rng(1)
    for _ in range(8):
        start = [
            int(rng.integers(o - 4, o + s))
            for o, s in zip(layer.bbox.offset, layer.bbox.shape, strict=True)
        ]
        box = BoundingBox.of(start, [int(v) for v in rng.integers(1, 40, 3)])
        got = run(read_layer(layer, "1", box))
        want = expected_region(ds.layer.mags["1"], box, 0, ds.layer.dtype)
        np.testing.assert_array_equal(got, want, err_msg=str(box))


def test_missing_chunks_read_as_zero(datasets: dict[str, Dataset]) -> None:
    for name in ("raw_u8", "sharded_murmur", "cv_gz"):
        layer = run(explore_one(str(datasets[name].path)))
        for box in datasets[name].layer.missing:
            assert not run(read_layer(layer, "1", box)).any(), name


def test_cloudvolume_chunks_are_gz_files(datasets: dict[str, Dataset]) -> None:
    names = [p.name for p in (datasets["cv_gz"].path / "4_4_40").iterdir()]
    assert names
    assert all(n.endswith(".gz") for n in names)


def test_gzip_bytes_under_the_plain_name(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    """S3/GCS hand back an object stored with ``Content-Encoding: gzip`` still compressed."""
    path = tmp_path / "cv_gz"
    shutil.copytree(datasets["cv_gz"].path, path)
    for f in path.glob("*/*.gz"):
        f.rename(f.with_suffix(""))
    assert_layer_reads(run(explore_one(str(path))), datasets["cv_gz"].layer)


def test_raw_chunk_starting_with_gzip_magic_is_not_gunzipped(tmp_path: Path) -> None:
    data = np.zeros((1, 16, 32, 32), dtype=np.uint8)
    data[0, 0, 0, :2] = (0x1F, 0x8B)
    meta = scale((4, 4, 40), (32, 32, 16), (0, 0, 0), (32, 32, 16))
    write_ts(tmp_path / "magic", {"type": "image", "data_type": "uint8", "num_channels": 1},
             [(meta, data)])  # fmt: skip
    assert (tmp_path / "magic" / "4_4_40" / "0-32_0-32_0-16").read_bytes()[:2] == b"\x1f\x8b"
    layer = run(explore_one(str(tmp_path / "magic")))
    np.testing.assert_array_equal(run(read_layer(layer, "1")), data)


def test_scale_keys_with_subpaths_and_dotdot(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    src = datasets["raw_u16"].path
    root = tmp_path / "ds"
    shutil.copytree(src / "4_4_40", tmp_path / "elsewhere" / "s0")
    shutil.copytree(src / "8_8_40", root / "deep" / "s1")
    info = json.loads((src / "info").read_text())
    info["scales"][0]["key"] = "../elsewhere/s0"
    info["scales"][1]["key"] = "deep/s1"
    (root / "info").write_text(json.dumps(info))
    layer = run(explore_one(str(root)))
    assert [lv.hints["scale"] for lv in layer.mags.values()] == ["../elsewhere/s0", "deep/s1"]
    assert_layer_reads(layer, datasets["raw_u16"].layer)


def test_layer_name_is_url_safe(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "my data (v2)!"
    shutil.copytree(datasets["png_u16"].path, path)
    assert run(explore_one(str(path))).name == "my_data_v2"
    assert precomputed.layer_name("gs://bucket/") == "bucket"


def test_open_array_by_mag_without_hint(datasets: dict[str, Dataset]) -> None:
    from dataclasses import replace

    layer = run(explore_one(str(datasets["raw_u8"].path)))
    level = replace(layer.mags[Mag("2-2-1")], hints={})
    array = run(precomputed.open_array(Store(level.path), level))
    assert array.url.endswith("8_8_40")
    assert array.shape == (1, 44, 45, 35)
    assert array.chunk_shape == (1, 16, 32, 32)


def test_arrays_pickle(datasets: dict[str, Dataset]) -> None:
    layer = run(explore_one(str(datasets["sharded_murmur"].path)))
    level = layer.mags[Mag(1)]

    async def go() -> tuple[np.ndarray, np.ndarray]:
        array = await precomputed.open_array(Store(level.path), level)
        region = [slice(0, s) for s in array.shape]
        first = await array.read(region)
        clone = pickle.loads(pickle.dumps(array))
        return first, await clone.read(region)

    first, second = run(go())
    np.testing.assert_array_equal(first, second)


# -- pass-through ---------------------------------------------------------------------------


def _decode_with_zarr(raw: bytes, array: precomputed.PrecomputedArray) -> np.ndarray:
    """Decode ``raw`` as one chunk of a Zarr v3 array with the advertised codec chain."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    codec = array.passthrough_codec
    assert codec is not None
    meta = {"zarr_format": 3, "node_type": "array", "shape": list(array.chunk_shape),
            "data_type": array.dtype.name, "fill_value": 0, "codecs": codec["codecs"],
            "chunk_grid": {"name": "regular",
                           "configuration": {"chunk_shape": list(array.chunk_shape)}},
            "chunk_key_encoding": {"name": "default"}}  # fmt: skip
    proto = default_buffer_prototype()

    async def go() -> np.ndarray:
        store = zarr.storage.MemoryStore()
        await store.set("zarr.json", proto.buffer.from_bytes(json.dumps(meta).encode()))
        await store.set("c/0/0/0/0", proto.buffer.from_bytes(raw))
        out: np.ndarray = np.asarray(zarr.open_array(store, mode="r")[...])
        return out

    decoded: np.ndarray = run(go())
    return decoded


@pytest.mark.parametrize("name", ["raw_u16", "cv_gz"])
def test_raw_chunks_pass_through_as_zarr_v3(datasets: dict[str, Dataset], name: str) -> None:
    layer = run(explore_one(str(datasets[name].path)))
    level = layer.mags[Mag(1)]
    array = run(precomputed.open_array(Store(level.path), level))
    assert array.passthrough_codec == {
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
    }
    interior = (0, 0, 1, 1)
    raw = run(array.raw_chunk(interior))
    assert raw is not None
    np.testing.assert_array_equal(
        _decode_with_zarr(raw.data, array), run(array.read_chunk(interior))
    )
    edge = (0, *(g - 1 for g in array.grid_shape[1:]))
    assert run(array.raw_chunk(edge)) is None  # clipped: not a full Zarr chunk


@pytest.mark.parametrize("name", ["cseg_uint64", "sharded_identity", "jpeg_rgb"])
def test_no_pass_through_for_other_encodings(datasets: dict[str, Dataset], name: str) -> None:
    layer = run(explore_one(str(datasets[name].path)))
    level = layer.mags[Mag(1)]
    array = run(precomputed.open_array(Store(level.path), level))
    assert array.passthrough_codec is None
    assert run(array.raw_chunk((0, 0, 0, 0))) is None


# -- remote ---------------------------------------------------------------------------------


@pytest.fixture
def range_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, int]]:
    """(path, Range header, file size) of every file the test HTTP server sends."""
    from tests import servers

    log: list[tuple[str, str | None, int]] = []
    original = servers._RangeHandler._send_file

    def send_file(self: Any, path: Path, name: str, encoding: str | None, **kw: Any) -> None:
        log.append((self.path, self.headers.get("Range"), path.stat().st_size))
        original(self, path, name, encoding, **kw)

    monkeypatch.setattr(servers._RangeHandler, "_send_file", send_file)
    return log


@pytest.mark.parametrize("name", ["sharded_murmur", "sharded_identity"])
def test_http_sharded_reads_use_ranges_only(
    datasets: dict[str, Dataset],
    http_server: HTTPServerFactory,
    range_log: list[tuple[str, str | None, int]],
    name: str,
) -> None:
    ds = datasets[name]
    server = http_server(ds.path.parent)
    assert_layer_reads(run(explore_one(server.url_for(name))), ds.layer)
    shard_gets = [(p, r, size) for p, r, size in range_log if p.endswith(".shard")]
    assert shard_gets
    for path, rng, size in shard_gets:
        assert rng is not None, f"whole-shard GET of {path}"
        first, last = (int(v) for v in rng.removeprefix("bytes=").split("-"))
        assert last - first + 1 < size, f"{rng} fetched all of {path}"
    # Every minishard index is fetched once for the whole-volume read.
    assert len(shard_gets) == len(set(shard_gets))


def test_http_content_encoding_gzip(
    datasets: dict[str, Dataset],
    http_server: HTTPServerFactory,
    range_log: list[tuple[str, str | None, int]],
) -> None:
    ds = datasets["cv_gz"]
    server = http_server(ds.path.parent, gzip_encoded=True)
    assert_layer_reads(run(explore_one(server.url_for("cv_gz"))), ds.layer)
    requested = [p for p, _, _ in range_log]
    assert not any(p.endswith(".gz") for p in requested)  # served under the plain names


def test_http_plain_server_falls_back_to_gz_names(
    datasets: dict[str, Dataset], http_server: HTTPServerFactory
) -> None:
    ds = datasets["cv_gz"]
    server = http_server(ds.path.parent)
    assert_layer_reads(run(explore_one(server.url_for("cv_gz"))), ds.layer)


@pytest.fixture(scope="module")
def s3_bucket(moto_s3: Any, datasets: dict[str, Dataset], tmp_path_factory: Any) -> str:
    """The sharded dataset and cv_gz stored the way gsutil -Z does: gzip under plain names."""
    root = tmp_path_factory.mktemp("s3")
    shutil.copytree(datasets["sharded_murmur"].path, root / "sharded_murmur")
    shutil.copytree(datasets["cv_gz"].path, root / "cv_gz")
    for f in (root / "cv_gz").glob("*/*.gz"):
        f.rename(f.with_suffix(""))
    bucket = moto_s3.make_bucket()
    moto_s3.upload_tree(root, bucket)
    return str(bucket)


@pytest.mark.parametrize("name", ["sharded_murmur", "cv_gz"])
def test_s3(moto_s3: Any, s3_bucket: str, datasets: dict[str, Dataset], name: str) -> None:
    cred = S3Credential(moto_s3.key_id, moto_s3.secret, endpoint_url=moto_s3.endpoint_url)
    layer = run(explore_one(f"s3://{s3_bucket}/{name}", cred))
    assert_layer_reads(layer, datasets[name].layer)


# -- bad input -------------------------------------------------------------------------------

GOOD_SCALE = {
    "key": "s0",
    "size": [64, 64, 16],
    "resolution": [4, 4, 40],
    "voxel_offset": [0, 0, 0],
    "chunk_sizes": [[32, 32, 16]],
    "encoding": "raw",
}
GOOD_INFO = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [GOOD_SCALE]}


def write_info(path: Path, info: Any) -> str:
    path.mkdir(parents=True, exist_ok=True)
    text = info if isinstance(info, str) else json.dumps(info)
    (path / "info").write_text(text)
    return str(path)


def variant(**changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(json.dumps(GOOD_INFO))
    s0 = {k: v for k, v in changes.items() if k.startswith("s0_")}
    info.update({k: v for k, v in changes.items() if not k.startswith("s0_")})
    if s0:
        info["scales"][0].update({k.removeprefix("s0_"): v for k, v in s0.items()})
    return info


def two_scales(second_res: list[float]) -> dict[str, Any]:
    info = variant()
    info["scales"].append({**info["scales"][0], "key": "s1", "resolution": second_res})
    return info


@pytest.mark.parametrize(
    ("info", "error", "match"),
    [
        ("{not json", MetadataError, "not valid JSON"),
        ([1, 2], MetadataError, "must be a JSON object"),
        (variant(scales=[]), MetadataError, "non-empty list"),
        (variant(data_type=None), MetadataError, "data_type"),
        (variant(data_type="float64"), UnsupportedFormatError, "float64"),
        (variant(data_type="int64"), UnsupportedFormatError, "int64"),
        (variant(num_channels=0), MetadataError, "num_channels"),
        (variant(type="mesh"), MetadataError, "not a volume type"),
        (variant(s0_encoding="zfpc"), UnsupportedFormatError, "zfpc"),
        (variant(s0_encoding="jpeg", data_type="uint16"), MetadataError, "cannot hold uint16"),
        (variant(s0_encoding="compressed_segmentation", data_type="uint32"), MetadataError,
         "compressed_segmentation_block_size"),
        (variant(s0_size=[64, 64]), MetadataError, "size must be three integers"),
        (variant(s0_resolution=[4, 0, 40]), MetadataError, "resolution"),
        (variant(s0_chunk_sizes=[]), MetadataError, "chunk_sizes"),
        (variant(s0_key=""), MetadataError, "key"),
        (two_scales([6, 6, 40]), UnsupportedFormatError, "not an integer multiple"),
        (two_scales([2, 4, 40]), UnsupportedFormatError, "not an integer multiple"),
        (variant(s0_sharding={"@type": "neuroglancer_uint64_sharded_v1"}), MetadataError,
         "sharding"),
    ],
)  # fmt: skip
def test_bad_info(tmp_path: Path, info: Any, error: type[Exception], match: str) -> None:
    url = write_info(tmp_path / "bad", info)
    with pytest.raises(error, match=match) as err:
        run(precomputed.explore(Store(url)))
    assert str(tmp_path / "bad" / "info") in str(err.value)


def test_encodings_without_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wkjupyter.sources import _precomputed_codecs as codecs

    monkeypatch.setattr(codecs, "_have", lambda module: module != "compresso")
    url = write_info(tmp_path / "c", variant(s0_encoding="compresso"))
    with pytest.raises(UnsupportedFormatError, match="pip install"):
        run(precomputed.explore(Store(url)))
    monkeypatch.setattr(codecs, "_have_jxl", lambda: False)
    url = write_info(tmp_path / "j", variant(s0_encoding="jxl"))
    with pytest.raises(UnsupportedFormatError, match="JPEG XL"):
        run(precomputed.explore(Store(url)))


def test_not_a_volume_or_absent(tmp_path: Path) -> None:
    assert run(precomputed.explore(Store(str(tmp_path)))) is None
    url = write_info(tmp_path / "mesh", {"@type": "neuroglancer_legacy_mesh"})
    assert run(precomputed.explore(Store(url))) is None


def test_truncated_chunk(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "raw"
    shutil.copytree(datasets["raw_u8"].path, path)
    chunk = path / "4_4_40" / "5-37_6-38_7-23"
    chunk.write_bytes(chunk.read_bytes()[:100])
    layer = run(explore_one(str(path)))
    with pytest.raises(MetadataError, match=r"5-37_6-38_7-23.*truncated or corrupt"):
        run(read_layer(layer, "1"))


def test_corrupt_gz_chunk(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "cv"
    shutil.copytree(datasets["cv_gz"].path, path)
    chunk = next((path / "4_4_40").glob("*.gz"))
    chunk.write_bytes(gzip.compress(b"x")[:-6])
    layer = run(explore_one(str(path)))
    with pytest.raises(MetadataError, match=f"{chunk.name}.*not valid gzip"):
        run(read_layer(layer, "1"))


def test_corrupt_shard_index(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "sh"
    shutil.copytree(datasets["sharded_identity"].path, path)
    for shard in (path / "4_4_40").glob("*.shard"):
        data = bytearray(shard.read_bytes())
        data[8:16] = (2**40).to_bytes(8, "little")  # minishard 0 ends far beyond the file
        shard.write_bytes(bytes(data))
    layer = run(explore_one(str(path)))
    with pytest.raises(MetadataError, match=r"\.shard.*the shard index is corrupt"):
        run(read_layer(layer, "1"))


def test_unknown_scale_key(datasets: dict[str, Dataset]) -> None:
    from dataclasses import replace

    layer = run(explore_one(str(datasets["raw_u8"].path)))
    level = replace(layer.mags[Mag(1)], hints={"scale": "gone"})
    with pytest.raises(MetadataError, match="no scale with key 'gone'"):
        run(precomputed.open_array(Store(level.path), level))


def test_jxl_chunks(tmp_path: Path) -> None:
    """Hand-made (no writer here produces jxl): a lossless grey image, x wide, y*z high."""
    imagecodecs = pytest.importorskip("imagecodecs")
    if not imagecodecs.JPEGXL.available:
        pytest.skip("imagecodecs lacks JPEG XL")
    info = variant(s0_encoding="jxl", s0_size=[32, 32, 16], s0_voxel_offset=[0, 0, 0])
    url = write_info(tmp_path / "jxl", info)
    data = image(np.random.default_rng(3), 1, (32, 32, 16), "uint8")
    encoded = imagecodecs.jpegxl_encode(data.reshape(16 * 32, 32), lossless=True)
    (tmp_path / "jxl" / "s0").mkdir()
    (tmp_path / "jxl" / "s0" / "0-32_0-32_0-16").write_bytes(encoded)
    np.testing.assert_array_equal(run(read_layer(run(explore_one(url)), "1")), data)
