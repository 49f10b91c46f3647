"""What the server shows of a dataset: its layers and mags as Zarr arrays (the served view).

A :class:`ServedArray` describes one mag as the array both trees serve: the source's chunk
grid in canonical (*extra, c, z, y, x) order, and per tree the chunk encoding: the stored
codec chain when the source's bytes can be passed through, else the transcode encoding.
Building it needs the opened reader (:func:`served_array`); everything else in
:mod:`wkjupyter.server.metadata` is a pure function of these values.

Geometry (docs/architecture.md §6, NGFF 0.4 coordinateTransformations): ``scale`` = voxel size ×
mag; ``translation`` places voxel 0 of the stored array, which starts at ``MagLevel.offset``
voxels of its mag, and follows ome-zarr-py's convention that coordinates are voxel centres,
so a level downsampled by f is shifted by (f - 1) / 2 finest voxels. The explorer reads that
shift back as offset 0, so a served dataset re-imports with the same geometry.

Shape: the stored array cut at the end of the layer's bounding box (:func:`served_shape`).
Writers may store more than the box (webknossos-libs pads Zarr v3 arrays to whole 1024³
shards and Zarr v2 arrays to whole chunks); clients size their reads and viewers their
initial view by the declared shape, so it must be the layer's. The chunk grid is kept, so
chunks still pass through; a chunk straddling the new edge is served whole, as Zarr wants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from wkjupyter.datasource import AdditionalAxis, Category, ChannelInfo, Layer
    from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize
    from wkjupyter.server._keys import Tree
    from wkjupyter.sources._base import MagArray

__all__ = [
    "CHUNK_CODECS",
    "ChunkCodec",
    "ServedArray",
    "ServedDataset",
    "ServedLayer",
    "TreeEncoding",
    "served_array",
    "served_shape",
    "transcode_encoding",
    "v2_encoding",
]

ChunkCodec = Literal["zstd", "gzip", "blosc", "raw"]
CHUNK_CODECS: tuple[ChunkCodec, ...] = ("zstd", "gzip", "blosc", "raw")


@dataclass(frozen=True, slots=True)
class TreeEncoding:
    """How chunks of one served array are encoded in one tree.

    Attributes
    ----------
    passthrough
        True: chunks are the source's stored bytes; False: decoded and re-encoded.
    v3_codecs
        The Zarr v3 ``codecs`` list (used by the ``zarr3`` tree).
    v2
        The Zarr v2 ``.zarray`` fields ``dtype``, ``compressor``, ``filters`` and ``order``
        (used by the ``zarr`` tree), or None in the ``zarr3`` tree's encoding.
    """

    passthrough: bool
    v3_codecs: tuple[dict[str, Any], ...]
    v2: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ServedArray:
    """One mag of a layer as the served Zarr array.

    ``path`` is the mag's webKnossos name (``"1"``, ``"2-2-1"``); ``shape`` (the declared
    shape, :func:`served_shape`) and ``chunk_shape`` (the source's) are canonical
    (*extra, c, z, y, x); ``scale`` and ``translation`` have one entry per axis (1 and 0 for
    non-spatial axes). ``encodings`` holds a :class:`TreeEncoding` for each of ``"zarr"`` and
    ``"zarr3"``.
    """

    path: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    encodings: dict[Tree, TreeEncoding]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunk_shape, strict=True))


@dataclass(frozen=True, slots=True)
class ServedLayer:
    """A layer as a served multiscale image: its arrays ordered finest first."""

    name: str
    category: Category
    dtype: np.dtype[Any]
    num_channels: int
    bbox: BoundingBox
    voxel_size: VoxelSize
    arrays: dict[str, ServedArray]
    channels: tuple[ChannelInfo, ...] = ()
    additional_axes: tuple[AdditionalAxis, ...] = ()
    largest_segment_id: int | None = None

    @property
    def axis_names(self) -> tuple[str, ...]:
        return (*(a.name for a in self.additional_axes), "c", "z", "y", "x")


@dataclass(frozen=True, slots=True)
class ServedDataset:
    """A dataset (or what a link grants of it) as served: a name and its layers."""

    name: str
    voxel_size: VoxelSize
    layers: dict[str, ServedLayer]


def transcode_encoding(
    dtype: np.dtype[Any], codec: ChunkCodec = "zstd", level: int = 1
) -> dict[Tree, TreeEncoding]:
    """The encoding of decoded-and-re-encoded chunks: C order, little-endian, ``codec``.

    The same bytes are valid in both trees (v2 ``compressor`` and v3 ``bytes`` + compressor
    describe one stream), so one encoded chunk serves both.
    """
    if codec not in CHUNK_CODECS:
        msg = f"unknown chunk codec {codec!r}; choose one of {', '.join(CHUNK_CODECS)}"
        raise ValueError(msg)
    little = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    v3: list[dict[str, Any]] = [
        {"name": "bytes", "configuration": {"endian": "little"} if dtype.itemsize > 1 else {}}
    ]
    compressor: dict[str, Any] | None
    if codec == "zstd":
        v3.append({"name": "zstd", "configuration": {"level": level, "checksum": False}})
        compressor = {"id": "zstd", "level": level}
    elif codec == "gzip":
        v3.append({"name": "gzip", "configuration": {"level": level}})
        compressor = {"id": "gzip", "level": level}
    elif codec == "blosc":
        conf = {"cname": "lz4", "clevel": level, "shuffle": "shuffle", "typesize": dtype.itemsize,
                "blocksize": 0}  # fmt: skip
        v3.append({"name": "blosc", "configuration": conf})
        compressor = {"id": "blosc", "cname": "lz4", "clevel": level, "shuffle": 1, "blocksize": 0}
    else:  # raw
        compressor = None
    v2 = {"dtype": little.str, "compressor": compressor, "filters": None, "order": "C"}
    return {
        "zarr": TreeEncoding(False, tuple(v3), v2),
        "zarr3": TreeEncoding(False, tuple(v3)),
    }


def v2_encoding(codecs: list[dict[str, Any]], dtype: np.dtype[Any]) -> dict[str, Any] | None:
    """The Zarr v2 ``.zarray`` fields describing the same bytes as a v3 codec chain, if any.

    Zarr v2 has C or F order, a byte order in the dtype and at most one compressor, so only
    ``[transpose(reversed)?, bytes, gzip|zstd|blosc?]`` translates; ``None`` otherwise.
    """
    rest = list(codecs)
    order = "C"
    if rest and rest[0].get("name") == "transpose":
        perm = [int(i) for i in rest[0]["configuration"]["order"]]
        if perm != list(range(len(perm)))[::-1]:
            return None
        order, rest = "F", rest[1:]
    if not rest or rest[0].get("name") != "bytes":
        return None
    endian = (rest[0].get("configuration") or {}).get("endian", "little")
    served = dtype.newbyteorder("<" if endian == "little" else ">") if dtype.itemsize > 1 else dtype
    rest = rest[1:]
    if len(rest) > 1:
        return None
    compressor: dict[str, Any] | None = None
    if rest:
        name, conf = rest[0].get("name"), dict(rest[0].get("configuration") or {})
        if name == "gzip":
            compressor = {"id": "gzip", "level": int(conf.get("level", 5))}
        elif name == "zstd":
            # A checksum is part of the zstd frame; any zstd decoder verifies it unasked.
            compressor = {"id": "zstd", "level": int(conf.get("level", 0))}
        elif name == "blosc":
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[
                conf.get("shuffle", "shuffle")
            ]
            compressor = {"id": "blosc", "cname": conf.get("cname", "lz4"),
                          "clevel": int(conf.get("clevel", 5)), "shuffle": shuffle,
                          "blocksize": int(conf.get("blocksize", 0))}  # fmt: skip
        else:
            return None
    return {"dtype": served.str, "compressor": compressor, "filters": None, "order": order}


def served_shape(
    stored: tuple[int, ...], bbox: BoundingBox, mag: Mag, offset: Vec3
) -> tuple[int, ...]:
    """The declared shape of a mag: its ``stored`` (*extra, c, z, y, x) shape cut at the end
    of the layer's box.

    Parameters
    ----------
    stored
        The reader's canonical shape.
    bbox
        The layer's bounding box, in mag-1 voxels (z, y, x).
    mag, offset
        The mag, and where its array's voxel 0 lies, in voxels of that mag.

    Returns
    -------
    tuple of int
        ``stored`` with each spatial extent ``min(stored, ceil(bbox.end / mag) - offset)``
        but at least 1: an array never grows, and one wholly past its box keeps one voxel
        per axis (a valid image for every viewer). Non-spatial axes are unchanged. Where
        the box comes from the array itself (OME-Zarr, N5, precomputed), this is the
        stored shape.
    """
    end = bbox.end.ceildiv(mag.vec) - offset
    spatial = tuple(min(s, max(1, e)) for s, e in zip(stored[-3:], end, strict=True))
    return (*stored[:-3], *spatial)


def served_array(
    layer: Layer, mag: Mag, array: MagArray, codec: ChunkCodec = "zstd", level: int = 1
) -> ServedArray:
    """Describe the reader ``array`` of ``layer``'s ``mag`` as a served array (its shape
    cut to the layer's box: :func:`served_shape`)."""
    offset = layer.mags[mag].offset
    n_extra = len(array.shape) - 4
    vs = layer.voxel_size.scaled(mag)
    finest = layer.voxel_size.as_tuple()
    spatial_translation = tuple(
        (o * f + (f - 1) / 2) * v
        for o, f, v in zip(offset.as_tuple(), (mag.z, mag.y, mag.x), finest, strict=True)
    )
    scale = (*([1.0] * (n_extra + 1)), *vs)
    translation = (*([0.0] * (n_extra + 1)), *spatial_translation)
    transcode = transcode_encoding(array.dtype, codec, level)
    encodings = dict(transcode)
    passthrough = array.passthrough_codec
    if passthrough is not None:
        chain = list(passthrough["codecs"])
        encodings["zarr3"] = TreeEncoding(True, tuple(chain))
        v2 = v2_encoding(chain, array.dtype)
        if v2 is not None:
            encodings["zarr"] = TreeEncoding(True, tuple(chain), v2)
    return ServedArray(
        path=str(mag),
        shape=served_shape(tuple(array.shape), layer.bbox, mag, offset),
        chunk_shape=tuple(array.chunk_shape),
        dtype=np.dtype(array.dtype),
        fill_value=array.fill_value,
        scale=tuple(float(s) for s in scale),
        translation=tuple(float(t) for t in translation),
        encodings=encodings,
    )
