"""Real third-party clients read every format through both served trees over HTTP.

zarr-python 3, tensorstore, ome-zarr-py, xarray, dask, ome-zarr-models and fsspec read the
``zarr/`` (Zarr v2 + NGFF 0.4) and ``zarr3/`` (Zarr v3 + NGFF 0.5) trees of the live server and
must get the voxels the source's own writer library reads from disk (zarr-python for
OME-Zarr, tensorstore for N5 and Neuroglancer precomputed). Extra sources cover what the demo
does not: a precomputed image with a nonzero ``voxel_offset`` and a 2-2-1 mag, Java-style N5
with truncated edge blocks, and float64/int64 data Neuroglancer cannot display.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytest
import tensorstore as ts
import zarr

import wkjupyter
from tests.server.conftest import DATASETS, PRIVATE, Served
from tests.sources.test_n5 import java_write, make_data
from wkjupyter.geometry import BoundingBox, Vec3

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from wkjupyter.datasource import MagLevel

Tree = Literal["zarr", "zarr3"]
Format = Literal[2, 3]
TREES = [pytest.param("zarr", 2, id="v2"), pytest.param("zarr3", 3, id="v3")]
DEMO = sorted(DATASETS.values())  # ome-zarr, n5, precomputed
#: The geometry fixture: precomputed resolution (x, y, z) and voxel_offset of mag 1.
RESOLUTION_XYZ = (4.0, 4.0, 40.0)
OFFSET_XYZ = (10, 20, 3)


def writer_read(level: MagLevel) -> NDArray[Any]:
    """One mag as the source's writer library reads it from disk, as (c, z, y, x)."""
    if level.format == "zarr":  # zarr-python wrote it
        data = zarr.open_array(level.path, mode="r")[...]
        order = level.axis_order or {"z": 0, "y": 1, "x": 2}
        return np.transpose(data, [order[a] for a in "zyx"])[None]
    if level.format == "n5":  # tensorstore: the domain is x, y, z
        store = ts.open({"driver": "n5", "kvstore": f"file://{level.path}"}).result()
        return np.asarray(store.read().result()).T[None]
    assert level.format == "neuroglancerPrecomputed"  # tensorstore: x, y, z, channel
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": f"file://{level.path}/",
        "scale_metadata": {"key": level.hints["scale"]},
    }
    store = ts.open(spec).result()  # the domain starts at voxel_offset: exactly the stored box
    return np.asarray(store.read().result()).transpose(3, 2, 1, 0)


@dataclass
class Clients:
    """The live server, and the expected voxels of every (dataset, layer, mag), cached."""

    served: Served
    cache: dict[tuple[str, str, str], NDArray[Any]]

    def url(self, tree: Tree, dataset: str, *parts: str) -> str:
        return self.served.url + "/".join([tree, dataset, *parts]) + "/"

    def mags(self, dataset: str) -> dict[str, list[str]]:
        """layer -> mag names, as in the catalog."""
        layers = self.served.hub.dataset(dataset).layers
        return {name: [str(m) for m in layer.mags] for name, layer in layers.items()}

    def expected(self, dataset: str, layer: str, mag: str) -> NDArray[Any]:
        key = (dataset, layer, mag)
        if key not in self.cache:
            source = self.served.hub.dataset(dataset)[layer]
            self.cache[key] = writer_read(source.mags[source.mag(mag)])
        return self.cache[key]


@pytest.fixture(scope="module")
def clients(served: Served) -> Clients:
    return Clients(served, {})


# -- extra sources, imported into the served catalog ---------------------------------------------


