"""Datasets: import, names and aliases, search, tags, visibility, teams, updates, deletion."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time

import numpy as np
import pytest
from sqlalchemy import event, func, select

from wkjupyter.catalog import credentials, datasets, users
from wkjupyter.catalog.crypto import secret_box
from wkjupyter.catalog.models import (
    DatasetTag,
    DatasetTeam,
    LinkRecord,
    SlugAlias,
    Tag,
    User,
)
from wkjupyter.datasource import DataSource, Layer, MagLevel
from wkjupyter.errors import (
    ConflictError,
    CredentialNotFoundError,
    DatasetNotFoundError,
    InvalidNameError,
    LayerNotFoundError,
    TeamNotFoundError,
)
from wkjupyter.geometry import BoundingBox, Mag, VoxelSize
from wkjupyter.sources import S3Credential
from wkjupyter.sources.explore import merge_layers


def make_layer(name: str, category: str = "color", url: str | None = None) -> Layer:
    voxel_size = VoxelSize.of((40, 4, 4))
    path = url or f"https://example.org/{name}.zarr/1"
    return Layer(
        name=name,
        category=category,  # type: ignore[arg-type]
        dtype=np.dtype("uint8" if category == "color" else "uint32"),
        num_channels=1,
        bbox=BoundingBox.of((0, 0, 0), (16, 64, 64)),
        voxel_size=voxel_size,
        mags={Mag(1): MagLevel(Mag(1), path, "zarr")},
    )


def make_datasource(name: str = "Mouse Cortex", layers=("color", "segmentation")) -> DataSource:
    built = [make_layer(n, "color" if n == "color" else "segmentation") for n in layers]
    return DataSource(name, VoxelSize.of((40, 4, 4)), {layer.name: layer for layer in built})


@pytest.fixture
def people(catalog):
    """admin (first user), two editors (eve, ed), a viewer (vic)."""
    with catalog.session() as s:
        admin = users.actor_for(s, "ada")
        for name, role in (("eve", "editor"), ("ed", "editor"), ("vic", "viewer")):
            users.add_user(s, admin, name, role)
    return catalog


def actor(s, name):
    return s.scalars(select(User).where(User.name == name)).one()


# -- adding -----------------------------------------------------------------------------------


def test_add_stores_metadata_only_and_search_text(people):
    with people.session() as s:
        eve = actor(s, "eve")
        record = datasets.add_dataset(
            s, eve, make_datasource(), name=None, tags=["EM", " Mouse  brain "],
            description="Layer 2/3 of the Cortex",
        )  # fmt: skip
        assert record.slug == "mouse-cortex"  # made from the data source's name
        assert [t.name for t in record.tags] == ["em", "mouse brain"]
        assert record.owner_id == eve.id
        assert record.public is False
        assert record.search_text == (
            "mouse-cortex layer 2/3 of the cortex em mouse brain color segmentation"
        )
        stored = DataSource.from_json(record.datasource)
        assert stored.name == "mouse-cortex"
        assert sorted(stored.layers) == ["color", "segmentation"]
        assert record.created_at is not None
        assert record.updated_at is not None


def test_add_with_credentials_stores_ids_never_secrets(people):
    box = secret_box(people)
    with people.session() as s:
        eve, ed = actor(s, "eve"), actor(s, "ed")
        secret = "s3-secret-value-never-stored"
        key = credentials.store_credential(s, box, eve, S3Credential("AKID", secret), name="k")
        one = datasets.add_dataset(s, eve, make_datasource(), name="a", credential_ids=key.id)
        mapped = datasets.add_dataset(
            s, eve, make_datasource(), name="b", credential_ids={"segmentation": "k"}
        )  # a credential's name works as well as its id
        for record, expect in ((one, {"color": key.id, "segmentation": key.id}),
                               (mapped, {"color": None, "segmentation": key.id})):  # fmt: skip
            stored = DataSource.from_json(record.datasource)
            got = {n: next(iter(layer.mags.values())).credential_id
                   for n, layer in stored.layers.items()}  # fmt: skip
            assert got == expect
            assert secret not in record.datasource
            assert "AKID" not in record.datasource
        with pytest.raises(LayerNotFoundError, match=r"'nope'.*its layers are color, segmentation"):
            datasets.add_dataset(s, eve, make_datasource(), name="c", credential_ids={"nope": "k"})
        with pytest.raises(CredentialNotFoundError):  # another user's key looks absent
            datasets.add_dataset(s, ed, make_datasource(), name="d", credential_ids=key.id)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "slug"),
    [("Mouse-Cortex", "mouse-cortex"), (" em_2024.v1 ", "em_2024.v1"), ("0abc", "0abc"),
     ("a" * 255, "a" * 255)],
)  # fmt: skip
def test_slugs_are_normalised(given, slug):
    assert datasets.normalise_slug(given) == slug


@pytest.mark.parametrize("bad", ["", "  ", "-x", ".hidden", "_x", "a/b", "a b", "ü", "a" * 256])
def test_invalid_slugs_teach(bad):
    with pytest.raises(InvalidNameError, match=re.escape("use letters, digits, '.', '_' and '-'")):
        datasets.normalise_slug(bad)


@pytest.mark.parametrize(
    ("text", "slug"),
    [("Mouse Cortex!", "mouse-cortex"), ("..x", "x"), ("", "dataset"), ("§§", "dataset"),
     ("a.b-", "a.b")],
)  # fmt: skip
def test_slugify(text, slug):
    assert datasets.slugify(text) == slug


def test_name_conflicts_suggest_another_name(people):
    with people.session() as s:
        eve, ed = actor(s, "eve"), actor(s, "ed")
        first = datasets.add_dataset(s, eve, make_datasource(), name="cortex")
        with pytest.raises(
            ConflictError, match=re.escape("'cortex' is taken; choose another, e.g. 'cortex-2'")
        ):
            datasets.add_dataset(s, ed, make_datasource(), name="Cortex")
        datasets.add_dataset(s, eve, make_datasource(), name="cortex-2")
        datasets.rename_dataset(s, eve, first, "cortex-v1")  # "cortex" is now an old name
        with pytest.raises(ConflictError, match=r"e\.g\. 'cortex-3'.*old name of a renamed"):
            datasets.add_dataset(s, ed, make_datasource(), name="cortex")
        with pytest.raises(InvalidNameError):
            datasets.add_dataset(s, ed, make_datasource(), name="no spaces")


# -- finding ----------------------------------------------------------------------------------


def test_get_by_name_or_alias_and_invisible_is_absent(people):
    with people.session() as s:
        eve, ed, ada = actor(s, "eve"), actor(s, "ed"), actor(s, "ada")
        record = datasets.add_dataset(s, eve, make_datasource(), name="secret")
        assert datasets.get_dataset(s, eve, " SECRET ").id == record.id
        assert datasets.get_dataset(s, ada, "secret").id == record.id  # admins see all
        for name in ("secret", "missing", "not a slug"):
            with pytest.raises(DatasetNotFoundError) as err:
                datasets.get_dataset(s, ed, name)
            assert str(err.value) == f"no dataset {name!r}; check the name with hub.datasets()"
    with people.session() as s:
        got = datasets.get_dataset(s, actor(s, "eve"), "secret")
    assert got.owner.name == "eve"
    assert got.tags == []
    assert got.teams == []


@pytest.fixture
def library(people):
    """Five datasets of eve's with descriptions, tags and layers; one public."""
    specs = [
        ("alpha", "Mouse visual cortex", ["em", "mouse"], ("color", "segmentation"), False),
        ("beta", "Fly brain", ["em", "fly"], ("color",), True),
        ("gamma", "Zebrafish 100%_done", ["lm"], ("nuclei",), False),
        ("delta", "Mouse hippocampus", ["lm", "mouse"], ("color", "axons"), False),
        ("epsilon", "", [], ("raw",), False),
    ]
    with people.session() as s:
        eve = actor(s, "eve")
        for slug, text, tags, layers, public in specs:
            datasets.add_dataset(
                s, eve, make_datasource(slug, layers), name=slug, tags=tags, public=public,
                description=text,
            )  # fmt: skip
    return people


