"""Stored storage credentials: encrypted at rest, referenced by opaque id, never handed out.

A credential (``HttpCredential``, ``S3Credential``, ``GcsCredential``) is serialised to JSON,
encrypted with the catalog's :class:`~wkjupyter.catalog.crypto.SecretBox` and stored under
an id ``cred_<24 hex>`` that data-source JSON (``MagLevel.credential_id``) refers to. Only
``name`` and ``kind`` are stored in clear. Public functions return :class:`CredentialInfo`
(no secret); :func:`load_credential` is the readers' internal way back to the secret.

Rights: the owner of a credential or an admin may use, rotate and delete it; storing one
needs the import right (editor or admin); admins list all, others their own. Credentials the
actor may not use look absent (:class:`~wkjupyter.errors.CredentialNotFoundError`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from wkjupyter.catalog.models import CredentialRecord, DatasetRecord, utcnow
from wkjupyter.catalog.permissions import can_view, require
from wkjupyter.errors import (
    ConflictError,
    CredentialNotFoundError,
    InvalidNameError,
    SecretKeyError,
)
from wkjupyter.sources import Credential, GcsCredential, HttpCredential, S3Credential

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.crypto import SecretBox
    from wkjupyter.catalog.models import User

__all__ = [
    "CredentialInfo",
    "CredentialKind",
    "credential_from_json",
    "delete_credential",
    "find_credential_for",
    "get_credential",
    "list_credentials",
    "load_credential",
    "rotate_credential",
    "store_credential",
    "store_or_reuse",
    "use_credential",
]

CredentialKind = Literal["http", "s3", "gcs"]
_KINDS: tuple[CredentialKind, ...] = ("http", "s3", "gcs")
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """What may be known about a stored credential: everything but the secret."""

    id: str
    name: str
    kind: CredentialKind
    owner: str
    created_at: dt.datetime
    rotated_at: dt.datetime | None

    @classmethod
    def of(cls, record: CredentialRecord, owner: str) -> CredentialInfo:
        kind: CredentialKind = _check_kind(record.kind)
        return cls(
            record.id,
            record.name,
            kind,
            owner,
            record.created_at,
            record.rotated_at,
        )


def store_credential(
    session: Session,
    box: SecretBox,
    actor: User,
    credential: Credential,
    *,
    name: str | None = None,
) -> CredentialInfo:
    """Encrypt and store ``credential``; its info, whose ``id`` data sources refer to.

    Parameters
    ----------
    name
        Unique, human-readable name (default ``"<kind>-<random>"``).

    Raises
    ------
    PermissionDeniedError
        The actor may not import (viewers).
    ConflictError
        A credential of that name exists.
    """
    require(session, actor, "import")  # credentials exist to import datasets with
    kind = kind_of(credential)
    cred_id = f"cred_{secrets.token_hex(12)}"
    name = _check_name(name if name is not None else f"{kind}-{cred_id[-8:]}")
    if session.scalar(select(CredentialRecord.id).where(CredentialRecord.name == name)):
        msg = (
            f"a credential named {name!r} already exists; choose another name, or replace "
            "its secret with rotate_credential"
        )
        raise ConflictError(msg)
    record = CredentialRecord(
        id=cred_id,
        name=name,
        kind=kind,
        secret=box.encrypt(_serialise(credential)),
        owner_id=actor.id,
        created_at=utcnow(),
    )
    session.add(record)
    session.flush()
    return CredentialInfo.of(record, actor.name)


def list_credentials(session: Session, actor: User) -> list[CredentialInfo]:
    """The credentials the actor may use, by name: all for an admin, their own otherwise."""
    from wkjupyter.catalog.models import User as UserRecord

    stmt = select(CredentialRecord, UserRecord.name).join(
        UserRecord, UserRecord.id == CredentialRecord.owner_id
    )
    if actor.role != "admin":
        stmt = stmt.where(CredentialRecord.owner_id == actor.id)
    rows = session.execute(stmt.order_by(CredentialRecord.name)).all()
    return [CredentialInfo.of(record, owner) for record, owner in rows]


def get_credential(session: Session, actor: User, name_or_id: str) -> CredentialInfo:
    """The info of one credential the actor may use (by name or id)."""
    record = _usable(session, actor, name_or_id)
    return CredentialInfo.of(record, _owner_name(session, record))


def use_credential(session: Session, actor: User, name_or_id: str) -> str:
    """The id to put into a data source for a credential the actor may use."""
    return _usable(session, actor, name_or_id).id


def rotate_credential(
    session: Session, box: SecretBox, actor: User, name_or_id: str, new_credential: Credential
) -> CredentialInfo:
    """Replace the secret of a credential; its id stays, so datasets using it keep working.

    Raises
    ------
    ValueError
        ``new_credential`` is of another kind (an S3 key cannot replace an HTTP password).
    """
    record = _usable(session, actor, name_or_id)
    kind = kind_of(new_credential)
    if kind != record.kind:
        msg = (
            f"credential {record.name!r} is of kind {record.kind!r}; it cannot be rotated to a "
            f"{kind!r} credential (store that one under a new name)"
        )
        raise ValueError(msg)
    record.secret = box.encrypt(_serialise(new_credential))
    record.rotated_at = utcnow()
    session.flush()
    return CredentialInfo.of(record, _owner_name(session, record))


def delete_credential(session: Session, actor: User, name_or_id: str) -> None:
    """Delete a credential that no dataset uses any more.

    Raises
    ------
    ConflictError
        Datasets still read their data with it; the message names those the actor can see.
    """
    record = _usable(session, actor, name_or_id)
    users = datasets_using(session, record.id)
    if users:
        shown = [d.slug for d in users if can_view(session, actor, d)]
        names = ", ".join(repr(s) for s in shown)
        if len(users) > len(shown):
            names += f"{', ' if shown else ''}{len(users) - len(shown)} dataset(s) you cannot see"
        msg = (
            f"credential {record.name!r} is still used by {names}; remove it from their "
            "layers or delete them first (or rotate it to change its secret)"
        )
        raise ConflictError(msg)
    session.delete(record)
    session.flush()


def datasets_using(session: Session, credential_id: str) -> list[DatasetRecord]:
    """The datasets whose data source refers to ``credential_id`` (no permission check)."""
    # LIKE narrows the candidates; parsing the JSON confirms (a description may quote an id).
    candidates = session.scalars(
        select(DatasetRecord)
        .where(DatasetRecord.datasource.contains(credential_id, autoescape=True))
        .order_by(DatasetRecord.slug)
    )
    return [d for d in candidates if credential_id in _credential_ids(d.datasource)]


def load_credential(session: Session, box: SecretBox, credential_id: str) -> Credential:
    """The credential itself, for reading data the actor may view. Internal: no permission check.

    Raises
    ------
    CredentialNotFoundError
        No credential has this id (it was deleted).
    SecretKeyError
        The catalog's key is not the one it was encrypted with.
    """
    record = session.get(CredentialRecord, credential_id)
    if record is None:
        msg = (
            f"the stored credential {credential_id!r} no longer exists; ask the dataset's "
            "owner to store a new one and use it for the dataset's layers"
        )
        raise CredentialNotFoundError(msg)
    return _deserialise(box.decrypt(record.secret), record.kind)


def find_credential_for(
    session: Session, box: SecretBox, actor: User, credential: Credential
) -> str | None:
    """The id of a credential the actor may use holding exactly ``credential``, if any.

    Lets an import reuse a stored credential instead of storing the same secret twice.
    Credentials encrypted with a key no longer available are skipped.
    """
    kind = kind_of(credential)
    stmt = select(CredentialRecord).where(CredentialRecord.kind == kind)
    if actor.role != "admin":
        stmt = stmt.where(CredentialRecord.owner_id == actor.id)
    wanted = _serialise(credential)
    for record in session.scalars(stmt.order_by(CredentialRecord.created_at)):
        try:
            stored = box.decrypt(record.secret)
        except SecretKeyError:
            continue
        if secrets.compare_digest(stored, wanted):
            return record.id
    return None


def kind_of(credential: object) -> CredentialKind:
    """``"http"``, ``"s3"`` or ``"gcs"``; ``TypeError`` for anything else."""
    if isinstance(credential, HttpCredential):
        return "http"
    if isinstance(credential, S3Credential):
        return "s3"
    if isinstance(credential, GcsCredential):
        return "gcs"
    msg = (
        f"expected an HttpCredential, S3Credential or GcsCredential, got "
        f"{type(credential).__name__}"
    )
    raise TypeError(msg)


# -- helpers -------------------------------------------------------------------------------


def _usable(session: Session, actor: User, name_or_id: str) -> CredentialRecord:
    # By id first: ids are what data sources hold; a name shaped like an id must not win.
    record = session.get(CredentialRecord, name_or_id) or session.scalar(
        select(CredentialRecord).where(CredentialRecord.name == name_or_id)
    )
    if record is None or (actor.role != "admin" and record.owner_id != actor.id):
        # Another user's credential looks absent, as a private dataset does.
        msg = (
            f"no credential {name_or_id!r} that {actor.name} may use; list_credentials shows "
            "yours (an admin sees all)"
        )
        raise CredentialNotFoundError(msg)
    return record


def _owner_name(session: Session, record: CredentialRecord) -> str:
    from wkjupyter.catalog.models import User as UserRecord

    return session.get_one(UserRecord, record.owner_id).name


def store_or_reuse(
    session: Session, box: SecretBox, actor: User, credential: Credential | None
) -> str | None:
    """The id of ``credential`` in the catalog: an equal one the actor may use, else stored now.

    ``None`` for no credential.
    """
    if credential is None:
        return None
    existing = find_credential_for(session, box, actor, credential)
    if existing is not None:
        return existing
    return store_credential(session, box, actor, credential).id


def credential_from_json(d: object) -> Credential:
    """A credential from its JSON form, as the REST API receives it.

    ``{"kind": "http", "username": ..., "password": ...}`` or ``{"kind": "http", "token": ...}``,
    ``{"kind": "s3", "key_id": ..., "secret": ..., "endpoint_url"?: ..., "region"?: ...}``,
    ``{"kind": "gcs", "service_account_json": ..., "endpoint_url"?: ...}``.

    Raises
    ------
    ValueError
        The object is not one of these; the message names what is missing (never a value).
    """
    fields = {
        "http": (HttpCredential, (), ("username", "password", "token")),
        "s3": (S3Credential, ("key_id", "secret"), ("endpoint_url", "region")),
        "gcs": (GcsCredential, ("service_account_json",), ("endpoint_url",)),
    }
    kind = d.get("kind") if isinstance(d, dict) else None
    if not isinstance(d, dict) or not isinstance(kind, str) or kind not in fields:
        msg = "a credential is an object with a 'kind' of 'http', 's3' or 'gcs'"
        raise ValueError(msg)
    cls, required, optional = fields[kind]
    unknown = sorted(set(d) - {"kind", *required, *optional})
    missing = [k for k in required if not d.get(k)]
    if unknown or missing:
        msg = (
            f"a {kind!r} credential needs {', '.join(required) or 'username+password or token'}"
            f" and may have {', '.join(optional)}"
            + (f"; unknown fields: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
        raise ValueError(msg)
    values = {k: d[k] for k in (*required, *optional) if d.get(k) is not None}
    for key, value in values.items():
        if not isinstance(value, str) and not (
            key == "service_account_json" and isinstance(value, dict)
        ):
            msg = f"the credential field {key!r} must be a string"
            raise ValueError(msg)
    credential: Credential = cls(**values)
    return credential


def _serialise(credential: Credential) -> bytes:
    fields: dict[str, Any]
    if isinstance(credential, HttpCredential):
        fields = {
            "username": credential.username,
            "password": credential.password,
            "token": credential.token,
        }
    elif isinstance(credential, S3Credential):
        fields = {
            "key_id": credential.key_id,
            "secret": credential.secret,
            "endpoint_url": credential.endpoint_url,
            "region": credential.region,
        }
    else:
        fields = {
            "service_account_json": credential.service_account_json,
            "endpoint_url": credential.endpoint_url,
        }
    # Sorted keys: the same credential always serialises the same (find_credential_for).
    return json.dumps({"v": 1, "kind": kind_of(credential), **fields}, sort_keys=True).encode()


def _deserialise(plaintext: bytes, kind: str) -> Credential:
    d = json.loads(plaintext)
    if d.get("kind") != kind:  # the clear-text kind column was edited: trust neither
        msg = "a stored credential's kind does not match its encrypted content"
        raise SecretKeyError(msg)
    if kind == "http":
        return HttpCredential(d["username"], d["password"], d["token"])
    if kind == "s3":
        return S3Credential(d["key_id"], d["secret"], d["endpoint_url"], d["region"])
    return GcsCredential(d["service_account_json"], d["endpoint_url"])


def _credential_ids(datasource_json: str) -> set[str]:
    try:
        doc = json.loads(datasource_json)
    except ValueError:
        return set()
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            value = node.get("credentialId")
            if isinstance(value, str):
                found.add(value)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(doc)
    return found


def _check_kind(kind: str) -> CredentialKind:
    for known in _KINDS:
        if kind == known:
            return known
    msg = f"unknown credential kind {kind!r} in the catalog"
    raise ValueError(msg)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        msg = f"invalid credential name {name[:40]!r}: use 1 to {_MAX_NAME} printable characters"
        raise InvalidNameError(msg)
    return name
