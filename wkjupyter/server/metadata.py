"""The metadata documents of the served trees, as pure functions of the served view.

``zarr/<dataset>/`` is Zarr v2 (zarr-specs ``docs/v2/v2.0.rst``) with OME-NGFF 0.4
(ngff.openmicroscopy.org/0.4) in the layer groups' ``.zattrs``, plus zarr-python's consolidated
``.zmetadata`` at the root and at every layer. ``zarr3/<dataset>/`` is Zarr v3 (zarr-specs
``docs/v3/core``) with OME-NGFF 0.5 in ``zarr.json`` ``attributes.ome``, and every group carries
zarr-python's inline ``consolidated_metadata`` (``must_understand: false``, so other readers
skip it). Both roots also serve a webKnossos ``datasource-properties.json`` describing the
served tree the way webKnossos describes its own Zarr streams.

One layer is one NGFF multiscale image (axes ``*extra, c, z, y, x``, finest level first), an
``image-label`` when it is an integer segmentation, else an image with ``omero`` channels.
Listings are small HTML pages with relative ``href`` s (what fsspec's HTTP ``ls`` scrapes) and
the same names as JSON.
"""

from __future__ import annotations

import copy
import html
import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from wkjupyter.datasource import ChannelInfo, Layer, MagLevel, voxel_size_note
from wkjupyter.errors import UnsupportedFormatError
from wkjupyter.geometry import Mag, Vec3

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wkjupyter.geometry import VoxelSize
    from wkjupyter.server._keys import Tree
    from wkjupyter.server.view import ServedArray, ServedDataset, ServedLayer

__all__ = [
    "array_documents",
    "array_entries",
    "datasource_properties",
    "fill_value_json",
    "group_json",
    "image_layer_for",
    "is_label",
    "layer_documents",
    "layer_entries",
    "listing",
    "ngff_attributes",
    "root_documents",
    "root_entries",
    "zgroup",
]

JSON = dict[str, Any]

#: omero colours of channels without one: white for a single channel, else these in turn.
_CHANNEL_COLORS = ("FF0000", "00FF00", "0000FF", "FFFF00", "FF00FF", "00FFFF", "FFFFFF")
_HEX_COLOR = re.compile(r"#?([0-9A-Fa-f]{6})")
_V2_GROUP_FILES = (".zattrs", ".zgroup", ".zmetadata")


# -- building blocks ---------------------------------------------------------------------------


def zgroup() -> JSON:
    """The Zarr v2 ``.zgroup`` document."""
    return {"zarr_format": 2}


def group_json(attributes: JSON, consolidated: dict[str, JSON] | None = None) -> JSON:
    """A Zarr v3 group ``zarr.json``.

    Parameters
    ----------
    attributes
        The group's ``attributes``.
    consolidated
        The documents of every node below the group by path relative to it (``"color"``,
        ``"color/1"``), stored as zarr-python's inline ``consolidated_metadata``; None: none.
    """
    doc: JSON = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    if consolidated is not None:
        doc["consolidated_metadata"] = {
            "kind": "inline",
            "must_understand": False,
            "metadata": consolidated,
        }
    return doc


def fill_value_json(value: Any, dtype: np.dtype[Any]) -> Any:
    """``value`` as a JSON fill value of ``dtype``, valid in Zarr v2 and v3 alike.

    Booleans and integers stay exact (uint64 max included); NaN and infinities become
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; complex numbers ``[real, imag]``. None
    means the dtype's zero.
    """
    dtype = np.dtype(dtype)
    if value is None:
        value = 0
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        return int(value)
    if dtype.kind == "f":
        return _float_json(float(value))
    if dtype.kind == "c":
        z = complex(value)
        return [_float_json(z.real), _float_json(z.imag)]
    return np.asarray(value).item()


