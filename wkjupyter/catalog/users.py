"""Users, teams and memberships: who acts, and the groups datasets are shared with.

The acting user comes from :func:`default_user_name` (``$JUPYTERHUB_USER`` or the OS user)
and is registered on first use by :func:`actor_for`. The first user of a new catalog becomes
its admin; every later user registered that way becomes an *editor* (:data:`DEFAULT_ROLE`):
a hub's users are colleagues who import and organise their own data, and an editor still
sees nobody's private datasets unless they are shared with a team of theirs. Admins make
read-only accounts with :func:`set_role`.

Listing users and teams is open to everyone (team names are what datasets are shared with);
every change needs the ``manage`` right (admins).
"""

from __future__ import annotations

import getpass
import os
import unicodedata
from typing import TYPE_CHECKING, Final

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload

from wkjupyter.catalog.models import (
    Annotation,
    AnnotationVersion,
    CredentialRecord,
    DatasetRecord,
    DatasetTeam,
    LinkRecord,
    Membership,
    Role,
    Team,
    User,
    utcnow,
)
from wkjupyter.catalog.permissions import parse_role, require
from wkjupyter.errors import ConflictError, InvalidNameError, TeamNotFoundError, UserNotFoundError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "DEFAULT_ROLE",
    "actor_for",
    "add_member",
    "add_team",
    "add_user",
    "check_name",
    "default_user_name",
    "list_members",
    "list_teams",
    "list_users",
    "remove_member",
    "remove_team",
    "remove_user",
    "set_member_role",
    "set_role",
]

#: The role of users registered after the first (who becomes admin).
DEFAULT_ROLE: Final[Role] = "editor"
_MAX_NAME: Final = 255
# pg_advisory_xact_lock key ("wkjusers"): serialises user creation and admin demotion.
_USERS_LOCK: Final = 0x776B6A7573657273


def default_user_name() -> str:
    """The acting user's name: ``$JUPYTERHUB_USER``, else the operating-system user."""
    name = os.environ.get("JUPYTERHUB_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container uid without a passwd entry
        return "jupyter"


def check_name(name: str, what: str = "user") -> str:
    """``name`` stripped, if it is a usable user or team name; else :class:`InvalidNameError`."""
    value = name.strip() if isinstance(name, str) else ""
    if not value or len(value) > _MAX_NAME:
        msg = f"a {what} name needs 1 to {_MAX_NAME} characters, got {name!r}"
        raise InvalidNameError(msg)
    if any(unicodedata.category(c).startswith("C") for c in value):
        msg = f"a {what} name may not contain control characters: {name!r}"
        raise InvalidNameError(msg)
    return value


def actor_for(session: Session, name: str) -> User:
    """The user called ``name``, registered now if new (the very first one as admin).

    Race-free across processes: the new row is inserted before the catalog is counted, and
    that insert holds SQLite's write lock (PostgreSQL: an advisory lock) until commit, so of
    two processes registering the first two users exactly one sees itself alone.
    """
    name = check_name(name)
    user = session.scalar(select(User).where(User.name == name))
    if user is not None:
        return user
    user, created = _insert_user(session, name, DEFAULT_ROLE)
    if created and session.scalar(select(func.count()).select_from(User)) == 1:
        user.role = "admin"
        session.flush()
    return user


def list_users(session: Session, actor: User) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def add_user(session: Session, actor: User, name: str, role: str = DEFAULT_ROLE) -> User:
    """Register a user with a role (admins only).

    Raises
    ------
    ConflictError
        A user of that name exists (change its role with :func:`set_role`).
    """
    require(session, actor, "manage")
    name, role = check_name(name), parse_role(role)
    user, created = _insert_user(session, name, role)
    if not created:
        msg = f"user {name!r} already exists (as {user.role}); use set_role to change the role"
        raise ConflictError(msg)
    return user


def set_role(session: Session, actor: User, user: User | str, role: str) -> User:
    """Change a user's global role (admins only); the last admin cannot be demoted."""
    require(session, actor, "manage")
    role = parse_role(role)
    target = _user(session, user)
    if target.role != role:
        _change_role_keeping_an_admin(session, target, role, "demote")
    return target


def remove_user(
    session: Session, actor: User, user: User | str, *, transfer_to: User | str | None = None
) -> None:
    """Remove a user and their team memberships (admins only).

    What the user owns (datasets, credentials, annotations, links, annotation versions) is
    never deleted with them: pass ``transfer_to`` to give it to another user.

    Raises
    ------
    ConflictError
        The user is the last admin, or owns things and no ``transfer_to`` was given.
    """
    require(session, actor, "manage")
    target = _user(session, user)
    heir = _user(session, transfer_to) if transfer_to is not None else None
    if heir is not None and heir.id == target.id:
        msg = f"cannot transfer {target.name}'s datasets to {target.name} while removing them"
        raise ConflictError(msg)
    owned = _owned(session, target)
    if owned and heir is None:
        what = ", ".join(f"{n} {kind}" for kind, n in owned.items())
        msg = (
            f"{target.name} owns {what}; pass transfer_to='<user>' to give them to someone "
            "else, or delete them first"
        )
        raise ConflictError(msg)
    if target.role == "admin":  # demote first: refused (and undone) if no admin would remain
        _change_role_keeping_an_admin(session, target, "viewer", "remove")
    if heir is not None:
        for column in _OWNER_COLUMNS.values():
            session.execute(
                update(column.class_).where(column == target.id).values({column.key: heir.id})
            )
    session.delete(target)
    session.flush()


def list_teams(session: Session, actor: User) -> list[Team]:
    """Every team, by name, with its memberships loaded."""
    stmt = (
        select(Team)
        .options(selectinload(Team.memberships).selectinload(Membership.user))
        .order_by(Team.name)
    )
    return list(session.scalars(stmt))


def add_team(session: Session, actor: User, name: str) -> Team:
    """Create a team (admins only); share datasets with it through their allowed teams."""
    require(session, actor, "manage")
    name = check_name(name, "team")
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        msg = f"team {name!r} already exists; choose another name"
        raise ConflictError(msg)
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team


def remove_team(session: Session, actor: User, team: Team | str) -> None:
    """Delete a team: its memberships go, and datasets shared with it no longer are."""
    require(session, actor, "manage")
    record = _team(session, team)
    # Explicit, not only ON DELETE CASCADE: loaded DatasetRecord.teams must not go stale.
    session.execute(delete(DatasetTeam).where(DatasetTeam.team_id == record.id))
    session.delete(record)
    session.flush()
    session.expire_all()


def list_members(session: Session, actor: User, team: Team | str) -> list[Membership]:
    """The memberships of a team (``.user``, ``.role``), by user name."""
    record = _team(session, team)
    stmt = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.team_id == record.id)
        .options(selectinload(Membership.user))
        .order_by(User.name)
    )
    return list(session.scalars(stmt))


