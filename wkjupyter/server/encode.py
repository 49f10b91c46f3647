"""Encode decoded chunks for the served trees (when stored bytes cannot be passed through).

Zarr says every chunk has the full chunk shape (n5-zarr #92), so a chunk clipped at the
array's edge is padded with the fill value first. The bytes are produced by zarr-python's
own codec pipeline from the same metadata the tree serves, so what we write is what every
Zarr reader decodes, whatever the codec chain (also a source's own chain, used for the few
chunks of a pass-through array whose stored bytes cannot be served, such as N5's truncated
edge blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.core.array import create_codec_pipeline
from zarr.core.array_spec import ArrayConfig
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync as zarr_sync

from wkjupyter.sources._base import run_cpu

if TYPE_CHECKING:
    from zarr.abc.codec import CodecPipeline
    from zarr.core.array_spec import ArraySpec

    from wkjupyter.server._keys import Tree
    from wkjupyter.server.view import ServedArray

__all__ = ["ChunkEncoder", "pad_chunk"]


def pad_chunk(
    data: np.ndarray[Any, Any], chunk_shape: tuple[int, ...], fill_value: Any
) -> np.ndarray[Any, Any]:
    """``data`` as a C-contiguous array of ``chunk_shape``, padded with ``fill_value``."""
    if data.shape == chunk_shape:
        return np.ascontiguousarray(data)
    out = np.full(chunk_shape, fill_value, dtype=data.dtype)
    out[tuple(slice(0, s) for s in data.shape)] = data
    return out


class ChunkEncoder:
    """Encodes full-size chunks of one served array for one tree."""

    def __init__(self, array: ServedArray, tree: Tree) -> None:
        self.array = array
        self.tree = tree
        encoding = array.encodings[tree]
        meta: ArrayV2Metadata | ArrayV3Metadata
        fill = False if array.dtype == np.bool_ else 0  # encoding does not depend on it
        if tree == "zarr" and encoding.v2 is not None:
            meta = ArrayV2Metadata.from_dict(
                {"zarr_format": 2, "shape": list(array.chunk_shape),
                 "chunks": list(array.chunk_shape), "fill_value": fill, **encoding.v2}
            )  # fmt: skip
            order = encoding.v2["order"]
        else:
            meta = ArrayV3Metadata.from_dict(
                {"zarr_format": 3, "node_type": "array", "shape": list(array.chunk_shape),
                 "data_type": array.dtype.name, "fill_value": fill,
                 "chunk_grid": {"name": "regular",
                                "configuration": {"chunk_shape": list(array.chunk_shape)}},
                 "chunk_key_encoding": {"name": "default"},
                 "codecs": [dict(c) for c in encoding.v3_codecs]}
            )  # fmt: skip
            order = "C"
        self._pipeline: CodecPipeline = create_codec_pipeline(meta)
        self._spec: ArraySpec = meta.get_chunk_spec(
            (0,) * len(array.chunk_shape),
            ArrayConfig.from_dict({"order": order}),
            default_buffer_prototype(),
        )

    async def encode(self, data: np.ndarray[Any, Any]) -> bytes:
        """The stored bytes of a chunk holding ``data`` (clipped chunks are padded).

        All of it runs off the caller's event loop: padding, transposing and byte-swapping
        copy whole chunks, so they run in the decode pool too.
        """
        return await run_cpu(self._encode_blocking, data)

    def _encode_blocking(self, data: np.ndarray[Any, Any]) -> bytes:
        full = pad_chunk(data, self.array.chunk_shape, self.array.fill_value)
        # zarr's pipeline is async: run it on zarr's own I/O loop and wait in this thread.
        out = zarr_sync(self._pipeline.encode([(NDBuffer.from_numpy_array(full), self._spec)]))
        buffer = next(iter(out))
        if buffer is None:  # pragma: no cover - zarr drops nothing it is asked to encode
            msg = "zarr's codec pipeline returned no bytes for a chunk"
            raise RuntimeError(msg)
        return buffer.to_bytes()
