"""Neuroglancer precomputed volumes (formats.md §3; neuroglancer ``volume.rst``).

A dataset is a directory with an ``info`` JSON file. The file lists scales, each in its own
directory (``key``) with its own resolution, size, voxel offset, chunk size and encoding.
Every scale becomes a mag of one layer. The mag is the scale's resolution divided by the
first scale's, and it must be an integer on every axis. Chunks are unsharded files named
``{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` (absolute voxel coordinates, clipped at the volume
edge; cloud-volume adds ``.gz``), or sit in ``neuroglancer_uint64_sharded_v1`` shard files
read with Range requests (:mod:`._sharding`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from wkjupyter.datasource import Layer, MagLevel
from wkjupyter.errors import InvalidKeyError, MetadataError, UnsupportedFormatError
from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize
from wkjupyter.sources._base import MagArray, RawChunk, RawOrDecoded, run_cpu
from wkjupyter.sources._precomputed_codecs import (
    check_encoding,
    decode_chunk,
    gunzip,
    is_gzip,
)
from wkjupyter.sources._sharding import ShardedReader, ShardingSpec, compressed_morton_code

if TYPE_CHECKING:
    from wkjupyter.sources._fs import Store

__all__ = ["PrecomputedArray", "PrecomputedInfo", "Scale", "explore", "open_array", "parse_info"]

FORMAT: Final = "neuroglancerPrecomputed"
_DATA_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
XYZ = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Scale:
    """One entry of ``info["scales"]``; vectors in x, y, z order as in the file."""

    key: str
    size: XYZ
    resolution: tuple[float, float, float]
    voxel_offset: XYZ
    chunk_size: XYZ
    encoding: str
    block_size: XYZ | None = None
    sharding: ShardingSpec | None = None

    @property
    def grid_shape(self) -> XYZ:
        gx, gy, gz = (-(-s // c) for s, c in zip(self.size, self.chunk_size, strict=True))
        return gx, gy, gz


@dataclass(frozen=True, slots=True)
class PrecomputedInfo:
    """A parsed ``info`` file with its mags (one per scale, in the file's order)."""

    url: str
    type: str  # "image" | "segmentation"
    dtype: np.dtype[Any]
    num_channels: int
    scales: tuple[Scale, ...]
    mags: tuple[Mag, ...]


def parse_info(doc: Any, url: str) -> PrecomputedInfo:
    """Validate an ``info`` document (``url`` names it in errors) and derive the mags."""
    if not isinstance(doc, dict):
        msg = f"{url!r} must be a JSON object, got {type(doc).__name__}; fix the info file"
        raise MetadataError(msg)
    data_type = doc.get("data_type")
    if not isinstance(data_type, str):
        msg = f"{url!r}: 'data_type' is missing or not a string ({data_type!r}); fix the info file"
        raise MetadataError(msg)
    if data_type not in _DATA_TYPES:
        msg = (
            f"{url!r}: data_type {data_type!r} is not supported; precomputed volumes use "
            f"{', '.join(_DATA_TYPES)}"
        )
        raise UnsupportedFormatError(msg)
    dtype = np.dtype(data_type)
    num_channels = doc.get("num_channels", 1)
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        msg = f"{url!r}: num_channels must be a positive integer, got {num_channels!r}"
        raise MetadataError(msg)
    raw_scales = doc.get("scales")
    if not isinstance(raw_scales, list) or not raw_scales:
        msg = f"{url!r}: 'scales' must be a non-empty list of scale objects; fix the info file"
        raise MetadataError(msg)
    scales = tuple(_parse_scale(s, i, url) for i, s in enumerate(raw_scales))
    for s in scales:
        check_encoding(s.encoding, dtype, num_channels, f"{url!r} scale {s.key!r}")
    kind = doc.get("type")
    if kind is None:  # not in the schema's required list for old files: guess
        seg = scales[0].encoding == "compressed_segmentation" or dtype.name == "uint64"
        kind = "segmentation" if seg else "image"
    if kind not in ("image", "segmentation"):
        msg = f"{url!r}: type {kind!r} is not a volume type; expected 'image' or 'segmentation'"
        raise MetadataError(msg)
    mags = tuple(_mag_of(s, scales[0], url) for s in scales)
    return PrecomputedInfo(url, kind, dtype, num_channels, scales, mags)


def _parse_scale(d: Any, i: int, url: str) -> Scale:
    where = f"{url!r}: scale {i}"
    try:
        if not isinstance(d, dict):
            raise TypeError(f"expected an object, got {type(d).__name__}")
        key = d["key"]
        if not isinstance(key, str) or not key.strip("/"):
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        chunk_sizes = d["chunk_sizes"]
        if not isinstance(chunk_sizes, list) or not chunk_sizes:
            raise ValueError(f"chunk_sizes must be a non-empty list, got {chunk_sizes!r}")
        block = d.get("compressed_segmentation_block_size")
        sharding = d.get("sharding")
        scale = Scale(
            key=key.strip("/"),
            size=_xyz(d["size"], "size", 0),
            resolution=_resolution(d["resolution"]),
            voxel_offset=_xyz(d.get("voxel_offset", [0, 0, 0]), "voxel_offset", None),
            chunk_size=_xyz(chunk_sizes[0], "chunk_sizes[0]", 1),
            encoding=str(d["encoding"]),
            block_size=_xyz(block, "compressed_segmentation_block_size", 1) if block else None,
            sharding=ShardingSpec.from_json(sharding, url) if sharding is not None else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
        msg = f"{where} is malformed ({detail}); fix the info file"
        raise MetadataError(msg) from err
    if scale.encoding == "compressed_segmentation" and scale.block_size is None:
        msg = f"{where} ({scale.key!r}) lacks compressed_segmentation_block_size"
        raise MetadataError(msg)
    return scale


def _xyz(value: Any, name: str, minimum: int | None) -> XYZ:
    ok = isinstance(value, list) and len(value) == 3
    if ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        ok = all(float(v).is_integer() and (minimum is None or v >= minimum) for v in value)
    else:
        ok = False
    if not ok:
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be three integers{bound} (x, y, z), got {value!r}")
    return int(value[0]), int(value[1]), int(value[2])


def _resolution(value: Any) -> tuple[float, float, float]:
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) and v > 0 for v in value)
    ):
        raise ValueError(f"resolution must be three positive numbers (x, y, z), got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


def _mag_of(scale: Scale, first: Scale, url: str) -> Mag:
    factors = [r / f for r, f in zip(scale.resolution, first.resolution, strict=True)]
    rounded = [round(f) for f in factors]
    if any(
        r < 1 or not math.isclose(f, r, rel_tol=1e-3) for f, r in zip(factors, rounded, strict=True)
    ):
        msg = (
            f"{url!r}: scale {scale.key!r} has resolution {list(scale.resolution)}, which is "
            f"not an integer multiple of the first scale's {list(first.resolution)} "
            f"(factors {[round(f, 4) for f in factors]}); mags must be integer downsampling "
            "factors of the finest scale, which must come first"
        )
        raise UnsupportedFormatError(msg)
    return Mag.from_xyz(rounded)


def layer_name(url: str) -> str:
    """A URL-safe layer name from the dataset URL's last path segment."""
    last = url.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("_.") or "layer"


async def explore(store: Store) -> list[Layer] | None:
    """One layer for the precomputed volume at ``store``; ``None`` without an ``info`` file.

    An ``info`` that describes something else (meshes, skeletons, annotations) is not a
    volume and also gives ``None``.
    """
    doc = await store.read_json("info")
    if doc is None:
        return None
    kind = doc.get("@type") if isinstance(doc, dict) else None
    if kind is not None and kind != "neuroglancer_multiscale_volume":
        return None
    info = parse_info(doc, store.join("info"))
    first = info.scales[0]
    levels = {}
    for scale, mag in zip(info.scales, info.mags, strict=True):
        if mag in levels:
            continue  # a duplicate resolution: Neuroglancer also uses the first
        levels[mag] = MagLevel(
            mag=mag,
            path=store.url,
            format=FORMAT,
            offset=Vec3.from_xyz(scale.voxel_offset),
            hints={"scale": scale.key},
        )
    return [
        Layer(
            name=layer_name(store.url),
            category="segmentation" if info.type == "segmentation" else "color",
            dtype=info.dtype,
            num_channels=info.num_channels,
            bbox=BoundingBox(Vec3.from_xyz(first.voxel_offset), Vec3.from_xyz(first.size)),
            voxel_size=VoxelSize.from_xyz(first.resolution, "nanometer"),
            mags=levels,
            credential=store.credential,
        )
    ]


async def open_array(store: Store, level: MagLevel) -> PrecomputedArray:
    """The reader of one scale; ``store`` is the dataset root (where ``info`` is).

    The scale is found by ``level.hints["scale"]`` (its key), else by ``level.mag``.
    """
    url = store.join("info")
    doc = await store.read_json("info")
    if doc is None:
        msg = f"{url!r} does not exist; is {store.url!r} still a precomputed dataset?"
        raise MetadataError(msg)
    info = parse_info(doc, url)
    key = level.hints.get("scale")
    for scale, mag in zip(info.scales, info.mags, strict=True):
        if (scale.key == str(key).strip("/")) if key is not None else (mag == level.mag):
            return PrecomputedArray(store, info, scale)
    wanted = f"key {key!r}" if key is not None else f"mag {str(level.mag)!r}"
    msg = f"{url!r} has no scale with {wanted}; explore the dataset again"
    raise MetadataError(msg)


class PrecomputedArray(MagArray):
    """One scale as a (c, z, y, x) array of stored voxels starting at ``voxel_offset``.

    Chunks are ``(num_channels, *chunk_size reversed)``; edge chunks are clipped.
    """

    def __init__(self, store: Store, info: PrecomputedInfo, scale: Scale) -> None:
        self.info = info
        self.scale = scale
        self.scale_store = store.child(scale.key)
        self.url = self.scale_store.url
        sx, sy, sz = scale.size
        cx, cy, cz = scale.chunk_size
        self.shape = (info.num_channels, sz, sy, sx)
        self.chunk_shape = (info.num_channels, cz, cy, cx)
        self.dtype = info.dtype
        self.fill_value = 0
        self._sharded = None
        if scale.sharding is not None:
            # Encoded chunks are about the raw size at most (gzip and cseg add little).
            raw_bytes = math.prod(self.chunk_shape) * self.dtype.itemsize
            limit = 2 * raw_bytes + (1 << 20)
            self._sharded = ShardedReader(self.scale_store, scale.sharding, max_chunk_bytes=limit)
        self._gz_first = False  # cloud-volume's ".gz" files seen: try that name first

    def _chunk_box(self, index: tuple[int, ...]) -> tuple[XYZ, XYZ]:
        """Absolute (x, y, z) start and clipped size of grid cell ``index`` (c, z, y, x)."""
        if (
            len(index) != 4
            or index[0] != 0
            or any(not 0 <= i < g for i, g in zip(index, self.grid_shape, strict=True))
        ):
            msg = f"chunk index {index} is outside the grid {self.grid_shape} of {self.url!r}"
            raise InvalidKeyError(msg)
        s = self.scale
        g = (index[3], index[2], index[1])
        start = [o + i * c for o, i, c in zip(s.voxel_offset, g, s.chunk_size, strict=True)]
        end = [
            min(a + c, o + n)
            for a, c, o, n in zip(start, s.chunk_size, s.voxel_offset, s.size, strict=True)
        ]
        size = [b - a for a, b in zip(start, end, strict=True)]
        return (start[0], start[1], start[2]), (size[0], size[1], size[2])

    async def _fetch(self, index: tuple[int, ...]) -> tuple[bytes, str] | None:
        """The stored bytes of a chunk and the URL they came from; ``None`` if absent."""
        start, size = self._chunk_box(index)
        if self._sharded is not None:
            g = (index[3], index[2], index[1])
            chunk_id = compressed_morton_code(g, self.scale.grid_shape)
            data = await self._sharded.read(chunk_id)
            return None if data is None else (data, f"{self.url}#chunk={chunk_id}")
        name = "_".join(f"{a}-{a + n}" for a, n in zip(start, size, strict=True))
        # cloud-volume writes "name.gz" locally (formats.md §3); try the name seen last first.
        names = (name + ".gz", name) if self._gz_first else (name, name + ".gz")
        for i, key in enumerate(names):
            data = await self.scale_store.get(key)
            if data is not None:
                if i:
                    self._gz_first = not self._gz_first
                if key.endswith(".gz"):
                    data = await run_cpu(gunzip, data, self.scale_store.join(key))
                return data, self.scale_store.join(key)
        return None

    async def read_chunk(self, index: tuple[int, ...]) -> np.ndarray[Any, Any] | None:
        """The chunk at grid ``index`` (c, z, y, x), clipped; ``None`` if not stored."""
        fetched = await self._fetch(index)
        if fetched is None:
            return None
        _, (x, y, z) = self._chunk_box(index)
        shape = (x, y, z, self.info.num_channels)
        s = self.scale
        return await run_cpu(
            decode_chunk, fetched[0], s.encoding, shape, self.dtype, s.block_size, fetched[1]
        )

    async def raw_or_decoded(self, index: tuple[int, ...]) -> RawOrDecoded | None:
        """Stored bytes of full-size chunks of a pass-through scale (``raw_chunk`` declines
        only chunks that are not stored), else decoded data: one fetch either way."""
        _, size = self._chunk_box(index)
        if self.passthrough_codec is None or size != self.scale.chunk_size:
            return await self.read_chunk(index)
        return await self.raw_chunk(index)

    async def raw_chunk(self, index: tuple[int, ...]) -> RawChunk | None:
        """Stored bytes of an unsharded, full-size ``raw`` chunk, valid for
        :attr:`passthrough_codec`; ``None`` for every other chunk (decode those).

        Gzip-wrapped files (``.gz``, or ``Content-Encoding`` bytes from S3/GCS) are
        unwrapped, so one codec chain describes every chunk of the array.
        """
        if self.passthrough_codec is None:
            return None
        _, size = self._chunk_box(index)
        if size != self.scale.chunk_size:
            return None  # an edge chunk is clipped; Zarr chunks are full size
        fetched = await self._fetch(index)
        if fetched is None:
            return None
        data, url = fetched
        expected = math.prod(self.chunk_shape) * self.dtype.itemsize
        if len(data) != expected and is_gzip(data):
            data = await run_cpu(gunzip, data, url)
        if len(data) != expected:
            msg = f"chunk {url!r} has {len(data)} bytes, expected {expected}; it is corrupt"
            raise MetadataError(msg)
        return RawChunk(data)

    @property
    def passthrough_codec(self) -> dict[str, Any] | None:
        """``{"codecs": [bytes(little)]}`` for unsharded ``raw`` scales, else ``None``.

        volume.rst: raw chunks are little-endian Fortran-ordered (x, y, z, c), which is the
        byte order of a C-ordered (c, z, y, x) array, so no ``transpose`` codec is needed.
        """
        if self.scale.encoding != "raw" or self._sharded is not None:
            return None
        return {"codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}
