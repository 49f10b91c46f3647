"""Stored credentials: encrypted round trips, rotation, rights, and a scan for leaked secrets."""

from __future__ import annotations

import json
import logging
import re
import secrets
import traceback
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from tests.catalog.helpers import add_user
from wkjupyter.catalog import credentials as creds
from wkjupyter.catalog import crypto, links
from wkjupyter.catalog.crypto import ENV_KEY, SecretBox, secret_box
from wkjupyter.catalog.models import Base, CredentialRecord, DatasetRecord, User
from wkjupyter.errors import (
    ConflictError,
    CredentialNotFoundError,
    InvalidNameError,
    PermissionDeniedError,
    SecretKeyError,
)
from wkjupyter.sources import GcsCredential, HttpCredential, S3Credential

# -- helpers -----------------------------------------------------------------------------------


def datasource_json(*layers, credential_id=None):
    mag = {"mag": [1, 1, 1]} | ({"credentialId": credential_id} if credential_id else {})
    return json.dumps({
        "baseUrl": "https://example.org/data",
        "id": {"name": "d", "team": ""},
        "scale": {"factor": [4, 4, 40], "unit": "nanometer"},
        "dataLayers": [
            {
                "name": layer, "category": "color", "elementClass": "uint8", "dataFormat": "zarr",
                "boundingBox": {"topLeft": [0, 0, 0], "width": 64, "height": 64, "depth": 64},
                "mags": [mag | {"path": layer}],
            }
            for layer in layers
        ],
    })  # fmt: skip


def add_dataset(session, owner, slug, *layers, credential_id=None, public=False):
    record = DatasetRecord(
        slug=slug,
        datasource=datasource_json(*(layers or ("color",)), credential_id=credential_id),
        owner_id=owner.id,
        public=public,
    )
    session.add(record)
    session.flush()
    return record


EXAMPLES = [
    HttpCredential("alice", "basic-password-1"),
    HttpCredential(token="bearer-token-2"),
    S3Credential("AKIAEXAMPLE", "s3-secret-3", endpoint_url="http://minio:9000", region="eu-1"),
    S3Credential("AKIAEXAMPLE", "s3-secret-4"),
    GcsCredential('{"type": "service_account", "private_key": "gcs-key-5"}'),
    GcsCredential({"type": "service_account", "private_key": "gcs-key-6"}, "http://gcs:4443"),
]


# -- round trips and rights --------------------------------------------------------------------


@pytest.mark.parametrize("credential", EXAMPLES, ids=lambda c: type(c).__name__)
def test_round_trip(catalog, credential):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice = add_user(s, "alice")
        info = creds.store_credential(s, box, alice, credential, name="mine")
    assert re.fullmatch(r"cred_[0-9a-f]{24}", info.id)
    assert (info.name, info.kind, info.owner) == ("mine", creds.kind_of(credential), "alice")
    assert info.created_at.tzinfo is not None
    assert info.rotated_at is None
    with catalog.session() as s:
        assert creds.load_credential(s, box, info.id) == credential
        record = s.get(CredentialRecord, info.id)
        assert record.kind == info.kind  # in clear
        assert Fernet(catalog.data_dir.joinpath("secret.key").read_bytes().strip()).decrypt(
            record.secret
        )


def test_default_names_and_conflicts(catalog):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice = add_user(s, "alice")
        info = creds.store_credential(s, box, alice, EXAMPLES[2])
        assert info.name.startswith("s3-")
        creds.store_credential(s, box, alice, EXAMPLES[0], name="shared")
        with pytest.raises(ConflictError, match="'shared' already exists"):
            creds.store_credential(s, box, alice, EXAMPLES[1], name="shared")
        with pytest.raises(InvalidNameError, match="printable"):
            creds.store_credential(s, box, alice, EXAMPLES[1], name="  ")
        with pytest.raises(TypeError, match="HttpCredential, S3Credential or GcsCredential"):
            creds.store_credential(s, box, alice, "password", name="x")  # type: ignore[arg-type]


def test_viewers_cannot_store(catalog):
    with catalog.session() as s:
        bob = add_user(s, "bob", "viewer")
        with pytest.raises(PermissionDeniedError, match=r"bob \(viewer\) may not import"):
            creds.store_credential(s, secret_box(catalog), bob, EXAMPLES[0])


def test_rotation_keeps_the_id(catalog):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice = add_user(s, "alice")
        info = creds.store_credential(s, box, alice, EXAMPLES[3], name="bucket")
        add_dataset(s, alice, "uses-it", credential_id=info.id)
    new = S3Credential("AKIANEW", "s3-rotated-secret", endpoint_url="http://minio:9000")
    with catalog.session() as s:
        alice = s.query(User).filter_by(name="alice").one()
        rotated = creds.rotate_credential(s, box, alice, "bucket", new)
        assert rotated.id == info.id
        assert rotated.rotated_at is not None
        with pytest.raises(ValueError, match=r"kind 's3'.*cannot be rotated to a 'http'"):
            creds.rotate_credential(s, box, alice, info.id, EXAMPLES[0])
    with catalog.session() as s:
        assert creds.load_credential(s, box, info.id) == new


