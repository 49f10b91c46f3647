"""Bare Zarr v2/v3 arrays and plain groups (formats.md §1.3-1.4), written by zarr-python and
tensorstore, and the Zarr reader every zarr/zarr3 mag uses (axis orders, channels, sharding,
pass-through of stored chunks)."""

from __future__ import annotations

import asyncio
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numcodecs
import numpy as np
import pytest
import tensorstore as ts
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

from tests.sources.conformance import Case, ExpectedLayer, ExpectedMag, SourceTests
from wkjupyter.datasource import MagLevel
from wkjupyter.errors import MetadataError, RemoteNotFoundError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.sources import zarr as wzarr
from wkjupyter.sources._fs import S3Credential, Store
from wkjupyter.sources._zarr_codecs import coalesce_ranges
from wkjupyter.sources._zarr_meta import AxisMap, axis_order_for, safe_name, unique_names
from wkjupyter.sources.explore import explore

if TYPE_CHECKING:
    from tests.servers import HTTPServerFactory, MotoS3Server

SHAPE = (40, 70, 90)  # z, y, x: chunks of (16, 32, 32) leave partial edge chunks
CHUNKS = (16, 32, 32)


@dataclass
class Dataset:
    path: Path
    layers: list[ExpectedLayer]


def volume(rng: np.random.Generator, dtype: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 20, shape).astype(dtype)
    hi = min(np.iinfo(dtype).max, 60_000)
    return rng.integers(1, hi, shape, dtype=dtype)


def layer(
    name: str, data: np.ndarray, *, category: str = "color", fill: float = 0, missing: Any = ()
) -> ExpectedLayer:
    """``data`` is (..., c, z, y, x); a bare array has voxel size 1 nm and one mag."""
    return ExpectedLayer(
        name, category, str(data.dtype), (1.0, 1.0, 1.0), {"1": ExpectedMag(data)},
        fill_value=fill, missing=list(missing),
    )  # fmt: skip


def delete_chunk(root: Path, key: str) -> None:
    (root / key).unlink()


