"""Plain HTTP(S) reads: GET with byte ranges, HEAD, and nginx/Apache-style directory listings.

Our own requests rather than fsspec's ``HTTPFileSystem``: every status is seen and mapped
(``HTTPFileSystem.info`` turns a 5xx into "not found"), keys with ``#``, ``?`` or ``%`` are
percent-encoded exactly once, and servers that ignore ``Range`` or answer a range with
``Content-Encoding`` still give the right bytes. URLs here are percent-encoded already.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from wkjupyter.sources._fs_errors import HttpStatusError

if TYPE_CHECKING:
    import aiohttp
    from fsspec.asyn import AsyncFileSystem

__all__ = ["authorization", "http_exists", "http_get", "http_list", "make_fs", "make_session"]

_HREF = re.compile(r"""<a\s+(?:[^>]*?\s+)?href=["']([^"']+)["']""", re.IGNORECASE)


def authorization(
    username: str | None = None, password: str | None = None, token: str | None = None
) -> str:
    """The ``Authorization`` header: a bearer ``token``, else basic auth (RFC 7617, UTF-8)."""
    if token is not None:
        return f"Bearer {token}"
    pair = f"{username or ''}:{password or ''}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def make_session(authorization: str | None, timeout: float) -> aiohttp.ClientSession:
    """A session on the running loop; the ``Store`` semaphore bounds its concurrency."""
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(limit=0),
        headers={"Authorization": authorization} if authorization else None,
    )


def make_fs(session: aiohttp.ClientSession) -> AsyncFileSystem:
    """fsspec's ``HTTPFileSystem`` sharing ``session`` (for zarr-python's ``FsspecStore``)."""
    import asyncio

    from fsspec.implementations.http import HTTPFileSystem

    async def shared(**_: object) -> aiohttp.ClientSession:
        return session

    return HTTPFileSystem(
        asynchronous=True,
        loop=asyncio.get_running_loop(),
        skip_instance_cache=True,
        get_client=shared,
        encoded=True,
    )


async def http_get(
    session: aiohttp.ClientSession,
    url: str,
    byte_range: tuple[int, int] | None = None,
    suffix: int | None = None,
) -> bytes | None:
    """The object at ``url`` (``[start, end)`` of it, or its last ``suffix`` bytes).

    ``None`` for 404; a range past the end is cut short (416 gives ``b""``).
    """
    import yarl

    headers: dict[str, str] = {}
    if byte_range is not None:
        if byte_range[0] == byte_range[1]:
            return b""
        headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
    elif suffix is not None:
        headers["Range"] = f"bytes=-{suffix}"
    if headers:
        # RFC 9110: a range addresses the encoded content. Ask for it unencoded, so that
        # the bytes are the stored ones and need no decoding.
        headers["Accept-Encoding"] = "identity"
    async with session.get(yarl.URL(url, encoded=True), headers=headers) as response:
        status = response.status
        if status == 404:
            return None
        if status == 416:  # the range starts at or past the end
            return b""
        if status >= 400:
            raise HttpStatusError(status, response.reason or "")
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        # A range of compressed bytes cannot be decoded alone: fetch the whole object.
        encoded_range = status == 206 and encoding not in ("identity", "")
        data = b"" if encoded_range else await response.read()
    if status == 206 and not encoded_range:
        return data
    if encoded_range:
        whole = await http_get(session, url)
        if whole is None:
            return None
        data = whole
    # ``data`` is the whole object: there was no range, or the server ignored it (200).
    if byte_range is not None:
        return data[byte_range[0] : byte_range[1]]
    if suffix is not None:
        return data[-suffix:] if suffix else b""
    return data


async def http_exists(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether ``url`` answers a HEAD (or, where HEAD is not allowed, a one-byte GET)."""
    import yarl

    async with session.head(yarl.URL(url, encoded=True), allow_redirects=True) as response:
        status, reason = response.status, response.reason or ""
    if status in (405, 501):
        return await http_get(session, url, (0, 1)) is not None
    if status == 404:
        return False
    if status >= 400:
        raise HttpStatusError(status, reason)
    return True


async def http_list(session: aiohttp.ClientSession, url: str) -> list[str]:
    """Names in the HTML listing of the folder ``url``; folders end with ``/``.

    A server without listings (no HTML, 404) or one that forbids them (nginx without
    ``autoindex`` answers 403) gives ``[]``.
    """
    import yarl

    base = yarl.URL(url.partition("?")[0].rstrip("/") + "/", encoded=True)
    async with session.get(base) as response:
        status = response.status
        if status in (403, 404, 405):
            return []
        if status >= 400:
            raise HttpStatusError(status, response.reason or "")
        if response.content_type not in ("text/html", "application/xhtml+xml"):
            return []
        text = await response.text(errors="replace")
        final = response.url.with_query(None).with_fragment(None)  # after redirects
    prefix = str(final)
    names = set()
    for href in _HREF.findall(text):
        with contextlib.suppress(ValueError):
            target = str(final.join(yarl.URL(html.unescape(href), encoded=True)))
            rel = target.partition("?")[0].partition("#")[0].removeprefix(prefix)
            name = unquote(rel.rstrip("/"))
            if target.startswith(prefix) and name and "/" not in name and name not in (".", ".."):
                names.add(name + "/" if rel.endswith("/") else name)
    return sorted(names)