def _float_json(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def is_label(layer: ServedLayer) -> bool:
    """True if ``layer`` is served as an NGFF label image: an integer segmentation (NGFF
    0.4/0.5: label values are integers). Other segmentations are served as plain images."""
    return layer.category == "segmentation" and layer.dtype.kind in "iu"


def image_layer_for(layers: Mapping[str, Any]) -> str | None:
    """The image that labels name as ``image-label.source``: the first color layer of
    ``layers`` (served or source layers: anything with a ``category``), or None. The server
    passes it to :func:`layer_documents` for every layer."""
    return next((name for name, layer in layers.items() if layer.category == "color"), None)


# -- NGFF ----------------------------------------------------------------------------------------


def _axes(layer: ServedLayer) -> list[JSON]:
    axes: list[JSON] = []
    for a in layer.additional_axes:
        axis: JSON = {"name": a.name, "type": a.type}
        if a.unit:
            axis["unit"] = a.unit
        axes.append(axis)
    axes.append({"name": "c", "type": "channel"})
    unit = layer.voxel_size.unit
    axes += [{"name": n, "type": "space", "unit": unit} for n in ("z", "y", "x")]
    return axes


def _multiscale(layer: ServedLayer, tree: Tree) -> JSON:
    datasets = [
        {
            "path": array.path,
            "coordinateTransformations": [
                {"type": "scale", "scale": list(array.scale)},
                {"type": "translation", "translation": list(array.translation)},
            ],
        }
        for array in layer.arrays.values()
    ]
    ms: JSON = {"name": layer.name, "axes": _axes(layer), "datasets": datasets}
    if tree == "zarr":  # NGFF 0.5 moved the version to attributes.ome
        ms = {"version": "0.4", **ms}
    return ms


def _dtype_range(dtype: np.dtype[Any]) -> tuple[float, float]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return (int(info.min), int(info.max))
    return (0, 1) if dtype.kind == "b" else (0.0, 1.0)


def _finite_pair(pair: tuple[float, float] | None) -> tuple[float, float] | None:
    if pair is None or not all(math.isfinite(float(v)) for v in pair):
        return None
    return (pair[0], pair[1])


def _clean(ch: ChannelInfo) -> ChannelInfo:
    """``ch`` with a colour that is "RRGGBB" or None and finite window and range or None."""
    match = _HEX_COLOR.fullmatch(ch.color or "")
    color = match.group(1).upper() if match else None
    return replace(ch, color=color, window=_finite_pair(ch.window), range=_finite_pair(ch.range))


def _omero(layer: ServedLayer) -> JSON:
    """OMERO rendering settings (NGFF 0.4 §omero: each channel needs ``color`` and all four
    of ``window`` min, max, start, end). Unknown ranges are the dtype's (0..1 for floats)."""
    n = layer.num_channels
    channels: list[JSON] = []
    for i in range(n):
        if i < len(layer.channels):
            ch = _clean(layer.channels[i])
        else:
            ch = ChannelInfo(layer.name if n == 1 else f"{layer.name} c{i}")
        default = "FFFFFF" if n == 1 else _CHANNEL_COLORS[i % len(_CHANNEL_COLORS)]
        lo, hi = ch.range or _dtype_range(layer.dtype)
        start, end = ch.window or (lo, hi)
        channels.append(
            {
                "label": ch.label,
                "color": ch.color or default,
                "window": {"min": lo, "max": hi, "start": start, "end": end},
                "active": ch.active,
                "inverted": ch.inverted,
            }
        )
    return {"channels": channels}


def ngff_attributes(layer: ServedLayer, tree: Tree, *, image_layer: str | None) -> JSON:
    """The NGFF attributes of a layer group.

    Parameters
    ----------
    layer
        The layer.
    tree
        ``"zarr"``: NGFF 0.4 ``.zattrs`` content; ``"zarr3"``: NGFF 0.5 ``{"ome": ...}``.
    image_layer
        For a label layer, the image its ``image-label.source`` points to (``../<name>``);
        None (or the layer itself) omits ``source``.

    Returns
    -------
    dict
        ``multiscales`` plus ``image-label`` (see :func:`is_label`) or ``omero``.
    """
    ome: JSON = {"multiscales": [_multiscale(layer, tree)]}
    if is_label(layer):
        # NGFF 0.5 label.schema: no version inside (ome.version holds it); 0.4 allows "0.4".
        # ``colors`` needs at least one entry if present, so it is left out.
        label: JSON = {"version": "0.4"} if tree == "zarr" else {}
        if image_layer is not None and image_layer != layer.name:
            label["source"] = {"image": f"../{image_layer}"}
        ome["image-label"] = label
    else:
        ome["omero"] = _omero(layer)
    if tree == "zarr":
        return ome
    return {"ome": {"version": "0.5", **ome}}


# -- documents by node ---------------------------------------------------------------------------


def _zarray(layer: ServedLayer, array: ServedArray) -> JSON:
    v2 = array.encodings["zarr"].v2
    if v2 is None:
        msg = f"layer {layer.name!r} mag {array.path}: the 'zarr' tree encoding lacks v2 fields"
        raise ValueError(msg)
    return {
        "zarr_format": 2,
        "shape": list(array.shape),
        "chunks": list(array.chunk_shape),
        "dtype": v2["dtype"],
        "compressor": copy.deepcopy(v2["compressor"]),
        "fill_value": fill_value_json(array.fill_value, array.dtype),
        "order": v2["order"],
        "filters": copy.deepcopy(v2["filters"]),
        "dimension_separator": "/",
    }


def _array_json(layer: ServedLayer, array: ServedArray) -> JSON:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(array.shape),
        "data_type": array.dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(array.chunk_shape)},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value_json(array.fill_value, array.dtype),
        "codecs": copy.deepcopy(list(array.encodings["zarr3"].v3_codecs)),
        "attributes": {},
        "dimension_names": list(layer.axis_names),
    }


