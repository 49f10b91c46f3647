from __future__ import annotations

import json

import numpy as np
import pytest

from wkjupyter.datasource import AdditionalAxis, ChannelInfo, DataSource, Layer, MagLevel
from wkjupyter.errors import LayerNotFoundError, MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize

# As written by the webKnossos Python library (reference/webknossos.md §3, formats.md §5).
WK_PROPERTIES = {
    "id": {"name": "l4_sample", "team": ""},
    "scale": {"factor": [11.24, 11.24, 28.0], "unit": "nanometer"},
    "dataLayers": [
        {
            "name": "color",
            "category": "color",
            "boundingBox": {
                "topLeft": [3072, 3072, 512],
                "width": 1024,
                "height": 1024,
                "depth": 1024,
            },
            "elementClass": "uint8",
            "dataFormat": "zarr3",
            "numChannels": 1,
            "mags": [
                {
                    "mag": [1, 1, 1],
                    "path": "./color/1",
                    "axisOrder": {"c": 0, "x": 1, "y": 2, "z": 3},
                },
                {
                    "mag": [2, 2, 1],
                    "path": "./color/2-2-1",
                    "axisOrder": {"c": 0, "x": 1, "y": 2, "z": 3},
                },
            ],
        },
        {
            "name": "segmentation",
            "category": "segmentation",
            "boundingBox": {
                "topLeft": [3072, 3072, 512],
                "width": 1024,
                "height": 1024,
                "depth": 1024,
            },
            "elementClass": "uint32",
            "dataFormat": "zarr",
            "largestSegmentId": 2504697,
            "mags": [{"mag": [1, 1, 1], "path": "./segmentation/1"}],
        },
    ],
    "version": 1,
}


def test_parses_webknossos_properties() -> None:
    ds = DataSource.from_properties(WK_PROPERTIES, base_url="/data/l4")
    assert ds.name == "l4_sample"
    assert ds.voxel_size == VoxelSize(28.0, 11.24, 11.24)
    color = ds.layers["color"]
    assert color.bbox == BoundingBox.of((512, 3072, 3072), (1024, 1024, 1024))
    assert list(color.mags) == [Mag(1), Mag("2-2-1")]
    assert color.mags[Mag("2-2-1")].axis_order == {"c": 0, "x": 1, "y": 2, "z": 3}
    assert color.data_format == "zarr3"
    seg = ds.layers["segmentation"]
    assert seg.dtype == np.dtype("uint32")
    assert seg.largest_segment_id == 2504697


def test_round_trip_keeps_everything() -> None:
    layer = Layer(
        name="em",
        category="color",
        dtype=np.dtype("uint16"),
        num_channels=2,
        bbox=BoundingBox.of((4, 8, 16), (10, 20, 30)),
        voxel_size=VoxelSize(40, 4, 4),
        mags={
            Mag(1): MagLevel(Mag(1), "s3://b/em/s0", "n5", offset=Vec3(4, 8, 16)),
            Mag(2): MagLevel(
                Mag(2),
                "s3://b/em/s1",
                "n5",
                offset=Vec3(2, 4, 8),
                credential_id="c1",
                hints={"scale": "8_8_80"},
            ),
        },
        fill_value=7,
        channels=[ChannelInfo("dapi", "0000FF", (10, 200), (0, 65535)), ChannelInfo("gfp")],
        additional_axes=[AdditionalAxis("t", 5)],
    )
    ds = DataSource("sample", VoxelSize(40, 4, 4), {"em": layer})
    again = DataSource.from_json(ds.to_json())
    got = again.layers["em"]
    assert got.bbox == layer.bbox
    assert got.mags == layer.mags
    assert got.channels == layer.channels
    assert got.additional_axes == layer.additional_axes
    assert got.fill_value == 7
    assert got.num_channels == 2
    # The document is plain JSON a webKnossos server could read.
    assert json.loads(ds.to_json())["dataLayers"][0]["elementClass"] == "uint16"


def test_unknown_mag_names_what_exists() -> None:
    ds = DataSource.from_properties(WK_PROPERTIES)
    with pytest.raises(LayerNotFoundError, match="has no mag '4'; it has 1, 2-2-1"):
        ds.layers["color"].mag("4")
    assert ds.layers["color"].mag("finest") == Mag(1)
    assert ds.layers["color"].mag("coarsest") == Mag("2-2-1")


