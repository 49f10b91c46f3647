"""Layers with their own voxel sizes (issue 8 §3): a Neuroglancer state showing an N5 image at
6 x 6 x 35 nm and a precomputed segmentation at 8 x 8 x 40 nm, end to end.

The data is written by tensorstore (N5), cloud-volume (precomputed) and zarr-python
(OME-Zarr), served by a real HTTP server, explored from a Neuroglancer state URL, stored in a
real catalog, served by a live wkjupyter server and read back by zarr-python, the webknossos
library and our own explorer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

import numpy as np
import pytest
import tensorstore as ts
import zarr

from tests.server.live import LiveServer, fetch
from wkjupyter.datasource import DataSource
from wkjupyter.geometry import BoundingBox, Mag, VoxelSize
from wkjupyter.hub import Hub
from wkjupyter.sources.explore import ExploreReport, explore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.servers import HTTPServerFactory, RangeHTTPServer

EM_VS = VoxelSize(35, 6, 6)  # z, y, x
SEG_VS = VoxelSize(40, 8, 8)
SEG_OFFSET_XYZ = (3, 4, 5)
SEG_BOX = BoundingBox.of((5, 4, 3), (8, 36, 30))  # z, y, x in 8 x 8 x 40 nm voxels


def em_data() -> np.ndarray:
    return np.random.default_rng(8).integers(0, 255, (10, 40, 48), dtype=np.uint8)


def seg_data(shape: tuple[int, int, int] = (8, 36, 30)) -> np.ndarray:
    return np.random.default_rng(3).integers(1, 9, shape, dtype=np.uint32)


def write_n5_image(path: Path, data: np.ndarray) -> None:
    """A Neuroglancer-style N5 multiscale group (s0, s1 at 2-2-1) written with tensorstore."""
    for name, level in (("s0", data), ("s1", data[:, ::2, ::2])):
        store = ts.open(
            {
                "driver": "n5",
                "kvstore": f"file://{path / name}",
                "metadata": {
                    "dimensions": list(level.shape[::-1]),
                    "blockSize": [16, 16, 8],
                    "dataType": "uint8",
                    "compression": {"type": "gzip"},
                },
            },
            create=True,
            delete_existing=True,
        ).result()
        store[...] = level.T
    attrs = {
        "downsamplingFactors": [[1, 1, 1], [2, 2, 1]],
        "resolution": [6, 6, 35],
        "units": ["nm", "nm", "nm"],
        "axes": ["x", "y", "z"],
    }
    (path / "attributes.json").write_text(json.dumps(attrs))


def write_precomputed_labels(
    path: Path, data: np.ndarray, resolution: tuple[int, int, int], offset: tuple[int, int, int]
) -> None:
    """A precomputed segmentation written with cloud-volume (x, y, z resolution and offset)."""
    from cloudvolume import CloudVolume  # type: ignore[import-untyped]

    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="segmentation", data_type="uint32", encoding="raw",
        resolution=list(resolution), voxel_offset=list(offset),
        volume_size=list(data.shape[::-1]), chunk_size=[16, 16, 8],
    )  # fmt: skip
    vol = CloudVolume(f"file://{path}", info=info, progress=False)
    vol.commit_info()
    vol[:, :, :] = data[None].T


def write_ome_image(path: Path, data: np.ndarray, scale: tuple[float, float, float]) -> None:
    """A one-level OME-NGFF 0.4 image written with zarr-python."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(8, 16, 16))
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": path.stem,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": list(scale)}]}],
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]}]  # fmt: skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    write_n5_image(root / "em.n5", em_data())
    write_precomputed_labels(root / "cells", seg_data(), (8, 8, 40), SEG_OFFSET_XYZ)
    # Integer multiples of the two voxel sizes: they merge into mags of the matching layer.
    write_ome_image(root / "em2x.ome.zarr", em_data()[::2, ::2, ::2], (70, 12, 12))
    write_precomputed_labels(root / "cells2x", seg_data((4, 18, 15)), (16, 16, 80), (1, 2, 2))
    return root


