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
"not stored": a reader would paint the chunk with the fill value (STYLE.md rule 6). Nor is
a missing key of a source that is gone (S3 NoSuchBucket; the metadata document this store
read has vanished, re-checked on a miss at most every ``AccessOptions.recheck`` seconds):
:class:`~wkjupyter.errors.SourceGoneError`.

Requests queue per upstream host or bucket (:mod:`~wkjupyter.sources._fs_limits`), so a
frozen host holds up only its own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wkjupyter.errors import (
    InvalidKeyError,
    MetadataError,
    RemoteAccessError,
    SourceGoneError,
    WkJupyterError,
)
from wkjupyter.sources import _fs_http
from wkjupyter.sources._fs_clients import (
    cached,
    close_clients,
    make_gcs_fs,
    make_s3_fs,
)
from wkjupyter.sources._fs_credentials import (
    Credential,
    GcsCredential,
    HttpCredential,
    S3Credential,
    secrets_of,
)
from wkjupyter.sources._fs_errors import (
    Witness,
    chain,
    failed_upstream,
    is_absent,
    status_of,
    tag_upstream,
    translate_error,
    unless_absent,
)
from wkjupyter.sources._fs_limits import (
    Call,
    is_serving,
    serving,
    slots,
    upstream_label,
    upstream_of,
)
from wkjupyter.sources._fs_local import (
    MISS,
    is_local_file,
    list_local,
    read_cached,
    read_local,
    read_local_suffix,
)
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
    "failed_upstream",
    "join_url",
    "parse_url",
    "serving",
    "translate_error",
]


@dataclass(frozen=True, slots=True)
class AccessOptions:
    """How storage is accessed: requests in flight per upstream host (or bucket), the
    timeout of a request (s; it covers the wait for a slot), the largest read into memory
    (bytes; ``Layer.read`` refuses bigger ones), how many requests may wait for a host's
    slots before more are refused (``None``: four times ``concurrency``), and how often (s)
    a missing key makes the store re-check that its metadata document still exists.

    ``local_roots`` confines local reads: ``None`` (the default) reads any local path; a
    tuple of directories (``~`` expanded, relative to the working directory) lets a store
    open only files and folders that really lie below one of them, checked on every open
    (symlinks and ``..`` resolved; see :func:`open_confined`), so metadata that names a
    path elsewhere raises :class:`OutsideLocalRootsError` instead of being read. An empty
    tuple refuses every local read. The REST API sets it to the server's allowed roots.

    Defaults come from ``WKJUPYTER_CONCURRENCY``, ``WKJUPYTER_TIMEOUT``,
    ``WKJUPYTER_MAX_READ`` (bytes or with a unit: ``16GiB``), ``WKJUPYTER_MAX_QUEUED`` and
    ``WKJUPYTER_RECHECK`` when set; else 64, 30 s, 4 GiB, 256, 10 s.
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
    max_queued: int | None = field(
        default_factory=lambda: _int_or_none(os.environ.get("WKJUPYTER_MAX_QUEUED"))
    )
    recheck: float = field(default_factory=lambda: float(os.environ.get("WKJUPYTER_RECHECK", 10)))
    local_roots: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.local_roots is not None:
            if isinstance(self.local_roots, str | os.PathLike):
                msg = f"local_roots must be a tuple of directories, not {self.local_roots!r}"
                raise TypeError(msg)
            roots = tuple(_normal_root(r) for r in self.local_roots)
            object.__setattr__(self, "local_roots", roots)
        if self.concurrency < 1 or not self.timeout > 0 or self.max_read_bytes < 1:
            msg = f"{self}: concurrency must be at least 1, the timeout and max_read_bytes positive"
            raise ValueError(msg)
        if (self.max_queued is not None and self.max_queued < 0) or self.recheck < 0:
            msg = f"{self}: max_queued and recheck must not be negative"
            raise ValueError(msg)

    @property
    def queue_limit(self) -> int:
        """How many requests may wait for one upstream's slots."""
        return 4 * self.concurrency if self.max_queued is None else self.max_queued


def _int_or_none(text: str | None) -> int | None:
    return None if text is None or not text.strip() else int(text)