def array_documents(layer: ServedLayer, array: ServedArray, tree: Tree) -> dict[str, JSON]:
    """The metadata files of a mag array by name: ``.zarray`` and ``.zattrs`` (with
    xarray's ``_ARRAY_DIMENSIONS``) for ``"zarr"``, ``zarr.json`` for ``"zarr3"``."""
    if tree == "zarr":
        return {
            ".zarray": _zarray(layer, array),
            ".zattrs": {"_ARRAY_DIMENSIONS": list(layer.axis_names)},
        }
    return {"zarr.json": _array_json(layer, array)}


def _layer_v2(layer: ServedLayer, image_layer: str | None) -> dict[str, JSON]:
    """The v2 layer subtree by key relative to the layer (without ``.zmetadata``)."""
    docs: dict[str, JSON] = {
        ".zgroup": zgroup(),
        ".zattrs": ngff_attributes(layer, "zarr", image_layer=image_layer),
    }
    for array in layer.arrays.values():
        for name, doc in array_documents(layer, array, "zarr").items():
            docs[f"{array.path}/{name}"] = doc
    return docs


def _consolidated(docs: dict[str, JSON]) -> JSON:
    return {"zarr_consolidated_format": 1, "metadata": docs}


def layer_documents(layer: ServedLayer, tree: Tree, *, image_layer: str | None) -> dict[str, JSON]:
    """The metadata files of a layer group by name.

    Parameters
    ----------
    layer
        The layer.
    tree
        ``"zarr"``: ``.zgroup``, ``.zattrs`` (NGFF 0.4) and ``.zmetadata`` (the layer's
        subtree); ``"zarr3"``: ``zarr.json`` (NGFF 0.5, its arrays consolidated inline).
    image_layer
        See :func:`ngff_attributes`; use :func:`image_layer_for` of the dataset.
    """
    if tree == "zarr":
        docs = _layer_v2(layer, image_layer)
        return {
            ".zgroup": docs[".zgroup"],
            ".zattrs": docs[".zattrs"],
            ".zmetadata": _consolidated(docs),
        }
    arrays = {a.path: _array_json(layer, a) for a in layer.arrays.values()}
    attrs = ngff_attributes(layer, "zarr3", image_layer=image_layer)
    return {"zarr.json": group_json(attrs, arrays)}