def neuroglancer_state(server: RangeHTTPServer) -> str:
    state = {
        "dimensions": {"x": [6e-9, "m"], "y": [6e-9, "m"], "z": [3.5e-8, "m"]},
        "layers": [
            {"type": "image", "name": "em", "source": f"n5://{server.url_for('em.n5')}"},
            {
                "type": "segmentation",
                "name": "cells",
                "source": f"precomputed://{server.url_for('cells')}",
            },
            {
                "type": "image",
                "name": "em-2x",
                "source": f"{server.url_for('em2x.ome.zarr')}|zarr2:",
            },
            {
                "type": "segmentation",
                "name": "cells-2x",
                "source": {"url": f"precomputed://{server.url_for('cells2x')}"},
            },
        ],
    }
    text = quote(json.dumps(state, separators=(",", ":")), safe="~@#$&()*!+=:;,.?/'")
    return f"https://neuroglancer-demo.appspot.com/#!{text}"


@pytest.fixture
def report(http_server: HTTPServerFactory, sources: Path) -> ExploreReport:
    return explore(neuroglancer_state(http_server(sources)), name="mixed")


def assert_mixed(ds: DataSource) -> None:
    """The four layers of the state, each with the voxel size it was written with."""
    assert ds.voxel_size == EM_VS  # the first layer's
    layers = ds.layers
    assert list(layers) == ["em", "cells", "em-2x", "cells-2x"]
    assert {n: layer.voxel_size for n, layer in layers.items()} == {
        "em": EM_VS, "cells": SEG_VS, "em-2x": EM_VS, "cells-2x": SEG_VS,
    }  # fmt: skip
    assert list(layers["em"].mags) == [Mag(1), Mag("2-2-1")]
    assert list(layers["cells"].mags) == [Mag(1)]
    assert layers["cells"].bbox == SEG_BOX
    assert list(layers["em-2x"].mags) == [Mag(2)]  # 12 x 12 x 70 nm = mag 2 of 6 x 6 x 35
    assert list(layers["cells-2x"].mags) == [Mag(2)]  # 16 x 16 x 80 nm = mag 2 of 8 x 8 x 40
    assert layers["cells-2x"].bbox == BoundingBox.of((4, 4, 2), (8, 36, 30))
    np.testing.assert_array_equal(layers["cells"].read()[0], seg_data())
    np.testing.assert_array_equal(layers["em"].read(mag="2-2-1")[0], em_data()[:, ::2, ::2])
    np.testing.assert_array_equal(layers["em-2x"].read(mag=2)[0], em_data()[::2, ::2, ::2])


def test_neuroglancer_state_keeps_each_layers_voxel_size(report: ExploreReport) -> None:
    assert report.datasource is not None, report
    assert_mixed(report.datasource)
    merges = [s for s in report.steps if s.format == "merge"]
    assert [s.outcome for s in merges] == ["ok", "ok"]
    assert "layer 'cells' keeps its own voxel size, 8 x 8 x 40 nanometer" in merges[0].message
    assert "not an integer multiple of the dataset's, 6 x 6 x 35 nanometer" in merges[0].message
    assert "layer 'cells-2x' keeps its own voxel size, 8 x 8 x 40 nanometer" in merges[1].message
    assert "(as mag 2)" in merges[1].message
    assert "keeps its own voxel size" in str(report)
    text = repr(report.datasource)
    assert "voxel_size=6 x 6 x 35 nanometer" in text
    assert "own voxel size 8 x 8 x 40 nanometer" in text
    # The union box counts the segmentation in the dataset's voxels: its end, (13, 40, 33)
    # voxels of 8 x 8 x 40 nm, is (14.9, 53.3, 44) of 6 x 6 x 35 nm.
    assert report.datasource.bbox == BoundingBox.of((0, 0, 0), (15, 54, 48))


