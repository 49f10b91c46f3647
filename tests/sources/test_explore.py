"""The explore driver: format order, steps, merging, descent, URL forms, Neuroglancer states."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import zarr

from wkjupyter.geometry import BoundingBox, Mag, VoxelSize
from wkjupyter.sources.explore import explore


def ome_image(path: Path, data: np.ndarray, scale: tuple[float, float, float], name: str,
              levels: int = 2, unit: str = "nanometer") -> Path:  # fmt: skip
    """A minimal OME-NGFF 0.4 image written with zarr-python (strided levels)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(levels):
        f = 2**level
        group.create_array(str(level), data=data[::f, ::f, ::f], chunks=(16, 16, 16))
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [s * f for s in scale]}]})  # fmt: skip
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": name, "datasets": datasets,
        "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"]}]  # fmt: skip
    return path


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (20, 40, 48), dtype=np.uint8)


def test_several_urls_merge_with_common_voxel_size(tmp_path: Path, data: np.ndarray) -> None:
    fine = ome_image(tmp_path / "fine.ome.zarr", data, (40, 8, 8), "em")
    coarse = ome_image(tmp_path / "coarse.ome.zarr", data[::2, ::2, ::2], (80, 16, 16), "em")
    report = explore([str(fine), str(coarse)])
    ds = report.datasource
    assert ds is not None, report
    assert ds.voxel_size == VoxelSize(40, 8, 8)
    assert sorted(ds.layers) == ["em", "em_2"]  # names made unique
    rescaled = ds.layers["em_2"]
    assert list(rescaled.mags) == [Mag(2), Mag(4)]
    assert rescaled.bbox == BoundingBox.of((0, 0, 0), (20, 40, 48))
    np.testing.assert_array_equal(rescaled.read(mag="2")[0], data[::2, ::2, ::2])
    np.testing.assert_array_equal(ds.layers["em"].read(mag="2")[0], data[::2, ::2, ::2])


def test_units_are_reconciled(tmp_path: Path, data: np.ndarray) -> None:
    nm = ome_image(tmp_path / "nm.ome.zarr", data, (40, 8, 8), "a")
    um = ome_image(tmp_path / "um.ome.zarr", data, (0.08, 0.016, 0.016), "b", unit="micrometer")
    ds = explore([str(nm), str(um)]).datasource
    assert ds is not None
    assert ds.voxel_size == VoxelSize(40, 8, 8)
    assert next(iter(ds.layers["b"].mags)) == Mag(2)


def test_incompatible_voxel_size_is_reported(tmp_path: Path, data: np.ndarray) -> None:
    a = ome_image(tmp_path / "a.ome.zarr", data, (40, 8, 8), "a")
    b = ome_image(tmp_path / "b.ome.zarr", data, (40, 12, 12), "b")
    report = explore([str(a), str(b)])
    assert report.datasource is not None
    assert list(report.datasource.layers) == ["a"]
    (failed,) = [s for s in report.steps if s.format == "merge"]
    assert failed.outcome == "failed"
    assert "not an integer multiple" in failed.message


def test_parent_folder_finds_datasets_below(tmp_path: Path, data: np.ndarray) -> None:
    ome_image(tmp_path / "project" / "run1" / "em.ome.zarr", data, (40, 8, 8), "em")
    ome_image(tmp_path / "project" / "run2" / "seg.ome.zarr", data, (40, 8, 8), "other")
    report = explore(str(tmp_path / "project"))
    assert report.datasource is not None, report
    assert sorted(report.datasource.layers) == ["em", "other"]
    assert report.datasource.name == "project"
    # Every attempt is recorded, and the successes name what they found.
    ok = [s for s in report.steps if s.ok]
    assert {s.url.rsplit("/", 1)[-1] for s in ok} == {"em.ome.zarr", "seg.ome.zarr"}
    assert all("1 layer(s)" in s.message for s in ok)


def test_descent_is_bounded(tmp_path: Path, data: np.ndarray) -> None:
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    ome_image(deep / "x.ome.zarr", data, (1, 1, 1), "x")
    report = explore(str(tmp_path / "a"))
    assert report.datasource is None


