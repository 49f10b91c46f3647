"""Pure HTTP helpers for the data routes: byte ranges and entity tags (RFC 9110).

The handlers do the I/O; these functions only interpret and produce header values, so they are
tested exhaustively on their own.
"""

from __future__ import annotations

import hashlib
import re

import xxhash

from wkjupyter.errors import WkJupyterError

__all__ = [
    "RangeNotSatisfiable",
    "body_etag",
    "content_range",
    "etag_matches",
    "parse_range",
    "strong_etag",
]

# RFC 9110 §14.1.2: ranges-specifier = range-unit "=" range-set; range units are
# case-insensitive. Only a single int-range or suffix-range is honoured.
_RANGE = re.compile(r"bytes=(?:([0-9]+)-([0-9]*)|-([0-9]+))", re.IGNORECASE)
# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc excludes DQUOTE.
_ENTITY_TAG = re.compile(r'\s*(?:W/)?"([^"]*)"\s*(?:,|$)')
# Longer digit strings are larger than any representation; this also keeps int() away from
# Python's limit on converting very long strings.
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


class RangeNotSatisfiable(WkJupyterError, ValueError):
    """The Range header selects no byte of the representation: answer 416.

    Parameters
    ----------
    size
        The length of the selected representation in bytes.

    Attributes
    ----------
    size
        As given.
    content_range
        The ``Content-Range`` value of the 416 answer, ``bytes */<size>`` (RFC 9110 §15.5.17).
    """

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is not satisfiable for a {size}-byte resource")
        self.size = size

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` value of the 416 answer."""
        return f"bytes */{self.size}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Interpret a ``Range`` request header.

    Parameters
    ----------
    header
        The header value, or None if absent.
    size
        The length of the selected representation in bytes.

    Returns
    -------
    tuple of int or None
        The half-open byte range ``[start, end)`` with ``0 <= start < end <= size``, or None to
        serve the whole representation with 200: no header, a malformed one, another unit or
        several ranges (RFC 9110 §14.2: a server MAY ignore Range).

    Raises
    ------
    RangeNotSatisfiable
        If a single well-formed range selects no byte: ``start >= size``, a zero-length
        suffix, or any range of an empty representation. Answer 416.
    ValueError
        If ``size`` is negative.
    """
    if size < 0:
        msg = f"size must be non-negative, got {size}"
        raise ValueError(msg)
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        n = _to_int(suffix)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size
    start = _to_int(first)
    if last:
        end = _to_int(last) + 1
        if end <= start:
            return None  # §14.1.1: last-pos < first-pos makes the range invalid.
    else:
        end = size
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value of a 206 answer for the half-open range ``[start, end)``.

    Parameters
    ----------
    start, end
        The range as :func:`parse_range` returns it.
    size
        The length of the whole representation.

    Returns
    -------
    str
        ``bytes <start>-<end - 1>/<size>``.

    Raises
    ------
    ValueError
        Unless ``0 <= start < end <= size``.
    """
    if not 0 <= start < end <= size:
        msg = f"invalid byte range [{start}, {end}) of a {size}-byte resource"
        raise ValueError(msg)
    return f"bytes {start}-{end - 1}/{size}"


def strong_etag(*parts: str | bytes | int) -> str:
    """A strong entity tag derived from ``parts``.

    The same parts always give the same tag, in every process; different parts (including a
    different split into parts, or ``1`` versus ``"1"``) give different tags.

    Parameters
    ----------
    *parts
        What identifies the representation: for example a dataset id, a key, a version.

    Returns
    -------
    str
        A quoted tag of 32 hex digits (the first 128 bits of a SHA-256).

    Raises
    ------
    TypeError
        If a part is not ``str``, ``bytes`` or ``int``.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            kind, data = b"b", part
        elif isinstance(part, str):
            kind, data = b"s", part.encode("utf-8", "surrogatepass")
        elif isinstance(part, int):
            kind, data = b"i", str(int(part)).encode()
        else:  # untyped callers: a float or None would otherwise hash silently
            msg = f"an ETag part must be str, bytes or int, not {type(part).__name__}"  # type: ignore[unreachable]
            raise TypeError(msg)
        # Type and length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(kind + len(data).to_bytes(8, "big") + data)
    return f'"{digest.hexdigest()[:32]}"'


def body_etag(body: bytes) -> str:
    """A strong entity tag of a response body: its 128-bit XXH3 digest, quoted.

    Strong (RFC 9110 §8.8.1): equal tags mean byte-identical bodies (barring a collision,
    which would only keep a client's cached copy). XXH3 hashes a 256 KiB chunk ~30 times faster
    than SHA-256, which mattered on the event loop (bench/serve.py); nothing secret is hashed.
    """
    return f'"{xxhash.xxh3_128_hexdigest(body)}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag``, so the answer is 304.

    RFC 9110 §13.1.2: ``*`` matches any current representation, and entity tags are compared
    weakly (a ``W/`` prefix on either side is ignored).

    Parameters
    ----------
    if_none_match
        The header value, or None if absent.
    etag
        The current representation's entity tag, quoted, optionally ``W/``-prefixed.

    Returns
    -------
    bool
        True if the header is ``*`` or lists a tag whose opaque part equals ``etag``'s.
        An absent header never matches; reading stops at the first malformed list element.
    """
    if if_none_match is None:
        return False
    header = if_none_match.strip()
    if header == "*":
        return True
    own = _opaque(etag)
    pos = 0
    while pos < len(header):
        match = _ENTITY_TAG.match(header, pos)
        if match is None:
            return False
        if match.group(1) == own:
            return True
        pos = match.end()
    return False


def _opaque(etag: str) -> str:
    tag = etag.strip()
    tag = tag.removeprefix("W/")
    if len(tag) >= 2 and tag.startswith('"') and tag.endswith('"'):
        return tag[1:-1]
    return tag


def _to_int(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE
