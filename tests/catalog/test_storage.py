"""The catalog engine: connection settings, transactions, retries, secrets, the search index."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, event, exc, make_url, select, text
from sqlalchemy.pool import NullPool

from wkjupyter.catalog import core
from wkjupyter.catalog.core import Catalog, dataset_search_text, is_transient, search_filter
from wkjupyter.catalog.models import DatasetRecord, Tag, User
from wkjupyter.errors import CatalogUnavailableError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.orm import Session

    from tests.catalog.fixtures import PostgresServer


def add_user(session: Session, name: str = "alice") -> User:
    user = User(name=name, role="admin")
    session.add(user)
    session.flush()
    return user


def add_dataset(
    session: Session,
    owner: User,
    slug: str,
    description: str = "",
    tags: tuple[str, ...] = (),
    layers: tuple[str, ...] = (),
) -> DatasetRecord:
    record = DatasetRecord(
        slug=slug,
        description=description,
        datasource="{}",
        owner=owner,
        search_text=dataset_search_text(slug, description, tags, layers),
        tags=[Tag(name=t) for t in tags],
    )
    session.add(record)
    session.flush()
    return record


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path}/deep/er/c.sqlite", data_dir=tmp_path)
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    catalog.dispose()
    quick = Catalog(f"sqlite:///{tmp_path}/deep/er/c.sqlite?timeout=0.5", data_dir=tmp_path)
    with quick.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    quick.dispose()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database at the newest schema (for PostgreSQL-only tests)."""
    name = postgres.create(template=postgres.template or "")
    yield postgres.url(name)
    postgres.drop(name)


def test_postgres_connection_settings(pg_url: str) -> None:
    catalog = Catalog(pg_url)
    try:
        assert catalog.engine.pool._pre_ping  # type: ignore[attr-defined]
        with catalog.session() as s:
            assert s.execute(text("SHOW application_name")).scalar() == "wkjupyter"
    finally:
        catalog.dispose()


def test_session_is_one_transaction(catalog: Catalog) -> None:
    with catalog.session() as s:
        add_user(s, "alice")

    def fail() -> None:
        with catalog.session() as s:
            add_user(s, "bob")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    with catalog.session() as s:
        assert s.scalars(select(User.name)).all() == ["alice"]


def test_run_commits_and_returns(catalog: Catalog) -> None:
    user = catalog.run(lambda s: add_user(s, "alice"))
    assert user.name == "alice"  # readable after the commit
    assert catalog.run(lambda s: s.scalars(select(User.name)).all()) == ["alice"]


def test_run_does_not_retry_other_errors(catalog: Catalog) -> None:
    catalog.run(lambda s: add_user(s, "alice"))
    calls = []

    def duplicate(s: Session) -> None:
        calls.append(1)
        add_user(s, "alice")

    with pytest.raises(exc.IntegrityError):
        catalog.run(duplicate)
    assert len(calls) == 1


def _hold_sqlite_write_lock(path: Path, release: threading.Event) -> threading.Thread:
    """Another connection holding SQLite's write lock until ``release`` is set."""
    locked = threading.Event()

    def hold() -> None:
        engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            locked.set()
            release.wait(10)
            conn.rollback()
        engine.dispose()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    return thread


def test_run_retries_database_is_locked(tmp_path: Path) -> None:
    # A 50 ms lock wait, so that the held lock really fails the first attempt.
    catalog = Catalog(f"sqlite:///{tmp_path}/c.sqlite?timeout=0.05", data_dir=tmp_path)
    release = threading.Event()
    holder = _hold_sqlite_write_lock(tmp_path / "c.sqlite", release)
    calls = []

    def write(s: Session) -> str:
        calls.append(1)
        if len(calls) == 2:
            release.set()  # the first attempt failed: let the other writer finish
        return add_user(s, "alice").name

    try:
        assert catalog.run(write) == "alice"
    finally:
        release.set()
        holder.join()
    assert len(calls) >= 2
    assert catalog.run(lambda s: s.scalars(select(User.name)).all()) == ["alice"]
    catalog.dispose()


