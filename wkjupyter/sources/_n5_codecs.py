"""N5 dataset attributes, block headers and compressions: pure functions, no I/O.

Follows the N5 specification (saalfeldlab/n5 ``README.md``, version 4.0.0) and the Java
codecs it names (``GzipCompression``, ``Bzip2Compression``, ``XzCompression``,
``Lz4Compression``, n5-blosc, n5-zstandard). ``dimensions`` and ``blockSize`` are listed
x-first and data is big-endian, column-major: the bytes of a block are the C-order bytes of
an array shaped like its dimensions reversed.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import numpy as np
import xxhash

from wkjupyter.errors import MetadataError, UnsupportedFormatError

__all__ = [
    "LZ4_BLOCK_MAGIC",
    "BlockHeader",
    "Compression",
    "DatasetAttributes",
    "decode_block",
    "format_block_header",
    "lz4_block_decode",
    "parse_block_header",
    "parse_dataset_attributes",
]

MODE_DEFAULT: Final = 0
MODE_VARLENGTH: Final = 1
MODE_OBJECT: Final = 2

DATA_TYPES: Final = frozenset(
    f"{kind}{bits}" for kind in ("uint", "int") for bits in (8, 16, 32, 64)
) | {"float32", "float64"}
COMPRESSIONS: Final = ("raw", "gzip", "bzip2", "xz", "lz4", "blosc", "zstd")


# -- block headers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The header of a stored N5 block.

    Attributes
    ----------
    mode
        0 default, 1 varlength (carries an element count), 2 object (no dimensions).
    shape
        The block's actual dimensions, x-first (N5 spec: truncated edge blocks carry their
        smaller size here); empty for object blocks.
    num_elements
        The element count of varlength and object blocks, else ``None``.
    """

    mode: int
    shape: tuple[int, ...] = ()
    num_elements: int | None = None

    @property
    def nbytes(self) -> int:
        """The length of the header in bytes."""
        dims = 0 if self.mode == MODE_OBJECT else 2 + 4 * len(self.shape)
        return 2 + dims + (4 if self.mode != MODE_DEFAULT else 0)

    @property
    def size(self) -> int:
        """The number of elements the block holds."""
        if self.num_elements is not None:
            return self.num_elements
        return int(np.prod(self.shape, dtype=np.int64))


def parse_block_header(buf: bytes | memoryview) -> BlockHeader:
    """Parse the header at the start of a block's bytes.

    N5 spec: u16 mode; unless mode 2, u16 ndim and ndim u32 dimensions; unless mode 0, a u32
    element count; all big-endian. Raises ``ValueError`` when the bytes are too short or the
    mode is unknown.
    """
    if len(buf) < 2:
        msg = f"the block is {len(buf)} bytes long, too short for an N5 block header"
        raise ValueError(msg)
    (mode,) = struct.unpack_from(">H", buf, 0)
    if mode > MODE_OBJECT:
        msg = f"unknown N5 block mode {mode} (known: 0 default, 1 varlength, 2 object)"
        raise ValueError(msg)
    pos, shape = 2, ()
    if mode != MODE_OBJECT:
        if len(buf) < 4:
            msg = "the block ends inside its header"
            raise ValueError(msg)
        (ndim,) = struct.unpack_from(">H", buf, 2)
        pos = 4 + 4 * ndim
        if len(buf) < pos:
            msg = f"the block ends inside its header ({ndim} dimensions declared)"
            raise ValueError(msg)
        shape = struct.unpack_from(f">{ndim}I", buf, 4)
    num_elements = None
    if mode != MODE_DEFAULT:
        if len(buf) < pos + 4:
            msg = "the block ends before its element count"
            raise ValueError(msg)
        (num_elements,) = struct.unpack_from(">I", buf, pos)
    return BlockHeader(mode, tuple(shape), num_elements)


