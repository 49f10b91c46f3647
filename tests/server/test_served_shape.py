"""Served geometry: each mag is declared at the layer's bounding box, not at its stored shape.

webknossos-libs writes the datasets: a layer whose box lies away from the origin (top-left
(5, 6, 7), 40 x 70 x 90 voxels, x, y, z) in Zarr v3 arrays padded to whole 1024³ shards and in
Zarr v2 arrays padded to whole 32³ chunks, and its mag 2 by the library's own downsampling.
Voxels written before the box was cut to its size stay stored past it (x 64-67, a chunk
beyond the box's last one) and must not be served. zarr-python and tensorstore read both
trees over HTTP and must see the box at each mag, with the voxels the library reads.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytest
import tensorstore as ts
import zarr
from hypothesis import given
from hypothesis import strategies as st

from tests.server.live import LiveServer
from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.hub import Hub
from wkjupyter.server.view import served_shape

with warnings.catch_warnings():  # optional image readers it cannot import
    warnings.simplefilter("ignore")
    import webknossos as wk
    from cluster_tools import get_executor

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from numpy.typing import NDArray

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

Tree = Literal["zarr", "zarr3"]
TREES = [pytest.param("zarr", 2, id="v2"), pytest.param("zarr3", 3, id="v3")]
SOURCES = ["zarr3", "zarr"]  # the library's data formats
MAGS = ["1", "2"]
OWNER = "owner"
TOP_LEFT_XYZ, SIZE_XYZ = (5, 6, 7), (40, 70, 90)
BOX = BoundingBox(Vec3.from_xyz(TOP_LEFT_XYZ), Vec3.from_xyz(SIZE_XYZ))  # z, y, x
STRAY_X = 64  # voxels at x 64-67 are written, then left outside the box


def czyx(data: NDArray[Any]) -> NDArray[Any]:
    """webknossos' (c, x, y, z) as (c, z, y, x)."""
    return np.ascontiguousarray(data.transpose(0, 3, 2, 1))


def write_dataset(path: Path, fmt: str) -> dict[str, NDArray[Any]]:
    """One color layer written by webknossos-libs in ``fmt``: mag -> the library's read of
    the layer's box at that mag, (c, z, y, x)."""
    ds = wk.Dataset(path, voxel_size=(11, 11, 24))
    layer = ds.add_layer("color", wk.COLOR_CATEGORY, dtype="uint8", data_format=fmt)
    (x0, _, _), (sx, sy, sz) = TOP_LEFT_XYZ, SIZE_XYZ
    data = np.zeros((STRAY_X + 4 - x0, sy, sz), "uint8")
    data[:sx] = np.random.default_rng(8).integers(1, 255, (sx, sy, sz), dtype="uint8")
    data[STRAY_X - x0 :, :8, :8] = 255
    layer.add_mag(1).write(data, absolute_offset=TOP_LEFT_XYZ, allow_resize=True)
    layer.bounding_box = wk.BoundingBox(TOP_LEFT_XYZ, SIZE_XYZ)
    with get_executor("sequential") as executor:
        layer.downsample_mag(wk.Mag(1), wk.Mag(2), executor=executor)
    return {str(m.x): czyx(layer.get_mag(m).read()) for m in layer.mags}


def stored_shape(path: Path, fmt: str, mag: str) -> tuple[int, ...]:
    """The shape the library stored for a mag, as (c, z, y, x)."""
    name = "zarr.json" if fmt == "zarr3" else ".zarray"
    c, x, y, z = json.loads((path / "color" / mag / name).read_text())["shape"]
    return (c, z, y, x)


def box_shape(mag: str) -> tuple[int, ...]:
    """The served shape: up to the box's end at ``mag`` (the arrays start at voxel 0)."""
    return (1, *BOX.end.ceildiv(Mag(mag).vec))


@dataclass
class WkServed:
    server: LiveServer
    hub: Hub
    paths: dict[str, Path]  # data format -> dataset
    expected: dict[str, dict[str, NDArray[Any]]]  # data format -> mag -> (c, z, y, x)

    def url(self, tree: Tree, fmt: str, *parts: str) -> str:
        return self.server.url + "/".join([tree, f"wk-{fmt}", "color", *parts]) + "/"


@pytest.fixture(scope="module")
def wk_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WkServed]:
    data_dir = tmp_path_factory.mktemp("wk-served")
    paths = {fmt: data_dir / f"wk-{fmt}" for fmt in SOURCES}
    expected = {fmt: write_dataset(path, fmt) for fmt, path in paths.items()}
    url = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    hub = Hub(url, OWNER, data_dir=data_dir, public_url="http://example.invalid/")
    for fmt, path in paths.items():
        hub.add_remote(str(path), name=f"wk-{fmt}", public=True)
    with LiveServer(url, data_dir, owner=OWNER, local_roots=[data_dir]) as server:
        yield WkServed(server, hub, paths, expected)
    hub.catalog.dispose()


def test_the_library_stores_more_than_the_box(wk_served: WkServed) -> None:
    """The premise: what the library stores exceeds the box at every mag."""
    assert stored_shape(wk_served.paths["zarr3"], "zarr3", "1") == (1, 1024, 1024, 1024)
    for fmt in SOURCES:
        for mag in MAGS:
            stored, box = stored_shape(wk_served.paths[fmt], fmt, mag), box_shape(mag)
            assert stored != box
            assert all(s >= b for s, b in zip(stored, box, strict=True))