def write_offset_precomputed(path: Path) -> dict[str, NDArray[Any]]:
    """A tensorstore precomputed image with a nonzero voxel_offset, mags 1 and 2-2-1."""
    fine = np.random.default_rng(7).integers(0, 60000, (12, 40, 50), dtype=np.uint16)
    levels = {"1": (fine, (1, 1, 1)), "2-2-1": (fine[:, ::2, ::2].copy(), (2, 2, 1))}
    for data, factors in levels.values():
        scale = {
            "resolution": [r * f for r, f in zip(RESOLUTION_XYZ, factors, strict=True)],
            "encoding": "raw",
            "chunk_size": [16, 16, 8],
            "size": list(data.shape[::-1]),
            "voxel_offset": [o // f for o, f in zip(OFFSET_XYZ, factors, strict=True)],
        }
        meta = {"type": "image", "data_type": "uint16", "num_channels": 1}
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": f"file://{path}/",
            "multiscale_metadata": meta,
            "scale_metadata": scale,
        }
        ts.open(spec, create=True).result()[...] = data.T[..., None]
    return {mag: data[None] for mag, (data, _) in levels.items()}


def write_wide_dtypes(path: Path) -> dict[str, NDArray[Any]]:
    """OME-Zarr 0.4 by zarr-python: a float64 image and int64 labels (no Neuroglancer dtype)."""
    rng = np.random.default_rng(3)
    image = rng.standard_normal((10, 24, 36)) * 1e300  # far beyond float32
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    labels = rng.integers(-(2**62), 2**62, (10, 24, 36), dtype=np.int64)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    seg = root.create_group("labels")
    seg.attrs["labels"] = ["ids"]
    seg = seg.create_group("ids")
    seg.attrs["image-label"] = {"version": "0.4"}
    for group, data, name in ((root, image, "wide"), (seg, labels, "ids")):
        group.create_array(
            "0", data=data, chunks=(8, 16, 16), chunk_key_encoding={"name": "v2", "separator": "/"}
        )
        axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
        scale: list[Any] = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": name,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": scale}],
            }
        ]
    return {"wide": image[None], "ids": labels[None]}


@dataclass
class Extra:
    """The extra datasets' expected voxels: dataset -> layer -> mag -> (c, z, y, x)."""

    data: dict[str, dict[str, dict[str, NDArray[Any]]]]


