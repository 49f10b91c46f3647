"""The data-source model: a dataset's layers, their mags and where each mag is stored.

It round-trips through the webKnossos ``datasource-properties.json`` schema
(``reference/webknossos.md`` §3). What that schema has no slot for (array offsets, channel
metadata, format hints) travels in a ``"wkjupyter"`` object that webKnossos ignores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from wkjupyter.errors import (
    LayerNotFoundError,
    MetadataError,
    ReadTooLargeError,
    UnsupportedFormatError,
)
from wkjupyter.geometry import BoundingBox, BoxLike, Mag, MagLike, Vec3, VoxelSize

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
    "LayerDict",
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

    def open_array(self, mag: MagLike | Literal["finest", "coarsest"] = "finest") -> MagArray:
        """The reader of one mag, opened once and then cached.

        Its ``shape``, ``dtype`` and ``chunk_shape`` describe the stored array in
        (*additional axes, c, z, y, x) order; its chunk methods are async (the reader
        contract, :class:`~wkjupyter.sources.MagArray`): read boxes with :meth:`read`.
        """
        from wkjupyter.sources._base import sync

        return sync(self.open_array_async(mag))

    async def open_array_async(
        self, mag: MagLike | Literal["finest", "coarsest"] = "finest"
    ) -> MagArray:
        """Async form of :meth:`open_array`."""
        m = self.mag(mag)
        if m not in self._arrays:
            # Imported here because the readers themselves build Layers (sources -> datasource).
            from wkjupyter.sources import open_mag

            self._arrays[m] = await open_mag(
                self.mags[m], self.base_url, self.credential, self.options
            )
        return self._arrays[m]

    async def read_async(
        self, bbox: BoxLike | None = None, mag: MagLike | Literal["finest", "coarsest"] = "finest"
    ) -> np.ndarray[Any, Any]:
        """Async form of :meth:`read`."""
        m = self.mag(mag)
        level = self.mags[m]
        wanted = self.bbox if bbox is None else BoundingBox.coerce(bbox, self.bbox)
        array = await self.open_array_async(m)
        box = wanted.in_mag(m)
        start = box.offset - level.offset
        end = box.end - level.offset
        n_extra = len(array.shape) - 4
        region = [slice(0, s) for s in array.shape[:n_extra]] + [slice(0, array.shape[n_extra])]
        region += [slice(a, b) for a, b in zip(start, end, strict=True)]
        self._check_size(wanted, m, [r.stop - r.start for r in region], array.dtype)
        return await array.read(tuple(region))

    def _check_size(self, box: BoundingBox, mag: Mag, shape: list[int], dtype: Any) -> None:
        """Refuse a read above the read limit before numpy tries to allocate it."""
        from wkjupyter.sources._fs import AccessOptions
        from wkjupyter.sources._sizes import format_size

        limit = (self.options or AccessOptions()).max_read_bytes
        size = math.prod(shape) * np.dtype(dtype).itemsize
        if size <= limit:
            return
        mags = ", ".join(str(k) for k in self.mags)
        msg = (
            f"reading layer {self.name!r} at mag {mag} over {box!r} needs {format_size(size)} "
            f"({' x '.join(map(str, shape))} {np.dtype(dtype).name}), more than the read limit "
            f"of {format_size(limit)}\n"
            f"read a smaller box or a coarser mag (this layer has {mags}), or raise the limit: "
            "layer.options = wkj.AccessOptions(max_read_bytes=...) or WKJUPYTER_MAX_READ=8GiB"
        )
        raise ReadTooLargeError(msg)

    def read(
        self, bbox: BoxLike | None = None, mag: MagLike | Literal["finest", "coarsest"] = "finest"
    ) -> np.ndarray[Any, Any]:
        """Read a box of the layer into memory.

        Parameters
        ----------
        bbox
            The box in mag-1 voxels, (z, y, x); default: the layer's bounding box. A
            :class:`~wkjupyter.BoundingBox`, an ``(offset, shape)`` pair such as
            ``((0, 0, 0), (64, 64, 64))``, or three slices such as
            ``np.s_[0:64, 0:64, 0:64]`` (absolute coordinates; an open end stops at the
            layer's bounding box); see :meth:`BoundingBox.coerce`. Parts outside the stored
            data read as the fill value.
        mag
            Which mag to read (``"1"``, ``"2-2-1"``, ``Mag(2)``, ``"finest"``,
            ``"coarsest"``). The result covers ``bbox`` scaled down to that mag (rounded
            outwards).

        Returns
        -------
        numpy.ndarray
            Shaped (*additional axes, c, z, y, x).

        Raises
        ------
        ReadTooLargeError
            The result would be larger than the read limit (``AccessOptions.max_read_bytes``,
            ``WKJUPYTER_MAX_READ``; default 4 GiB).
        LayerNotFoundError
            The layer has no such mag.
        """
        from wkjupyter.sources._base import sync

        return sync(self.read_async(bbox, mag))

    def to_wk(self, dataset_voxel_size: VoxelSize | None = None) -> dict[str, Any]:
        """This layer as a webKnossos ``dataLayers`` entry.

        Parameters
        ----------
        dataset_voxel_size
            The voxel size (``scale``) of the dataset the entry is written into; default:
            this layer's. webKnossos has one voxel size per dataset, so a layer with a
            voxel size of its own is placed the way webKnossos' own explorer places such
            layers: an affine ``coordinateTransformations`` scale from the layer's voxels to
            the dataset's. Its exact voxel size travels in ``wkjupyter.voxelSize``, which
            :meth:`from_wk` reads back.
        """
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
        if dataset_voxel_size is not None and not _same_size(self.voxel_size, dataset_voxel_size):
            d["coordinateTransformations"] = _scale_transform(self.voxel_size, dataset_voxel_size)
            extra["voxelSize"] = _voxel_size_json(self.voxel_size)
        d["wkjupyter"] = extra
        return d

    @classmethod
    def from_wk(
        cls, d: Mapping[str, Any], voxel_size: VoxelSize, base_url: str | None = None
    ) -> Layer:
        """Parse a webKnossos ``dataLayers`` entry of a dataset of voxel size ``voxel_size``.

        The layer's own voxel size is ``wkjupyter.voxelSize`` if given, else the dataset's
        scaled by a ``coordinateTransformations`` that is a single axis-aligned affine scale
        (how webKnossos places a layer of another voxel size), else ``voxel_size``. Other
        transformations (rotations, translations, thin-plate splines) are not read.
        """
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
                voxel_size=_own_voxel_size(d, extra, voxel_size),
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


def _same_size(a: VoxelSize, b: VoxelSize) -> bool:
    return all(math.isclose(r, 1.0, rel_tol=1e-9) for r in _voxel_size_ratio(a, b))


def _voxel_size_json(size: VoxelSize) -> dict[str, Any]:
    return {"factor": size.to_xyz(), "unit": size.unit}


def _voxel_size_ratio(own: VoxelSize, dataset: VoxelSize) -> list[float]:
    """x, y, z: how many of the dataset's voxels one of the layer's spans."""
    mine = own.to_unit(dataset.unit).to_xyz()
    return [a / b for a, b in zip(mine, dataset.to_xyz(), strict=True)]


def _scale_transform(own: VoxelSize, dataset: VoxelSize) -> list[dict[str, Any]]:
    """The ``coordinateTransformations`` webKnossos' explorer writes for a layer whose voxel
    size is not the dataset's: a 4x4 affine, rows x, y, z, without translation (the layer's
    voxel corner v lands on the dataset's voxel corner v * scale)."""
    sx, sy, sz = _voxel_size_ratio(own, dataset)
    matrix = [[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]]
    return [{"type": "affine", "matrix": matrix}]


def _own_voxel_size(
    d: Mapping[str, Any], extra: Mapping[str, Any], dataset: VoxelSize
) -> VoxelSize:
    """A layer's voxel size; see :meth:`Layer.from_wk`."""
    own = extra.get("voxelSize")
    if own is not None:
        return VoxelSize.from_xyz(own["factor"], own.get("unit", "nanometer"))
    transforms = d.get("coordinateTransformations") or []
    if len(transforms) != 1 or transforms[0].get("type") != "affine":
        return dataset
    m = np.asarray(transforms[0].get("matrix"), dtype=float)
    if m.shape != (4, 4):
        return dataset
    scale = np.diag(m)[:3]
    expected = np.diag([*scale, 1.0])
    if not np.array_equal(m, expected) or not (scale > 0).all():
        return dataset  # a rotation, shear, translation or flip: not a voxel size
    # 12 significant digits undo the float noise of (size / dataset size) * dataset size.
    xyz = [float(f"{s * v:.12g}") for s, v in zip(scale, dataset.to_xyz(), strict=True)]
    return VoxelSize.from_xyz(xyz, dataset.unit)


def voxel_size_note(name: str, own: VoxelSize, dataset: VoxelSize) -> str | None:
    """What a ``datasource-properties.json`` of voxel size ``dataset`` cannot say about layer
    ``name`` of voxel size ``own`` (see :meth:`Layer.to_wk`); None if the two are equal."""
    if _same_size(own, dataset):
        return None
    scale = ", ".join(f"{s:.6g}" for s in _voxel_size_ratio(own, dataset))
    return (
        f"layer {name!r} has its own voxel size, {own}, not the dataset's, {dataset}. "
        "This file has one voxel size per dataset, so the layer cannot be described on its "
        "own grid: it is placed by an affine coordinateTransformations scale "
        f"({scale}; x, y, z), as webKnossos places such layers, and webKnossos resamples it "
        "onto the dataset's grid for display and volume-annotates it only while it is "
        "rendered without that transformation. Its exact voxel size is in the layer's "
        "wkjupyter.voxelSize; the OME-Zarr trees serve it on its own grid, unresampled"
    )


class LayerDict(dict[str, "Layer"]):
    """Layers by name; an unknown name raises :class:`LayerNotFoundError` naming the others."""

    __slots__ = ("owner",)

    def __init__(self, layers: Mapping[str, Layer] | None = None, owner: str = "") -> None:
        super().__init__(layers or {})
        self.owner = owner or "the data source"

    def __missing__(self, name: str) -> Layer:
        msg = f"{self.owner} has no layer {name!r}; it has {', '.join(self) or 'none'}"
        raise LayerNotFoundError(msg)


@dataclass(eq=False)
class DataSource:
    """A named set of layers.

    ``voxel_size`` is the dataset's: that of its first layer after :func:`explore` merged
    the sources (layers of integer multiples of it became its coarser mags). A layer may
    keep a voxel size of its own (``Layer.voxel_size``; e.g. a 6 x 6 x 35 nm image beside an
    8 x 8 x 40 nm segmentation), as Neuroglancer and OME-NGFF allow; its bounding box and
    mags are in its own voxels.
    """

    name: str
    voxel_size: VoxelSize
    layers: dict[str, Layer]
    base_url: str | None = None

    def __post_init__(self) -> None:
        self.layers = LayerDict(self.layers, f"data source {self.name!r}")

    @property
    def bbox(self) -> BoundingBox:
        """The union of all layers' bounding boxes, in voxels of ``voxel_size`` (a layer
        with its own voxel size counts with the voxels it touches)."""
        box = BoundingBox.of((0, 0, 0), (0, 0, 0))
        for layer in self.layers.values():
            box = box.union(_bbox_in(layer, self.voxel_size))
        return box

    def to_properties(self) -> dict[str, Any]:
        """The webKnossos ``datasource-properties.json`` document.

        ``scale`` is :attr:`voxel_size`; layers with their own voxel size carry a
        ``coordinateTransformations`` scale (see :meth:`Layer.to_wk`), and the top-level
        ``wkjupyter.notes`` says for each what this one-voxel-size format cannot express.
        """
        notes = [
            voxel_size_note(layer.name, layer.voxel_size, self.voxel_size)
            for layer in self.layers.values()
        ]
        doc: dict[str, Any] = {
            "id": {"name": self.name, "team": ""},
            "scale": {"factor": self.voxel_size.to_xyz(), "unit": self.voxel_size.unit},
            "dataLayers": [layer.to_wk(self.voxel_size) for layer in self.layers.values()],
            "version": 1,
        }
        if any(notes):
            doc["wkjupyter"] = {"notes": [n for n in notes if n]}
        return doc

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
        lines = []
        for layer in self.layers.values():
            own = not _same_size(layer.voxel_size, self.voxel_size)
            lines.append(f"\n  {layer!r}" + (f": own voxel size {layer.voxel_size}" if own else ""))
        layers = "".join(lines)
        return f"DataSource({self.name!r}, voxel_size={self.voxel_size}){layers}"


def _bbox_in(layer: Layer, voxel_size: VoxelSize) -> BoundingBox:
    """``layer.bbox`` in voxels of ``voxel_size``, rounded outwards."""
    if _same_size(layer.voxel_size, voxel_size):
        return layer.bbox
    zyx = _voxel_size_ratio(layer.voxel_size, voxel_size)[::-1]
    start = [math.floor(o * r) for o, r in zip(layer.bbox.offset, zyx, strict=True)]
    end = [math.ceil(e * r) for e, r in zip(layer.bbox.end, zyx, strict=True)]
    return BoundingBox.of(start, [b - a for a, b in zip(start, end, strict=True)])
