"""N5: explore datasets and multiscale groups, read blocks.

Conventions recognised by :func:`explore` (``reference/formats.md`` §2), in this order:

- a bare **dataset** (``attributes.json`` with ``dimensions``/``dataType``): one layer, mag 1;
  its voxel size is ``pixelResolution`` or ``resolution`` (times any ``downsamplingFactors``)
  and 1 nm when there is none;
- **COSEM** ``multiscales[0].datasets[].transform{axes,units,scale,translate,order}`` (C order
  unless ``order`` is "F"; NGFF-style ``coordinateTransformations`` are accepted too), the
  ``translate`` becoming the layer offset;
- **BigDataViewer** ``setupN/timepointM/sK`` with ``downsamplingFactors`` (a list of lists) on
  each setup: one layer per setup (named ``setupN``, or after the container if there is one
  setup); several timepoints become an additional axis ``t`` in front of ``c``;
- **n5-viewer / Neuroglancer** groups of ``s0, s1, …``: factors from the group's ``scales`` or
  ``downsamplingFactors`` (lists of lists), else each ``sN``'s ``downsamplingFactors``, else
  from the ratio of the dimensions; voxel size from ``pixelResolution {unit, dimensions}`` or
  ``resolution`` + ``units`` on the group (else on ``s0``).

Lists in N5 metadata are x-first; axis names (``axes``, COSEM ``transform.axes``) place x, y,
z and a channel ``c``, other names become additional axes, and without names the dimensions
are x, y, z, c, t. ``MagLevel.axis_order`` maps each role to its index in ``dimensions``.
Units default to nanometer. A layer is ``"segmentation"`` when its dtype is an unsigned integer
and its (or its parent folder's) name says segmentation/labels, or the metadata says so
(``type``/``category``, Paintera's ``painteraData.type``); otherwise ``"color"``.

Reading trusts each block's header (N5 spec): edge blocks truncated by Java writers and padded
by tensorstore both read correctly, missing blocks read as 0, and every compression of the
spec is decoded (``_n5_codecs``), lz4 in lz4-java's block framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.sources import _n5_multiscale as conventions
from wkjupyter.sources._base import MagArray, RawChunk, RawOrDecoded, run_cpu
from wkjupyter.sources._n5_codecs import (
    MODE_DEFAULT,
    decode_block,
    is_dataset,
    parse_block_header,
    parse_dataset_attributes,
)
from wkjupyter.sources._n5_metadata import CANONICAL, axis_roles, extra_axes, factor_lists

if TYPE_CHECKING:
    from wkjupyter.datasource import Layer, MagLevel
    from wkjupyter.sources._fs import Store
    from wkjupyter.sources._n5_codecs import DatasetAttributes

__all__ = ["N5Array", "explore", "open_array"]


class N5Array(MagArray):
    """One N5 dataset in the canonical (*extra, c, z, y, x) order.

    Parameters
    ----------
    store
        The store rooted at the dataset (its ``attributes.json`` is at the top).
    attrs
        The parsed dataset attributes.
    roles
        Role (``x``, ``y``, ``z``, ``c``, extra names) -> N5 dimension index.
    """

    def __init__(self, store: Store, attrs: DatasetAttributes, roles: Mapping[str, int]) -> None:
        self._store = store
        self._attrs = attrs
        self._roles = dict(roles)
        self.url = store.url
        n = attrs.ndim
        # N5 dimension of each canonical axis (None: a size-1 axis the dataset lacks).
        self._src = [roles.get(r) for r in (*extra_axes(roles), *CANONICAL)]
        if sorted(i for i in self._src if i is not None) != list(range(n)):
            msg = f"{self.url!r}: axis roles {dict(roles)} do not cover its {n} dimensions"
            raise MetadataError(msg)
        self.shape = tuple(1 if i is None else attrs.dimensions[i] for i in self._src)
        self.chunk_shape = tuple(1 if i is None else attrs.block_size[i] for i in self._src)
        self.dtype = attrs.dtype.newbyteorder("=")
        self.fill_value = 0  # N5 spec: missing blocks read as zero
        # A decoded block is C-ordered over the N5 dimensions reversed; this permutation
        # brings it into canonical order (without the size-1 axes).
        self._perm = tuple(n - 1 - i for i in self._src if i is not None)

    def __reduce__(self) -> tuple[Any, ...]:
        return (N5Array, (self._store, self._attrs, self._roles))

    def _key(self, index: tuple[int, ...]) -> str | None:
        """The block key ``"x/y/z"`` (N5 order) of a canonical grid index."""
        n5 = [0] * self._attrs.ndim
        for i, src in zip(index, self._src, strict=True):
            if src is None:
                if i != 0:
                    return None
            else:
                n5[src] = i
        grid = self._attrs.grid_shape
        if any(not 0 <= i < g for i, g in zip(n5, grid, strict=True)):
            return None
        return "/".join(map(str, n5))

    async def read_chunk(self, index: tuple[int, ...]) -> np.ndarray[Any, Any] | None:
        key = self._key(tuple(index))
        if key is None:
            return None
        data = await self._store.get(key)
        if data is None:
            return None
        return await run_cpu(self._decode, data, tuple(index), key)

    async def _place_chunk(
        self,
        index: tuple[int, ...],
        out: np.ndarray[Any, Any],
        dst: tuple[slice, ...],
        src: tuple[slice, ...],
    ) -> None:
        """Fetch block ``index`` and decode it straight into ``out[dst]``."""
        key = self._key(index)
        data = None if key is None else await self._store.get(key)
        if data is None or key is None:
            return
        await run_cpu(self._decode_into, data, index, key, out, dst, src)

    def _decode_into(
        self,
        data: bytes,
        index: tuple[int, ...],
        key: str,
        out: np.ndarray[Any, Any],
        dst: tuple[slice, ...],
        src: tuple[slice, ...],
    ) -> None:
        out[dst] = self._decode(data, index, key)[src]

    def _decode(self, data: bytes, index: tuple[int, ...], key: str) -> np.ndarray[Any, Any]:
        """Decode block ``key`` into the clipped canonical chunk at ``index`` (native order)."""
        try:
            _, block = decode_block(data, self._attrs)
        except UnsupportedFormatError as err:  # before ValueError, its base class
            msg = f"the N5 block {self._store.join(key)!r}: {err}"
            raise UnsupportedFormatError(msg) from err
        except ValueError as err:
            msg = (
                f"the N5 block {self._store.join(key)!r} cannot be decoded: {err}; the file "
                "may be incompletely written or corrupt (rewrite it, or delete it to read zeros)"
            )
            raise MetadataError(msg) from err
        bounds = self.chunk_bounds(index)
        out = np.empty(tuple(b.stop - b.start for b in bounds), dtype=self.dtype)
        core = out.reshape([s for s, i in zip(out.shape, self._src, strict=True) if i is not None])
        view = block.transpose(self._perm)
        if view.shape == core.shape:  # a full block, or a tensorstore-padded edge block
            core[...] = view
            return out
        # N5 spec: trust the header. Java writers truncate edge blocks; crop or pad.
        common = tuple(slice(0, min(a, b)) for a, b in zip(view.shape, core.shape, strict=True))
        if any(c.stop < s for c, s in zip(common, core.shape, strict=True)):
            core.fill(self.fill_value)
        core[common] = view[common]
        return out

    async def raw_chunk(self, index: tuple[int, ...]) -> RawChunk | None:
        """The stored block body, when it is a full-size default-mode block.

        zarr-extensions ``codecs/n5_default``: the body after the header is a Zarr v3 chunk
        with the codecs of :attr:`passthrough_codec`. Truncated edge blocks and varlength
        blocks are not (``None``: decode them instead).
        """
        if self.passthrough_codec is None:
            return None
        key = self._key(tuple(index))
        data = None if key is None else await self._store.get(key)
        return None if data is None else self._raw_of(data)

    def _raw_of(self, block: bytes) -> RawChunk | None:
        """The body of a stored block when it is a full-size default-mode block."""
        try:
            header = parse_block_header(block)
        except ValueError:
            return None
        if header.mode != MODE_DEFAULT or header.shape != self._attrs.block_size:
            return None
        return RawChunk(block[header.nbytes :])

    async def raw_or_decoded(self, index: tuple[int, ...]) -> RawOrDecoded | None:
        """The block fetched once: its body when it passes through, else decoded (truncated
        edge blocks, varlength blocks)."""
        key = self._key(tuple(index))
        data = None if key is None else await self._store.get(key)
        if data is None or key is None:
            return None
        raw = self._raw_of(data) if self.passthrough_codec is not None else None
        if raw is not None:
            return raw
        return await run_cpu(self._decode, data, tuple(index), key)

    @property
    def passthrough_codec(self) -> dict[str, Any] | None:
        """``{"codecs": [transpose?, bytes(big), compressor?]}`` for raw, gzip (not zlib),
        zstd and blosc datasets; ``None`` for bzip2, xz and lz4, which Zarr v3 lacks.

        The transpose is needed only when the axes are not x, y, z(, c, t) in N5 order.
        """
        compressor = self._attrs.compression.zarr_codecs(self.dtype)
        if compressor is None:
            return None
        # Stored C order: the N5 dimensions reversed, led by the size-1 axes the data lacks.
        n = self._attrs.ndim
        stored = [k for k, i in enumerate(self._src) if i is None]
        stored += sorted(
            (k for k, i in enumerate(self._src) if i is not None),
            key=lambda k: n - 1 - (self._src[k] or 0),
        )
        codecs: list[dict[str, Any]] = []
        if stored != list(range(len(self._src))):
            codecs.append({"name": "transpose", "configuration": {"order": stored}})
        endian = {"endian": "big"} if self.dtype.itemsize > 1 else {}
        codecs.append({"name": "bytes", "configuration": endian})
        return {"codecs": codecs + compressor}


class _TimeStack(MagArray):
    """BigDataViewer timepoints of one setup and scale as an axis in front of the rest."""

    def __init__(self, arrays: Sequence[N5Array]) -> None:
        self._arrays = list(arrays)
        first = self._arrays[0]
        self.url = first.url
        self.shape = (len(self._arrays), *first.shape)
        self.chunk_shape = (1, *first.chunk_shape)
        self.dtype = first.dtype
        self.fill_value = first.fill_value

    async def read_chunk(self, index: tuple[int, ...]) -> np.ndarray[Any, Any] | None:
        if not 0 <= index[0] < len(self._arrays):
            return None
        chunk = await self._arrays[index[0]].read_chunk(tuple(index[1:]))
        return None if chunk is None else chunk[None]

    async def raw_chunk(self, index: tuple[int, ...]) -> RawChunk | None:
        if not 0 <= index[0] < len(self._arrays):
            return None
        return await self._arrays[index[0]].raw_chunk(tuple(index[1:]))

    async def raw_or_decoded(self, index: tuple[int, ...]) -> RawOrDecoded | None:
        if not 0 <= index[0] < len(self._arrays):
            return None
        got = await self._arrays[index[0]].raw_or_decoded(tuple(index[1:]))
        return got[None] if isinstance(got, np.ndarray) else got

    @property
    def passthrough_codec(self) -> dict[str, Any] | None:
        inner = self._arrays[0].passthrough_codec
        if inner is None or inner["codecs"][0]["name"] == "transpose":
            return None
        return inner


async def open_array(store: Store, level: MagLevel) -> MagArray:
    """The reader of one N5 mag; ``store`` is rooted at ``level.path``.

    ``level.axis_order`` maps roles to N5 dimension indices (x-first); ``None`` means x, y, z
    (, c, t). A level with ``hints["timepoints"]`` is a BigDataViewer setup whose dataset
    ``hints["dataset"]`` exists below each ``timepoint<N>``.
    """
    timepoints = level.hints.get("timepoints")
    if timepoints:
        dataset = str(level.hints.get("dataset", "s0"))
        stores = [store.child(f"timepoint{tp}/{dataset}") for tp in timepoints]
    else:
        stores = [store]
    doc = await stores[0].read_json("attributes.json")
    if not is_dataset(doc):
        msg = (
            f"{stores[0].join('attributes.json')!r} does not describe an N5 dataset; "
            "explore the data source again"
        )
        raise MetadataError(msg)
    attrs = parse_dataset_attributes(doc, stores[0].url)
    roles = dict(level.axis_order) if level.axis_order is not None else None
    roles = roles or axis_roles(None, attrs.ndim, stores[0].url)
    arrays = [N5Array(s, attrs, roles) for s in stores]
    return _TimeStack(arrays) if timepoints else arrays[0]


# -- explore --------------------------------------------------------------------------------


async def explore(store: Store) -> list[Layer] | None:
    """The layers of the N5 dataset or multiscale group at ``store``; ``None`` if not N5.

    Reads ``attributes.json`` (already fetched by the explorer) and, for a group, probes
    ``s0/`` and ``setup0/`` together; a folder with none of them is not N5.
    """
    root = await store.read_json("attributes.json")
    if root is not None and not isinstance(root, Mapping):
        msg = (
            f"{store.join('attributes.json')!r} must hold a JSON object, not "
            f"{type(root).__name__}; fix or regenerate the file"
        )
        raise MetadataError(msg)
    if root is not None and is_dataset(root):
        return [await conventions.bare_dataset(store, root)]
    root = root or {}
    if isinstance(root.get("multiscales"), list):
        return [await conventions.cosem(store, root)]
    s0, setup0 = await asyncio.gather(
        store.read_json("s0/attributes.json"), store.read_json("setup0/attributes.json")
    )
    if isinstance(setup0, Mapping):
        return await conventions.bdv(store, root, setup0)
    if is_dataset(s0) or factor_lists(root) is not None:
        return [await conventions.n5_viewer(store, root, s0)]
    return None