def build(root: Path) -> dict[str, Dataset]:
    rng = np.random.default_rng(7)
    out: dict[str, Dataset] = {}
    miss = BoundingBox.of((16, 32, 32), (16, 32, 32))  # chunk (1, 1, 1) is deleted below

    # zarr-python v2: gzip, "/" keys, C order, uint16.
    a = volume(rng, "uint16")
    p = root / "zp2_gzip.zarr"
    z = zarr.create_array(p, shape=SHAPE, chunks=CHUNKS, dtype="uint16", zarr_format=2,
                          compressors=numcodecs.GZip(5),
                          chunk_key_encoding={"name": "v2", "separator": "/"})  # fmt: skip
    z[:] = a
    delete_chunk(p, "1/1/1")
    a[miss.slices()] = 0
    out["zp2_gzip"] = Dataset(p, [layer("zp2_gzip", a[None], missing=[miss])])

    # zarr-python v2: blosc, "." keys, F order, float32.
    a = volume(rng, "float32")
    p = root / "zp2_blosc_f.zarr"
    z = zarr.create_array(p, shape=SHAPE, chunks=CHUNKS, dtype="float32", zarr_format=2,
                          order="F", compressors=numcodecs.Blosc("lz4", 5, 2))  # fmt: skip
    z[:] = a
    assert json.loads((p / ".zarray").read_text())["order"] == "F"
    out["zp2_blosc_f"] = Dataset(p, [layer("zp2_blosc_f", a[None])])

    # zarr-python v3: zstd, dimension names, a fill value of 7 and a deleted chunk.
    a = volume(rng, "int32")
    p = root / "zp3_zstd.zarr"
    z = zarr.create_array(p, shape=SHAPE, chunks=CHUNKS, dtype="int32", fill_value=7,
                          compressors=ZstdCodec(level=3), dimension_names=list("zyx"))  # fmt: skip
    z[:] = a
    delete_chunk(p, "c/1/1/1")
    a[miss.slices()] = 7
    out["zp3_zstd"] = Dataset(p, [layer("zp3_zstd", a[None], fill=7, missing=[miss])])

    # zarr-python v3: sharded uint64 segmentation with zstd + crc32c inner chunks.
    a = volume(rng, "uint64")
    p = root / "segmentation.zarr"
    z = zarr.create_array(p, shape=SHAPE, chunks=CHUNKS, shards=(32, 64, 64), dtype="uint64",
                          compressors=[ZstdCodec(), Crc32cCodec()])  # fmt: skip
    z[:] = a
    out["segmentation"] = Dataset(p, [layer("segmentation", a[None], category="segmentation")])

    # tensorstore zarr (v2): blosc zstd, "/" keys, uint8.
    a = volume(rng, "uint8")
    p = root / "ts_zarr2.zarr"
    spec = {"driver": "zarr", "kvstore": f"file://{p}",
            "metadata": {"dimension_separator": "/", "compressor": {"id": "blosc",
                         "cname": "zstd", "clevel": 3, "shuffle": 1}}}  # fmt: skip
    t = ts.open(spec, create=True, dtype="uint8", shape=SHAPE,
                chunk_layout=ts.ChunkLayout(chunk_shape=list(CHUNKS))).result()  # fmt: skip
    t[...] = a
    out["ts_zarr2"] = Dataset(p, [layer("ts_zarr2", a[None])])

    # tensorstore zarr3: c, z, y, x with two channels, sharded with the index at the start.
    a = volume(rng, "uint16", (2, *SHAPE))
    p = root / "ts_zarr3.zarr"
    codecs = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, *CHUNKS], "index_location": "start",
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                   {"name": "gzip", "configuration": {"level": 4}}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "crc32c"}]}}]  # fmt: skip
    spec = {"driver": "zarr3", "kvstore": f"file://{p}",
            "metadata": {"shape": [2, *SHAPE], "data_type": "uint16",
                         "chunk_grid": {"name": "regular",
                                        "configuration": {"chunk_shape": [2, 32, 64, 64]}},
                         "codecs": codecs}}  # fmt: skip
    ts.open(spec, create=True).result()[...] = a
    out["ts_zarr3"] = Dataset(p, [layer("ts_zarr3", a)])

    # A 2-D array (y, x) and a 5-D one (t, c, z, y, x), both zarr-python v3 with blosc.
    a = volume(rng, "uint8", SHAPE[1:])
    p = root / "plane.zarr"
    zarr.create_array(p, shape=a.shape, chunks=(32, 32), dtype="uint8",
                      compressors=BloscCodec())[:] = a  # fmt: skip
    out["plane"] = Dataset(p, [layer("plane", a[None, None])])
    a = volume(rng, "uint8", (3, 2, 10, 40, 50))
    p = root / "movie.zarr"
    zarr.create_array(p, shape=a.shape, chunks=(1, 1, 8, 32, 32), dtype="uint8")[:] = a
    out["movie"] = Dataset(p, [layer("movie", a)])

    # A plain group (no OME metadata) of two arrays, v2 with gzip.
    p = root / "group.zarr"
    g = zarr.open_group(p, mode="w", zarr_format=2)
    raw, labels = volume(rng, "uint8"), volume(rng, "uint32")
    g.create_array("raw", shape=SHAPE, chunks=CHUNKS, dtype="uint8",
                   compressors=numcodecs.GZip(1))[:] = raw  # fmt: skip
    g.create_array("labels", shape=SHAPE, chunks=CHUNKS, dtype="uint32")[:] = labels
    g.create_array("x", shape=(90,), dtype="float64")[:] = np.arange(90)  # a 1-D coordinate
    out["group"] = Dataset(
        p, [layer("raw", raw[None]), layer("labels", labels[None], category="segmentation")]
    )
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    return build(tmp_path_factory.mktemp("zarr"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def open_level(path: Path | str, fmt: str = "zarr3", **level: Any) -> wzarr.ZarrArray:
    return await wzarr.open_array(Store(str(path)), MagLevel(Mag(1), str(path), fmt, **level))  # type: ignore[arg-type]


def full(array: wzarr.ZarrArray) -> tuple[slice, ...]:
    return tuple(slice(0, s) for s in array.shape)


# -- the conformance suite ------------------------------------------------------------------------

ALL = ["zp2_gzip", "zp2_blosc_f", "zp3_zstd", "segmentation", "ts_zarr2", "ts_zarr3", "plane",
       "movie", "group"]  # fmt: skip


REMOTE = ["http:segmentation", "http:ts_zarr3", "http:zp2_gzip", "s3:segmentation",
          "s3:zp2_blosc_f"]  # fmt: skip


@pytest.fixture(scope="module")
def uploaded() -> dict[str, str]:
    """S3 URLs of the datasets uploaded so far (each goes up once per module)."""
    return {}


@pytest.fixture(params=[*ALL, *REMOTE])
def case(
    request: pytest.FixtureRequest, datasets: dict[str, Dataset], uploaded: dict[str, str]
) -> Case:
    transport, _, name = str(request.param).rpartition(":")
    ds = datasets[name]
    url = str(ds.path)
    credential = None
    if transport == "http":
        factory: HTTPServerFactory = request.getfixturevalue("http_server")
        url = factory(ds.path.parent).url_for(ds.path.name)
    elif transport == "s3":
        s3: MotoS3Server = request.getfixturevalue("moto_s3")
        if name not in uploaded:
            bucket = s3.make_bucket()
            s3.upload_tree(ds.path, bucket, ds.path.name)
            uploaded[name] = f"s3://{bucket}/{ds.path.name}"
        url = uploaded[name]
        credential = S3Credential(s3.key_id, s3.secret, endpoint_url=s3.endpoint_url)
    return Case(url, ds.layers, credential, format="zarr")


class TestZarrConformance(SourceTests):
    """The shared suite over every dataset above."""


# -- explore --------------------------------------------------------------------------------------


def test_explore_reports_the_zarr_format(datasets: dict[str, Dataset]) -> None:
    report = explore(str(datasets["zp3_zstd"].path))
    assert [s.format for s in report.steps if s.ok] == ["zarr"]
    layer = report.datasource.layers["zp3_zstd"]  # type: ignore[union-attr]
    assert layer.fill_value == 7
    assert layer.data_format == "zarr3"
    assert layer.mags[Mag(1)].axis_order == {"z": 0, "y": 1, "x": 2}


def test_five_dimensional_array_has_a_time_axis(datasets: dict[str, Dataset]) -> None:
    layers = run(wzarr.explore(Store(str(datasets["movie"].path))))
    (movie,) = layers
    assert [(a.name, a.size, a.type) for a in movie.additional_axes] == [("t", 3, "time")]
    assert movie.num_channels == 2
    assert movie.bbox == BoundingBox.of((0, 0, 0), (10, 40, 50))


def test_dimension_names_in_any_order(tmp_path: Path) -> None:
    a = np.arange(4 * 5 * 6, dtype="uint8").reshape(4, 5, 6)
    zarr.create_array(tmp_path / "xyz", shape=a.shape, chunks=(2, 2, 2), dtype="uint8",
                      dimension_names=["x", "y", "z"])[:] = a  # fmt: skip
    g = zarr.open_group(tmp_path / "v2", mode="w", zarr_format=2)
    arr = g.create_array("a", shape=a.shape, chunks=(2, 2, 2), dtype="uint8")
    arr[:] = a
    arr.attrs["_ARRAY_DIMENSIONS"] = ["x", "y", "z"]
    for url in (tmp_path / "xyz", tmp_path / "v2" / "a"):
        (found,) = run(wzarr.explore(Store(str(url))))
        assert found.bbox.shape == Vec3(6, 5, 4)
        np.testing.assert_array_equal(found.read()[0], a.transpose(2, 1, 0))


def test_group_skips_what_is_no_image(datasets: dict[str, Dataset]) -> None:
    layers = run(wzarr.explore(Store(str(datasets["group"].path))))
    assert sorted(layer.name for layer in layers) == ["labels", "raw"]


def test_group_with_ome_metadata_is_not_a_plain_group(tmp_path: Path) -> None:
    g = zarr.open_group(tmp_path / "img.zarr", mode="w", zarr_format=2)
    g.create_array("0", shape=(4, 4), dtype="uint8")
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [], "datasets": []}]
    assert run(wzarr.explore(Store(str(tmp_path / "img.zarr")))) is None


