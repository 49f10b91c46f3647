"""The catalog schema (SQLAlchemy 2). Migrations in ``catalog/migrations`` create and evolve it.

Portable across SQLite and PostgreSQL: no backend-specific types; times are timezone-aware
UTC; ids are integers except credential ids, which appear in data-source JSON and therefore
are opaque strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ROLES",
    "Annotation",
    "AnnotationVersion",
    "Base",
    "CredentialRecord",
    "DatasetRecord",
    "DatasetTag",
    "DatasetTeam",
    "LinkRecord",
    "Membership",
    "Role",
    "SlugAlias",
    "Tag",
    "Team",
    "User",
]

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "editor", "viewer")
_ROLE_CHECK = "role IN ('admin', 'editor', 'viewer')"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite stores no zone and hands naive datetimes back; this type stores UTC and always
    returns aware UTC values, so callers can compare them with ``utcnow()``. Naive values
    given to it are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="ck_users_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="team", cascade="all, delete-orphan"
    )


class Membership(Base):
    """A user in a team, with the role they have on the team's datasets."""

    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="ck_memberships_role"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[int] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))

    user: Mapped[User] = relationship(back_populates="memberships")
    team: Mapped[Team] = relationship(back_populates="memberships")


class DatasetTeam(Base):
    """A team allowed to read (and, by its members' roles, edit) a private dataset."""

    __tablename__ = "dataset_teams"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[int] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )


class DatasetTag(Base):
    __tablename__ = "dataset_tags"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    __table_args__ = (Index("ix_dataset_tags_tag", "tag_id", "dataset_id"),)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)


class DatasetRecord(Base):
    """An imported dataset: its metadata and where its data lives (never the data itself)."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    datasource: Mapped[str] = mapped_column(Text)  # DataSource.to_json()
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Lower-cased name, description, tags and layer names: what search matches against.
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary="dataset_tags", order_by="Tag.name")
    teams: Mapped[list[Team]] = relationship(secondary="dataset_teams", order_by="Team.name")
    __table_args__ = (Index("ix_datasets_public", "public"), Index("ix_datasets_owner", "owner_id"))


class SlugAlias(Base):
    """An old name of a renamed dataset: it keeps answering to it."""

    __tablename__ = "slug_aliases"

    slug: Mapped[str] = mapped_column(String(255), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))


class CredentialRecord(Base):
    """A storage credential, Fernet-encrypted; only ``kind`` and ``name`` are in clear."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "http" | "s3" | "gcs"
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the credential JSON
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("dataset_id", "name", name="uq_annotations_dataset_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    fallback_layer: Mapped[str | None] = mapped_column(String(255))
    storage_url: Mapped[str] = mapped_column(Text)
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AnnotationVersion(Base):
    __tablename__ = "annotation_versions"

    annotation_id: Mapped[int] = mapped_column(
        ForeignKey("annotations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LinkRecord(Base):
    """A private link: a token granting read access to a dataset (some layers) or annotation.

    The token itself is never stored in clear: ``token_hash`` (SHA-256, hex) finds the link,
    ``token_secret`` (Fernet) lets its owner copy the URL again.
    """

    __tablename__ = "links"
    __table_args__ = (
        CheckConstraint(
            "(dataset_id IS NULL) <> (annotation_id IS NULL)", name="ck_links_one_target"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_secret: Mapped[bytes] = mapped_column(LargeBinary)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    annotation_id: Mapped[int | None] = mapped_column(
        ForeignKey("annotations.id", ondelete="CASCADE"), index=True
    )
    layers: Mapped[str | None] = mapped_column(Text)  # JSON list of layer names, None = all
    label: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    use_count: Mapped[int] = mapped_column(Integer, default=0)
