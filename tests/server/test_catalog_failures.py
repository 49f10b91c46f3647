"""A catalog that changes under running servers: a SQLite file replaced by a backup or deleted,
a catalog that refuses writes, and link uses written when ``wkjupyter serve`` is stopped.

Real ``wkjupyter serve`` processes (or the in-thread server, to read its log), real files
moved and deleted, a real read-only file (``chattr +i``) or PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import make_url

from tests.catalog.helpers import sqlite_backup
from tests.server.conftest import write_sparse_ome_zarr
from tests.server.live import LiveServer, fetch, serve_process
from wkjupyter.cli import main
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.catalog.fixtures import PostgresServer
    from wkjupyter.hub import Dataset


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI finds the catalog's key in the test's data dir, never in the home directory."""
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("WKJUPYTER_CATALOG_URL", raising=False)


@dataclass
class World:
    hub: Hub
    url: str
    data_dir: Path
    public: Dataset
    private: Dataset
    link_path: str  # below the server's wkjupyter/ root
    link_id: int


def make_world(url: str, data_dir: Path) -> World:
    source = write_sparse_ome_zarr(data_dir / "src" / "img.ome.zarr")
    hub = Hub(url, "owner", data_dir=data_dir, public_url="http://example.invalid/")
    public = hub.add_remote(str(source), name="open-data", public=True)
    private = hub.add_remote(str(source), name="closed-data", public=False)
    link = private.create_link(label="reviewer")
    return World(hub, url, data_dir, public, private, f"{link.path.split('wkjupyter/', 1)[1]}",
                 link.id)  # fmt: skip


@pytest.fixture
def world(catalog_url: str, tmp_path: Path) -> Iterator[World]:
    world = make_world(catalog_url, tmp_path)
    yield world
    world.hub.catalog.dispose()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    world = make_world(f"sqlite:///{tmp_path / 'cat.sqlite'}", tmp_path)
    yield world
    world.hub.catalog.dispose()


@contextlib.contextmanager
def serve(world: World, *, stop: signal.Signals = signal.SIGTERM) -> Iterator[str]:
    """``wkjupyter serve --port 0`` on the world's catalog in a real process; yields its URL.

    Stopped with ``stop``; the process must then exit cleanly.
    """
    args = ("--catalog-url", world.url, "--data-dir", str(world.data_dir), "--user", "owner")
    with serve_process(*args, log=world.data_dir / "serve.log", stop=stop) as served:
        yield served.url
    assert served.returncode == 0, served.stderr


def status(base: str, path: str) -> tuple[int, str]:
    answer = fetch(base, path)
    return answer.status, answer.body.decode(errors="replace")


