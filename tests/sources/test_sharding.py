"""neuroglancer_uint64_sharded_v1 (formats.md §3, neuroglancer sharded.md): the pure parts.

Chunk ids (compressed Morton codes), the murmur hash, shard/minishard index parsing and the
Range-request reader, checked against independent reference code written here: a
brute-force Morton code, a pure-Python MurmurHash3_x86_128, and a shard *writer*. Real
shards written by tensorstore are read in test_precomputed.py.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import pickle
import struct
from typing import Any, Literal

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.sources._sharding import (
    ShardedReader,
    ShardingSpec,
    compressed_morton_code,
    murmurhash3_x86_128_low64,
    parse_minishard_index,
    parse_shard_index,
)

M32 = 0xFFFFFFFF
U64 = st.integers(0, 2**64 - 1)


# -- reference implementations ----------------------------------------------------------------


def morton_reference(position: tuple[int, ...], grid: tuple[int, ...]) -> int:
    """sharded.md, literally: for bit i and each dim, take bit i if 2**i < grid[dim]."""
    bits: list[str] = []  # least significant first
    i = 0
    while any(2**i < g for g in grid):
        for p, g in zip(position, grid, strict=True):
            if 2**i < g:
                bits.append(str((p >> i) & 1))
        i += 1
    return int("".join(reversed(bits)) or "0", 2)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & M32


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def murmur3_x86_128(data: bytes, seed: int = 0) -> bytes:
    """Port of MurmurHash3_x86_128 (aappleby/smhasher src/MurmurHash3.cpp)."""
    c = (0x239B961B, 0xAB0E9789, 0x38B34AE5, 0xA1E38B93)
    rot_k, rot_h = (15, 16, 17, 18), (19, 17, 15, 13)
    add = (0x561CCD1B, 0x0BCAA747, 0x96CD1C35, 0x32AC3B17)
    h = [seed] * 4

    def mix_k(k: int, lane: int) -> int:
        k = (k * c[lane]) & M32
        k = _rotl(k, rot_k[lane])
        return (k * c[(lane + 1) % 4]) & M32

    nblocks = len(data) // 16
    for b in range(nblocks):
        ks = struct.unpack_from("<4I", data, 16 * b)
        for lane in range(4):
            h[lane] ^= mix_k(ks[lane], lane)
            h[lane] = _rotl(h[lane], rot_h[lane])
            h[lane] = (h[lane] + h[(lane + 1) % 4]) & M32
            h[lane] = (h[lane] * 5 + add[lane]) & M32
    tail = data[16 * nblocks :]
    for lane in range(4):
        part = tail[4 * lane : 4 * lane + 4]
        if part:
            h[lane] ^= mix_k(int.from_bytes(part, "little"), lane)
    h = [x ^ len(data) for x in h]
    h[0] = sum(h) & M32
    h[1:] = [(x + h[0]) & M32 for x in h[1:]]
    h = [_fmix(x) for x in h]
    h[0] = sum(h) & M32
    h[1:] = [(x + h[0]) & M32 for x in h[1:]]
    return struct.pack("<4I", *h)


def chunk_hash(spec: ShardingSpec, chunk_id: int) -> int:
    shifted = chunk_id >> spec.preshift_bits
    if spec.hash == "identity":
        return shifted
    return int.from_bytes(murmur3_x86_128(struct.pack("<Q", shifted))[:8], "little")


def write_shards(spec: ShardingSpec, chunks: dict[int, bytes], gaps: int = 0) -> dict[str, bytes]:
    """An independent shard writer: file name -> bytes, per sharded.md.

    Layout per shard: shard index, then per minishard its chunks' data (with ``gaps``
    filler bytes between chunks) followed by its minishard index.
    """
    grouped: dict[int, dict[int, list[tuple[int, bytes]]]] = {}
    for chunk_id in sorted(chunks):
        h = chunk_hash(spec, chunk_id)
        minishard = h % 2**spec.minishard_bits
        shard = (h >> spec.minishard_bits) % 2**spec.shard_bits
        grouped.setdefault(shard, {}).setdefault(minishard, []).append((chunk_id, chunks[chunk_id]))
    files = {}
    for shard, minishards in grouped.items():
        index = np.zeros((2**spec.minishard_bits, 2), dtype="<u8")
        body = b""
        for minishard, entries in sorted(minishards.items()):
            ids, offsets, sizes = [], [], []
            prev_id, prev_end = 0, 0
            for chunk_id, data in entries:
                if spec.data_encoding == "gzip":
                    data = gzip.compress(data)
                body += b"\xee" * gaps
                offsets.append(len(body) - prev_end)
                body += data
                sizes.append(len(data))
                ids.append(chunk_id - prev_id)
                prev_id, prev_end = chunk_id, len(body)
            table = np.array([ids, offsets, sizes], dtype="<u8").tobytes()
            if spec.minishard_index_encoding == "gzip":
                table = gzip.compress(table)
            index[minishard] = (len(body), len(body) + len(table))
            body += table
        name = format(shard, "x").zfill(math.ceil(spec.shard_bits / 4)) + ".shard"
        files[name] = index.tobytes() + body
    return files


class FakeStore:
    """A Store stand-in over a dict that logs every request (key, byte_range)."""

    def __init__(self, files: dict[str, bytes], *, ignore_range: bool = False) -> None:
        self.url = "mem://scale"
        self.files = files
        self.ignore_range = ignore_range
        self.log: list[tuple[str, tuple[int, int] | None]] = []

    def join(self, key: str) -> str:
        return f"{self.url}/{key}"

    async def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes | None:
        self.log.append((key, byte_range))
        await asyncio.sleep(0)
        data = self.files.get(key)
        if data is None or byte_range is None or self.ignore_range:
            return data
        return data[byte_range[0] : byte_range[1]]


def reader(files: dict[str, bytes], spec: ShardingSpec, **kw: Any) -> tuple[ShardedReader, Any]:
    store = FakeStore(files, **kw)
    return ShardedReader(store, spec), store  # type: ignore[arg-type]


specs = st.builds(
    ShardingSpec,
    preshift_bits=st.integers(0, 3),
    hash=st.sampled_from(["identity", "murmurhash3_x86_128"]),
    minishard_bits=st.integers(0, 3),
    shard_bits=st.integers(0, 5),
    minishard_index_encoding=st.sampled_from(["raw", "gzip"]),
    data_encoding=st.sampled_from(["raw", "gzip"]),
)


# -- compressed Morton codes ----------------------------------------------------------------


@given(st.data())
def test_morton_matches_reference(data: st.DataObject) -> None:
    grid = data.draw(st.tuples(*[st.integers(1, 2**21)] * 3))
    pos = data.draw(st.tuples(*[st.integers(0, g - 1) for g in grid]))
    assert compressed_morton_code(pos, grid) == morton_reference(pos, grid)


@given(st.tuples(*[st.integers(1, 9)] * 3))
def test_morton_is_a_dense_bijection(grid: tuple[int, int, int]) -> None:
    codes = {compressed_morton_code(p, grid) for p in np.ndindex(*grid)}
    assert len(codes) == math.prod(grid)
    total_bits = sum(max(g - 1, 0).bit_length() for g in grid)
    assert max(codes) < 2**total_bits


def test_morton_known_values() -> None:
    cube = (2, 2, 2)
    assert [compressed_morton_code(p, cube) for p in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]] == [1, 2, 4]
    assert compressed_morton_code((1, 1, 1), cube) == 7
    # x needs 3 bits, y 1, z none: bits go x0 y0 x1 x2.
    assert compressed_morton_code((5, 1, 0), (8, 2, 1)) == 0b1011
    assert compressed_morton_code((0, 0, 0), (1, 1, 1)) == 0


# -- hashing ---------------------------------------------------------------------------------


@given(st.binary(max_size=40))
def test_reference_murmur_matches_mmh3(data: bytes) -> None:
    assert murmur3_x86_128(data) == mmh3.mmh3_x86_128_digest(data, 0)


@given(U64)
def test_murmur_low64_matches_formula(value: int) -> None:
    reference = int.from_bytes(murmur3_x86_128(struct.pack("<Q", value))[:8], "little")
    assert murmurhash3_x86_128_low64(value) == reference


@given(specs, U64)
def test_locate_matches_spec(spec: ShardingSpec, chunk_id: int) -> None:
    h = chunk_hash(spec, chunk_id)
    name, minishard = spec.locate(chunk_id)
    assert minishard == h % 2**spec.minishard_bits
    shard = (h >> spec.minishard_bits) % 2**spec.shard_bits
    assert int(name.removesuffix(".shard"), 16) == shard
    assert len(name) == max(1, math.ceil(spec.shard_bits / 4)) + len(".shard")
    assert name == name.lower()


def test_shard_names() -> None:
    spec = ShardingSpec(0, "identity", 0, 0)
    assert spec.locate(12345) == ("0.shard", 0)
    spec = ShardingSpec(0, "identity", 2, 5)
    assert spec.locate(0b1_0110_01) == ("16.shard", 1)
    assert ShardingSpec(0, "identity", 0, 9).locate(5) == ("005.shard", 0)


# -- index parsing ---------------------------------------------------------------------------


@given(st.integers(0, 6), st.data())
def test_shard_index_round_trip(bits: int, data: st.DataObject) -> None:
    pairs = data.draw(st.lists(st.tuples(U64, U64), min_size=2**bits, max_size=2**bits))
    ordered = [[min(a, b), max(a, b)] for a, b in pairs]
    raw = np.array(ordered, dtype="<u8").reshape(-1, 2).tobytes()
    parsed = parse_shard_index(raw, bits, "mem://x.shard")
    assert parsed.tolist() == ordered


@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 99), st.integers(0, 2**20)),
        max_size=30,
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 2**16),
)
def test_minishard_index_round_trip(entries: list[tuple[int, int, int]], data_start: int) -> None:
    entries.sort()
    ids = [e[0] for e in entries]
    gaps = [e[1] for e in entries]
    sizes = [e[2] for e in entries]
    starts, end = [], 0
    for gap, size in zip(gaps, sizes, strict=True):
        starts.append(end + gap)
        end = starts[-1] + size
    deltas = np.diff([0, *ids]).tolist() if ids else []
    raw = np.array([deltas, gaps, sizes], dtype="<u8").tobytes()
    index = parse_minishard_index(raw, data_start, "mem://x.shard")
    assert index.ids.tolist() == ids
    assert index.starts.tolist() == [data_start + s for s in starts]
    assert (index.ends - index.starts).tolist() == sizes
    for i, chunk_id in enumerate(ids):
        assert index.lookup(chunk_id) == (data_start + starts[i], data_start + starts[i] + sizes[i])
    assert index.lookup(2**41) is None


@settings(max_examples=60, deadline=None)
@given(
    specs,
    st.dictionaries(st.integers(0, 2**24), st.binary(min_size=1, max_size=40), max_size=40),
    st.integers(0, 3),
    st.lists(st.integers(0, 2**24), max_size=5),
)
def test_reader_round_trip(
    spec: ShardingSpec, chunks: dict[int, bytes], gaps: int, absent: list[int]
) -> None:
    files = write_shards(spec, chunks, gaps)
    sharded, store = reader(files, spec)

    async def read_all() -> list[bytes | None]:
        ids = list(chunks) + [a for a in absent if a not in chunks]
        return list(await asyncio.gather(*(sharded.read(i) for i in ids)))

    got = asyncio.run(read_all())
    assert got[: len(chunks)] == list(chunks.values())
    assert all(g is None for g in got[len(chunks) :])
    # Only Range requests, and every minishard index fetched at most once.
    assert all(rng is not None for _, rng in store.log)
    entries = [(k, r) for k, r in store.log if r is not None and r[1] - r[0] == 16]
    assert len(entries) == len(set(entries))


# -- the reader's requests and errors ----------------------------------------------------------


def test_region_read_fetches_each_minishard_index_once() -> None:
    spec = ShardingSpec(0, "murmurhash3_x86_128", 1, 1, "gzip", "gzip")
    chunks = {i: bytes([i % 256]) * (i + 1) for i in range(64)}
    sharded, store = reader(write_shards(spec, chunks), spec)

    async def run() -> list[bytes | None]:
        return list(await asyncio.gather(*(sharded.read(i) for i in chunks)))

    assert asyncio.run(run()) == list(chunks.values())
    index_reads = [r for _, r in store.log if r is not None and r[1] - r[0] == 16]
    assert len(index_reads) <= 4  # 2 shards x 2 minishards
    assert len(store.log) <= 2 * 4 + len(chunks)
    store.log.clear()
    assert asyncio.run(run()) == list(chunks.values())  # second pass: indices cached
    assert len(store.log) == len(chunks)


def test_minishard_cache_is_bounded() -> None:
    spec = ShardingSpec(0, "identity", 3, 0)
    chunks = dict.fromkeys(range(32), b"x")
    store = FakeStore(write_shards(spec, chunks))
    sharded = ShardedReader(store, spec, cache_size=2)  # type: ignore[arg-type]

    async def run() -> None:
        for i in chunks:
            assert await sharded.read(i) == b"x"

    asyncio.run(run())
    assert len(sharded._cache) == 2


def test_server_ignoring_range_still_reads_correctly() -> None:
    spec = ShardingSpec(0, "identity", 1, 0, "gzip", "raw")
    chunks = {i: f"chunk{i}".encode() for i in range(10)}
    sharded, _ = reader(write_shards(spec, chunks), spec, ignore_range=True)
    got = asyncio.run(asyncio.wait_for(sharded.read(7), 5))
    assert got == b"chunk7"


def test_missing_shard_file_is_a_missing_chunk() -> None:
    spec = ShardingSpec(0, "identity", 0, 4)
    sharded, _ = reader(write_shards(spec, {1: b"a"}), spec)
    assert asyncio.run(sharded.read(1)) == b"a"
    assert asyncio.run(sharded.read(2)) is None


def test_reader_pickles() -> None:
    spec = ShardingSpec(0, "identity", 1, 1)
    sharded, _ = reader(write_shards(spec, {3: b"abc"}), spec)
    assert asyncio.run(sharded.read(3)) == b"abc"
    clone = pickle.loads(pickle.dumps(sharded))
    assert len(clone._cache) == 0
    assert asyncio.run(clone.read(3)) == b"abc"


def _corrupt(files: dict[str, bytes], name: str, at: int, value: bytes) -> dict[str, bytes]:
    data = bytearray(files[name])
    data[at : at + len(value)] = value
    return {**files, name: bytes(data)}


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("end_before_start", "ends before it starts"),
        ("beyond_eof", "truncated or its index is corrupt"),
        ("bad_gzip", "not valid gzip"),
        ("truncated_index", "truncated"),
        ("not_24", "not a multiple of 24"),
    ],
)
def test_corrupt_shards_raise_clear_errors(damage: str, match: str) -> None:
    gz: Literal["raw", "gzip"] = "gzip" if damage == "bad_gzip" else "raw"
    spec = ShardingSpec(0, "identity", 0, 0, gz, "raw")
    files = write_shards(spec, {0: b"hello", 1: b"world"})
    data = files["0.shard"]
    start, end = struct.unpack_from("<QQ", data)
    if damage == "end_before_start":
        files = _corrupt(files, "0.shard", 0, struct.pack("<QQ", end, start))
    elif damage == "beyond_eof":
        files = _corrupt(files, "0.shard", 8, struct.pack("<Q", end + 1000))
    elif damage == "bad_gzip":
        files = _corrupt(files, "0.shard", 16 + start + 10, b"\x00" * 8)
    elif damage == "truncated_index":
        files = {"0.shard": data[:10]}
    elif damage == "not_24":
        files = _corrupt(files, "0.shard", 8, struct.pack("<Q", end - 1))
    sharded, _ = reader(files, spec)
    with pytest.raises(MetadataError, match=match) as info:
        asyncio.run(sharded.read(0))
    assert "mem://scale/0.shard" in str(info.value)


# -- the sharding spec ---------------------------------------------------------------------


def test_spec_from_json() -> None:
    d = {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 9, "hash": "identity",
         "minishard_bits": 6, "shard_bits": 15, "minishard_index_encoding": "gzip"}  # fmt: skip
    spec = ShardingSpec.from_json(d, "mem://info")
    assert spec == ShardingSpec(9, "identity", 6, 15, "gzip", "raw")
    assert spec.shard_index_size == 16 * 64


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"@type": "neuroglancer_legacy_sharded"}, UnsupportedFormatError),
        ({"hash": "sha256"}, UnsupportedFormatError),
        ({"data_encoding": "zstd"}, UnsupportedFormatError),
        ({"minishard_bits": -1}, MetadataError),
        ({"shard_bits": "3"}, MetadataError),
        ({"minishard_bits": 32, "shard_bits": 40}, MetadataError),
        ({"preshift_bits": None}, MetadataError),
    ],
)
def test_spec_errors(change: dict[str, Any], error: type[Exception]) -> None:
    d = {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "identity",
         "minishard_bits": 1, "shard_bits": 1, **change}  # fmt: skip
    with pytest.raises(error, match="mem://info"):
        ShardingSpec.from_json(d, "mem://info")
    with pytest.raises(MetadataError, match="must be an object"):
        ShardingSpec.from_json("sharded", "mem://info")
