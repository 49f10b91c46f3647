"""DataService pieces that no HTTP test reaches directly: the grant cache, the chunk cache,
padding of clipped chunks."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from wkjupyter.catalog.access import Grant
from wkjupyter.catalog.core import Catalog
from wkjupyter.server.data import GrantCache, _ChunkCache
from wkjupyter.server.encode import pad_chunk

if TYPE_CHECKING:
    from pathlib import Path


def _catalog(tmp_path: Path) -> tuple[Catalog, GrantCache]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", data_dir=tmp_path)
    cache = GrantCache.for_catalog(catalog)
    assert cache is not None
    return catalog, cache


def test_grants_stay_valid_until_another_connection_commits(tmp_path: Path) -> None:
    catalog, cache = _catalog(tmp_path)
    grant = Grant(1, "ds", "v1")
    cache.put(("public", "ds"), grant, cache.version)
    cache.put(("token", "x"), None, cache.version)
    assert cache.get(("public", "ds")) == (True, grant)
    assert cache.get(("token", "x")) == (True, None)  # misses are remembered too
    # Any commit by any other connection (another process, a kernel's Hub) invalidates.
    other = sqlite3.connect(tmp_path / "catalog.sqlite")
    other.execute("INSERT INTO tags (name) VALUES ('changed')")
    other.commit()
    other.close()
    assert cache.get(("public", "ds")) == (False, None)
    assert cache.get(("token", "x")) == (False, None)
    cache.close()
    catalog.dispose()


def test_a_cached_link_grant_expires_without_any_commit(tmp_path: Path) -> None:
    catalog, cache = _catalog(tmp_path)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    cache.put(("token", "old"), Grant(1, "ds", "v", link_id=1, expires_at=past), cache.version)
    cache.put(("token", "new"), Grant(1, "ds", "v", link_id=2, expires_at=future), cache.version)
    assert cache.get(("token", "old")) == (False, None)
    assert cache.get(("token", "new"))[0]
    cache.close()
    catalog.dispose()


def test_no_grant_cache_for_postgresql_or_memory() -> None:
    class _Url:
        def __init__(self, backend: str, database: str | None) -> None:
            self.backend, self.database = backend, database

        def get_backend_name(self) -> str:
            return self.backend

    class _Engine:
        def __init__(self, url: _Url) -> None:
            self.url = url

    class _Catalog:
        def __init__(self, url: _Url) -> None:
            self.engine = _Engine(url)

    for url in (_Url("postgresql", "wk"), _Url("sqlite", ":memory:"), _Url("sqlite", None)):
        assert GrantCache.for_catalog(_Catalog(url)) is None  # type: ignore[arg-type]


def test_chunk_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = _ChunkCache(capacity=800)
    for i in range(8):
        cache.put((i,), bytes(100))
    assert cache.size == 800
    assert cache.get((0,)) is not None  # now the most recent
    cache.put((8,), bytes(100))
    assert cache.get((1,)) is None
    assert cache.get((0,)) is not None
    cache.put(("huge",), bytes(500))  # over an eighth of the capacity: not kept
    assert cache.get(("huge",)) is None
    assert cache.size <= 800


def test_clipped_chunks_are_padded_with_the_fill_value() -> None:
    data = np.arange(6, dtype="uint16").reshape(1, 1, 2, 3)
    full = pad_chunk(data, (1, 2, 4, 4), 7)
    assert full.shape == (1, 2, 4, 4)
    assert full.flags.c_contiguous
    np.testing.assert_array_equal(full[:, :1, :2, :3], data)
    assert (full[:, 1:] == 7).all()
    assert (full[:, :, 2:] == 7).all()
    assert (full[..., 3:] == 7).all()
    np.testing.assert_array_equal(pad_chunk(data, (1, 1, 2, 3), 7), data)  # full: as is
