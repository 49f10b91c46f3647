"""Decoders for the Neuroglancer precomputed volume encodings (formats.md §3).

Every decoder takes a chunk's stored bytes and its clipped size and returns the chunk in
canonical (c, z, y, x) order. The decoders (zlib, imagecodecs, compressed_segmentation)
are C code, and callers run them through :func:`~wkjupyter.sources._base.run_cpu`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import zlib
from typing import Any

import numpy as np

from wkjupyter.errors import MetadataError, UnsupportedFormatError

__all__ = ["ENCODINGS", "check_encoding", "decode_chunk", "gunzip", "is_gzip"]

ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso", "jxl")
_GZIP_MAGIC = b"\x1f\x8b"

# volume.rst: which data types and channel counts each encoding can hold.
_ALLOWED: dict[str, tuple[tuple[str, ...] | None, tuple[int, ...] | None]] = {
    "raw": (None, None),
    "jpeg": (("uint8",), (1, 3)),
    "png": (("uint8", "uint16"), (1, 2, 3, 4)),
    "compressed_segmentation": (("uint32", "uint64"), None),
    "compresso": (("uint8", "uint16", "uint32", "uint64"), (1,)),
    "jxl": (("uint8",), (1, 3, 4)),
}


@functools.cache
def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.cache
def _have_jxl() -> bool:
    if not _have("imagecodecs"):
        return False
    import imagecodecs

    return bool(imagecodecs.JPEGXL.available)


def check_encoding(encoding: str, dtype: np.dtype[Any], num_channels: int, where: str) -> None:
    """Raise if this reader cannot decode ``encoding`` for this data type here.

    ``where`` names the scale in the messages (the info URL and the scale key).
    """
    if encoding not in _ALLOWED:
        msg = (
            f"{where}: encoding {encoding!r} is not supported; readable encodings are "
            f"{', '.join(ENCODINGS)}"
        )
        raise UnsupportedFormatError(msg)
    dtypes, channels = _ALLOWED[encoding]
    if dtypes is not None and dtype.name not in dtypes:
        msg = f"{where}: encoding {encoding!r} cannot hold {dtype.name} data; fix the info file"
        raise MetadataError(msg)
    if channels is not None and num_channels not in channels:
        msg = f"{where}: encoding {encoding!r} cannot hold {num_channels} channels"
        raise MetadataError(msg)
    missing = {
        "compresso": None if _have("compresso") else "compresso",
        "jxl": None if _have_jxl() else "imagecodecs (with JPEG XL)",
        "compressed_segmentation": (
            None if _have("compressed_segmentation") else "compressed-segmentation"
        ),
        "jpeg": None if _have("imagecodecs") or _have("PIL") else "imagecodecs",
        "png": None if _have("imagecodecs") or _have("PIL") else "imagecodecs",
    }.get(encoding)
    if missing:
        msg = f"{where}: decoding {encoding!r} needs the {missing} package; pip install it"
        raise UnsupportedFormatError(msg)


def is_gzip(data: bytes) -> bool:
    return data[:2] == _GZIP_MAGIC


def gunzip(data: bytes, url: str) -> bytes:
    """Decompress gzip data (any number of members); corrupt data names ``url``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        msg = f"{url!r} is not valid gzip ({err}); the file is truncated or corrupt"
        raise MetadataError(msg) from err


def decode_chunk(
    data: bytes,
    encoding: str,
    shape_xyzc: tuple[int, int, int, int],
    dtype: np.dtype[Any],
    block_size: tuple[int, int, int] | None,
    url: str,
) -> np.ndarray[Any, Any]:
    """Decode one stored chunk of clipped size ``shape_xyzc`` to a (c, z, y, x) array.

    Gzip-wrapped bytes are unwrapped first: cloud-volume gzips chunk files by default, and
    S3/GCS return them still compressed when the object carries ``Content-Encoding: gzip``.
    """
    x, y, z, c = shape_xyzc
    expected = x * y * z * c * dtype.itemsize
    # Raw chunks are gunzipped only when the size is wrong: raw bytes may start with 1f 8b.
    if is_gzip(data) and (encoding != "raw" or len(data) != expected):
        data = gunzip(data, url)
    try:
        if encoding == "raw":
            return _decode_raw(data, shape_xyzc, dtype, url)
        if encoding == "compressed_segmentation":
            import compressed_segmentation

            assert block_size is not None
            # formats.md §3: decompress with the clipped size; the result is F-ordered
            # (x, y, z, c), so its transpose is C-ordered (c, z, y, x) without a copy.
            out = compressed_segmentation.decompress(
                data, (x, y, z, c), dtype, block_size, order="F"
            )
            return np.asarray(out).T
        if encoding in ("jpeg", "png", "jxl"):
            return _image_to_czyx(_decode_image(data, encoding), shape_xyzc, dtype, url)
        if encoding == "compresso":
            import compresso  # type: ignore[import-not-found,unused-ignore]

            labels = np.asarray(compresso.decompress(data))
            return labels.reshape((x, y, z, c), order="F").T.astype(dtype, copy=False)
    except (MetadataError, UnsupportedFormatError):
        raise
    except Exception as err:
        msg = f"chunk {url!r} could not be decoded as {encoding} ({err}); it may be corrupt"
        raise MetadataError(msg) from err
    msg = f"chunk {url!r}: encoding {encoding!r} is not supported"
    raise UnsupportedFormatError(msg)


def _decode_raw(
    data: bytes, shape_xyzc: tuple[int, int, int, int], dtype: np.dtype[Any], url: str
) -> np.ndarray[Any, Any]:
    # volume.rst: raw is little-endian, Fortran-ordered [x, y, z, c]: the same bytes as a
    # C-ordered (c, z, y, x) array.
    x, y, z, c = shape_xyzc
    if len(data) != x * y * z * c * dtype.itemsize:
        msg = (
            f"chunk {url!r} has {len(data)} bytes, expected {x * y * z * c * dtype.itemsize} "
            f"for a {x}x{y}x{z} (x, y, z) chunk of {c} {dtype.name} channel(s); "
            "it is truncated or corrupt"
        )
        raise MetadataError(msg)
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(c, z, y, x)


def _decode_image(data: bytes, encoding: str) -> np.ndarray[Any, Any]:
    if _have("imagecodecs"):
        import imagecodecs

        if encoding == "jpeg":
            return np.asarray(imagecodecs.jpeg8_decode(data))
        if encoding == "png":
            return np.asarray(imagecodecs.png_decode(data))
        return np.asarray(imagecodecs.jpegxl_decode(data))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _image_to_czyx(
    img: np.ndarray[Any, Any],
    shape_xyzc: tuple[int, int, int, int],
    dtype: np.dtype[Any],
    url: str,
) -> np.ndarray[Any, Any]:
    # volume.rst: a 2-D image of width x and height y*z whose rows concatenate the x-fastest
    # flattening; channels are interleaved per pixel.
    x, y, z, c = shape_xyzc
    if img.size != x * y * z * c:
        msg = (
            f"chunk {url!r} decodes to an image of shape {img.shape}, which does not hold a "
            f"{x}x{y}x{z} (x, y, z) chunk of {c} channel(s); it is corrupt"
        )
        raise MetadataError(msg)
    if c == 1:
        return img.reshape(1, z, y, x).astype(dtype, copy=False)
    return img.reshape(z, y, x, c).transpose(3, 0, 1, 2).astype(dtype, copy=False)