@pytest.fixture(scope="module")
def extra(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Extra:
    root = tmp_path_factory.mktemp("extra")
    geometry = write_offset_precomputed(root / "geometry")
    wide = write_wide_dtypes(root / "wide.ome.zarr")
    java = make_data("uint16")  # (70, 90, 110): edge blocks of 32 are truncated
    java_write(root / "java.n5", java, "gzip")
    data: dict[str, dict[str, dict[str, NDArray[Any]]]] = {
        "geometry": {"geometry": geometry},
        "wide": {layer: {"1": voxels} for layer, voxels in wide.items()},
        "java-n5": {"java": {"1": java[None]}},
    }
    for name, path in (
        ("geometry", root / "geometry"),
        ("wide", root / "wide.ome.zarr"),
        ("java-n5", root / "java.n5"),
    ):
        dataset = served.hub.add_remote(str(path), name=name, public=True)
        assert list(dataset.layers) == list(data[name])  # named after their folders
    return Extra(data)


# -- 1. zarr-python --------------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
@pytest.mark.parametrize("dataset", DEMO)
def test_zarr_python_reads_every_array(
    clients: Clients, dataset: str, tree: Tree, fmt: Format
) -> None:
    root = zarr.open_group(clients.url(tree, dataset), mode="r")
    assert root.metadata.zarr_format == fmt
    assert root.metadata.consolidated_metadata is not None  # .zmetadata / inline
    mags = clients.mags(dataset)
    assert sorted(root.group_keys()) == sorted(mags)
    for layer, names in mags.items():
        group = root[layer]
        assert isinstance(group, zarr.Group)
        assert list(group.array_keys()) == names
        for mag in names:
            expected = clients.expected(dataset, layer, mag)
            walked = group[mag]
            assert isinstance(walked, zarr.Array)
            direct = zarr.open_array(
                clients.url(tree, dataset, layer, mag), mode="r", zarr_format=fmt
            )
            for array in (walked, direct):
                assert array.shape == expected.shape
                assert array.dtype.newbyteorder("=") == expected.dtype
                np.testing.assert_array_equal(array[...], expected)


@pytest.mark.filterwarnings("ignore::UserWarning:webknossos")
@pytest.mark.parametrize(("tree", "fmt"), TREES)
@pytest.mark.parametrize("dataset", DEMO)
def test_webknossos_opens_the_served_datasource(
    clients: Clients, dataset: str, tree: Tree, fmt: Format
) -> None:
    """The webknossos library reads the served datasource-properties.json and its arrays."""
    import webknossos as wk
    from upath import UPath

    served = wk.Dataset.open(UPath(clients.url(tree, dataset)))
    mags = clients.mags(dataset)
    assert sorted(served.layers) == sorted(mags)
    for name, layer in served.layers.items():
        assert layer.data_format.value == ("zarr" if fmt == 2 else "zarr3")
        assert sorted(str(m.x) for m in layer.mags) == sorted(mags[name])
        for mag, view in layer.mags.items():
            np.testing.assert_array_equal(view.read(), clients.expected(dataset, name, str(mag.x)))


@pytest.mark.filterwarnings("ignore:Object at datasource-properties.json")
@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_zarr_python_members_without_consolidated_metadata(
    clients: Clients, tree: Tree, fmt: Format, slash: str
) -> None:
    # Unconsolidated, zarr-python lists "<url>/" (so "…/n5//" for a URL ending in "/", as
    # Dataset.zarr_url gives) and probes every listed name, also "datasource-properties.json/".
    url = clients.url(tree, "n5").rstrip("/") + slash
    root = zarr.open_group(url, mode="r", use_consolidated=False, zarr_format=fmt)
    assert root.metadata.consolidated_metadata is None
    members = {k for k, _ in root.members(max_depth=None)}
    layers = ("raw", "segmentation")
    assert members == {*layers} | {f"{n}/{m}" for n in layers for m in ("1", "2", "4")}
    array = root["raw/4"]
    assert isinstance(array, zarr.Array)
    np.testing.assert_array_equal(array[...], clients.expected("n5", "raw", "4"))


def test_absent_names_clients_probe_are_404(served: Served) -> None:
    """Readers probe names that do not exist; only 404 reads as "absent" to them."""
    for path in (
        "zarr/n5/raw/labels/.zattrs",  # ome-zarr-py: an image's optional labels/ group
        "zarr3/n5/raw/labels/zarr.json",
        "zarr/n5/datasource-properties.json/.zarray",  # zarr-python walking a listing
        "zarr3/n5/datasource-properties.json/zarr.json",
    ):
        assert served.server.get(path)[0] == 404, path
    assert served.server.get("zarr/n5//")[0] == 200  # zarr-python's listing of "…/n5/"
    assert served.server.get("zarr/n5/raw/1/.zarray/")[0] == 404


# -- 2. tensorstore ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
@pytest.mark.parametrize("dataset", DEMO)
def test_tensorstore_reads_every_array(
    clients: Clients, dataset: str, tree: Tree, fmt: Format
) -> None:
    for layer, names in clients.mags(dataset).items():
        for mag in names:
            spec = {"driver": tree, "kvstore": clients.url(tree, dataset, layer, mag)}
            store = ts.open(spec, read=True).result()
            if fmt == 3:
                assert store.domain.labels == ("c", "z", "y", "x")
            got = store.read().result()
            np.testing.assert_array_equal(got, clients.expected(dataset, layer, mag))


# -- 3. ome-zarr-py ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
@pytest.mark.parametrize("dataset", DEMO)
def test_ome_zarr_py_reads_images_and_labels(
    clients: Clients, dataset: str, tree: Tree, fmt: Format
) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    mags = clients.mags(dataset)
    image, seg = (next(n for n in mags if n != "segmentation"), "segmentation")
    location = parse_url(clients.url(tree, dataset, image))
    assert location is not None
    assert location.version == ("0.4" if fmt == 2 else "0.5")
    (node,) = Reader(location)()
    expected = [clients.expected(dataset, image, m) for m in mags[image]]
    assert [d.shape for d in node.data] == [e.shape for e in expected]
    np.testing.assert_array_equal(node.data[0].compute(), expected[0])
    attrs: Any = zarr.open_group(location.subpath(""), mode="r").attrs.asdict()
    channels = (attrs if fmt == 2 else attrs["ome"])["omero"]["channels"]
    assert node.metadata["channel_names"] == [c["label"] for c in channels]
    assert node.metadata["colormap"] == [[[0, 0, 0], [1.0, 1.0, 1.0]]]  # omero "FFFFFF"
    if dataset == "ome-zarr":  # the source's own omero settings are carried over
        assert node.metadata["channel_names"] == ["membrane stain"]
        assert node.metadata["contrast_limits"] == [[20, 240]]
    location = parse_url(clients.url(tree, dataset, seg))
    nodes = list(Reader(location)())
    label = next(n for n in nodes if n.zarr.basename() == seg)
    assert any(isinstance(spec, Label) for spec in label.specs)
    assert [n.zarr.basename() for n in nodes if n is not label] == [image]  # image-label.source
    assert [d.shape for d in label.data] == [
        clients.expected(dataset, seg, m).shape for m in mags[seg]
    ]
    np.testing.assert_array_equal(label.data[-1].compute(), clients.expected(dataset, seg, "4"))


# -- 4, 5. xarray and dask -----------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_xarray_and_dask_read_one_mag(clients: Clients, tree: Tree, fmt: Format) -> None:
    import dask.array as da
    import xarray as xr

    expected = clients.expected("precomputed", "segmentation", "2")
    # xarray opens groups only: the layer, without the other mags (their sizes conflict).
    # mask_and_scale=False: a v2 fill_value reads as CF _FillValue and would mask the 0 ids.
    ds = xr.open_zarr(
        clients.url(tree, "precomputed", "segmentation"),
        zarr_format=fmt,
        consolidated=False,
        drop_variables=["1", "4"],
        mask_and_scale=False,
    )
    assert ds["2"].dims == ("c", "z", "y", "x")  # _ARRAY_DIMENSIONS (v2), dimension_names (v3)
    assert ds["2"].dtype == expected.dtype
    np.testing.assert_array_equal(ds["2"].values, expected)
    url = clients.url(tree, "precomputed", "segmentation", "2")
    array = da.from_zarr(url)  # type: ignore[no-untyped-call]
    assert array.chunksize == (1, 32, 64, 64)
    np.testing.assert_array_equal(array.compute(), expected)


# -- 6. ome-zarr-models --------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_every_layer_validates_as_ngff(
    clients: Clients, extra: Extra, tree: Tree, fmt: Format
) -> None:
    from ome_zarr_models import v04, v05

    models: Any = v04 if fmt == 2 else v05
    for dataset in [*DEMO, *extra.data]:
        for layer, lay in clients.served.hub.dataset(dataset).layers.items():
            group = zarr.open_group(clients.url(tree, dataset, layer), mode="r", zarr_format=fmt)
            label = lay.category == "segmentation"
            model = (models.ImageLabel if label else models.Image).from_zarr(group)
            (ms,) = model.ome_attributes.multiscales
            assert [d.path for d in ms.datasets] == [str(m) for m in lay.mags]
            assert [a.name for a in ms.axes] == ["c", "z", "y", "x"]