def test_locked_too_long_is_a_clear_error(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path}/c.sqlite?timeout=0.02", data_dir=tmp_path)
    release = threading.Event()
    holder = _hold_sqlite_write_lock(tmp_path / "c.sqlite", release)
    try:
        with pytest.raises(CatalogUnavailableError, match="stayed busy") as info:
            catalog.run(lambda s: add_user(s, "alice"), attempts=3)
        assert is_transient(info.value)
        with pytest.raises(CatalogUnavailableError, match="stayed busy"), catalog.session() as s:
            add_user(s, "bob")
    finally:
        release.set()
        holder.join()
    catalog.dispose()


def test_run_retries_postgres_serialization_failure(pg_url: str) -> None:
    catalog = Catalog(pg_url)
    other = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        catalog.run(lambda s: add_user(s, "alice"))
        calls = []

        def promote(s: Session) -> None:
            calls.append(1)
            s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            user = s.scalars(select(User).where(User.name == "alice")).one()
            if len(calls) == 1:  # a concurrent commit after our snapshot: 40001 on write
                with other.connect() as conn:
                    conn.execute(text("UPDATE users SET role = 'viewer' WHERE name = 'alice'"))
            user.role = "editor"
            s.flush()

        catalog.run(promote)
        assert len(calls) == 2
        assert catalog.run(lambda s: s.scalars(select(User.role)).one()) == "editor"
    finally:
        catalog.dispose()
        other.dispose()


def test_run_retries_postgres_deadlock(pg_url: str) -> None:
    catalog = Catalog(pg_url)
    other = create_engine(pg_url, poolclass=NullPool)
    try:
        catalog.run(lambda s: [add_user(s, "a"), add_user(s, "b")])
        both_locked = threading.Barrier(2, timeout=10)
        calls = []

        def a_then_b(s: Session) -> None:
            calls.append(1)
            s.execute(text("UPDATE users SET role = 'editor' WHERE name = 'a'"))
            if len(calls) == 1:
                both_locked.wait()
            s.execute(text("UPDATE users SET role = 'editor' WHERE name = 'b'"))

        def b_then_a() -> None:
            with other.begin() as conn:
                # The other side detects the deadlock first (after 1 s) and is the victim.
                conn.execute(text("SET LOCAL deadlock_timeout = '20s'"))
                conn.execute(text("UPDATE users SET role = 'viewer' WHERE name = 'b'"))
                both_locked.wait()
                conn.execute(text("UPDATE users SET role = 'viewer' WHERE name = 'a'"))

        thread = threading.Thread(target=b_then_a)
        thread.start()
        catalog.run(a_then_b)
        thread.join()
        assert len(calls) == 2
        roles = catalog.run(lambda s: s.scalars(select(User.role).order_by(User.name)).all())
        assert roles == ["editor", "editor"]
    finally:
        catalog.dispose()
        other.dispose()


