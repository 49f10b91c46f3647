"""N5: tensorstore-written datasets and multiscale groups, plus hand-made Java-style blocks.

tensorstore writes every N5 compression except lz4 and pads edge blocks; the Java N5 library
truncates edge blocks, frames lz4 the lz4-java way and can write varlength blocks. Those are
written here by hand, byte for byte as the Java writers do (saalfeldlab/n5
``DefaultBlockWriter``, lz4-java ``LZ4BlockOutputStream``).
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import json
import lzma
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lz4.block
import numcodecs.blosc
import numpy as np
import pytest
import tensorstore as ts
import zarr
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sources.conformance import Case, ExpectedLayer, ExpectedMag, SourceTests, expected_region
from wkjupyter.datasource import Layer
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.sources import _n5_codecs, n5
from wkjupyter.sources._fs import Store
from wkjupyter.sources._n5_codecs import (
    BlockHeader,
    format_block_header,
    lz4_block_decode,
    parse_block_header,
)

SHAPE = (70, 90, 110)  # z, y, x: edge blocks are partial for block size 32
BLOCK = 32
RNG_SEED = 5


# -- writers --------------------------------------------------------------------------------


def make_data(dtype: str, shape: tuple[int, ...] = SHAPE, seed: int = RNG_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dt)
    info = np.iinfo(dt)
    # Mostly small values (compressible) with full-range outliers (byte order matters).
    data = rng.integers(0, 50, shape).astype(dt)
    mask = rng.random(shape) < 0.05
    data[mask] = rng.integers(info.min, info.max, int(mask.sum()), dtype=dt, endpoint=True)
    return data


def ts_write(path: Path, data: np.ndarray, compression: dict[str, Any], block: int = BLOCK) -> None:
    """Write ``data`` (z, y, x) as an N5 dataset with tensorstore (domain in N5 order)."""
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": f"file://{path}",
            "metadata": {
                "dimensions": list(data.shape[::-1]),
                "blockSize": [block] * data.ndim,
                "dataType": str(data.dtype),
                "compression": compression,
            },
        },
        create=True,
        delete_existing=True,
    ).result()
    store[...] = data.T


def edit_attrs(path: Path, **changes: Any) -> None:
    file = path / "attributes.json"
    attrs = json.loads(file.read_text()) if file.exists() else {}
    attrs.update(changes)
    path.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(attrs))


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32, straight from the xxHash specification (for the lz4-java checksum)."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    n, i = len(data), 0
    if n >= 16:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i <= n - 16:
            lanes = struct.unpack_from("<4I", data, i)
            v = [rotl((a + b * p2) & m, 13) * p1 & m for a, b in zip(v, lanes, strict=True)]
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 4 <= n:
        h = rotl((h + struct.unpack_from("<I", data, i)[0] * p3) & m, 17) * p4 & m
        i += 4
    while i < n:
        h = rotl((h + data[i] * p5) & m, 11) * p1 & m
        i += 1
    h ^= h >> 15
    h = h * p2 & m
    h ^= h >> 13
    h = h * p3 & m
    h ^= h >> 16
    return h


def lz4java_encode(data: bytes, block_size: int = 1 << 16) -> bytes:
    """lz4-java ``LZ4BlockOutputStream`` (N5 ``Lz4Compression``), byte for byte."""
    level = max(0, (block_size - 1).bit_length() - 10)
    out = []
    for start in range(0, len(data), block_size):
        chunk = data[start : start + block_size]
        check = xxh32(chunk, 0x9747B28C) & 0xFFFFFFF  # StreamingXXHash32.asChecksum
        packed = lz4.block.compress(chunk, store_size=False)
        method = 0x20
        if len(packed) >= len(chunk):
            method, packed = 0x10, chunk
        out.append(
            struct.pack("<8sBiii", b"LZ4Block", method | level, len(packed), len(chunk), check)
        )
        out.append(packed)
    out.append(struct.pack("<8sBiii", b"LZ4Block", 0x10 | level, 0, 0, 0))  # finish()
    return b"".join(out)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "raw": lambda b: b,
    "gzip": lambda b: gzip.compress(b, 6),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "lz4": lambda b: lz4java_encode(b, 1024),  # several lz4 blocks per N5 block
    "zstd": lambda b: zstandard.ZstdCompressor(write_content_size=False).compress(b),
    "blosc": lambda b: numcodecs.blosc.compress(b, b"lz4", 5, 1),
}


def java_block(block: np.ndarray, compression: str, mode: int = 0, extra: int = 0) -> bytes:
    """One block as Java N5 writes it: header, then the compressed big-endian body."""
    dims = block.shape[::-1]
    header = struct.pack(f">HH{len(dims)}I", mode, len(dims), *dims)
    body = block.astype(block.dtype.newbyteorder(">")).tobytes()
    if mode == 1:  # varlength: the element count follows the dimensions
        header += struct.pack(">I", block.size + extra)
        body += bytes(extra * block.dtype.itemsize)
    return header + COMPRESSORS[compression](body)


def java_write(
    path: Path,
    data: np.ndarray,
    compression: str,
    mode: int = 0,
    skip: tuple[tuple[int, ...], ...] = (),
    attrs: dict[str, Any] | None = None,
) -> None:
    """A dataset with truncated edge blocks (N5 spec) and blocks ``skip`` (N5 order) left out."""
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "dimensions": list(data.shape[::-1]),
        "blockSize": [BLOCK] * data.ndim,
        "dataType": str(data.dtype),
        "compression": {"type": compression},
    }
    (path / "attributes.json").write_text(json.dumps({**meta, **(attrs or {})}))
    grid = [range(-(-s // BLOCK)) for s in data.shape[::-1]]
    for idx in np.ndindex(*[len(g) for g in grid]):
        if idx in skip:
            continue
        sel = tuple(slice(i * BLOCK, (i + 1) * BLOCK) for i in idx[::-1])
        file = path.joinpath(*map(str, idx))
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(java_block(data[sel], compression, mode))


def downsample(data: np.ndarray, mag: str) -> np.ndarray:
    m = Mag(mag)
    return data[..., :: m.z, :: m.y, :: m.x]


def layer_case(
    name: str,
    data: np.ndarray,
    mags: dict[str, np.ndarray] | None = None,
    offsets: dict[str, tuple[int, int, int]] | None = None,
    *,
    category: str = "color",
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0),
    missing: list[BoundingBox] | None = None,
) -> ExpectedLayer:
    """An expected layer; ``data`` and ``mags`` are (z, y, x) or (t, z, y, x)."""
    mags = mags or {"1": data}
    offsets = offsets or {}
    expected = {
        k: ExpectedMag(np.expand_dims(v, -4), offsets.get(k, (0, 0, 0))) for k, v in mags.items()
    }
    return ExpectedLayer(
        name, category, str(data.dtype), voxel_size, expected, missing=missing or []
    )


# -- fixtures -------------------------------------------------------------------------------

# (folder, compression, dtype): every N5 compression tensorstore writes, every data type.
TS_DATASETS = [
    ("gzip_uint8", {"type": "gzip"}, "uint8"),
    ("zlib_int8", {"type": "gzip", "useZlib": True}, "int8"),
    ("blosc_uint16", {"type": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2}, "uint16"),
    ("zstd_int16", {"type": "zstd", "level": 3}, "int16"),
    ("raw_uint32", {"type": "raw"}, "uint32"),
    ("bzip2_int32", {"type": "bzip2"}, "int32"),
    ("xz_int64", {"type": "xz", "preset": 1}, "int64"),
    ("segmentation", {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}, "uint64"),
    ("gzip_float32", {"type": "gzip", "level": 9}, "float32"),
    ("zstd_float64", {"type": "zstd"}, "float64"),
]


def _ts_datasets(root: Path) -> Case:
    urls, layers = [], []
    for i, (name, compression, dtype) in enumerate(TS_DATASETS):
        data = make_data(dtype, seed=i)
        path = root / "ts" / f"{name}.n5"
        ts_write(path, data, compression)
        missing: list[BoundingBox] = []
        if name == "blosc_uint16":  # delete one interior block: it reads as 0
            (path / "1" / "1" / "1").unlink()
            data[32:64, 32:64, 32:64] = 0
            missing = [BoundingBox.of((32, 32, 32), (32, 32, 32))]
        category = "segmentation" if name == "segmentation" else "color"
        urls.append(str(path))
        layers.append(layer_case(name, data, category=category, missing=missing))
    return Case(urls, layers, format="n5")


def _n5_viewer_scales(root: Path) -> Case:
    """n5-viewer: the group lists ``scales``; ``pixelResolution`` in micrometers."""
    data = make_data("uint16")
    path = root / "nv_scales.n5"
    mags = {m: downsample(data, m) for m in ("1", "2-2-1", "4-4-2")}
    for i, level in enumerate(mags.values()):
        ts_write(path / f"s{i}", level, {"type": "gzip"})
    edit_attrs(
        path,
        n5="4.0.0",
        scales=[[1, 1, 1], [2, 2, 1], [4, 4, 2]],
        pixelResolution={"unit": "um", "dimensions": [0.004, 0.005, 0.04]},
    )
    layer = layer_case("nv_scales", data, mags, voxel_size=(40.0, 5.0, 4.0))
    return Case(str(path), [layer], format="n5")


def _n5_viewer_factors(root: Path) -> Case:
    """N5-Spark: no group attributes; each ``sN`` has ``downsamplingFactors``."""
    data = make_data("uint8")
    path = root / "nv_factors"
    mags = {m: downsample(data, m) for m in ("1", "2", "4")}
    for i, (m, level) in enumerate(mags.items()):
        ts_write(path / f"s{i}", level, {"type": "zstd"})
        extra = {"pixelResolution": {"unit": "nm", "dimensions": [8, 8, 8]}} if i == 0 else {}
        edit_attrs(path / f"s{i}", downsamplingFactors=Mag(m).to_xyz(), **extra)
    layer = layer_case("nv_factors", data, mags, voxel_size=(8.0, 8.0, 8.0))
    return Case(str(path), [layer], format="n5")


def _neuroglancer_group(root: Path) -> Case:
    """Neuroglancer n5: group ``downsamplingFactors`` + ``resolution`` + ``units`` + ``axes``."""
    data = make_data("uint32")
    path = root / "ng_labels.n5"
    mags = {m: downsample(data, m) for m in ("1", "2-2-1")}
    for i, level in enumerate(mags.values()):
        ts_write(path / f"s{i}", level, {"type": "raw"})
    edit_attrs(
        path,
        downsamplingFactors=[[1, 1, 1], [2, 2, 1]],
        resolution=[4, 4, 40],
        units=["nm", "nm", "nm"],
        axes=["x", "y", "z"],
    )
    layer = layer_case("ng_labels", data, mags, category="segmentation", voxel_size=(40, 4, 4))
    return Case(str(path), [layer], format="n5")


def _cosem(root: Path) -> Case:
    """COSEM: ``multiscales[0].datasets[].transform`` in C order, translated."""
    data = make_data("float32")
    path = root / "cosem.n5" / "em" / "fibsem"
    off1 = (8, 16, 24)  # z, y, x in mag-1 voxels
    scale0 = (6.0, 4.0, 2.0)  # z, y, x nm
    mags = {"1": data, "2": downsample(data, "2")}
    offsets = {"1": off1, "2": tuple(o // 2 for o in off1)}
    datasets = []
    for i, (m, level) in enumerate(mags.items()):
        f = Mag(m).x
        ts_write(path / f"s{i}", level, {"type": "gzip"})
        # The centre of voxel 0 of a mag-f level: (f-1)/2 finest voxels past its first one.
        translate = [(o * 1.0 + (f - 1) / 2) * s for o, s in zip(off1, scale0, strict=True)]
        transform = {
            "axes": ["z", "y", "x"],
            "units": ["nm", "nm", "nm"],
            "scale": [s * f for s in scale0],
            "translate": translate,
        }
        edit_attrs(path / f"s{i}", transform=transform)
        datasets.append({"path": f"s{i}", "transform": transform})
    edit_attrs(path, multiscales=[{"name": "fibsem", "datasets": datasets}])
    layer = layer_case("fibsem", data, mags, offsets, voxel_size=scale0)
    return Case(str(path), [layer], format="n5")


def _bdv(root: Path, timepoints: int, setups: int, name: str) -> Case:
    """BigDataViewer ``setupN/timepointM/sK``, factors on the setup group."""
    path = root / f"{name}.n5"
    edit_attrs(path, n5="2.5.1")
    layers = []
    for n in range(setups):
        series = [make_data("uint16", seed=10 * n + t) for t in range(timepoints)]
        for t, data in enumerate(series):
            for k, m in enumerate(("1", "2")):
                ts_write(
                    path / f"setup{n}" / f"timepoint{t}" / f"s{k}",
                    downsample(data, m),
                    {"type": "gzip"},
                )
        edit_attrs(
            path / f"setup{n}", downsamplingFactors=[[1, 1, 1], [2, 2, 2]], dataType="uint16"
        )
        stacked = np.stack(series) if timepoints > 1 else series[0]
        mags = {m: downsample(stacked, m) for m in ("1", "2")}
        layers.append(layer_case(name if setups == 1 else f"setup{n}", stacked, mags))
    return Case(str(path), layers, format="n5")


def _java_lz4(root: Path) -> Case:
    data = make_data("uint16")
    data[:, :, :40] = np.random.default_rng(1).integers(0, 65535, (70, 90, 40), dtype="uint16")
    path = root / "java_lz4"
    java_write(path, data, "lz4")
    return Case(str(path), [layer_case("java_lz4", data)], format="n5")


def _java_varlength(root: Path) -> Case:
    """Varlength blocks, truncated edges and the legacy ``compressionType`` string."""
    data = make_data("int32")
    path = root / "java_varlength"
    java_write(path, data, "gzip", mode=1)
    attrs = json.loads((path / "attributes.json").read_text())
    del attrs["compression"]
    attrs["compressionType"] = "gzip"
    (path / "attributes.json").write_text(json.dumps(attrs))
    return Case(str(path), [layer_case("java_varlength", data)], format="n5")


def _java_missing(root: Path) -> Case:
    data = make_data("uint8")
    path = root / "java_missing"
    # Block (x=3, y=2, z=2) is the truncated corner; (0, 1, 0) an interior one.
    java_write(path, data, "bzip2", skip=((3, 2, 2), (0, 1, 0)))
    data[64:, 64:, 96:] = 0
    data[0:32, 32:64, 0:32] = 0
    missing = [BoundingBox.of((64, 64, 96), (6, 26, 14)), BoundingBox.of((0, 32, 0), (32, 32, 32))]
    return Case(str(path), [layer_case("java_missing", data, missing=missing)], format="n5")


CASES: dict[str, Callable[[Path], Case]] = {
    "tensorstore": _ts_datasets,
    "n5-viewer-scales": _n5_viewer_scales,
    "n5-viewer-factors": _n5_viewer_factors,
    "neuroglancer-group": _neuroglancer_group,
    "cosem": _cosem,
    "bdv": lambda root: _bdv(root, timepoints=1, setups=2, name="bdv"),
    "bdv-timepoints": lambda root: _bdv(root, timepoints=3, setups=1, name="bdv_t"),
    "java-lz4": _java_lz4,
    "java-varlength": _java_varlength,
    "java-missing": _java_missing,
}


@pytest.fixture(scope="module")
def n5_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("n5")


@pytest.fixture(scope="module")
def cases(n5_root: Path) -> dict[str, Case]:
    return {name: make(n5_root) for name, make in CASES.items()}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, cases: dict[str, Case]) -> Case:
    return cases[request.param]


class TestN5Conformance(SourceTests):
    """The shared suite, through ``wkjupyter.sources.explore``."""


# -- the explorer and reader on their own ---------------------------------------------------


async def explore_direct(url: str) -> list[Any]:
    """``n5.explore`` at ``url`` with every mag's reader opened by ``n5.open_array``."""
    layers = await n5.explore(Store(url))
    assert layers is not None, url
    for layer in layers:
        for m, level in layer.mags.items():
            layer._arrays[m] = await n5.open_array(Store(level.path), level)
    return layers


