"""Pure Zarr metadata handling: array documents, axis roles, layer names.

Shared by the bare-Zarr, OME-NGFF and webKnossos explorers and the Zarr reader. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wkjupyter.errors import MetadataError, UnsupportedFormatError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

__all__ = [
    "ArrayInfo",
    "AxisMap",
    "axis_order_for",
    "category_for",
    "parse_array",
    "safe_name",
    "unique_names",
]

ROLES = ("c", "z", "y", "x")
_GUESS = {1: "x", 2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}


@dataclass(frozen=True)
class ArrayInfo:
    """A parsed Zarr array document (zarr-python's metadata plus what explorers need)."""

    url: str
    zarr_format: Literal[2, 3]
    meta: ArrayV2Metadata | ArrayV3Metadata
    shape: tuple[int, ...]
    outer_chunks: tuple[int, ...]  # the stored chunk (the shard, for sharded arrays)
    dtype: np.dtype[Any]  # native byte order
    fill_value: Any
    dimension_names: tuple[str | None, ...] | None

    @property
    def format(self) -> Literal["zarr", "zarr3"]:
        return "zarr" if self.zarr_format == 2 else "zarr3"


def parse_array(doc: Any, url: str, zattrs: Any = None) -> ArrayInfo:
    """Parse a ``.zarray`` (with its ``.zattrs``) or an array ``zarr.json`` document.

    Raises :class:`MetadataError` for malformed metadata and
    :class:`UnsupportedFormatError` for data types or codecs that cannot be read.
    """
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

    if not isinstance(doc, dict):
        msg = f"the Zarr array metadata of {url!r} is not a JSON object; fix or rewrite it"
        raise MetadataError(msg)
    version = str(doc.get("zarr_format", "2" if "chunks" in doc else ""))
    attrs = zattrs if isinstance(zattrs, dict) else {}
    try:
        if version == "3":
            if doc.get("node_type") != "array":
                msg = f"{url!r} is a Zarr group, not an array"
                raise MetadataError(msg)
            meta: ArrayV2Metadata | ArrayV3Metadata = ArrayV3Metadata.from_dict(dict(doc))
            names = doc.get("dimension_names")
        elif version == "2":
            meta = ArrayV2Metadata.from_dict({**doc, "zarr_format": 2, "attributes": attrs})
            names = attrs.get("_ARRAY_DIMENSIONS")
        else:
            msg = f"{url!r} has an unknown zarr_format {doc.get('zarr_format')!r}"
            raise MetadataError(msg)
    except (MetadataError, UnsupportedFormatError):
        raise
    except Exception as err:
        raise _classify(err, url, doc) from err
    dtype = np.dtype(meta.dtype.to_native_dtype() if version == "2" else
                     meta.data_type.to_native_dtype())  # type: ignore[union-attr]  # fmt: skip
    if dtype.kind not in "biuf" or dtype.fields is not None:
        msg = (
            f"the array {url!r} has data type {dtype!s}, which is not an image type; "
            "wkjupyter reads bool, (u)int8-64 and float16-64 arrays"
        )
        raise UnsupportedFormatError(msg)
    fill = meta.fill_value
    fill_value = (False if dtype.kind == "b" else 0) if fill is None else np.asarray(fill).item()
    outer = getattr(meta, "shards", None) or meta.chunks  # v3 sharded: the shard shape
    dims = tuple(names) if isinstance(names, list | tuple) else None
    return ArrayInfo(
        url=url,
        zarr_format=3 if version == "3" else 2,
        meta=meta,
        shape=tuple(int(s) for s in meta.shape),
        outer_chunks=tuple(int(c) for c in outer),
        dtype=dtype.newbyteorder("="),
        fill_value=fill_value,
        dimension_names=dims,
    )


def _classify(err: Exception, url: str, doc: Mapping[str, Any]) -> Exception:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, KeyError):
        msg = f"{url!r} is not valid Zarr array metadata: the field {err} is missing"
        return MetadataError(msg)
    if "data type" in str(err) or "dtype" in str(err).lower():
        dtype = doc.get("data_type", doc.get("dtype"))
        msg = (
            f"the array {url!r} has data type {dtype!r}, which cannot be read ({text}); "
            "wkjupyter reads bool, (u)int8-64 and float16-64 arrays"
        )
        return UnsupportedFormatError(msg)
    if "codec" in str(err).lower() or type(err).__name__ == "UnknownCodecError":
        msg = f"the array {url!r} uses a codec zarr-python cannot decode ({text})"
        return UnsupportedFormatError(msg)
    return MetadataError(f"{url!r} is not valid Zarr array metadata ({text}); fix or rewrite it")


