"""Local files: the page-cache fast path gives the same bytes as the threaded read."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from wkjupyter.sources._fs import Store
from wkjupyter.sources._fs_local import MISS, read_cached, read_local

if TYPE_CHECKING:
    from pathlib import Path

DATA = bytes(range(256)) * 64


@pytest.fixture
def store(tmp_path: Path) -> Store:
    (tmp_path / "a").write_bytes(DATA)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    return Store(str(tmp_path))


@pytest.mark.parametrize(
    "byte_range", [None, (0, 10), (100, 5000), (16000, 16384), (16000, 99999), (0, 0)]
)
def test_fast_path_equals_threaded_read(tmp_path: Path, byte_range: tuple[int, int] | None) -> None:
    (tmp_path / "a").write_bytes(DATA)
    path = str(tmp_path / "a")
    fast = read_cached(path, byte_range)
    assert fast is MISS or fast == read_local(path, byte_range)


def test_store_reads_through_either_path(store: Store) -> None:
    async def read() -> list[bytes | None]:
        return [
            await store.get("a"),
            await store.get("a", (10, 20)),
            await store.get("a", (20000, 30000)),  # past the end: cut short
            await store.get("empty"),
            await store.get("missing"),
            await store.get("dir"),
            await store.get("a/below-a-file"),
        ]

    got = asyncio.run(read())
    assert got == [DATA, DATA[10:20], b"", b"", None, None, None]


def test_missing_file_is_none_without_a_thread(tmp_path: Path) -> None:
    assert read_cached(str(tmp_path / "nope"), None) is None
    assert read_cached(str(tmp_path / "nope" / "deeper"), None) is None
