"""The catalog database: where it is, how to connect, and transactions.

Default: SQLite (WAL) at ``<data dir>/catalog.sqlite``; any SQLAlchemy URL (PostgreSQL is
first-class) via the ``url`` argument or ``WKJUPYTER_CATALOG_URL``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from wkjupyter.catalog.models import Base
from wkjupyter.paths import data_dir as default_data_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

__all__ = ["Catalog", "resolve_url"]


def resolve_url(url: str | None, data_dir: Path) -> str:
    """The catalog URL: explicit, else ``$WKJUPYTER_CATALOG_URL``, else SQLite in the data dir."""
    if url:
        return url
    env = os.environ.get("WKJUPYTER_CATALOG_URL")
    if env:
        return env
    return f"sqlite:///{data_dir / 'catalog.sqlite'}"


class Catalog:
    """A connection to one catalog database.

    Parameters
    ----------
    url
        A SQLAlchemy URL; default ``$WKJUPYTER_CATALOG_URL`` or SQLite in the data dir.
    data_dir
        Where the default database and the secret key live.
    """

    def __init__(self, url: str | None = None, *, data_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.url = resolve_url(url, self.data_dir)
        self.engine: Engine = _make_engine(self.url, self.data_dir)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # TODO(migrations): replaced by alembic upgrade to head.
        Base.metadata.create_all(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"


def _make_engine(url: str, data_dir: Path) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine
