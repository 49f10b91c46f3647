"""Schema migrations: empty to head, round trips, upgrading an older catalog, version checks."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.pool import NullPool

from wkjupyter.catalog import migrate
from wkjupyter.catalog.core import Catalog, search_filter
from wkjupyter.catalog.models import Base, DatasetRecord
from wkjupyter.errors import CatalogVersionError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


@pytest.fixture
def engine(empty_catalog_url: str) -> Iterator[Engine]:
    """A plain engine on the empty database (no migration on open)."""
    engine = create_engine(empty_catalog_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": migrate.include_name})
        return list(compare_metadata(context, Base.metadata))


def test_migrations_ship_with_the_package() -> None:
    folder = migrate.migrations_dir()
    assert (folder / "env.py").is_file()
    assert (folder / "script.py.mako").is_file()
    assert sorted(p.name[:4] for p in (folder / "versions").glob("*.py")) == ["0001", "0002"]
    assert migrate.head_revision() == "0002"


def test_empty_database_upgrades_to_head(empty_catalog_url: str, tmp_path: Path) -> None:
    catalog = Catalog(empty_catalog_url, data_dir=tmp_path)
    assert migrate.current_revision(catalog.engine) == migrate.head_revision()
    assert schema_differences(catalog.engine) == []
    catalog.dispose()


def test_fixture_catalog_is_at_head(catalog: Catalog) -> None:
    assert migrate.current_revision(catalog.engine) == migrate.head_revision()
    assert schema_differences(catalog.engine) == []


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    for _ in range(2):
        migrate.upgrade(engine)
        assert schema_differences(engine) == []
        migrate.downgrade(engine, "0001")
        assert "search_text" not in {c["name"] for c in inspect(engine).get_columns("datasets")}
        migrate.downgrade(engine)
        assert migrate.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(engine)
    assert schema_differences(engine) == []


def _fill_release_0001(engine: Engine) -> None:
    """Data as the first release wrote it: no search_text column yet."""
    datasource = {
        "id": {"name": "cortex", "team": ""},
        "dataLayers": [{"name": "Color"}, {"name": "segmentation"}],
    }
    insert = text(
        "INSERT INTO datasets (id, slug, description, datasource, owner_id, public, "
        "created_at, updated_at) VALUES (:id, :slug, :d, :ds, 1, :public, :t, :t)"
    )
    t = "2025-01-01 00:00:00+00:00"
    rows = [
        {"id": 1, "slug": "mouse-cortex", "d": "Serial EM", "ds": json.dumps(datasource)},
        {"id": 2, "slug": "broken", "d": "", "ds": "not json"},
        # more than one backfill batch
        *({"id": n, "slug": f"ds-{n}", "d": "", "ds": "{}"} for n in range(3, 2503)),
    ]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (id, name, role, created_at) VALUES (1, 'alice', 'admin', :t)"),
            {"t": t},
        )
        conn.execute(insert, [{**row, "public": False, "t": t} for row in rows])
        conn.execute(text("INSERT INTO tags (id, name) VALUES (1, 'mouse'), (2, 'em')"))
        conn.execute(text("INSERT INTO dataset_tags (dataset_id, tag_id) VALUES (1, 1), (1, 2)"))


def test_older_catalog_upgrades_and_backfills_search_text(
    engine: Engine, empty_catalog_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(engine, "0001")
    _fill_release_0001(engine)

    catalog = Catalog(empty_catalog_url, data_dir=tmp_path)
    assert migrate.current_revision(catalog.engine) == "0002"
    with catalog.session() as s:
        texts = dict(s.execute(select(DatasetRecord.id, DatasetRecord.search_text)).all())
        assert texts[1] == "mouse-cortex serial em em mouse color segmentation"
        assert texts[2] == "broken"
        assert texts[2502] == "ds-2502"
        found = s.scalars(select(DatasetRecord.slug).where(search_filter(s, "mouse segment"))).all()
        assert found == ["mouse-cortex"]
        assert s.scalars(select(DatasetRecord.slug).where(search_filter(s, "2502"))).all() == [
            "ds-2502"
        ]
    assert schema_differences(catalog.engine) == []
    catalog.dispose()


def test_database_newer_than_code_is_refused(engine: Engine, empty_catalog_url: str) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    with pytest.raises(CatalogVersionError, match=r"'0099_future'.*newer wkjupyter"):
        Catalog(empty_catalog_url)
    with pytest.raises(CatalogVersionError, match="newer wkjupyter"):
        migrate.upgrade(engine)


def test_tables_without_history_are_refused(engine: Engine, empty_catalog_url: str) -> None:
    Base.metadata.create_all(engine)  # what development versions did before migrations
    with pytest.raises(CatalogVersionError, match="no migration history"):
        Catalog(empty_catalog_url)


def test_concurrent_openers_on_a_fresh_database(empty_catalog_url: str, tmp_path: Path) -> None:
    start = threading.Barrier(3, timeout=30)
    errors: list[BaseException] = []

    def open_catalog() -> None:
        try:
            start.wait()
            Catalog(empty_catalog_url, data_dir=tmp_path).dispose()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_catalog) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(empty_catalog_url, poolclass=NullPool)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert schema_differences(engine) == []
    engine.dispose()
