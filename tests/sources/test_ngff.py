"""OME-NGFF 0.4 and 0.5 images (formats.md §1.1-1.2) written by ome-zarr-py (and by hand where
it cannot): multiscales, labels, omero channels, units, translations, time axes, 2-D images,
nested dataset paths, bioformats2raw containers, and broken metadata."""

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
import zarr
from hypothesis import given
from hypothesis import strategies as st
from ome_zarr.format import FormatV04, FormatV05

from tests.sources.conformance import Case, ExpectedLayer, ExpectedMag, SourceTests
from wkjupyter.datasource import ChannelInfo
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import Mag, Vec3
from wkjupyter.sources import ngff
from wkjupyter.sources._fs import S3Credential, Store
from wkjupyter.sources.explore import explore

with warnings.catch_warnings():  # its default Scaler argument warns at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from ome_zarr.writer import write_image, write_labels

if TYPE_CHECKING:
    from tests.servers import HTTPServerFactory, MotoS3Server

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:ome_zarr")

UM = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
SCALE = {"z": 0.5, "y": 0.2, "x": 0.2}
FACTORS = [{"c": 1, "z": 1, "y": 2, "x": 2}, {"c": 1, "z": 2, "y": 4, "x": 4}]
OMERO = {
    "channels": [
        {"label": "DAPI", "color": "0000FF", "active": True,
         "window": {"start": 10, "end": 900, "min": 0, "max": 65535}},
        {"label": "GFP", "color": "#00ff00", "active": False, "inverted": True,
         "window": {"start": 0, "end": 4000, "min": 0, "max": 65535}},
    ]
}  # fmt: skip


@dataclass
class Dataset:
    path: Path
    layers: list[ExpectedLayer]


def levels(path: Path, names: list[str], lead: int = 0) -> list[np.ndarray]:
    """The written levels as zarr-python reads them, with ``lead`` size-1 axes added in front
    (to reach c, z, y, x)."""
    out = []
    for name in names:
        data = np.asarray(zarr.open_array(path / name, mode="r")[...])
        out.append(data.reshape((1,) * lead + data.shape))
    return out


def expected(
    name: str,
    category: str,
    data: list[np.ndarray],
    mags: list[str],
    voxel_size: tuple[float, float, float] = (0.5, 0.2, 0.2),
    unit: str = "micrometer",
    offsets: list[tuple[int, int, int]] | None = None,
    missing: Any = (),
) -> ExpectedLayer:
    offsets = offsets or [(0, 0, 0)] * len(mags)
    return ExpectedLayer(
        name, category, str(data[0].dtype), voxel_size,
        {m: ExpectedMag(d, o) for m, d, o in zip(mags, data, offsets, strict=True)},
        unit=unit, missing=list(missing),
    )  # fmt: skip


def image_and_labels(root: Path, name: str, fmt: Any, rng: np.random.Generator) -> Dataset:
    """A 2-channel uint16 image (omero metadata) with a ``cells`` label image."""
    img = rng.integers(0, 4000, (2, 20, 64, 80), dtype="uint16")
    cells = rng.integers(0, 5, (20, 64, 80), dtype="uint32")
    path = root / f"{name}.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    kwargs: dict[str, Any] = {"name": "em"} if name == "v04" else {}
    write_image(img, group, axes="czyx", fmt=fmt, scale_factors=FACTORS, scale=SCALE,
                axes_units=UM, storage_options={"chunks": (1, 8, 32, 32)}, **kwargs)  # fmt: skip
    write_labels(cells, group, name="cells", axes="zyx", fmt=fmt, scaler=None,
                 scale_factors=[{"z": 1, "y": 2, "x": 2}], scale=SCALE,
                 storage_options={"chunks": (8, 32, 32)})  # fmt: skip
    if fmt.zarr_format == 2:
        group.attrs["omero"] = OMERO
    else:
        group.attrs["ome"] = {**group.attrs["ome"], "omero": OMERO}
    mags = ["1", "2-2-1", "4-4-2"]
    data = levels(path, ["s0", "s1", "s2"])
    cells_data = levels(path / "labels/cells", ["s0", "s1"], 1)
    return Dataset(
        path,
        [
            expected("em" if name == "v04" else "image", "color", data, mags),
            expected("cells", "segmentation", cells_data, ["1", "2-2-1"]),
        ],
    )


