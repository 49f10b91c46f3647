"""The data routes' work, independent of the web framework: who may read what, and the bytes.

:class:`DataService` answers a validated :class:`~wkjupyter.server._keys.DataPath` for a
:class:`~wkjupyter.catalog.access.Grant`:

- access is looked up in the catalog on every request (one indexed SELECT in a thread), so
  revoking a link or making a dataset private takes effect on the next request, also in
  other server processes sharing the catalog;
- a dataset's *view* (its source with credentials bound, readers opened, served metadata) is
  built on first use and cached per dataset version, for ``view_ttl`` seconds at most (so a
  rotated credential is picked up), and dropped when the source refuses access;
- chunks are the stored bytes when they can be passed through, else decoded, padded and
  re-encoded (:mod:`wkjupyter.server.encode`); transcoded chunks are kept in a bounded cache;
- link uses are counted in memory and written in batches, off the request path.

Nothing here touches the event loop's thread with blocking work: catalog calls run in a
small thread pool, decoding in the readers' decode pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import sqlite3
import time
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import DBAPIError

from wkjupyter.catalog import access
from wkjupyter.catalog import links as link_service
from wkjupyter.catalog import users as user_service
from wkjupyter.catalog.crypto import secret_box
from wkjupyter.catalog.models import utcnow
from wkjupyter.errors import (
    CatalogUnavailableError,
    InvalidKeyError,
    RemoteAccessError,
    SourceGoneError,
)
from wkjupyter.server import metadata
from wkjupyter.server._failures import FailureLog
from wkjupyter.server._keys import chunk_in_grid
from wkjupyter.server.encode import ChunkEncoder
from wkjupyter.server.view import (
    ChunkCodec,
    ServedArray,
    ServedDataset,
    ServedLayer,
    served_array,
)
from wkjupyter.sources._base import RawChunk
from wkjupyter.sources._fs import close_filesystems

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from wkjupyter.catalog.access import Grant
    from wkjupyter.catalog.core import Catalog
    from wkjupyter.datasource import DataSource, Layer
    from wkjupyter.server._keys import DataPath, Tree
    from wkjupyter.sources._base import MagArray

__all__ = ["DataService", "Reply", "ServeOptions"]

log = logging.getLogger("wkjupyter.server")
T = TypeVar("T")

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
OCTET_TYPE = "application/octet-stream"


class ChunkKeyError(InvalidKeyError):
    """A well-formed chunk key whose number of indices does not match its array: answer 400
    (the pure path parser cannot know the array's dimensions)."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Tuning of the data routes (the extension's and ``wkjupyter serve``'s options).

    Attributes
    ----------
    chunk_codec, chunk_level
        How chunks that cannot be passed through are re-encoded.
    view_ttl
        Seconds a dataset's opened view is reused before the source is looked at again.
    view_cache_size
        How many dataset views are kept.
    chunk_cache_bytes
        Memory for re-encoded chunks (0 disables the cache).
    use_flush_interval
        Seconds between writes of counted link uses to the catalog.
    """

    chunk_codec: ChunkCodec = "zstd"
    chunk_level: int = 1
    view_ttl: float = 300.0
    view_cache_size: int = 64
    chunk_cache_bytes: int = 256 * 2**20
    use_flush_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: its body and content type.

    A directory listing also carries its ``entries``, so the handler can answer JSON
    instead of the HTML ``body`` when the client asks for it.
    """

    body: bytes
    content_type: str
    entries: tuple[str, ...] | None = None


class DatasetView:
    """One dataset as served: its bound source, its readers and served layers, built lazily."""

    def __init__(self, datasource: DataSource, version: str, options: ServeOptions) -> None:
        self.datasource = datasource
        self.version = version
        self.options = options
        self.created = time.monotonic()
        self._layers: dict[str, asyncio.Future[ServedLayer]] = {}
        self._readers: dict[tuple[str, str], MagArray] = {}
        self._encoders: dict[tuple[str, str, Tree], ChunkEncoder] = {}

    async def layer(self, name: str) -> ServedLayer | None:
        """The served layer ``name`` (its mags opened concurrently on first use)."""
        layer = self.datasource.layers.get(name)
        if layer is None:
            return None
        future = self._layers.get(name)
        if future is None:
            future = asyncio.ensure_future(self._open(layer))
            self._layers[name] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            # A failed open (upstream down, ...) is not cached: the next request retries.
            if self._layers.get(name) is future:
                del self._layers[name]
            raise

    async def _open(self, layer: Layer) -> ServedLayer:
        mags = list(layer.mags)
        readers = await asyncio.gather(*(layer.open_array_async(m) for m in mags))
        arrays = {}
        for mag, reader in zip(mags, readers, strict=True):
            served = served_array(
                layer, mag, reader, self.options.chunk_codec, self.options.chunk_level
            )
            arrays[served.path] = served
            self._readers[layer.name, served.path] = reader
        return ServedLayer(
            name=layer.name,
            category=layer.category,
            dtype=layer.dtype,
            num_channels=layer.num_channels,
            bbox=layer.bbox,
            voxel_size=layer.voxel_size,
            arrays=arrays,
            channels=tuple(layer.channels),
            additional_axes=tuple(layer.additional_axes),
            largest_segment_id=layer.largest_segment_id,
        )

    async def dataset(self, name: str, layers: tuple[str, ...] | None) -> ServedDataset:
        """The served dataset limited to ``layers`` (None: all), named ``name``."""
        names = [n for n in self.datasource.layers if layers is None or n in layers]
        served = await asyncio.gather(*(self.layer(n) for n in names))
        return ServedDataset(
            name, self.datasource.voxel_size, {s.name: s for s in served if s is not None}
        )

    def reader(self, layer: str, mag: str) -> MagArray:
        return self._readers[layer, mag]

    def encoder(self, layer: str, array: ServedArray, tree: Tree) -> ChunkEncoder:
        key = (layer, array.path, tree)
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = self._encoders[key] = ChunkEncoder(array, tree)
        return encoder


@dataclass
class _ChunkCache:
    """A byte-bounded LRU of re-encoded chunks."""

    capacity: int
    size: int = 0
    entries: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        data = self.entries.get(key)
        if data is not None:
            self.entries.move_to_end(key)
        return data

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        if len(data) > self.capacity // 8:
            return  # one huge chunk must not flush everything else
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self.entries[key] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, evicted = self.entries.popitem(last=False)
            self.size -= len(evicted)


class GrantCache:
    """Anonymous and token grants of a SQLite catalog, valid while the catalog is unchanged.

    SQLite's ``PRAGMA data_version`` changes whenever another connection (another process, a
    kernel's Hub, this server's own writes) commits; asking it is an in-memory read of the
    WAL index (microseconds), so it is done on the event loop before each lookup. Until it
    changes, a grant looked up before is still exact, except that a link may expire in the
    meantime, which is checked. Revoking a link or making a dataset private is a commit, so
    it takes effect on the next request as before. PostgreSQL has no such cheap signal:
    there every request asks the catalog.

    ``data_version`` only counts commits to the file this cache opened: when the catalog's
    path names another file (a backup moved over it), everything cached is dropped and the
    new file opened; when it names none, :class:`~wkjupyter.errors.CatalogNotFoundError`.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, path: str, file_id: Callable[[], tuple[int, int] | None]) -> None:
        self._path = path
        self._file_id = file_id
        self._ident = file_id()  # before connecting: a file swapped in between reconnects
        self._opened = 0  # how many files this cache has opened: versions of two don't compare
        self._conn = self._connect()
        self._entries: OrderedDict[tuple[str, str], tuple[tuple[int, int], Grant | None]] = (
            OrderedDict()
        )

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self._path)}?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    @classmethod
    def for_catalog(cls, catalog: Catalog) -> GrantCache | None:
        url = catalog.engine.url
        path = url.database
        if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
            return None
        if path.startswith("file:"):
            return None
        return cls(path, catalog.file_id)

    @property
    def version(self) -> tuple[int, int]:
        """The catalog's version: which file, and its ``data_version`` (raises
        :class:`~wkjupyter.errors.CatalogNotFoundError` when the file is gone)."""
        ident = self._file_id()  # one stat: microseconds
        if ident != self._ident:
            self._entries.clear()  # read from another file
            self._conn.close()
            self._ident = ident
            self._opened += 1
            self._conn = self._connect()
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return self._opened, int(row[0])

    def get(self, key: tuple[str, str]) -> tuple[bool, Grant | None]:
        """(hit, grant): hit only if the catalog has not changed since it was stored."""
        current = self.version  # first: a replaced file drops every entry
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        version, grant = entry
        if version != current:
            self._entries.clear()
            return False, None
        if grant is not None and grant.expires_at is not None and grant.expires_at <= utcnow():
            return False, None
        self._entries.move_to_end(key)
        return True, grant

    def put(self, key: tuple[str, str], grant: Grant | None, version: tuple[int, int]) -> None:
        """Store a grant looked up at catalog ``version`` (read before the lookup)."""
        self._entries[key] = (version, grant)
        while len(self._entries) > self.MAX_ENTRIES:
            self._entries.popitem(last=False)

    def close(self) -> None:
        self._conn.close()


class DataService:
    """Answers the data routes from one catalog.

    Parameters
    ----------
    catalog
        The catalog to read grants, sources and credentials from.
    options
        Codec, cache and batching settings.
    """

    def __init__(self, catalog: Catalog, options: ServeOptions | None = None) -> None:
        self.catalog = catalog
        self.options = options or ServeOptions()
        self.box = secret_box(catalog)
        self._db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wkjupyter-catalog")
        self._views: OrderedDict[int, DatasetView] = OrderedDict()
        self._building: dict[tuple[int, str], asyncio.Future[DatasetView]] = {}
        self._chunks = _ChunkCache(self.options.chunk_cache_bytes)
        self._uses: dict[int, tuple[int, float]] = {}
        self._grants = GrantCache.for_catalog(catalog)
        self._flusher: asyncio.Task[None] | None = None
        self._flush_failing = False
        self.failures = FailureLog()  # upstream failures in the log

    # -- catalog access ------------------------------------------------------------------------

    async def in_catalog(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a catalog transaction on the catalog threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, self.catalog.run, fn)

    async def read_catalog(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only lookup ``fn(connection)`` on the catalog threads (no retries:
        reads do not conflict)."""

        def body() -> T:
            try:
                with self.catalog.engine.connect() as conn:
                    return fn(conn)
            except DBAPIError as err:
                msg = f"the catalog could not be read: {type(err.orig).__name__}; try again"
                raise CatalogUnavailableError(msg) from err

        return await asyncio.get_running_loop().run_in_executor(self._db, body)

    async def grant(self, path: DataPath, user: str | None) -> Grant | None:
        """What the request for ``path`` may read, or None (answer 404).

        ``user`` is the logged-in user's name (None: anonymous). A token path is granted by
        its link alone.
        """
        name = path.dataset or ""
        if path.token is not None or user is None:
            key = ("token", path.token) if path.token is not None else ("public", name)
            cache = self._grants
            hit, grant = cache.get(key) if cache is not None else (False, None)
            if not hit:
                version = cache.version if cache is not None else (0, 0)
                token = path.token
                if token is not None:
                    grant = await self.read_catalog(lambda c: access.token_grant(c, token))
                else:
                    grant = await self.read_catalog(lambda c: access.public_grant(c, name))
                if cache is not None:
                    cache.put(key, grant, version)
        else:
            actor_name = user

            def lookup(session: Session) -> Grant | None:
                actor = user_service.actor_for(session, actor_name)
                return access.user_grant(session, name, actor)

            grant = await self.in_catalog(lookup)
        if grant is not None and grant.annotation_id is not None:
            # Annotation links are served once annotations exist (annotations/ layer); until
            # then such a link grants nothing readable.
            return None
        return grant

    # -- views ---------------------------------------------------------------------------------

    async def view(self, grant: Grant) -> DatasetView:
        """The cached view of the granted dataset at its current version."""
        view = self._views.get(grant.dataset_id)
        fresh = view is not None and view.version == grant.version
        if fresh and view is not None and time.monotonic() - view.created < self.options.view_ttl:
            self._views.move_to_end(grant.dataset_id)
            return view
        key = (grant.dataset_id, grant.version)
        building = self._building.get(key)
        if building is None:
            building = asyncio.ensure_future(self._build(grant))
            self._building[key] = building
            building.add_done_callback(lambda _: self._building.pop(key, None))
        return await asyncio.shield(building)

    async def _build(self, grant: Grant) -> DatasetView:
        dataset_id = grant.dataset_id
        datasource = await self.in_catalog(
            lambda s: access.bound_datasource(s, self.box, dataset_id)
        )
        view = DatasetView(datasource, grant.version, self.options)
        self._views[dataset_id] = view
        self._views.move_to_end(dataset_id)
        while len(self._views) > self.options.view_cache_size:
            self._views.popitem(last=False)
        return view

    def forget(self, dataset_id: int) -> None:
        """Drop a dataset's view (e.g. after the source refused its credential)."""
        self._views.pop(dataset_id, None)

    # -- answers -------------------------------------------------------------------------------

    async def reply(self, path: DataPath, grant: Grant) -> Reply | None:
        """The answer to ``path`` (a metadata document, a chunk or a listing); None: 404.

        Raises the readers' errors for upstream failures (the handler maps them to 5xx).
        """
        try:
            view = await self.view(grant)
            return await self._reply(path, grant, view)
        except (RemoteAccessError, SourceGoneError):  # its metadata may be stale as well
            self.forget(grant.dataset_id)
            raise

    async def _reply(self, path: DataPath, grant: Grant, view: DatasetView) -> Reply | None:
        tree = path.tree
        if path.layer is None:
            served = await view.dataset(grant.slug, grant.layers)
            if path.listing:
                return listing_reply(metadata.root_entries(served, tree), grant.slug)
            assert path.leaf is not None
            if path.leaf == "datasource-properties.json":
                return _json(metadata.datasource_properties(served, tree))
            return _document(metadata.root_documents(served, tree), path.leaf)
        if grant.layers is not None and path.layer not in grant.layers:
            return None
        layer = await view.layer(path.layer)
        if layer is None:
            return None
        if path.mag is None:
            if path.listing:
                return listing_reply(metadata.layer_entries(layer, tree), path.layer)
            assert path.leaf is not None
            if path.leaf == "datasource-properties.json":
                return None  # only at the dataset root
            image = None
            if layer.category == "segmentation":
                granted = view.datasource.layers
                if grant.layers is not None:
                    granted = {n: lay for n, lay in granted.items() if n in grant.layers}
                image = metadata.image_layer_for(granted)
            return _document(metadata.layer_documents(layer, tree, image_layer=image), path.leaf)
        array = layer.arrays.get(path.mag)
        if array is None:
            return None
        if path.listing:
            return listing_reply(metadata.array_entries(tree), path.mag)
        if path.leaf is not None:
            return _document(metadata.array_documents(layer, array, tree), path.leaf)
        assert path.chunk is not None
        data = await self._chunk(view, grant, layer.name, array, path.chunk, tree)
        return None if data is None else Reply(data, OCTET_TYPE)

    async def _chunk(
        self,
        view: DatasetView,
        grant: Grant,
        layer: str,
        array: ServedArray,
        index: tuple[int, ...],
        tree: Tree,
    ) -> bytes | None:
        if len(index) != len(array.grid_shape):
            msg = (
                f"invalid chunk key: array {layer}/{array.path} has {len(array.grid_shape)} "
                f"dimensions, the key has {len(index)} indices"
            )
            raise ChunkKeyError(msg)
        if not chunk_in_grid(index, array.grid_shape):
            return None
        reader = view.reader(layer, array.path)
        encoder = view.encoder(layer, array, tree)
        if array.encodings[tree].passthrough:
            # One fetch: the stored bytes, or (an N5 edge block ...) the decoded chunk,
            # encoded with the array's own chain.
            got = await reader.raw_or_decoded(index)
            if got is None or isinstance(got, RawChunk):
                return None if got is None else got.data
            return await encoder.encode(got)
        # Both trees transcode to the same bytes. Keyed by the view too: a view rebuilt
        # after view_ttl re-reads a source that may have changed (a local Zarr being
        # written), so it must not reuse older chunks.
        key = (grant.dataset_id, grant.version, view.created, layer, array.path, index)
        cached = self._chunks.get(key)
        if cached is not None:
            return cached
        data = await reader.read_chunk(index)
        if data is None:
            return None
        encoded = await encoder.encode(data)
        self._chunks.put(key, encoded)
        return encoded

    # -- link use accounting -------------------------------------------------------------------

    def count_use(self, link_id: int) -> None:
        """Count one use of a link; written to the catalog within ``use_flush_interval``."""
        count, _ = self._uses.get(link_id, (0, 0.0))
        self._uses[link_id] = (count + 1, time.time())
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.options.use_flush_interval)
        await self.flush_uses()

    async def flush_uses(self) -> None:
        """Write the counted uses now (one UPDATE per link, in one transaction)."""
        if not self._uses:
            return
        uses, self._uses = self._uses, {}

        def write(session: Session) -> None:
            for link_id, (count, when) in uses.items():
                stamp = dt.datetime.fromtimestamp(when, dt.UTC)
                link_service.record_use(session, link_id, stamp, count=count)

        try:
            await self.in_catalog(write)
        except CatalogUnavailableError as err:
            # Busy, read-only or missing: keep the counts for the next flush, and say so once.
            for link_id, (count, when) in uses.items():
                pending, last = self._uses.get(link_id, (0, 0.0))
                self._uses[link_id] = (pending + count, max(last, when))
            if not self._flush_failing:
                log.warning("link uses not recorded, kept until the catalog takes them: %s", err)
            self._flush_failing = True
            return
        except Exception:
            log.exception("could not record %d link uses; they are lost", len(uses))
            return
        if self._flush_failing:
            log.warning("link uses recorded again")
            self._flush_failing = False

    async def close(self) -> None:
        """Write pending link uses and release the catalog threads."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_uses()
        self.failures.close()
        if self._uses:
            lost = sum(count for count, _ in self._uses.values())
            log.warning("%d link uses could not be recorded and are lost", lost)
        await close_filesystems()  # the storage connections opened on this loop
        if self._grants is not None:
            self._grants.close()
        self._db.shutdown(wait=False)


def _json(doc: Any) -> Reply:
    return Reply(json.dumps(doc, indent=2, allow_nan=False).encode(), JSON_TYPE)


def _document(docs: dict[str, Any], leaf: str) -> Reply | None:
    doc = docs.get(leaf)
    return None if doc is None else _json(doc)


def listing_reply(entries: list[str], title: str) -> Reply:
    """A directory listing: HTML (the body) and its entries (for JSON)."""
    html, _ = metadata.listing(entries, title=title)
    return Reply(html.encode(), HTML_TYPE, tuple(entries))