def _slugs(catalog, who="eve", **kwargs):
    with catalog.session() as s:
        return [d.slug for d in datasets.list_datasets(s, actor(s, who), **kwargs)]


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("mouse", ["alpha", "delta"]),
        ("MOUSE Cortex", ["alpha"]),  # all words, any case
        ("cortex mouse", ["alpha"]),  # order does not matter
        ("mouse fly", []),
        ("segm", ["alpha"]),  # layer names
        ("axons", ["delta"]),
        ("lm", ["delta", "gamma"]),  # tags (short words too)
        ("fly", ["beta"]),
        ("eps", ["epsilon"]),  # the name
        ("100%_", ["gamma"]),  # LIKE wildcards are literal
        ("%", ["gamma"]),
        ("_", ["gamma"]),
        ("ppo", ["delta"]),  # substrings inside words
        ("", ["alpha", "beta", "delta", "epsilon", "gamma"]),
    ],
)
def test_search_matches_all_words_as_substrings(library, search, found):
    assert _slugs(library, search=search) == found


def test_filters_by_tags_and_visibility(library):
    assert _slugs(library, tags=["EM"]) == ["alpha", "beta"]
    assert _slugs(library, tags=["em", "mouse"]) == ["alpha"]  # all tags required
    assert _slugs(library, tags=["em", "unknown"]) == []
    assert _slugs(library, tags=["mouse"], search="hippo") == ["delta"]
    assert _slugs(library, public=True) == ["beta"]
    assert _slugs(library, public=False) == ["alpha", "delta", "epsilon", "gamma"]
    assert _slugs(library, "ed") == ["beta"]  # another editor sees the public one only
    assert _slugs(library, "ed", search="mouse") == []
    assert _slugs(library, "ada", public=False) == ["alpha", "delta", "epsilon", "gamma"]