def test_explore_and_read_directly(case: Case) -> None:
    urls = [case.url] if isinstance(case.url, str) else case.url
    layers = {layer.name: layer for url in urls for layer in asyncio.run(explore_direct(url))}
    assert sorted(layers) == sorted(e.name for e in case.layers)
    for exp in case.layers:
        layer = layers[exp.name]
        assert layer.category == exp.category, exp.name
        assert layer.dtype == np.dtype(exp.dtype)
        assert layer.bbox == exp.bbox
        assert sorted(str(m) for m in layer.mags) == sorted(exp.mags)
        assert layer.voxel_size.to_unit(exp.unit).as_tuple() == pytest.approx(exp.voxel_size)
        for name, mag_exp in exp.mags.items():
            want = expected_region(mag_exp, exp.bbox.in_mag(Mag(name)), 0, exp.dtype)
            np.testing.assert_array_equal(layer.read(mag=name), want, err_msg=f"mag {name}")
        box = BoundingBox(exp.bbox.offset + 20, Vec3(31, 17, 45))
        want = expected_region(exp.mags["1"], box, 0, exp.dtype)
        np.testing.assert_array_equal(layer.read(box), want)
        for box in exp.missing:
            assert (layer.read(box) == 0).all()


def test_bdv_timepoints_are_an_axis(cases: dict[str, Case]) -> None:
    (layer,) = asyncio.run(explore_direct(str(cases["bdv-timepoints"].url)))
    assert [(a.name, a.size) for a in layer.additional_axes] == [("t", 3)]
    level = layer.mags[Mag(1)]
    assert level.hints == {"timepoints": [0, 1, 2], "dataset": "s0"}
    assert layer.read(BoundingBox.of((0, 0, 0), (2, 2, 2))).shape == (3, 1, 2, 2, 2)


