"""Private links: lifecycle, rights, token resolution, use counting and expiry parsing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, inspect, select

from tests.catalog.helpers import add_user
from wkjupyter.catalog import links
from wkjupyter.catalog.crypto import secret_box
from wkjupyter.catalog.links import parse_expiry
from wkjupyter.catalog.models import (
    Annotation,
    DatasetRecord,
    DatasetTeam,
    LinkRecord,
    Membership,
    Team,
    User,
)
from wkjupyter.errors import (
    DatasetNotFoundError,
    InvalidExpiryError,
    LayerNotFoundError,
    LinkNotFoundError,
    PermissionDeniedError,
)

UTC = dt.UTC
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def add_dataset(session, owner, slug, *layers, public=False):
    datasource = {
        "baseUrl": "https://example.org/data",
        "id": {"name": slug, "team": ""},
        "scale": {"factor": [4, 4, 40], "unit": "nanometer"},
        "dataLayers": [
            {
                "name": layer, "category": "color", "elementClass": "uint8", "dataFormat": "zarr",
                "boundingBox": {"topLeft": [0, 0, 0], "width": 64, "height": 64, "depth": 64},
                "mags": [{"mag": [1, 1, 1], "path": layer}],
            }
            for layer in layers or ("color",)
        ],
    }  # fmt: skip
    record = DatasetRecord(
        slug=slug, datasource=json.dumps(datasource), owner_id=owner.id, public=public
    )
    session.add(record)
    session.flush()
    return record


@pytest.fixture
def world(catalog):
    """alice owns 'cortex' (private, layers color+seg) and an annotation on it; others."""
    with catalog.session() as s:
        users = {
            name: add_user(s, name, role)
            for name, role in [
                ("root", "admin"), ("alice", "editor"), ("bob", "editor"),
                ("vic", "viewer"), ("tess", "editor"), ("tom", "editor"),
            ]
        }  # fmt: skip
        ds = add_dataset(s, users["alice"], "cortex", "color", "seg")
        ann = Annotation(
            dataset_id=ds.id, name="proof", owner_id=users["alice"].id, storage_url="mem://"
        )
        team = Team(name="lab")
        s.add_all([ann, team])
        s.flush()
        s.add_all([
            DatasetTeam(dataset_id=ds.id, team_id=team.id),
            Membership(user_id=users["tess"].id, team_id=team.id, role="editor"),
            Membership(user_id=users["tom"].id, team_id=team.id, role="viewer"),
        ])  # fmt: skip
        public = add_dataset(s, users["alice"], "open", public=True)
    return {"users": {k: u.id for k, u in users.items()}, "ds": ds.id, "ann": ann.id,
            "public": public.id}  # fmt: skip


def actor(s, world, name):
    return s.get(User, world["users"][name])


# -- lifecycle ---------------------------------------------------------------------------------


def test_lifecycle(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        record, token = links.create_link(s, box, alice, dataset=ds, label="reviewer")
        link_id = record.id
        assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert record.label == "reviewer"
        assert record.use_count == 0
        created = dt.datetime.now(UTC)
        expires = links._utc(record.expires_at)
        assert abs(expires - created - dt.timedelta(days=30)) < dt.timedelta(minutes=1)
    with catalog.session() as s:
        resolved = links.resolve_token(s, token)
        assert resolved is not None
        assert (resolved.link_id, resolved.dataset.slug) == (link_id, "cortex")
        assert resolved.annotation is None
        assert resolved.layers is None
        assert resolved.expires_at == expires
        assert links.resolve_token(s, token, now=expires - dt.timedelta(seconds=1)) is not None
        assert links.resolve_token(s, token, now=expires) is None  # time travel: expired
        assert links.link_status(s.get(LinkRecord, link_id), now=expires) == "expired"
    with catalog.session() as s:
        updated = links.update_link(s, actor(s, world, "alice"), link_id, expires="90d")
        assert links.resolve_token(s, token, now=expires) is not None
        links.update_link(s, actor(s, world, "alice"), link_id, expires=None, label="forever")
        assert updated.label == "forever"
        assert links.resolve_token(s, token, now=dt.datetime(9999, 1, 1, tzinfo=UTC))
        assert links.link_token(s, box, actor(s, world, "alice"), link_id) == token
    with catalog.session() as s:
        revoked = links.revoke_link(s, actor(s, world, "alice"), link_id)
        first = revoked.revoked_at
        assert links.resolve_token(s, token) is None
        assert links.revoke_link(s, actor(s, world, "alice"), link_id).revoked_at == first
        assert links.link_status(revoked) == "revoked"
        with pytest.raises(ValueError, match="revoked"):
            links.update_link(s, actor(s, world, "alice"), link_id, expires="1d")
        assert links.link_token(s, box, actor(s, world, "alice"), link_id) == token


def test_expiry_choices(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        never, _ = links.create_link(s, box, alice, dataset=ds, expires=None)
        assert never.expires_at is None
        for past in ("2001-01-01", dt.datetime(2001, 1, 1), dt.timedelta(seconds=-1), "0d"):
            with pytest.raises(InvalidExpiryError, match="not in the future"):
                links.create_link(s, box, alice, dataset=ds, expires=past)
        with pytest.raises(InvalidExpiryError, match="'30x'"):
            links.create_link(s, box, alice, dataset=ds, expires="30x")
        assert s.scalar(select(LinkRecord.id).where(LinkRecord.id > never.id)) is None


def test_layers(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        record, token = links.create_link(s, box, alice, dataset=ds, layers=["seg", "seg"])
        assert links.link_layers(record) == ("seg",)
        assert links.resolve_token(s, token).layers == ("seg",)
        with pytest.raises(LayerNotFoundError, match=r"no layer 'nope'; its layers are 'color'"):
            links.create_link(s, box, alice, dataset=ds, layers=["color", "nope"])
        for bad in ("color", []):
            with pytest.raises(ValueError, match="non-empty list"):
                links.create_link(s, box, alice, dataset=ds, layers=bad)


def test_annotation_links(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ann = actor(s, world, "alice"), s.get(Annotation, world["ann"])
        record, token = links.create_link(s, box, alice, annotation=ann, expires="7d")
        resolved = links.resolve_token(s, token)
        assert resolved.annotation.id == ann.id
        assert resolved.dataset.slug == "cortex"
        assert [r.id for r in links.list_links(s, alice, annotation=ann)] == [record.id]
        assert links.list_links(s, alice, dataset=s.get(DatasetRecord, world["ds"])) == []
        with pytest.raises(ValueError, match="leave layers=None"):
            links.create_link(s, box, alice, annotation=ann, layers=["color"])
        with pytest.raises(TypeError, match="exactly one target"):
            links.create_link(s, box, alice)
        with pytest.raises(PermissionDeniedError, match=r"tom \(editor\) may not share"):
            links.create_link(s, box, actor(s, world, "tom"), annotation=ann)


@pytest.mark.parametrize(
    ("who", "outcome"),
    [
        ("root", "ok"), ("alice", "ok"), ("tess", "ok"),  # admin, owner editor, team editor
        ("tom", PermissionDeniedError),  # team member with the viewer membership role
        ("bob", DatasetNotFoundError),  # private dataset of someone else: looks absent
        ("vic", DatasetNotFoundError),
    ],
)  # fmt: skip
def test_share_rights(catalog, world, who, outcome):
    box = secret_box(catalog)
    with catalog.session() as s:
        owner_link, _ = links.create_link(
            s, box, actor(s, world, "alice"), dataset=s.get(DatasetRecord, world["ds"])
        )
    with catalog.session() as s:
        user, ds = actor(s, world, who), s.get(DatasetRecord, world["ds"])
        if outcome == "ok":
            record, _ = links.create_link(s, box, user, dataset=ds)
            assert len(links.list_links(s, user, dataset=ds)) == 2
            assert owner_link.id in [r.id for r in links.list_links(s, user)]
            links.update_link(s, user, owner_link.id, label="x")
            links.link_token(s, box, user, owner_link.id)
            links.revoke_link(s, user, record.id)
            return
        with pytest.raises(outcome):
            links.create_link(s, box, user, dataset=ds)
        with pytest.raises(outcome):
            links.list_links(s, user, dataset=ds)
        assert links.list_links(s, user) == []
        expected = LinkNotFoundError if outcome is DatasetNotFoundError else outcome
        for call in (
            lambda: links.update_link(s, user, owner_link.id, label="x"),
            lambda: links.revoke_link(s, user, owner_link.id),
            lambda: links.link_token(s, box, user, owner_link.id),
            lambda: links.get_link(s, user, owner_link.id),
        ):
            with pytest.raises(expected):
                call()
        assert links.get_link(s, actor(s, world, "alice"), owner_link.id).revoked_at is None


def test_public_does_not_grant_share(catalog, world):
    with catalog.session() as s:
        bob, public = actor(s, world, "bob"), s.get(DatasetRecord, world["public"])
        with pytest.raises(PermissionDeniedError, match=r"bob \(editor\) may not share 'open'"):
            links.create_link(s, secret_box(catalog), bob, dataset=public)


def test_unknown_link(catalog, world):
    with catalog.session() as s, pytest.raises(LinkNotFoundError, match="no link 12345"):
        links.get_link(s, actor(s, world, "root"), 12345)


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_unique_and_long(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        tokens = [links.create_link(s, box, alice, dataset=ds)[1] for _ in range(100)]
    assert len(set(tokens)) == 100
    assert all(len(t) >= 22 for t in tokens)  # 22 url-safe base64 chars = 132 bits; ours: 43
    inspector = inspect(catalog.engine)
    keyed = [c["column_names"] for c in inspector.get_unique_constraints("links")]
    keyed += [i["column_names"] for i in inspector.get_indexes("links")]
    assert ["token_hash"] in keyed  # the lookup is indexed


def test_resolve_is_one_lookup_whatever_the_token(catalog, world):
    """Valid, unknown and malformed tokens all cost one hash and one indexed query."""
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        _, token = links.create_link(s, box, alice, dataset=ds)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(catalog.engine, "before_cursor_execute", count)
    try:
        for candidate in (token, token[:-1] + "A", "", "x", "\ud800", "a" * 10_000, token.upper()):
            statements.clear()
            with catalog.session() as s:
                found = links.resolve_token(s, candidate)
            assert (found is not None) == (candidate == token)
            assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) == 1
    finally:
        event.remove(catalog.engine, "before_cursor_execute", count)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.text(max_size=100) | st.binary(max_size=64).map(lambda b: b.hex()))
def test_garbage_tokens_resolve_to_none(catalog, garbage):
    with catalog.session() as s:
        assert links.resolve_token(s, garbage) is None


def test_concurrent_uses_all_counted(catalog, world):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, ds = actor(s, world, "alice"), s.get(DatasetRecord, world["ds"])
        link_id = links.create_link(s, box, alice, dataset=ds)[0].id
    threads, per_thread = 8, 25
    times = [NOW + dt.timedelta(seconds=i) for i in range(threads * per_thread)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def use(chunk):
        try:
            barrier.wait()
            for when in chunk:
                with catalog.session() as s:
                    links.record_use(s, link_id, when)
        except BaseException as err:  # surfaced below
            errors.append(err)

    workers = [threading.Thread(target=use, args=(times[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with catalog.session() as s:
        record = s.get(LinkRecord, link_id)
        assert record.use_count == threads * per_thread
        assert links._utc(record.last_used_at) == max(times)  # out-of-order commits keep the latest


# -- expiry parsing ----------------------------------------------------------------------------

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "days": 86400, "Hours": 3600}


@given(
    parts=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4
    ).filter(lambda ps: any(n for n, _ in ps)),
    sep=st.sampled_from(["", " ", "  "]),
)
def test_durations(parts, sep):
    text = sep.join(f"{n}{sep}{unit}" for n, unit in parts)
    seconds = sum(n * UNITS[unit] for n, unit in parts)
    assert parse_expiry(f" {text} ", now=NOW) == NOW + dt.timedelta(seconds=seconds)


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9998, 1, 1),
                    timezones=st.none() | st.timezones()))  # fmt: skip
def test_datetimes(when):
    as_utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    for value in (when, when.isoformat()):
        if as_utc > NOW:
            assert parse_expiry(value, now=NOW) == as_utc
            assert parse_expiry(value, now=NOW).tzinfo == UTC
        else:
            with pytest.raises(InvalidExpiryError, match="not in the future"):
                parse_expiry(value, now=NOW)


@given(st.timedeltas())
def test_timedeltas(delta):
    try:
        expected = NOW + delta
    except OverflowError:
        with pytest.raises(InvalidExpiryError, match="too far"):
            parse_expiry(delta, now=NOW)
        return
    if delta > dt.timedelta(0):
        assert parse_expiry(delta, now=NOW) == expected
    else:
        with pytest.raises(InvalidExpiryError):
            parse_expiry(delta, now=NOW)


def _parse_or_message(text):
    try:
        return parse_expiry(text, now=NOW)
    except InvalidExpiryError as err:
        return str(err)


@given(st.text(max_size=30))
def test_any_text_parses_or_explains(text):
    result = _parse_or_message(text)  # never another exception
    if isinstance(result, str):
        assert "expir" in result
    else:
        assert result is None or result > NOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30d", NOW + dt.timedelta(days=30)),
        ("12h", NOW + dt.timedelta(hours=12)),
        ("90m", NOW + dt.timedelta(minutes=90)),
        ("2w", NOW + dt.timedelta(weeks=2)),
        ("1d 12h", NOW + dt.timedelta(days=1, hours=12)),
        ("2031-02-03", dt.datetime(2031, 2, 3, tzinfo=UTC)),
        ("2031-02-03T04:05:06Z", dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ("2031-02-03T04:05:06+02:00", dt.datetime(2031, 2, 3, 2, 5, 6, tzinfo=UTC)),
        (dt.date(2031, 2, 3), dt.datetime(2031, 2, 3, tzinfo=UTC)),
        ("never", None),
        (None, None),
    ],
)
def test_expiry_examples(value, expected):
    assert parse_expiry(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("3mo", "unknown unit 'mo'"),
        ("1y", "unknown unit 'y'"),
        ("30", "a duration such as"),
        ("soon", "a duration such as"),
        ("99999999999w", "too far in the future"),
        (3.5, "invalid expiry of type float"),
    ],
)
def test_expiry_errors(value, match):
    with pytest.raises(InvalidExpiryError, match=match):
        parse_expiry(value, now=NOW)
