"""The permission matrix, asserted in full: every role x relation x visibility x operation.

The expected outcome of each case comes from the tables below, written out by hand from the
rules in the brief, never from :func:`permissions.allowed`. The cases are the product of the
dimensions, one test each; they share one catalog per backend (module-scoped ``world``, all 30
situations built in a single transaction) and each runs in its own rolled-back transaction.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.catalog.conftest import BACKENDS, PostgresServer
from tests.catalog.test_datasets import make_datasource
from wkjupyter.catalog import datasets, permissions, users
from wkjupyter.catalog.core import Catalog, dataset_search_text
from wkjupyter.catalog.models import DatasetRecord, Membership, Team, User
from wkjupyter.errors import DatasetNotFoundError, PermissionDeniedError
from wkjupyter.geometry import BoundingBox, Mag

ROLES = ("admin", "editor", "viewer")
RELATIONS = ("owner", "team-admin", "team-editor", "team-viewer", "other")
VISIBILITY = ("private", "public")

# -- the expected outcomes, by hand ----------------------------------------------------------
# One row per (global role, relation, visibility); Y = allowed, - = denied.
DATASET_TABLE = """
role    relation     visibility  view  edit  share  administer
admin   owner        private     Y     Y     Y      Y
admin   owner        public      Y     Y     Y      Y
admin   team-admin   private     Y     Y     Y      Y
admin   team-admin   public      Y     Y     Y      Y
admin   team-editor  private     Y     Y     Y      Y
admin   team-editor  public      Y     Y     Y      Y
admin   team-viewer  private     Y     Y     Y      Y
admin   team-viewer  public      Y     Y     Y      Y
admin   other        private     Y     Y     Y      Y
admin   other        public      Y     Y     Y      Y
editor  owner        private     Y     Y     Y      Y
editor  owner        public      Y     Y     Y      Y
editor  team-admin   private     Y     Y     Y      -
editor  team-admin   public      Y     Y     Y      -
editor  team-editor  private     Y     Y     Y      -
editor  team-editor  public      Y     Y     Y      -
editor  team-viewer  private     Y     -     -      -
editor  team-viewer  public      Y     -     -      -
editor  other        private     -     -     -      -
editor  other        public      Y     -     -      -
viewer  owner        private     Y     -     -      -
viewer  owner        public      Y     -     -      -
viewer  team-admin   private     Y     -     -      -
viewer  team-admin   public      Y     -     -      -
viewer  team-editor  private     Y     -     -      -
viewer  team-editor  public      Y     -     -      -
viewer  team-viewer  private     Y     -     -      -
viewer  team-viewer  public      Y     -     -      -
viewer  other        private     -     -     -      -
viewer  other        public      Y     -     -      -
"""

GLOBAL_TABLE = """
role    import  manage
admin   Y       Y
editor  Y       -
viewer  -       -
"""


def _parse(table: str) -> dict[tuple[str, ...], dict[str, bool]]:
    header, *rows = (line.split() for line in table.strip().splitlines())
    keys = [h for h in header if h not in ("role", "relation", "visibility")]
    n = len(header) - len(keys)
    return {tuple(r[:n]): dict(zip(keys, (v == "Y" for v in r[n:]), strict=True)) for r in rows}


EXPECTED = _parse(DATASET_TABLE)
EXPECTED_GLOBAL = _parse(GLOBAL_TABLE)
SITUATIONS = list(itertools.product(ROLES, RELATIONS, VISIBILITY))


def test_tables_cover_every_case():
    assert set(EXPECTED) == set(SITUATIONS)
    assert set(EXPECTED_GLOBAL) == {(r,) for r in ROLES}


# -- the pure function ------------------------------------------------------------------------


def _split(relation: str) -> tuple[str, str | None]:
    kind, _, membership = relation.partition("-")
    return kind, membership or None


@pytest.mark.parametrize(("role", "relation", "visibility"), SITUATIONS)
@pytest.mark.parametrize("action", ["view", "edit", "share", "administer"])
def test_allowed_matches_the_table(action, role, relation, visibility):
    kind, membership = _split(relation)
    got = permissions.allowed(action, role, kind, visibility == "public", membership)
    assert got is EXPECTED[role, relation, visibility][action]


@pytest.mark.parametrize(("role", "relation", "visibility"), SITUATIONS)
@pytest.mark.parametrize("action", ["import", "manage"])
def test_global_rights_ignore_the_dataset(action, role, relation, visibility):
    kind, membership = _split(relation)
    got = permissions.allowed(action, role, kind, visibility == "public", membership)
    assert got is EXPECTED_GLOBAL[(role,)][action]


@pytest.mark.parametrize(
    "args",
    [("read", "admin", "owner", True), ("view", "root", "owner", True),
     ("view", "editor", "friend", True), ("view", "editor", "team", True, "boss")],
)  # fmt: skip
def test_allowed_rejects_typos(args):
    with pytest.raises(ValueError, match="unknown"):
        permissions.allowed(*args)


def test_team_relation_without_membership_grants_nothing():
    assert not permissions.allowed("view", "editor", "team", False, None)


# -- the world: 30 situations in one catalog --------------------------------------------------

_DATASOURCE = json.dumps(
    {
        "id": {"name": "x", "team": ""},
        "scale": {"factor": [4, 4, 40], "unit": "nanometer"},
        "dataLayers": [
            {
                "name": "color",
                "category": "color",
                "boundingBox": BoundingBox.of((0, 0, 0), (8, 8, 8)).to_wk(),
                "elementClass": "uint8",
                "dataFormat": "zarr",
                "numChannels": 1,
                "mags": [{"mag": Mag(1).to_xyz(), "path": "https://example.org/c/1"}],
            }
        ],
        "version": 1,
    }
)


def _case_id(role: str, relation: str, visibility: str) -> str:
    return f"{role}-{relation}-{visibility}"


def build_world(catalog: Catalog) -> dict[tuple[str, str, str], tuple[int, int]]:
    """One actor and one dataset per situation, in one transaction: case -> (actor, dataset)."""
    world: dict[tuple[str, str, str], tuple[int, int]] = {}
    with catalog.session() as s:
        owner = User(name="the-owner", role="editor")
        bystanders = Team(name="bystanders")  # every dataset is shared with a team
        s.add_all([owner, bystanders, Membership(user=owner, team=bystanders, role="editor")])
        rows = []
        for role, relation, visibility in SITUATIONS:
            case = _case_id(role, relation, visibility)
            actor = User(name=case, role=role)
            kind, membership = _split(relation)
            teams = [bystanders]
            if kind == "team":
                team = Team(name=f"team-{case}")
                s.add(Membership(user=actor, team=team, role=membership))
                teams.append(team)
            slug = f"ds-{case}"
            record = DatasetRecord(
                slug=slug,
                datasource=_DATASOURCE,
                owner=actor if kind == "owner" else owner,
                public=visibility == "public",
                teams=teams,
                tags=[],
                search_text=dataset_search_text(slug, "", [], ["color"]),
            )
            s.add_all([actor, record])
            rows.append(((role, relation, visibility), actor, record))
        s.flush()
        world = {case: (actor.id, record.id) for case, actor, record in rows}
    return world


# -- the operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    action: str
    run: Callable[[Session, User, DatasetRecord], None]


def _view_get(s: Session, actor: User, record: DatasetRecord) -> None:
    assert datasets.get_dataset(s, actor, record.slug).id == record.id


def _view_list(s: Session, actor: User, record: DatasetRecord) -> None:
    slugs = [d.slug for d in datasets.list_datasets(s, actor, search=record.slug)]
    if record.slug not in slugs:  # listing hides instead of raising
        raise DatasetNotFoundError(record.slug)


def _add_tags(s: Session, actor: User, record: DatasetRecord) -> None:
    datasets.add_tags(s, actor, record, ["checked"])
    assert "checked" in record.search_text


def _set_description(s: Session, actor: User, record: DatasetRecord) -> None:
    datasets.set_description(s, actor, record, "changed")
    assert s.get(DatasetRecord, record.id).description == "changed"


def _rename(s: Session, actor: User, record: DatasetRecord) -> None:
    old = record.slug
    datasets.rename_dataset(s, actor, record, old + "-renamed")
    assert datasets.get_dataset(s, actor, old).slug == old + "-renamed"


def _share(s: Session, actor: User, record: DatasetRecord) -> None:
    permissions.require(s, actor, "share", record)


def _set_public(s: Session, actor: User, record: DatasetRecord) -> None:
    datasets.set_public(s, actor, record, not record.public)


def _set_allowed_teams(s: Session, actor: User, record: DatasetRecord) -> None:
    datasets.set_allowed_teams(s, actor, record, [])
    assert record.teams == []


def _delete(s: Session, actor: User, record: DatasetRecord) -> None:
    record_id = record.id
    datasets.delete_dataset(s, actor, record)
    assert s.scalar(select(DatasetRecord.id).where(DatasetRecord.id == record_id)) is None


DATASET_OPS = {
    "view-get": Op("view", _view_get),
    "view-list": Op("view", _view_list),
    "edit-add_tags": Op("edit", _add_tags),
    "edit-set_description": Op("edit", _set_description),
    "edit-rename": Op("edit", _rename),
    "share-require": Op("share", _share),
    "administer-set_public": Op("administer", _set_public),
    "administer-set_allowed_teams": Op("administer", _set_allowed_teams),
    "administer-delete": Op("administer", _delete),
}


def _outcome(catalog: Catalog, run: Callable[[Session, User], None], actor_id: int) -> str:
    """``"ok"``, ``"denied"`` or ``"absent"``; the transaction is always rolled back."""
    with Session(catalog.engine) as s:
        try:
            run(s, s.get_one(User, actor_id))
        except PermissionDeniedError:
            return "denied"
        except DatasetNotFoundError:
            return "absent"
        finally:
            s.rollback()
    return "ok"


World = tuple[Catalog, dict[tuple[str, str, str], tuple[int, int]]]


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One catalog per backend holding all 30 situations, shared by the module's cases.

    Built like the shared ``catalog`` fixture (from its session-wide template databases) but
    once per module: each case runs in a transaction that is rolled back, so cases cannot
    affect each other, and 540 cases need two databases instead of 540.
    """
    folder = tmp_path_factory.mktemp("matrix")
    drop: Callable[[], None] | None = None
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), folder / "catalog.sqlite")
        url = f"sqlite:///{folder / 'catalog.sqlite'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        assert server.template is not None
        name = server.create(template=server.template)
        url, drop = server.url(name), lambda: server.drop(name)
    catalog = Catalog(url, data_dir=folder)
    yield catalog, build_world(catalog)
    catalog.dispose()
    if drop is not None:
        drop()