def format_block_header(header: BlockHeader) -> bytes:
    """The bytes of ``header``; the inverse of :func:`parse_block_header`."""
    out = struct.pack(">H", header.mode)
    if header.mode != MODE_OBJECT:
        out += struct.pack(f">H{len(header.shape)}I", len(header.shape), *header.shape)
    if header.mode != MODE_DEFAULT:
        out += struct.pack(">I", header.num_elements or 0)
    return out


# -- compressions ---------------------------------------------------------------------------

# lz4-java LZ4BlockOutputStream framing (N5 Lz4Compression): per block the magic, a token
# (method | level), then little-endian i32 compressed length, decompressed length and the
# xxhash32 (seed 0x9747b28c) of the decompressed bytes masked to 28 bits
# (StreamingXXHash32.asChecksum); a block with both lengths 0 ends the stream.
LZ4_BLOCK_MAGIC: Final = b"LZ4Block"
_LZ4_HEADER: Final = struct.Struct("<8sBiii")
_LZ4_METHOD_RAW: Final = 0x10
_LZ4_METHOD_LZ4: Final = 0x20
_LZ4_LEVEL_BASE: Final = 10
LZ4_SEED: Final = 0x9747B28C


# A module attribute so tests can swap in the specification's reference implementation.
xxh32: Callable[[bytes, int], int] | None = xxhash.xxh32_intdigest


def lz4_block_decode(data: bytes | memoryview, nbytes: int) -> bytes:
    """Decode the first ``nbytes`` (or more) bytes of an lz4-java ``LZ4BlockOutputStream``.

    Reading stops once ``nbytes`` are decoded, as N5's Java reader consumes only the bytes
    of the block's elements, or at the end-of-stream block. ``ValueError`` on corruption.
    """
    import lz4.block

    view = memoryview(data)
    parts: list[bytes] = []
    total = pos = 0
    while total < nbytes:  # like N5's reader, stop once the block's bytes are in
        if pos + _LZ4_HEADER.size > len(view):
            msg = f"the lz4 stream is truncated at byte {pos} (decoded {total} of {nbytes})"
            raise ValueError(msg)
        magic, token, clen, olen, check = _LZ4_HEADER.unpack_from(view, pos)
        if magic != LZ4_BLOCK_MAGIC:
            msg = f"no 'LZ4Block' magic at byte {pos}: not an lz4-java block stream"
            raise ValueError(msg)
        method, level = token & 0xF0, _LZ4_LEVEL_BASE + (token & 0x0F)
        if (
            method not in (_LZ4_METHOD_RAW, _LZ4_METHOD_LZ4)
            or olen > 1 << level
            or olen < 0
            or clen < 0
            or (olen == 0) != (clen == 0)
            or (method == _LZ4_METHOD_RAW and olen != clen)
        ):
            msg = f"corrupt lz4 block header at byte {pos}"
            raise ValueError(msg)
        pos += _LZ4_HEADER.size
        if olen == 0:  # the end-of-stream block, early: the caller sees too few bytes
            break
        payload = view[pos : pos + clen]
        if len(payload) < clen:
            msg = f"the lz4 stream is truncated inside the block at byte {pos}"
            raise ValueError(msg)
        if method == _LZ4_METHOD_RAW:
            chunk = bytes(payload)
        else:
            try:
                chunk = lz4.block.decompress(payload, uncompressed_size=olen)
            except lz4.block.LZ4BlockError as err:
                msg = f"corrupt lz4 block at byte {pos}: {err}"
                raise ValueError(msg) from err
        if len(chunk) != olen:
            msg = f"the lz4 block at byte {pos} decoded to {len(chunk)} bytes, not {olen}"
            raise ValueError(msg)
        if xxh32 is not None and (xxh32(chunk, LZ4_SEED) & 0xFFFFFFF) != (check & 0xFFFFFFFF):
            msg = f"checksum mismatch in the lz4 block at byte {pos}"
            raise ValueError(msg)
        parts.append(chunk)
        total += olen
        pos += clen
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Compression:
    """An N5 ``compression`` object: its ``type`` and the rest of its fields."""

    type: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def decompress(self, data: bytes | memoryview, nbytes: int) -> bytes | memoryview:
        """Decompress a block body expected to hold ``nbytes`` bytes (``ValueError``)."""
        t = self.type
        try:
            if t == "raw":
                return data
            if t == "gzip":
                # wbits 32+15 accepts both gzip and zlib streams (GzipCompression useZlib).
                return zlib.decompress(data, 47, max(nbytes, 1))
            if t == "bzip2":
                return bz2.decompress(data)
            if t == "xz":
                return lzma.decompress(data)
            if t == "lz4":
                return lz4_block_decode(data, nbytes)
            if t == "blosc":
                import numcodecs.blosc

                return numcodecs.blosc.decompress(data)  # type: ignore[no-any-return]
            if t == "zstd":
                import numcodecs.zstd

                return numcodecs.zstd.decompress(data)  # type: ignore[no-any-return]
        except ValueError:
            raise
        except Exception as err:  # zlib.error, OSError, LZMAError, RuntimeError (numcodecs)
            msg = f"{t} decompression failed: {type(err).__name__}: {err}"
            raise ValueError(msg) from err
        raise AssertionError(t)  # pragma: no cover - parse_compression checked the type

    def zarr_codecs(self, dtype: np.dtype[Any]) -> list[dict[str, Any]] | None:
        """The Zarr v3 compressor codecs equal to this compression, or ``None``.

        zarr-extensions ``codecs/n5_default``: an N5 block body is bytes(big) followed by
        the compressor. Only compressions Zarr v3 defines qualify; gzip only as gzip (not
        zlib) streams.
        """
        try:
            return self._zarr_codecs(dtype)
        except (TypeError, ValueError):  # a malformed level or shuffle: decode instead
            return None

    def _zarr_codecs(self, dtype: np.dtype[Any]) -> list[dict[str, Any]] | None:
        c, t = self.config, self.type
        if t == "raw":
            return []
        if t == "gzip" and not c.get("useZlib", False):
            level = int(c.get("level", -1))
            return [{"name": "gzip", "configuration": {"level": level if 0 <= level <= 9 else 6}}]
        if t == "zstd":
            return [
                {
                    "name": "zstd",
                    "configuration": {"level": int(c.get("level", 0)), "checksum": False},
                }
            ]
        if t == "blosc":
            shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(
                int(c.get("shuffle", 1)), "shuffle"
            )
            config = {
                "cname": str(c.get("cname", "lz4")),
                "clevel": int(c.get("clevel", 5)),
                "shuffle": shuffle,
                "typesize": dtype.itemsize,
                "blocksize": int(c.get("blocksize", 0)),
            }
            return [{"name": "blosc", "configuration": config}]
        return None


