"""The catalog fixtures (``catalog``, ``catalog_url``, ``empty_catalog_url``, ``postgres``...)
live in ``tests/catalog/fixtures.py``, which ``tests/conftest.py`` registers for every test."""

from __future__ import annotations

from tests.catalog.fixtures import BACKENDS, DEFAULT_PG_URL, PostgresServer

__all__ = ["BACKENDS", "DEFAULT_PG_URL", "PostgresServer"]