def test_not_zarr_is_none(tmp_path: Path) -> None:
    assert run(wzarr.explore(Store(str(tmp_path)))) is None


# -- the reader -----------------------------------------------------------------------------------


def test_read_chunk_clips_edges_and_reports_missing(datasets: dict[str, Dataset]) -> None:
    arr = run(open_level(datasets["zp3_zstd"].path))
    assert arr.chunk_shape == (1, *CHUNKS)
    edge = run(arr.read_chunk((0, 2, 2, 2)))
    assert edge.shape == (1, 8, 6, 26)
    want = datasets["zp3_zstd"].layers[0].mags["1"].data
    np.testing.assert_array_equal(edge, want[:, 32:, 64:, 64:])
    assert run(arr.read_chunk((0, 1, 1, 1))) is None


def test_sharded_read_granularity_is_the_inner_chunk(datasets: dict[str, Dataset]) -> None:
    arr = run(open_level(datasets["segmentation"].path))
    assert arr.chunk_shape == (1, *CHUNKS)
    want = datasets["segmentation"].layers[0].mags["1"].data
    np.testing.assert_array_equal(run(arr.read_chunk((0, 1, 2, 1))), want[:, 16:32, 64:70, 32:64])


def test_channel_index_selects_one_channel(datasets: dict[str, Dataset]) -> None:
    ds = datasets["ts_zarr3"]
    arr = run(open_level(ds.path, channel_index=1))
    assert arr.shape == (1, *SHAPE)
    np.testing.assert_array_equal(run(arr.read(full(arr))), ds.layers[0].mags["1"].data[1:2])