def test_cosem_offsets(cases: dict[str, Case]) -> None:
    (layer,) = asyncio.run(explore_direct(str(cases["cosem"].url)))
    assert layer.mags[Mag(1)].offset == Vec3(8, 16, 24)
    assert layer.mags[Mag(2)].offset == Vec3(4, 8, 12)
    assert layer.mags[Mag(1)].axis_order == {"x": 0, "y": 1, "z": 2}


def test_reader_pickles(cases: dict[str, Case]) -> None:
    (layer,) = asyncio.run(explore_direct(str(cases["java-lz4"].url)))
    array = layer._arrays[Mag(1)]
    clone = pickle.loads(pickle.dumps(array))
    index = (0, 1, 1, 1)
    np.testing.assert_array_equal(
        asyncio.run(clone.read_chunk(index)), asyncio.run(array.read_chunk(index))
    )


# -- pass-through ---------------------------------------------------------------------------


def zarr_decode(
    tmp: Path,
    raw: bytes,
    codecs: list[dict[str, Any]],
    chunk: tuple[int, ...],
    dtype: np.dtype[Any],
) -> np.ndarray:
    """Decode one chunk's bytes with zarr-python's v3 codec pipeline."""
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(chunk),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "zarr.json").write_text(json.dumps(meta))
    key = tmp.joinpath("c", *["0"] * len(chunk))
    key.parent.mkdir(parents=True)
    key.write_bytes(raw)
    return np.asarray(zarr.open_array(str(tmp), mode="r")[...])