def parse_compression(attrs: Mapping[str, Any], url: str) -> Compression:
    """The compression of a dataset's attributes (``compression`` or legacy ``compressionType``)."""
    raw = attrs.get("compression")
    if raw is None:
        legacy = attrs.get("compressionType", "raw")  # N5 < 1.0: a bare type name
        raw = {"type": legacy}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
        msg = f"{url!r}: 'compression' must be an object with a string 'type', got {raw!r}"
        raise MetadataError(msg)
    kind = raw["type"].lower()
    if kind not in COMPRESSIONS:
        msg = (
            f"{url!r} uses the N5 compression {raw['type']!r}, which wkjupyter cannot read; "
            f"supported are {', '.join(COMPRESSIONS)}"
        )
        raise UnsupportedFormatError(msg)
    return Compression(kind, {k: v for k, v in raw.items() if k != "type"})


# -- dataset attributes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetAttributes:
    """The attributes that make an N5 group a dataset (all lists x-first)."""

    dimensions: tuple[int, ...]
    block_size: tuple[int, ...]
    data_type: str
    compression: Compression

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored (big-endian) dtype."""
        return np.dtype(self.data_type).newbyteorder(">")

    @property
    def ndim(self) -> int:
        return len(self.dimensions)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-d // b) for d, b in zip(self.dimensions, self.block_size, strict=True))


def is_dataset(attrs: Any) -> TypeGuard[Mapping[str, Any]]:
    """Whether an ``attributes.json`` document describes a dataset (not only a group).

    Only datasets have ``dimensions`` (BigDataViewer setup groups do carry a ``dataType``);
    :func:`parse_dataset_attributes` then insists on the rest.
    """
    return isinstance(attrs, Mapping) and "dimensions" in attrs


def parse_dataset_attributes(attrs: Mapping[str, Any], url: str) -> DatasetAttributes:
    """Validate a dataset's ``attributes.json`` (``url`` names it in errors)."""
    data_type = attrs.get("dataType")
    if attrs.get("isLabelMultiset"):  # Paintera/imglib2 label multisets: varlength objects
        msg = (
            f"{url!r} is a Paintera label-multiset dataset, which wkjupyter cannot read; "
            "export it as a plain integer label dataset"
        )
        raise UnsupportedFormatError(msg)
    if data_type == "object" or (isinstance(data_type, str) and data_type not in DATA_TYPES):
        msg = (
            f"{url!r} has N5 dataType {data_type!r}, which wkjupyter cannot read; "
            "supported are u/int8-64, float32 and float64"
        )
        raise UnsupportedFormatError(msg)
    try:
        dims = tuple(_non_negative(d) for d in attrs["dimensions"])
        block = tuple(_non_negative(b) for b in attrs["blockSize"])
        if not isinstance(data_type, str):
            raise TypeError("dataType is not a string")
        if len(dims) != len(block) or not dims or min(block) < 1:
            raise ValueError(f"dimensions {list(dims)} and blockSize {list(block)} disagree")
    except (KeyError, TypeError, ValueError) as err:
        msg = (
            f"{url!r} is not a valid N5 dataset ({type(err).__name__}: {err}); it needs "
            "'dimensions', 'blockSize' (equal-length lists of positive integers) and 'dataType'"
        )
        raise MetadataError(msg) from err
    return DatasetAttributes(dims, block, data_type, parse_compression(attrs, url))