def test_concurrent_writers_lose_nothing(catalog: Catalog) -> None:
    def writer(i: int) -> None:
        for j in range(10):
            catalog.run(lambda s, j=j: add_user(s, f"u{i}-{j}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert catalog.run(lambda s: len(s.scalars(select(User.id)).all())) == 40


def test_password_never_shown(pg_url: str) -> None:
    url = make_url(pg_url).set(password="s3cret-pw")
    catalog = Catalog(url.render_as_string(hide_password=False))  # trust auth ignores it
    try:
        assert "s3cret-pw" not in repr(catalog)
        assert "***" in repr(catalog)
    finally:
        catalog.dispose()
    unreachable = url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    with pytest.raises(CatalogUnavailableError, match="cannot open the catalog") as info:
        Catalog(unreachable)
    for shown in (str(info.value), repr(info.value), str(info.value.__cause__)):
        assert "s3cret-pw" not in shown


def _search(catalog: Catalog, query: str) -> list[str]:
    def find(s: Session) -> list[str]:
        where = search_filter(s, query)
        return list(s.scalars(select(DatasetRecord.slug).where(where).order_by("slug")))

    return catalog.run(find)


@pytest.mark.parametrize("fts_max_ids", [2000, 1], ids=["fts-ids", "fts-too-many"])
def test_search_filter(catalog: Catalog, fts_max_ids: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "FTS_MAX_IDS", fts_max_ids)  # SQLite: both query shapes

    def fill(s: Session) -> None:
        owner = add_user(s)
        add_dataset(s, owner, "mouse-cortex", "Serial-section EM", ("em",), ("color", "seg"))
        add_dataset(s, owner, "fly-brain", "Light sheet, 100%_done", ("lm", "fly"), ("raw",))
        add_dataset(s, owner, "zebrafish", 'the "quoted" fish', (), ("Segmentation",))

    catalog.run(fill)
    assert _search(catalog, "") == ["fly-brain", "mouse-cortex", "zebrafish"]
    assert _search(catalog, "CORTEX") == ["mouse-cortex"]
    assert _search(catalog, "seg") == ["mouse-cortex", "zebrafish"]  # layer names
    assert _search(catalog, "segmentation fish") == ["zebrafish"]  # every term
    assert _search(catalog, "em") == ["mouse-cortex"]  # a short term: tag
    assert _search(catalog, "fly lm") == ["fly-brain"]
    assert _search(catalog, "100%_") == ["fly-brain"]  # LIKE wildcards are literal
    assert _search(catalog, "0%") == ["fly-brain"]
    assert _search(catalog, '"quoted"') == ["zebrafish"]  # FTS5 syntax is literal
    assert _search(catalog, "cortex zebra") == []

    def rename(s: Session) -> None:  # updates and deletes reach the index
        record = s.scalars(select(DatasetRecord).where(DatasetRecord.slug == "zebrafish")).one()
        record.slug = "danio"
        record.search_text = dataset_search_text("danio", "", (), ())
        s.delete(s.scalars(select(DatasetRecord).where(DatasetRecord.slug == "fly-brain")).one())

    catalog.run(rename)
    assert _search(catalog, "zebra") == []
    assert _search(catalog, "brain") == []
    assert _search(catalog, "dani") == ["danio"]


def test_search_uses_the_trigram_index(catalog: Catalog) -> None:
    statements: list[str] = []
    event.listen(catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    def plan(s: Session) -> str:
        query = select(DatasetRecord.id).where(search_filter(s, "cortex"))
        if s.get_bind().dialect.name == "sqlite":
            return ""
        sql = str(query.compile(s.get_bind(), compile_kwargs={"literal_binds": True}))
        s.execute(text("SET LOCAL enable_seqscan = off"))  # the table is tiny
        return " ".join(row[0] for row in s.execute(text(f"EXPLAIN {sql}")))

    shown = catalog.run(plan)
    if catalog.engine.dialect.name == "sqlite":
        assert any("datasets_fts.search_text MATCH" in q for q in statements)
    else:
        assert "ix_datasets_search_text" in shown


def test_sqlite_statistics_follow_the_catalog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.sqlite"
    catalog = Catalog(url, data_dir=tmp_path)

    def fill(s: Session) -> None:
        owner = add_user(s)
        s.add_all(
            DatasetRecord(slug=f"d{i}", datasource="{}", owner=owner, public=i % 2 == 0)
            for i in range(1200)
        )

    catalog.run(fill)
    catalog.dispose()
    catalog = Catalog(url, data_dir=tmp_path)  # grew from nothing: analyzed on open
    stat = "SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_datasets_public'"
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql(stat).scalar() == "1200 600"
    catalog.optimize()
    catalog.dispose()


def test_search_without_fts5_scans_the_plain_index(tmp_path: Path) -> None:
    # What migration 0002 leaves on a SQLite without the trigram tokenizer.
    catalog = Catalog(f"sqlite:///{tmp_path}/c.sqlite", data_dir=tmp_path)
    with catalog.engine.begin() as conn:
        for trigger in ("insert", "delete", "update"):
            conn.exec_driver_sql(f"DROP TRIGGER datasets_fts_{trigger}")
        conn.exec_driver_sql("DROP TABLE datasets_fts")
        conn.exec_driver_sql("CREATE INDEX ix_datasets_search_text ON datasets (search_text)")

    def fill(s: Session) -> None:
        owner = add_user(s)
        add_dataset(s, owner, "mouse-cortex", "Serial-section EM", ("em",), ("color",))
        add_dataset(s, owner, "fly-brain", "100%_done", (), ("raw",))

    catalog.run(fill)
    assert _search(catalog, "cortex em") == ["mouse-cortex"]
    assert _search(catalog, "0%_") == ["fly-brain"]
    with catalog.session() as s:
        query = select(DatasetRecord.id).where(search_filter(s, "cortex"))
        sql = str(query.compile(s.get_bind(), compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(row[-1]) for row in s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    assert "COVERING INDEX ix_datasets_search_text" in plan
    catalog.dispose()
