"""N5 metadata: axis roles, physical sizes, mags, names and categories. Pure, no I/O.

Lists in N5 metadata are x-first (``dimensions`` order) unless a convention says otherwise;
the helpers here take per-dimension lists in N5 order, or plain x, y, z lists, and return
x, y, z. Physical sizes are compared in nanometers; a voxel size keeps the smallest unit
given (nanometer when none is). :func:`build_layer` turns the levels a convention found into a
:class:`~wkjupyter.datasource.Layer` with integer mags and offsets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wkjupyter.datasource import AdditionalAxis, Category, Layer, MagLevel
from wkjupyter.errors import MetadataError
from wkjupyter.geometry import LENGTH_UNITS, BoundingBox, Mag, Vec3, VoxelSize, normalize_unit

if TYPE_CHECKING:
    import numpy as np

    from wkjupyter.sources._n5_codecs import DatasetAttributes

__all__ = [
    "CANONICAL",
    "Level",
    "axis_roles",
    "build_layer",
    "extra_axes",
    "factor_lists",
    "factors_of",
    "layer_name",
    "resolution_of",
    "spatial_xyz",
    "to_nm",
]

CANONICAL = ("c", "z", "y", "x")
_CHANNEL_NAMES = frozenset({"c", "ch", "channel", "channels"})
_DEFAULT_AXES = ("x", "y", "z", "c", "t")
_TIME_NAMES = frozenset({"t", "time"})
_SEGMENTATION_WORDS = frozenset({"segmentation", "segmentations", "seg", "labels", "label"})
_UNITLESS = frozenset({"", "pixel", "pixels", "px", "unknown", "none", "voxel"})


# -- axes -----------------------------------------------------------------------------------


def axis_roles(names: Sequence[Any] | None, ndim: int, url: str = "") -> dict[str, int]:
    """Map the roles ``x, y, z, c`` and extra axis names to N5 dimension indices.

    ``names`` are axis names in N5 order (x-first); without them the dimensions are x, y, z,
    then c, then t.
    """
    if names is None:
        names = [*_DEFAULT_AXES[:ndim], *(f"d{i}" for i in range(5, ndim))]
    if len(names) != ndim:
        msg = f"{url!r}: {len(names)} axis names {list(names)} for {ndim} dimensions"
        raise MetadataError(msg)
    roles: dict[str, int] = {}
    for i, name in enumerate(names):
        role = str(name).lower()
        role = "c" if role in _CHANNEL_NAMES else role
        if role in roles:
            msg = f"{url!r}: the axis name {name!r} occurs twice in {list(names)}"
            raise MetadataError(msg)
        roles[role] = i
    return roles


def extra_axes(roles: Mapping[str, int]) -> list[str]:
    """The non-spatial, non-channel axes, slowest (highest N5 index) first."""
    return sorted((r for r in roles if r not in CANONICAL), key=lambda r: -roles[r])


def spatial_xyz(
    values: Sequence[Any], roles: Mapping[str, int], default: Any, what: str, url: str
) -> list[Any]:
    """The x, y, z entries of a per-dimension list (N5 order, or just x, y, z)."""
    if len(values) == len(roles):
        return [values[roles[r]] if r in roles else default for r in ("x", "y", "z")]
    if len(values) in (2, 3):
        return [*values, default][:3]
    msg = f"{url!r}: {what} {list(values)} has {len(values)} entries for {len(roles)} axes"
    raise MetadataError(msg)


# -- physical sizes -------------------------------------------------------------------------


def _unit(unit: Any, url: str) -> str:
    if unit is None or str(unit).strip().lower() in _UNITLESS:
        return "nanometer"
    try:
        return normalize_unit(str(unit))
    except ValueError as err:
        msg = f"{url!r}: {err}"
        raise MetadataError(msg) from err


def to_nm(values: Sequence[Any], units: Sequence[Any], url: str) -> list[float]:
    """Physical sizes in nanometers."""
    factors = [LENGTH_UNITS[_unit(u, url)] for u in units]
    try:
        return [float(v) * f for v, f in zip(values, factors, strict=True)]
    except (TypeError, ValueError) as err:
        msg = f"{url!r}: physical sizes {list(values)} must be numbers"
        raise MetadataError(msg) from err


def _voxel_size(xyz_nm: Sequence[float], units: Sequence[Any], url: str) -> VoxelSize:
    """A voxel size in the smallest of the given units."""
    unit = min((_unit(u, url) for u in units), key=lambda u: LENGTH_UNITS[u])
    try:
        return VoxelSize.from_xyz([v / LENGTH_UNITS[unit] for v in xyz_nm], unit)
    except ValueError as err:
        msg = f"{url!r}: invalid voxel size {list(xyz_nm)} nm: {err}"
        raise MetadataError(msg) from err


def resolution_of(
    doc: Mapping[str, Any], roles: Mapping[str, int], url: str
) -> tuple[list[float], list[Any]] | None:
    """x, y, z voxel size (nm) and units from ``pixelResolution`` or ``resolution``+``units``."""
    pr = doc.get("pixelResolution")
    if isinstance(pr, Mapping) and isinstance(pr.get("dimensions"), list):
        values, units = pr["dimensions"], [pr.get("unit")] * len(pr["dimensions"])
    elif isinstance(pr, list):
        values, units = pr, doc.get("units") or [None] * len(pr)
    elif isinstance(doc.get("resolution"), list):
        values = doc["resolution"]
        units = doc.get("units") or [None] * len(values)
    else:
        return None
    if not isinstance(units, list) or len(units) != len(values):
        msg = f"{url!r}: units {units!r} do not match the resolution {values!r}"
        raise MetadataError(msg)
    xyz = spatial_xyz(values, roles, 1.0, "the resolution", url)
    uxyz = spatial_xyz(units, roles, None, "the units", url)
    return to_nm(xyz, uxyz, url), uxyz


def factors_of(value: Any, roles: Mapping[str, int], url: str) -> list[float]:
    """The x, y, z downsampling factors of a per-dimension list."""
    if not isinstance(value, list) or not all(isinstance(v, int | float) for v in value):
        msg = f"{url!r}: downsampling factors {value!r} must be a list of numbers"
        raise MetadataError(msg)
    return [float(v) for v in spatial_xyz(value, roles, 1, "the downsampling factors", url)]


def factor_lists(attrs: Mapping[str, Any]) -> list[Any] | None:
    """A group's ``scales`` or ``downsamplingFactors`` list of lists, if it has one."""
    for key in ("scales", "downsamplingFactors"):
        value = attrs.get(key)
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return value
    return None