@pytest.fixture
def hub(catalog_url: str, tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(catalog_url, "alice", data_dir=tmp_path, public_url="https://jupyter.example.org/")
    yield hub
    hub.catalog.dispose()


def test_catalog_keeps_each_layers_voxel_size(hub: Hub, report: ExploreReport) -> None:
    hub.add_remote(report, name="mixed")
    again = Hub(hub.catalog.url, "alice", data_dir=hub.catalog.data_dir, public_url=hub.public_url)
    stored = again.dataset("mixed")
    assert_mixed(stored.datasource)
    # The Neuroglancer link centres the view on both layers in physical units.
    state = json.loads(unquote_fragment(stored.neuroglancer_url()))
    assert state["dimensions"]["x"] == [pytest.approx(6e-9), "m"]
    # In voxels of 6 x 6 x 35 nm: em spans (0..48, 0..40, 0..10), cells (x, y, z) 3..33,
    # 4..40, 5..13 voxels of 8 x 8 x 40 nm = 4..44, 5.3..53.3, 5.7..14.9.
    assert state["position"] == pytest.approx([24, 40 * 8 / 6 / 2, 13 * 40 / 35 / 2])


def unquote_fragment(url: str) -> str:
    return unquote(url.split("#!", 1)[1])


def test_add_layers_keeps_a_layer_of_another_voxel_size(
    hub: Hub, http_server: HTTPServerFactory, sources: Path
) -> None:
    server = http_server(sources)
    ds = hub.add_remote(f"n5://{server.url_for('em.n5')}", name="em")
    ds.add_layers(f"precomputed://{server.url_for('cells')}")
    layers = hub.dataset("em").layers
    assert layers["cells"].voxel_size == SEG_VS
    assert layers["cells"].bbox == SEG_BOX
    assert hub.dataset("em").datasource.voxel_size == EM_VS


# -- served ----------------------------------------------------------------------------------


@pytest.fixture
def served(catalog_url: str, tmp_path: Path, report: ExploreReport) -> Iterator[LiveServer]:
    hub = Hub(catalog_url, "alice", data_dir=tmp_path, public_url="http://example.invalid/")
    hub.add_remote(report, name="mixed", public=True)
    hub.catalog.dispose()
    with LiveServer(catalog_url, tmp_path, owner="alice") as server:
        yield server


@pytest.mark.parametrize(("tree", "fmt"), [("zarr", 2), ("zarr3", 3)])
def test_served_layers_have_their_own_scale(
    served: LiveServer, tree: str, fmt: Literal[2, 3]
) -> None:
    root = zarr.open_group(f"{served.url}{tree}/mixed/", mode="r", zarr_format=fmt)

    def transform(layer: str, i: int, kind: str) -> list[float]:
        """The spatial part of the ``kind`` transformation of dataset ``i`` of ``layer``."""
        attrs: dict[str, Any] = dict(root[layer].attrs)
        ome = attrs["ome"] if fmt == 3 else attrs
        (found,) = [
            t[kind]
            for t in ome["multiscales"][0]["datasets"][i]["coordinateTransformations"]
            if t["type"] == kind
        ]
        return list(found[-3:])

    def scale(layer: str, i: int = 0) -> list[float]:
        return transform(layer, i, "scale")

    def translation(layer: str, i: int = 0) -> list[float]:
        return transform(layer, i, "translation")

    assert scale("em") == [35, 6, 6]
    assert scale("em", 1) == [35, 12, 12]
    assert scale("cells") == [40, 8, 8]
    # Voxel v of the segmentation (stored from its voxel_offset) lies at (offset + v) * 8 nm.
    assert translation("cells") == [5 * 40, 4 * 8, 3 * 8]
    assert translation("em") == [0, 0, 0]
    # Mag 2 of a layer: voxel centres, (offset * 2 + 1 / 2) * its own voxel size.
    assert scale("cells-2x") == [80, 16, 16]
    assert translation("cells-2x") == [(2 * 2 + 0.5) * 40, (2 * 2 + 0.5) * 8, (1 * 2 + 0.5) * 8]
    array = root["cells/1"]
    assert isinstance(array, zarr.Array)
    np.testing.assert_array_equal(array[0], seg_data())

    # Our explorer reads the served layer back at its true place: same voxel size, same box.
    again = explore(f"{served.url}{tree}/mixed/cells/").datasource
    assert again is not None
    layer = again.layers["cells"]
    assert layer.voxel_size == SEG_VS
    assert layer.bbox == SEG_BOX


def test_served_datasource_properties_say_what_they_cannot_express(served: LiveServer) -> None:
    props = fetch(served, "zarr/mixed/datasource-properties.json").json()
    assert props["scale"] == {"factor": [6, 6, 35], "unit": "nanometer"}
    layers = {d["name"]: d for d in props["dataLayers"]}
    assert list(layers) == ["em", "cells", "em-2x", "cells-2x"]  # nothing left out
    assert "coordinateTransformations" not in layers["em"]
    cells = layers["cells"]
    sx, sz = 8 / 6, 40 / 35
    assert cells["coordinateTransformations"] == [
        {"type": "affine", "matrix": [[sx, 0, 0, 0], [0, sx, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]]}
    ]
    assert cells["wkjupyter"]["voxelSize"] == {"factor": [8, 8, 40], "unit": "nanometer"}
    assert cells["boundingBox"] == {"topLeft": [3, 4, 5], "width": 30, "height": 36, "depth": 8}
    (note_cells, note_cells_2x) = props["wkjupyter"]["notes"]
    assert note_cells.startswith("layer 'cells' has its own voxel size, 8 x 8 x 40 nanometer")
    assert "one voxel size per dataset" in note_cells
    assert "coordinateTransformations scale (1.33333, 1.33333, 1.14286; x, y, z)" in note_cells
    assert note_cells_2x.startswith("layer 'cells-2x' has its own voxel size")

    # A link granting only the segmentation describes it in its own voxel size.
    hub = Hub(served.catalog.url, "alice", data_dir=served.catalog.data_dir)
    link = hub.dataset("mixed").create_link(layers=["cells"])
    only = fetch(served, f"links/{link.token}/zarr/datasource-properties.json").json()
    assert only["scale"] == {"factor": [8, 8, 40], "unit": "nanometer"}
    assert "coordinateTransformations" not in only["dataLayers"][0]
    assert "wkjupyter" not in only
    hub.catalog.dispose()

    # Our explorer re-imports the served dataset with each layer's voxel size.
    again = explore(f"{served.url}zarr/mixed/").datasource
    assert again is not None
    assert {n: layer.voxel_size for n, layer in again.layers.items()} == {
        "em": EM_VS, "cells": SEG_VS, "em-2x": EM_VS, "cells-2x": SEG_VS,
    }  # fmt: skip


@pytest.mark.filterwarnings("ignore::UserWarning:webknossos")
def test_webknossos_library_reads_the_transformation(served: LiveServer) -> None:
    import webknossos as wk
    from upath import UPath

    ds = wk.Dataset.open(UPath(f"{served.url}zarr3/mixed/"))
    assert tuple(ds.voxel_size) == (6, 6, 35)
    (transform,) = ds.layers["cells"].coordinate_transformations
    np.testing.assert_allclose(np.diag(transform.matrix), [8 / 6, 8 / 6, 40 / 35, 1])
    assert ds.layers["em"].coordinate_transformations == ()


@pytest.mark.filterwarnings("ignore::UserWarning:webknossos")
def test_webknossos_dataset_with_a_scale_transformation(tmp_path: Path) -> None:
    """A webKnossos dataset whose layer webKnossos places by a scale (as its explorer does
    for a layer of another voxel size) is imported with that layer's own voxel size."""
    import webknossos as wk
    from webknossos.dataset_properties import AffineCoordinateTransformation

    ds = wk.Dataset(tmp_path / "wk", voxel_size=(6, 6, 35))
    em = ds.add_layer("em", wk.COLOR_CATEGORY, dtype="uint8", data_format="zarr",
                      bounding_box=wk.BoundingBox((0, 0, 0), (48, 40, 10)))  # fmt: skip
    em.add_mag(1, chunk_shape=16).write(em_data().T, absolute_offset=(0, 0, 0))
    box = wk.BoundingBox(SEG_OFFSET_XYZ, (30, 36, 8))
    cells = ds.add_layer("cells", wk.SEGMENTATION_CATEGORY, dtype="uint32", data_format="zarr",
                         largest_segment_id=9, bounding_box=box)  # fmt: skip
    cells.add_mag(1, chunk_shape=16).write(seg_data().T, absolute_offset=SEG_OFFSET_XYZ)
    cells.coordinate_transformations = [
        AffineCoordinateTransformation.from_scale((8 / 6, 8 / 6, 40 / 35))
    ]
    report = explore(str(tmp_path / "wk"))
    assert report.datasource is not None, report
    assert report.datasource.voxel_size == EM_VS
    layer = report.datasource.layers["cells"]
    assert layer.voxel_size == SEG_VS
    assert layer.bbox == SEG_BOX
    np.testing.assert_array_equal(layer.read()[0], seg_data())
