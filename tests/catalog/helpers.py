"""Small helpers the catalog tests share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wkjupyter.catalog.models import User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_user(session: Session, name: str, role: str = "editor") -> User:
    """A user row, flushed so it has an id (no permission checks: test setup only)."""
    user = User(name=name, role=role)
    session.add(user)
    session.flush()
    return user
