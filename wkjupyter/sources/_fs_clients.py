"""Storage clients: the S3 and GCS filesystems, made once per event loop and closed with it.

aiohttp sessions (and the s3fs/gcsfs filesystems built on them) belong to the loop they were
made on. wkjupyter reads on its background loop (the sync facade), but a server reads on its
own, and tests or scripts run ``asyncio.run`` loops that come and go. So every loop gets its
own clients, made on first use. When the loop shuts down (``asyncio.run`` and
``asyncio.Runner`` close async generators first), a guard generator closes them on the loop;
a loop closed without that is noticed on the next access and its clients dropped. Loops run
on different threads, hence the lock, which is never held across an ``await``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from fsspec.asyn import AsyncFileSystem

__all__ = ["cached", "close_clients", "loop_cache", "make_gcs_fs", "make_s3_fs"]

T = TypeVar("T")

_PER_LOOP: dict[asyncio.AbstractEventLoop, dict[Any, Any]] = {}
_LOCK = threading.Lock()
_GUARD = "guard"


@dataclass
class _Guard:
    """An async generator suspended on the loop; its ``finally`` closes the clients."""

    abandoned: bool = False
    agen: AsyncGenerator[None, None] | None = field(default=None, repr=False)

    def abandon(self) -> None:
        """Finish the generator here, without awaiting (its loop is gone or closing)."""
        self.abandoned = True
        if self.agen is not None:
            with contextlib.suppress(BaseException):
                self.agen.aclose().send(None)


async def _closer(guard: _Guard) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not guard.abandoned:
            await close_clients()


def loop_cache() -> dict[Any, Any]:
    """The running loop's cache (clients, semaphores); drops the caches of closed loops."""
    loop = asyncio.get_running_loop()
    with _LOCK:
        dead = [(lp, _PER_LOOP.pop(lp)) for lp in list(_PER_LOOP) if lp.is_closed()]
        cache = _PER_LOOP.setdefault(loop, {})
    for lp, entries in dead:
        for entry in entries.values():
            _release(entry, lp)
    return cache


async def cached(key: tuple[Any, ...], make: Callable[[], T]) -> T:
    """The client cached under ``key`` on the running loop, made once by ``make()``.

    Coroutines asking at the same time share one creation. fsspec filesystems get their
    session (``await fs.set_session()``) before anyone uses them.
    """
    cache = loop_cache()
    if _GUARD not in cache:
        guard = cache[_GUARD] = _Guard()
        guard.agen = _closer(guard)
        await guard.agen.asend(None)  # registers it with the loop (sys.set_asyncgen_hooks)
    future = cache.get(key)
    if future is None:
        future = cache[key] = asyncio.get_running_loop().create_future()
        try:
            client = make()
            set_session = getattr(client, "set_session", None)
            if asyncio.iscoroutinefunction(set_session):
                await set_session()
            future.set_result(client)
        except BaseException as err:
            cache.pop(key, None)
            future.set_exception(err)
            future.exception()  # retrieved: concurrent waiters re-raise it
            raise
    return cast("T", await asyncio.shield(future))


async def close_clients() -> None:
    """Close the clients made on the running loop (e.g. before a server stops its loop)."""
    with _LOCK:
        entries = list(_PER_LOOP.pop(asyncio.get_running_loop(), {}).values())
    for entry in entries:
        client = _result(entry)
        with contextlib.suppress(Exception):
            name = type(client).__name__
            if isinstance(client, _Guard):
                client.abandon()
            elif name == "ClientSession":
                await client.close()
            elif name == "S3FileSystem" and client._s3 is not None:
                await client._s3.close()
            elif name == "GCSFileSystem" and client._session is not None:
                await client._session.close()


def _result(entry: Any) -> Any:
    if isinstance(entry, asyncio.Future):
        ready = entry.done() and not entry.cancelled() and entry.exception() is None
        return entry.result() if ready else None
    return entry


