"""Neuroglancer ``neuroglancer_uint64_sharded_v1``: chunk ids, hashes, indices, range reads.

Spec: neuroglancer ``src/datasource/precomputed/sharded.md`` (formats.md §3). A chunk's
id is the compressed Morton code of its grid position. The id, shifted right by
``preshift_bits`` and hashed, picks a minishard (the low ``minishard_bits``) and a shard
(the next ``shard_bits``). Each shard file starts with a fixed-size shard index. For each
minishard it holds a ``[start, end)`` byte range, relative to the end of the index. That
range is the minishard index, which lists the ids, offsets and sizes of the minishard's
chunks.

Reading a chunk costs at most three HTTP Range requests: its shard-index entry, its
minishard index, and the chunk itself. Whole shards are never fetched. Parsed minishard
indices are kept in a bounded LRU, so reading a region fetches each one only once.
"""

from __future__ import annotations

import asyncio
import gzip
import struct
import threading
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import mmh3
import numpy as np

from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.sources._base import run_cpu

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wkjupyter.sources._fs import Store

__all__ = [
    "MinishardIndex",
    "ShardedReader",
    "ShardingSpec",
    "compressed_morton_code",
    "murmurhash3_x86_128_low64",
    "parse_minishard_index",
    "parse_shard_index",
]

_U64 = (1 << 64) - 1
# A minishard index holds 24 bytes per chunk: 64 MiB is ~2.8 million chunks per minishard.
MAX_INDEX_BYTES = 64 << 20
Encoding = Literal["raw", "gzip"]
HashName = Literal["identity", "murmurhash3_x86_128"]


def compressed_morton_code(position: Sequence[int], grid_shape: Sequence[int]) -> int:
    """The compressed Morton code of chunk ``position`` (x, y, z) in a grid of ``grid_shape``.

    sharded.md: for bit ``i = 0, 1, ...`` and each dimension in order, bit ``i`` of the
    position is appended when ``2**i < grid_shape[dim]``. A dimension contributes only the
    bits it needs, so ids stay dense when the grid is not a cube.
    """
    code = 0
    out_bit = 0
    bits = [max(int(s) - 1, 0).bit_length() for s in grid_shape]
    for i in range(max(bits, default=0)):
        for p, b in zip(position, bits, strict=True):
            if i < b:
                code |= ((int(p) >> i) & 1) << out_bit
                out_bit += 1
    return code


