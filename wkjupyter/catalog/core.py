"""The catalog database: where it is, how to connect, transactions, and the search index.

Default: SQLite (WAL) at ``<data dir>/catalog.sqlite``; any SQLAlchemy URL (PostgreSQL is
first-class) via the ``url`` argument or ``WKJUPYTER_CATALOG_URL``. Opening a catalog
migrates its schema to the newest revision (:mod:`wkjupyter.catalog.migrate`).

Transactions: ``catalog.run(fn)`` calls ``fn(session)`` in one transaction and runs it again
when the database reports a transient conflict (SQLite "database is locked", PostgreSQL
serialization failure or deadlock), so such errors never reach users. ``with
catalog.session() as s:`` is one transaction, tried once: a ``with`` block cannot be re-run,
so use it for reads and for writes that may fail loudly.

A SQLite catalog is one file, and it may be replaced (a backup restored with ``mv``) or
deleted under a running process. Every connection remembers the file's device and inode;
checking one out of the pool compares them with the file's now (one ``stat``), so a replaced
file is reopened before the next transaction, and a missing one raises
:class:`~wkjupyter.errors.CatalogNotFoundError` instead of answering from the old file.
Connections open the file with ``mode=rw``, so SQLite never creates a new, empty catalog in
place of a deleted one. Writes refused by a read-only file, role or transaction raise
:class:`~wkjupyter.errors.CatalogReadOnlyError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import and_, column, create_engine, event, exc, make_url, select, table, true
from sqlalchemy.orm import Session, sessionmaker

from wkjupyter.catalog import migrate
from wkjupyter.catalog.models import DatasetRecord
from wkjupyter.errors import (
    CatalogNotFoundError,
    CatalogReadOnlyError,
    CatalogUnavailableError,
)
from wkjupyter.paths import data_dir as default_data_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from sqlalchemy import ColumnElement
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "FTS_MAX_IDS",
    "RETRY_ATTEMPTS",
    "Catalog",
    "dataset_search_text",
    "is_read_only",
    "is_transient",
    "resolve_url",
    "search_filter",
]

T = TypeVar("T")
log = logging.getLogger("wkjupyter.catalog")

RETRY_ATTEMPTS = 8
"""How many times :meth:`Catalog.run` tries a transaction that hits transient conflicts."""

_SQLITE_TIMEOUT = 30.0  # seconds SQLite waits for a lock before "database is locked"
_SQLITE_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
_PG_RETRY_STATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_SQLITE_READONLY = 8  # primary code: "attempt to write a readonly database"
# read_only_sql_transaction (default_transaction_read_only, a hot standby), and
# insufficient_privilege (a role without UPDATE rights: read-only for us too).
_PG_READ_ONLY_STATES = {"25006", "42501"}
_PG_NO_DATABASE = "3D000"  # invalid_catalog_name: the database does not exist
_FILE_KEY = "wkjupyter_file"  # connection record info: the (st_dev, st_ino) it opened


def resolve_url(url: str | None, data_dir: Path) -> str:
    """The catalog URL: explicit, else ``$WKJUPYTER_CATALOG_URL``, else SQLite in the data dir."""
    if url:
        return url
    env = os.environ.get("WKJUPYTER_CATALOG_URL")
    if env:
        return env
    return f"sqlite:///{data_dir / 'catalog.sqlite'}"


class Catalog:
    """A connection to one catalog database, migrated to the newest schema on open.

    Parameters
    ----------
    url
        A SQLAlchemy URL; default ``$WKJUPYTER_CATALOG_URL`` or SQLite in the data dir. A
        SQLite URL may set the lock wait in seconds (``?timeout=5``, default 30).
    data_dir
        Where the default database and the secret key live.
    create
        Whether a missing SQLite file may be created (an existing empty file or PostgreSQL
        database is always set up). Default: yes, except for a catalog named by
        ``$WKJUPYTER_CATALOG_URL``, which must exist: a mistyped or removed catalog must not
        turn silently into a new, empty one.

    Attributes
    ----------
    path
        The SQLite file (None for other databases and in-memory or ``file:`` URLs).
    created
        Whether opening created the SQLite file.

    Raises
    ------
    CatalogNotFoundError
        The SQLite file or PostgreSQL database does not exist (and may not be created).
    CatalogUnavailableError
        The database cannot be reached or opened.
    CatalogVersionError
        The database was upgraded by a newer wkjupyter.
    """

    def __init__(
        self, url: str | None = None, *, data_dir: Path | None = None, create: bool | None = None
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.url = resolve_url(url, self.data_dir)
        if create is None:
            create = bool(url) or not os.environ.get("WKJUPYTER_CATALOG_URL")
        self.path = _sqlite_file(self.url)
        self.created = False
        if self.path is not None and not self.path.exists():
            if not create:
                raise CatalogNotFoundError(_missing_message(self.url, self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process was quicker
                self.path.touch(exist_ok=False)
                self.created = True
        self.engine: Engine = _make_engine(self.url, self.path)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            migrate.ensure_head(self.engine)
        except exc.OperationalError as err:
            self.engine.dispose()
            msg = f"cannot open the catalog database {self._safe_url()}: {_reason(err, self)}"
            if _is_missing_database(err):
                msg += "; create it (e.g. `createdb`) or check the URL"
                raise CatalogNotFoundError(msg) from err
            raise CatalogUnavailableError(msg) from err
        except BaseException:
            self.engine.dispose()
            raise
        if self.engine.dialect.name == "sqlite":
            _refresh_sqlite_statistics(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        Tried once; for writes that must survive concurrent writers use :meth:`run`.
        A transient conflict surfaces as :class:`CatalogUnavailableError`.
        """
        try:
            with self._sessions.begin() as session:
                yield session
        except exc.DBAPIError as err:
            if is_transient(err):
                raise CatalogUnavailableError(self._busy_message(err)) from err
            if is_read_only(err):
                raise CatalogReadOnlyError(self._read_only_message(err)) from err
            raise

    def run(self, fn: Callable[[Session], T], *, attempts: int = RETRY_ATTEMPTS) -> T:
        """Call ``fn(session)`` in one transaction, retrying it on transient conflicts.

        The whole transaction is rolled back and ``fn`` called again (after a jittered,
        growing pause) when the database reports "database is locked" (SQLite) or a
        serialization failure or deadlock (PostgreSQL). ``fn`` must therefore have no effects
        outside the database. Its return value is returned after the commit; ORM objects in
        it stay readable (attributes are not expired on commit).

        Raises
        ------
        CatalogUnavailableError
            Every attempt hit a transient conflict.
        CatalogReadOnlyError
            The database refused to write.
        CatalogNotFoundError
            The SQLite file was moved away or deleted.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self._sessions.begin() as session:
                    return fn(session)
            except Exception as err:
                if is_read_only(err):
                    raise CatalogReadOnlyError(self._read_only_message(err)) from err
                if not is_transient(err):
                    raise
                if attempt == attempts:
                    raise CatalogUnavailableError(self._busy_message(err)) from err
            # Full jitter keeps processes that collided from colliding again in step.
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise AssertionError("unreachable")  # pragma: no cover

    def optimize(self) -> None:
        """Refresh the query planner's statistics (``ANALYZE``).

        Call it after bulk imports and, in long-running servers, now and then. Opening a
        SQLite catalog does it by itself when the number of datasets has changed a lot.
        PostgreSQL's autovacuum also does it in the background.
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA analysis_limit=0")  # sampled stats mislead
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def file_id(self) -> tuple[int, int] | None:
        """The SQLite file's (device, inode) now; None for other databases.

        Raises
        ------
        CatalogNotFoundError
            The file is gone (moved away or deleted).
        """
        return None if self.path is None else _file_id(self.url, self.path)

    def _safe_url(self) -> str:
        return repr(self.engine.url.render_as_string(hide_password=True))

    def _busy_message(self, err: BaseException) -> str:
        return (
            f"the catalog database {self._safe_url()} stayed busy (locked by another writer, "
            f"or conflicting transactions): {_reason(err, self)}; try again"
        )

    def _read_only_message(self, err: BaseException) -> str:
        return (
            f"the catalog database {self._safe_url()} is read-only ({_reason(err, self)}): "
            "nothing was changed; make it writable (file permissions and attributes such as "
            "chattr +i, or the database role) and try again"
        )

    def __repr__(self) -> str:
        return f"Catalog({self._safe_url()})"


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is a conflict worth retrying."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        orig = cur.orig if isinstance(cur, exc.DBAPIError) else cur
        if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:  # psycopg 3
            return True
        if getattr(orig, "pgcode", None) in _PG_RETRY_STATES:  # psycopg2
            return True
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES:
            return True
        if type(orig).__module__ == "sqlite3" and "locked" in str(orig):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def is_read_only(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is the database refusing a write."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        orig = cur.orig if isinstance(cur, exc.DBAPIError) else cur
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if state in _PG_READ_ONLY_STATES:
            return True
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_READONLY:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _is_missing_database(err: exc.DBAPIError) -> bool:
    orig = err.orig
    if getattr(orig, "sqlstate", None) == _PG_NO_DATABASE:
        return True
    # psycopg reports a refused connection without a SQLSTATE: only the server's message.
    text = str(orig)
    return "database" in text and "does not exist" in text


def _sqlite_file(url_text: str) -> Path | None:
    """The file of a SQLite URL; None for other databases, in-memory and ``file:`` URLs."""
    url = make_url(url_text)
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if path.startswith("file:"):
        return None
    return Path(path)


def _missing_message(url: str, path: Path) -> str:
    return (
        f"the catalog {url!r} does not exist (no file {str(path)!r}): check the URL, restore "
        "the file, or create a new catalog (`wkjupyter import URL --catalog-url ...` "
        "creates one, as does Hub(catalog_url, create=True))"
    )


def _file_id(url: str, path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        msg = (
            f"the catalog file {str(path)!r} ({url!r}) is gone (moved away or deleted): "
            "restore it; nothing is read from the old file meanwhile"
        )
        raise CatalogNotFoundError(msg) from None
    return st.st_dev, st.st_ino


def _reason(err: BaseException, catalog: Catalog) -> str:
    text = str(err.orig if isinstance(err, exc.DBAPIError) else err).strip().splitlines()
    reason = text[0] if text else type(err).__name__
    password = catalog.engine.url.password
    return reason.replace(str(password), "***") if password else reason


def _make_engine(url_text: str, path: Path | None) -> Engine:
    url = make_url(url_text)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if "timeout" not in url.query:
            kwargs["connect_args"] = {"timeout": _SQLITE_TIMEOUT}
    elif url.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True  # a restarted server or idle cut-off leaves dead conns
        kwargs["connect_args"] = _pg_connect_args(url)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if path is not None:
        _watch_file(engine, url_text, path)
    return engine


def _watch_file(engine: Engine, url: str, path: Path) -> None:
    """Open ``path`` without ever creating it, and reopen it when the file is replaced."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=rw"

    @event.listens_for(engine, "do_connect")
    def connect(
        _dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        # Which file this connection opens: stat first, so that a file swapped in between
        # makes the next checkout reconnect (never the reverse, a stale connection passing).
        record.info[_FILE_KEY] = _file_id(url, path)
        cargs[:] = [uri]
        cparams["uri"] = True

    @event.listens_for(engine, "checkout")
    def checkout(dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if record.info.get(_FILE_KEY) != _file_id(url, path):
            _empty_old_wal(dbapi, path)
            # Drop every pooled connection to the old file; the pool reconnects.
            raise exc.InvalidatePoolError(f"the catalog file {str(path)!r} was replaced")


def _empty_old_wal(dbapi: Any, path: Path) -> None:
    """Write the old file's WAL into the old file, and empty it, before opening the new one.

    SQLite pairs a database with its ``-wal`` by name only, so the new file would be read
    through the old one's log (pages of another database: corruption). A reader elsewhere
    holding an old snapshot makes this fail after a short wait; it is then left to SQLite.
    """
    try:
        dbapi.execute("PRAGMA busy_timeout=1000")
        dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as err:
        log.warning("could not empty the write-ahead log of the replaced catalog %s: %s", path, err)


def _pg_connect_args(url: URL) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if url.get_driver_name() in {"psycopg", "psycopg2"}:
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = 10
        if "application_name" not in url.query:
            args["application_name"] = "wkjupyter"
    return args


def _refresh_sqlite_statistics(engine: Engine) -> None:
    """``ANALYZE`` when the datasets table has grown or shrunk twofold since the last one.

    Without statistics SQLite takes any index for selective: ``public = 1`` then goes
    through ``ix_datasets_public`` and sorts half the table instead of walking the slug
    index to the first page (40 ms instead of 0.3 ms at 100 000 datasets).
    """
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT count(*) FROM datasets").scalar_one()
        if rows < 1000:
            return
        analyzed = 0
        if conn.exec_driver_sql(_HAS_STAT1).first() is not None:
            stat = conn.exec_driver_sql(_DATASETS_STAT).scalar()
            analyzed = int(str(stat).split()[0]) if stat else 0
    if not analyzed / 2 <= rows <= analyzed * 2:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA analysis_limit=0")
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        except exc.OperationalError:
            pass  # busy: the next open tries again; plans are only slower meanwhile


_HAS_STAT1 = "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
_DATASETS_STAT = (
    "SELECT stat FROM sqlite_stat1 WHERE tbl = 'datasets' AND idx = 'ix_datasets_owner'"
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. NORMAL sync is safe in WAL (a power cut may lose
    # the last commits, never corrupt the file) and makes commits several times faster.
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Put a new database file in WAL mode (persistent: done once per file).

    The switch needs the file to itself, and SQLite reports "database is locked" at once,
    without waiting for its busy timeout, when another connection switches at the same time
    (several processes opening a fresh catalog): try again for a while.
    """
    deadline = time.monotonic() + _SQLITE_TIMEOUT
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0, pause))
        pause = min(pause * 2, 0.2)


