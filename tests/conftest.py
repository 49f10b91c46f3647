"""Shared fixtures: real servers for remote-storage tests (implementations in tests/servers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import GCSEmulator, MotoS3Server, RangeHTTPServer

if TYPE_CHECKING:
    import os

    from tests.servers import HTTPServerFactory


# The catalog fixtures (SQLite and PostgreSQL, a fresh database per test) serve every folder;
# pytest-jupyter's jp_* fixtures the extension tests. Its tornado ``http_server`` fixture is
# shadowed by ours below (tests/server/test_extension.py restores it for jp_fetch).
pytest_plugins = ["tests.catalog.fixtures", "pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """moto S3 server requiring signed requests; ``.key_id``/``.secret`` is a full-S3 key."""
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GCSEmulator]:
    """In-memory GCS emulator; connect with ``gcsfs.GCSFileSystem(**.storage_options)``."""
    with GCSEmulator() as server:
        yield server


@pytest.fixture
def http_server() -> Iterator[HTTPServerFactory]:
    """Factory ``(root, **options) -> RangeHTTPServer``, started now and stopped after the test."""
    started: list[RangeHTTPServer] = []

    def start(root: str | os.PathLike[str], **options: Any) -> RangeHTTPServer:
        server = RangeHTTPServer(root, **options).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
