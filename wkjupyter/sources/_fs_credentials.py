"""Credentials for remote storage: HTTP basic or bearer, S3 key pairs, GCS service accounts.

Frozen values (hashable, so clients are cached per credential); secrets never in a repr.
:func:`secrets_of` lists the strings no message may contain.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["Credential", "GcsCredential", "HttpCredential", "S3Credential", "secrets_of"]


@dataclass(frozen=True, slots=True)
class HttpCredential:
    """HTTP basic auth (``username``, ``password``) or a bearer ``token``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is None and self.username is None:
            msg = "HttpCredential needs a username (with password) or a bearer token"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class S3Credential:
    """An S3 access key; ``endpoint_url`` for S3-compatible stores (MinIO, Ceph ...)."""

    key_id: str
    secret: str = field(repr=False)
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class GcsCredential:
    """A Google Cloud service account, as its JSON key file's text or parsed dict.

    ``endpoint_url`` points at a GCS-compatible endpoint (an emulator) instead of Google's.
    """

    service_account_json: str | dict[str, Any] = field(repr=False)
    endpoint_url: str | None = None

    def info(self) -> dict[str, Any]:
        """The service account as a dict; ``ValueError`` if it is not a JSON object."""
        if isinstance(self.service_account_json, dict):
            return self.service_account_json
        try:
            parsed = json.loads(self.service_account_json)
        except json.JSONDecodeError as err:
            msg = "GcsCredential: the service-account JSON is not valid JSON"
            raise ValueError(msg) from err
        if not isinstance(parsed, dict):
            msg = "GcsCredential: the service-account JSON must be an object"
            raise ValueError(msg)
        return parsed

    def __hash__(self) -> int:  # a dict is unhashable; its canonical JSON is not
        return hash((_canonical_json(self.service_account_json), self.endpoint_url))


Credential: TypeAlias = HttpCredential | S3Credential | GcsCredential


def _canonical_json(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def secrets_of(credential: Credential | None) -> list[str]:
    """The strings of ``credential`` that must never appear in a message."""
    if isinstance(credential, HttpCredential):
        values = [credential.password, credential.token]
    elif isinstance(credential, S3Credential):
        values = [credential.secret]
    elif isinstance(credential, GcsCredential):
        raw = credential.service_account_json
        values = [_canonical_json(raw)] if isinstance(raw, str) else []
        with contextlib.suppress(ValueError):
            info = credential.info()
            values += [str(info.get("private_key", "")), str(info.get("private_key_id", ""))]
    else:
        values = []
    # Very short secrets would blank out ordinary words; they are refused by servers anyway.
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
