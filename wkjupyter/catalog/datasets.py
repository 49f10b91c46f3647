"""Datasets in the catalog: import, find, rename, tag, describe, share with teams, delete.

Every function takes ``(session, actor, ...)`` and checks the actor's right first
(:mod:`wkjupyter.catalog.permissions`). A dataset stores its :class:`DataSource` JSON with
credential *ids* on its mags (never secrets), and a lower-cased ``search_text`` (name,
description, tags, layer names) that :func:`list_datasets` matches words against; every
change keeps ``search_text`` and ``updated_at`` current.

Names are URL-safe slugs, unique across current names *and* old names: a renamed dataset
keeps answering to its old name (:class:`SlugAlias`), so old URLs keep working.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from wkjupyter.catalog import credentials
from wkjupyter.catalog.core import dataset_search_text, search_filter
from wkjupyter.catalog.models import DatasetRecord, DatasetTag, SlugAlias, Tag, Team, utcnow
from wkjupyter.catalog.permissions import not_found_message, require, visible_datasets_clause
from wkjupyter.datasource import DataSource
from wkjupyter.errors import (
    ConflictError,
    DatasetNotFoundError,
    InvalidNameError,
    LayerNotFoundError,
    TeamNotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sqlalchemy import Select
    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import User

__all__ = [
    "add_dataset",
    "add_tags",
    "count_datasets",
    "dataset_summary",
    "delete_dataset",
    "get_dataset",
    "list_datasets",
    "normalise_slug",
    "normalise_tag",
    "remove_tags",
    "rename_dataset",
    "set_allowed_teams",
    "set_description",
    "set_public",
    "set_tags",
    "slugify",
    "update_datasource",
]

MAX_SLUG: Final = 255
MAX_TAG: Final = 128
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TAG = re.compile(r"[^\W_][\w .:/+-]*")  # words, inner spaces and a little punctuation


# -- names ------------------------------------------------------------------------------------


def normalise_slug(name: str) -> str:
    """``name`` as a dataset slug (stripped, lower-cased), or a teaching InvalidNameError."""
    slug = name.strip().lower() if isinstance(name, str) else ""
    if len(slug) > MAX_SLUG or not _SLUG.fullmatch(slug):
        msg = (
            f"{name!r} is not a valid dataset name: use letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit, at most {MAX_SLUG} characters "
            f"(e.g. {slugify(str(name))!r})"
        )
        raise InvalidNameError(msg)
    return slug


def slugify(text: str) -> str:
    """A valid slug made from any text (runs of other characters become ``-``)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower())
    slug = re.sub(r"^[^a-z0-9]+", "", slug)[:MAX_SLUG].rstrip("-.")
    return slug or "dataset"


def normalise_tag(tag: str) -> str:
    """A tag name: stripped, lower-cased, inner whitespace collapsed; validated."""
    name = " ".join(tag.split()).lower() if isinstance(tag, str) else ""
    if len(name) > MAX_TAG or not _TAG.fullmatch(name):
        msg = (
            f"{tag!r} is not a valid tag: use letters, digits, spaces and . : / + - _ "
            f"(starting with a letter or digit), at most {MAX_TAG} characters"
        )
        raise InvalidNameError(msg)
    return name


# -- finding ----------------------------------------------------------------------------------