def test_malformed_properties_explain() -> None:
    with pytest.raises(MetadataError, match="malformed"):
        DataSource.from_properties({"dataLayers": []})
    bad = json.loads(json.dumps(WK_PROPERTIES))
    bad["dataLayers"][0]["elementClass"] = "uint128"
    with pytest.raises(UnsupportedFormatError, match="uint128"):
        DataSource.from_properties(bad)
    bad["dataLayers"][0]["elementClass"] = "uint8"
    bad["dataLayers"][0]["dataFormat"] = "wkw"
    with pytest.raises(UnsupportedFormatError, match="wkw"):
        DataSource.from_properties(bad)


def test_uint24_is_three_uint8_channels() -> None:
    props = json.loads(json.dumps(WK_PROPERTIES))
    props["dataLayers"][0]["elementClass"] = "uint24"
    layer = DataSource.from_properties(props).layers["color"]
    assert (layer.dtype, layer.num_channels) == (np.dtype("uint8"), 3)


def _layer(name: str, voxel_size: VoxelSize) -> Layer:
    return Layer(
        name=name,
        category="segmentation",
        dtype=np.dtype("uint32"),
        num_channels=1,
        bbox=BoundingBox.of((5, 4, 3), (8, 36, 30)),
        voxel_size=voxel_size,
        mags={Mag(1): MagLevel(Mag(1), "https://h/seg/8_8_40", "neuroglancerPrecomputed")},
    )


def test_a_layers_own_voxel_size_round_trips() -> None:
    em, seg = _layer("em", VoxelSize(35, 6, 6)), _layer("seg", VoxelSize(40, 8, 8))
    ds = DataSource("mixed", VoxelSize(35, 6, 6), {"em": em, "seg": seg})
    again = DataSource.from_json(ds.to_json())
    assert again.voxel_size == VoxelSize(35, 6, 6)
    assert again.layers["em"].voxel_size == VoxelSize(35, 6, 6)
    assert again.layers["seg"].voxel_size == VoxelSize(40, 8, 8)
    doc = ds.to_properties()
    wk_seg = doc["dataLayers"][1]
    assert wk_seg["wkjupyter"]["voxelSize"] == {"factor": [8, 8, 40], "unit": "nanometer"}
    (transform,) = wk_seg["coordinateTransformations"]
    assert np.diag(transform["matrix"]).tolist() == [8 / 6, 8 / 6, 40 / 35, 1]
    assert "coordinateTransformations" not in doc["dataLayers"][0]
    (note,) = doc["wkjupyter"]["notes"]
    assert note.startswith("layer 'seg' has its own voxel size, 8 x 8 x 40 nanometer (x, y, z)")
    assert "seg" in repr(ds).splitlines()[2]
    assert "own voxel size 8 x 8 x 40" in repr(ds).splitlines()[2]
    assert "own voxel size" not in repr(ds).splitlines()[1]
    # A dataset of one voxel size says nothing more than before.
    plain = DataSource("plain", VoxelSize(35, 6, 6), {"em": em}).to_properties()
    assert "wkjupyter" not in plain
    assert "voxelSize" not in plain["dataLayers"][0]["wkjupyter"]


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        # webKnossos' own explorer: a scale from the layer's voxels to the dataset's.
        ([[4 / 3, 0, 0, 0], [0, 4 / 3, 0, 0], [0, 0, 8 / 7, 0], [0, 0, 0, 1]], (40, 8, 8)),
        # Not a voxel size: a translation, a rotation, a flip.
        ([[1, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], (35, 6, 6)),
        ([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], (35, 6, 6)),
        ([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], (35, 6, 6)),
    ],
)
def test_webknossos_scale_transformation_is_a_voxel_size(
    matrix: list[list[float]], expected: tuple[float, float, float]
) -> None:
    d = _layer("seg", VoxelSize(35, 6, 6)).to_wk()
    d["coordinateTransformations"] = [{"type": "affine", "matrix": matrix}]
    layer = Layer.from_wk(d, VoxelSize(35, 6, 6))
    assert layer.voxel_size == VoxelSize.of(expected)
