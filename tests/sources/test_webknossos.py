"""webKnossos datasets written by the webknossos library (formats.md §5, webknossos.md §3):
zarr3 (sharded, padded to 1024) and zarr (order F) layers, color and segmentation, mags
``2-2-1``, bounding boxes away from the origin, and broken ``datasource-properties.json``."""

from __future__ import annotations

import asyncio
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.sources.conformance import Case, ExpectedLayer, ExpectedMag, SourceTests
from tests.sources.test_zarr import rebuild
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.sources import webknossos
from wkjupyter.sources._fs import Store
from wkjupyter.sources.explore import explore

with warnings.catch_warnings():  # optional image readers it cannot import
    warnings.simplefilter("ignore")
    import webknossos as wk

if TYPE_CHECKING:
    from tests.servers import HTTPServerFactory

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

VOXEL = (4, 4, 40)  # x, y, z in nm
COLOR_BOX = ((10, 20, 5), (70, 60, 40))  # top-left and size, x, y, z
# The library's default zarr3 shard (1024^3) takes seconds to write; one mag keeps it.
SMALL = {"chunk_shape": 16, "shard_shape": 64}


@dataclass
class Dataset:
    path: Path
    layers: list[ExpectedLayer]


def czyx(xyz: np.ndarray) -> np.ndarray:
    """webknossos (c, x, y, z) or (x, y, z) data as (c, z, y, x)."""
    data = xyz if xyz.ndim == 4 else xyz[None]
    return np.ascontiguousarray(data.transpose(0, 3, 2, 1))


