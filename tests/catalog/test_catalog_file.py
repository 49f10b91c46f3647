"""The catalog database under the catalog's feet: a SQLite file replaced or deleted while open,
a named catalog that does not exist, a database that refuses writes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, make_url, select, text

from tests.catalog.helpers import sqlite_backup
from wkjupyter.catalog.access import Grant
from wkjupyter.catalog.core import Catalog
from wkjupyter.catalog.models import Team
from wkjupyter.errors import CatalogNotFoundError, CatalogReadOnlyError
from wkjupyter.hub import Hub
from wkjupyter.server.data import GrantCache

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from sqlalchemy.orm import Session


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'cat.sqlite'}", data_dir=tmp_path)
    yield catalog
    catalog.dispose()


def add_team(name: str) -> Callable[[Session], None]:
    def body(session: Session) -> None:
        session.add(Team(name=name))

    return body


def teams(catalog: Catalog) -> list[str]:
    return catalog.run(lambda s: sorted(s.scalars(select(Team.name))))


def test_a_replaced_file_is_reopened_before_the_next_transaction(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    catalog = sqlite_catalog
    path = tmp_path / "cat.sqlite"
    catalog.run(add_team("before"))
    sqlite_backup(path, tmp_path / "backup.sqlite")
    catalog.run(add_team("after-backup"))  # in the old file's write-ahead log
    assert teams(catalog) == ["after-backup", "before"]

    os.replace(tmp_path / "backup.sqlite", path)  # restoring the backup
    assert teams(catalog) == ["before"]  # neither the old connections nor the old WAL
    catalog.run(add_team("restored"))
    with contextlib.closing(sqlite3.connect(path)) as other:
        assert sorted(r[0] for r in other.execute("SELECT name FROM teams")) == [
            "before",
            "restored",
        ]


def test_a_deleted_file_raises_and_is_never_recreated(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    catalog = sqlite_catalog
    path = tmp_path / "cat.sqlite"
    catalog.run(add_team("kept"))
    os.replace(path, tmp_path / "elsewhere.sqlite")
    with pytest.raises(CatalogNotFoundError, match="is gone"):
        teams(catalog)
    with pytest.raises(CatalogNotFoundError), catalog.session() as session:
        session.scalar(select(func.count(Team.id)))
    with pytest.raises(CatalogNotFoundError), catalog.engine.connect():
        pass
    assert not path.exists()
    os.replace(tmp_path / "elsewhere.sqlite", path)
    assert teams(catalog) == ["kept"]


def test_the_grant_cache_follows_the_file(sqlite_catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    cache = GrantCache.for_catalog(sqlite_catalog)
    assert cache is not None
    sqlite_backup(path, tmp_path / "backup.sqlite")
    cache.put(("public", "ds"), Grant(1, "ds", "v1"), cache.version)
    assert cache.get(("public", "ds"))[0]
    os.replace(tmp_path / "backup.sqlite", path)  # data_version of the old file: unchanged
    assert cache.get(("public", "ds")) == (False, None)
    cache.put(("public", "ds"), Grant(1, "ds", "v1"), cache.version)
    assert cache.get(("public", "ds"))[0]
    path.unlink()
    with pytest.raises(CatalogNotFoundError):
        cache.get(("public", "ds"))
    cache.close()


def test_a_named_catalog_must_exist_unless_created(
    backend: str,
    catalog_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = make_url(catalog_url)
    if backend == "sqlite":
        missing = f"sqlite:///{tmp_path / 'sub' / 'missing.sqlite'}"
    else:
        missing = url.set(database=f"{url.database}_missing").render_as_string(False)
    with pytest.raises(CatalogNotFoundError, match="does not exist") as err:
        Catalog(missing, data_dir=tmp_path, create=False)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("WKJUPYTER_CATALOG_URL", missing)
    with pytest.raises(CatalogNotFoundError):
        Catalog(data_dir=tmp_path)  # named by the environment: must exist
    with pytest.raises(CatalogNotFoundError):
        Hub(user="alice", data_dir=tmp_path)
    assert not (tmp_path / "sub").exists()
    if backend == "postgresql":
        return
    # Named in code, or asked to: created (tests, notebooks and the demo rely on it).
    hub = Hub(user="alice", data_dir=tmp_path, create=True)
    assert hub.catalog.created
    hub.catalog.dispose()
    catalog = Catalog(missing, data_dir=tmp_path)
    assert not catalog.created  # it exists now
    catalog.dispose()
    monkeypatch.delenv("WKJUPYTER_CATALOG_URL")
    default = Catalog(data_dir=tmp_path / "new")  # the default one is created on first use
    assert default.created
    assert (tmp_path / "new" / "catalog.sqlite").exists()
    default.dispose()


def test_refused_writes_are_read_only_errors(catalog: Catalog, backend: str) -> None:
    def write_read_only(session: Session) -> None:
        if backend == "sqlite":
            session.execute(text("PRAGMA query_only = 1"))
        else:
            session.execute(text("SET TRANSACTION READ ONLY"))
        try:
            session.add(Team(name="refused"))
            session.flush()
        finally:
            if backend == "sqlite":
                session.execute(text("PRAGMA query_only = 0"))

    with pytest.raises(CatalogReadOnlyError, match="is read-only") as err:
        catalog.run(write_read_only)
    assert "make it writable" in str(err.value)
    assert teams(catalog) == []
