"""The served metadata documents, checked by the readers that consume them: ome-zarr-models
(NGFF 0.4 / 0.5), zarr-python 3, ome-zarr-py, tensorstore, fsspec's listing scraper and our
own datasource parser."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urljoin

import numpy as np
import pytest
import zarr
from zarr.core.metadata import ArrayV3Metadata

from wkjupyter.datasource import AdditionalAxis, ChannelInfo, DataSource
from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize
from wkjupyter.server._keys import Tree
from wkjupyter.server.metadata import (
    array_documents,
    array_entries,
    datasource_properties,
    fill_value_json,
    image_layer_for,
    layer_documents,
    layer_entries,
    listing,
    ngff_attributes,
    root_documents,
    root_entries,
)
from wkjupyter.server.view import (
    ChunkCodec,
    ServedArray,
    ServedDataset,
    ServedLayer,
    TreeEncoding,
    transcode_encoding,
    v2_encoding,
)

VS = VoxelSize(z=25.0, y=11.0, x=11.0)
TREES: list[Tree] = ["zarr", "zarr3"]
U64_MAX = 2**64 - 1
F_ORDER_GZIP = [
    {"name": "transpose", "configuration": {"order": [3, 2, 1, 0]}},
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "gzip", "configuration": {"level": 3}},
]


def served(
    path: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    *,
    offset: tuple[int, int, int] = (0, 0, 0),
    fill: Any = 0,
    codec: ChunkCodec = "zstd",
    passthrough: list[dict[str, Any]] | None = None,
) -> ServedArray:
    """A served array with the geometry of ``view.served_array``."""
    mag, dt, n_lead = Mag(path), np.dtype(dtype), len(shape) - 3
    factors, finest = (mag.z, mag.y, mag.x), VS.as_tuple()
    shift = [(o * f + (f - 1) / 2) * v for o, f, v in zip(offset, factors, finest, strict=True)]
    encodings = transcode_encoding(dt, codec)
    if passthrough is not None:
        v2 = v2_encoding(passthrough, dt)
        encodings = {
            "zarr": TreeEncoding(True, tuple(passthrough), v2),
            "zarr3": TreeEncoding(True, tuple(passthrough)),
        }
    return ServedArray(
        path=path,
        shape=shape,
        chunk_shape=chunks,
        dtype=dt,
        fill_value=fill,
        scale=(*[1.0] * n_lead, *VS.scaled(mag)),
        translation=(*[0.0] * n_lead, *shift),
        encodings=encodings,
    )


def make_layer(
    name: str, category: str, dtype: str, arrays: list[ServedArray], **kw: Any
) -> ServedLayer:
    shape = arrays[0].shape
    offset = kw.pop("offset", (0, 0, 0))
    return ServedLayer(
        name=name,
        category=category,  # type: ignore[arg-type]
        dtype=np.dtype(dtype),
        num_channels=shape[-4],
        bbox=BoundingBox.of(offset, shape[-3:]),
        voxel_size=VS,
        arrays={a.path: a for a in arrays},
        **kw,
    )


@pytest.fixture(scope="module")
def ds() -> ServedDataset:
    off = (2, 4, 8)
    color = make_layer("color", "color", "uint8", [
        served("1", (1, 20, 64, 64), (1, 8, 32, 32), "uint8", offset=off, codec="blosc"),
        served("2-2-1", (1, 20, 32, 32), (1, 8, 32, 32), "uint8", offset=(2, 2, 4)),
        served("4-4-2", (1, 10, 16, 16), (1, 8, 16, 16), "uint8", offset=(1, 1, 2), codec="raw"),
    ], offset=off)  # fmt: skip
    channels = (
        ChannelInfo("DAPI", "#00ff00", window=(100, 2000)),
        ChannelInfo("GFP", None, range=(0, 4095)),
    )
    multi = make_layer("multi", "color", "uint16", [
        served("1", (3, 8, 32, 32), (1, 8, 16, 16), "uint16", codec="gzip"),
        served("2", (3, 4, 16, 16), (1, 4, 16, 16), "uint16", passthrough=F_ORDER_GZIP),
    ], channels=channels)  # fmt: skip
    seg = make_layer("seg", "segmentation", "uint64", [
        served("1", (1, 20, 64, 64), (1, 8, 32, 32), "uint64", fill=U64_MAX),
    ], largest_segment_id=1234)  # fmt: skip
    probs = make_layer("probs", "segmentation", "float32", [
        served("1", (1, 8, 16, 16), (1, 8, 16, 16), "float32", fill=float("nan")),
    ])  # fmt: skip
    time = make_layer("time", "color", "int16", [
        served("1", (3, 1, 8, 16, 16), (1, 1, 8, 16, 16), "int16", fill=-5),
    ], additional_axes=(AdditionalAxis("t", 3, "time", "second"),))  # fmt: skip
    layers = {la.name: la for la in (color, multi, seg, probs, time)}
    return ServedDataset("demo", VS, layers)


def write_tree(root: Path, ds: ServedDataset, tree: Tree) -> None:
    """Every metadata document as files, each a strict-JSON file (no NaN literals)."""

    def put(rel: str, docs: dict[str, Any]) -> None:
        (root / rel).mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (root / rel / name).write_text(json.dumps(doc, allow_nan=False))

    put("", root_documents(ds, tree))
    put("", {"datasource-properties.json": datasource_properties(ds, tree)})
    for name, layer in ds.layers.items():
        put(name, layer_documents(layer, tree, image_layer=image_layer_for(ds.layers)))
        for array in layer.arrays.values():
            put(f"{name}/{array.path}", array_documents(layer, array, tree))


@pytest.fixture(scope="module")
def trees(ds: ServedDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[Tree, Path]:
    """Both trees on disk, with some chunks written by zarr-python into the v3 tree and
    copied into the v2 tree: one encoded chunk must serve both (view.transcode_encoding)."""
    out: dict[Tree, Path] = {}
    for tree in TREES:
        out[tree] = tmp_path_factory.mktemp(tree)
        write_tree(out[tree], ds, tree)
    for layer, mag in [("color", "1"), ("color", "4-4-2"), ("multi", "1"), ("multi", "2")]:
        arr = zarr.open_array(out["zarr3"] / layer / mag, mode="r+")
        arr[...] = data_for(arr.shape, arr.dtype)
        chunks = out["zarr3"] / layer / mag / "c"
        shutil.copytree(chunks, out["zarr"] / layer / mag, dirs_exist_ok=True)
    return out


def data_for(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    return (np.arange(math.prod(shape)) % 251).astype(dtype).reshape(shape)


# --- (a) NGFF validation ------------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_layers_validate_as_ngff(trees: dict[Tree, Path], ds: ServedDataset, tree: Tree) -> None:
    from ome_zarr_models import v04, v05

    models = v04 if tree == "zarr" else v05
    for name, layer in ds.layers.items():
        group = zarr.open_group(
            trees[tree] / name, mode="r", zarr_format=2 if tree == "zarr" else 3
        )
        label = name == "seg"
        model = (models.ImageLabel if label else models.Image).from_zarr(group)
        ms = model.ome_attributes.multiscales[0]
        assert [d.path for d in ms.datasets] == list(layer.arrays)
        assert [a.name for a in ms.axes] == list(layer.axis_names)
    attrs = json.loads((trees["zarr"] / "seg" / ".zattrs").read_text())
    assert attrs["image-label"] == {"version": "0.4", "source": {"image": "../color"}}
    ome = json.loads((trees["zarr3"] / "seg" / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["image-label"] == {"source": {"image": "../color"}}
    assert "version" not in ome["multiscales"][0]
    # A float "segmentation" is an image: NGFF labels are integers.
    probs = json.loads((trees["zarr"] / "probs" / ".zattrs").read_text())
    assert "image-label" not in probs
    assert probs["omero"]["channels"][0]["window"] == {
        "min": 0.0,
        "max": 1.0,
        "start": 0.0,
        "end": 1.0,
    }


def test_omero_channels(ds: ServedDataset) -> None:
    attrs = layer_documents(ds.layers["multi"], "zarr", image_layer=None)[".zattrs"]
    chans = attrs["omero"]["channels"]
    assert [c["label"] for c in chans] == ["DAPI", "GFP", "multi c2"]
    assert [c["color"] for c in chans] == ["00FF00", "00FF00", "0000FF"]
    assert chans[0]["window"] == {"min": 0, "max": 65535, "start": 100, "end": 2000}
    assert chans[1]["window"] == {"min": 0, "max": 4095, "start": 0, "end": 4095}
    bad = replace(ds.layers["multi"], channels=(ChannelInfo("x", "red", (math.nan, 1.0)),))
    chan = ngff_attributes(bad, "zarr3", image_layer=None)["ome"]["omero"]["channels"][0]
    assert chan["color"] == "FF0000"
    assert chan["window"] == {"min": 0, "max": 65535, "start": 0, "end": 65535}
    json.dumps(datasource_properties(ServedDataset("d", VS, {"bad": bad}), "zarr"), allow_nan=False)
    single = layer_documents(ds.layers["color"], "zarr", image_layer=None)[".zattrs"]
    assert single["omero"]["channels"][0]["label"] == "color"
    assert single["omero"]["channels"][0]["color"] == "FFFFFF"


# --- (b) zarr-python ----------------------------------------------------------------------------


# Unconsolidated, zarr-python probes every listed name and warns about the JSON file.
@pytest.mark.filterwarnings("ignore:Object at datasource-properties.json")
@pytest.mark.parametrize(
    ("tree", "consolidated"), [("zarr", True), ("zarr", False), ("zarr3", None)]
)
def test_zarr_python_reads_tree(
    trees: dict[Tree, Path], ds: ServedDataset, tree: Tree, consolidated: bool | None
) -> None:
    fmt: Literal[2, 3] = 2 if tree == "zarr" else 3
    root = zarr.open_group(trees[tree], mode="r", zarr_format=fmt, use_consolidated=consolidated)
    if consolidated is not False:
        assert root.metadata.consolidated_metadata is not None
    assert sorted(root.group_keys()) == sorted(ds.layers)
    attrs: Any = root["seg"].attrs.asdict()
    ome = attrs if tree == "zarr" else attrs["ome"]
    assert ome["image-label"]["source"] == {"image": "../color"}

    def array(key: str) -> zarr.Array[Any]:
        arr = root[key]
        assert isinstance(arr, zarr.Array)
        return arr

    for name, layer in ds.layers.items():
        group = root[name]
        assert isinstance(group, zarr.Group)
        assert sorted(group.array_keys()) == sorted(layer.arrays)
        for path, served_array in layer.arrays.items():
            arr = array(f"{name}/{path}")
            assert arr.shape == served_array.shape
            assert arr.chunks == served_array.chunk_shape
            assert arr.dtype == served_array.dtype
            if isinstance(arr.metadata, ArrayV3Metadata):
                assert arr.metadata.dimension_names == layer.axis_names
            else:
                assert arr.attrs["_ARRAY_DIMENSIONS"] == list(layer.axis_names)
    assert array("seg/1").fill_value == U64_MAX
    assert math.isnan(array("probs/1").fill_value)
    assert array("time/1").fill_value == -5
    assert np.isnan(array("probs/1")[0, 0, 0, :2]).all()  # no chunks: the fill value
    for layer_name, mag in [("color", "1"), ("color", "4-4-2"), ("multi", "1"), ("multi", "2")]:
        arr = array(f"{layer_name}/{mag}")
        np.testing.assert_array_equal(arr[...], data_for(arr.shape, arr.dtype))


@pytest.mark.parametrize("tree", TREES)
def test_tensorstore_reads_arrays(trees: dict[Tree, Path], tree: Tree) -> None:
    ts = pytest.importorskip("tensorstore")
    for layer, mag in [("color", "1"), ("multi", "2"), ("probs", "1"), ("seg", "1")]:
        spec = {
            "driver": tree,
            "kvstore": {"driver": "file", "path": str(trees[tree] / layer / mag)},
        }
        arr = ts.open(spec, read=True).result()
        got = arr.read().result()
        if layer in ("color", "multi"):
            np.testing.assert_array_equal(got, data_for(got.shape, got.dtype))
        elif layer == "seg":
            assert got.dtype == np.uint64
            assert got[0, 0, 0, 0] == U64_MAX
        else:
            assert np.isnan(got).all()


# --- (c) ome-zarr-py ----------------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_ome_zarr_py_reads_layers(trees: dict[Tree, Path], tree: Tree) -> None:
    from ome_zarr.io import parse_url  # type: ignore[import-untyped]
    from ome_zarr.reader import Reader  # type: ignore[import-untyped]

    location = parse_url(str(trees[tree] / "multi"))
    assert location is not None
    image = next(iter(Reader(location)()))
    assert [d.shape for d in image.data] == [(3, 8, 32, 32), (3, 4, 16, 16)]
    assert image.metadata["channel_names"] == ["DAPI", "GFP", "multi c2"]
    assert image.metadata["contrast_limits"][0] == [100, 2000]
    np.testing.assert_array_equal(
        image.data[1].compute(), data_for((3, 4, 16, 16), np.dtype(np.uint16))
    )
    location = parse_url(str(trees[tree] / "seg"))
    assert location is not None
    nodes = list(Reader(location)())
    label = next(n for n in nodes if n.zarr.basename() == "seg")
    assert label.data[0].dtype == np.uint64
    assert any(n.zarr.basename() == "color" for n in nodes)  # image-label.source followed


# --- (d) datasource-properties.json -------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_datasource_properties(ds: ServedDataset, tree: Tree) -> None:
    props = datasource_properties(ds, tree)
    parsed = DataSource.from_properties(json.loads(json.dumps(props, allow_nan=False)))
    assert parsed.voxel_size == VS
    assert list(parsed.layers) == list(ds.layers)
    color = parsed.layers["color"]
    assert color.bbox == ds.layers["color"].bbox
    assert color.data_format == tree
    assert [str(m) for m in color.mags] == ["1", "2-2-1", "4-4-2"]
    level = color.mags[Mag("4-4-2")]
    assert level.path == "./color/4-4-2"
    assert level.offset == Vec3(1, 1, 2)
    assert color.mags[Mag(1)].offset == Vec3(2, 4, 8)
    assert dict(level.axis_order or {}) == {"c": 0, "z": 1, "y": 2, "x": 3}
    wk = {d["name"]: d for d in props["dataLayers"]}
    assert "wkjupyter" not in wk["multi"]["mags"][0]  # origin: no offset hint
    assert wk["seg"]["largestSegmentId"] == 1234
    assert wk["seg"]["elementClass"] == "uint64"
    assert wk["probs"]["category"] == "color"
    assert wk["probs"]["wkjupyter"]["fillValue"] == "NaN"
    assert wk["time"]["mags"][0]["axisOrder"] == {"t": 0, "c": 1, "z": 2, "y": 3, "x": 4}
    assert wk["time"]["additionalAxes"] == [{"name": "t", "bounds": [0, 3], "index": 0}]
    assert parsed.layers["time"].additional_axes[0] == AdditionalAxis("t", 3, "time", "second")
    assert parsed.layers["multi"].channels[0].label == "DAPI"


def test_layer_without_element_class_is_skipped(ds: ServedDataset) -> None:
    f16 = make_layer(
        "half", "color", "float16", [served("1", (1, 4, 4, 4), (1, 4, 4, 4), "float16")]
    )
    props = datasource_properties(ServedDataset("d", VS, {**ds.layers, "half": f16}), "zarr3")
    assert "half" not in {d["name"] for d in props["dataLayers"]}


# --- (e) listings -------------------------------------------------------------------------------


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if tag == "a" and k == "href"]


HOSTILE = ['a"b', "x'><script>alert(1)</script>", "c:d", "e f/", "&amp;"]


@pytest.mark.parametrize("entries", [[".zattrs", ".zgroup", "color/", "1/"], HOSTILE])
def test_listing_hrefs(entries: list[str]) -> None:
    from fsspec.implementations.http import ex

    page, doc = listing(entries, title="zarr/<demo>/")
    assert doc == {"entries": entries}
    assert "<script>" not in page
    assert "<title>zarr/&lt;demo&gt;/</title>" in page
    url = "http://host/wkjupyter/zarr/demo/"
    # fsspec HTTPFileSystem._ls_real: the href regex, relative links joined onto the URL.
    scraped = [m[2] for m in ex.findall(page)]
    joined = ["/".join([url.rstrip("/"), link.lstrip("/")]) for link in scraped]
    parser = _Hrefs()
    parser.feed(page)
    browser = [urljoin(url, h) for h in parser.hrefs]  # what a browser follows
    assert joined == browser
    assert [unquote(u.removeprefix(url)) for u in browser] == entries


def test_entries(ds: ServedDataset) -> None:
    assert root_entries(ds, "zarr") == [
        ".zattrs", ".zgroup", ".zmetadata", "datasource-properties.json",
        "color/", "multi/", "seg/", "probs/", "time/",
    ]  # fmt: skip
    assert root_entries(ds, "zarr3")[:2] == ["datasource-properties.json", "zarr.json"]
    assert layer_entries(ds.layers["color"], "zarr3") == ["zarr.json", "1/", "2-2-1/", "4-4-2/"]
    assert array_entries("zarr") == [".zarray", ".zattrs"]
    assert array_entries("zarr3") == ["zarr.json"]


def test_consolidated_keys(ds: ServedDataset) -> None:
    root = root_documents(ds, "zarr")[".zmetadata"]["metadata"]
    assert {".zgroup", ".zattrs", "color/.zattrs", "color/2-2-1/.zarray", "time/1/.zattrs"} <= set(
        root
    )
    assert "multiscales" not in root[".zattrs"]
    layer = layer_documents(ds.layers["color"], "zarr", image_layer=None)[".zmetadata"]
    arrays = {f"{m}/{f}" for m in ("1", "2-2-1", "4-4-2") for f in (".zarray", ".zattrs")}
    assert set(layer["metadata"]) == {".zgroup", ".zattrs", *arrays}


# --- (f) fill values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (float("nan"), "float32", "NaN"),
        (np.float64("-inf"), "float64", "-Infinity"),
        (float("inf"), "float32", "Infinity"),
        (np.float32(0.5), "float32", 0.5),
        (-5, "int16", -5),
        (np.int64(-1), "int64", -1),
        (U64_MAX, "uint64", U64_MAX),
        (np.uint64(U64_MAX), "uint64", U64_MAX),
        (1, "bool", True),
        (None, "uint8", 0),
        (complex(1, float("nan")), "complex64", [1.0, "NaN"]),
    ],
)
def test_fill_value_json(value: Any, dtype: str, expected: Any) -> None:
    got = fill_value_json(value, np.dtype(dtype))
    assert got == expected
    assert type(got) is type(expected)
    json.dumps(got, allow_nan=False)


@pytest.mark.parametrize("tree", TREES)
def test_array_fill_values_in_documents(ds: ServedDataset, tree: Tree) -> None:
    layer = ds.layers["seg"]
    doc = array_documents(layer, layer.arrays["1"], tree)
    meta = doc[".zarray" if tree == "zarr" else "zarr.json"]
    assert meta["fill_value"] == U64_MAX
    assert json.loads(json.dumps(meta))["fill_value"] == U64_MAX
