"""The catalog fixtures (``catalog``, ``catalog_url``, ``empty_catalog_url``, ``postgres``...)
live in ``tests/catalog/fixtures.py``, which ``tests/conftest.py`` registers for every test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.catalog.fixtures import BACKENDS, DEFAULT_PG_URL, PostgresServer
from wkjupyter.catalog import crypto

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["BACKENDS", "DEFAULT_PG_URL", "PostgresServer"]


@pytest.fixture(autouse=True)
def _file_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keys come from the data dir's key file, not from the developer's environment."""
    monkeypatch.delenv(crypto.ENV_KEY, raising=False)
    crypto.clear_cache()
    yield
    crypto.clear_cache()