@pytest.mark.parametrize(("tree", "fmt"), TREES)
@pytest.mark.parametrize("source", SOURCES)
def test_zarr_python_reads_each_mag_at_the_box_shape(
    wk_served: WkServed, source: str, tree: Tree, fmt: int
) -> None:
    for mag in MAGS:
        array = zarr.open_array(wk_served.url(tree, source, mag), mode="r", zarr_format=fmt)
        assert array.shape == box_shape(mag)  # before: (1, 1024, 1024, 1024) for zarr3
        assert array.chunks == (1, 32, 32, 32)  # the stored grid
        got = array[...]
        z, y, x = BOX.in_mag(Mag(mag)).offset
        np.testing.assert_array_equal(got[:, z:, y:, x:], wk_served.expected[source][mag])
        assert not got[:, :z].any()
        assert not got[:, :, :y].any()
        assert not got[:, :, :, :x].any()


@pytest.mark.parametrize("tree", ["zarr", "zarr3"])
@pytest.mark.parametrize("source", SOURCES)
def test_tensorstore_opens_each_mag_at_the_box_shape(
    wk_served: WkServed, source: str, tree: Tree
) -> None:
    for mag in MAGS:
        store = ts.open({"driver": tree, "kvstore": wk_served.url(tree, source, mag)}).result()
        assert store.shape == box_shape(mag)
        z, y, x = BOX.in_mag(Mag(mag)).offset
        got = store[:, z:, y:, x:].read().result()
        np.testing.assert_array_equal(got, wk_served.expected[source][mag])


def test_chunks_past_the_box_are_absent(wk_served: WkServed) -> None:
    """The chunk grid follows the declared shape: a chunk straddling the box's end is served
    (whole, as stored), the stored chunk past it is not."""
    get = wk_served.server.get
    # Box end (z, y, x) = (97, 76, 45) -> chunks 0-3, 0-2, 0-1 of 32; x 64-67 is chunk 2.
    for tree, key in (("zarr3", "c/0/{}/{}/{}"), ("zarr", "0/{}/{}/{}")):
        base = f"{tree}/wk-zarr3/color/1/"
        assert get(base + key.format(0, 0, 0))[0] == 200
        assert get(base + key.format(3, 2, 1))[0] == 200  # straddles the box's end
        assert get(base + key.format(0, 0, 2))[0] == 404  # stored (x 64-67), past the box


def test_served_datasource_keeps_the_box(wk_served: WkServed) -> None:
    """webknossos-libs opens the served tree with the source's box and voxels."""
    from upath import UPath

    for tree in ("zarr", "zarr3"):
        url = wk_served.server.url + f"{tree}/wk-zarr3/"
        layer = wk.Dataset.open(UPath(url)).get_layer("color")
        box = layer.bounding_box  # axes c, z, y, x: the served arrays' order
        assert (tuple(box.topleft_xyz), tuple(box.size_xyz)) == (TOP_LEFT_XYZ, SIZE_XYZ)
        for mag in MAGS:
            got = layer.get_mag(mag).read()  # in the served order: c, z, y, x
            np.testing.assert_array_equal(got, wk_served.expected["zarr3"][mag])


@pytest.mark.parametrize("source", SOURCES)
def test_hub_layer_reads_its_box(wk_served: WkServed, source: str) -> None:
    """``Layer.read()`` of a catalog dataset reads exactly the box at each mag."""
    layer = wk_served.hub.dataset(f"wk-{source}")["color"]
    assert layer.bbox == BOX
    for mag in MAGS:
        np.testing.assert_array_equal(layer.read(mag=mag), wk_served.expected[source][mag])


# -- the rule -------------------------------------------------------------------------------------

extents = st.integers(0, 3000)
vecs = st.builds(Vec3, extents, extents, extents)


@given(
    stored=st.tuples(st.integers(1, 4), *[st.integers(1, 2048)] * 3),
    extra=st.lists(st.integers(1, 5), max_size=2),
    bbox=st.builds(BoundingBox, vecs, vecs),
    mag=st.builds(Mag, st.tuples(*[st.integers(1, 16)] * 3)),
    offset=st.builds(Vec3, *[st.integers(-100, 1000)] * 3),
)
def test_served_shape_cuts_at_the_box_end(
    stored: tuple[int, ...], extra: list[int], bbox: BoundingBox, mag: Mag, offset: Vec3
) -> None:
    full = (*extra, *stored)
    shape = served_shape(full, bbox, mag, offset)
    assert shape[:-3] == full[:-3]  # extra axes and c unchanged
    end = bbox.in_mag(mag).end - offset  # the box's end in the array's voxels
    for declared, s, e in zip(shape[-3:], full[-3:], end, strict=True):
        assert 1 <= declared <= s  # never grows, never empty
        if declared < s:
            assert declared == max(1, e)  # cut exactly at the box's end
        else:
            assert s <= max(1, e)  # or the array ends within the box


def test_served_shape_examples() -> None:
    stored = (1, 1024, 1024, 1024)
    assert served_shape(stored, BOX, Mag(1), Vec3(0, 0, 0)) == (1, 97, 76, 45)
    assert served_shape(stored, BOX, Mag(2), Vec3(0, 0, 0)) == (1, 49, 38, 23)
    assert served_shape(stored, BOX, Mag("2-2-1"), Vec3(0, 0, 0)) == (1, 97, 38, 23)
    # An array starting inside the box (NGFF translation, precomputed voxel_offset).
    assert served_shape((1, 90, 70, 40), BOX, Mag(1), Vec3(7, 6, 5)) == (1, 90, 70, 40)
    assert served_shape((1, 100, 80, 50), BOX, Mag(1), Vec3(7, 6, 5)) == (1, 90, 70, 40)
    # Smaller than the box (a writer that stopped early): kept; wholly past it: one voxel.
    assert served_shape((1, 10, 10, 10), BOX, Mag(1), Vec3(0, 0, 0)) == (1, 10, 10, 10)
    assert served_shape((1, 10, 10, 10), BOX, Mag(1), Vec3(200, 0, 0)) == (1, 1, 10, 10)