# -- 7. listings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_fsspec_lists_layers_and_metadata(clients: Clients, tree: Tree, fmt: Format) -> None:
    import fsspec

    fs = fsspec.filesystem("http", skip_instance_cache=True, use_listings_cache=False)
    root = clients.url(tree, "precomputed")
    names = {u.removeprefix(root) for u in fs.ls(root, detail=False)}
    files = {".zattrs", ".zgroup", ".zmetadata"} if fmt == 2 else {"zarr.json"}
    assert names == {*files, "datasource-properties.json", "image/", "segmentation/"}
    layer = root + "image/"
    names = {u.removeprefix(layer) for u in fs.ls(layer, detail=False)}
    assert names == {*files, "1/", "2/", "4/"}
    metadata = json.loads(fs.cat(layer + (".zattrs" if fmt == 2 else "zarr.json")))
    assert "multiscales" in (metadata if fmt == 2 else metadata["attributes"]["ome"])


# -- 8. private links ----------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_link_to_one_layer_serves_only_it(clients: Clients, tree: Tree, fmt: Format) -> None:
    served = clients.served
    link = served.hub.dataset(PRIVATE).create_link(expires="1d", layers=["segmentation"])
    base = f"links/{link.token}/{tree}/"
    meta = ".zattrs" if fmt == 2 else "zarr.json"
    assert served.server.get(f"{tree}/{PRIVATE}/{meta}")[0] == 404  # private without the link
    root = zarr.open_group(served.url + base, mode="r", zarr_format=fmt)
    assert list(root.group_keys()) == ["segmentation"]
    for mag in ("1", "2", "4"):
        array = root[f"segmentation/{mag}"]
        assert isinstance(array, zarr.Array)
        # wkjupyter's own reader of the source, itself tested against the writers
        own = served.hub.dataset(PRIVATE)["segmentation"].read(mag=mag)
        np.testing.assert_array_equal(array[...], own)
        np.testing.assert_array_equal(own, clients.expected(PRIVATE, "segmentation", mag))
    chunk = "0/0/0/0" if fmt == 2 else "c/0/0/0/0"
    for path in (f"cells/{meta}", f"cells/1/{chunk}", "cells/", f"cells/1/{meta}"):
        assert served.server.get(base + path)[0] == 404, path
    # Nothing points at the other layer: no image-label.source, no consolidated entries.
    layer = json.loads(served.server.get(base + f"segmentation/{meta}")[2])
    label = (layer if fmt == 2 else layer["attributes"]["ome"])["image-label"]
    assert "source" not in label
    top = json.loads(served.server.get(base + (".zmetadata" if fmt == 2 else "zarr.json"))[2])
    nodes = top["metadata"] if fmt == 2 else top["consolidated_metadata"]["metadata"]
    assert {key.split("/")[0] for key in nodes} - {".zgroup", ".zattrs"} == {"segmentation"}


