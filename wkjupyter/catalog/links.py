"""Private links: revocable, expiring tokens that grant read access to a dataset or annotation.

A link's token is 256 random bits. The catalog stores its SHA-256 (``token_hash``, unique and
indexed: how :func:`resolve_token` finds the link) and a Fernet token of it (``token_secret``:
how :func:`link_token` gives it back to whoever may share the dataset); never the token.

Creating, listing, changing and revoking links needs the share right on the dataset (for an
annotation: on its dataset). Links on datasets the actor cannot see look absent.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import aliased

from wkjupyter.catalog.crypto import new_token, token_hash
from wkjupyter.catalog.models import Annotation, DatasetRecord, LinkRecord, utcnow
from wkjupyter.catalog.permissions import can, can_view, require, visible_datasets_clause
from wkjupyter.datasource import DataSource
from wkjupyter.errors import (
    InvalidExpiryError,
    LayerNotFoundError,
    LinkNotFoundError,
    SecretKeyError,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from wkjupyter.catalog.crypto import SecretBox
    from wkjupyter.catalog.models import User

__all__ = [
    "DEFAULT_EXPIRY",
    "Expiry",
    "LinkStatus",
    "ResolvedLink",
    "create_link",
    "get_link",
    "link_layers",
    "link_status",
    "link_token",
    "list_links",
    "parse_expiry",
    "record_use",
    "resolve_token",
    "revoke_link",
    "update_link",
]

Expiry = str | dt.date | dt.timedelta | None  # a datetime is a date
LinkStatus = Literal["active", "expired", "revoked"]
DEFAULT_EXPIRY: Final = "30d"
_MAX_LABEL = 255


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class ResolvedLink:
    """What a valid token grants: a dataset (maybe only some layers) or an annotation."""

    link_id: int
    dataset: DatasetRecord
    annotation: Annotation | None
    layers: tuple[str, ...] | None  # None: every layer
    expires_at: dt.datetime | None


# -- expiry --------------------------------------------------------------------------------

_UNITS: Final = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_PART = re.compile(r"(\d{1,12})\s*([a-z]+)")
_DURATION = re.compile(r"(?:\s*\d{1,12}\s*[a-z]+)+\s*")
_EXPIRY_HELP = (
    "use a duration such as '30d', '12h', '90m', '2w' or '1d 12h' (m is minutes), an ISO "
    "date or datetime (naive means UTC), a datetime or timedelta, or None for no expiry"
)


def parse_expiry(value: Expiry, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """When a link given ``value`` expires: an aware UTC datetime, or ``None`` for never.

    Raises
    ------
    InvalidExpiryError
        ``value`` is malformed, not positive, or in the past.
    """
    now = _utc(now) if now is not None else utcnow()
    try:
        when = _parse(value, now)
    except OverflowError:
        msg = f"expiry {_show(value)} is too far in the future; {_EXPIRY_HELP}"
        raise InvalidExpiryError(msg) from None
    if when is None:
        return None
    if when <= now:
        msg = (
            f"expiry {_show(value)} ({when.isoformat()}) is not in the future (now is "
            f"{now.isoformat()}); a link must expire later than now"
        )
        raise InvalidExpiryError(msg)
    return when


def _parse(value: object, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return now + value
    if isinstance(value, dt.datetime):
        return _utc(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    if isinstance(value, str):
        return _parse_text(value, now)
    msg = f"invalid expiry of type {type(value).__name__}: {_EXPIRY_HELP}"
    raise InvalidExpiryError(msg)


def _parse_text(text: str, now: dt.datetime) -> dt.datetime | None:
    s = text.strip().lower()
    if s in ("never", "none"):
        return None
    if _DURATION.fullmatch(s):
        parts = [(int(amount), unit) for amount, unit in _PART.findall(s)]
        unknown = [unit for _, unit in parts if unit not in _UNITS]
        if unknown:
            msg = (
                f"invalid expiry {_show(text)}: unknown unit {unknown[0]!r} (months and years "
                f"are not units: use days); {_EXPIRY_HELP}"
            )
            raise InvalidExpiryError(msg)
        return now + dt.timedelta(seconds=sum(amount * _UNITS[unit] for amount, unit in parts))
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"invalid expiry {_show(text)}: {_EXPIRY_HELP}"
        raise InvalidExpiryError(msg) from None
    return _utc(parsed)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; naive datetimes given by callers are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


# -- managing links ------------------------------------------------------------------------


def create_link(
    session: Session,
    box: SecretBox,
    actor: User,
    *,
    dataset: DatasetRecord | None = None,
    annotation: Annotation | None = None,
    expires: Expiry = DEFAULT_EXPIRY,
    label: str = "",
    layers: list[str] | None = None,
) -> tuple[LinkRecord, str]:
    """A new link to ``dataset`` (optionally only ``layers``) or ``annotation``, and its token.

    Parameters
    ----------
    expires
        See :func:`parse_expiry`; default 30 days; ``None`` never expires.
    label
        Who or what the link is for ("reviewer 2"), up to 255 characters.
    layers
        Layer names of the dataset the link is limited to; ``None`` grants all of them.

    Raises
    ------
    PermissionDeniedError
        The actor may see the dataset but not share it.
    LayerNotFoundError
        A layer is not in the dataset.
    """
    if (dataset is None) == (annotation is None):
        msg = "create_link needs exactly one target: dataset=... or annotation=..."
        raise TypeError(msg)
    target = dataset if dataset is not None else _dataset_of(session, annotation)
    _require_share(session, actor, target)
    if annotation is not None and layers is not None:
        msg = "an annotation link grants the annotation's one layer: leave layers=None"
        raise ValueError(msg)
    checked_layers = _check_layers(target, layers) if layers is not None else None
    token = new_token()
    record = LinkRecord(
        token_hash=token_hash(token),
        token_secret=box.encrypt(token.encode()),
        dataset_id=dataset.id if dataset is not None else None,
        annotation_id=annotation.id if annotation is not None else None,
        layers=json.dumps(checked_layers) if checked_layers is not None else None,
        label=_check_label(label),
        created_by=actor.id,
        created_at=utcnow(),
        expires_at=parse_expiry(expires),
        use_count=0,
    )
    session.add(record)
    session.flush()
    return record, token


def list_links(
    session: Session,
    actor: User,
    *,
    dataset: DatasetRecord | None = None,
    annotation: Annotation | None = None,
) -> list[LinkRecord]:
    """The links of a dataset (not its annotations') or of an annotation, oldest first.

    With neither target: every link the actor may share (an admin: all).
    """
    if dataset is not None and annotation is not None:
        msg = "list_links takes one target: dataset=... or annotation=..."
        raise TypeError(msg)
    if dataset is not None or annotation is not None:
        target = dataset if dataset is not None else _dataset_of(session, annotation)
        _require_share(session, actor, target)
        where = (
            LinkRecord.dataset_id == dataset.id
            if dataset is not None
            else LinkRecord.annotation_id == _id(annotation)
        )
        stmt = select(LinkRecord).where(where)
        return list(session.scalars(stmt.order_by(LinkRecord.created_at, LinkRecord.id)))
    # Every link the actor may share: SQL keeps the visible datasets, the share rule the rest.
    ann = aliased(Annotation)
    rows = session.execute(
        select(LinkRecord, DatasetRecord)
        .outerjoin(ann, ann.id == LinkRecord.annotation_id)
        .join(
            DatasetRecord, DatasetRecord.id == func.coalesce(LinkRecord.dataset_id, ann.dataset_id)
        )
        .where(visible_datasets_clause(actor))
        .order_by(LinkRecord.created_at, LinkRecord.id)
    ).all()
    shares: dict[int, bool] = {}
    for _, ds in rows:
        if ds.id not in shares:
            shares[ds.id] = can(session, actor, "share", ds)
    return [link for link, ds in rows if shares[ds.id]]


def get_link(session: Session, actor: User, link_id: int) -> LinkRecord:
    """One link the actor may share; :class:`LinkNotFoundError` otherwise (or if it is gone)."""
    # Ids are 32-bit INTEGER columns: PostgreSQL refuses to compare with a larger number.
    in_range = isinstance(link_id, int) and 0 < link_id < 1 << 31
    record = session.get(LinkRecord, link_id) if in_range else None
    target = _target_of(session, record) if record is not None else None
    if record is None or target is None or not can_view(session, actor, target):
        msg = f"no link {link_id!r}; list_links shows the links of a dataset you may share"
        raise LinkNotFoundError(msg)
    _require_share(session, actor, target)
    return record


def update_link(
    session: Session,
    actor: User,
    link_id: int,
    *,
    expires: Expiry | _Unset = _UNSET,
    label: str | None = None,
) -> LinkRecord:
    """Change when a link expires (``None``: never) and/or its label.

    A revoked link stays revoked: create a new one instead.
    """
    record = get_link(session, actor, link_id)
    if record.revoked_at is not None and not isinstance(expires, _Unset):
        msg = f"link {link_id} is revoked; its expiry cannot change (create a new link)"
        raise ValueError(msg)
    if not isinstance(expires, _Unset):
        record.expires_at = parse_expiry(expires)
    if label is not None:
        record.label = _check_label(label)
    session.flush()
    return record


def revoke_link(
    session: Session, actor: User, link_id: int, *, when: dt.datetime | None = None
) -> LinkRecord:
    """Revoke a link for good: its token stops working at once. Revoking again changes nothing."""
    record = get_link(session, actor, link_id)
    if record.revoked_at is None:
        record.revoked_at = _utc(when) if when is not None else utcnow()
        session.flush()
    return record


def link_token(session: Session, box: SecretBox, actor: User, link_id: int) -> str:
    """The token of a link, again (to copy its URL); needs the share right."""
    record = get_link(session, actor, link_id)
    token = box.decrypt(record.token_secret).decode()
    if not hmac.compare_digest(token_hash(token), record.token_hash):
        msg = f"link {link_id}'s stored token does not match its hash; revoke it and create anew"
        raise SecretKeyError(msg)
    return token


def link_layers(record: LinkRecord) -> tuple[str, ...] | None:
    """The layers a link is limited to; ``None`` for all."""
    return tuple(json.loads(record.layers)) if record.layers is not None else None


def link_status(record: LinkRecord, now: dt.datetime | None = None) -> LinkStatus:
    """``"revoked"``, ``"expired"`` or ``"active"`` at ``now`` (default: now)."""
    now = _utc(now) if now is not None else utcnow()
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


# -- using links ---------------------------------------------------------------------------


def resolve_token(
    session: Session, token: str, now: dt.datetime | None = None
) -> ResolvedLink | None:
    """What ``token`` grants, or ``None`` if it is unknown, expired or revoked.

    No permission check: holding the token is the permission. The token is hashed before
    anything looks at it, so how long this takes does not depend on its content: any
    string, malformed or not, costs one hash and one indexed lookup.
    """
    digest = token_hash(token if isinstance(token, str) else "")
    ann = aliased(Annotation)
    row = session.execute(
        select(LinkRecord, DatasetRecord, ann)
        .outerjoin(ann, ann.id == LinkRecord.annotation_id)
        .join(
            DatasetRecord, DatasetRecord.id == func.coalesce(LinkRecord.dataset_id, ann.dataset_id)
        )
        .where(LinkRecord.token_hash == digest)
    ).first()
    # compare_digest: the database's comparison may be collation-dependent or short-circuit.
    if row is None or not hmac.compare_digest(row[0].token_hash, digest):
        return None
    link, dataset, annotation = row
    if link_status(link, now) != "active":
        return None
    expires = link.expires_at
    return ResolvedLink(link.id, dataset, annotation, link_layers(link), expires)


def record_use(
    session: Session, link_id: int, when: dt.datetime | None = None, *, count: int = 1
) -> None:
    """Count ``count`` uses of a link, the latest at ``when``.

    A single UPDATE, so concurrent uses are all counted; servers batch the uses of many
    requests into one call.
    """
    when = _utc(when) if when is not None else utcnow()
    session.execute(
        update(LinkRecord)
        .where(LinkRecord.id == link_id)
        .values(
            use_count=LinkRecord.use_count + count,
            # Uses may commit out of order: keep the latest time.
            last_used_at=case(
                (LinkRecord.last_used_at.is_(None), when),
                (LinkRecord.last_used_at < when, when),
                else_=LinkRecord.last_used_at,
            ),
        )
        .execution_options(synchronize_session=False)
    )


# -- helpers -------------------------------------------------------------------------------


def _id(annotation: Annotation | None) -> int:
    assert annotation is not None
    return annotation.id


def _dataset_of(session: Session, annotation: Annotation | None) -> DatasetRecord:
    assert annotation is not None
    return session.get_one(DatasetRecord, annotation.dataset_id)


def _target_of(session: Session, record: LinkRecord) -> DatasetRecord | None:
    if record.dataset_id is not None:
        return session.get(DatasetRecord, record.dataset_id)
    annotation = session.get(Annotation, record.annotation_id)
    return session.get(DatasetRecord, annotation.dataset_id) if annotation is not None else None


def _require_share(session: Session, actor: User, dataset: DatasetRecord) -> None:
    # DatasetNotFoundError when the actor may not even view it, PermissionDeniedError else.
    require(session, actor, "share", dataset)


def _check_layers(dataset: DatasetRecord, layers: object) -> list[str]:
    # A bare string would otherwise be taken as a list of one-letter layer names.
    if not isinstance(layers, list | tuple) or not layers:
        msg = "layers must be a non-empty list of layer names (or None for all layers)"
        raise ValueError(msg)
    available = DataSource.from_json(dataset.datasource).layers
    names = [str(name) for name in layers]
    unknown = [name for name in names if name not in available]
    if unknown:
        msg = (
            f"dataset {dataset.slug!r} has no layer {', '.join(map(repr, unknown))}; "
            f"its layers are {', '.join(map(repr, available)) or 'none'}"
        )
        raise LayerNotFoundError(msg)
    return list(dict.fromkeys(names))


def _check_label(label: str) -> str:
    if not isinstance(label, str) or len(label) > _MAX_LABEL:
        msg = f"a link label is a string of at most {_MAX_LABEL} characters"
        raise ValueError(msg)
    return label