def build(root: Path, fmt: str, rng: np.random.Generator) -> Dataset:
    ds = wk.Dataset(root / f"wk_{fmt}", voxel_size=VOXEL)
    small = SMALL if fmt == "zarr3" else {"chunk_shape": 16}
    (x0, y0, z0), (sx, sy, sz) = COLOR_BOX
    color = rng.integers(1, 255, (sx, sy, sz), dtype="uint8")
    layer = ds.add_layer("color", wk.COLOR_CATEGORY, dtype="uint8", data_format=fmt,
                         bounding_box=wk.BoundingBox(COLOR_BOX[0], COLOR_BOX[1]))  # fmt: skip
    layer.add_mag(1).write(color, absolute_offset=COLOR_BOX[0])  # default 1024^3 shards
    half = color[::2, ::2, :]  # a "2-2-1" level, written as webknossos' downsampling would
    layer.add_mag("2-2-1", **small).write(half, absolute_offset=COLOR_BOX[0])

    seg = rng.integers(0, 1000, (40, 30, 20), dtype="uint32")
    layer = ds.add_layer("segmentation", wk.SEGMENTATION_CATEGORY, dtype="uint32",
                         data_format=fmt, largest_segment_id=999,
                         bounding_box=wk.BoundingBox((0, 0, 0), (40, 30, 20)))  # fmt: skip
    layer.add_mag(1, **small).write(seg, absolute_offset=(0, 0, 0))

    rgb = rng.integers(0, 255, (3, 20, 24, 10), dtype="uint8")
    box = wk.BoundingBox((0, 0, 0), (20, 24, 10))
    layer = ds.add_layer("rgb", wk.COLOR_CATEGORY, dtype="uint8", num_channels=3,
                         data_format=fmt, bounding_box=box)  # fmt: skip
    layer.add_mag(1, **small).write(rgb, absolute_offset=(0, 0, 0))

    vs = (40.0, 4.0, 4.0)
    offset = (z0, y0, x0)
    return Dataset(
        ds.path,
        [
            ExpectedLayer("color", "color", "uint8", vs, {
                "1": ExpectedMag(czyx(color), offset),
                "2-2-1": ExpectedMag(czyx(half), (z0, y0 // 2, x0 // 2))}),
            ExpectedLayer("segmentation", "segmentation", "uint32", vs,
                          {"1": ExpectedMag(czyx(seg))}),
            ExpectedLayer("rgb", "color", "uint8", vs, {"1": ExpectedMag(czyx(rgb))}),
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    root = tmp_path_factory.mktemp("webknossos")
    rng = np.random.default_rng(11)
    return {fmt: build(root, fmt, rng) for fmt in ("zarr3", "zarr")}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def explore_layers(path: Path | str) -> dict[str, Any]:
    layers = run(webknossos.explore(Store(str(path))))
    assert layers is not None
    return {layer.name: layer for layer in layers}


def copy_with(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of a dataset whose properties ``edit(props)`` changed."""
    shutil.copytree(src, dst)
    props = json.loads((dst / webknossos.PROPERTIES).read_text())
    edit(props)
    (dst / webknossos.PROPERTIES).write_text(json.dumps(props))
    return dst


# -- the conformance suite ------------------------------------------------------------------------


@pytest.fixture(params=["zarr3", "zarr", "http:zarr3"])
def case(request: pytest.FixtureRequest, datasets: dict[str, Dataset]) -> Case:
    transport, _, name = str(request.param).rpartition(":")
    ds = datasets[name]
    url = str(ds.path)
    if transport:
        factory: HTTPServerFactory = request.getfixturevalue("http_server")
        url = factory(ds.path.parent).url_for(ds.path.name)
    return Case(url, ds.layers, format="webknossos")


class TestWebknossosConformance(SourceTests):
    """The shared suite over the library's zarr3 and zarr datasets."""


# -- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zarr3", "zarr"])
def test_layers_as_the_library_wrote_them(datasets: dict[str, Dataset], fmt: str) -> None:
    path = datasets[fmt].path
    layers = explore_layers(path)
    color, seg, rgb = layers["color"], layers["segmentation"], layers["rgb"]
    assert color.bbox == BoundingBox(Vec3(5, 20, 10), Vec3(40, 60, 70))
    assert color.voxel_size.as_tuple() == (40.0, 4.0, 4.0)
    assert [str(m) for m in color.mags] == ["1", "2-2-1"]
    level = color.mags[Mag("2-2-1")]
    assert level.format == fmt
    assert level.path == str(path / "color" / "2-2-1")
    assert level.axis_order == {"c": 0, "x": 1, "y": 2, "z": 3}
    assert level.offset == Vec3(0, 0, 0)
    assert (seg.category, seg.largest_segment_id) == ("segmentation", 999)
    assert (rgb.num_channels, rgb.dtype) == (3, np.dtype("uint8"))


def test_zarr3_shape_is_padded_beyond_the_bbox(datasets: dict[str, Dataset]) -> None:
    path = datasets["zarr3"].path
    meta = json.loads((path / "color" / "1" / "zarr.json").read_text())
    assert meta["shape"][1:] == [1024, 1024, 1024]
    color = explore_layers(path)["color"]
    assert color.bbox.end == Vec3(45, 80, 80)
    beyond = color.read(BoundingBox.of((50, 100, 100), (4, 4, 4)))
    assert beyond.shape == (1, 4, 4, 4)
    assert not beyond.any()


@pytest.mark.parametrize("fmt", ["zarr3", "zarr"])
def test_read_without_a_box_reads_the_box(datasets: dict[str, Dataset], fmt: str) -> None:
    """``Layer.read()`` covers the layer's box at each mag, not the padded stored array, and
    gets what the library itself reads."""
    path = datasets[fmt].path
    color = explore_layers(path)["color"]
    library = wk.Dataset.open(path).get_layer("color")
    for name in ("1", "2-2-1"):
        got = color.read(mag=name)
        assert got.shape == (1, *color.bbox.in_mag(Mag(name)).shape)
        np.testing.assert_array_equal(got, czyx(library.get_mag(name).read()))


def test_root_zgroup_has_a_string_format(datasets: dict[str, Dataset]) -> None:
    zgroup = json.loads((datasets["zarr"].path / ".zgroup").read_text())
    assert zgroup == {"zarr_format": "2"}  # the library's quirk; explore must not mind
    assert sorted(explore_layers(datasets["zarr"].path)) == ["color", "rgb", "segmentation"]


def test_mags_without_path_live_at_layer_slash_mag(
    datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    def drop_paths(props: dict[str, Any]) -> None:
        for layer in props["dataLayers"]:
            for mag in layer["mags"]:
                del mag["path"]

    path = copy_with(datasets["zarr3"].path, tmp_path / "ds", drop_paths)
    color = explore_layers(path)["color"]
    assert color.mags[Mag("2-2-1")].path == str(path / "color" / "2-2-1")
    want = datasets["zarr3"].layers[0].mags["2-2-1"].data
    np.testing.assert_array_equal(color.read(mag="2-2-1"), want)


def test_relative_paths_resolve_against_the_root(
    datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    shutil.copytree(datasets["zarr"].path / "segmentation", tmp_path / "shared" / "seg")

    def point_outside(props: dict[str, Any]) -> None:
        layer = next(d for d in props["dataLayers"] if d["name"] == "segmentation")
        layer["mags"][0]["path"] = "../shared/seg/1"

    path = copy_with(datasets["zarr"].path, tmp_path / "ds", point_outside)
    seg = explore_layers(path)["segmentation"]
    assert seg.mags[Mag(1)].path == str(tmp_path / "shared" / "seg" / "1")
    np.testing.assert_array_equal(seg.read(), datasets["zarr"].layers[1].mags["1"].data)


def test_missing_axis_order_gets_the_webknossos_default(
    datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    def drop_axis_order(props: dict[str, Any]) -> None:
        for layer in props["dataLayers"]:
            for mag in layer["mags"]:
                del mag["axisOrder"]

    path = copy_with(datasets["zarr3"].path, tmp_path / "ds", drop_axis_order)
    color = explore_layers(path)["color"]
    assert color.mags[Mag(1)].axis_order == {"c": 0, "x": 1, "y": 2, "z": 3}
    np.testing.assert_array_equal(
        color.read(mag="1")[0], datasets["zarr3"].layers[0].mags["1"].data[0]
    )


def test_n5_layers_keep_their_format(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    def n5_layer(props: dict[str, Any]) -> None:
        props["dataLayers"].append({
            "name": "em", "category": "color", "elementClass": "uint8", "dataFormat": "n5",
            "boundingBox": {"topLeft": [0, 0, 0], "width": 8, "height": 8, "depth": 8},
            "mags": [{"mag": [1, 1, 1], "path": "em.n5/s0"}]})  # fmt: skip

    path = copy_with(datasets["zarr"].path, tmp_path / "ds", n5_layer)
    em = explore_layers(path)["em"]
    assert (em.data_format, em.mags[Mag(1)].path) == ("n5", str(path / "em.n5" / "s0"))


def test_not_webknossos_is_none(tmp_path: Path) -> None:
    assert run(webknossos.explore(Store(str(tmp_path)))) is None


# -- bad input ------------------------------------------------------------------------------------


def failed(path: Path) -> str:
    report = explore(str(path))
    return " | ".join(s.message for s in report.steps if s.outcome == "failed")


def test_wkw_layers_are_refused_clearly(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    def to_wkw(props: dict[str, Any]) -> None:
        props["dataLayers"][0]["dataFormat"] = "wkw"

    path = copy_with(datasets["zarr"].path, tmp_path / "ds", to_wkw)
    with pytest.raises(UnsupportedFormatError, match=r"'color'.*WKW.*convert"):
        explore_layers(path)
    assert "WKW" in failed(path)


def test_malformed_properties(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "ds"
    shutil.copytree(datasets["zarr3"].path, path)
    (path / webknossos.PROPERTIES).write_text('{"dataLayers": [')
    assert "datasource-properties.json" in failed(path)
    (path / webknossos.PROPERTIES).write_text(json.dumps({"dataLayers": [{"name": "x"}]}))
    with pytest.raises(MetadataError, match=r"datasource-properties\.json"):
        explore_layers(path)


def test_mag_without_array(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "ds"
    shutil.copytree(datasets["zarr3"].path, path)
    shutil.rmtree(path / "color" / "2-2-1")
    with pytest.raises(MetadataError, match=r"mag 2-2-1 should be a Zarr array"):
        explore_layers(path)


def test_element_class_must_match_the_arrays(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    def wrong_class(props: dict[str, Any]) -> None:
        props["dataLayers"][1]["elementClass"] = "uint16"

    path = copy_with(datasets["zarr"].path, tmp_path / "ds", wrong_class)
    with pytest.raises(MetadataError, match=r"says uint16.*stores uint32"):
        explore_layers(path)


# -- pass-through ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zarr3", "zarr"])
def test_stored_chunks_pass_through(datasets: dict[str, Dataset], tmp_path: Path, fmt: str) -> None:
    """c, x, y, z chunks (zarr3: inner chunks of shards, transposed; zarr: order F) are
    served as canonical chunks by folding the axis order into the transpose codec."""
    color = explore_layers(datasets[fmt].path)["color"]
    array = color.open_array("2-2-1")
    codecs = array.passthrough_codec["codecs"]
    assert codecs[0]["name"] == "transpose"
    exp = datasets[fmt].layers[0].mags["2-2-1"]
    got = rebuild(array, tmp_path / "out")
    z, y, x = exp.offset
    np.testing.assert_array_equal(got[:, z : z + 40, y : y + 30, x : x + 35], exp.data)