@pytest.mark.parametrize("suffix", ["/.zattrs", "/.zgroup", "/", "/0/.zarray", "|zarr2:", "|zarr:"])
def test_metadata_names_and_format_suffixes_are_tolerated(
    tmp_path: Path, data: np.ndarray, suffix: str
) -> None:
    path = ome_image(tmp_path / "img.ome.zarr", data, (40, 8, 8), "img")
    report = explore(f"file://{path}{suffix}")
    assert report.datasource is not None, report
    assert report.datasource.layers


@pytest.mark.parametrize("prefix", ["zarr://", "zarr2://"])
def test_legacy_prefixes_are_tolerated(tmp_path: Path, data: np.ndarray, prefix: str) -> None:
    path = ome_image(tmp_path / "img.ome.zarr", data, (40, 8, 8), "img")
    report = explore(f"{prefix}file://{path}")
    assert report.datasource is not None, report


def test_format_hint_restricts_explorers(tmp_path: Path, data: np.ndarray) -> None:
    path = ome_image(tmp_path / "img.ome.zarr", data, (40, 8, 8), "img")
    report = explore(f"file://{path}|n5:")
    assert report.datasource is None
    assert {s.format for s in report.steps} == {"n5", "explore"}


def test_nothing_found_reports_every_attempt(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = explore(str(tmp_path / "empty"))
    assert report.datasource is None
    formats = [s.format for s in report.steps]
    assert formats[:-1] == ["webknossos", "ome-ngff", "zarr", "n5", "neuroglancer-precomputed"]
    assert all(s.outcome == "no match" for s in report.steps[:-1])
    last = report.steps[-1]
    assert (last.format, last.outcome) == ("explore", "failed")
    assert "no dataset found" in last.message
    assert "root folder" in last.message
    assert "found no dataset" in str(report)


def test_neuroglancer_state_url(tmp_path: Path, data: np.ndarray) -> None:
    em = ome_image(tmp_path / "em.ome.zarr", data, (40, 8, 8), "em")
    seg = ome_image(tmp_path / "seg.ome.zarr", data.astype(np.uint32), (40, 8, 8), "seg")
    state = {
        "dimensions": {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [4e-8, "m"]},
        "layers": [
            {"type": "image", "name": "raw EM", "source": f"zarr2://file://{em}"},
            {
                "type": "segmentation",
                "name": "cells",
                "source": {"url": f"file://{seg}/|zarr2:"},
            },
            {"type": "annotation", "name": "points", "source": "local://annotations"},
        ],
    }
    fragment = urllib.parse.quote(
        json.dumps(state, separators=(",", ":")), safe="~@#$&()*!+=:;,.?/'"
    )
    report = explore(f"https://neuroglancer-demo.appspot.com/#!{fragment}")
    ds = report.datasource
    assert ds is not None, report
    assert sorted(ds.layers) == ["cells", "raw EM"]
    assert ds.layers["cells"].category == "segmentation"  # the Neuroglancer type wins
    assert ds.layers["raw EM"].category == "color"
    assert any("points" in s.message for s in report.steps)


def test_read_outside_is_fill_and_mags_scale(tmp_path: Path, data: np.ndarray) -> None:
    path = ome_image(tmp_path / "img.ome.zarr", data, (40, 8, 8), "img")
    layer = explore(str(path)).datasource.layers["img"]  # type: ignore[union-attr]
    box = BoundingBox.of((-2, 30, 40), (4, 20, 20))
    got = layer.read(box)
    assert got.shape == (1, 4, 20, 20)
    assert (got[:, :2] == 0).all()
    np.testing.assert_array_equal(got[0, 2:, :10, :8], data[:2, 30:40, 40:48])
    half = layer.read(BoundingBox.of((0, 0, 0), (20, 40, 48)), mag="2")
    np.testing.assert_array_equal(half[0], data[::2, ::2, ::2])


def test_missing_local_path_says_so(tmp_path: Path) -> None:
    report = explore(str(tmp_path / "nothing-here"))
    assert report.datasource is None
    (step,) = report.steps
    assert step.outcome == "failed"
    assert "does not exist on this machine" in step.message
