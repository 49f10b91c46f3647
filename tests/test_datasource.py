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
