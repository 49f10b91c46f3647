"""N5 multiscale conventions: COSEM, BigDataViewer, n5-viewer/Neuroglancer, bare datasets.

Each function reads the ``attributes.json`` documents its layout needs (independent ones
concurrently) and returns :class:`~wkjupyter.datasource.Layer` objects;
:func:`wkjupyter.sources.n5.explore` decides which layout applies. Where storage cannot list
folders (plain HTTP), numbered children (``s1``, ``setup1`` …) are probed in small batches.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wkjupyter.datasource import AdditionalAxis, Layer
from wkjupyter.errors import MetadataError
from wkjupyter.sources._n5_codecs import DatasetAttributes, is_dataset, parse_dataset_attributes
from wkjupyter.sources._n5_metadata import (
    Level,
    axis_roles,
    build_layer,
    factor_lists,
    factors_of,
    layer_name,
    resolution_of,
    spatial_xyz,
    to_nm,
)

if TYPE_CHECKING:
    from wkjupyter.sources._fs import Store

__all__ = ["bare_dataset", "bdv", "cosem", "n5_viewer"]

_PROBE_BATCH = 4  # children probed at once where the storage cannot list (plain HTTP)
_PROBE_LIMIT = 1024
# (url, attributes, attributes.json document, downsampling factors or None) of one sN.
_Scale = tuple[str, DatasetAttributes, Mapping[str, Any], Any]


async def _read_dataset(
    store: Store, path: str
) -> tuple[str, DatasetAttributes, Mapping[str, Any]]:
    url = store.join(path)
    doc = await store.read_json(f"{path}/attributes.json" if path else "attributes.json")
    if not is_dataset(doc):
        what = "is missing" if doc is None else "is not an N5 dataset"
        msg = f"the multiscale metadata names {url!r}, which {what}; fix the group's attributes"
        raise MetadataError(msg)
    return url, parse_dataset_attributes(doc, url), doc


async def _numbered(
    store: Store, prefix: str, key: str, known: Mapping[int, Any]
) -> dict[int, Any]:
    """``{N: document}`` for the children ``<prefix>N/`` having ``<prefix>N/<key>``.

    Lists the folder; where that yields nothing (plain HTTP) probes N = 0, 1, … in batches
    up to the first gap, so unlisted numbering must be contiguous there.
    """
    entries = await store.list_dir("")
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)/")
    listed = sorted({int(m.group(1)) for e in entries if (m := pattern.fullmatch(e))})
    found = {i: d for i, d in known.items() if d is not None}
    if listed:
        todo = [i for i in listed if i not in found]
        docs = await asyncio.gather(*(store.read_json(f"{prefix}{i}/{key}") for i in todo))
        found.update({i: d for i, d in zip(todo, docs, strict=True) if d is not None})
        return dict(sorted(found.items()))
    for start in range(max(found, default=-1) + 1, _PROBE_LIMIT, _PROBE_BATCH):
        batch = list(range(start, start + _PROBE_BATCH))
        docs = await asyncio.gather(*(store.read_json(f"{prefix}{i}/{key}") for i in batch))
        for i, d in zip(batch, docs, strict=True):
            if d is None:
                return dict(sorted(found.items()))
            found[i] = d
    return dict(sorted(found.items()))


# -- conventions ----------------------------------------------------------------------------


async def bare_dataset(store: Store, doc: Mapping[str, Any]) -> Layer:
    """A single dataset: mag 1; voxel size from its resolution (times its own factors)."""
    url = store.url
    attrs = parse_dataset_attributes(doc, url)
    roles = axis_roles(_axis_names(doc, attrs.ndim), attrs.ndim, url)
    transform = doc.get("transform")
    if isinstance(transform, Mapping):  # a COSEM scale level explored on its own
        level, base, units = _cosem_level(url, attrs, transform, url)
        return build_layer(layer_name(url), [level], base, units, [doc], url)
    res = resolution_of(doc, roles, url)
    base, units = res if res is not None else ([1.0, 1.0, 1.0], [None] * 3)
    if "downsamplingFactors" in doc:  # Neuroglancer: a scale's voxels are factors x bigger
        base = [
            b * f
            for b, f in zip(base, factors_of(doc["downsamplingFactors"], roles, url), strict=True)
        ]
    level = Level(url, attrs, roles, [1.0, 1.0, 1.0])
    return build_layer(layer_name(url), [level], base, units, [doc], url)


def _axis_names(doc: Mapping[str, Any], ndim: int) -> list[Any] | None:
    axes = doc.get("axes")  # Neuroglancer/n5-viewer: names in N5 order
    if isinstance(axes, list) and len(axes) == ndim and all(isinstance(a, str) for a in axes):
        return axes
    return None


def _cosem_level(
    path_url: str, attrs: DatasetAttributes, tr: Mapping[str, Any], url: str
) -> tuple[Level, list[float], list[Any]]:
    """A level from a COSEM ``transform`` (x, y, z in nm; base voxel size 1 nm)."""
    try:
        axes, scale = list(tr["axes"]), [float(s) for s in tr["scale"]]
        translate = [float(t) for t in tr.get("translate") or [0.0] * len(scale)]
        units = list(tr.get("units") or [None] * len(scale))
        if not len(axes) == len(scale) == len(translate) == len(units):
            raise ValueError("axes, scale, translate and units differ in length")
    except (KeyError, TypeError, ValueError) as err:
        msg = f"{url!r}: malformed COSEM transform for {path_url!r} ({err})"
        raise MetadataError(msg) from err
    if tr.get("order", "C") != "F":  # cellmap-schemas STTransform: C order unless "F"
        axes, scale, translate, units = axes[::-1], scale[::-1], translate[::-1], units[::-1]
    roles = axis_roles(axes, attrs.ndim, path_url)
    uxyz = spatial_xyz(units, roles, None, "units", url)
    scale_nm = to_nm(spatial_xyz(scale, roles, 1.0, "scale", url), uxyz, url)
    offset_nm = to_nm(spatial_xyz(translate, roles, 0.0, "translate", url), uxyz, url)
    return Level(path_url, attrs, roles, scale_nm, offset_nm), [1.0, 1.0, 1.0], uxyz


def _ngff_transform(ms: Mapping[str, Any], d: Mapping[str, Any]) -> dict[str, Any]:
    """An NGFF-style dataset entry (axes + coordinateTransformations) as a COSEM transform."""
    axes = ms.get("axes") or []
    names = [a.get("name") if isinstance(a, Mapping) else a for a in axes]
    units = [a.get("unit") if isinstance(a, Mapping) else None for a in axes]
    tr: dict[str, Any] = {"axes": names, "units": units, "order": "C"}
    for t in d.get("coordinateTransformations") or []:
        if t.get("type") == "scale":
            tr["scale"] = t.get("scale")
        elif t.get("type") == "translation":
            tr["translate"] = t.get("translation")
    return tr


async def cosem(store: Store, root: Mapping[str, Any]) -> Layer:
    """A group with ``multiscales[0].datasets[].transform`` (or NGFF transforms)."""
    url = store.url
    try:
        ms = root["multiscales"][0]
        entries = [(str(d["path"]), d) for d in ms["datasets"]]
        if not entries:
            raise ValueError("no datasets")
    except (KeyError, IndexError, TypeError, ValueError) as err:
        msg = f"{store.join('attributes.json')!r}: malformed 'multiscales' ({err!r})"
        raise MetadataError(msg) from err
    found = await asyncio.gather(*(_read_dataset(store, p) for p, _ in entries))
    levels, units = [], [None] * 3
    for (_, d), (path_url, attrs, doc) in zip(entries, found, strict=True):
        tr = d.get("transform") or doc.get("transform")
        if not isinstance(tr, Mapping):
            tr = _ngff_transform(ms, d) if "coordinateTransformations" in d else None
        if tr is None:
            msg = f"{url!r}: the multiscales entry for {path_url!r} has no transform"
            raise MetadataError(msg)
        level, _, level_units = _cosem_level(path_url, attrs, tr, url)
        levels.append(level)
        units = level_units if level_units != [None] * 3 else units
    return build_layer(layer_name(url), levels, [1.0] * 3, units, [root], url)


async def _scale_levels(store: Store, group: Mapping[str, Any], s0: Any) -> list[_Scale]:
    """``(url, attrs, doc, factors or None)`` of the ``sN`` datasets of a group."""
    lists = factor_lists(group)
    if lists is not None:
        found = await asyncio.gather(*(_read_dataset(store, f"s{i}") for i in range(len(lists))))
        return [(*f, lst) for f, lst in zip(found, lists, strict=True)]
    docs = await _numbered(store, "s", "attributes.json", {0: s0})
    out = []
    for i, doc in docs.items():
        if is_dataset(doc):
            path_url = store.join(f"s{i}")
            attrs = parse_dataset_attributes(doc, path_url)
            out.append((path_url, attrs, doc, doc.get("downsamplingFactors")))
    if not out or not is_dataset(s0):
        msg = f"{store.url!r}: an N5 multiscale group needs the dataset 's0'"
        raise MetadataError(msg)
    return out


def _levels_of(scales: list[_Scale]) -> list[Level]:
    levels: list[Level] = []
    first = scales[0][1]
    for path_url, attrs, doc, factors in scales:
        roles = axis_roles(_axis_names(doc, attrs.ndim), attrs.ndim, path_url)
        if factors is None:
            factors = [1] * 3 if not levels else _infer_factors(first, attrs, roles, path_url)
        levels.append(Level(path_url, attrs, roles, factors_of(factors, roles, path_url)))
    return levels


def _infer_factors(
    first: DatasetAttributes, attrs: DatasetAttributes, roles: Mapping[str, int], url: str
) -> list[int]:
    """Factors from the dimension ratio (ceil rounding) when no metadata gives them."""
    out = []
    for r in ("x", "y", "z"):
        if r not in roles:
            out.append(1)
            continue
        d0, d = first.dimensions[roles[r]], attrs.dimensions[roles[r]]
        f = max(1, round(d0 / max(d, 1)))
        if -(-d0 // f) != d and d0 // f != d:
            msg = f"{url!r} has no downsamplingFactors and its size does not tell them"
            raise MetadataError(msg)
        out.append(f)
    return out


async def n5_viewer(store: Store, root: Mapping[str, Any], s0: Any) -> Layer:
    """An n5-viewer / Neuroglancer group of ``s0, s1, …``."""
    scales = await _scale_levels(store, root, s0)
    levels = _levels_of(scales)
    res = resolution_of(root, levels[0].roles, store.url)
    res = res or resolution_of(scales[0][2], levels[0].roles, store.url)
    base, units = res if res is not None else ([1.0] * 3, [None] * 3)
    docs = [root, scales[0][2]]
    return build_layer(layer_name(store.url), levels, base, units, docs, store.url)


async def bdv(store: Store, root: Mapping[str, Any], setup0: Mapping[str, Any]) -> list[Layer]:
    """BigDataViewer ``setupN/timepointM/sK``: one layer per setup, timepoints as ``t``."""
    setups = await _numbered(store, "setup", "attributes.json", {0: setup0})
    tps = await asyncio.gather(
        *(
            _numbered(store.child(f"setup{n}"), "timepoint", "s0/attributes.json", {})
            for n in setups
        )
    )
    layers = await asyncio.gather(
        *(_bdv_setup(store, n, doc, t) for (n, doc), t in zip(setups.items(), tps, strict=True))
    )
    found = [layer for layer in layers if layer is not None]
    if len(found) == 1:
        found[0].name = layer_name(store.url)
    return found


async def _bdv_setup(
    store: Store, n: int, setup: Mapping[str, Any], found: Mapping[int, Any]
) -> Layer | None:
    """Setup ``n`` from its attributes and ``{timepoint: its s0 attributes}``."""
    if not found:
        return None
    timepoints = sorted(found)
    setup_store = store.child(f"setup{n}")
    tp_store = setup_store.child(f"timepoint{timepoints[0]}")
    # BDV writes the same grid at every timepoint: the first one describes them all.
    scales = await _scale_levels(tp_store, setup, found[timepoints[0]])
    levels = _levels_of(scales)
    extra: list[AdditionalAxis] = []
    if len(timepoints) > 1:
        extra = [AdditionalAxis("t", len(timepoints), "time")]
        for lv in levels:
            lv.hints = {"timepoints": timepoints, "dataset": lv.url.rsplit("/", 1)[-1]}
            lv.url = setup_store.url
    res = resolution_of(setup, levels[0].roles, setup_store.url)
    base, units = res if res is not None else ([1.0] * 3, [None] * 3)
    return build_layer(f"setup{n}", levels, base, units, [setup], setup_store.url, extra)