def dataset_summary(record: DatasetRecord) -> dict[str, Any]:
    """What listings show of a dataset (no source URLs, no credential ids)."""
    return {
        "name": record.slug,
        "public": record.public,
        "owner": record.owner.name,
        "tags": [t.name for t in record.tags],
        "teams": [t.name for t in record.teams],
        "description": record.description,
        "layers": list(DataSource.from_json(record.datasource).layers),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def get_dataset(session: Session, actor: User, name: str) -> DatasetRecord:
    """The dataset called ``name`` now or before a rename, if the actor may view it.

    Tags, teams and owner are loaded, so the record is usable after the session ends.

    Raises
    ------
    DatasetNotFoundError
        No such dataset, or one the actor may not view (the two look the same).
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    stmt = _with_relations(select(DatasetRecord).where(visible_datasets_clause(actor)))
    record = session.scalar(stmt.where(DatasetRecord.slug == key))
    if record is None:
        alias = select(SlugAlias.dataset_id).where(SlugAlias.slug == key).scalar_subquery()
        record = session.scalar(stmt.where(DatasetRecord.id == alias))
    if record is None:
        raise DatasetNotFoundError(not_found_message(name))
    return record


def list_datasets(
    session: Session,
    actor: User,
    search: str | None = None,
    tags: Iterable[str] | None = None,
    public: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[DatasetRecord]:
    """The datasets the actor may view, by slug, filtered in one query.

    Parameters
    ----------
    search
        Words that must *all* occur (case-insensitive substrings) in the name, description,
        tags or layer names.
    tags
        Tags that must *all* be set.
    public
        Only public (``True``) or only private (``False``) datasets.
    limit, offset
        A page of the result.
    """
    stmt = _filtered(session, actor, search, tags, public).order_by(DatasetRecord.slug)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return list(session.scalars(_with_relations(stmt)))


def count_datasets(
    session: Session,
    actor: User,
    search: str | None = None,
    tags: Iterable[str] | None = None,
    public: bool | None = None,
) -> int:
    """How many datasets :func:`list_datasets` finds without ``limit`` (for paging)."""
    subquery = _filtered(session, actor, search, tags, public).with_only_columns(DatasetRecord.id)
    return session.scalar(select(func.count()).select_from(subquery.subquery())) or 0


def _filtered(
    session: Session,
    actor: User,
    search: str | None,
    tags: Iterable[str] | None,
    public: bool | None,
) -> Select[DatasetRecord]:
    stmt = select(DatasetRecord).where(visible_datasets_clause(actor))
    if search and search.strip():
        stmt = stmt.where(search_filter(session, search))
    for tag in dict.fromkeys(normalise_tag(t) for t in tags or ()):
        tagged = select(DatasetTag.dataset_id).join(Tag).where(Tag.name == tag)
        stmt = stmt.where(DatasetRecord.id.in_(tagged))
    if public is not None:
        stmt = stmt.where(DatasetRecord.public == bool(public))
    return stmt


def _with_relations(stmt: Select[DatasetRecord]) -> Select[DatasetRecord]:
    return stmt.options(
        selectinload(DatasetRecord.tags),
        selectinload(DatasetRecord.teams),
        selectinload(DatasetRecord.owner),  # a join would make OFFSET read the skipped rows
    )


# -- creating and deleting --------------------------------------------------------------------


def add_dataset(
    session: Session,
    actor: User,
    datasource: DataSource,
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    public: bool = False,
    description: str = "",
    credential_ids: Mapping[str, str] | str | None = None,
) -> DatasetRecord:
    """Import a dataset: store its data source (metadata and URLs only), owned by the actor.

    Parameters
    ----------
    name
        The dataset's name; default: the data source's name made into a slug.
    credential_ids
        Stored credentials (id or name) to read with: one for every layer, or a mapping
        layer name -> credential. The actor must be allowed to use them.

    Raises
    ------
    InvalidNameError
        ``name`` is not a valid slug (the message suggests one).
    ConflictError
        The name is taken by another dataset, now or as an old name.
    """
    require(session, actor, "import")
    slug = normalise_slug(name) if name is not None else slugify(datasource.name)
    _check_free(session, slug)
    doc = _document(datasource, slug)
    _set_credentials(doc, credential_ids)
    _check_credentials(session, actor, doc, previous=set())
    record = DatasetRecord(
        slug=slug,
        description=description,
        datasource=_dump(doc),
        owner=actor,
        public=bool(public),
        tags=_ensure_tags(session, tags),
        teams=[],
    )
    session.add(record)
    _touch(session, record)
    return record


def delete_dataset(session: Session, actor: User, record: DatasetRecord) -> None:
    """Delete a dataset from the catalog (its data stays where it is).

    Its tags, teams and old names are unlinked; its annotations and links go with it.
    """
    require(session, actor, "administer", record)
    session.execute(delete(SlugAlias).where(SlugAlias.dataset_id == record.id))
    session.delete(record)
    session.flush()


# -- changing ---------------------------------------------------------------------------------


def rename_dataset(
    session: Session, actor: User, record: DatasetRecord, new_name: str
) -> DatasetRecord:
    """Rename a dataset; its old name stays an alias, so old URLs keep working.

    Renaming back to one of its own old names works; a name another dataset holds (now or
    as an old name) is refused with :class:`ConflictError`.
    """
    require(session, actor, "edit", record)
    slug = normalise_slug(new_name)
    if slug == record.slug:
        return record
    _lock(session, record)
    own = session.get(SlugAlias, slug)
    if own is None or own.dataset_id != record.id:
        _check_free(session, slug)
    else:
        session.delete(own)
    session.add(SlugAlias(slug=record.slug, dataset_id=record.id))
    doc = json.loads(record.datasource)
    doc.setdefault("id", {})["name"] = slug
    record.datasource = _dump(doc)
    record.slug = slug
    _touch(session, record)
    return record


def set_description(session: Session, actor: User, record: DatasetRecord, text: str) -> None:
    """Replace the dataset's description."""
    require(session, actor, "edit", record)
    _lock(session, record)
    record.description = str(text)
    _touch(session, record)


def set_tags(session: Session, actor: User, record: DatasetRecord, tags: Iterable[str]) -> None:
    """Replace the dataset's tags (names are lower-cased; new tags are created)."""
    require(session, actor, "edit", record)
    names = [normalise_tag(t) for t in tags]
    _lock(session, record)
    record.tags = _ensure_tags(session, names)
    _touch(session, record)


def add_tags(session: Session, actor: User, record: DatasetRecord, tags: Iterable[str]) -> None:
    """Add tags to the dataset (those it has already are kept once)."""
    require(session, actor, "edit", record)
    names = [normalise_tag(t) for t in tags]
    _lock(session, record)
    record.tags = _ensure_tags(session, [*(t.name for t in record.tags), *names])
    _touch(session, record)


def remove_tags(session: Session, actor: User, record: DatasetRecord, tags: Iterable[str]) -> None:
    """Remove tags from the dataset (tags it does not have are ignored)."""
    require(session, actor, "edit", record)
    drop = {normalise_tag(t) for t in tags}
    _lock(session, record)
    record.tags = [t for t in record.tags if t.name not in drop]
    _touch(session, record)


def set_public(session: Session, actor: User, record: DatasetRecord, public: bool) -> None:
    """Make the dataset readable by anyone (``True``) or only by those allowed (``False``)."""
    require(session, actor, "administer", record)
    _lock(session, record)
    record.public = bool(public)
    _touch(session, record)


def set_allowed_teams(
    session: Session, actor: User, record: DatasetRecord, teams: Iterable[Team | str]
) -> None:
    """Share the dataset with exactly these teams (their members' roles decide who edits)."""
    require(session, actor, "administer", record)
    wanted = list(dict.fromkeys(t.name if isinstance(t, Team) else t.strip() for t in teams))
    found = {t.name: t for t in session.scalars(select(Team).where(Team.name.in_(wanted)))}
    missing = [name for name in wanted if name not in found]
    if missing:
        msg = f"no team {missing[0]!r}; list_teams() shows the teams (an admin creates them)"
        raise TeamNotFoundError(msg)
    _lock(session, record)
    record.teams = [found[name] for name in wanted]
    _touch(session, record)


def update_datasource(
    session: Session,
    actor: User,
    record: DatasetRecord,
    datasource: DataSource,
    *,
    credential_ids: Mapping[str, str] | None = None,
) -> None:
    """Replace the stored data source (e.g. with layers merged in by ``add_layers``).

    Credentials already used by the same mag paths stay usable; any other credential on a
    mag must be one the actor may use.
    """
    require(session, actor, "edit", record)
    _lock(session, record)
    previous = _credential_uses(json.loads(record.datasource))
    doc = _document(datasource, record.slug)
    _set_credentials(doc, credential_ids)
    _check_credentials(session, actor, doc, previous)
    record.datasource = _dump(doc)
    _touch(session, record)


# -- helpers ----------------------------------------------------------------------------------


def _lock(session: Session, record: DatasetRecord) -> None:
    """Take the dataset's write lock and reload it, so concurrent changes are not lost.

    A write comes first: it locks the row on PostgreSQL and takes SQLite's write lock; what
    is read after it (tags for ``search_text``) is what the other writer committed.
    """
    session.execute(
        update(DatasetRecord).where(DatasetRecord.id == record.id).values(updated_at=utcnow())
    )
    session.refresh(record)


def _touch(session: Session, record: DatasetRecord) -> None:
    doc = json.loads(record.datasource)
    layers = [str(layer.get("name", "")) for layer in doc.get("dataLayers", [])]
    tags = [t.name for t in record.tags]
    record.search_text = dataset_search_text(record.slug, record.description, tags, layers)
    record.updated_at = utcnow()
    try:
        session.flush()
    except IntegrityError as err:  # a concurrent import or rename took the name first
        msg = f"the dataset name {record.slug!r} was taken meanwhile; choose another name"
        raise ConflictError(msg) from err


def _check_free(session: Session, slug: str) -> None:
    if not _taken(session, slug):
        return
    msg = f"the dataset name {slug!r} is taken; choose another, e.g. {_suggest(session, slug)!r}"
    if session.scalar(select(SlugAlias.dataset_id).where(SlugAlias.slug == slug)) is not None:
        msg += " (it is the old name of a renamed dataset, which still answers to it)"
    raise ConflictError(msg)


def _taken(session: Session, slug: str) -> bool:
    in_use = or_(
        select(DatasetRecord.id).where(DatasetRecord.slug == slug).exists(),
        select(SlugAlias.slug).where(SlugAlias.slug == slug).exists(),
    )
    return bool(session.scalar(select(in_use)))


def _suggest(session: Session, slug: str) -> str:
    stem = slug[: MAX_SLUG - 6]
    pattern = f"{stem}-%"
    used = set(session.scalars(select(DatasetRecord.slug).where(DatasetRecord.slug.like(pattern))))
    used |= set(session.scalars(select(SlugAlias.slug).where(SlugAlias.slug.like(pattern))))
    return next(f"{stem}-{i}" for i in range(2, len(used) + 3) if f"{stem}-{i}" not in used)


def _ensure_tags(session: Session, tags: Iterable[str]) -> list[Tag]:
    """The Tag rows for ``tags`` (normalised, deduplicated, by name), created when missing."""
    names = list(dict.fromkeys(normalise_tag(t) for t in tags))
    if not names:
        return []
    found = {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(names)))}
    missing = [{"name": n} for n in names if n not in found]
    if missing:
        # ON CONFLICT DO NOTHING: another process may create the same tag right now.
        dialect = session.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert_ = sqlite.insert if dialect == "sqlite" else postgresql.insert
            session.execute(insert_(Tag).on_conflict_do_nothing(index_elements=["name"]), missing)
        else:
            session.add_all(Tag(name=m["name"]) for m in missing)
            session.flush()
        found = {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(names)))}
    return sorted((found[n] for n in names), key=lambda t: t.name)  # as Dataset.tags orders