def test_axis_order_transposes_to_canonical(datasets: dict[str, Dataset]) -> None:
    ds = datasets["zp2_gzip"]
    # Pretend the stored dimensions are x, y, z: the reader must transpose.
    arr = run(open_level(ds.path, "zarr", axis_order={"x": 0, "y": 1, "z": 2}))
    assert arr.shape == (1, *SHAPE[::-1])
    got = run(arr.read((slice(0, 1), slice(-3, 95), slice(10, 60), slice(5, 30))))
    want = np.zeros((1, 98, 50, 25), "uint16")
    want[0, 3:93] = ds.layers[0].mags["1"].data[0, 5:30, 10:60, :].transpose(2, 1, 0)
    np.testing.assert_array_equal(got, want)


def test_reader_pickles(datasets: dict[str, Dataset]) -> None:
    arr = run(open_level(datasets["segmentation"].path))
    again = pickle.loads(pickle.dumps(arr))
    assert again.shape == arr.shape
    region = (slice(0, 1), slice(3, 20), slice(30, 40), slice(60, 70))
    np.testing.assert_array_equal(run(again.read(region)), run(arr.read(region)))


def test_open_array_finds_either_version(datasets: dict[str, Dataset]) -> None:
    # A "zarr" level whose array turns out to be v3 (and the reverse) still opens.
    assert run(open_level(datasets["zp3_zstd"].path, "zarr")).info.zarr_format == 3
    assert run(open_level(datasets["zp2_gzip"].path, "zarr3")).info.zarr_format == 2


# -- pass-through ---------------------------------------------------------------------------------


def rebuild(arr: wzarr.ZarrArray, root: Path) -> np.ndarray:
    """Write every raw chunk with the pass-through codecs as a fresh Zarr v3 array and read it
    back with zarr-python: that is what a client of the server would see."""
    codec = arr.passthrough_codec
    assert codec is not None
    meta = {"zarr_format": 3, "node_type": "array", "shape": list(arr.shape),
            "data_type": arr.dtype.name, "fill_value": arr.fill_value,
            "chunk_grid": {"name": "regular",
                           "configuration": {"chunk_shape": list(arr.chunk_shape)}},
            "chunk_key_encoding": {"name": "default"}, "codecs": codec["codecs"]}  # fmt: skip
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps(meta))
    for index in np.ndindex(*arr.grid_shape):
        raw = run(arr.raw_chunk(index))
        if raw is not None:
            key = root / "c" / "/".join(map(str, index))
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(raw.data)
    return np.asarray(zarr.open_array(root, mode="r")[...])


@pytest.mark.parametrize(
    ("name", "first"),
    [("zp2_gzip", "bytes"), ("zp2_blosc_f", "transpose"), ("zp3_zstd", "bytes"),
     ("segmentation", "bytes"), ("ts_zarr2", "bytes"), ("ts_zarr3", "bytes")],
)  # fmt: skip
def test_raw_chunks_pass_through(
    datasets: dict[str, Dataset], tmp_path: Path, name: str, first: str
) -> None:
    ds = datasets[name]
    fmt = "zarr" if (ds.path / ".zarray").exists() else "zarr3"
    arr = run(open_level(ds.path, fmt))
    assert arr.passthrough_codec["codecs"][0]["name"] == first  # type: ignore[index]
    np.testing.assert_array_equal(rebuild(arr, tmp_path / "out"), ds.layers[0].mags["1"].data)