def test_pages_are_ordered_by_slug(library):
    everything = _slugs(library)
    assert everything == sorted(everything)
    pages = [_slugs(library, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert pages == [everything[:2], everything[2:4], everything[4:], []]
    with library.session() as s:
        eve = actor(s, "eve")
        assert datasets.count_datasets(s, eve) == 5
        assert datasets.count_datasets(s, eve, search="mouse", tags=["lm"]) == 1
        assert datasets.count_datasets(s, actor(s, "ed")) == 1


def test_listing_runs_a_fixed_number_of_queries(library):
    statements: list[str] = []

    def count(*args):
        statements.append(args[2])

    event.listen(library.engine, "before_cursor_execute", count)
    try:
        with library.session() as s:
            eve = actor(s, "eve")
            statements.clear()
            records = datasets.list_datasets(s, eve, search="m", tags=["em"])
    finally:
        event.remove(library.engine, "before_cursor_execute", count)
    assert [r.slug for r in records] == ["alpha", "beta"]
    assert len(statements) <= 5  # the page, tags, teams, owners (+ a search probe): not per row
    # Tags, teams and owner stay readable after the session ended.
    assert [t.name for t in records[0].tags] == ["em", "mouse"]
    assert records[0].owner.name == "eve"


# -- renaming ---------------------------------------------------------------------------------


def test_rename_keeps_old_names_working(people):
    with people.session() as s:
        eve = actor(s, "eve")
        record = datasets.add_dataset(s, eve, make_datasource(), name="v1")
        datasets.rename_dataset(s, eve, record, "V2")
        datasets.rename_dataset(s, eve, record, "v3")
        assert record.slug == "v3"
        assert {datasets.get_dataset(s, eve, n).id for n in ("v1", "v2", "v3")} == {record.id}
        assert "v3" in record.search_text
        assert "v2" not in record.search_text
        assert DataSource.from_json(record.datasource).name == "v3"
        datasets.rename_dataset(s, eve, record, "v1")  # back to an own old name
        aliases = s.scalars(select(SlugAlias.slug).where(SlugAlias.dataset_id == record.id))
        assert sorted(aliases) == ["v2", "v3"]
        assert datasets.get_dataset(s, eve, "v3").slug == "v1"
        assert datasets.rename_dataset(s, eve, record, "v1") is record  # no-op
        assert _slugs_in(s, eve) == ["v1"]  # aliases never list a dataset twice


def _slugs_in(s, who, **kwargs):
    return [d.slug for d in datasets.list_datasets(s, who, **kwargs)]


def test_rename_conflicts(people):
    with people.session() as s:
        eve = actor(s, "eve")
        a = datasets.add_dataset(s, eve, make_datasource(), name="a")
        b = datasets.add_dataset(s, eve, make_datasource(), name="b")
        datasets.rename_dataset(s, eve, b, "b2")  # "b" is b's old name
        with pytest.raises(ConflictError, match="'b2' is taken"):
            datasets.rename_dataset(s, eve, a, "b2")
        with pytest.raises(ConflictError, match=r"'b' is taken.*old name"):
            datasets.rename_dataset(s, eve, a, "b")
        with pytest.raises(InvalidNameError):
            datasets.rename_dataset(s, eve, a, "b/c")
        assert a.slug == "a"
        assert datasets.get_dataset(s, eve, "b").id == b.id


# -- tags, description, visibility, teams -----------------------------------------------------


def test_tags_are_normalised_and_created_on_demand(people):
    with people.session() as s:
        eve = actor(s, "eve")
        record = datasets.add_dataset(s, eve, make_datasource(), name="t")
        datasets.set_tags(s, eve, record, ["B", "a", "b"])
        assert [t.name for t in record.tags] == ["a", "b"]
        datasets.add_tags(s, eve, record, ["C", "a"])
        assert [t.name for t in record.tags] == ["a", "b", "c"]
        datasets.remove_tags(s, eve, record, ["A", "zzz"])
        assert [t.name for t in record.tags] == ["b", "c"]
        assert record.search_text.split()[-4:-2] == ["b", "c"]  # tags precede layer names
        datasets.set_tags(s, eve, record, [])
        assert record.tags == []
        assert sorted(s.scalars(select(Tag.name))) == ["a", "b", "c"]  # unused tags may stay
        for bad in ["", " ", "a,b", "-x", "x" * 129]:
            with pytest.raises(InvalidNameError, match="not a valid tag"):
                datasets.add_tags(s, eve, record, [bad])


def test_every_change_updates_search_text_and_updated_at(people):
    with people.session() as s:
        eve, ada = actor(s, "eve"), actor(s, "ada")
        users.add_team(s, ada, "lab")
        record = datasets.add_dataset(s, eve, make_datasource(), name="d")
        changes = [
            lambda: datasets.set_description(s, eve, record, "Hello World"),
            lambda: datasets.add_tags(s, eve, record, ["x"]),
            lambda: datasets.set_public(s, eve, record, True),
            lambda: datasets.set_allowed_teams(s, eve, record, ["lab"]),
            lambda: datasets.rename_dataset(s, eve, record, "e"),
            lambda: datasets.update_datasource(s, eve, record, make_datasource("e", ["only"])),
        ]
        for change in changes:
            before = record.updated_at
            change()
            assert _aware(record.updated_at) > _aware(before)
        assert record.search_text == "e hello world x only"
        assert record.public
        assert [t.name for t in record.teams] == ["lab"]
        assert _slugs_in(s, eve, search="world only") == ["e"]
        with pytest.raises(TeamNotFoundError, match="no team 'nope'"):
            datasets.set_allowed_teams(s, eve, record, ["lab", "nope"])


def test_concurrent_tagging_loses_nothing(people):
    """Two transactions tag one dataset at once: both tags and the search text survive."""
    with people.session() as s:
        datasets.add_dataset(s, actor(s, "eve"), make_datasource(), name="busy")
    locked, errors = threading.Event(), []

    def slow_tagger() -> None:
        try:
            with people.session() as s:
                eve = actor(s, "eve")
                datasets.add_tags(s, eve, datasets.get_dataset(s, eve, "busy"), ["first"])
                locked.set()
                time.sleep(0.4)  # the other writer reads the tags meanwhile
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)
            locked.set()

    thread = threading.Thread(target=slow_tagger)
    thread.start()
    locked.wait(10)
    with people.session() as s:
        eve = actor(s, "eve")
        datasets.add_tags(s, eve, datasets.get_dataset(s, eve, "busy"), ["second"])
    thread.join()
    assert errors == []
    with people.session() as s:
        record = datasets.get_dataset(s, actor(s, "eve"), "busy")
        assert [t.name for t in record.tags] == ["first", "second"]
        assert "first second" in record.search_text


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def test_update_datasource_merges_layers_and_guards_credentials(people):
    box = secret_box(people)
    with people.session() as s:
        eve, ed, ada = actor(s, "eve"), actor(s, "ed"), actor(s, "ada")
        users.add_team(s, ada, "lab")
        users.add_member(s, ada, "lab", "ed", "editor")
        key = credentials.store_credential(s, box, eve, S3Credential("id", "sec"), name="eve-key")
        record = datasets.add_dataset(s, eve, make_datasource(), name="m", credential_ids=key.id)
        datasets.set_allowed_teams(s, eve, record, ["lab"])
        current = DataSource.from_json(record.datasource)
        steps: list = []
        new = make_layer("color", url="https://elsewhere.org/c/1")
        merged = merge_layers(record.slug, [*current.layers.values(), new], steps)
        (added,) = set(merged.layers) - set(current.layers)  # "color" made unique
        assert steps == []
        assert len(merged.layers) == 3
        datasets.update_datasource(s, ed, record, merged)  # a team editor keeps eve's key
        assert added in record.search_text
        stored = DataSource.from_json(record.datasource)
        assert stored.layers["segmentation"].mags[Mag(1)].credential_id == key.id
        assert stored.layers[added].mags[Mag(1)].credential_id is None
        with pytest.raises(CredentialNotFoundError):  # but may not point it at new paths
            datasets.update_datasource(s, ed, record, merged, credential_ids={added: key.id})
        datasets.update_datasource(s, eve, record, merged, credential_ids={added: "eve-key"})
        stored = DataSource.from_json(record.datasource)
        assert stored.layers[added].mags[Mag(1)].credential_id == key.id


# -- deleting ---------------------------------------------------------------------------------


def test_delete_unlinks_tags_teams_aliases_and_links(people):
    with people.session() as s:
        eve, ada = actor(s, "eve"), actor(s, "ada")
        users.add_team(s, ada, "lab")
        record = datasets.add_dataset(s, eve, make_datasource(), name="old", tags=["em"])
        keep = datasets.add_dataset(s, eve, make_datasource(), name="keep", tags=["em"])
        datasets.set_allowed_teams(s, eve, record, ["lab"])
        datasets.rename_dataset(s, eve, record, "new")
        s.add(LinkRecord(token_hash="0" * 64, token_secret=b"x", dataset_id=record.id,
                         created_by=eve.id))  # fmt: skip
        s.flush()
        record_id = record.id
        datasets.delete_dataset(s, eve, record)
        for model, column in ((DatasetTag, DatasetTag.dataset_id),
                              (DatasetTeam, DatasetTeam.dataset_id),
                              (SlugAlias, SlugAlias.dataset_id),
                              (LinkRecord, LinkRecord.dataset_id)):  # fmt: skip
            assert s.scalar(select(func.count()).select_from(model).where(column == record_id)) == 0
        assert s.scalar(select(func.count()).select_from(Tag)) == 1  # the tag "em" stays
        assert [t.name for t in keep.tags] == ["em"]
        for name in ("new", "old"):
            with pytest.raises(DatasetNotFoundError):
                datasets.get_dataset(s, eve, name)
        datasets.add_dataset(s, eve, make_datasource(), name="old")  # the names are free again


# -- a realistic import -----------------------------------------------------------------------


@pytest.mark.slow
def test_import_of_an_explored_demo_dataset(people, tmp_path):
    from wkjupyter.demo import write_demo
    from wkjupyter.sources.explore import explore

    paths = write_demo(tmp_path / "demo")
    report = explore(str(paths["OME-Zarr 0.4"]))
    assert report.datasource is not None
    with people.session() as s:
        eve = actor(s, "eve")
        record = datasets.add_dataset(s, eve, report.datasource, tags=["demo"])
        layer_names = list(report.datasource.layers)
        assert record.slug == datasets.slugify(report.datasource.name)
        assert all(name.lower() in record.search_text for name in layer_names)
        assert _slugs_in(s, eve, search=layer_names[0]) == [record.slug]
        stored = DataSource.from_json(record.datasource)
        assert sorted(stored.layers) == sorted(layer_names)
        assert json.loads(record.datasource)["id"]["name"] == record.slug