def build(root: Path) -> dict[str, Dataset]:
    rng = np.random.default_rng(3)
    out = {
        "v04": image_and_labels(root, "v04", FormatV04(), rng),
        "v05": image_and_labels(root, "v05", FormatV05(), rng),
    }
    # A deleted chunk (both channels) in v04's finest level.
    path = out["v04"].path
    for c in (0, 1):
        (path / f"s0/{c}/1/1/1").unlink()
    s0 = out["v04"].layers[0].mags["1"].data
    s0[:, 8:16, 32:64, 32:64] = 0
    from wkjupyter.geometry import BoundingBox

    out["v04"].layers[0].missing = [BoundingBox.of((8, 32, 32), (8, 32, 32))]

    # Translations: voxel offsets (5, 10, 20) at mag 1, plus ome-zarr-py's half-voxel shift
    # at mag 2-2-1 (ome-zarr-py writes no other translations: they are patched in, as
    # ngff-zarr or a stitching tool would write them).
    img = rng.integers(0, 255, (1, 20, 64, 80), dtype="uint8")
    path = root / "translated.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    write_image(img, group, axes="czyx", fmt=FormatV04(), scale_factors=FACTORS[:1],
                scale=SCALE, axes_units=UM, name="translated",
                storage_options={"chunks": (1, 8, 32, 32)})  # fmt: skip
    attrs = group.attrs.asdict()
    shifts = ([0, 2.5, 2.0, 4.0], [0, 2.5, 2.1, 4.1])
    for dataset, shift in zip(attrs["multiscales"][0]["datasets"], shifts, strict=True):
        dataset["coordinateTransformations"][1]["translation"] = shift
    group.attrs.update(attrs)
    out["translated"] = Dataset(
        path,
        [expected("translated", "color", levels(path, ["s0", "s1"]), ["1", "2-2-1"],
                  offsets=[(5, 10, 20), (5, 5, 10)])],
    )  # fmt: skip

    # A t, c, z, y, x time series (NGFF 0.5) without units.
    movie = rng.integers(0, 255, (3, 2, 10, 32, 40), dtype="uint8")
    path = root / "movie.ome.zarr"
    write_image(movie, zarr.open_group(path, mode="w", zarr_format=3), axes="tczyx",
                fmt=FormatV05(), scale_factors=[{"t": 1, "c": 1, "z": 1, "y": 2, "x": 2}],
                storage_options={"chunks": (1, 1, 8, 16, 16)})  # fmt: skip
    out["movie"] = Dataset(
        path,
        [expected("image", "color", levels(path, ["s0", "s1"]), ["1", "2-2-1"],
                  voxel_size=(1.0, 1.0, 1.0), unit="nanometer")],
    )  # fmt: skip

    # A 2-D image: z becomes a singleton axis.
    plane = rng.integers(0, 255, (64, 80), dtype="uint8")
    path = root / "plane.ome.zarr"
    write_image(plane, zarr.open_group(path, mode="w", zarr_format=2), axes="yx",
                fmt=FormatV04(), scale_factors=[{"y": 2, "x": 2}], scale={"y": 0.3, "x": 0.3},
                axes_units={"y": "micrometer", "x": "micrometer"}, name="plane")  # fmt: skip
    out["plane"] = Dataset(
        path,
        [expected("plane", "color", levels(path, ["s0", "s1"], 2), ["1", "2-2-1"],
                  voxel_size=(0.3, 0.3, 0.3))],
    )  # fmt: skip

    # Nested dataset paths (ngff-zarr's layout), uint8 named "segmentation", units in nm.
    seg = rng.integers(0, 9, (20, 64, 80), dtype="uint8")
    path = root / "nested.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    for i, f in enumerate((1, 2)):
        group.create_array(f"scale{i}/image", data=seg[:, ::f, ::f], chunks=(8, 16, 16),
                           chunk_key_encoding={"name": "v2", "separator": "/"})  # fmt: skip
    group.attrs["multiscales"] = [
        {"version": "0.4", "name": "segmentation",
         "axes": [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
         "datasets": [{"path": f"scale{i}/image", "coordinateTransformations": [
             {"type": "scale", "scale": [40.0, 4.0 * f, 4.0 * f]}]} for i, f in enumerate((1, 2))]}
    ]  # fmt: skip
    out["nested"] = Dataset(
        path,
        [expected("segmentation", "segmentation", levels(path, ["scale0/image", "scale1/image"], 1),
                  ["1", "2-2-1"], voxel_size=(40.0, 4.0, 4.0), unit="nanometer")],
    )  # fmt: skip

    # bioformats2raw: series 0/ and 1/ listed in OME/.zattrs.
    path = root / "bf.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.attrs["bioformats2raw.layout"] = 3
    group.create_group("OME").attrs["series"] = ["0", "1"]
    layers = []
    for s in ("0", "1"):
        data = rng.integers(0, 255, (1, 10, 32, 40), dtype="uint8")
        write_image(data, group.create_group(s), axes="czyx", fmt=FormatV04(),
                    scale_factors=[], scale=SCALE, axes_units=UM)  # fmt: skip
        layers.append(expected(f"bf_{s}", "color", levels(path / s, ["s0"]), ["1"]))
    out["bf"] = Dataset(path, layers)
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    return build(tmp_path_factory.mktemp("ngff"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def explore_layers(path: Path | str) -> dict[str, Any]:
    layers = run(ngff.explore(Store(str(path))))
    assert layers is not None
    return {layer.name: layer for layer in layers}


# -- the conformance suite ------------------------------------------------------------------------

ALL = ["v04", "v05", "translated", "movie", "plane", "nested", "bf"]


@pytest.fixture(scope="module")
def uploaded() -> dict[str, str]:
    """S3 URLs of the datasets uploaded so far (each goes up once per module)."""
    return {}


@pytest.fixture(params=[*ALL, "http:v05", "http:v04", "s3:v05"])
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
    return Case(url, ds.layers, credential, format="ome-ngff")


class TestNgffConformance(SourceTests):
    """The shared suite over every dataset above."""


# -- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v04", "v05"])
def test_omero_channels_units_and_labels(datasets: dict[str, Dataset], name: str) -> None:
    layers = explore_layers(datasets[name].path)
    image = layers["em" if name == "v04" else "image"]
    assert image.num_channels == 2
    assert image.channels == [
        ChannelInfo("DAPI", "0000FF", (10.0, 900.0), (0.0, 65535.0), True, False),
        ChannelInfo("GFP", "00FF00", (0.0, 4000.0), (0.0, 65535.0), False, True),
    ]
    assert image.voxel_size.unit == "micrometer"
    assert image.voxel_size.as_tuple() == pytest.approx((0.5, 0.2, 0.2))
    assert [str(m) for m in image.mags] == ["1", "2-2-1", "4-4-2"]
    assert image.data_format == ("zarr" if name == "v04" else "zarr3")
    cells = layers["cells"]  # NGFF 0.5: found through labels/zarr.json
    assert cells.category == "segmentation"
    assert cells.voxel_size == image.voxel_size  # the label inherits the image's unit
    assert cells.mags[Mag(1)].path.endswith("labels/cells/s0")


def test_translation_becomes_level_offsets(datasets: dict[str, Dataset]) -> None:
    layer = explore_layers(datasets["translated"].path)["translated"]
    assert layer.mags[Mag(1)].offset == Vec3(5, 10, 20)
    assert layer.mags[Mag("2-2-1")].offset == Vec3(5, 5, 10)
    assert layer.bbox.offset == Vec3(5, 10, 20)


def test_time_axis_is_an_additional_axis(datasets: dict[str, Dataset]) -> None:
    layer = explore_layers(datasets["movie"].path)["image"]
    assert [(a.name, a.size, a.type) for a in layer.additional_axes] == [("t", 3, "time")]
    assert layer.num_channels == 2
    assert layer.mags[Mag(1)].axis_order == {"z": 2, "y": 3, "x": 4, "c": 1, "t": 0}
    assert layer.read(mag="2-2-1").shape == (3, 2, 10, 16, 20)


def test_two_dimensional_image(datasets: dict[str, Dataset]) -> None:
    layer = explore_layers(datasets["plane"].path)["plane"]
    assert layer.bbox.shape == Vec3(1, 64, 80)
    assert layer.mags[Mag(1)].axis_order == {"y": 0, "x": 1}


def test_bioformats2raw_without_series_list_is_listed(
    datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    path = tmp_path / "bf.ome.zarr"
    shutil.copytree(datasets["bf"].path, path)
    shutil.rmtree(path / "OME")
    assert sorted(explore_layers(path)) == ["bf_0", "bf_1"]


def test_labels_group_and_label_image_explore_alone(datasets: dict[str, Dataset]) -> None:
    path = datasets["v05"].path
    assert list(explore_layers(path / "labels")) == ["cells"]
    (cells,) = explore_layers(path / "labels" / "cells").values()
    assert cells.category == "segmentation"


def test_duplicate_names_are_made_unique(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "dup.ome.zarr"
    shutil.copytree(datasets["v04"].path, path)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["name"] = "cells"
    (path / ".zattrs").write_text(json.dumps(attrs))
    assert list(explore_layers(path)) == ["cells", "cells_2"]


def test_odd_shapes_round_to_integer_mags(tmp_path: Path) -> None:
    # ome-zarr-py records the shape ratio as scale: 50 -> 25 -> 12 gives 4.1666 for 4x.
    data = np.zeros((1, 6, 30, 50), "uint8")
    path = tmp_path / "odd.ome.zarr"
    write_image(data, zarr.open_group(path, mode="w", zarr_format=2), axes="czyx",
                fmt=FormatV04(), scale_factors=FACTORS)  # fmt: skip
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]["scale"][3] > 4.1
    (layer,) = explore_layers(path).values()
    assert [str(m) for m in layer.mags] == ["1", "2-2-1", "4-4-2"]


def test_integer_factor_examples() -> None:
    assert ngff.integer_factor(2.0, 64, 32) == 2
    assert ngff.integer_factor(50 / 12, 50, 12) == 4
    assert ngff.integer_factor(40 / 2, 40, 2) == 20  # exact ratios are taken as written
    assert ngff.integer_factor(50 / 3, 50, 3) == 16  # powers of two win among the fits
    assert ngff.integer_factor(1.5, 60, 40) is None
    assert ngff.integer_factor(0.5, 60, 120) is None


@given(st.integers(1, 5000), st.integers(1, 64), st.booleans())
def test_integer_factor_matches_the_shape(base: int, factor: int, up: bool) -> None:
    size = max(1, -(-base // factor) if up else base // factor)
    f = ngff.integer_factor(base / size, base, size)
    assert f is not None
    assert size in (base // f, -(-base // f))


# -- bad input ------------------------------------------------------------------------------------


def failed_steps(path: Path) -> str:
    """The messages of the failed explore steps (explore may still find arrays below)."""
    report = explore(str(path))
    messages = [s.message for s in report.steps if s.outcome == "failed"]
    assert messages, report
    return " | ".join(messages)


def small_image(path: Path, scales: list[list[float]], **array: Any) -> None:
    """A hand-written NGFF 0.4 image with one array per scale."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    shape = (12, 16, 20)
    for i, s in enumerate(scales):
        level_shape = tuple(round(n * scales[0][k] / s[k]) for k, n in enumerate(shape))
        group.create_array(str(i), shape=level_shape, dtype="uint8", **array)
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": n, "type": "space"} for n in "zyx"],
         "datasets": [{"path": str(i), "coordinateTransformations": [
             {"type": "scale", "scale": s}]} for i, s in enumerate(scales)]}
    ]  # fmt: skip


def test_malformed_zattrs(tmp_path: Path) -> None:
    path = tmp_path / "bad.ome.zarr"
    small_image(path, [[1, 1, 1]])
    (path / ".zattrs").write_text("{'multiscales': ")
    assert "bad.ome.zarr/.zattrs" in failed_steps(path)
    (path / ".zattrs").write_text(json.dumps({"multiscales": [{"datasets": []}]}))
    with pytest.raises(MetadataError, match="no 'datasets'"):
        explore_layers(path)


def test_malformed_zarr_json(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "bad5.ome.zarr"
    shutil.copytree(datasets["v05"].path, path)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {')
    assert "bad5.ome.zarr/zarr.json" in failed_steps(path)


def test_non_integer_mags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "frac.ome.zarr"
    small_image(path, [[1, 1, 1], [1, 1.5, 1.5]])
    with pytest.raises(MetadataError, match=r"frac\.ome\.zarr.*integer"):
        explore_layers(path)
    assert "integer" in failed_steps(path)


def test_missing_level_array(tmp_path: Path) -> None:
    path = tmp_path / "gap.ome.zarr"
    small_image(path, [[1, 1, 1], [1, 2, 2]])
    (path / "1" / ".zarray").unlink()
    with pytest.raises(MetadataError, match=r"gap\.ome\.zarr/1/\.zarray'? does not exist"):
        explore_layers(path)


def test_unsupported_level_dtype(tmp_path: Path) -> None:
    path = tmp_path / "str.ome.zarr"
    small_image(path, [[1, 1, 1]])
    meta = json.loads((path / "0" / ".zarray").read_text())
    (path / "0" / ".zarray").write_text(json.dumps({**meta, "dtype": "<U4", "fill_value": ""}))
    with pytest.raises(UnsupportedFormatError, match=r"str\.ome\.zarr/0"):
        explore_layers(path)


def test_missing_label_image(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    path = tmp_path / "nolabel.ome.zarr"
    shutil.copytree(datasets["v05"].path, path)
    shutil.rmtree(path / "labels" / "cells")
    with pytest.raises(MetadataError, match="lists the label 'cells'"):
        explore_layers(path)


def test_axes_must_match_arrays(tmp_path: Path) -> None:
    path = tmp_path / "axes.ome.zarr"
    small_image(path, [[1, 1, 1]])
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["axes"] = [
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(MetadataError, match="2 axes"):
        explore_layers(path)


def test_not_ngff_is_none(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "a", shape=(4, 4), dtype="uint8")
    assert run(ngff.explore(Store(str(tmp_path / "a")))) is None