@pytest.mark.parametrize(("role", "relation", "visibility"), SITUATIONS)
@pytest.mark.parametrize("operation", list(DATASET_OPS))
def test_dataset_permission(world: World, operation, role, relation, visibility):
    catalog, ids = world
    op = DATASET_OPS[operation]
    expected = EXPECTED[role, relation, visibility]
    # What the actor cannot view must look absent, not forbidden.
    want = "ok" if expected[op.action] else "denied" if expected["view"] else "absent"
    actor_id, dataset_id = ids[role, relation, visibility]

    def run(s: Session, actor: User) -> None:
        op.run(s, actor, s.get_one(DatasetRecord, dataset_id))

    assert _outcome(catalog, run, actor_id) == want


def _import(s: Session, actor: User) -> None:
    datasets.add_dataset(s, actor, make_datasource("imported"), name=f"imp-{actor.name}")


def _add_user(s: Session, actor: User) -> None:
    users.add_user(s, actor, f"new-{actor.name}", "viewer")


def _add_team(s: Session, actor: User) -> None:
    users.add_team(s, actor, f"team-of-{actor.name}")


GLOBAL_OPS = {"import-add_dataset": ("import", _import), "manage-add_user": ("manage", _add_user),
              "manage-add_team": ("manage", _add_team)}  # fmt: skip


