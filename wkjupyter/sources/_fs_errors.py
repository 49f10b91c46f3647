"""Storage errors from aiohttp, fsspec, s3fs/botocore and gcsfs, mapped to ours.

docs/architecture.md §4: 404 is "not stored", 401/403 :class:`~wkjupyter.errors.RemoteAccessError`,
timeouts, unreachable hosts and 5xx :class:`~wkjupyter.errors.RemoteUnavailableError` (for a
host that does not answer at all, its subclass :class:`~wkjupyter.errors.HostUnreachableError`). The
libraries disagree on how they report a status (an attribute, a botocore response dict, a
message) and wrap errors in others, so the whole ``__cause__`` chain is searched and the
status code wins over the exception type: a 5xx must never read as "not stored", or a reader
would paint the chunk with the fill value (STYLE.md rule 6). Neither may a missing bucket
(:class:`~wkjupyter.errors.SourceGoneError`), nor a missing key whose array's metadata is
gone (:class:`Witness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from wkjupyter.errors import (
    HostUnreachableError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    SourceGoneError,
    WkJupyterError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = [
    "HttpStatusError",
    "Witness",
    "chain",
    "failed_upstream",
    "is_absent",
    "status_of",
    "tag_upstream",
    "translate_error",
    "unless_absent",
]


class HttpStatusError(Exception):
    """An HTTP response with an error status, before it is mapped to our errors."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status


_CREDENTIAL_HINT = {
    "http": "HttpCredential(username, password) or HttpCredential(token=...)",
    "https": "HttpCredential(username, password) or HttpCredential(token=...)",
    "s3": "S3Credential(key_id, secret, endpoint_url=...)",
    "gs": "GcsCredential(service_account_json)",
    "gcs": "GcsCredential(service_account_json)",
}


def translate_error(err: BaseException, url: str) -> WkJupyterError:
    """Map an exception from fsspec, aiohttp, botocore or gcsfs to our error types.

    Parameters
    ----------
    err
        The exception a storage library raised (ours are returned unchanged).
    url
        The URL (or local path) that was being read; every message names it.

    Returns
    -------
    WkJupyterError
        :class:`RemoteNotFoundError`, :class:`RemoteAccessError` or
        :class:`RemoteUnavailableError`, with a message that says what to do.
    """
    if isinstance(err, WkJupyterError):
        return err
    errors = list(chain(err))
    status = next((s for s in map(status_of, errors) if s is not None), None)
    text = str(err) if isinstance(err, HttpStatusError) else f"{type(err).__name__}: {err}"
    local = "://" not in url or url.startswith("file://")
    if any(map(_is_missing_bucket, errors)):
        return SourceGoneError(
            f"the bucket of {url!r} does not exist (NoSuchBucket): the source is gone, not "
            "the chunk; restore the bucket or import the dataset again from where it is now"
        )
    if status == 404:
        return RemoteNotFoundError(f"{url!r} does not exist (404)")
    if status in (401, 403) or (status is None and any(map(_is_auth_error, errors))):
        if local:
            return RemoteAccessError(
                f"permission to read {url!r} was refused ({text}); check the file permissions"
            )
        hint = _CREDENTIAL_HINT.get(url.split("://")[0].lower(), "see wkjupyter.Credential")
        return RemoteAccessError(
            f"access to {url!r} was refused ({text}); check the credential ({hint}) "
            "and that it may read this location"
        )
    if status is not None and (status >= 500 or status in (408, 429)):
        return RemoteUnavailableError(f"the server of {url!r} failed ({text}); try again later")
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in errors):
        return RemoteUnavailableError(
            f"reading {url!r} timed out; the host may be slow or unreachable "
            "(raise the timeout with AccessOptions(timeout=...) or WKJUPYTER_TIMEOUT)"
        )
    if status is None and isinstance(err, FileNotFoundError):
        return RemoteNotFoundError(f"{url!r} does not exist")
    if (status is None and any(map(_is_connection_error, errors))) or (
        status is None and isinstance(err, OSError) and not local
    ):
        return HostUnreachableError(
            f"cannot reach {url!r} ({text}); check the host name and your network"
        )
    return RemoteUnavailableError(f"reading {url!r} failed ({text})")