def test_owner_or_admin_only(catalog):
    box = secret_box(catalog)
    with catalog.session() as s:
        admin = add_user(s, "root", "admin")
        alice, bob = add_user(s, "alice"), add_user(s, "bob")
        a = creds.store_credential(s, box, alice, EXAMPLES[0], name="alice-http")
        b = creds.store_credential(s, box, bob, EXAMPLES[2], name="bob-s3")
        assert [i.name for i in creds.list_credentials(s, alice)] == ["alice-http"]
        assert [i.name for i in creds.list_credentials(s, bob)] == ["bob-s3"]
        assert [(i.name, i.owner) for i in creds.list_credentials(s, admin)] == [
            ("alice-http", "alice"),
            ("bob-s3", "bob"),
        ]
        for name_or_id in ("bob-s3", b.id):
            with pytest.raises(CredentialNotFoundError, match="list_credentials shows yours"):
                creds.rotate_credential(s, box, alice, name_or_id, EXAMPLES[3])
            with pytest.raises(CredentialNotFoundError):
                creds.delete_credential(s, alice, name_or_id)
            with pytest.raises(CredentialNotFoundError):
                creds.use_credential(s, alice, name_or_id)
            with pytest.raises(CredentialNotFoundError):
                creds.get_credential(s, alice, name_or_id)
        assert creds.use_credential(s, alice, "alice-http") == a.id
        assert creds.rotate_credential(s, box, admin, "alice-http", EXAMPLES[1]).id == a.id
        assert creds.get_credential(s, admin, b.id).owner == "bob"


def test_delete_refused_while_used(catalog):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, carol = add_user(s, "alice"), add_user(s, "carol", "admin")
        info = creds.store_credential(s, box, alice, EXAMPLES[2], name="s3")
        mine = add_dataset(s, alice, "mine", credential_id=info.id)
        hidden = add_dataset(s, carol, "carols-private", credential_id=info.id)
        mentions = add_dataset(s, alice, "mentions-only")  # the id, but not as a credential
        mentions.datasource = mentions.datasource.replace("example.org/data", info.id)
        with pytest.raises(ConflictError) as err:
            creds.delete_credential(s, alice, "s3")
        assert "'mine'" in str(err.value)
        assert "1 dataset(s) you cannot see" in str(err.value)
        assert "carols-private" not in str(err.value)
        with pytest.raises(ConflictError, match="'carols-private'"):
            creds.delete_credential(s, carol, "s3")  # an admin sees all
        assert [d.slug for d in creds.datasets_using(s, info.id)] == ["carols-private", "mine"]
        s.delete(mine)
        s.delete(hidden)
        s.flush()
        creds.delete_credential(s, alice, "s3")
        with pytest.raises(CredentialNotFoundError, match="no longer exists"):
            creds.load_credential(s, box, info.id)


def test_find_credential_for(catalog):
    box = secret_box(catalog)
    with catalog.session() as s:
        alice, bob = add_user(s, "alice"), add_user(s, "bob")
        info = creds.store_credential(s, box, alice, EXAMPLES[2])
        same = S3Credential("AKIAEXAMPLE", "s3-secret-3", "http://minio:9000", "eu-1")
        assert creds.find_credential_for(s, box, alice, same) == info.id
        assert creds.find_credential_for(s, box, bob, same) is None  # not bob's to use
        assert creds.find_credential_for(s, box, alice, EXAMPLES[3]) is None


def test_wrong_key(catalog, monkeypatch):
    with catalog.session() as s:
        info = creds.store_credential(s, secret_box(catalog), add_user(s, "a"), EXAMPLES[0])
    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())
    with catalog.session() as s, pytest.raises(SecretKeyError, match=r"restore .*secret\.key"):
        creds.load_credential(s, secret_box(catalog), info.id)


def test_reencrypt_all_after_key_rotation(catalog, monkeypatch):
    old_box = secret_box(catalog)
    with catalog.session() as s:
        alice = add_user(s, "alice")
        info = creds.store_credential(s, old_box, alice, EXAMPLES[4])
        _, token = links.create_link(s, old_box, alice, dataset=add_dataset(s, alice, "d"))
    old_key = catalog.data_dir.joinpath("secret.key").read_text().strip()
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_KEY, f"{new_key},{old_key}")
    with catalog.session() as s:
        assert crypto.reencrypt_all(s, secret_box(catalog)) == 2
    monkeypatch.setenv(ENV_KEY, new_key)  # the old key is gone now
    box = secret_box(catalog)
    with catalog.session() as s:
        assert creds.load_credential(s, box, info.id) == EXAMPLES[4]
        link_id = links.resolve_token(s, token).link_id
        assert links.link_token(s, box, s.query(User).one(), link_id) == token


