"""Storage access: the only place that turns a URL and a credential into requests.

URLs: local paths and ``file://``, ``http(s)://``, ``s3://bucket/key`` (AWS),
``s3://host:port/bucket/key`` (path-style S3-compatible endpoints such as MinIO, or any
``s3://`` URL with an endpoint on the credential), ``gs://bucket/key`` (an emulator through
``STORAGE_EMULATOR_HOST`` or :attr:`GcsCredential.endpoint_url`).

A :class:`Store` is a read-only, async key-value view of one URL prefix. Keys are decoded
``/``-separated paths below it; URLs of HTTP stores are percent-encoded. Client sessions are
bound to an event loop (aiohttp's are), so they are created lazily per loop and a ``Store``
itself holds only the URL, the credential and the options: it pickles, and the same store
works on wkjupyter's background loop and on a server's loop.

Storage errors become ours: 404 means "not stored" (``None`` from :meth:`Store.get`),
401/403 :class:`~wkjupyter.errors.RemoteAccessError`, timeouts, unreachable hosts and 5xx
:class:`~wkjupyter.errors.RemoteUnavailableError`, each naming the URL. A 5xx is never
"not stored": a reader would paint the chunk with the fill value (STYLE.md rule 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from wkjupyter.errors import (
    InvalidKeyError,
    MetadataError,
    RemoteAccessError,
    RemoteNotFoundError,
    WkJupyterError,
)
from wkjupyter.sources import _fs_http
from wkjupyter.sources._fs_clients import (
    cached,
    close_clients,
    loop_cache,
    make_gcs_fs,
    make_s3_fs,
)
from wkjupyter.sources._fs_errors import chain, status_of, translate_error
from wkjupyter.sources._fs_urls import ParsedUrl, Scheme, join_url, parse_url
from wkjupyter.sources._sizes import parse_size

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    import aiohttp
    from fsspec.asyn import AsyncFileSystem

__all__ = [
    "AccessOptions",
    "Credential",
    "GcsCredential",
    "HttpCredential",
    "S3Credential",
    "Store",
    "close_filesystems",
    "join_url",
    "parse_url",
    "translate_error",
]


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


def _secrets(credential: Credential | None) -> list[str]:
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


@dataclass(frozen=True, slots=True)
class AccessOptions:
    """How storage is accessed: request concurrency bound, per-request timeout (s), and the
    largest read into memory (bytes; ``Layer.read`` refuses bigger ones).

    Defaults come from ``WKJUPYTER_CONCURRENCY``, ``WKJUPYTER_TIMEOUT`` and
    ``WKJUPYTER_MAX_READ`` (bytes or with a unit: ``16GiB``) when set; else 64, 30 s, 4 GiB.
    """

    concurrency: int = field(
        default_factory=lambda: int(os.environ.get("WKJUPYTER_CONCURRENCY", 64))
    )
    timeout: float = field(default_factory=lambda: float(os.environ.get("WKJUPYTER_TIMEOUT", 30)))
    max_read_bytes: int = field(
        default_factory=lambda: parse_size(
            os.environ.get("WKJUPYTER_MAX_READ", "4GiB"), "WKJUPYTER_MAX_READ"
        )
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1 or not self.timeout > 0 or self.max_read_bytes < 1:
            msg = f"{self}: concurrency must be at least 1, the timeout and max_read_bytes positive"
            raise ValueError(msg)


# -- the store -----------------------------------------------------------------------------


class Store:
    """Read-only async access to the keys below one URL.

    Parameters
    ----------
    url
        A local path or ``file://``, ``http(s)://``, ``s3://`` or ``gs://`` URL. User info
        in an HTTP URL (``https://user:password@host/...``) becomes the credential.
    credential
        How to authenticate; ``None`` means anonymous (or the environment's S3/GCS
        credentials when there are any).
    options
        Concurrency bound and timeout.
    """

    def __init__(
        self,
        url: str,
        credential: Credential | None = None,
        options: AccessOptions | None = None,
    ) -> None:
        self.parsed = parse_url(url)
        if self.parsed.scheme in ("http", "https"):
            self.url = self.parsed.root
            if credential is None and self.parsed.auth is not None:
                credential = HttpCredential(*self.parsed.auth)
        else:
            self.url = url.strip().rstrip("/") if "://" in url else self.parsed.root
        self.credential = credential
        self.options = options or AccessOptions()
        _check_credential_scheme(self.parsed.scheme, credential, self.url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Store, (self.url, self.credential, self.options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and (self.url, self.credential) == (
            other.url,
            other.credential,
        )

    def __hash__(self) -> int:
        return hash((self.url, self.credential))

    def child(self, key: str) -> Store:
        """The store rooted at ``key`` below this one (``..`` may lead beside it)."""
        return Store(self.join(key), self.credential, self.options)

    def join(self, key: str) -> str:
        """The full URL (or local path) of ``key``."""
        return join_url(self.url, key) if key else self.url

    def _path(self, key: str) -> str:
        """The path of ``key`` for the filesystem (a local path, URL or "bucket/key")."""
        if self.parsed.scheme in ("http", "https"):
            return self.join(key)
        root = self.parsed.root
        return join_url(root, key) if key else root

    # -- reading -------------------------------------------------------------------------

    async def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes | None:
        """The bytes of ``key`` (or of ``[start, end)`` within it); ``None`` if absent.

        A range past the end of the object is cut short, as files are.
        """
        if byte_range is not None and (byte_range[0] < 0 or byte_range[1] < byte_range[0]):
            msg = f"invalid byte range {byte_range} for {self.join(key)!r}: need 0 <= start <= end"
            raise ValueError(msg)
        with contextlib.suppress(RemoteNotFoundError):
            async with self._request(key) as url:
                scheme = self.parsed.scheme
                if scheme == "file":
                    cached = _read_cached(self._path(key), byte_range)
                    if cached is not _MISS:
                        return cached  # type: ignore[return-value]
                    coro = asyncio.to_thread(_read_local, self._path(key), byte_range)
                elif scheme in ("http", "https"):
                    coro = _fs_http.http_get(await self._http_session(), url, byte_range)
                else:
                    coro = self._fs_get(key, byte_range)
                return await asyncio.wait_for(coro, self.options.timeout)
        return None

    async def read_json(self, key: str) -> Any | None:
        """The parsed JSON document at ``key``; ``None`` if absent.

        Raises :class:`~wkjupyter.errors.MetadataError` when it is not valid JSON.
        """
        data = await self.get(key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            msg = f"{self.join(key)!r} is not valid JSON ({err}); fix or regenerate the file"
            raise MetadataError(msg) from err

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists as an object (not a directory)."""
        with contextlib.suppress(RemoteNotFoundError):
            return await self._exists(key)
        return False

    async def _exists(self, key: str) -> bool:
        async with self._request(key) as url:
            scheme = self.parsed.scheme
            if scheme == "file":
                return Path(self._path(key)).is_file()
            if scheme in ("http", "https"):
                coro = _fs_http.http_exists(await self._http_session(), url)
                return await asyncio.wait_for(coro, self.options.timeout)
            fs = await self.filesystem()
            try:
                info = await asyncio.wait_for(fs._info(self._path(key)), self.options.timeout)
            except FileNotFoundError as err:
                if any(status_of(e) not in (None, 404) for e in chain(err)):
                    raise
                return False
            return bool(info.get("type") != "directory")
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_dir(self, key: str = "") -> list[str]:
        """Names directly below ``key``; directories end with ``/``.

        An HTTP server without directory listings (or one that forbids them, as nginx
        without ``autoindex`` does with a 403) yields ``[]``.
        """
        with contextlib.suppress(RemoteNotFoundError):
            return await self._list_dir(key)
        return []

    async def _list_dir(self, key: str) -> list[str]:
        async with self._request(key) as url:
            scheme = self.parsed.scheme
            if scheme == "file":
                return await asyncio.to_thread(_list_local, self._path(key))
            if scheme in ("http", "https"):
                listing = _fs_http.http_list(await self._http_session(), url)
                return await asyncio.wait_for(listing, self.options.timeout)
            fs = await self.filesystem()
            base = self._path(key).rstrip("/")
            try:
                entries = await asyncio.wait_for(fs._ls(base, detail=True), self.options.timeout)
            except FileNotFoundError:
                return []
        names = set()
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            rel = name[len(base) + 1 :] if name.startswith(base + "/") else ""
            if rel and "/" not in rel:
                names.add(rel + "/" if entry.get("type") == "directory" else rel)
        return sorted(names)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The bytes of several keys (``None`` where absent), fetched concurrently.

        Local reads share one thread hop: per-key hops dominate reading many small chunks.
        """
        if self.parsed.scheme != "file" or not keys:
            return list(await asyncio.gather(*(self.get(k) for k in keys)))
        for key in keys:
            _validate_key(key)
        async with self._request(keys[0]):
            paths = [self._path(k) for k in keys]
            coro = asyncio.to_thread(lambda: [_read_local(p, None) for p in paths])
            return await asyncio.wait_for(coro, self.options.timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_local_blocking(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read local keys in the calling thread (``None`` where absent).

        Only for worker threads that decode what they read: reading and decoding many small
        local chunks in one pool task avoids a thread hop and GIL hand-over per chunk.
        """
        if self.parsed.scheme != "file":
            msg = f"read_local_blocking needs a local store, not {self.url!r}"
            raise ValueError(msg)
        for key in keys:
            _validate_key(key)
        try:
            return [_read_local(self._path(k), None) for k in keys]
        except OSError as err:
            raise translate_error(err, self.url) from err

    async def get_suffix(self, key: str, nbytes: int) -> bytes | None:
        """The last ``nbytes`` bytes of ``key`` (all of it if shorter); ``None`` if absent."""
        with contextlib.suppress(RemoteNotFoundError):
            async with self._request(key) as url:
                scheme = self.parsed.scheme
                if scheme == "file":
                    coro = asyncio.to_thread(_read_local_suffix, self._path(key), nbytes)
                elif scheme in ("http", "https"):
                    coro = _fs_http.http_get(await self._http_session(), url, None, nbytes)
                else:
                    coro = self._fs_get(key, None, suffix=nbytes)
                return await asyncio.wait_for(coro, self.options.timeout)
        return None

    @contextlib.asynccontextmanager
    async def _request(self, key: str) -> AsyncIterator[str]:
        """Validate ``key``, hold a concurrency slot, and map errors raised inside."""
        _validate_key(key)
        url = self.join(key)
        async with self._semaphore():
            try:
                yield url
            except Exception as err:
                mapped = self._scrub(translate_error(err, url))
                anonymous = self.credential is None and self.parsed.scheme != "file"
                if isinstance(mapped, RemoteAccessError) and anonymous:
                    mapped = RemoteAccessError(f"{mapped}; no credential was given")
                raise mapped from err

    def _scrub(self, err: WkJupyterError) -> WkJupyterError:
        """``err`` with any of the credential's secrets blanked out of its message."""
        text = str(err)
        secrets = [s for s in _secrets(self.credential) if s in text]
        if not secrets:
            return err
        for secret in secrets:
            text = text.replace(secret, "***")
        return type(err)(text)

    def _semaphore(self) -> asyncio.Semaphore:
        cache = loop_cache()
        key = ("semaphore", self.parsed.scheme, self.options.concurrency)
        sem = cache.get(key)
        if sem is None:
            sem = cache[key] = asyncio.Semaphore(self.options.concurrency)
        assert isinstance(sem, asyncio.Semaphore)
        return sem

    # -- backends ------------------------------------------------------------------------

    async def _fs_get(
        self, key: str, byte_range: tuple[int, int] | None, suffix: int | None = None
    ) -> bytes | None:
        fs = await self.filesystem()
        path = self._path(key)
        if suffix is not None:
            size = (await fs._info(path))["size"]
            byte_range = (max(0, int(size) - suffix), int(size))
        start, end = byte_range if byte_range is not None else (None, None)
        if start is not None and start == end:
            return b""
        try:
            return bytes(await fs._cat_file(path, start=start, end=end))
        except FileNotFoundError as err:
            if any(status_of(e) not in (None, 404) for e in chain(err)):
                raise
            return None
        except Exception as err:  # s3fs: OSError; gcsfs: HttpError
            if any(status_of(e) == 416 for e in chain(err)):
                return b""  # the range starts at or past the end, as over HTTP
            raise

    async def _http_session(self) -> aiohttp.ClientSession:
        credential = self.credential
        auth = None
        if isinstance(credential, HttpCredential):
            auth = _fs_http.authorization(
                credential.username, credential.password, credential.token
            )
        key = ("http", credential, self.options.timeout)
        return await cached(key, lambda: _fs_http.make_session(auth, self.options.timeout))

    async def filesystem(self) -> AsyncFileSystem:
        """The async fsspec filesystem for this store, on the running event loop."""
        if self.parsed.scheme in ("http", "https"):
            session = await self._http_session()
            key: tuple[Any, ...] = ("http-fs", self.credential, self.options.timeout)
            return await cached(key, lambda: _fs_http.make_fs(session))
        if self.parsed.scheme == "file":
            msg = f"{self.url!r} is local; it has no remote filesystem"
            raise ValueError(msg)
        key = (self.parsed.scheme, self.parsed.endpoint_url, self.credential, self.options.timeout)
        return await cached(
            key, lambda: _make_filesystem(self.parsed, self.credential, self.options)
        )


async def close_filesystems() -> None:
    """Close the connections opened on the running loop (e.g. before a server stops it).

    Loops that ``asyncio.run`` manages are cleaned up without this; later requests on the
    loop open new connections.
    """
    await close_clients()


def _validate_key(key: str) -> None:
    """Keys are relative '/'-separated paths that stay below the store's root."""
    if key.startswith("/") or "://" in key or "\\" in key or any(ord(c) < 32 for c in key):
        msg = (
            f"invalid storage key {key!r}: keys are relative, '/'-separated paths without "
            "backslashes or control characters"
        )
        raise InvalidKeyError(msg)
    depth = 0
    for segment in key.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                msg = f"invalid storage key {key!r}: '..' leads outside the store's root"
                raise InvalidKeyError(msg)
        elif segment not in ("", "."):
            depth += 1


def _check_credential_scheme(scheme: Scheme, credential: Credential | None, url: str) -> None:
    expected = {"http": HttpCredential, "https": HttpCredential, "s3": S3Credential,
                "gs": GcsCredential}  # fmt: skip
    if credential is None:
        return
    want = expected.get(scheme)
    if want is None or not isinstance(credential, want):
        what = want.__name__ if want else "no credential"
        msg = f"a {type(credential).__name__} cannot be used for {url!r}: {scheme} URLs take {what}"
        raise TypeError(msg)


_MISS: Final = object()
_NOWAIT: Final = getattr(os, "RWF_NOWAIT", None)
_MAX_CACHED_READ: Final = 16 * 2**20


def _read_cached(path: str, byte_range: tuple[int, int] | None) -> bytes | object | None:
    """A local file's bytes when the page cache holds all of them, else ``_MISS``.

    ``preadv(RWF_NOWAIT)`` (Linux) fails instead of waiting for the disk, so this never
    blocks the event loop on data; a miss goes to a thread. It spares the thread hand-off,
    which costs ten times the read of a cached chunk (bench/serve.py). ``None``: no such file.
    """
    if _NOWAIT is None:
        return _MISS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return _MISS
    try:
        size = os.fstat(fd).st_size
        start, end = byte_range if byte_range is not None else (0, size)
        length = max(0, min(end, size) - start)
        if length == 0 or length > _MAX_CACHED_READ:
            return b"" if length == 0 and start <= size else _MISS
        buffer = bytearray(length)
        if os.preadv(fd, [buffer], start, _NOWAIT) != length:
            return _MISS
        return bytes(buffer)
    except OSError:  # BlockingIOError: not cached; EISDIR, EOPNOTSUPP ...: let the thread say
        return _MISS
    finally:
        os.close(fd)


def _read_local(path: str, byte_range: tuple[int, int] | None) -> bytes | None:
    try:
        with open(path, "rb") as f:
            if byte_range is None:
                return f.read()
            start, end = byte_range
            f.seek(start)
            return f.read(max(0, end - start))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _read_local_suffix(path: str, nbytes: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - nbytes))
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _list_local(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name + ("/" if e.is_dir() else "") for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _make_filesystem(
    parsed: ParsedUrl, credential: Credential | None, options: AccessOptions
) -> AsyncFileSystem:
    if parsed.scheme == "s3":
        if isinstance(credential, S3Credential):
            return make_s3_fs(
                (credential.key_id, credential.secret),
                credential.endpoint_url or parsed.endpoint_url,
                credential.region,
                options.timeout,
                options.concurrency,
            )
        return make_s3_fs(None, parsed.endpoint_url, None, options.timeout, options.concurrency)
    if parsed.scheme == "gs":
        if isinstance(credential, GcsCredential):
            return make_gcs_fs(credential.info(), credential.endpoint_url, options.timeout)
        return make_gcs_fs(None, None, options.timeout)
    msg = f"no remote filesystem for scheme {parsed.scheme!r}"
    raise ValueError(msg)