def axis_order_for(names: Sequence[str | None] | None, ndim: int) -> dict[str, int]:
    """Axis roles of a stored array: from dimension names when every one is x, y, z, c or t
    (any case), else guessed by rank: y,x / z,y,x / c,z,y,x / t,c,z,y,x; the leading
    dimensions of higher ranks are extra axes."""
    if names and len(names) == ndim:
        lowered = [n.lower() if isinstance(n, str) else "" for n in names]
        if all(n in ("x", "y", "z", "c", "t") for n in lowered) and len(set(lowered)) == ndim:
            return {n: i for i, n in enumerate(lowered)}
    if ndim in _GUESS:
        return {n: i for i, n in enumerate(_GUESS[ndim])}
    return {r: ndim - 4 + i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class AxisMap:
    """How a stored array's dimensions map to the canonical (*extra, c, z, y, x) order.

    ``source[k]`` is the stored dimension behind canonical axis ``k`` (None: a size-1 axis
    the stored array lacks). ``channel_index`` selects one channel of the stored ``c``.
    """

    names: tuple[str, ...]
    source: tuple[int | None, ...]
    channel_index: int | None
    ndim: int

    @classmethod
    def build(
        cls,
        ndim: int,
        axis_order: Mapping[str, int] | None,
        channel_index: int | None = None,
        url: str = "",
    ) -> AxisMap:
        order = dict(axis_order) if axis_order else axis_order_for(None, ndim)
        dims = list(order.values())
        if not all(isinstance(d, int) and 0 <= d < ndim for d in dims) or len(set(dims)) != len(
            dims
        ):
            msg = f"the axis order {order} does not fit the {ndim}-D array {url!r}"
            raise MetadataError(msg)
        role_of = {d: r for r, d in order.items()}
        extras = [d for d in range(ndim) if role_of.get(d) not in ROLES]
        if channel_index is not None and "c" not in order:
            if channel_index != 0:
                msg = f"channel {channel_index} was asked of {url!r}, which has no channel axis"
                raise MetadataError(msg)
            channel_index = None
        return cls(
            names=(*(role_of.get(d, f"dim{d}") for d in extras), *ROLES),
            source=(*extras, *(order.get(r) for r in ROLES)),
            channel_index=channel_index,
            ndim=ndim,
        )

    @property
    def stored_c(self) -> int:
        c = self.source[-4]
        return -1 if c is None else c

    @property
    def inserted(self) -> tuple[int, ...]:
        return tuple(k for k, s in enumerate(self.source) if s is None)

    @property
    def to_canonical(self) -> tuple[int, ...]:
        """Canonical axis of each stored dimension."""
        where = {s: k for k, s in enumerate(self.source) if s is not None}
        return tuple(where[d] for d in range(self.ndim))

    def canonical(self, stored: Sequence[int]) -> tuple[int, ...]:
        """A stored shape (or chunk shape) in canonical order."""
        out = []
        for k, s in enumerate(self.source):
            selected = k == len(self.source) - 4 and self.channel_index is not None
            out.append(1 if s is None or selected else int(stored[s]))
        return tuple(out)

    def to_stored(
        self, view: np.ndarray[Any, Any], lo: Sequence[int], hi: Sequence[int]
    ) -> tuple[list[int], list[int], np.ndarray[Any, Any]]:
        """A canonical region [lo, hi) and its output view as stored region and stored-order
        view of the same memory."""
        slo, shi = [0] * self.ndim, [0] * self.ndim
        for k, s in enumerate(self.source):
            if s is not None:
                shift = (self.channel_index or 0) if k == len(self.source) - 4 else 0
                slo[s], shi[s] = lo[k] + shift, hi[k] + shift
        kept = view[tuple(0 if s is None else slice(None) for s in self.source)]
        present = [s for s in self.source if s is not None]
        return slo, shi, kept.transpose(np.argsort(present))

    def stored_chunk(self, index: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
        """The stored chunk behind canonical chunk ``index``."""
        coords = [0] * self.ndim
        for k, s in enumerate(self.source):
            if s is not None:
                selected = k == len(self.source) - 4 and self.channel_index is not None
                coords[s] = (self.channel_index or 0) // chunks[s] if selected else index[k]
        return tuple(coords)


def category_for(name: str, dtype: np.dtype[Any]) -> Literal["color", "segmentation"]:
    """webKnossos' rule: a layer named segmentation/labels of unsigned ints is segmentation."""
    is_seg = name.lower() in ("segmentation", "labels") and dtype.kind == "u"
    return "segmentation" if is_seg else "color"


_SUFFIXES = (".ome.zarr", ".ome.zarr3", ".zarr", ".zarr3", ".ome")


def safe_name(text: str, default: str = "layer") -> str:
    """A URL-safe layer name (letters, digits, ``-``, ``_``, ``.``) from ``text``."""
    text = text.strip().strip("/").rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if text.lower().endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return text or default


def unique_names(names: Iterable[str]) -> list[str]:
    """The names with repeats made unique by ``_2``, ``_3`` ... suffixes (webKnossos' way)."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out
