"""Schema migrations, run from code: upgrade, downgrade, and the check a catalog does on open.

The alembic scripts live in ``catalog/migrations`` (shipped in the wheel); the ``Config`` is
built here, so no ``alembic.ini`` is needed at run time. Every migration runs in one
transaction that first takes a lock, so that processes opening a new catalog at the same time
do not race: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` (the write lock) on
SQLite. Both locks end with the transaction.

Developers create a revision with
``python -m wkjupyter.catalog.migrate revision "message" --url sqlite:////tmp/x.sqlite``
(the database at ``--url`` is upgraded to head first and autogenerate compares against it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.resources
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select

from wkjupyter.errors import CatalogVersionError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "SEARCH_INDEX_OBJECTS",
    "alembic_config",
    "current_revision",
    "downgrade",
    "ensure_head",
    "head_revision",
    "include_name",
    "migrations_dir",
    "upgrade",
]

# One key for the whole catalog; advisory locks are scoped to the current database.
_PG_LOCK_KEY = zlib.crc32(b"wkjupyter.catalog.migrate")

# Backend-specific search machinery that migration 0002 creates beside the ORM schema (a GIN
# trigram index on PostgreSQL, an FTS5 trigram table with its shadow tables on SQLite). The
# models do not describe it, so autogenerate must not see it.
SEARCH_INDEX_OBJECTS = ("ix_datasets_search_text", "datasets_fts")


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: hide the search machinery from autogenerate."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith("datasets_fts")
    if type_ == "index":
        return name not in SEARCH_INDEX_OBJECTS
    return True


def migrations_dir() -> Path:
    """The folder of the alembic scripts inside the installed package."""
    return Path(str(importlib.resources.files("wkjupyter.catalog") / "migrations"))


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic ``Config`` for the catalog, bound to ``connection`` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    # The scripts ship with the package and do not change while it runs.
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = _script().get_current_head()
    assert head is not None, "the catalog has migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision of the database, ``None`` for an empty (unmigrated) one."""
    with engine.connect() as conn:
        return _current(conn)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (default the newest), holding the migration lock."""
    with _locked(engine) as conn:
        _check_known(conn, engine)
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to ``revision`` (default ``"base"``: drop every table).

    Dropping a column on SQLite needs SQLite 3.35 or newer.
    """
    with _locked(engine) as conn:
        _check_known(conn, engine)
        command.downgrade(alembic_config(conn), revision)


def ensure_head(engine: Engine) -> None:
    """Bring the database to the newest revision; what :class:`Catalog` does on open.

    Cheap when the schema is current (one read, no lock). Otherwise takes the migration lock,
    looks again (another process may have upgraded meanwhile) and upgrades.

    Raises
    ------
    CatalogVersionError
        The database was migrated by a newer wkjupyter, or has catalog tables but no
        migration history.
    """
    head = head_revision()
    with engine.connect() as conn:
        if _current(conn) == head:
            return
    with _locked(engine) as conn:
        current = _check_known(conn, engine)
        if current is None and inspect(conn).has_table("datasets"):
            msg = (
                f"the catalog database {_safe_url(engine)} has tables but no migration history "
                "(it was made by a development version of wkjupyter): move it aside and "
                "import the datasets again"
            )
            raise CatalogVersionError(msg)
        if current != head:
            command.upgrade(alembic_config(conn), "head")


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock; committed on success."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        elif conn.dialect.name == "sqlite":
            # pysqlite begins transactions lazily; take the write lock now so that a second
            # opener waits (busy timeout) instead of migrating too.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn
        conn.commit()


def _current(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


def _check_known(conn: Connection, engine: Engine) -> str | None:
    current = _current(conn)
    if current is None:
        return None
    if current not in {rev.revision for rev in _script().walk_revisions()}:
        msg = (
            f"the catalog database {_safe_url(engine)} has schema revision {current!r}, which "
            f"this wkjupyter does not know (newest known: {head_revision()!r}): it "
            "was upgraded by a newer wkjupyter; upgrade wkjupyter (pip install -U wkjupyter)"
        )
        raise CatalogVersionError(msg)
    return current


def _safe_url(engine: Engine) -> str:
    return repr(engine.url.render_as_string(hide_password=True))


def main(argv: Sequence[str] | None = None) -> None:
    """Developer command line: ``upgrade``, ``downgrade``, ``current`` and ``revision``."""
    parser = argparse.ArgumentParser(prog="python -m wkjupyter.catalog.migrate")
    parser.add_argument("action", choices=["upgrade", "downgrade", "current", "revision"])
    parser.add_argument("arg", nargs="?", help="revision (up/downgrade) or message (revision)")
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the database")
    args = parser.parse_args(argv)
    engine = create_engine(args.url)
    try:
        if args.action == "upgrade":
            upgrade(engine, args.arg or "head")
        elif args.action == "downgrade":
            downgrade(engine, args.arg or "base")
        elif args.action == "current":
            print(current_revision(engine))
        else:
            upgrade(engine)
            with _locked(engine) as conn:
                command.revision(alembic_config(conn), message=args.arg, autogenerate=True)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
