"""What the REST API reads from a request: JSON bodies, fields, query values, path ids.

Pure functions raising :class:`ApiError` (a status and a message) for anything a client got
wrong, before the catalog or any storage sees it: bodies larger than 1 MiB (413), not JSON,
nested deeper than :data:`MAX_DEPTH`, or holding text no catalog column can store (NUL,
lone surrogates), and fields of the wrong type (400).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from wkjupyter.catalog import credentials as cred_service

if TYPE_CHECKING:
    from wkjupyter.sources._fs import Credential

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "ApiError",
    "body",
    "boolean",
    "check_text",
    "credential",
    "link_id",
    "optional_bool",
    "optional_int",
    "optional_str",
    "str_list",
    "urls",
]

MAX_BODY = 1 << 20
MAX_DEPTH = 32  # a request body's nesting; real ones need 3


class ApiError(Exception):
    """A client error found by the API itself (bad JSON, a missing field)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def body(raw: bytes) -> dict[str, Any]:
    """A request body: a JSON object (``{}`` when empty), its texts storable."""
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
    if not raw:
        return {}
    too_deep = ApiError(400, f"the request body is nested more than {MAX_DEPTH} levels deep")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ApiError(400, f"the request body is not JSON: {err}") from err
    except RecursionError:  # the C parser's own depth limit, near 1000
        raise too_deep from None
    if _depth(doc) > MAX_DEPTH:
        raise too_deep
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _check_texts(doc, "the request body")
    return doc


def urls(doc: dict[str, Any]) -> list[str]:
    given = doc.get("urls", doc.get("url"))
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not given or not all(isinstance(u, str) and u for u in given):
        raise ApiError(400, "'urls' must be a URL or a non-empty list of URLs")
    return given


def credential(doc: dict[str, Any]) -> Credential | None:
    if doc.get("credential") is None:
        return None
    try:
        return cred_service.credential_from_json(doc["credential"])
    except ValueError as err:
        raise ApiError(400, str(err)) from err


def optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    return value


def str_list(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"'{key}' must be a list of strings")
    return value


def boolean(doc: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false")
    return value


def optional_bool(text: str | None, key: str) -> bool | None:
    if text is None or text == "":
        return None
    if text.lower() in {"true", "1", "yes"}:
        return True
    if text.lower() in {"false", "0", "no"}:
        return False
    raise ApiError(400, f"'{key}' must be true or false, got {text!r}")


def optional_int(text: str | None, key: str) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 9:
        raise ApiError(400, f"'{key}' must be a non-negative integer, got {text!r}")
    return int(text)


def link_id(text: str) -> int:
    """A link id from the path: a 404 for what no link can be called (the catalog's own
    lookup bounds numbers to its id range)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        msg = f"no link {text!r}: link ids are whole numbers (GET api/links lists them)"
        raise ApiError(404, msg)
    return int(text)


def _depth(doc: Any) -> int:
    """How deeply ``doc`` nests lists and objects (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, level + 1) for v in items)
    return deepest


def _check_texts(doc: Any, what: str) -> None:
    """Refuse NUL characters and lone surrogates anywhere in a parsed body (keys included):
    no catalog text can hold them (PostgreSQL refuses NUL; neither encodes a surrogate)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            check_text(value, what)
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def check_text(text: str, what: str) -> None:
    """Refuse text no catalog can store, before it reaches a query."""
    if "\x00" in text:
        raise ApiError(400, f"{what} contains a NUL character, which no name or text may hold")
    try:
        text.encode()
    except UnicodeEncodeError as err:
        msg = f"{what} is not valid Unicode text (a lone surrogate at {err.start})"
        raise ApiError(400, msg) from None