@pytest.mark.parametrize(("role", "relation", "visibility"), SITUATIONS)
@pytest.mark.parametrize("operation", list(GLOBAL_OPS))
def test_global_permission(world: World, operation, role, relation, visibility):
    # Import and manage ignore the dataset; every situation's actor is tried all the same.
    catalog, ids = world
    action, run = GLOBAL_OPS[operation]
    want = "ok" if EXPECTED_GLOBAL[(role,)][action] else "denied"
    assert _outcome(catalog, run, ids[role, relation, visibility][0]) == want


# -- session helpers --------------------------------------------------------------------------


def test_relation_of_takes_the_best_membership(catalog):
    with catalog.session() as s:
        owner, actor = User(name="o", role="editor"), User(name="a", role="editor")
        t1, t2, t3 = Team(name="t1"), Team(name="t2"), Team(name="t3")
        s.add_all([Membership(user=actor, team=t1, role="viewer"),
                   Membership(user=actor, team=t2, role="editor"),
                   Membership(user=actor, team=t3, role="admin")])  # fmt: skip
        record = DatasetRecord(slug="d", datasource=_DATASOURCE, owner=owner, teams=[t1, t2])
        s.add(record)
        s.flush()
        assert permissions.relation_of(s, actor, record) == ("team", "editor")  # t3 not allowed
        assert permissions.relation_of(s, owner, record) == ("owner", None)
        record.teams = []
        s.flush()
        assert permissions.relation_of(s, actor, record) == ("other", None)


