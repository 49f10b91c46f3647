"""OME-NGFF images: 0.4 (Zarr v2, ``.zattrs``) and 0.5 (Zarr v3, ``zarr.json`` ``ome``).

One layer per multiscale image, its channels kept together (``omero`` gives their labels,
colours and windows), plus one segmentation layer per entry of ``labels/``. NGFF 0.5 labels
are listed in ``labels/zarr.json`` ``attributes.ome.labels`` (webKnossos looks for
``labels/.zattrs`` there and misses them). A bioformats2raw layout explores its series.

Geometry (NGFF 0.4 §coordinateTransformations): coord = translation + scale * index, the
dataset's transforms followed by the multiscale's. The finest level's scale is the voxel
size; every level's mag is its scale over that, which must be an integer per spatial axis.
Writers that downsample odd shapes record scale = shape ratio (ome-zarr-py writes 50/12 =
4.17 for a 4x level), so a ratio counts as integer f when the level's shape is the base
shape divided by f, rounded either way; powers of two win ties. Translations become
``MagLevel.offset`` = round(translation / scale) voxels of that level: ome-zarr-py's
half-voxel shifts of downsampled levels, (f-1)/2 * base, round to 0.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from wkjupyter.datasource import AdditionalAxis, ChannelInfo, Layer, MagLevel
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import LENGTH_UNITS, BoundingBox, Mag, Vec3, VoxelSize, normalize_unit
from wkjupyter.sources._zarr_meta import (
    ArrayInfo,
    AxisMap,
    category_for,
    parse_array,
    safe_name,
    unique_names,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wkjupyter.sources._fs import Store

__all__ = ["explore", "integer_factor"]

MAX_SERIES = 16
MAX_LABELS = 32
_OME_KEYS = ("multiscales", "labels", "bioformats2raw.layout")


async def explore(store: Store) -> list[Layer] | None:
    """The layers of an OME-NGFF image (with its labels), a labels group or a
    bioformats2raw container at ``store``; None when there is no OME metadata."""
    zattrs, zarr_json = await asyncio.gather(
        store.read_json(".zattrs"), store.read_json("zarr.json")
    )
    found = ome_attributes(zattrs, zarr_json)
    if found is None:
        return None
    attrs, zarr_format = found
    default = safe_name(store.url.rstrip("/").rsplit("/", 1)[-1], "image")
    if "bioformats2raw.layout" in attrs and "multiscales" not in attrs:
        layers = await _explore_series(store, attrs, zarr_format, default)
    else:
        layers = await _explore_image(store, attrs, zarr_format, default)
    for layer, name in zip(layers, unique_names(layer.name for layer in layers), strict=True):
        layer.name = name
    return layers or None


def ome_attributes(zattrs: Any, zarr_json: Any) -> tuple[dict[str, Any], int] | None:
    """The OME attributes of a group and its Zarr version: NGFF 0.5 ``zarr.json``
    ``attributes.ome`` (or pre-0.5 v3 ``attributes``), else NGFF <= 0.4 ``.zattrs``."""
    if isinstance(zarr_json, dict) and zarr_json.get("node_type") == "group":
        attrs = zarr_json.get("attributes") or {}
        ome = attrs.get("ome") if isinstance(attrs, dict) else None
        for candidate in (ome, attrs):
            if isinstance(candidate, dict) and any(k in candidate for k in _OME_KEYS):
                return candidate, 3
    if isinstance(zattrs, dict) and any(k in zattrs for k in _OME_KEYS):
        return zattrs, 2
    return None


async def _explore_image(
    store: Store, attrs: dict[str, Any], zarr_format: int, default: str
) -> list[Layer]:
    """The image (if ``multiscales``) and its ``labels/`` (or, for a labels group, its
    labels), explored concurrently."""
    image = None
    if "multiscales" in attrs:
        is_label = "image-label" in attrs
        image = multiscale_layer(
            store, attrs, zarr_format, default, "label" if is_label else "image"
        )
        labels_store = store.child("labels")
    else:
        labels_store = store
    # Labels share the image's space: label axes without units take the image's unit.
    unit = _space_unit(attrs)
    labels = _label_layers(labels_store, attrs if image is None else None, unit)
    if image is None:
        return await labels
    first, rest = await asyncio.gather(image, labels)
    return [first, *rest]


async def _label_layers(
    store: Store, attrs: dict[str, Any] | None, unit: str | None = None
) -> list[Layer]:
    """One segmentation layer per entry of a labels group (NGFF 0.4 ``labels/.zattrs``,
    0.5 ``labels/zarr.json``)."""
    if attrs is None:
        zattrs, zarr_json = await asyncio.gather(
            store.read_json(".zattrs"), store.read_json("zarr.json")
        )
        found = ome_attributes(zattrs, zarr_json)
        if found is None:
            return []
        attrs = found[0]
    names = attrs.get("labels")
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        msg = f"{store.url!r}: 'labels' must be a list of label paths, got {names!r}"
        raise MetadataError(msg)
    labels = names[:MAX_LABELS]
    return list(await asyncio.gather(*(_label_layer(store, n, unit) for n in labels)))


async def _label_layer(labels: Store, path: str, unit: str | None) -> Layer:
    label = labels.child(path)
    zattrs, zarr_json = await asyncio.gather(
        label.read_json(".zattrs"), label.read_json("zarr.json")
    )
    found = ome_attributes(zattrs, zarr_json)
    if found is None or "multiscales" not in found[0]:
        msg = (
            f"{labels.url!r} lists the label {path!r}, but {label.url!r} has no OME "
            "multiscales metadata; remove it from 'labels' or rewrite the label image"
        )
        raise MetadataError(msg)
    name = safe_name(path, "labels")
    return await multiscale_layer(label, found[0], found[1], name, "label", unit)


async def _explore_series(
    store: Store, attrs: dict[str, Any], zarr_format: int, default: str
) -> list[Layer]:
    """bioformats2raw: series ``0/``, ``1/``... listed in ``series`` (the root's or
    ``OME/``'s attributes), else found by listing, else ``0/``."""
    series = attrs.get("series")
    if not isinstance(series, list):
        zattrs, zarr_json = await asyncio.gather(
            store.read_json("OME/.zattrs"), store.read_json("OME/zarr.json")
        )
        ome = ome_attributes(zattrs, zarr_json)
        meta = (ome[0] if ome else None) or (zattrs if isinstance(zattrs, dict) else {})
        series = meta.get("series") if isinstance(meta, dict) else None
    if not isinstance(series, list):
        listed = [d.rstrip("/") for d in await store.list_dir() if d.endswith("/")]
        series = sorted((d for d in listed if d.isdigit()), key=int) or ["0"]
    series = [str(s) for s in series[:MAX_SERIES]]

    async def one(path: str) -> list[Layer]:
        child = store.child(path)
        zattrs, zarr_json = await asyncio.gather(
            child.read_json(".zattrs"), child.read_json("zarr.json")
        )
        found = ome_attributes(zattrs, zarr_json)
        if found is None:
            msg = f"the bioformats2raw series {child.url!r} has no OME multiscales metadata"
            raise MetadataError(msg)
        # Series are named after the container (and their number), not their own metadata.
        name = default if len(series) == 1 else f"{default}_{safe_name(path, 'series')}"
        layers = await _explore_image(child, found[0], found[1], name)
        if layers and "multiscales" in found[0]:
            layers[0].name = name
        return layers

    results = await asyncio.gather(*(one(s) for s in series))
    return [layer for layers in results for layer in layers]


# -- one multiscale image ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    name: str
    type: str | None
    unit: str | None


async def multiscale_layer(
    store: Store,
    attrs: dict[str, Any],
    zarr_format: int,
    default: str,
    kind: str,
    default_unit: str | None = None,
) -> Layer:
    """The layer of ``multiscales[0]`` in ``attrs`` (``kind`` "image" or "label");
    ``default_unit`` applies when no space axis has a unit."""
    url = store.url
    multiscales = attrs.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        msg = f"{url!r}: 'multiscales' must be a non-empty list of objects"
        raise MetadataError(msg)
    ms = multiscales[0]
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        msg = f"{url!r}: multiscales[0] has no 'datasets'; an OME-NGFF image needs at least one"
        raise MetadataError(msg)
    try:
        paths = [str(d["path"]).strip("/") for d in datasets]
    except (KeyError, TypeError) as err:
        msg = f"{url!r}: every multiscales dataset needs a 'path' ({err!r})"
        raise MetadataError(msg) from err
    key = "zarr.json" if zarr_format == 3 else ".zarray"
    docs = await asyncio.gather(*(store.read_json(f"{p}/{key}") for p in paths))
    infos: list[ArrayInfo] = []
    for path, doc in zip(paths, docs, strict=True):
        if doc is None:
            msg = (
                f"{url!r} lists the dataset {path!r}, but {store.join(f'{path}/{key}')!r} does "
                "not exist; fix the multiscales paths or rewrite the image"
            )
            raise MetadataError(msg)
        infos.append(parse_array(doc, store.join(path)))
    ndim = len(infos[0].shape)
    axes = _parse_axes(ms.get("axes"), ndim, url)
    if any(len(i.shape) != len(axes) for i in infos):
        msg = f"{url!r}: multiscales has {len(axes)} axes but its arrays have {ndim} dimensions"
        raise MetadataError(msg)
    if any(i.dtype != infos[0].dtype for i in infos):
        msg = f"{url!r}: the levels have different data types; all must share one"
        raise MetadataError(msg)
    order = _axis_order(axes, url)
    top = ms.get("coordinateTransformations")
    transforms = [
        _compose(d.get("coordinateTransformations"), top, len(axes), url) for d in datasets
    ]
    name = ms.get("name")
    name = safe_name(name, default) if isinstance(name, str) and name.strip() else default
    if default_unit is not None and not any(a.unit for a in axes):
        axes = [replace(a, unit=default_unit) for a in axes]
    return _build_layer(name, kind, axes, order, infos, transforms, attrs.get("omero"), url)


def _build_layer(
    name: str,
    kind: str,
    axes: list[_Axis],
    order: dict[str, int],
    infos: list[ArrayInfo],
    transforms: list[tuple[list[float], list[float]]],
    omero: Any,
    url: str,
) -> Layer:
    spatial = [order.get(r) for r in ("z", "y", "x")]
    scales = [[1.0 if d is None else s[d] for d in spatial] for s, _t in transforms]
    shifts = [[0.0 if d is None else t[d] for d in spatial] for _s, t in transforms]
    axis_map = AxisMap.build(len(axes), order, None, url)
    shapes = [axis_map.canonical(i.shape) for i in infos]
    base = min(range(len(infos)), key=lambda i: math.prod(scales[i]))
    mags: dict[Mag, MagLevel] = {}
    for i, info in enumerate(infos):
        factors = []
        for a in range(3):
            f = integer_factor(
                scales[i][a] / scales[base][a], shapes[base][a - 3], shapes[i][a - 3]
            )
            if f is None or (spatial[a] is None and f != 1):
                msg = (
                    f"{url!r}: dataset {info.url!r} has scale {scales[i]} (z, y, x), which is "
                    f"no integer multiple of the finest level's {scales[base]}; wkjupyter "
                    "needs integer mags per axis: resample or rewrite the pyramid"
                )
                raise MetadataError(msg)
            factors.append(f)
        mag = Mag(tuple(factors))  # type: ignore[arg-type]
        if mag in mags:
            msg = f"{url!r}: two levels have the same scale (mag {mag}); remove the duplicate"
            raise MetadataError(msg)
        offset = Vec3.of(math.floor(t / s + 0.5) for t, s in zip(shifts[i], scales[i], strict=True))
        mags[mag] = MagLevel(mag, info.url, info.format, axis_order=order, offset=offset)
    base_shape = shapes[base]
    first = infos[base]
    voxel_size = _voxel_size(axes, spatial, scales[base], url)
    extra = [
        AdditionalAxis(n, base_shape[k], axes[order[n]].type or "time", axes[order[n]].unit)
        for k, n in enumerate(axis_map.names[:-4])
    ]
    if kind == "label":
        category = "segmentation" if first.dtype.kind in "iu" else "color"
    else:
        category = category_for(name, first.dtype)
    return Layer(
        name=name,
        category=category,  # type: ignore[arg-type]
        dtype=first.dtype,
        num_channels=base_shape[-4],
        bbox=BoundingBox(mags[Mag(1)].offset, Vec3.of(base_shape[-3:])),
        voxel_size=voxel_size,
        mags=mags,
        fill_value=first.fill_value,
        channels=channels_from_omero(omero, base_shape[-4]) if kind == "image" else [],
        additional_axes=extra,
    )


def _space_unit(attrs: dict[str, Any]) -> str | None:
    """The unit of the first space axis of ``multiscales[0]`` with a known unit."""
    try:
        axes = attrs["multiscales"][0]["axes"]
        units = [a.get("unit") for a in axes if isinstance(a, dict) and a.get("type") == "space"]
    except (KeyError, IndexError, TypeError):
        return None
    for unit in units:
        try:
            return normalize_unit(unit) if isinstance(unit, str) else None
        except ValueError:
            continue
    return None


def integer_factor(ratio: float, base: int, size: int) -> int | None:
    """The integer downsampling factor a level's scale ratio stands for, or None.

    Exact (to 0.1 %) integers count; otherwise any integer f with size = base / f rounded
    down or up (writers record the shape ratio), preferring powers of two, then the nearest.
    """
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    nearest = round(ratio)
    if nearest >= 1 and abs(ratio - nearest) <= 1e-3 * nearest:
        return int(nearest)
    if size < 1 or ratio < 1:
        return None
    lo, hi = max(1, base // (size + 1)), base // max(size - 1, 1) + 1
    candidates = {1 << k for k in range(63) if lo <= 1 << k <= hi}
    candidates |= {max(1, math.floor(ratio)), math.ceil(ratio)}
    fits = [f for f in candidates if size in (base // f, -(-base // f))]
    if not fits:
        return None
    return min(fits, key=lambda f: (f & (f - 1) != 0, abs(f - ratio)))


def _parse_axes(raw: Any, ndim: int, url: str) -> list[_Axis]:
    if raw is None:  # NGFF 0.1/0.2: always t, c, z, y, x
        return [_Axis(n, None, None) for n in "tczyx"[-ndim:]] if ndim <= 5 else []
    if not isinstance(raw, list):
        msg = f"{url!r}: multiscales 'axes' must be a list"
        raise MetadataError(msg)
    axes = []
    for a in raw:
        if isinstance(a, str):  # NGFF 0.3
            axes.append(_Axis(a, None, None))
        elif isinstance(a, dict) and isinstance(a.get("name"), str):
            unit = a.get("unit")
            axes.append(_Axis(a["name"], a.get("type"), unit if isinstance(unit, str) else None))
        else:
            msg = f"{url!r}: every axis needs a 'name', got {a!r}"
            raise MetadataError(msg)
    if len({a.name for a in axes}) != len(axes):
        msg = f"{url!r}: axis names must be unique, got {[a.name for a in axes]}"
        raise MetadataError(msg)
    return axes


def _axis_order(axes: list[_Axis], url: str) -> dict[str, int]:
    """Roles by name and type: space axes x, y, z (by name, else the last ones in z, y, x
    order), the channel axis c, and every other axis (time, custom) by its own name."""

    def kind(a: _Axis) -> str:
        t = (a.type or "").lower()
        if t:
            return t
        return {"x": "space", "y": "space", "z": "space", "c": "channel", "t": "time"}.get(
            a.name.lower(), "custom"
        )

    space = [i for i, a in enumerate(axes) if kind(a) == "space"]
    channel = [i for i, a in enumerate(axes) if kind(a) == "channel"]
    if not 2 <= len(space) <= 3 or len(channel) > 1:
        msg = (
            f"{url!r}: OME-NGFF needs 2-3 space axes and at most one channel axis, got "
            f"{[(a.name, a.type) for a in axes]}"
        )
        raise MetadataError(msg)
    names = {axes[i].name.lower(): i for i in space}
    if {"x", "y"} <= set(names) and set(names) <= {"x", "y", "z"}:
        order = dict(names)
    else:
        order = dict(zip("zyx"[3 - len(space) :], space, strict=True))
    if channel:
        order["c"] = channel[0]
    for i, a in enumerate(axes):
        if i not in space and i not in channel:
            order[a.name if a.name not in ("c", "z", "y", "x") else f"{a.name}_"] = i
    return order


def _compose(own: Any, top: Any, ndim: int, url: str) -> tuple[list[float], list[float]]:
    """Scale and translation of a dataset's transforms followed by the multiscale's."""
    scale, shift = [1.0] * ndim, [0.0] * ndim
    for t in [*(own or []), *(top or [])]:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            msg = f"{url!r}: unsupported coordinateTransformation {t!r}"
            raise UnsupportedFormatError(msg)
        values = t.get(kind)
        if values is None and "path" in t:
            msg = f"{url!r}: {kind} stored in a binary file ('path') is not supported"
            raise UnsupportedFormatError(msg)
        if not isinstance(values, list) or len(values) != ndim:
            msg = f"{url!r}: a {kind} needs {ndim} numbers, got {values!r}"
            raise MetadataError(msg)
        try:
            v = [float(x) for x in values]
        except (TypeError, ValueError) as err:
            msg = f"{url!r}: a {kind} needs numbers, got {values!r}"
            raise MetadataError(msg) from err
        if kind == "scale":
            if any(not math.isfinite(x) or x <= 0 for x in v):
                msg = f"{url!r}: scales must be positive, got {values!r}"
                raise MetadataError(msg)
            scale = [a * b for a, b in zip(scale, v, strict=True)]
            shift = [a * b for a, b in zip(shift, v, strict=True)]
        else:
            shift = [a + b for a, b in zip(shift, v, strict=True)]
    return scale, shift


def _voxel_size(
    axes: list[_Axis], spatial: Sequence[int | None], scale: list[float], url: str
) -> VoxelSize:
    """The finest level's (z, y, x) scale in the smallest unit of the space axes (unknown
    or missing units count as nanometer). A 2-D image's z size is its x size."""
    units = []
    for d in spatial:
        try:
            units.append(normalize_unit(axes[d].unit) if d is not None else None)
        except ValueError:
            units.append("nanometer")
    known = [u for u in units if u is not None] or ["nanometer"]
    unit = min(known, key=lambda u: LENGTH_UNITS[u])
    size = [
        s * LENGTH_UNITS[u or unit] / LENGTH_UNITS[unit] for s, u in zip(scale, units, strict=True)
    ]
    if spatial[0] is None:
        size[0] = size[2]
    try:
        return VoxelSize(size[0], size[1], size[2], unit)
    except ValueError as err:
        raise MetadataError(f"{url!r}: {err}") from err


def channels_from_omero(omero: Any, num_channels: int) -> list[ChannelInfo]:
    """``omero.channels`` as :class:`ChannelInfo` (label, colour, window, range, active,
    inverted), at most one per channel of the image."""
    raw = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(raw, list):
        return []
    out = []
    for i, ch in enumerate(raw[:num_channels]):
        if not isinstance(ch, dict):
            continue
        window: dict[str, Any] = ch["window"] if isinstance(ch.get("window"), dict) else {}
        out.append(
            ChannelInfo(
                label=str(ch.get("label") or f"channel_{i}"),
                color=_color(ch.get("color")),
                window=_pair(window, "start", "end"),
                range=_pair(window, "min", "max"),
                active=bool(ch.get("active", True)),
                inverted=bool(ch.get("inverted", False)),
            )
        )
    return out


def _pair(d: dict[str, Any], a: str, b: str) -> tuple[float, float] | None:
    try:
        return (float(d[a]), float(d[b]))
    except (KeyError, TypeError, ValueError):
        return None


def _color(value: Any) -> str | None:
    """The colour as "RRGGBB" (upper case) from "RRGGBB", "#RRGGBB" or "RRGGBBAA", or None."""
    if not isinstance(value, str):
        return None
    text = value.strip().lstrip("#")
    if re.fullmatch(r"[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?", text):
        return text[:6].upper()
    return None