def cli(world: World, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([*args, "--catalog-url", world.url, "--user", "owner"])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- issue 9.3: the SQLite file replaced or deleted ------------------------------------------


def test_a_restored_catalog_file_is_reopened_and_revocation_holds(
    sqlite_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world = sqlite_world
    path = world.data_dir / "cat.sqlite"
    # The backup to restore: the link revoked there, the public dataset private, a new link.
    restored = world.data_dir / "restored.sqlite"
    sqlite_backup(path, restored)
    world.hub.catalog.dispose()
    old = Hub(f"sqlite:///{restored}", "owner", data_dir=world.data_dir)
    old.link(world.link_id).revoke()
    old.dataset("open-data").public = False
    other = old.dataset("closed-data").create_link(label="second")
    other_path = other.path.split("wkjupyter/", 1)[1]
    old.catalog.dispose()  # its WAL is written into the file and removed

    with serve(world) as base:
        assert status(base, world.link_path + "zarr/.zgroup")[0] == 200
        assert status(base, "zarr/open-data/.zgroup")[0] == 200
        assert status(base, other_path + "zarr/.zgroup")[0] == 404
        os.replace(restored, path)  # restoring the backup: another file (inode) at the path
        for key in (world.link_path + "zarr/.zgroup", "zarr/open-data/.zgroup"):
            assert status(base, key)[0] == 404, key
        assert status(base, other_path + "zarr/.zgroup")[0] == 200

        # The steps after the restore: `link revoke` and a dataset made private.
        code, _, err = cli(world, "link", "revoke", str(other.id), capsys=capsys)
        assert code == 0, err
        assert status(base, other_path + "zarr/.zgroup")[0] == 404
        hub = Hub(world.url, "owner", data_dir=world.data_dir)
        hub.dataset("open-data").public = True
        assert status(base, "zarr/open-data/.zgroup")[0] == 200
        hub.dataset("open-data").public = False
        assert status(base, "zarr/open-data/.zgroup")[0] == 404
        hub.catalog.dispose()


def test_a_deleted_catalog_file_is_503_and_never_recreated(
    sqlite_world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = sqlite_world
    path = world.data_dir / "cat.sqlite"
    world.hub.catalog.dispose()
    with serve(world) as base:
        assert status(base, world.link_path + "zarr/.zgroup")[0] == 200
        assert status(base, "zarr/open-data/.zgroup")[0] == 200
        os.replace(path, world.data_dir / "moved-away.sqlite")
        for key in (world.link_path + "zarr/.zgroup", "zarr/open-data/.zgroup",
                    "zarr/open-data/img/1/0/0/0/0"):  # fmt: skip
            code, body = status(base, key)
            assert code == 503, (key, body)
            assert json.loads(body)["message"] == "catalog file missing"
            assert str(world.data_dir) not in body
        assert not path.exists()  # the server did not create an empty one

        # The CLI neither: a named catalog must exist ...
        for args in (("ls",), ("link", "revoke", str(world.link_id)), ("tag", "open-data")):
            code, _, err = cli(world, *args, capsys=capsys)
            assert code == 1, (args, err)
            (line,) = err.splitlines()
            assert line.startswith(f"error: the catalog {world.url!r} does not exist"), line
            assert "wkjupyter import" in line
            assert not path.exists()
        monkeypatch.setenv("WKJUPYTER_CATALOG_URL", world.url)  # ... also from the environment
        assert main(["ls", "--user", "owner"]) == 1
        assert "does not exist" in capsys.readouterr().err
        assert not path.exists()

        os.replace(world.data_dir / "moved-away.sqlite", path)  # back: served again
        assert status(base, world.link_path + "zarr/.zgroup")[0] == 200
        assert status(base, "zarr/open-data/.zgroup")[0] == 200


def test_a_missing_named_catalog_is_not_created_except_by_import(
    catalog_url: str,
    postgres_or_none: PostgresServer | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", str(tmp_path))
    url = make_url(catalog_url)
    if postgres_or_none is None:
        missing = f"sqlite:///{tmp_path / 'typo' / 'missing.sqlite'}"
    else:
        missing = url.set(database=f"{url.database}_missing").render_as_string(False)
    for args in (["ls"], ["serve", "--port", "0"], ["link", "ls", "x"]):
        assert main([*args, "--catalog-url", missing]) == 1, args
        err = capsys.readouterr().err
        (line,) = err.splitlines()
        assert "does not exist" in line
        assert not (tmp_path / "typo").exists()
    if postgres_or_none is not None:
        return  # creating PostgreSQL databases is the administrator's job
    source = write_sparse_ome_zarr(tmp_path / "img.ome.zarr")
    assert main(["import", str(source), "--name", "img", "--catalog-url", missing]) == 0
    assert ", new catalog)" in capsys.readouterr().err.splitlines()[0]
    assert main(["ls", "--catalog-url", missing]) == 0
    assert capsys.readouterr().out.startswith("img ")


@pytest.fixture
def postgres_or_none(backend: str, request: pytest.FixtureRequest) -> PostgresServer | None:
    if backend == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server


# -- issue 9.6: a read-only catalog ----------------------------------------------------------


@contextlib.contextmanager
def read_only(world: World, postgres_or_none: PostgresServer | None) -> Iterator[None]:
    """The world's catalog refusing writes: ``chattr +i`` on the SQLite file (root may
    write any file whatever its mode), ``default_transaction_read_only`` on PostgreSQL."""
    world.hub.catalog.dispose()
    if postgres_or_none is None:
        path = world.data_dir / "cat.sqlite"
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i does not work here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    name = make_url(world.url).database
    with postgres_or_none.admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        yield
    finally:
        with postgres_or_none.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


@pytest.fixture
def any_world(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The world on SQLite (at ``cat.sqlite``, for chattr) or on PostgreSQL."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    else:
        url = request.getfixturevalue("catalog_url")
    world = make_world(url, tmp_path)
    yield world
    world.hub.catalog.dispose()


def api(server: LiveServer, method: str, path: str, doc: object) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{server.url}{path}", data=json.dumps(doc).encode(), method=method,
        headers={"Authorization": f"token {server.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_read_only_catalog_answers_503_and_the_cli_one_line(
    any_world: World,
    postgres_or_none: PostgresServer | None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = any_world
    with read_only(world, postgres_or_none):
        with LiveServer(world.url, world.data_dir) as server, caplog.at_level(logging.WARNING):
            code, doc = api(server, "PATCH", "api/datasets/open-data", {"public": False})
            assert code == 503, doc
            assert doc["error"] == "CatalogReadOnlyError"
            assert "read-only" in doc["message"]
            assert "make it writable" in doc["message"]
            # Reading still works; the link uses cannot be written: one warning, no traceback.
            for _ in range(3):
                assert fetch(server, world.link_path + "zarr/.zgroup").status == 200
                server.call(server.data.flush_uses())
        records = [r for r in caplog.records if "link uses" in r.getMessage()]
        assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING], records
        assert "read-only" in records[0].getMessage()
        assert "3 link uses could not be recorded and are lost" in records[1].getMessage()
        assert all(r.exc_info is None for r in caplog.records)

        code, _, err = cli(world, "link", "revoke", str(world.link_id), capsys=capsys)
        assert code == 1
        lines = err.splitlines()
        assert lines[0].startswith("catalog: ")  # which catalog, then the one error line
        assert len(lines) == 2, err
        assert lines[1].startswith("error: the catalog database ")
        assert "is read-only" in lines[1]
    # Writable again: nothing was changed meanwhile.
    assert world.hub.link(world.link_id).revoked is False
    assert world.hub.dataset("open-data").public is True


# -- issue 9.6: link uses written on SIGTERM and SIGINT ----------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_writes_counted_link_uses_when_stopped(world: World, stop: signal.Signals) -> None:
    with serve(world, stop=stop) as base:
        for _ in range(5):  # well within the 2 s before the batch is written by itself
            assert status(base, world.link_path + "zarr/.zgroup")[0] == 200
    assert world.hub.link(world.link_id).use_count == 5