def test_denial_messages_teach(catalog):
    with catalog.session() as s:
        owner = User(name="olga", role="editor")
        viewer, editor = User(name="vic", role="viewer"), User(name="eve", role="editor")
        team = Team(name="lab")
        s.add_all([viewer, editor, Membership(user=viewer, team=team, role="editor")])
        s.add_all([Membership(user=editor, team=team, role="editor")])
        record = DatasetRecord(slug="mouse-cortex", datasource=_DATASOURCE, owner=owner,
                               teams=[team])  # fmt: skip
        s.add(record)
        s.flush()
        with pytest.raises(PermissionDeniedError) as err:
            permissions.require(s, viewer, "edit", record)
        assert str(err.value).startswith("vic (viewer) may not edit 'mouse-cortex': editing needs")
        assert "ask an admin to give you the editor role" in str(err.value)
        with pytest.raises(PermissionDeniedError, match=r"eve \(editor\) may not administer"):
            permissions.require(s, editor, "administer", record)
        with pytest.raises(PermissionDeniedError, match=r"needs the admin role; ask an admin"):
            permissions.require(s, editor, "manage")
        with pytest.raises(ValueError, match="pass the dataset"):
            permissions.require(s, editor, "edit")
        record.teams = []
        s.flush()
        with pytest.raises(DatasetNotFoundError) as absent:
            permissions.require(s, editor, "edit", record)
        assert str(absent.value) == "no dataset 'mouse-cortex'; check the name with hub.datasets()"
        assert permissions.can_view(s, owner, record)
        assert not permissions.can(s, editor, "view", record)


def test_visible_clause_matches_the_view_rule(world: World):
    catalog, ids = world
    with Session(catalog.engine) as s:
        for case, (actor_id, dataset_id) in ids.items():
            actor = s.get_one(User, actor_id)
            visible = s.scalar(
                select(DatasetRecord.id).where(
                    DatasetRecord.id == dataset_id, permissions.visible_datasets_clause(actor)
                )
            )
            assert (visible is not None) is EXPECTED[case]["view"], case