# -- 9. geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_voxel_offset_and_anisotropic_mag_round_trip(
    clients: Clients, extra: Extra, tree: Tree, fmt: Format
) -> None:
    source = clients.served.hub.dataset("geometry")
    layer = source["geometry"]
    assert layer.bbox == BoundingBox.of((3, 20, 10), (12, 40, 50))  # z, y, x
    assert {str(m): lv.offset for m, lv in layer.mags.items()} == {
        "1": Vec3(3, 20, 10),
        "2-2-1": Vec3(3, 10, 5),  # mag 2-2-1 halves y and x only
    }
    group = zarr.open_group(clients.url(tree, "geometry", "geometry"), mode="r", zarr_format=fmt)
    attrs: Any = group.attrs.asdict()
    (ms,) = (attrs if fmt == 2 else attrs["ome"])["multiscales"]
    transforms = {d["path"]: d["coordinateTransformations"] for d in ms["datasets"]}
    finest = layer.voxel_size.as_tuple()  # (40, 4, 4)
    for m, level in layer.mags.items():
        factors = (m.z, m.y, m.x)
        translation = [
            (o * f + (f - 1) / 2) * v
            for o, f, v in zip(level.offset.as_tuple(), factors, finest, strict=True)
        ]
        scale = [f * v for f, v in zip(factors, finest, strict=True)]
        assert transforms[str(m)] == [
            {"type": "scale", "scale": [1.0, *scale]},
            {"type": "translation", "translation": [0.0, *translation]},
        ]
    # The same in numbers: z 3 * 40; y 20 * 4 and (10 * 2 + 0.5) * 4; x 10 * 4 and 10.5 * 4.
    assert transforms["1"][1]["translation"] == [0.0, 120.0, 80.0, 40.0]
    assert transforms["2-2-1"][1]["translation"] == [0.0, 120.0, 82.0, 42.0]
    for mag, expected in extra.data["geometry"]["geometry"].items():
        array = group[mag]
        assert isinstance(array, zarr.Array)
        np.testing.assert_array_equal(array[...], expected)
        np.testing.assert_array_equal(expected, clients.expected("geometry", "geometry", mag))
    # Re-exploring the served tree gives the source's geometry back, from the webKnossos
    # datasource-properties.json at the root and from the NGFF transforms at the layer.
    for url, found_by in (
        (clients.url(tree, "geometry"), "webknossos"),
        (clients.url(tree, "geometry", "geometry"), "ome-ngff"),
    ):
        report = wkjupyter.explore(url)
        assert [s.format for s in report.steps if s.outcome == "ok"] == [found_by], str(report)
        assert report.datasource is not None
        (again,) = report.datasource.layers.values()
        assert again.data_format == tree
        assert again.bbox == layer.bbox
        assert report.datasource.voxel_size == source.datasource.voxel_size
        assert {str(m): lv.offset for m, lv in again.mags.items()} == {
            str(m): lv.offset for m, lv in layer.mags.items()
        }
        np.testing.assert_array_equal(
            again.read(mag="2-2-1"), extra.data["geometry"]["geometry"]["2-2-1"]
        )