# -- naming and category --------------------------------------------------------------------


def _segments(url: str) -> list[str]:
    return [s for s in url.rstrip("/").split("/") if s]


def layer_name(url: str) -> str:
    """A URL-safe layer name from the last folder of ``url`` (without ``.n5``)."""
    parts = _segments(url) or ["n5"]
    last = parts[-1]
    if re.fullmatch(r"s\d+", last) and len(parts) > 1:  # a scale explored on its own
        last = parts[-2]
    if last.lower().endswith(".n5"):
        last = last[:-3]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("_") or "n5"


def _category(dtype: np.dtype[Any], url: str, docs: Sequence[Mapping[str, Any]]) -> Category:
    """webKnossos' rule, widened: unsigned ints named or declared as labels."""
    if dtype.kind != "u":
        return "color"
    for doc in docs:
        for key in ("type", "category"):
            if str(doc.get(key, "")).lower() in ("segmentation", "label", "labels"):
                return "segmentation"
        paintera = doc.get("painteraData")
        if isinstance(paintera, Mapping) and paintera.get("type") == "label":
            return "segmentation"
    words = {w for s in _segments(url)[-2:] for w in re.split(r"[^a-z0-9]+", s.lower())}
    return "segmentation" if words & _SEGMENTATION_WORDS else "color"