@pytest.mark.parametrize(
    "name", ["gzip_uint8", "blosc_uint16", "zstd_int16", "raw_uint32", "segmentation"]
)
def test_raw_chunk_is_a_zarr_v3_chunk(cases: dict[str, Case], name: str, tmp_path: Path) -> None:
    url = next(u for u in cases["tensorstore"].url if u.endswith(f"/{name}.n5"))
    (layer,) = asyncio.run(explore_direct(url))
    array = layer._arrays[Mag(1)]
    codec = array.passthrough_codec
    assert codec is not None
    assert codec["codecs"][0]["name"] == "bytes"
    # An interior block and tensorstore's padded corner block are both full-size chunks.
    for index in [(0, 1, 0, 1), (0, 2, 2, 3)]:
        raw = asyncio.run(array.raw_chunk(index))
        assert raw is not None
        got = zarr_decode(tmp_path / "z", raw.data, codec["codecs"], array.chunk_shape, array.dtype)
        chunk = asyncio.run(array.read_chunk(index))
        assert chunk is not None
        np.testing.assert_array_equal(got[tuple(slice(0, s) for s in chunk.shape)], chunk)


def test_no_passthrough_where_not_expressible(cases: dict[str, Case]) -> None:
    for name in ("java-lz4", "java-missing"):  # lz4, bzip2
        (layer,) = asyncio.run(explore_direct(str(cases[name].url)))
        array = layer._arrays[Mag(1)]
        assert array.passthrough_codec is None
        assert asyncio.run(array.raw_chunk((0, 0, 0, 0))) is None
    zlib_url = next(u for u in cases["tensorstore"].url if u.endswith("/zlib_int8.n5"))
    (layer,) = asyncio.run(explore_direct(zlib_url))
    assert layer._arrays[Mag(1)].passthrough_codec is None  # zarr's gzip is not zlib


