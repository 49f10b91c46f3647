"""Read access for the data server: which dataset a request may read, and its bound source.

The server asks this on every request (a revoked link or a dataset made private must stop
working at once, in every server process sharing the catalog), so the anonymous and token
lookups are single indexed SELECTs written as plain SQL on a connection: the ORM's session
and statement building cost ten times the query itself (bench/serve.py). Logged-in users go
through the permission service. :func:`bound_datasource` is the one place that decrypts
stored credentials for reading.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Integer, String, Text, or_, select, text

from wkjupyter.catalog import credentials as cred_service
from wkjupyter.catalog.crypto import token_hash
from wkjupyter.catalog.models import DatasetRecord, SlugAlias, UtcDateTime, utcnow
from wkjupyter.catalog.permissions import can_view
from wkjupyter.datasource import DataSource

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from wkjupyter.catalog.crypto import SecretBox
    from wkjupyter.catalog.models import User

__all__ = ["Grant", "bound_datasource", "public_grant", "token_grant", "user_grant"]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one request may read.

    Attributes
    ----------
    dataset_id, slug
        The dataset (its current name, also when the request used an old one).
    version
        Changes whenever the dataset's record changes: a key for cached views.
    layers
        The layers granted; ``None`` for all.
    link_id
        The link that granted access, if any (its use is counted).
    annotation_id
        Set when the link grants an annotation rather than a dataset.
    expires_at
        When the granting link expires (None: never, or no link).
    """

    dataset_id: int
    slug: str
    version: str
    layers: tuple[str, ...] | None = None
    link_id: int | None = None
    annotation_id: int | None = None
    expires_at: dt.datetime | None = None


_PUBLIC_DATASET = text(
    "SELECT id, slug, updated_at FROM datasets WHERE public = :yes AND (slug = :key OR "
    "id = (SELECT dataset_id FROM slug_aliases WHERE slug = :key))"
).columns(id=Integer, slug=String, updated_at=UtcDateTime)

_LINK = text(
    "SELECT l.id AS link_id, l.token_hash, l.layers, l.expires_at, l.revoked_at, "
    "l.annotation_id, d.id AS dataset_id, d.slug, d.updated_at FROM links l "
    "LEFT JOIN annotations a ON a.id = l.annotation_id "
    "JOIN datasets d ON d.id = COALESCE(l.dataset_id, a.dataset_id) "
    "WHERE l.token_hash = :digest"
).columns(
    link_id=Integer, token_hash=String, layers=Text, expires_at=UtcDateTime,
    revoked_at=UtcDateTime, annotation_id=Integer, dataset_id=Integer, slug=String,
    updated_at=UtcDateTime,
)  # fmt: skip


def public_grant(conn: Connection, name: str) -> Grant | None:
    """The grant of an anonymous request to read dataset ``name`` (current or old name).

    Only public datasets are granted; None does not say whether the dataset exists.
    """
    key = name.strip().lower()
    row = conn.execute(_PUBLIC_DATASET, {"key": key, "yes": True}).first()
    if row is None:
        return None
    return Grant(row.id, row.slug, _version(row.updated_at))


def token_grant(conn: Connection, token: str, now: dt.datetime | None = None) -> Grant | None:
    """The grant of a link token, or None if it is unknown, expired or revoked.

    The same rules as :func:`wkjupyter.catalog.links.resolve_token`: the token is hashed
    before anything looks at it, so any string costs one hash and one indexed lookup.
    """
    digest = token_hash(token)
    row = conn.execute(_LINK, {"digest": digest}).first()
    # compare_digest: the database's comparison may be collation-dependent or short-circuit.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = now or utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    layers = tuple(json.loads(row.layers)) if row.layers is not None else None
    return Grant(
        row.dataset_id, row.slug, _version(row.updated_at), layers, row.link_id,
        row.annotation_id, row.expires_at,
    )  # fmt: skip


def user_grant(session: Session, name: str, actor: User) -> Grant | None:
    """The grant of a logged-in ``actor`` to read dataset ``name``: whatever they may view."""
    key = name.strip().lower()
    alias = select(SlugAlias.dataset_id).where(SlugAlias.slug == key).scalar_subquery()
    record = session.scalar(
        select(DatasetRecord).where(or_(DatasetRecord.slug == key, DatasetRecord.id == alias))
    )
    if record is None or not can_view(session, actor, record):
        return None
    return Grant(record.id, record.slug, _version(record.updated_at))


def bound_datasource(session: Session, box: SecretBox, dataset_id: int) -> DataSource:
    """The dataset's data source with its stored credentials decrypted and bound to its layers.

    The result holds secrets: keep it in the process that reads (never serialise it).
    """
    text = session.scalar(select(DatasetRecord.datasource).where(DatasetRecord.id == dataset_id))
    if text is None:
        msg = f"dataset id {dataset_id} vanished while it was read"
        raise LookupError(msg)
    datasource = DataSource.from_json(text)
    ids = {
        level.credential_id
        for layer in datasource.layers.values()
        for level in layer.mags.values()
        if level.credential_id
    }
    creds = {i: cred_service.load_credential(session, box, i) for i in ids}
    for layer in datasource.layers.values():
        cid = next((m.credential_id for m in layer.mags.values() if m.credential_id), None)
        layer.credential = creds.get(cid) if cid else None
    return datasource


def _version(updated_at: dt.datetime | None) -> str:
    return updated_at.isoformat() if updated_at is not None else ""
