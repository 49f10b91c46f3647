"""The data-source model: a dataset's layers, their mags and where each mag is stored.

It round-trips through the webKnossos ``datasource-properties.json`` schema
(``reference/webknossos.md`` §3). What that schema has no slot for (array offsets, channel
metadata, format hints) travels in a ``"wkjupyter"`` object that webKnossos ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from wkjupyter.errors import LayerNotFoundError, MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, MagLike, Vec3, VoxelSize

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wkjupyter.sources._base import MagArray
    from wkjupyter.sources._fs import AccessOptions, Credential

__all__ = [
    "AdditionalAxis",
    "Category",
    "ChannelInfo",
    "DataFormat",
    "DataSource",
    "Layer",
    "MagLevel",
]

Category = Literal["color", "segmentation"]
DataFormat = Literal["zarr", "zarr3", "n5", "neuroglancerPrecomputed"]
DATA_FORMATS: tuple[DataFormat, ...] = ("zarr", "zarr3", "n5", "neuroglancerPrecomputed")

# webKnossos elementClass <-> numpy dtype (uint24 is RGB uint8 with three channels).
_ELEMENT_CLASSES = {
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "float": "float32", "double": "float64",
}  # fmt: skip
_DTYPE_TO_ELEMENT_CLASS = {v: k for k, v in _ELEMENT_CLASSES.items()}


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """Display metadata of one channel (from OME ``omero``): label, colour, intensity window."""

    label: str
    color: str | None = None  # "RRGGBB"
    window: tuple[float, float] | None = None  # (start, end): the displayed range
    range: tuple[float, float] | None = None  # (min, max): the possible range
    active: bool = True
    inverted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "color": self.color,
            "window": list(self.window) if self.window else None,
            "range": list(self.range) if self.range else None,
            "active": self.active,
            "inverted": self.inverted,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ChannelInfo:
        return cls(
            label=str(d["label"]),
            color=d.get("color"),
            window=tuple(d["window"]) if d.get("window") else None,
            range=tuple(d["range"]) if d.get("range") else None,
            active=bool(d.get("active", True)),
            inverted=bool(d.get("inverted", False)),
        )


@dataclass(frozen=True, slots=True)
class AdditionalAxis:
    """A non-spatial axis in front of c (e.g. time): its name and extent ``[0, size)``."""

    name: str
    size: int
    type: str = "time"
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class MagLevel:
    """Where and how one mag of a layer is stored.

    ``path`` is a URL or a path relative to the data source's base URL. ``axis_order`` maps
    the roles ``c``, ``z``, ``y``, ``x`` and any additional axis names to the stored array's
    dimension index (``None`` means the format's natural order). ``offset`` is where the
    array's voxel 0 lies, in voxels of this mag. ``hints`` carries format-specific facts a
    reader needs to reopen the array (e.g. a precomputed scale key).
    """

    mag: Mag
    path: str
    format: DataFormat
    axis_order: Mapping[str, int] | None = None
    channel_index: int | None = None
    offset: Vec3 = field(default_factory=lambda: Vec3(0, 0, 0))
    credential_id: str | None = None
    hints: Mapping[str, Any] = field(default_factory=dict)

    def to_wk(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mag": self.mag.to_xyz(), "path": self.path}
        if self.axis_order is not None:
            d["axisOrder"] = dict(self.axis_order)
        if self.channel_index is not None:
            d["channelIndex"] = self.channel_index
        if self.credential_id is not None:
            d["credentialId"] = self.credential_id
        extra: dict[str, Any] = dict(self.hints)
        if self.offset != Vec3(0, 0, 0):
            extra["offset"] = self.offset.to_xyz()
        if extra:
            d["wkjupyter"] = extra
        return d

    @classmethod
    def from_wk(cls, d: Mapping[str, Any], data_format: DataFormat) -> MagLevel:
        extra = dict(d.get("wkjupyter") or {})
        offset = Vec3.from_xyz(extra.pop("offset")) if "offset" in extra else Vec3(0, 0, 0)
        mag = d["mag"]
        return cls(
            mag=Mag.from_xyz(mag) if isinstance(mag, list) else Mag(mag),
            path=str(d["path"]),
            format=cast("DataFormat", d.get("dataFormat", data_format)),
            axis_order=d.get("axisOrder"),
            channel_index=d.get("channelIndex"),
            offset=offset,
            credential_id=d.get("credentialId"),
            hints=extra,
        )


@dataclass(eq=False)
class Layer:
    """One layer of a data source: an image (``"color"``) or a segmentation.

    ``bbox`` is in mag-1 voxels, (z, y, x). ``read`` returns arrays shaped
    (*additional axes, c, z, y, x).
    """

    name: str
    category: Category
    dtype: np.dtype[Any]
    num_channels: int
    bbox: BoundingBox
    voxel_size: VoxelSize
    mags: dict[Mag, MagLevel]
    fill_value: float = 0
    channels: list[ChannelInfo] = field(default_factory=list)
    additional_axes: list[AdditionalAxis] = field(default_factory=list)
    largest_segment_id: int | None = None
    base_url: str | None = None  # what relative mag paths are relative to
    credential: Credential | None = field(default=None, repr=False)
    options: AccessOptions | None = field(default=None, repr=False)
    _arrays: dict[Mag, MagArray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        self.mags = dict(sorted(self.mags.items()))

    @property
    def data_format(self) -> DataFormat:
        return next(iter(self.mags.values())).format

    def mag(self, mag: MagLike | Literal["finest", "coarsest"] = "finest") -> Mag:
        """Resolve a mag name (``"1"``, ``"2-2-1"``, ``"finest"`` ...) to one of this layer's."""
        if mag == "finest":
            return next(iter(self.mags))
        if mag == "coarsest":
            return list(self.mags)[-1]
        m = Mag(mag)
        if m not in self.mags:
            names = ", ".join(str(k) for k in self.mags)
            msg = f"layer {self.name!r} has no mag {str(m)!r}; it has {names}"
            raise LayerNotFoundError(msg)
        return m

    async def open_array(self, mag: MagLike | Literal["finest", "coarsest"] = "finest") -> MagArray:
        """The reader of one mag (opened once, then cached)."""
        m = self.mag(mag)
        if m not in self._arrays:
            # Imported here because the readers themselves build Layers (sources -> datasource).
            from wkjupyter.sources import open_mag

            self._arrays[m] = await open_mag(
                self.mags[m], self.base_url, self.credential, self.options
            )
        return self._arrays[m]

    async def read_async(
        self, bbox: BoundingBox | None = None, mag: MagLike | Literal["finest"] = "finest"
    ) -> np.ndarray[Any, Any]:
        """Async form of :meth:`read`."""
        m = self.mag(mag)
        level = self.mags[m]
        array = await self.open_array(m)
        box = (bbox if bbox is not None else self.bbox).in_mag(m)
        start = box.offset - level.offset
        end = box.end - level.offset
        n_extra = len(array.shape) - 4
        region = [slice(0, s) for s in array.shape[:n_extra]] + [slice(0, array.shape[n_extra])]
        region += [slice(a, b) for a, b in zip(start, end, strict=True)]
        return await array.read(tuple(region))

    def read(
        self, bbox: BoundingBox | None = None, mag: MagLike | Literal["finest"] = "finest"
    ) -> np.ndarray[Any, Any]:
        """Read a box of the layer into memory.

        Parameters
        ----------
        bbox
            The box in mag-1 voxels, (z, y, x); default: the layer's bounding box. Parts
            outside the stored data read as the fill value.
        mag
            Which mag to read (``"1"``, ``"2-2-1"``, ``Mag(2)``, ``"finest"``). The result
            covers ``bbox`` scaled down to that mag (rounded outwards).

        Returns
        -------
        numpy.ndarray
            Shaped (*additional axes, c, z, y, x).
        """
        from wkjupyter.sources._base import sync

        return sync(self.read_async(bbox, mag))

    def to_wk(self) -> dict[str, Any]:
        """This layer as a webKnossos ``dataLayers`` entry."""
        dtype = self.dtype.name
        if dtype not in _DTYPE_TO_ELEMENT_CLASS:
            msg = f"layer {self.name!r}: dtype {dtype} has no webKnossos element class"
            raise UnsupportedFormatError(msg)
        d: dict[str, Any] = {
            "name": self.name,
            "category": self.category,
            "boundingBox": self.bbox.to_wk(),
            "elementClass": _DTYPE_TO_ELEMENT_CLASS[dtype],
            "dataFormat": self.data_format,
            "numChannels": self.num_channels,
            "mags": [level.to_wk() for level in self.mags.values()],
        }
        if self.additional_axes:
            d["additionalAxes"] = [
                {"name": a.name, "bounds": [0, a.size], "index": i + 1}
                for i, a in enumerate(self.additional_axes)
            ]
        if self.largest_segment_id is not None:
            d["largestSegmentId"] = self.largest_segment_id
        if self.channels and self.channels[0].color and self.category == "color":
            ch = self.channels[0]
            view: dict[str, Any] = {"color": _hex_to_rgb(ch.color or "FFFFFF")}
            if ch.window:
                view["intensityRange"] = list(ch.window)
            d["defaultViewConfiguration"] = view
        extra: dict[str, Any] = {"fillValue": self.fill_value}
        if self.channels:
            extra["channels"] = [c.to_json() for c in self.channels]
        if self.additional_axes:
            extra["additionalAxes"] = [
                {"name": a.name, "size": a.size, "type": a.type, "unit": a.unit}
                for a in self.additional_axes
            ]
        d["wkjupyter"] = extra
        return d

    @classmethod
    def from_wk(
        cls, d: Mapping[str, Any], voxel_size: VoxelSize, base_url: str | None = None
    ) -> Layer:
        """Parse a webKnossos ``dataLayers`` entry."""
        name = str(d.get("name", ""))
        try:
            element_class = str(d["elementClass"])
            data_format = d.get("dataFormat", "zarr")
            if element_class == "uint24":  # RGB: three uint8 channels
                dtype, num_channels = np.dtype("uint8"), 3
            elif element_class in _ELEMENT_CLASSES:
                dtype = np.dtype(_ELEMENT_CLASSES[element_class])
                num_channels = int(d.get("numChannels", 1))
            else:
                msg = f"layer {name!r}: unsupported elementClass {element_class!r}"
                raise UnsupportedFormatError(msg)
            if data_format not in DATA_FORMATS:
                msg = (
                    f"layer {name!r}: dataFormat {data_format!r} cannot be read; "
                    f"supported are {', '.join(DATA_FORMATS)}"
                )
                raise UnsupportedFormatError(msg)
            mags = [MagLevel.from_wk(m, data_format) for m in d["mags"]]
            extra = d.get("wkjupyter") or {}
            axes = [
                AdditionalAxis(a["name"], int(a["size"]), a.get("type", "time"), a.get("unit"))
                for a in extra.get("additionalAxes", [])
            ] or [
                AdditionalAxis(a["name"], int(a["bounds"][1]) - int(a["bounds"][0]))
                for a in d.get("additionalAxes") or []
            ]
            return cls(
                name=name,
                category=cast("Category", d["category"]),
                dtype=dtype,
                num_channels=num_channels,
                bbox=BoundingBox.from_wk(d["boundingBox"]),
                voxel_size=voxel_size,
                mags={m.mag: m for m in mags},
                fill_value=extra.get("fillValue", 0),
                channels=[ChannelInfo.from_json(c) for c in extra.get("channels", [])],
                additional_axes=axes,
                largest_segment_id=d.get("largestSegmentId"),
                base_url=base_url,
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, UnsupportedFormatError):
                raise
            msg = f"layer {name!r} in datasource-properties.json is malformed: {err!r}"
            raise MetadataError(msg) from err

    def __repr__(self) -> str:
        mags = ", ".join(str(m) for m in self.mags)
        return (
            f"Layer({self.name!r}, {self.category}, {self.dtype.name}, "
            f"channels={self.num_channels}, bbox={self.bbox!r}, mags=[{mags}], "
            f"format={self.data_format})"
        )


def _hex_to_rgb(color: str) -> list[int]:
    c = color.lstrip("#")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


@dataclass(eq=False)
class DataSource:
    """A named set of layers sharing one voxel size."""

    name: str
    voxel_size: VoxelSize
    layers: dict[str, Layer]
    base_url: str | None = None

    @property
    def bbox(self) -> BoundingBox:
        """The union of all layers' bounding boxes."""
        box = BoundingBox.of((0, 0, 0), (0, 0, 0))
        for layer in self.layers.values():
            box = box.union(layer.bbox)
        return box

    def to_properties(self) -> dict[str, Any]:
        """The webKnossos ``datasource-properties.json`` document."""
        return {
            "id": {"name": self.name, "team": ""},
            "scale": {"factor": self.voxel_size.to_xyz(), "unit": self.voxel_size.unit},
            "dataLayers": [layer.to_wk() for layer in self.layers.values()],
            "version": 1,
        }

    @classmethod
    def from_properties(
        cls, d: Mapping[str, Any], base_url: str | None = None, name: str | None = None
    ) -> DataSource:
        """Parse a webKnossos ``datasource-properties.json`` document."""
        try:
            scale = d["scale"]
            if isinstance(scale, list):  # legacy: a bare list in nanometers
                voxel_size = VoxelSize.from_xyz(scale)
            else:
                voxel_size = VoxelSize.from_xyz(scale["factor"], scale.get("unit", "nanometer"))
            ds_name = name or str((d.get("id") or {}).get("name") or "dataset")
            layers = [Layer.from_wk(ld, voxel_size, base_url) for ld in d["dataLayers"]]
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, MetadataError | UnsupportedFormatError):
                raise
            msg = f"datasource-properties.json is malformed: {err!r}"
            raise MetadataError(msg) from err
        return cls(ds_name, voxel_size, {layer.name: layer for layer in layers}, base_url)

    def to_json(self) -> str:
        return json.dumps({"baseUrl": self.base_url, **self.to_properties()}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> DataSource:
        d = json.loads(text)
        return cls.from_properties(d, base_url=d.get("baseUrl"))

    def __repr__(self) -> str:
        layers = "".join(f"\n  {layer!r}" for layer in self.layers.values())
        return f"DataSource({self.name!r}, voxel_size={self.voxel_size}){layers}"
