"""Catalog fixtures: every catalog test runs on SQLite and on PostgreSQL, each on a fresh database.

A pytest plugin, registered for the whole suite in ``tests/conftest.py`` (tests outside
``tests/catalog``, such as ``tests/test_hub.py``, use these fixtures too; a conftest.py
could not be both registered there and collected here).

PostgreSQL: the server at ``$WKJUPYTER_TEST_PG_URL`` (an admin URL, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``; ``.ci/run`` starts one). Each test
gets a database ``wkj_<random>`` copied (``CREATE DATABASE ... TEMPLATE``) from a template
migrated once per session, so tests start at the newest schema without running migrations;
``empty_catalog_url`` gives an unmigrated one for migration tests. Unreachable server: the
PostgreSQL tests skip, except under CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from wkjupyter.catalog.core import Catalog

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


class PostgresServer:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.admin = create_engine(
            self.admin_url,
            isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE refuse to run in a transaction
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )
        self.template: str | None = None

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create(self, template: str = "template0") -> str:
        name = f"wkj_{secrets.token_hex(6)}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL test server, with a template database at the newest schema."""
    admin_url = os.environ.get("WKJUPYTER_TEST_PG_URL", DEFAULT_PG_URL)
    server = PostgresServer(admin_url)
    reason = None
    try:
        with server.admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
    if reason is not None:  # outside the except block: no chained traceback in the report
        server.admin.dispose()
        shown = server.admin_url.render_as_string(hide_password=True)
        msg = (
            f"PostgreSQL not reachable at {shown} ({reason}): start it or set WKJUPYTER_TEST_PG_URL"
        )
        if _in_ci():
            pytest.fail(f"{msg} (CI must run the PostgreSQL tests)", pytrace=False)
        pytest.skip(msg)
    template = server.create()
    Catalog(server.url(template)).dispose()  # migrates to head; no connection may stay open
    server.template = template
    yield server
    server.drop(template)
    server.admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite catalog file at the newest schema, to copy for each test."""
    path = tmp_path_factory.mktemp("catalog-template") / "catalog.sqlite"
    catalog = Catalog(f"sqlite:///{path}", data_dir=path.parent)
    with catalog.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    catalog.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return str(request.param)


@pytest.fixture
def catalog_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh catalog database of this test alone, already at the newest schema."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "catalog.sqlite"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    assert server.template is not None
    name = server.create(template=server.template)
    yield server.url(name)
    server.drop(name)


@pytest.fixture
def empty_catalog_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """The URL of a fresh, empty (unmigrated) database of this test alone."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create()
    yield server.url(name)
    server.drop(name)


@pytest.fixture
def catalog(catalog_url: str, tmp_path: Path) -> Iterator[Catalog]:
    """A :class:`Catalog` on this test's fresh database, disposed afterwards."""
    catalog = Catalog(catalog_url, data_dir=tmp_path)
    yield catalog
    catalog.dispose()
