"""Dataset search: a ``search_text`` column, filled for existing datasets, and a trigram index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

``search_text`` is the non-empty ones of slug, description, tag names and layer names, joined
by spaces and lower-cased, as ``wkjupyter.catalog.core.dataset_search_text`` makes it (copied
here so that this revision keeps doing what it did). Text search matches each query term as a
substring of it, and a trigram index answers that without scanning every dataset:

* PostgreSQL: a GIN ``gin_trgm_ops`` index (extension ``pg_trgm``, a trusted extension since
  PostgreSQL 13) serves ``search_text LIKE '%term%'`` directly.
* SQLite: an FTS5 table with the ``trigram`` tokenizer (SQLite 3.34+) over ``search_text``,
  external content (no second copy of the text), kept in step by triggers.

Where the extension or tokenizer is missing the upgrade still succeeds and search falls back
to a scan (correct, slower; on SQLite of a plain index on ``search_text``); see
``core.search_filter``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_log = logging.getLogger("wkjupyter.catalog")
_BATCH = 1000

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE datasets_fts USING fts5("
    "search_text, content='datasets', content_rowid='id', tokenize='trigram')",
    # External-content FTS5 must be told the old text to delete (FTS5 docs, section 4.4.3).
    "CREATE TRIGGER datasets_fts_insert AFTER INSERT ON datasets BEGIN "
    "INSERT INTO datasets_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER datasets_fts_delete AFTER DELETE ON datasets BEGIN "
    "INSERT INTO datasets_fts(datasets_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER datasets_fts_update AFTER UPDATE OF search_text ON datasets BEGIN "
    "INSERT INTO datasets_fts(datasets_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO datasets_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "INSERT INTO datasets_fts(datasets_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    op.add_column(
        "datasets", sa.Column("search_text", sa.Text(), nullable=False, server_default="")
    )
    bind = op.get_bind()
    _backfill(bind)
    if bind.dialect.name == "postgresql":
        _create_pg_index(bind)
    elif bind.dialect.name == "sqlite":
        _create_sqlite_index(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS datasets_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS datasets_fts")
    op.execute("DROP INDEX IF EXISTS ix_datasets_search_text")
    op.drop_column("datasets", "search_text")


def _search_text(slug: str, description: str, tags: list[str], datasource: str) -> str:
    try:
        layers = [str(layer["name"]) for layer in json.loads(datasource)["dataLayers"]]
    except (ValueError, KeyError, TypeError):
        layers = []  # unreadable JSON: search by name, description and tags still works
    return " ".join(part for part in (slug, description, *tags, *layers) if part).lower()


def _backfill(bind: Connection) -> None:
    """Fill ``search_text`` of every dataset, a batch at a time (keyset pagination)."""
    datasets = sa.table(
        "datasets",
        sa.column("id", sa.Integer),
        sa.column("slug", sa.String),
        sa.column("description", sa.Text),
        sa.column("datasource", sa.Text),
        sa.column("search_text", sa.Text),
    )
    tags = sa.table("tags", sa.column("id", sa.Integer), sa.column("name", sa.String))
    dataset_tags = sa.table(
        "dataset_tags", sa.column("dataset_id", sa.Integer), sa.column("tag_id", sa.Integer)
    )
    update = (
        datasets.update()
        .where(datasets.c.id == sa.bindparam("ds_id"))
        .values(search_text=sa.bindparam("text"))
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(datasets.c.id, datasets.c.slug, datasets.c.description, datasets.c.datasource)
            .where(datasets.c.id > last)
            .order_by(datasets.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        tag_names: dict[int, list[str]] = {row.id: [] for row in rows}
        for ds_id, name in bind.execute(
            sa.select(dataset_tags.c.dataset_id, tags.c.name)
            .join(tags, tags.c.id == dataset_tags.c.tag_id)
            .where(dataset_tags.c.dataset_id.in_(list(tag_names)))
            .order_by(tags.c.name)
        ):
            tag_names[ds_id].append(name)
        bind.execute(
            update,
            [
                {
                    "ds_id": row.id,
                    "text": _search_text(
                        row.slug, row.description, tag_names[row.id], row.datasource
                    ),
                }
                for row in rows
            ],
        )


def _create_pg_index(bind: Connection) -> None:
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).first()
    try:
        if available is None:
            raise LookupError("pg_trgm is not installed on the server")
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except (LookupError, sa.exc.DBAPIError) as err:
        _log.warning(
            "catalog search works without an index (slower): cannot create extension "
            "pg_trgm (%s); install postgresql-contrib or ask the database owner",
            getattr(err, "orig", err),
        )
        return
    op.execute(
        "CREATE INDEX ix_datasets_search_text ON datasets USING gin (search_text gin_trgm_ops)"
    )


def _create_sqlite_index(bind: Connection) -> None:
    try:  # probe in the temp schema: nothing is left behind either way
        bind.exec_driver_sql(
            "CREATE VIRTUAL TABLE temp.wkj_probe USING fts5(x, tokenize='trigram')"
        )
        bind.exec_driver_sql("DROP TABLE temp.wkj_probe")
    except sa.exc.DBAPIError as err:
        _log.warning(
            "catalog search scans an index instead of using trigrams (slower): this SQLite "
            "(%s) lacks FTS5 with the trigram tokenizer (%s)",
            bind.dialect.server_version_info,
            err.orig,
        )
        # A scan of this narrow index still beats one of the table, whose rows hold the JSON.
        op.execute("CREATE INDEX ix_datasets_search_text ON datasets (search_text)")
        return
    for statement in _SQLITE_FTS:
        bind.exec_driver_sql(statement)