def test_passthrough_folds_the_axis_order_into_a_transpose(
    datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    ds = datasets["zp2_gzip"]
    arr = run(open_level(ds.path, "zarr", axis_order={"x": 0, "y": 1, "z": 2}))
    assert arr.passthrough_codec["codecs"][0] == {  # type: ignore[index]
        "name": "transpose",
        "configuration": {"order": [0, 3, 2, 1]},
    }
    np.testing.assert_array_equal(rebuild(arr, tmp_path / "out"), run(arr.read(full(arr))))


def test_no_passthrough_for_filters(tmp_path: Path) -> None:
    z = zarr.create_array(tmp_path / "d", shape=(8, 8), chunks=(4, 4), dtype="int16",
                          zarr_format=2, filters=[numcodecs.Delta("int16")])  # fmt: skip
    z[:] = np.arange(64).reshape(8, 8)
    arr = run(open_level(tmp_path / "d", "zarr"))
    assert arr.passthrough_codec is None
    assert run(arr.raw_chunk((0, 0, 0, 0))) is None
    np.testing.assert_array_equal(run(arr.read(full(arr)))[0, 0], np.arange(64).reshape(8, 8))


# -- codecs zarr-python reads but the fast path does not: zarr's own pipeline -------------------


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")
def test_codecs_without_a_sync_decoder(tmp_path: Path) -> None:
    a = np.arange(20 * 30, dtype="uint16").reshape(20, 30)
    from zarr.codecs.numcodecs import BZ2

    zarr.create_array(tmp_path / "bz", shape=a.shape, chunks=(8, 8), dtype="uint16",
                      compressors=BZ2(level=5))[:] = a  # fmt: skip
    zarr.create_array(tmp_path / "nested", shape=a.shape, chunks=(4, 4), shards=(8, 8),
                      dtype="uint16", compressors=GzipCodec())[:] = a  # fmt: skip
    for name in ("bz", "nested"):
        arr = run(open_level(tmp_path / name))
        np.testing.assert_array_equal(run(arr.read(full(arr)))[0, 0], a)


# -- bad input ------------------------------------------------------------------------------------


def step_message(url: Path | str) -> str:
    report = explore(str(url))
    assert not report, report
    failed = [s for s in report.steps if s.outcome == "failed"]
    assert failed, report
    return " ".join(s.message for s in failed)


def test_malformed_zarray_names_the_url(tmp_path: Path) -> None:
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / ".zarray").write_text('{"shape": [4, 4], "chunks": ')
    assert "bad.zarr/.zarray" in step_message(tmp_path / "bad.zarr")
    (tmp_path / "bad.zarr" / ".zarray").write_text('{"zarr_format": 2, "shape": [4, 4]}')
    with pytest.raises(MetadataError, match=r"bad\.zarr"):
        run(wzarr.explore(Store(str(tmp_path / "bad.zarr"))))


def test_malformed_zarr_json(tmp_path: Path) -> None:
    (tmp_path / "bad3").mkdir()
    (tmp_path / "bad3" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "uint8"})
    )
    with pytest.raises(MetadataError, match=r"not valid Zarr array metadata.*missing"):
        run(wzarr.explore(Store(str(tmp_path / "bad3"))))