# --- text search -------------------------------------------------------------------------

_FTS = table("datasets_fts", column("rowid"), column("search_text"))

FTS_MAX_IDS = 2000
"""On SQLite, a text search matching more datasets than this scans instead of using FTS5."""


def dataset_search_text(
    slug: str, description: str, tags: Iterable[str], layer_names: Iterable[str]
) -> str:
    """The ``search_text`` to store for a dataset (write it whenever one of the parts changes)."""
    return " ".join(part for part in (slug, description, *tags, *layer_names) if part).lower()


def search_filter(session: Session, query: str) -> ColumnElement[bool]:
    """A WHERE clause on ``DatasetRecord`` for a text search, using the search index.

    Every whitespace-separated term of ``query`` must occur, case-insensitively, as a
    substring of the dataset's ``search_text`` (name, description, tags, layer names).
    On PostgreSQL ``LIKE`` uses the GIN trigram index (migration 0002) and the planner's
    statistics. On SQLite the terms of three or more characters first go to the FTS5 trigram
    table: up to ``FTS_MAX_IDS`` matches come back as ids (fast for selective terms); a term
    that matches more (say "color") becomes a ``LIKE``, which an ``ORDER BY ... LIMIT`` query
    satisfies within its first rows, where the trigram index would have to list them all.
    """
    terms = query.lower().split()
    if not terms:
        return true()
    conn = session.connection()
    likes = [_like(term) for term in terms]
    if conn.dialect.name != "sqlite":
        return and_(*likes)
    if not _has_fts(conn):
        # Select the ids from the narrow search_text index, not the wide table rows.
        return DatasetRecord.id.in_(select(DatasetRecord.id).where(*likes))
    long = [term for term in terms if len(term) >= 3]
    if long:
        # Quoted FTS5 strings: every character is literal; trigram phrases match substrings.
        match = " AND ".join('"' + term.replace('"', '""') + '"' for term in long)
        found = select(_FTS.c.rowid).where(_FTS.c.search_text.op("MATCH")(match))
        ids = conn.execute(found.limit(FTS_MAX_IDS + 1)).scalars().all()
        if len(ids) <= FTS_MAX_IDS:
            return and_(DatasetRecord.id.in_(ids), *(_like(t) for t in terms if len(t) < 3))
    return and_(*likes)


def _like(term: str) -> ColumnElement[bool]:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return DatasetRecord.search_text.like(f"%{escaped}%", escape="\\")


def _has_fts(conn: Connection) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datasets_fts'"
    ).first()
    return found is not None
