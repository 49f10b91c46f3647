"""Users, teams and memberships: the first admin (also under races), roles, and their guards."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from sqlalchemy import select

from tests.catalog.test_datasets import make_datasource
from wkjupyter.catalog import datasets, users
from wkjupyter.catalog.core import Catalog
from wkjupyter.catalog.models import DatasetRecord, Membership, Team, User
from wkjupyter.errors import (
    ConflictError,
    InvalidNameError,
    PermissionDeniedError,
    TeamNotFoundError,
    UserNotFoundError,
)


def roles(catalog):
    with catalog.session() as s:
        return {u.name: u.role for u in users.list_users(s, s.scalars(select(User)).first())}


# -- the acting user --------------------------------------------------------------------------


def test_first_user_is_admin_later_ones_editors(catalog):
    with catalog.session() as s:
        first = users.actor_for(s, "ada")
        assert users.actor_for(s, "ada") is first
    with catalog.session() as s:
        assert users.actor_for(s, " bob ").name == "bob"
        assert users.actor_for(s, "ada").role == "admin"
    assert roles(catalog) == {"ada": "admin", "bob": users.DEFAULT_ROLE}
    assert users.DEFAULT_ROLE == "editor"


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "tab\there", "x" * 256, None])
def test_user_names_are_checked(bad):
    with pytest.raises(InvalidNameError, match="user name"):
        users.check_name(bad)


def test_actor_for_checks_the_name(catalog):
    with catalog.session() as s, pytest.raises(InvalidNameError, match="user name"):
        users.actor_for(s, " ")


def test_default_user_name(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-user")
    assert users.default_user_name() == "hub-user"
    monkeypatch.delenv("JUPYTERHUB_USER")
    monkeypatch.setattr(users.getpass, "getuser", lambda: "os-user")
    assert users.default_user_name() == "os-user"

    def no_user() -> str:
        raise OSError("no passwd entry")

    monkeypatch.setattr(users.getpass, "getuser", no_user)
    assert users.default_user_name() == "jupyter"


def test_a_second_registration_waits_for_the_first(catalog):
    """Two transactions registering at once: the second sees the first, so one admin."""
    inserted, errors = threading.Event(), []

    def first() -> None:
        try:
            with catalog.session() as s:
                users.actor_for(s, "first")
                inserted.set()
                time.sleep(0.5)  # hold the transaction open while the other one registers
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)
            inserted.set()

    thread = threading.Thread(target=first)
    thread.start()
    inserted.wait(10)
    with catalog.session() as s:
        users.actor_for(s, "second")
    thread.join()
    assert errors == []
    assert roles(catalog) == {"first": "admin", "second": "editor"}


def _register(url: str, name: str, barrier) -> None:
    catalog = Catalog(url)
    try:
        barrier.wait(30)
        catalog.run(lambda s: users.actor_for(s, name))
    finally:
        catalog.dispose()


@pytest.mark.slow
def test_processes_racing_for_a_new_catalog_make_one_admin(catalog):
    url = catalog.url
    catalog.dispose()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_register, args=(url, f"u{i}", barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    got = roles(catalog)
    assert sorted(got) == ["u0", "u1", "u2", "u3"]
    assert sorted(got.values()) == ["admin", "editor", "editor", "editor"]


# -- users ------------------------------------------------------------------------------------


@pytest.fixture
def team_catalog(catalog):
    """ada (admin) and eve (editor)."""
    with catalog.session() as s:
        ada = users.actor_for(s, "ada")
        users.add_user(s, ada, "eve", "editor")
    return catalog


def who(s, name):
    return s.scalars(select(User).where(User.name == name)).one()


def test_add_user_and_set_role(team_catalog):
    with team_catalog.session() as s:
        ada, eve = who(s, "ada"), who(s, "eve")
        assert users.add_user(s, ada, "vic", "viewer").role == "viewer"
        with pytest.raises(ConflictError, match=r"'vic' already exists.*set_role"):
            users.add_user(s, ada, "vic")
        with pytest.raises(ValueError, match="unknown role 'boss'"):
            users.add_user(s, ada, "zed", "boss")
        with pytest.raises(PermissionDeniedError, match=r"eve \(editor\) may not manage"):
            users.add_user(s, eve, "zed")
        users.set_role(s, ada, "vic", "editor")
        users.set_role(s, ada, who(s, "eve"), "admin")
        with pytest.raises(UserNotFoundError, match="no user 'nobody'"):
            users.set_role(s, ada, "nobody", "viewer")
        assert [u.name for u in users.list_users(s, eve)] == ["ada", "eve", "vic"]  # open to all
    assert roles(team_catalog) == {"ada": "admin", "eve": "admin", "vic": "editor"}


def test_the_last_admin_stays(team_catalog):
    with team_catalog.session() as s:
        ada = who(s, "ada")
        with pytest.raises(ConflictError, match="cannot demote ada: they are the last admin"):
            users.set_role(s, ada, "ada", "editor")
        assert ada.role == "admin"  # undone, so a caller that goes on sees the truth
        with pytest.raises(ConflictError, match="cannot remove ada: they are the last admin"):
            users.remove_user(s, ada, "ada")
        assert ada.role == "admin"
        users.set_role(s, ada, "eve", "admin")
        users.remove_user(s, ada, "ada")  # another admin remains
    assert roles(team_catalog) == {"eve": "admin"}


def test_remove_user_keeps_what_they_own(team_catalog):
    with team_catalog.session() as s:
        ada, eve = who(s, "ada"), who(s, "eve")
        datasets.add_dataset(s, eve, make_datasource(), name="eves")
        users.add_team(s, ada, "lab")
        users.add_member(s, ada, "lab", "eve")
        with pytest.raises(ConflictError, match=r"eve owns 1 dataset.*transfer_to="):
            users.remove_user(s, ada, "eve")
        with pytest.raises(ConflictError, match="cannot transfer"):
            users.remove_user(s, ada, "eve", transfer_to="eve")
        users.remove_user(s, ada, "eve", transfer_to="ada")
        record = s.scalars(select(DatasetRecord)).one()
        assert record.owner_id == ada.id
        assert s.scalars(select(Membership)).all() == []
    assert roles(team_catalog) == {"ada": "admin"}


# -- teams ------------------------------------------------------------------------------------


def test_teams_and_memberships(team_catalog):
    with team_catalog.session() as s:
        ada, eve = who(s, "ada"), who(s, "eve")
        users.add_team(s, ada, " Lab A ")
        with pytest.raises(ConflictError, match="team 'Lab A' already exists"):
            users.add_team(s, ada, "Lab A")
        with pytest.raises(PermissionDeniedError):
            users.add_team(s, eve, "mine")
        membership = users.add_member(s, ada, "Lab A", "eve", "viewer")
        assert (membership.user.name, membership.team.name, membership.role) == (
            "eve", "Lab A", "viewer",
        )  # fmt: skip
        users.add_member(s, ada, "Lab A", "eve", "editor")  # again: sets the role
        users.add_member(s, ada, "Lab A", "ada", "admin")
        members = users.list_members(s, eve, "Lab A")
        assert [(m.user.name, m.role) for m in members] == [("ada", "admin"), ("eve", "editor")]
        users.set_member_role(s, ada, "Lab A", "eve", "viewer")
        with pytest.raises(ValueError, match="unknown membership role"):
            users.set_member_role(s, ada, "Lab A", "eve", "owner")
        with pytest.raises(PermissionDeniedError):
            users.set_member_role(s, eve, "Lab A", "eve", "admin")
        users.remove_member(s, ada, "Lab A", "eve")
        with pytest.raises(UserNotFoundError, match="eve is not a member of team 'Lab A'"):
            users.remove_member(s, ada, "Lab A", "eve")
        with pytest.raises(TeamNotFoundError, match="no team 'B'"):
            users.add_member(s, ada, "B", "eve")
        with pytest.raises(UserNotFoundError, match="no user 'zed'"):
            users.add_member(s, ada, "Lab A", "zed")
        teams = users.list_teams(s, eve)
        assert [(t.name, [m.user.name for m in t.memberships]) for t in teams] == [
            ("Lab A", ["ada"])
        ]


def test_remove_team_unshares_its_datasets(team_catalog):
    with team_catalog.session() as s:
        ada, eve = who(s, "ada"), who(s, "eve")
        users.add_user(s, ada, "vic", "viewer")
        users.add_team(s, ada, "lab")
        users.add_member(s, ada, "lab", "vic", "viewer")
        record = datasets.add_dataset(s, eve, make_datasource(), name="shared")
        datasets.set_allowed_teams(s, eve, record, ["lab"])
        assert datasets.get_dataset(s, who(s, "vic"), "shared").id == record.id
        with pytest.raises(PermissionDeniedError):
            users.remove_team(s, eve, "lab")
        users.remove_team(s, ada, "lab")
        assert s.scalars(select(Team)).all() == []
        assert datasets.get_dataset(s, eve, "shared").teams == []
        assert datasets.list_datasets(s, who(s, "vic")) == []