# -- the secret scan ---------------------------------------------------------------------------


def _exercise(catalog, secrets_: list[str]) -> tuple[list[object], list[str]]:
    """Store, rotate, use and misuse credentials and links; (returned objects, tokens)."""
    box = secret_box(catalog)
    seen: list[object] = [box, catalog]
    tokens: list[str] = []
    http = HttpCredential("scan-user", secrets_[0])
    bearer = HttpCredential(token=secrets_[1])
    s3 = S3Credential("AKIASCAN", secrets_[2], endpoint_url="http://minio.example:9000")
    gcs = GcsCredential(json.dumps({"type": "service_account", "private_key": secrets_[3]}))
    rotated = S3Credential("AKIASCAN", secrets_[4])
    with catalog.session() as s:
        admin, alice = add_user(s, "scan-admin", "admin"), add_user(s, "scan-alice")
        viewer = add_user(s, "scan-viewer", "viewer")
        infos = [
            creds.store_credential(s, box, alice, c, name=f"scan-{i}")
            for i, c in enumerate([http, bearer, s3, gcs])
        ]
        seen += infos
        seen.append(creds.rotate_credential(s, box, alice, "scan-2", rotated))
        seen += creds.list_credentials(s, admin) + creds.list_credentials(s, alice)
        seen.append(creds.find_credential_for(s, box, alice, rotated))
        seen.append(creds.get_credential(s, alice, "scan-3"))
        ds = add_dataset(s, alice, "scan-ds", "color", "seg", credential_id=infos[2].id)
        for expires in ("30d", None):
            record, token = links.create_link(s, box, alice, dataset=ds, expires=expires)
            tokens.append(token)
            seen.append(record)
            seen.append(links.resolve_token(s, token))
            links.record_use(s, record.id)
        assert links.link_token(s, box, alice, record.id) == token
        seen += links.list_links(s, alice, dataset=ds)
        seen.append(links.update_link(s, alice, record.id, expires="2d", label="scan label"))
        seen.append(links.revoke_link(s, alice, record.id))
        seen.append(links.resolve_token(s, token))
        # The credential objects loaded for readers are the one place secrets come back; their
        # reprs still hide them.
        seen += [creds.load_credential(s, box, i.id) for i in infos]
        failures = [
            lambda: creds.store_credential(s, box, alice, http, name="scan-0"),
            lambda: creds.store_credential(s, box, viewer, http),
            lambda: creds.rotate_credential(s, box, alice, "scan-0", rotated),
            lambda: creds.rotate_credential(s, box, viewer, "scan-0", http),
            lambda: creds.delete_credential(s, alice, "scan-2"),
            lambda: links.create_link(s, box, viewer, dataset=ds),
            lambda: links.link_token(s, box, viewer, record.id),
            lambda: links.create_link(s, box, alice, dataset=ds, layers=["nope"]),
            lambda: SecretBox([Fernet.generate_key()], source="x").decrypt(
                s.get(CredentialRecord, infos[0].id).secret
            ),
        ]
        for fail in failures:
            with pytest.raises(Exception) as info:  # noqa: PT011 - any error: we scan its text
                fail()
            seen.append(info.value)
            seen.append("".join(traceback.format_exception(info.value)))
    return seen, tokens


def _dump(catalog) -> bytes:
    """Every byte the database holds: the SQLite files, or every PostgreSQL row as text."""
    if catalog.engine.dialect.name == "sqlite":
        db = Path(catalog.url.removeprefix("sqlite:///"))
        return b"".join(
            p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()
        )
    with catalog.engine.connect() as conn:
        rows = [
            row[0]
            for table in Base.metadata.sorted_tables
            for row in conn.execute(text(f'SELECT t::text FROM "{table.name}" t'))
        ]
    return "\n".join(rows).encode()


def test_secret_scan(catalog, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    secrets_ = [f"SCAN-SECRET-{i}-{secrets.token_hex(8)}" for i in range(5)]
    seen, tokens = _exercise(catalog, secrets_)
    key = catalog.data_dir.joinpath("secret.key").read_text().strip()
    needles = [*secrets_, *tokens, key]

    texts = {"logs": caplog.text + "".join(str(r.args) for r in caplog.records)}
    texts["reprs"] = "\n".join(f"{o!r}\n{o!s}" for o in seen)
    for where, haystack in texts.items():
        for needle in needles:
            assert needle not in haystack, f"a secret leaked into the {where}"
    assert "INSERT INTO credentials" in caplog.text  # the SQL log was on: the scan means something

    for dump in (_dump(catalog), (catalog.dispose(), _dump(catalog))[1]):
        assert b"scan-ds" in dump
        assert b"scan-2" in dump
        for needle in needles:
            for form in (needle.encode(), needle.encode().hex().encode()):
                assert form not in dump, "a secret is stored in clear"