def murmurhash3_x86_128_low64(value: int) -> int:
    """MurmurHash3_x86_128 (seed 0) of ``value`` as 8 little-endian bytes, low 64 bits.

    sharded.md: the hash input is the little-endian uint64 and the output the first 8 bytes
    of the digest, read as little-endian uint64.
    """
    digest = mmh3.mmh3_x86_128_digest(struct.pack("<Q", value & _U64), 0)
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True, slots=True)
class ShardingSpec:
    """A scale's ``sharding`` object (``neuroglancer_uint64_sharded_v1``)."""

    preshift_bits: int
    hash: HashName
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: Encoding = "raw"
    data_encoding: Encoding = "raw"

    @classmethod
    def from_json(cls, d: Any, url: str) -> ShardingSpec:
        """Parse and validate the JSON object; errors name ``url`` (the ``info`` file)."""
        if not isinstance(d, dict):
            msg = f"{url!r}: 'sharding' must be an object, got {d!r}; fix the info file"
            raise MetadataError(msg)
        kind = d.get("@type")
        if kind != "neuroglancer_uint64_sharded_v1":
            msg = (
                f"{url!r}: sharding @type {kind!r} is not supported; only "
                "'neuroglancer_uint64_sharded_v1' is (re-write the scale with tensorstore or "
                "cloud-volume)"
            )
            raise UnsupportedFormatError(msg)
        try:
            spec = cls(
                preshift_bits=_int_in(d["preshift_bits"], 0, 64),
                hash=d["hash"],
                minishard_bits=_int_in(d["minishard_bits"], 0, 32),
                shard_bits=_int_in(d["shard_bits"], 0, 64),
                minishard_index_encoding=d.get("minishard_index_encoding", "raw"),
                data_encoding=d.get("data_encoding", "raw"),
            )
        except (KeyError, TypeError, ValueError) as err:
            msg = f"{url!r}: malformed 'sharding' {d!r} ({err!r}); fix the info file"
            raise MetadataError(msg) from err
        if spec.hash not in ("identity", "murmurhash3_x86_128"):
            msg = f"{url!r}: unsupported sharding hash {spec.hash!r}"
            raise UnsupportedFormatError(msg)
        for name in ("minishard_index_encoding", "data_encoding"):
            if getattr(spec, name) not in ("raw", "gzip"):
                msg = f"{url!r}: unsupported sharding {name} {getattr(spec, name)!r}"
                raise UnsupportedFormatError(msg)
        if spec.minishard_bits + spec.shard_bits > 64:
            msg = f"{url!r}: minishard_bits + shard_bits exceeds 64 in {d!r}"
            raise MetadataError(msg)
        return spec

    @property
    def shard_index_size(self) -> int:
        """Bytes of the shard index at the start of each shard file (16 per minishard)."""
        return 16 << self.minishard_bits

    def hash_id(self, chunk_id: int) -> int:
        shifted = (chunk_id & _U64) >> self.preshift_bits
        return murmurhash3_x86_128_low64(shifted) if self.hash != "identity" else shifted

    def locate(self, chunk_id: int) -> tuple[str, int]:
        """The shard file name and minishard number that hold ``chunk_id``."""
        h = self.hash_id(chunk_id)
        minishard = h & ((1 << self.minishard_bits) - 1)
        shard = (h >> self.minishard_bits) & ((1 << self.shard_bits) - 1)
        # Lowercase hex, zero-padded to ceil(shard_bits / 4) digits ("0.shard" when 0 bits).
        return format(shard, "x").zfill((self.shard_bits + 3) // 4) + ".shard", minishard


def _int_in(value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        msg = f"expected an integer in [{lo}, {hi}], got {value!r}"
        raise ValueError(msg)
    return value


def parse_shard_index(data: bytes, minishard_bits: int, url: str) -> np.ndarray[Any, Any]:
    """A shard index as a ``(2**minishard_bits, 2)`` array of ``[start, end)`` offsets.

    Offsets are relative to the end of the shard index. Empty ranges mean empty minishards.
    """
    n = 1 << minishard_bits
    if len(data) != 16 * n:
        msg = (
            f"shard index of {url!r} has {len(data)} bytes, expected {16 * n}; "
            "the shard file is truncated or corrupt"
        )
        raise MetadataError(msg)
    index = np.frombuffer(data, dtype="<u8").reshape(n, 2).astype(np.uint64)
    bad = np.nonzero(index[:, 1] < index[:, 0])[0]
    if bad.size:
        msg = (
            f"shard index of {url!r} is corrupt: minishard {int(bad[0])} ends before it "
            f"starts ({index[bad[0]].tolist()})"
        )
        raise MetadataError(msg)
    return index


@dataclass(frozen=True, slots=True)
class MinishardIndex:
    """The chunks of one minishard: ids and absolute ``[start, end)`` in the shard file."""

    ids: np.ndarray[Any, Any]
    starts: np.ndarray[Any, Any]
    ends: np.ndarray[Any, Any]

    def lookup(self, chunk_id: int) -> tuple[int, int] | None:
        hits = np.nonzero(self.ids == np.uint64(chunk_id))[0]
        if hits.size == 0:
            return None
        i = int(hits[0])
        return int(self.starts[i]), int(self.ends[i])


def parse_minishard_index(data: bytes, data_start: int, url: str) -> MinishardIndex:
    """Parse a decoded minishard index; ``data_start`` is the shard index size.

    sharded.md: an array of uint64 LE of shape ``[3, n]``: delta-encoded chunk ids, each
    chunk's offset relative to the end of the previous chunk (the first relative to the end
    of the shard index), and sizes. So ``start_i = data_start + cumsum(offsets)[i] +
    sum(sizes[:i])``.
    """
    if len(data) % 24:
        msg = (
            f"minishard index in {url!r} has {len(data)} bytes, not a multiple of 24; "
            "the shard file is corrupt"
        )
        raise MetadataError(msg)
    rows = np.frombuffer(data, dtype="<u8").reshape(3, -1).astype(np.uint64)
    with np.errstate(over="ignore"):
        ids = np.cumsum(rows[0], dtype=np.uint64)
        sizes = rows[2]
        ends_before = np.cumsum(rows[1] + sizes, dtype=np.uint64)
        starts = ends_before - sizes + np.uint64(data_start)
    return MinishardIndex(ids, starts, starts + sizes)


def _gunzip(data: bytes, what: str, url: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        msg = f"{what} in {url!r} is not valid gzip ({err}); the shard file is corrupt"
        raise MetadataError(msg) from err


class ShardedReader:
    """Reads chunks by id from the shard files of one scale with Range requests.

    Parameters
    ----------
    store
        The scale's directory (where the ``*.shard`` files are).
    spec
        The scale's sharding specification.
    cache_size
        How many minishard indices to keep (LRU).
    max_chunk_bytes
        Larger chunk ranges are taken for a corrupt index (instead of being fetched).
    """

    def __init__(
        self,
        store: Store,
        spec: ShardingSpec,
        cache_size: int = 1024,
        max_chunk_bytes: int = MAX_INDEX_BYTES,
    ) -> None:
        self.store = store
        self.spec = spec
        self.cache_size = cache_size
        self.max_chunk_bytes = max_chunk_bytes
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: OrderedDict[tuple[str, int], MinishardIndex | None] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Task[MinishardIndex | None]]
        ] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        keep = ("store", "spec", "cache_size", "max_chunk_bytes")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    async def read(self, chunk_id: int) -> bytes | None:
        """The chunk's bytes after ``data_encoding`` (still volume-encoded), or ``None``."""
        shard_key, minishard = self.spec.locate(chunk_id)
        index = await self.minishard_index(shard_key, minishard)
        where = index.lookup(chunk_id) if index is not None else None
        if where is None:
            return None
        data = await self._get_range(
            shard_key, *where, what=f"chunk {chunk_id}", limit=self.max_chunk_bytes
        )
        if data is None:
            return None
        if self.spec.data_encoding == "gzip":
            url = self.store.join(shard_key)
            return await run_cpu(_gunzip, data, f"chunk {chunk_id}", url)
        return data

    async def minishard_index(self, shard_key: str, minishard: int) -> MinishardIndex | None:
        """The parsed minishard index (``None`` if the shard or minishard is empty), cached."""
        key = (shard_key, minishard)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loop = asyncio.get_running_loop()
        inflight = self._inflight.setdefault(loop, {})
        task = inflight.get(key)
        if task is None:
            task = loop.create_task(self._fetch_minishard_index(shard_key, minishard))
            inflight[key] = task
            task.add_done_callback(lambda t: _forget(inflight, key, t))
        # shield: one cancelled reader must not cancel the fetch others are waiting for.
        return await asyncio.shield(task)

    async def _fetch_minishard_index(self, shard_key: str, minishard: int) -> MinishardIndex | None:
        url = self.store.join(shard_key)
        at = 16 * minishard
        entry = await self._get_range(shard_key, at, at + 16, what="shard index entry")
        index: MinishardIndex | None = None
        if entry is not None:
            start, end = (int(v) for v in parse_shard_index(entry, 0, url)[0])
            if end > start:
                base = self.spec.shard_index_size
                what = f"minishard index {minishard}"
                raw = await self._get_range(
                    shard_key, base + start, base + end, what=what, limit=MAX_INDEX_BYTES
                )
                if raw is None:
                    msg = f"{url!r} vanished while reading minishard {minishard}; try again"
                    raise MetadataError(msg)
                index = await run_cpu(self._decode_minishard_index, raw, url, minishard)
        with self._lock:
            self._cache[(shard_key, minishard)] = index
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return index

    def _decode_minishard_index(self, raw: bytes, url: str, minishard: int) -> MinishardIndex:
        if self.spec.minishard_index_encoding == "gzip":
            raw = _gunzip(raw, f"minishard index {minishard}", url)
        return parse_minishard_index(raw, self.spec.shard_index_size, url)

    async def _get_range(
        self, key: str, start: int, end: int, *, what: str, limit: int = 16
    ) -> bytes | None:
        """``[start, end)`` of ``key``; ``None`` if the file does not exist.

        Ranges longer than ``limit`` bytes come from a corrupt index: fail before fetching.
        """
        if end - start > limit:
            msg = (
                f"{what} of {self.store.join(key)!r} claims bytes [{start}, {end}), more than "
                f"the {limit} a valid shard could hold there; the shard index is corrupt"
            )
            raise MetadataError(msg)
        data = await self.store.get(key, byte_range=(start, end))
        if data is None or len(data) == end - start:
            return data
        if len(data) >= end:
            # The server ignored the Range header and sent the whole object (GCS does so
            # for gzip-transcoded objects): take our slice.
            return data[start:end]
        msg = (
            f"{what} of {self.store.join(key)!r}: asked for bytes [{start}, {end}) and got "
            f"{len(data)}; the shard file is truncated or its index is corrupt"
        )
        raise MetadataError(msg)


def _forget(
    inflight: dict[tuple[str, int], asyncio.Task[Any]],
    key: tuple[str, int],
    task: asyncio.Task[Any],
) -> None:
    if inflight.get(key) is task:
        del inflight[key]
    if not task.cancelled():
        task.exception()  # mark retrieved: every waiter re-raises it through shield