def _normal_root(root: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


# -- the store -----------------------------------------------------------------------------


class Store:
    """Read-only async access to the keys below one URL.

    Parameters
    ----------
    url
        A local path or ``file://``, ``http(s)://``, ``s3://`` or ``gs://`` URL. User info
        in an HTTP URL (``https://user:password@host/...``) is refused: give a credential.
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
        else:
            self.url = url.strip().rstrip("/") if "://" in url else self.parsed.root
        self.credential = credential
        self.options = options or AccessOptions()
        _check_credential_scheme(self.parsed.scheme, credential, self.url)
        endpoint = getattr(credential, "endpoint_url", None)
        self.upstream = upstream_of(self.parsed, endpoint)
        # Shared with child stores: the last metadata document read (see Witness).
        self._witness: list[Witness] = []

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
        store = Store(self.join(key), self.credential, self.options)
        store._witness = self._witness
        return store

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
        data: bytes | None = None
        if self.parsed.scheme == "file":
            # A file the page cache holds is read at once, never waiting on the disk: no
            # slot to hold (the per-request cost of serving cached chunks, bench/serve.py).
            _validate_key(key)
            cached = read_cached(self._path(key), byte_range, self.options.local_roots)
            if cached is not MISS:
                data = cached  # type: ignore[assignment]
                if data is None and self._witness:
                    await self._vouch_for(key)
                return data
        with unless_absent():
            async with self._request(key) as call:
                scheme = self.parsed.scheme
                if scheme == "file":
                    path, roots = self._path(key), self.options.local_roots
                    data = await call.run(asyncio.to_thread(read_local, path, byte_range, roots))
                elif scheme in ("http", "https"):
                    session = await self._http_session()
                    data = await call.run(_fs_http.http_get(session, call.url, byte_range))
                else:
                    data = await call.run(self._fs_get(key, byte_range))
        if data is None and self._witness:
            await self._vouch_for(key)
        return data

    async def read_json(self, key: str) -> Any | None:
        """The parsed JSON document at ``key``; ``None`` if absent.

        Raises :class:`~wkjupyter.errors.MetadataError` when it is not valid JSON.
        """
        data = await self.get(key)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            msg = f"{self.join(key)!r} is not valid JSON ({err}); fix or regenerate the file"
            raise MetadataError(msg) from err
        witness = Witness(self.join(key), lambda: self._exists(key), self.options.recheck)
        self._witness[:] = [witness]
        return doc

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists as an object (not a directory)."""
        with unless_absent():
            return await self._exists(key)
        return False

    async def _exists(self, key: str) -> bool:
        async with self._request(key) as call:
            scheme = self.parsed.scheme
            if scheme == "file":
                return is_local_file(self._path(key), self.options.local_roots)
            if scheme in ("http", "https"):
                return await call.run(_fs_http.http_exists(await self._http_session(), call.url))
            fs = await self.filesystem()
            try:
                info = await call.run(fs._info(self._path(key)))
            except FileNotFoundError as err:
                if not is_absent(err):
                    raise
                return False
            return bool(info.get("type") != "directory")
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_dir(self, key: str = "") -> list[str]:
        """Names directly below ``key``; directories end with ``/``.

        An HTTP server without directory listings (or one that forbids them, as nginx
        without ``autoindex`` does with a 403) yields ``[]``.
        """
        with unless_absent():
            return await self._list_dir(key)
        return []

    async def _list_dir(self, key: str) -> list[str]:
        async with self._request(key) as call:
            scheme = self.parsed.scheme
            if scheme == "file":
                return await asyncio.to_thread(
                    list_local, self._path(key), self.options.local_roots
                )
            if scheme in ("http", "https"):
                return await call.run(_fs_http.http_list(await self._http_session(), call.url))
            fs = await self.filesystem()
            base = self._path(key).rstrip("/")
            try:
                entries = await call.run(fs._ls(base, detail=True))
            except FileNotFoundError as err:
                if not is_absent(err):
                    raise
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
        async with self._request(keys[0]) as call:
            paths = [self._path(k) for k in keys]
            roots = self.options.local_roots
            datas = await call.run(
                asyncio.to_thread(lambda: [read_local(p, None, roots) for p in paths])
            )
        if self._witness and None in datas:
            await self._vouch_for(keys[datas.index(None)])
        return datas

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
            roots = self.options.local_roots
            return [read_local(self._path(k), None, roots) for k in keys]
        except OSError as err:
            raise translate_error(err, self.url) from err

    async def get_suffix(self, key: str, nbytes: int) -> bytes | None:
        """The last ``nbytes`` bytes of ``key`` (all of it if shorter); ``None`` if absent."""
        data = None
        with unless_absent():
            async with self._request(key) as call:
                scheme = self.parsed.scheme
                if scheme == "file":
                    coro = asyncio.to_thread(
                        read_local_suffix, self._path(key), nbytes, self.options.local_roots
                    )
                elif scheme in ("http", "https"):
                    coro = _fs_http.http_get(await self._http_session(), call.url, None, nbytes)
                else:
                    coro = self._fs_get(key, None, suffix=nbytes)
                data = await call.run(coro)
        if data is None and self._witness:
            await self._vouch_for(key)
        return data

    async def _vouch_for(self, key: str) -> None:
        """Raise ``SourceGoneError`` if ``key`` is missing because the source is gone."""
        try:
            await self._witness[0].vouch(self.join(key))
        except SourceGoneError as err:
            tag_upstream(err, upstream_label(self.upstream))
            raise

    @contextlib.asynccontextmanager
    async def _request(self, key: str) -> AsyncIterator[Call]:
        """Validate ``key``, hold one of the upstream's slots, and map errors raised inside.

        While :func:`serving`, the timeout is a deadline for both the wait for a slot and
        the request (``Call.run``), and a full queue raises
        :class:`~wkjupyter.errors.UpstreamBusyError`.
        """
        _validate_key(key)
        url = self.join(key)
        loop = asyncio.get_running_loop()
        options = self.options
        limit = slots(self.upstream, options.concurrency, options.queue_limit)
        # Serving a client, the deadline covers the wait for a slot; else it starts after it.
        deadline = loop.time() + options.timeout if is_serving() else None
        try:
            async with limit.hold(deadline, upstream_label(self.upstream)):
                yield Call(url, loop.time() + options.timeout if deadline is None else deadline)
        except Exception as err:
            mapped = self._scrub(translate_error(err, url))
            anonymous = self.credential is None and self.parsed.scheme != "file"
            if isinstance(mapped, RemoteAccessError) and anonymous:
                mapped = RemoteAccessError(f"{mapped}; no credential was given")
            tag_upstream(mapped, upstream_label(self.upstream))
            if mapped is err:
                raise
            raise mapped from err

    def _scrub(self, err: WkJupyterError) -> WkJupyterError:
        """``err`` with any of the credential's secrets blanked out of its message."""
        text = str(err)
        secrets = [s for s in secrets_of(self.credential) if s in text]
        if not secrets:
            return err
        for secret in secrets:
            text = text.replace(secret, "***")
        return type(err)(text)

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
            if not is_absent(err):
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
        # One client per bucket: a frozen bucket's requests must not hold the connection
        # pool that another bucket's requests need (the pool is as big as the slots).
        key = (self.upstream, self.parsed.endpoint_url, self.credential, self.options.timeout)
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