def test_truncated_and_varlength_blocks_are_not_passed_through(tmp_path: Path) -> None:
    data = make_data("uint16")
    java_write(tmp_path / "a", data, "gzip")
    java_write(tmp_path / "b", data, "gzip", mode=1)
    for name in ("a", "b"):
        (layer,) = asyncio.run(explore_direct(str(tmp_path / name)))
        array = layer._arrays[Mag(1)]
        assert array.passthrough_codec is not None
        interior = asyncio.run(array.raw_chunk((0, 0, 0, 0)))
        assert (interior is not None) == (name == "a")
        assert asyncio.run(array.raw_chunk((0, 2, 2, 3))) is None  # truncated corner


def test_transposed_axes_pass_through_with_transpose(tmp_path: Path) -> None:
    """``axes: [z, y, x]`` lists the slowest axis first: a transpose codec describes it."""
    data = make_data("int16", (20, 30, 40))
    path = tmp_path / "zyx"
    ts_write(path, np.ascontiguousarray(data.transpose(2, 1, 0)), {"type": "zstd"})
    edit_attrs(path, axes=["z", "y", "x"])
    (layer,) = asyncio.run(explore_direct(str(path)))
    assert layer.bbox.shape == Vec3(20, 30, 40)
    np.testing.assert_array_equal(layer.read()[0], data)
    array = layer._arrays[Mag(1)]
    codec = array.passthrough_codec
    assert codec is not None
    assert codec["codecs"][0] == {"name": "transpose", "configuration": {"order": [0, 3, 2, 1]}}
    raw = asyncio.run(array.raw_chunk((0, 0, 0, 0)))
    assert raw is not None
    got = zarr_decode(tmp_path / "z", raw.data, codec["codecs"], array.chunk_shape, array.dtype)
    np.testing.assert_array_equal(got[:, :20, :30, :32], data[None, :20, :30, :32])