def _document(datasource: DataSource, slug: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(datasource.to_json())
    doc.setdefault("id", {})["name"] = slug  # served datasource-properties.json names it so
    return doc


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _mags(doc: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for layer in doc.get("dataLayers", []):
        for mag in layer.get("mags", []):
            yield str(layer.get("name", "")), mag


def _set_credentials(doc: dict[str, Any], ids: Mapping[str, str] | str | None) -> None:
    if ids is None:
        return
    if isinstance(ids, str):
        ids = {str(layer.get("name")): ids for layer in doc.get("dataLayers", [])}
    names = {str(layer.get("name")) for layer in doc.get("dataLayers", [])}
    unknown = sorted(set(ids) - names)
    if unknown:
        msg = (
            f"credential given for layer {unknown[0]!r}, which the data source does not have; "
            f"its layers are {', '.join(sorted(names))}"
        )
        raise LayerNotFoundError(msg)
    for layer, mag in _mags(doc):
        if layer in ids:
            mag["credentialId"] = ids[layer]


def _credential_uses(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(str(m.get("path")), m["credentialId"]) for _, m in _mags(doc) if "credentialId" in m}


def _check_credentials(
    session: Session, actor: User, doc: dict[str, Any], previous: set[tuple[str, str]]
) -> None:
    """Resolve credential names to ids and make sure the actor may use each new use of one.

    A mag path already read with a credential keeps it (a team editor may add layers to a
    dataset its owner imported with the owner's key); anything else is a new use.
    """
    for _, mag in _mags(doc):
        given = mag.get("credentialId")
        if given is None or (str(mag.get("path")), given) in previous:
            continue
        mag["credentialId"] = credentials.use_credential(session, actor, str(given))
