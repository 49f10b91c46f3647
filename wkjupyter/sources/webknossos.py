"""webKnossos datasets: ``datasource-properties.json`` at the root (webknossos.md §3).

The webknossos Python library writes Zarr (v2, order F) or Zarr v3 (sharded) arrays in
c, x, y, z order, named by ``axisOrder``; their shapes are padded (zarr3 shards round
them up to 1024, zarr chunks to the chunk shape), so the layer's extent is ``boundingBox``
alone: ``Layer.read`` reads it and the server declares each mag cut at its end (see
``wkjupyter.server.view.served_shape``). Arrays hold absolute coordinates (voxel v of
mag m lies at v * m), so every ``MagLevel.offset`` is 0. Mag paths are relative to the
dataset root; a mag without one lives at ``<layer>/<mag>``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wkjupyter.datasource import DataSource, Layer, MagLevel
from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.geometry import Mag
from wkjupyter.sources._zarr_meta import parse_array

if TYPE_CHECKING:
    from wkjupyter.sources._fs import Store

__all__ = ["PROPERTIES", "explore"]

PROPERTIES = "datasource-properties.json"
# webKnossos' default for Zarr mags without axisOrder: c, x, y, z (or x, y, z when 3-D).
_DEFAULT_ORDER = {3: {"x": 0, "y": 1, "z": 2}, 4: {"c": 0, "x": 1, "y": 2, "z": 3}}


async def explore(store: Store) -> list[Layer] | None:
    """Every layer of the webKnossos dataset at ``store``; None without a
    ``datasource-properties.json``."""
    doc = await store.read_json(PROPERTIES)
    if doc is None:
        return None
    url = store.join(PROPERTIES)
    if not isinstance(doc, dict) or not isinstance(doc.get("dataLayers"), list):
        msg = f"{url!r} is malformed: it needs a 'dataLayers' list; fix or regenerate it"
        raise MetadataError(msg)
    prepared = [_prepare_layer(store, d, url) for d in doc["dataLayers"]]
    try:
        ds = DataSource.from_properties({**doc, "dataLayers": prepared})
    except (MetadataError, UnsupportedFormatError) as err:
        raise type(err)(f"{url!r}: {err}") from err
    layers = list(ds.layers.values())
    await asyncio.gather(*(_check_mags(store, layer, url) for layer in layers))
    return layers


def _prepare_layer(store: Store, d: Any, url: str) -> dict[str, Any]:
    """Resolve mag paths to absolute URLs and fold ``additionalAxes`` into ``axisOrder``."""
    if not isinstance(d, dict):
        msg = f"{url!r}: every entry of 'dataLayers' must be an object, got {d!r}"
        raise MetadataError(msg)
    name = str(d.get("name", ""))
    fmt = d.get("dataFormat")
    if fmt == "wkw" or (fmt is None and "wkwResolutions" in d):
        msg = (
            f"layer {name!r} of {url!r} is stored as WKW, which wkjupyter cannot read; "
            "convert the dataset to Zarr with the webknossos library, e.g. "
            "webknossos.Dataset.open(path).copy_dataset(new_path, data_format='zarr3')"
        )
        raise UnsupportedFormatError(msg)
    mags = d.get("mags")
    if not isinstance(mags, list) or not mags:
        msg = f"{url!r}: layer {name!r} has no 'mags' list"
        raise MetadataError(msg)
    extra_axes = {
        str(a["name"]): int(a["index"])
        for a in d.get("additionalAxes") or []
        if isinstance(a, dict) and "name" in a and "index" in a
    }
    out = []
    for m in mags:
        if not isinstance(m, dict) or "mag" not in m:
            msg = f"{url!r}: layer {name!r} has a mag entry without 'mag': {m!r}"
            raise MetadataError(msg)
        try:
            mag = Mag.from_xyz(m["mag"]) if isinstance(m["mag"], list) else Mag(m["mag"])
        except (TypeError, ValueError) as err:
            msg = f"{url!r}: layer {name!r} has an invalid mag {m['mag']!r}"
            raise MetadataError(msg) from err
        path = m.get("path") or f"{name}/{mag}"
        entry = {**m, "path": store.join(str(path))}
        if isinstance(m.get("axisOrder"), dict):
            entry["axisOrder"] = {**m["axisOrder"], **extra_axes}
        out.append(entry)
    return {**d, "mags": out}


async def _check_mags(store: Store, layer: Layer, url: str) -> None:
    """Read the metadata of the Zarr mags stored below the dataset (one concurrent wave):
    each must exist and match the layer's dtype; missing axis orders get webKnossos'
    default for the array's rank."""
    root = store.url.rstrip("/") + "/"
    todo = [
        level
        for level in layer.mags.values()
        if level.format in ("zarr", "zarr3")
        and level.credential_id is None
        and level.path.startswith(root)
    ]
    keys = [
        f"{level.path[len(root) :]}/{'zarr.json' if level.format == 'zarr3' else '.zarray'}"
        for level in todo
    ]
    docs = await asyncio.gather(*(store.read_json(k) for k in keys))
    for level, key, doc in zip(todo, keys, docs, strict=True):
        if doc is None:
            msg = (
                f"{url!r}: layer {layer.name!r} mag {level.mag} should be a Zarr array at "
                f"{level.path!r}, but {store.join(key)!r} does not exist"
            )
            raise MetadataError(msg)
        info = parse_array(doc, level.path)
        if info.dtype != layer.dtype:
            msg = (
                f"{url!r}: layer {layer.name!r} says {layer.dtype}, but its mag {level.mag} "
                f"at {level.path!r} stores {info.dtype}"
            )
            raise MetadataError(msg)
        if level.axis_order is None and len(info.shape) in _DEFAULT_ORDER:
            fixed: MagLevel = replace(level, axis_order=_DEFAULT_ORDER[len(info.shape)])
            layer.mags[level.mag] = fixed