# -- building layers ------------------------------------------------------------------------


@dataclass
class Level:
    """One stored scale as a convention found it, before mags and offsets are derived."""

    url: str
    attrs: DatasetAttributes
    roles: dict[str, int]
    factors: list[float]  # x, y, z relative to some common base
    offset_nm: list[float] | None = None  # COSEM translate: centre of voxel 0, x, y, z
    hints: dict[str, Any] = field(default_factory=dict)


def build_layer(
    name: str,
    levels: list[Level],
    base_nm: Sequence[float],
    units: Sequence[Any],
    docs: Sequence[Mapping[str, Any]],
    url: str,
    extra: Sequence[AdditionalAxis] = (),
) -> Layer:
    """One layer from its levels; ``base_nm`` is the voxel size of factor 1 (x, y, z)."""
    finest = min(levels, key=lambda lv: math.prod(lv.factors))
    dtype = finest.attrs.dtype.newbyteorder("=")
    mags: dict[Mag, MagLevel] = {}
    for lv in levels:
        if lv.attrs.data_type != finest.attrs.data_type:
            msg = f"{lv.url!r} is {lv.attrs.data_type}, but {finest.url!r} {finest.attrs.data_type}"
            raise MetadataError(msg)
        ratio = [a / b for a, b in zip(lv.factors, finest.factors, strict=True)]
        if any(abs(r - round(r)) > 1e-3 or round(r) < 1 for r in ratio):
            msg = (
                f"{lv.url!r}: its downsampling factors {lv.factors} are not integer multiples "
                f"of the finest level's {finest.factors}; wkjupyter needs integer mags"
            )
            raise MetadataError(msg)
        mag = Mag.from_xyz(round(r) for r in ratio)
        if mag in mags:
            msg = f"{lv.url!r} and {mags[mag].path!r} both have mag {mag}; remove one"
            raise MetadataError(msg)
        offset = _offset(lv, finest, base_nm, mag)
        mags[mag] = MagLevel(mag, lv.url, "n5", dict(lv.roles), offset=offset, hints=lv.hints)
    roles, dims = finest.roles, finest.attrs.dimensions
    shape = Vec3(*(dims[roles[r]] if r in roles else 1 for r in ("z", "y", "x")))
    voxel = [b * f for b, f in zip(base_nm, finest.factors, strict=True)]
    axes = list(extra) + [
        AdditionalAxis(r, dims[roles[r]], "time" if r in _TIME_NAMES else "custom")
        for r in extra_axes(roles)
    ]
    return Layer(
        name=name,
        category=_category(dtype, url, docs),
        dtype=dtype,
        num_channels=dims[roles["c"]] if "c" in roles else 1,
        bbox=BoundingBox(mags[Mag(1)].offset, shape),
        voxel_size=_voxel_size(voxel, units, url),
        mags=mags,
        additional_axes=axes,
    )


def _offset(lv: Level, finest: Level, base_nm: Sequence[float], mag: Mag) -> Vec3:
    """Where voxel 0 of a level lies, in its own voxels (x, y, z -> Vec3)."""
    if lv.offset_nm is None:
        return Vec3(0, 0, 0)
    out = []
    for t, b, f0, f in zip(lv.offset_nm, base_nm, finest.factors, mag.to_xyz(), strict=True):
        s0 = b * f0  # the finest voxel size along this axis
        # COSEM/NGFF: translate is the centre of voxel 0; a voxel of mag f averages f finest
        # voxels, so its first one starts (f-1)/2 finest voxels before that centre.
        centred = (t / s0 - (f - 1) / 2) / f
        corner = t / (s0 * f)  # writers that shift nothing between levels
        if abs(centred - round(centred)) > 1e-3 and abs(corner - round(corner)) < 1e-3:
            centred = corner
        out.append(round(centred))  # offsets are whole voxels: sub-voxel shifts are rounded
    return Vec3.from_xyz(out)
