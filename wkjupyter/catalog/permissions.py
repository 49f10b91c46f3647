"""Who may do what: the permission rules as a pure function, and their checks in a session.

:func:`allowed` is the whole policy; everything else gathers its inputs from the catalog.
The service modules call :func:`require` first thing; searches and listings filter with
:func:`visible_datasets_clause`, so datasets the actor may not see are never even loaded.

A private dataset the actor cannot view looks *absent* (:class:`DatasetNotFoundError`),
never "forbidden": its name must not leak through the kind of error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

from sqlalchemy import ColumnElement, or_, select, true

from wkjupyter.catalog.models import DatasetRecord, DatasetTeam, Membership, Role
from wkjupyter.errors import DatasetNotFoundError, PermissionDeniedError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import User

__all__ = [
    "ACTIONS",
    "DATASET_ACTIONS",
    "Action",
    "Relation",
    "allowed",
    "can",
    "can_view",
    "not_found_message",
    "parse_role",
    "relation_of",
    "require",
    "visible_datasets_clause",
]

Action = Literal["view", "edit", "share", "administer", "import", "manage"]
Relation = Literal["owner", "team", "other"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
#: Actions that are about one dataset (``require`` needs the dataset for them).
DATASET_ACTIONS: Final[frozenset[Action]] = frozenset({"view", "edit", "share", "administer"})

_WRITERS: Final = frozenset({"admin", "editor"})
_RANK: Final[dict[str, int]] = {"viewer": 0, "editor": 1, "admin": 2}


def allowed(
    action: str,
    role: str,
    relation: str,
    public: bool,
    membership_role: str | None = None,
) -> bool:
    """Whether an actor may do ``action``: the catalog's whole permission policy.

    Parameters
    ----------
    action
        ``"view"``, ``"edit"``, ``"share"``, ``"administer"``, ``"import"`` or ``"manage"``.
    role
        The actor's global role: ``"admin"``, ``"editor"`` or ``"viewer"``.
    relation
        The actor's relation to the dataset: ``"owner"``, ``"team"`` (a member of one of
        the dataset's allowed teams) or ``"other"``. Ignored for import and manage.
    public
        Whether the dataset is public. Ignored for import and manage.
    membership_role
        For ``relation="team"``: the actor's best role in the dataset's allowed teams.

    Notes
    -----
    ======================  =======================================================
    action                  allowed for
    ======================  =======================================================
    view (list, get, read)  admin; owner; team member (any membership role); anyone
                            if public
    edit (tags, rename,     admin; owner who is admin/editor; team member whose
    description, layers)    membership role is admin/editor
    share (links)           the same as edit
    administer (public,     admin; owner who is admin/editor
    teams, delete)
    import                  admin, editor
    manage (users, teams)   admin
    ======================  =======================================================

    A global *viewer* is a read-only account: a team membership never lifts it above its
    global role, so a viewer edits nothing even as an "editor" member of a team. ``public``
    grants viewing only. A relation ``"team"`` without a membership role grants nothing.

    Raises
    ------
    ValueError
        An unknown action, role or relation (a typo must not silently deny or allow).
    """
    if action not in ACTIONS:
        msg = f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"
        raise ValueError(msg)
    parse_role(role)
    if relation not in get_args(Relation):
        msg = f"unknown relation {relation!r}; expected owner, team or other"
        raise ValueError(msg)
    if membership_role is not None:
        parse_role(membership_role, "membership role")
    if role == "admin":
        return True
    if action == "manage":
        return False
    if action == "import":
        return role in _WRITERS
    is_member = relation == "team" and membership_role is not None
    if action == "view":
        return public or relation == "owner" or is_member
    if role not in _WRITERS:  # viewers: read-only, whatever their relation
        return False
    if relation == "owner":
        return True  # edit, share, administer
    if action in ("edit", "share"):
        return is_member and membership_role in _WRITERS
    return False  # administer: owners (and admins) only


def relation_of(
    session: Session, actor: User, dataset: DatasetRecord
) -> tuple[Relation, Role | None]:
    """The actor's relation to a dataset and, for ``"team"``, their best membership role.

    Ownership wins over membership: an owner already has every right a membership could add
    (and a global viewer stays read-only either way).
    """
    if dataset.owner_id == actor.id:
        return "owner", None
    roles = session.scalars(
        select(Membership.role)
        .join(DatasetTeam, DatasetTeam.team_id == Membership.team_id)
        .where(Membership.user_id == actor.id, DatasetTeam.dataset_id == dataset.id)
    ).all()
    if not roles:
        return "other", None
    best = max(roles, key=_RANK.__getitem__)
    return "team", best  # type: ignore[return-value]  # the CHECK constraint keeps roles valid


def can(session: Session, actor: User, action: str, dataset: DatasetRecord | None = None) -> bool:
    """Whether ``actor`` may do ``action`` (on ``dataset`` for the dataset actions)."""
    if action in DATASET_ACTIONS:
        if dataset is None:
            msg = f"the {action!r} right is about a dataset: pass the dataset"
            raise ValueError(msg)
        if actor.role == "admin":  # spares the membership query
            return True
        relation, membership = relation_of(session, actor, dataset)
        return allowed(action, actor.role, relation, dataset.public, membership)
    return allowed(action, actor.role, "other", False)


def can_view(session: Session, actor: User, dataset: DatasetRecord) -> bool:
    """Whether ``actor`` may see ``dataset`` (list, get, read its layers)."""
    return can(session, actor, "view", dataset)


def require(
    session: Session, actor: User, action: str, dataset: DatasetRecord | None = None
) -> None:
    """Raise unless ``actor`` may do ``action`` (on ``dataset``).

    Raises
    ------
    DatasetNotFoundError
        The dataset is private and the actor may not even view it: it looks absent.
    PermissionDeniedError
        The actor sees the dataset (or none is involved) but lacks the right; the message
        names the actor, their role, the missing right and how to get it.
    """
    if can(session, actor, action, dataset):
        return
    if dataset is not None and not can(session, actor, "view", dataset):
        raise DatasetNotFoundError(not_found_message(dataset.slug))
    raise PermissionDeniedError(_denial(actor, action, dataset))


def not_found_message(name: str) -> str:
    """The one message for a dataset that does not exist or may not be seen (no leak)."""
    return f"no dataset {name!r}; check the name with hub.datasets()"


def visible_datasets_clause(actor: User) -> ColumnElement[bool]:
    """A WHERE clause on ``DatasetRecord`` keeping the datasets ``actor`` may view.

    Mirrors the view rule of :func:`allowed` in SQL: public, owned, or allowed to one of
    the actor's teams (any membership role); admins see everything.
    """
    if actor.role == "admin":
        return true()
    team_datasets = (
        select(DatasetTeam.dataset_id)
        .join(Membership, Membership.team_id == DatasetTeam.team_id)
        .where(Membership.user_id == actor.id)
    )
    return or_(
        DatasetRecord.public,
        DatasetRecord.owner_id == actor.id,
        DatasetRecord.id.in_(team_datasets),
    )


# -- messages ---------------------------------------------------------------------------------

_NEEDS: Final[dict[str, tuple[str, str]]] = {
    # action -> (what is refused, what the right needs)
    "view": (
        "view",
        "viewing needs ownership, a team the dataset is shared with, or a public dataset",
    ),
    "edit": (
        "edit",
        "editing needs the editor role on a dataset you own, or the editor role in one of "
        "the teams the dataset is shared with",
    ),
    "share": (
        "share",
        "sharing (links) needs the editor role on a dataset you own, or the editor role in "
        "one of the teams the dataset is shared with",
    ),
    "administer": (
        "administer",
        "changing visibility, teams or deleting needs the editor role and ownership of the "
        "dataset (or the admin role)",
    ),
    "import": ("import datasets", "importing needs the editor or admin role"),
    "manage": ("manage users and teams", "managing users and teams needs the admin role"),
}


def _denial(actor: User, action: str, dataset: DatasetRecord | None) -> str:
    verb, needs = _NEEDS[action]
    target = f" {dataset.slug!r}" if dataset is not None else ""
    if actor.role == "viewer":
        fix = "ask an admin to give you the editor role"
    elif action in ("administer", "manage"):
        fix = "ask the dataset's owner or an admin" if dataset is not None else "ask an admin"
    else:
        fix = "ask an admin to add you as an editor to one of the dataset's teams"
    return f"{actor.name} ({actor.role}) may not {verb}{target}: {needs}; {fix}"


def parse_role(role: str, what: str = "role") -> Role:
    """``role`` if it is ``"admin"``, ``"editor"`` or ``"viewer"``; else a teaching ValueError."""
    if role not in _RANK:
        msg = f"unknown {what} {role!r}; expected admin, editor or viewer"
        raise ValueError(msg)
    return role  # type: ignore[return-value]  # checked just above