def add_member(
    session: Session, actor: User, team: Team | str, user: User | str, role: str = DEFAULT_ROLE
) -> Membership:
    """Put a user into a team with a role on the team's datasets (admins only).

    Adding someone who is already a member sets their role: re-running a notebook cell is
    harmless.
    """
    require(session, actor, "manage")
    role = parse_role(role, "membership role")
    team_record, user_record = _team(session, team), _user(session, user)
    membership = session.get(Membership, (user_record.id, team_record.id))
    if membership is None:
        membership = Membership(user=user_record, team=team_record, role=role)
        session.add(membership)
    else:
        membership.role = role
    session.flush()
    return membership


def set_member_role(
    session: Session, actor: User, team: Team | str, user: User | str, role: str
) -> Membership:
    """Change a member's role in a team (admins only)."""
    require(session, actor, "manage")
    membership = _membership(session, team, user)
    membership.role = parse_role(role, "membership role")
    session.flush()
    return membership


def remove_member(session: Session, actor: User, team: Team | str, user: User | str) -> None:
    """Take a user out of a team (admins only)."""
    require(session, actor, "manage")
    session.delete(_membership(session, team, user))
    session.flush()


# -- helpers ----------------------------------------------------------------------------------

_OWNER_COLUMNS = {
    "dataset(s)": DatasetRecord.owner_id,
    "credential(s)": CredentialRecord.owner_id,
    "annotation(s)": Annotation.owner_id,
    "annotation version(s)": AnnotationVersion.author_id,
    "link(s)": LinkRecord.created_by,
}


def _owned(session: Session, user: User) -> dict[str, int]:
    counts = {
        kind: session.scalar(select(func.count()).where(column == user.id)) or 0
        for kind, column in _OWNER_COLUMNS.items()
    }
    return {kind: n for kind, n in counts.items() if n}


def _lock_users(session: Session) -> None:
    # PostgreSQL's READ COMMITTED would let two transactions each count the other's
    # uncommitted change away; SQLite needs nothing: the first write holds its only write lock.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _USERS_LOCK})


def _insert_user(session: Session, name: str, role: Role) -> tuple[User, bool]:
    """Insert ``name`` unless it exists (also when another process inserts it right now)."""
    _lock_users(session)
    values = {"name": name, "role": role, "created_at": utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert_ = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = insert_(User).values(values).on_conflict_do_nothing(index_elements=["name"])
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
        created = session.execute(stmt.returning(User.id)).first() is not None
    else:  # other backends: plain insert; a concurrent twin fails the unique constraint
        created = session.scalar(select(User.id).where(User.name == name)) is None
        if created:
            session.execute(insert(User).values(values))
    user = session.scalars(
        select(User).where(User.name == name).execution_options(populate_existing=True)
    ).one()
    return user, created


def _change_role_keeping_an_admin(session: Session, user: User, role: Role, doing: str) -> None:
    # Write first, then count: the write holds the lock that keeps the count true (see
    # _lock_users). Undo before raising so a caller that catches the error keeps a sane session.
    _lock_users(session)
    old = user.role
    user.role = role
    session.flush()
    if session.scalar(select(func.count()).where(User.role == "admin")) == 0:
        user.role = old
        session.flush()
        msg = f"cannot {doing} {user.name}: they are the last admin; make another user admin first"
        raise ConflictError(msg)


def _user(session: Session, user: User | str) -> User:
    if isinstance(user, User):
        return user
    record = session.scalar(select(User).where(User.name == user.strip()))
    if record is None:
        msg = f"no user {user!r}; list_users() shows who exists (add_user registers one)"
        raise UserNotFoundError(msg)
    return record


def _team(session: Session, team: Team | str) -> Team:
    if isinstance(team, Team):
        return team
    record = session.scalar(select(Team).where(Team.name == team.strip()))
    if record is None:
        msg = f"no team {team!r}; list_teams() shows the teams (add_team creates one)"
        raise TeamNotFoundError(msg)
    return record


def _membership(session: Session, team: Team | str, user: User | str) -> Membership:
    team_record, user_record = _team(session, team), _user(session, user)
    membership = session.get(Membership, (user_record.id, team_record.id))
    if membership is None:
        msg = f"{user_record.name} is not a member of team {team_record.name!r}; use add_member"
        raise UserNotFoundError(msg)
    return membership