def test_channels_and_2d(tmp_path: Path) -> None:
    data = make_data("uint8", (3, 20, 30, 40))  # c, z, y, x -> N5 (x, y, z, c)
    ts_write(tmp_path / "c4", data, {"type": "gzip"})
    (layer,) = asyncio.run(explore_direct(str(tmp_path / "c4")))
    assert layer.num_channels == 3
    np.testing.assert_array_equal(layer.read(), data)
    flat = make_data("float32", (50, 60))
    ts_write(tmp_path / "img2d", flat, {"type": "raw"})
    (layer,) = asyncio.run(explore_direct(str(tmp_path / "img2d")))
    assert layer.bbox.shape == Vec3(1, 50, 60)
    np.testing.assert_array_equal(layer.read()[0, 0], flat)


def test_factors_inferred_from_dimensions(tmp_path: Path) -> None:
    data = make_data("uint8")
    for i, m in enumerate(("1", "2-2-1", "4-4-1")):
        ts_write(tmp_path / "g" / f"s{i}", downsample(data, m), {"type": "raw"})
    (layer,) = asyncio.run(explore_direct(str(tmp_path / "g")))
    assert sorted(str(m) for m in layer.mags) == ["1", "2-2-1", "4-4-1"]


def test_explore_without_listing(cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain HTTP cannot list folders: numbered scales and setups are probed instead."""

    async def no_listing(self: Store, key: str = "") -> list[str]:
        return []

    monkeypatch.setattr(Store, "list_dir", no_listing)
    (layer,) = asyncio.run(explore_direct(str(cases["n5-viewer-factors"].url)))
    assert sorted(str(m) for m in layer.mags) == ["1", "2", "4"]
    layers = asyncio.run(explore_direct(str(cases["bdv"].url)))
    assert sorted(layer.name for layer in layers) == ["setup0", "setup1"]
    (layer,) = asyncio.run(explore_direct(str(cases["bdv-timepoints"].url)))
    assert layer.additional_axes[0].size == 3


def test_mag_levels_survive_datasource_json(cases: dict[str, Case]) -> None:
    """What explore puts in a MagLevel (axis order, offset, hints) reopens the array."""
    for name in ("bdv-timepoints", "cosem"):
        (layer,) = asyncio.run(explore_direct(str(cases[name].url)))
        clone = Layer.from_wk(json.loads(json.dumps(layer.to_wk())), layer.voxel_size)
        assert clone.bbox == layer.bbox
        for m, level in clone.mags.items():
            assert level == layer.mags[m]
            clone._arrays[m] = asyncio.run(n5.open_array(Store(level.path), level))
        np.testing.assert_array_equal(clone.read(mag="2"), layer.read(mag="2"))


def test_cosem_f_order_and_ngff_transforms(tmp_path: Path) -> None:
    data = make_data("uint8", (20, 30, 40))
    mags = {"1": data, "2-2-1": downsample(data, "2-2-1")}
    for name in ("f_order", "ngff"):
        datasets = []
        for i, (m, level) in enumerate(mags.items()):
            ts_write(tmp_path / name / f"s{i}", level, {"type": "raw"})
            f = Mag(m).to_xyz()
            scale = [3.0 * f[0], 3.0 * f[1], 30.0 * f[2]]  # x, y, z
            translate = [(10 + (f[0] - 1) / 2) * 3.0, 0.0, 60.0]  # offset x=10, z=2
            if name == "f_order":
                transform = {
                    "axes": ["x", "y", "z"],
                    "units": ["nm"] * 3,
                    "order": "F",
                    "scale": scale,
                    "translate": translate,
                }
                datasets.append({"path": f"s{i}", "transform": transform})
            else:
                datasets.append(
                    {
                        "path": f"s{i}",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": scale[::-1]},
                            {"type": "translation", "translation": translate[::-1]},
                        ],
                    }
                )
        axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        edit_attrs(tmp_path / name, multiscales=[{"axes": axes, "datasets": datasets}])
        (layer,) = asyncio.run(explore_direct(str(tmp_path / name)))
        assert layer.voxel_size.as_tuple() == (30.0, 3.0, 3.0)
        assert layer.bbox == BoundingBox.of((2, 0, 10), (20, 30, 40))
        assert layer.mags[Mag("2-2-1")].offset == Vec3(2, 0, 5)
        np.testing.assert_array_equal(layer.read(mag="2-2-1")[0], mags["2-2-1"])


def test_pixel_resolution_list_and_unitless(tmp_path: Path) -> None:
    ts_write(tmp_path / "a", make_data("uint8", (8, 8, 8)), {"type": "raw"})
    edit_attrs(tmp_path / "a", pixelResolution=[2, 3, 4], units=["um", "um", "nm"])
    (layer,) = asyncio.run(explore_direct(str(tmp_path / "a")))
    assert layer.voxel_size.unit == "nanometer"
    assert layer.voxel_size.as_tuple() == pytest.approx((4, 3000, 2000))
    edit_attrs(tmp_path / "a", pixelResolution={"unit": "pixel", "dimensions": [1, 1, 2]})
    (layer,) = asyncio.run(explore_direct(str(tmp_path / "a")))
    assert layer.voxel_size.as_tuple() == (2, 1, 1)
    edit_attrs(tmp_path / "a", pixelResolution={"unit": "parsecs-ish", "dimensions": [1, 1, 2]})
    with pytest.raises(MetadataError, match="unit"):
        asyncio.run(n5.explore(Store(str(tmp_path / "a"))))


@pytest.mark.parametrize("extra", [-100, 0, 100])
def test_varlength_element_count_rules(tmp_path: Path, extra: int) -> None:
    """A varlength block holds its element count, laid out over its dimensions."""
    data = make_data("int16", (8, 8, 8))
    java_write(tmp_path / "v", data, "raw", mode=1)
    block = tmp_path / "v" / "0" / "0" / "0"
    if extra < 0:
        body = data.astype(">i2").tobytes()[: (data.size + extra) * 2]
        block.write_bytes(struct.pack(">HH3II", 1, 3, 8, 8, 8, data.size + extra) + body)
        data.reshape(-1)[data.size + extra :] = 0
    else:
        block.write_bytes(java_block(data, "raw", mode=1, extra=extra))
    chunk = asyncio.run(_open(tmp_path / "v").read_chunk((0, 0, 0, 0)))
    np.testing.assert_array_equal(chunk[0], data)


def test_not_n5(tmp_path: Path) -> None:
    assert asyncio.run(n5.explore(Store(str(tmp_path)))) is None
    (tmp_path / "x").mkdir()
    (tmp_path / "attributes.json").write_text('{"n5": "4.0.0"}')  # an empty container
    assert asyncio.run(n5.explore(Store(str(tmp_path)))) is None


# -- bad input ------------------------------------------------------------------------------


def _dataset(tmp_path: Path, **attrs: Any) -> Path:
    path = tmp_path / "bad"
    path.mkdir(exist_ok=True)
    base = {
        "dimensions": [10, 10, 10],
        "blockSize": [8, 8, 8],
        "dataType": "uint8",
        "compression": {"type": "raw"},
    }
    base.update(attrs)
    (path / "attributes.json").write_text(json.dumps({k: v for k, v in base.items() if v != ...}))
    return path


@pytest.mark.parametrize(
    ("attrs", "error", "words"),
    [
        ({"compression": {"type": "snappy"}}, UnsupportedFormatError, "snappy"),
        ({"compression": None, "compressionType": "lzf"}, UnsupportedFormatError, "lzf"),
        ({"dataType": "object"}, UnsupportedFormatError, "object"),
        ({"isLabelMultiset": True}, UnsupportedFormatError, "label-multiset"),
        ({"dataType": "complex64"}, UnsupportedFormatError, "complex64"),
        ({"blockSize": ...}, MetadataError, "blockSize"),
        ({"dataType": ...}, MetadataError, "dataType"),
        ({"dimensions": [10, -1, 10]}, MetadataError, "negative"),
        ({"blockSize": [8, 8]}, MetadataError, "disagree"),
        ({"compression": "gzip"}, MetadataError, "compression"),
    ],
)
def test_bad_attributes(tmp_path: Path, attrs: dict[str, Any], error: type, words: str) -> None:
    path = _dataset(tmp_path, **attrs)
    with pytest.raises(error, match=words) as info:
        asyncio.run(n5.explore(Store(str(path))))
    assert str(path) in str(info.value)


def test_malformed_json(tmp_path: Path) -> None:
    (tmp_path / "attributes.json").write_text('{"dimensions": [1, 2')
    with pytest.raises(MetadataError, match="not valid JSON"):
        asyncio.run(n5.explore(Store(str(tmp_path))))
    (tmp_path / "attributes.json").write_text("[1, 2]")
    with pytest.raises(MetadataError, match="JSON object"):
        asyncio.run(n5.explore(Store(str(tmp_path))))


def test_bad_multiscale_metadata(tmp_path: Path) -> None:
    ts_write(tmp_path / "g" / "s0", make_data("uint8", (8, 8, 8)), {"type": "raw"})
    edit_attrs(tmp_path / "g", scales=[[1, 1, 1], [2, 2, 2]])  # s1 does not exist
    with pytest.raises(MetadataError, match="s1"):
        asyncio.run(n5.explore(Store(str(tmp_path / "g"))))
    edit_attrs(tmp_path / "c", multiscales=[{"datasets": [{"path": "s0"}]}])
    ts_write(tmp_path / "c" / "s0", make_data("uint8", (8, 8, 8)), {"type": "raw"})
    with pytest.raises(MetadataError, match="no transform"):
        asyncio.run(n5.explore(Store(str(tmp_path / "c"))))
    ts_write(tmp_path / "h" / "s0", make_data("uint8", (8, 8, 8)), {"type": "raw"})
    ts_write(tmp_path / "h" / "s1", make_data("uint8", (6, 6, 6)), {"type": "raw"})
    edit_attrs(tmp_path / "h", scales=[[1, 1, 1], [1.5, 1.5, 1.5]])
    with pytest.raises(MetadataError, match="integer"):
        asyncio.run(n5.explore(Store(str(tmp_path / "h"))))


def _open(path: Path) -> Any:
    (layer,) = asyncio.run(explore_direct(str(path)))
    return layer._arrays[Mag(1)]


def test_truncated_block_body(tmp_path: Path) -> None:
    for compression in ("raw", "gzip", "lz4", "xz"):
        path = tmp_path / compression
        java_write(path, make_data("uint16", (8, 8, 8)), compression)
        block = path / "0" / "0" / "0"
        block.write_bytes(block.read_bytes()[:-40])
        with pytest.raises(MetadataError, match="cannot be decoded") as info:
            asyncio.run(_open(path).read_chunk((0, 0, 0, 0)))
        assert str(block) in str(info.value)


def test_bad_block_headers(tmp_path: Path) -> None:
    java_write(tmp_path / "d", make_data("uint8", (8, 8, 8)), "raw")
    array = _open(tmp_path / "d")
    block = tmp_path / "d" / "0" / "0" / "0"
    block.write_bytes(struct.pack(">HI", 2, 3) + b"abc")  # object mode
    with pytest.raises(UnsupportedFormatError, match="object"):
        asyncio.run(array.read_chunk((0, 0, 0, 0)))
    block.write_bytes(struct.pack(">HH2I", 0, 2, 8, 8) + bytes(64))  # 2-D header in 3-D data
    with pytest.raises(MetadataError, match="dimensions"):
        asyncio.run(array.read_chunk((0, 0, 0, 0)))
    block.write_bytes(b"\x00")
    with pytest.raises(MetadataError, match="too short"):
        asyncio.run(array.read_chunk((0, 0, 0, 0)))


# -- pure parts (hypothesis) ----------------------------------------------------------------


@given(
    mode=st.sampled_from([0, 1, 2]),
    shape=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6),
    count=st.integers(0, 2**32 - 1),
)
def test_block_header_round_trip(mode: int, shape: list[int], count: int) -> None:
    header = BlockHeader(mode, () if mode == 2 else tuple(shape), None if mode == 0 else count)
    raw = format_block_header(header)
    assert len(raw) == header.nbytes
    assert parse_block_header(raw + b"body") == header
    for cut in range(len(raw)):
        with pytest.raises(ValueError, match="block"):
            parse_block_header(raw[:cut])


def test_block_header_matches_java_layout() -> None:
    raw = format_block_header(BlockHeader(1, (64, 32, 7), 99))
    assert raw == bytes.fromhex("0001 0003 00000040 00000020 00000007 00000063")
    with pytest.raises(ValueError, match="mode"):
        parse_block_header(bytes.fromhex("0003 0000"))


def test_xxh32_reference_values() -> None:
    assert xxh32(b"") == 0x02CC5D05
    assert xxh32(b"abc") == 0x32D153FF
    assert xxh32(b"Nobody inspects the spammish repetition") == 0xE2293B2F


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=5000) | st.binary(max_size=50).map(lambda b: b * 97),
    block_size=st.sampled_from([64, 100, 1024, 1 << 16]),
)
def test_lz4_block_framing_round_trip(data: bytes, block_size: int) -> None:
    encoded = lz4java_encode(data, block_size)
    assert lz4_block_decode(encoded, len(data)) == data
    # N5 reads only as much as it needs: a stream without its end block is fine...
    if data:
        assert lz4_block_decode(encoded[:-21], len(data)) == data
    # ...but one that stops early is not.
    if len(encoded) > 42:
        with pytest.raises(ValueError, match="lz4"):
            lz4_block_decode(encoded[: len(encoded) // 2], len(data))


def test_lz4_checksums_are_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_n5_codecs, "xxh32", xxh32)
    data = bytes(range(256)) * 40
    encoded = bytearray(lz4java_encode(data, 1024))
    assert lz4_block_decode(bytes(encoded), len(data)) == data
    encoded[17] ^= 0x01  # the first block's checksum
    with pytest.raises(ValueError, match="checksum"):
        lz4_block_decode(bytes(encoded), len(data))
    with pytest.raises(ValueError, match="magic"):
        lz4_block_decode(b"LZ4Blocc" + bytes(encoded[8:]), len(data))