def _release(entry: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close a client's connections without awaiting (its loop may be closed)."""
    client = _result(entry)
    if isinstance(client, _Guard):
        client.abandon()
        return
    with contextlib.suppress(Exception):
        if loop.is_closed():
            for session in _sessions_of(client):
                _close_orphaned(session)
            return
        name = type(client).__name__
        if name == "ClientSession":
            from fsspec.implementations.http import HTTPFileSystem

            HTTPFileSystem.close_session(loop, client)
        elif name == "S3FileSystem" and client._s3 is not None:
            client.close_session(loop, client._s3)
        elif name == "GCSFileSystem" and client._session is not None:
            client.close_session(loop, client._session)


def _sessions_of(client: Any) -> list[Any]:
    """The aiohttp sessions behind a client (s3fs: aiobotocore's, one per proxy)."""
    name = type(client).__name__
    if name == "ClientSession":
        return [client]
    if name == "GCSFileSystem":
        return [client._session] if client._session is not None else []
    if name == "S3FileSystem" and client._s3 is not None:
        http = client._s3._endpoint.http_session
        return list((getattr(http, "_sessions", None) or {}).values())
    return []


def _close_orphaned(session: Any) -> None:
    """Close the sockets of a session whose loop was closed before the session.

    aiohttp cannot (its ``close`` needs the loop), so each transport is finished the way
    its loop would have finished it; otherwise the sockets stay open until garbage
    collection, which warns (``ResourceWarning: unclosed transport``).
    """
    connector = session.connector
    if connector is None:
        return
    protocols = [p for conns in connector._conns.values() for p, _ in conns]
    protocols += list(connector._acquired)
    for protocol in protocols:
        transport = protocol.transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport._call_connection_lost(None)
    connector._close()  # marks it closed: no "Unclosed client session" warning later


@atexit.register
def _release_all() -> None:
    with _LOCK:
        entries = [(lp, e) for lp, cache in _PER_LOOP.items() for e in cache.values()]
        _PER_LOOP.clear()
    for loop, entry in entries:
        _release(entry, loop)


# -- object stores -------------------------------------------------------------------------


def make_s3_fs(
    key: tuple[str, str] | None,
    endpoint_url: str | None,
    region: str | None,
    timeout: float,
    concurrency: int,
) -> AsyncFileSystem:
    """An s3fs filesystem on the running loop; anonymous without ``key`` (id, secret)
    unless the environment has AWS credentials."""
    import s3fs

    config: dict[str, Any] = {
        "connect_timeout": timeout,
        "read_timeout": timeout,
        "retries": {"max_attempts": 2},
        # botocore's default pool of 10 connections would undercut the Store's bound.
        "max_pool_connections": concurrency,
    }
    client_kwargs: dict[str, Any] = {"region_name": region} if region else {}
    options: dict[str, Any] = {}
    if key is not None:
        options.update(key=key[0], secret=key[1])
    elif not _environment_has_s3_credentials(*_aws_environment()):
        options["anon"] = True  # unsigned requests: public buckets
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
        client_kwargs.setdefault("region_name", "us-east-1")
        config["s3"] = {"addressing_style": "path"}  # MinIO & co. serve path-style
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs, config_kwargs=config, **options, **_common()
    )


def make_gcs_fs(
    service_account: dict[str, Any] | None, endpoint_url: str | None, timeout: float
) -> AsyncFileSystem:
    """A gcsfs filesystem on the running loop: the service account, else the environment's
    application-default credentials, else anonymous."""
    # Not gcsfs.GCSFileSystem: since gcsfs 2025 that is ExtendedGcsFileSystem, which first
    # asks a gRPC API for each bucket's layout (and hangs for a minute against emulators).
    from gcsfs.core import GCSFileSystem

    token: Any = "anon"
    options: dict[str, Any] = {"requests_timeout": timeout}
    if service_account is not None:
        token = service_account
    elif _has_google_default_credentials() and not os.environ.get("STORAGE_EMULATOR_HOST"):
        token = "google_default"
    if endpoint_url:
        options["endpoint_url"] = endpoint_url.rstrip("/")
    # Without an endpoint_url gcsfs honours STORAGE_EMULATOR_HOST, as Google's libraries do.
    return GCSFileSystem(token=token, **options, **_common())


def _common() -> dict[str, Any]:
    return {
        "asynchronous": True,
        "loop": asyncio.get_running_loop(),
        "skip_instance_cache": True,
        "use_listings_cache": False,
    }


_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
)


def _aws_environment() -> tuple[str | None, ...]:
    return tuple(os.environ.get(v) for v in _AWS_VARIABLES)


@lru_cache(maxsize=8)
def _environment_has_s3_credentials(*environment: str | None) -> bool:
    """Whether botocore finds credentials (``environment`` keys the cache: the lookup may
    ask the EC2 metadata service, which takes a second where there is none)."""
    try:
        import botocore.session

        return botocore.session.get_session().get_credentials() is not None
    except Exception:
        return False


def _has_google_default_credentials() -> bool:
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    return Path(config, "application_default_credentials.json").is_file()
