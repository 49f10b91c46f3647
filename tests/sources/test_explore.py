"""The explore driver: format order, steps, merging, descent, URL forms, Neuroglancer states."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import zarr

from wkjupyter.errors import LayerNotFoundError, NothingFoundError, ReadTooLargeError
from wkjupyter.geometry import BoundingBox, Mag, VoxelSize
from wkjupyter.sources import AccessOptions
from wkjupyter.sources._base import MagArray
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


def test_other_voxel_size_is_kept_and_reported(tmp_path: Path, data: np.ndarray) -> None:
    a = ome_image(tmp_path / "a.ome.zarr", data, (40, 8, 8), "a")
    b = ome_image(tmp_path / "b.ome.zarr", data, (40, 12, 12), "b")
    report = explore([str(a), str(b)])
    assert report.datasource is not None
    assert report.datasource.voxel_size == VoxelSize(40, 8, 8)
    assert list(report.datasource.layers) == ["a", "b"]
    assert report.datasource.layers["b"].voxel_size == VoxelSize(40, 12, 12)
    assert list(report.datasource.layers["b"].mags) == [Mag(1), Mag(2)]
    np.testing.assert_array_equal(report.datasource.layers["b"].read()[0], data)
    (step,) = [s for s in report.steps if s.format == "merge"]
    assert step.outcome == "ok"
    assert "keeps its own voxel size" in step.message
    assert "not an integer multiple" in step.message


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        # 12 joins nobody, 4 joins 12, and then 8 fits the group of 4 too: one voxel size.
        ([12, 8, 4], [4, 4, 4]),
        ([6, 8, 16, 12], [6, 8, 8, 6]),
        ([8, 6, 24], [8, 6, 8]),  # the first group that fits wins
    ],
)
def test_groups_of_integer_multiples(tmp_path: Path, sizes: list[int], expected: list[int]) -> None:
    small = np.zeros((2, 4, 4), np.uint8)
    paths = [
        str(ome_image(tmp_path / f"l{i}.ome.zarr", small, (s, s, s), f"l{i}", levels=1))
        for i, s in enumerate(sizes)
    ]
    ds = explore(paths).datasource
    assert ds is not None
    got = [layer.voxel_size.x for layer in ds.layers.values()]
    assert got == expected
    assert ds.voxel_size.x == expected[0]


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
    assert not report


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
    assert not report
    assert {s.format for s in report.steps} == {"n5", "explore"}


def test_nothing_found_reports_every_attempt(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = explore(str(tmp_path / "empty"))
    assert not report
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
    assert not report
    (step,) = report.steps
    assert step.outcome == "failed"
    assert "does not exist on this machine" in step.message


# -- errors that say what to do ---------------------------------------------------------------


def test_nothing_found_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = explore(str(tmp_path / "empty"))
    assert not report.ok
    assert not report
    with pytest.raises(NothingFoundError) as info:
        report.datasource.layers["cells"]  # README's first example
    err = info.value
    assert isinstance(err, ValueError)
    assert err.report is report
    cause, remedy = str(err).splitlines()
    assert cause.startswith(f"found no dataset: no dataset found at {str(tmp_path / 'empty')!r}")
    assert remedy.startswith("point the URL at the dataset's root folder (a plain HTTP server")
    assert remedy.endswith("; print(err.report) lists every attempt (6)")
    with pytest.raises(NothingFoundError, match=r"^nothing to import: found no dataset"):
        report.require_datasource()


def test_found_reports_are_true(tmp_path: Path, data: np.ndarray) -> None:
    report = explore(ome_image(tmp_path / "img.ome.zarr", data, (40, 8, 8), "img"))  # a Path
    assert report
    assert report.ok
    assert report.datasource is report.require_datasource()


def neuroglancer_url(state: dict[str, object]) -> str:
    return "https://neuroglancer-demo.appspot.com/#!" + urllib.parse.quote(json.dumps(state))


@pytest.mark.parametrize(
    ("state", "phrase"),
    [
        ({"layers": []}, "the Neuroglancer state has no layers"),
        ({"dimensions": {}}, "the Neuroglancer state has no layers"),
        (
            {"layers": [{"type": "annotation", "name": "points", "source": "local://annotations"}]},
            "layer 'points' of type 'annotation' has no volume to import",
        ),
    ],
)
def test_neuroglancer_state_without_volume_layers_is_one_step(
    state: dict[str, object], phrase: str
) -> None:
    url = neuroglancer_url(state)
    report = explore(url)
    (step,) = report.steps
    assert (step.format, step.outcome) == ("neuroglancer-state", "failed")
    assert phrase in step.message
    assert "add an image or segmentation layer" in step.message
    with pytest.raises(NothingFoundError, match=phrase):
        report.datasource  # noqa: B018


@pytest.mark.parametrize("urls", [[], (), "", "  ", ["", "  "]])
def test_explore_without_urls(urls: object) -> None:
    with pytest.raises(ValueError, match="no URL given") as info:
        explore(urls)  # type: ignore[arg-type]
    assert "The Neuroglancer layer source is empty" not in str(info.value)


def test_an_empty_url_among_others_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"URL #2 of 2 is empty"):
        explore([str(tmp_path), " "])


def test_unknown_layer_names_the_layers(tmp_path: Path, data: np.ndarray) -> None:
    em = ome_image(tmp_path / "em.ome.zarr", data, (40, 8, 8), "em")
    seg = ome_image(tmp_path / "seg.ome.zarr", data, (40, 8, 8), "seg")
    ds = explore([str(em), str(seg)], name="both").datasource
    with pytest.raises(LayerNotFoundError) as info:
        ds.layers["nope"]
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "data source 'both' has no layer 'nope'; it has em, seg"
    assert ds.layers.get("nope") is None  # the dict API stays
    assert "nope" not in ds.layers


def test_read_takes_tuples_and_slices(tmp_path: Path, data: np.ndarray) -> None:
    layer = explore(str(ome_image(tmp_path / "i.ome.zarr", data, (40, 8, 8), "i"))).datasource
    img = layer.layers["i"]
    want = data[2:6, 4:20, 8:40]
    for box in (
        ((2, 4, 8), (4, 16, 32)),
        np.s_[2:6, 4:20, 8:40],
        (slice(2, 6), slice(4, 20), slice(8, 40)),
    ):
        np.testing.assert_array_equal(img.read(box)[0], want)
    np.testing.assert_array_equal(img.read(np.s_[:, :, 40:])[0], data[:, :, 40:])
    with pytest.raises(TypeError, match="ambiguous"):
        img.read((2, 4, 8, 6, 20, 40))  # type: ignore[arg-type]


def test_reads_above_the_limit_are_refused(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ome_image(tmp_path / "i.ome.zarr", data, (40, 8, 8), "i")
    img = explore(str(path)).datasource.layers["i"]
    huge = BoundingBox.of((0, 0, 0), (100_000, 100_000, 100_000))
    with pytest.raises(ReadTooLargeError) as info:
        img.read(huge)
    assert isinstance(info.value, ValueError)
    cause, remedy = str(info.value).splitlines()
    assert cause == (
        "reading layer 'i' at mag 1 over BoundingBox(offset=(0, 0, 0), "
        "shape=(100000, 100000, 100000)) needs 909.5 TiB (1 x 100000 x 100000 x 100000 "
        "uint8), more than the read limit of 4 GiB"
    )
    assert remedy == (
        "read a smaller box or a coarser mag (this layer has 1, 2), or raise the limit: "
        "layer.options = wkj.AccessOptions(max_read_bytes=...) or WKJUPYTER_MAX_READ=8GiB"
    )
    # The limit is configurable, through the options and the environment.
    small = explore(str(path), options=AccessOptions(max_read_bytes=1000)).datasource
    with pytest.raises(ReadTooLargeError, match=r"needs 37.5 KiB .*limit of 1000 B"):
        small.layers["i"].read()
    assert small.layers["i"].read(np.s_[0:10, 0:10, 0:10]).nbytes == 1000
    monkeypatch.setenv("WKJUPYTER_MAX_READ", "1KiB")
    with pytest.raises(ReadTooLargeError, match=r"limit of 1 KiB"):
        explore(str(path)).datasource.layers["i"].read()
    monkeypatch.setenv("WKJUPYTER_MAX_READ", "lots")
    with pytest.raises(ValueError, match=r"WKJUPYTER_MAX_READ='lots'.*8GiB"):
        AccessOptions()


def test_open_array_is_synchronous(tmp_path: Path, data: np.ndarray) -> None:
    path = ome_image(tmp_path / "i.ome.zarr", data, (40, 8, 8), "i")
    img = explore(str(path)).datasource.layers["i"]
    array = img.open_array("2")
    assert isinstance(array, MagArray)
    assert array.shape == (1, 10, 20, 24)
    assert img.open_array(Mag(2)) is array  # opened once

    async def both() -> MagArray:
        return await img.open_array_async("2")

    assert asyncio.run(both()) is array