def _non_negative(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise TypeError(f"{value!r} is not an integer")
    if value < 0:
        raise ValueError(f"{value!r} is negative")
    return int(value)


# -- blocks ---------------------------------------------------------------------------------


def decode_block(
    buf: bytes | memoryview, attrs: DatasetAttributes
) -> tuple[BlockHeader, np.ndarray[Any, Any]]:
    """Decode a stored block into its header and a C-order array shaped ``shape[::-1]``.

    Big-endian values are returned as stored (a view where possible); the caller copies them
    into native order. Varlength blocks whose element count differs from their dimensions
    are cut or padded with zeros. ``ValueError`` for corrupt blocks,
    :class:`~wkjupyter.errors.UnsupportedFormatError` for object blocks.
    """
    header = parse_block_header(buf)
    if header.mode == MODE_OBJECT:
        msg = "object-mode (mode 2) N5 blocks hold serialized objects, not voxels"
        raise UnsupportedFormatError(msg)
    if len(header.shape) != attrs.ndim:
        msg = f"the block header has {len(header.shape)} dimensions, the dataset {attrs.ndim}"
        raise ValueError(msg)
    dtype = attrs.dtype
    count = header.size
    body = memoryview(buf)[header.nbytes :]
    data = attrs.compression.decompress(body, count * dtype.itemsize)
    if len(data) < count * dtype.itemsize:
        msg = (
            f"the block body holds {len(data)} bytes but its header promises {count} "
            f"{attrs.data_type} values ({count * dtype.itemsize} bytes): it is truncated"
        )
        raise ValueError(msg)
    flat = np.frombuffer(data, dtype=dtype, count=count)
    shape = header.shape[::-1]
    want = int(np.prod(shape, dtype=np.int64))
    if count != want:  # varlength: the element count rules, the dimensions place it
        flat = np.concatenate([flat[:want], np.zeros(max(0, want - count), dtype=dtype)])
    return header, flat.reshape(shape)