@pytest.mark.parametrize(
    "doc",
    [
        {"zarr_format": 2, "shape": [4, 4], "chunks": [2, 2], "dtype": [["a", "<u1"], ["b", "<f4"]],
         "compressor": None, "fill_value": None, "order": "C", "filters": None},
        {"zarr_format": 2, "shape": [4, 4], "chunks": [2, 2], "dtype": "|S4",
         "compressor": None, "fill_value": None, "order": "C", "filters": None},
        {"zarr_format": 3, "node_type": "array", "shape": [4, 4], "data_type": "string",
         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
         "chunk_key_encoding": {"name": "default"}, "fill_value": "",
         "codecs": [{"name": "vlen-utf8"}]},
        {"zarr_format": 3, "node_type": "array", "shape": [4, 4], "data_type": "uint8",
         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
         "chunk_key_encoding": {"name": "default"}, "fill_value": 0,
         "codecs": [{"name": "bytes"}, {"name": "no-such-codec"}]},
    ],
    ids=["structured", "bytes", "string", "codec"],
)  # fmt: skip
def test_unsupported_dtypes_and_codecs(tmp_path: Path, doc: dict[str, Any]) -> None:
    key = ".zarray" if doc["zarr_format"] == 2 else "zarr.json"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / key).write_text(json.dumps(doc))
    with pytest.raises(UnsupportedFormatError, match="odd"):
        run(wzarr.explore(Store(str(tmp_path / "odd"))))


def test_missing_array_and_corrupt_chunk(tmp_path: Path) -> None:
    with pytest.raises(RemoteNotFoundError, match="no Zarr array"):
        run(open_level(tmp_path / "nothing"))
    z = zarr.create_array(tmp_path / "c", shape=(8, 8), chunks=(4, 4), dtype="uint8",
                          compressors=ZstdCodec())  # fmt: skip
    z[:] = 1
    (tmp_path / "c" / "c" / "0" / "1").write_bytes(b"garbage")
    arr = run(open_level(tmp_path / "c"))
    with pytest.raises(MetadataError, match="could not be decoded"):
        run(arr.read(full(arr)))


def test_one_dimensional_array_is_no_image(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "line", shape=(10,), dtype="uint8")
    with pytest.raises(UnsupportedFormatError, match="1-D"):
        run(wzarr.explore(Store(str(tmp_path / "line"))))


# -- pure parts -----------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 500)), max_size=40))
def test_coalesced_ranges_cover_every_range(spans: list[tuple[int, int]]) -> None:
    ranges = [(a, a + n) for a, n in spans]
    groups = coalesce_ranges(ranges, max_gap=100, max_size=2_000)
    members = sorted(i for _a, _b, m in groups for i in m)
    assert members == list(range(len(ranges)))
    for start, end, m in groups:
        assert all(start <= ranges[i][0] and ranges[i][1] <= end for i in m)
        assert end - start <= 2_000 or len(m) == 1


@given(
    st.permutations(["c", "z", "y", "x"]),
    st.sampled_from([(), ("c",), ("z",), ("c", "z")]),
    st.lists(st.integers(1, 4), min_size=4, max_size=4),
)
def test_axis_map_views_the_same_memory(
    roles: list[str], dropped: tuple[str, ...], sizes: list[int]
) -> None:
    kept = [r for r in roles if r not in dropped]
    order = {r: i for i, r in enumerate(kept)}
    stored_shape = tuple(sizes[: len(kept)])
    axes = AxisMap.build(len(kept), order)
    canonical = axes.canonical(stored_shape)
    out = np.arange(int(np.prod(canonical))).reshape(canonical)
    lo, hi = [0] * 4, list(canonical)
    slo, shi, view = axes.to_stored(out, lo, hi)
    assert view.shape == stored_shape == tuple(b - a for a, b in zip(slo, shi, strict=True))
    for stored_index in np.ndindex(*stored_shape):
        canon = [0] * 4
        for k, src in enumerate(axes.source):
            if src is not None:
                canon[k] = stored_index[src]
        assert view[stored_index] == out[tuple(canon)]


def test_axis_guesses_and_names() -> None:
    assert axis_order_for(None, 2) == {"y": 0, "x": 1}
    assert axis_order_for(None, 5) == {"t": 0, "c": 1, "z": 2, "y": 3, "x": 4}
    assert axis_order_for(["C", "X", "Y", "Z"], 4) == {"c": 0, "x": 1, "y": 2, "z": 3}
    assert axis_order_for(["channel", "z", "y", "x"], 4) == {"c": 0, "z": 1, "y": 2, "x": 3}
    assert AxisMap.build(6, None).names == ("dim0", "dim1", "c", "z", "y", "x")
    with pytest.raises(MetadataError, match="does not fit"):
        AxisMap.build(3, {"z": 0, "y": 1, "x": 3})
    assert safe_name("s3://b/My Image.ome.zarr/") == "My_Image"
    assert unique_names(["a", "a", "b", "a"]) == ["a", "a_2", "b", "a_3"]
