"""Small helpers the catalog tests share."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

from wkjupyter.catalog.models import User

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.orm import Session


def add_user(session: Session, name: str, role: str = "editor") -> User:
    """A user row, flushed so it has an id (no permission checks: test setup only)."""
    user = User(name=name, role=role)
    session.add(user)
    session.flush()
    return user


def sqlite_backup(path: Path, to: Path) -> None:
    """A consistent copy of a SQLite catalog (SQLite's backup API), as an admin takes one."""
    with (
        contextlib.closing(sqlite3.connect(path)) as src,
        contextlib.closing(sqlite3.connect(to)) as dst,
    ):
        src.backup(dst)
