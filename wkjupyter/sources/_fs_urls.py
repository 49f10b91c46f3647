"""Storage URLs: which filesystem, which root, and how keys join onto them.

Local paths and ``file://`` URLs are decoded paths. ``http(s)://`` URLs are kept
percent-encoded (user info is refused: it belongs in a credential), so keys joined onto them are
encoded segment by segment and a query string stays at the end. ``s3://`` and ``gs://`` keys
are literal object names ('#', '?' and '%' are ordinary characters in them); in
``s3://host:port/bucket/key`` the host and port name a path-style endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from wkjupyter.errors import InvalidKeyError

__all__ = ["ParsedUrl", "Scheme", "join_url", "parse_url", "redact_url"]

Scheme = Literal["file", "http", "https", "s3", "gs"]


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A URL split into what a filesystem needs."""

    scheme: Scheme
    root: str  # local path, percent-encoded http URL (no user info), or "bucket/key"
    endpoint_url: str | None = None  # S3 path-style endpoint from the URL itself


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def parse_url(url: str) -> ParsedUrl:
    """Split a storage URL; raises ``ValueError`` for URLs we cannot read."""
    url = url.strip()
    if "://" not in url:
        return ParsedUrl("file", str(Path(url).expanduser().absolute()).rstrip("/") or "/")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return ParsedUrl("file", unquote(urlsplit(url).path).rstrip("/") or "/")
    if scheme in ("http", "https"):
        return _parse_http(url)
    if scheme in ("s3", "gs", "gcs"):
        # Object keys are taken literally ('#', '?' and '%' are ordinary characters in them).
        netloc, _, path = rest.partition("/")
        if "@" in netloc:
            msg = (
                f"cannot read {redact_url(url)!r}: put S3/GCS keys in a credential "
                "(S3Credential, GcsCredential), not in the URL"
            )
            raise ValueError(msg)
        if not netloc:
            msg = f"cannot read {url!r}: the URL names no bucket; use {scheme}://bucket/path"
            raise ValueError(msg)
        if scheme == "s3" and ":" in netloc:
            # Bucket names cannot contain ':', so "host:port" is a path-style endpoint.
            local = netloc.rsplit(":", 1)[0] in _LOCAL_HOSTS
            endpoint = f"{'http' if local else 'https'}://{netloc}"
            return ParsedUrl("s3", path.strip("/"), endpoint)
        root = f"{netloc}/{path}".rstrip("/")
        return ParsedUrl("gs" if scheme == "gcs" else scheme, root)  # type: ignore[arg-type]
    msg = (
        f"cannot read {redact_url(url)!r}: unsupported URL scheme {scheme!r}; use a local path, "
        "file://, http(s)://, s3:// or gs://"
    )
    raise ValueError(msg)


def _parse_http(url: str) -> ParsedUrl:
    import yarl

    try:
        parsed = yarl.URL(url)  # percent-encodes what must be, keeps existing %XX escapes
    except ValueError as err:
        msg = f"cannot read {redact_url(url)!r}: not a valid URL ({err})"
        raise ValueError(msg) from None
    if not parsed.host:
        msg = f"cannot read {redact_url(url)!r}: the URL names no host"
        raise ValueError(msg)
    if parsed.user is not None or parsed.password is not None:
        # Taken as a credential here, the password was lost on import (catalogs store URLs
        # without user info and only the credentials given as such), and URLs reach logs.
        msg = (
            f"cannot read {redact_url(url)!r}: give the user name and password as a credential, "
            "not in the URL (URLs end up in logs and catalogs): "
            "explore(url, HttpCredential(username, password)) in Python, "
            '{"credential": {"kind": "http", "username": ..., "password": ...}} in the REST API'
        )
        raise ValueError(msg)
    text = str(parsed.with_fragment(None))
    path, sep, query = text.partition("?")
    root = path.rstrip("/") + sep + query
    return ParsedUrl(parsed.scheme, root)  # type: ignore[arg-type]


def redact_url(url: str) -> str:
    """``url`` without the password of any user info."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", url)


# RFC 3986 pchar: unreserved / sub-delims / ":" / "@" stay literal in a path segment.
_PCHAR_SAFE = "!$&'()*+,;=:@~"


def join_url(base: str, key: str) -> str:
    """Join a relative key onto a URL or path, resolving ``.`` and ``..`` segments.

    ``..`` may not climb above the URL's root (bucket or host). An absolute key (a URL or
    a ``/`` path) is returned as is. Keys are decoded paths: onto an ``http(s)`` URL their
    segments are percent-encoded, and the URL's query string stays at the end.
    """
    if "://" in key or key.startswith("/"):
        return key
    http = base.startswith(("http://", "https://"))
    query = ""
    if http and "?" in base:
        base, _, q = base.partition("?")
        query = "?" + q
    base = base.rstrip("/")
    segments = [s for s in key.split("/") if s not in ("", ".")]
    head = base
    for seg in segments:
        if seg == "..":
            parent = head.rsplit("/", 1)[0]
            if parent.endswith((":/", ":")) or parent == "":
                msg = f"key {key!r} climbs above the root of {base!r}"
                raise InvalidKeyError(msg)
            head = parent
        else:
            head = f"{head}/{quote(seg, safe=_PCHAR_SAFE) if http else seg}"
    return head + query