def _root_attributes(ds: ServedDataset) -> JSON:
    # A hint only: no NGFF keys, so NGFF readers see a plain group (not an image).
    return {"wkjupyter": {"dataset": ds.name, "layers": list(ds.layers)}}


def root_documents(ds: ServedDataset, tree: Tree) -> dict[str, JSON]:
    """The metadata files of the dataset root by name: ``.zgroup``, ``.zattrs`` and
    ``.zmetadata`` (the whole tree) for ``"zarr"``, ``zarr.json`` (the whole tree consolidated
    inline) for ``"zarr3"``. Labels point at :func:`image_layer_for`."""
    image_layer = image_layer_for(ds.layers)
    attrs = _root_attributes(ds)
    if tree == "zarr":
        docs: dict[str, JSON] = {".zgroup": zgroup(), ".zattrs": attrs}
        for name, layer in ds.layers.items():
            for key, doc in _layer_v2(layer, image_layer).items():
                docs[f"{name}/{key}"] = doc
        return {".zgroup": zgroup(), ".zattrs": attrs, ".zmetadata": _consolidated(docs)}
    nodes: dict[str, JSON] = {}
    for name, layer in ds.layers.items():
        nodes[name] = group_json(ngff_attributes(layer, "zarr3", image_layer=image_layer))
        for array in layer.arrays.values():
            nodes[f"{name}/{array.path}"] = _array_json(layer, array)
    return {"zarr.json": group_json(attrs, nodes)}


# -- datasource-properties.json ------------------------------------------------------------------


def _mag_offset(layer: ServedLayer, array: ServedArray, mag: Mag) -> Vec3:
    """The array's voxel offset in its mag, inverting :func:`~wkjupyter.server.view.served_array`:
    translation = (offset * f + (f - 1) / 2) * finest voxel size."""
    finest = layer.voxel_size.as_tuple()
    return Vec3.of(
        round((t / v - (f - 1) / 2) / f)
        for t, v, f in zip(array.translation[-3:], finest, (mag.z, mag.y, mag.x), strict=True)
    )


def _wk_layer(layer: ServedLayer, tree: Tree, voxel_size: VoxelSize) -> JSON | None:
    axis_order = {name: i for i, name in enumerate(layer.axis_names)}
    mags: dict[Mag, MagLevel] = {}
    for array in layer.arrays.values():
        mag = Mag(array.path)
        mags[mag] = MagLevel(
            mag,
            f"./{layer.name}/{array.path}",
            tree,
            axis_order=axis_order,
            offset=_mag_offset(layer, array, mag),
        )
    finest = next(iter(layer.arrays.values()))
    model = Layer(
        name=layer.name,
        # webKnossos segmentations are integer; a float one is served as an image.
        category="segmentation" if is_label(layer) else "color",
        dtype=layer.dtype,
        num_channels=layer.num_channels,
        bbox=layer.bbox,
        voxel_size=layer.voxel_size,
        mags=mags,
        channels=[_clean(ch) for ch in layer.channels],
        additional_axes=list(layer.additional_axes),
        largest_segment_id=layer.largest_segment_id if is_label(layer) else None,
    )
    try:
        d = model.to_wk(voxel_size)
    except UnsupportedFormatError:
        return None
    # The served arrays put extra axes first, not after c as webKnossos' own arrays do.
    for i, axis in enumerate(d.get("additionalAxes", [])):
        axis["index"] = i
    d["wkjupyter"]["fillValue"] = fill_value_json(finest.fill_value, layer.dtype)
    return d