def is_absent(err: BaseException) -> bool:
    """Whether ``err`` (a ``FileNotFoundError`` from s3fs or gcsfs) means "no such object":
    no other status along its chain, and not a missing bucket (a failure of the source)."""
    errors = list(chain(err))
    return all(status_of(e) in (None, 404) for e in errors) and not any(
        map(_is_missing_bucket, errors)
    )


def _is_missing_bucket(err: BaseException) -> bool:
    # botocore names the S3 error code (s3fs raises FileNotFoundError from it). gcsfs keeps
    # only the path of a 404, so a deleted GCS bucket shows as a vanished metadata document
    # (Store's re-check on a missing chunk).
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return isinstance(error, dict) and error.get("Code") == "NoSuchBucket"
    return False


_UPSTREAM_NOTE = "upstream: "


def tag_upstream(err: BaseException, label: str) -> None:
    """Note on ``err`` which upstream (host or bucket) failed, for :func:`failed_upstream`."""
    if failed_upstream(err) is None:
        err.add_note(_UPSTREAM_NOTE + label)


def failed_upstream(err: BaseException) -> str | None:
    """The upstream a storage error came from (``http://host:port``, ``s3://bucket (...)``)."""
    for e in chain(err):
        for note in getattr(e, "__notes__", ()):
            if isinstance(note, str) and note.startswith(_UPSTREAM_NOTE):
                return note.removeprefix(_UPSTREAM_NOTE)
    return None


def chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def status_of(err: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (aiohttp, gcsfs, botocore, ours)."""
    for attr in ("status", "code", "status_code"):
        value = getattr(err, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value
    response = getattr(err, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
        if isinstance(status, int):
            return status
        code = str(response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            return 404
    return None


def _is_auth_error(err: BaseException) -> bool:
    if isinstance(err, PermissionError):
        return True
    name = type(err).__name__
    text = str(err)
    # gcsfs raises OSError("Forbidden: ...") for a 403; botocore names the S3 error code.
    return name in ("NoCredentialsError", "PartialCredentialsError", "RefreshError") or any(
        s in text
        for s in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")
    )


def _is_connection_error(err: BaseException) -> bool:
    module = type(err).__module__
    return isinstance(err, ConnectionError) or module.startswith(
        ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests")
    )


class unless_absent(contextlib.AbstractContextManager[None]):
    """Swallow "no such object" (the caller answers ``None``); a gone source still raises."""

    def __exit__(self, kind: type[BaseException] | None, err: object, tb: object) -> bool:
        return (
            kind is not None
            and issubclass(kind, RemoteNotFoundError)
            and not issubclass(kind, SourceGoneError)
        )


class Witness:
    """The metadata document that vouches for a store's missing keys (``Store.get``).

    A missing chunk is "not stored" only while the array it belongs to still exists: a
    deleted bucket or dataset must not read as an all-fill volume. So when a key is missing
    and the document was last looked at more than ``AccessOptions.recheck`` seconds ago, it
    is looked at again (one request, shared by concurrent misses on the same loop); while it
    is gone, misses raise :class:`~wkjupyter.errors.SourceGoneError`. Either answer is kept
    for ``recheck`` seconds, so a source that comes back is read again.
    """

    def __init__(self, url: str, check: Callable[[], Awaitable[bool]], interval: float) -> None:
        self.url = url
        self._check = check
        self.interval = interval
        self.checked = time.monotonic()  # it was just read
        self.exists = True
        self._pending: dict[asyncio.AbstractEventLoop, asyncio.Future[bool]] = {}

    async def vouch(self, missing: str) -> None:
        """Raise :class:`SourceGoneError` if the document no longer exists."""
        if time.monotonic() - self.checked >= self.interval:
            loop = asyncio.get_running_loop()
            pending = self._pending.get(loop)
            if pending is None:
                pending = self._pending[loop] = asyncio.ensure_future(self._check())
                pending.add_done_callback(lambda _: self._pending.pop(loop, None))
            self.exists = await asyncio.shield(pending)
            self.checked = time.monotonic()
        if not self.exists:
            msg = (
                f"{missing!r} is missing because its metadata {self.url!r} is gone: the source "
                "no longer has this dataset (moved or deleted); import it again from where it "
                "is now"
            )
            raise SourceGoneError(msg)