# -- 10. N5 with truncated edge blocks -------------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_truncated_n5_edge_blocks_are_served_padded(
    clients: Clients, extra: Extra, tree: Tree, fmt: Format
) -> None:
    ((layer, mags),) = extra.data["java-n5"].items()
    expected = mags["1"]
    array = zarr.open_array(clients.url(tree, "java-n5", layer, "1"), mode="r", zarr_format=fmt)
    assert array.shape == expected.shape == (1, 70, 90, 110)
    assert array.chunks == (1, 32, 32, 32)
    np.testing.assert_array_equal(array[...], expected)
    np.testing.assert_array_equal(expected, clients.expected("java-n5", layer, "1"))
    # The truncated corner block (N5 spec: edge blocks may be smaller) is a full Zarr chunk,
    # padded with the fill value (Zarr v2 spec: all chunks have the chunk shape).
    base = f"{tree}/java-n5/{layer}/1/"
    meta = json.loads(clients.served.server.get(base + (".zarray" if fmt == 2 else "zarr.json"))[2])
    status, _, body = clients.served.server.get(base + ("0/2/2/3" if fmt == 2 else "c/0/2/2/3"))
    assert status == 200
    corner = np.zeros((1, 32, 32, 32), expected.dtype)
    corner[:, :6, :26, :14] = expected[:, 64:, 64:, 96:]
    np.testing.assert_array_equal(decode_chunk(meta, body), corner)


def decode_chunk(meta: dict[str, Any], body: bytes) -> NDArray[Any]:
    """A served chunk decoded with numcodecs as its array metadata says (bytes + compressor);
    ``reshape`` fails unless the chunk has the full chunk shape."""
    import numcodecs

    if meta["zarr_format"] == 2:
        compressor, dtype, shape = meta["compressor"], np.dtype(meta["dtype"]), meta["chunks"]
    else:
        first, *rest = meta["codecs"]
        assert first["name"] == "bytes"
        order = ">" if first["configuration"].get("endian") == "big" else "<"
        dtype = np.dtype(meta["data_type"]).newbyteorder(order)
        shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        compressor = None
        for codec in rest:  # at most one: gzip or zstd
            conf = {k: v for k, v in codec["configuration"].items() if k != "checksum"}
            compressor = {"id": codec["name"], **conf}
    raw = numcodecs.get_codec(compressor).decode(body) if compressor else body
    return np.frombuffer(bytes(raw), dtype).reshape(shape)


# -- 11. dtypes Neuroglancer cannot display ------------------------------------------------------


@pytest.mark.parametrize(("tree", "fmt"), TREES)
def test_float64_and_int64_are_served_faithfully(
    clients: Clients, extra: Extra, tree: Tree, fmt: Format
) -> None:
    root = zarr.open_group(clients.url(tree, "wide"), mode="r", zarr_format=fmt)
    for layer, mags in extra.data["wide"].items():
        array = root[f"{layer}/1"]
        assert isinstance(array, zarr.Array)
        assert array.dtype.kind == mags["1"].dtype.kind
        assert array.dtype.itemsize == 8
        np.testing.assert_array_equal(array[...], mags["1"])
        np.testing.assert_array_equal(mags["1"], clients.expected("wide", layer, "1"))