def datasource_properties(ds: ServedDataset, tree: Tree) -> JSON:
    """The webKnossos ``datasource-properties.json`` of the served tree.

    Every layer is described as its served arrays, webKnossos-style: ``dataFormat`` ``zarr``
    or ``zarr3``, mag paths ``./<layer>/<mag>`` relative to the root, ``axisOrder`` indices
    into the served (*extra, c, z, y, x) dimensions, ``additionalAxes`` with the same indices,
    and an array that does not start at voxel 0 of its mag as ``wkjupyter.offset``.

    This format has one voxel size per dataset (``scale``): the dataset's, or the first
    served layer's if no served layer has it (a link may grant only some layers). A layer
    with a voxel size of its own (not expressible as mags: a 6 x 6 x 35 nm image beside an
    8 x 8 x 40 nm segmentation) is kept, described in its own voxels and placed exactly by
    an affine ``coordinateTransformations`` scale, as webKnossos' own explorer places such
    layers, with its exact voxel size in its ``wkjupyter.voxelSize``. It is not resampled
    (webKnossos resamples it on the fly for display, and volume-annotates it only when
    rendered without the transformation).

    Layers whose dtype has no webKnossos ``elementClass`` (e.g. bool, float16, complex) are
    left out: they stay readable in the Zarr tree but webKnossos could not load them.

    What the file cannot express, each layer with its own voxel size and each layer left out,
    is said in plain words in the top-level ``wkjupyter.notes`` list (which webKnossos
    ignores); the key is absent when there is nothing to say.
    """
    voxel_size = ds.voxel_size
    if ds.layers and all(layer.voxel_size != voxel_size for layer in ds.layers.values()):
        voxel_size = next(iter(ds.layers.values())).voxel_size
    layers, notes = [], []
    for layer in ds.layers.values():
        d = _wk_layer(layer, tree, voxel_size)
        if d is None:
            notes.append(
                f"layer {layer.name!r} is left out: its dtype, {layer.dtype.name}, has no "
                f"webKnossos elementClass; read it from the Zarr tree at ./{layer.name}/"
            )
            continue
        layers.append(d)
        note = voxel_size_note(layer.name, layer.voxel_size, voxel_size)
        if note is not None:
            notes.append(note)
    doc: JSON = {
        "id": {"name": ds.name, "team": ""},
        "scale": {"factor": voxel_size.to_xyz(), "unit": voxel_size.unit},
        "dataLayers": layers,
        "version": 1,
    }
    if notes:
        doc["wkjupyter"] = {"notes": notes}
    return doc


# -- listings ------------------------------------------------------------------------------------


def listing(entries: list[str], *, title: str) -> tuple[str, JSON]:
    """A directory listing as an HTML page and as JSON ``{"entries": [...]}``.

    Each entry (directories end with ``/``) becomes ``<a href="NAME">NAME</a>``, the href
    relative to the directory URL, which must end with ``/`` for browsers (fsspec joins
    hrefs onto the URL either way). Names are percent-encoded in the href (so no ``:`` reads
    as a scheme) and HTML-escaped everywhere.
    """
    items = []
    for entry in entries:
        is_dir = entry.endswith("/")
        name = entry[:-1] if is_dir else entry
        href = quote(name, safe="") + ("/" if is_dir else "")
        items.append(f'<li><a href="{html.escape(href)}">{html.escape(entry)}</a></li>')
    t = html.escape(title)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n<ul>\n"
        + "\n".join(items)
        + "\n</ul>\n</body>\n</html>\n"
    )
    return page, {"entries": list(entries)}


def root_entries(ds: ServedDataset, tree: Tree) -> list[str]:
    """The children of the dataset root: metadata files, then one ``<layer>/`` per layer."""
    files = [*_V2_GROUP_FILES] if tree == "zarr" else ["zarr.json"]
    return sorted([*files, "datasource-properties.json"]) + [f"{n}/" for n in ds.layers]


def layer_entries(layer: ServedLayer, tree: Tree) -> list[str]:
    """The children of a layer group: metadata files, then one ``<mag>/`` per array."""
    files = list(_V2_GROUP_FILES) if tree == "zarr" else ["zarr.json"]
    return files + [f"{a.path}/" for a in layer.arrays.values()]


def array_entries(tree: Tree) -> list[str]:
    """The metadata files of an array (chunks are not listed)."""
    return [".zarray", ".zattrs"] if tree == "zarr" else ["zarr.json"]
