"""Tornado handlers of the data routes, shared by the Jupyter extension and ``wkjupyter serve``.

:class:`DataRoutes` holds the HTTP semantics every Zarr client needs (docs/architecture.md §6,
``reference/jupyter-and-clients.md`` §4): GET and HEAD on every route, OPTIONS preflight,
CORS on every answer (errors included), single byte ranges (416 when unsatisfiable), strong
ETags with 304, 404 only for keys that do not exist, 502/503/504 with a reason when the
dataset's storage fails. Each host mixes it into its own handler base class: the extension
into ``JupyterHandler`` (never ``APIHandler``: its ``prepare`` 404s cross-origin requests),
the standalone app into ``tornado.web.RequestHandler``. :class:`LandingRoutes` answers
``{base_url}wkjupyter/`` and the two trees' roots with the datasets the caller may see.

Link tokens and credential query parameters are secrets: they are cut out of the request line
before anything logs it (:mod:`wkjupyter.server.redact`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar, cast

from tornado import web

from wkjupyter.errors import (
    CatalogUnavailableError,
    InvalidKeyError,
    MetadataError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    UnsupportedFormatError,
    UpstreamBusyError,
)
from wkjupyter.server import landing
from wkjupyter.server._http import (
    RangeNotSatisfiable,
    body_etag,
    content_range,
    etag_matches,
    parse_range,
)
from wkjupyter.server._keys import AbsentKeyError, parse_data_path
from wkjupyter.server.data import HTML_TYPE, JSON_TYPE, ChunkKeyError, Reply, listing_reply
from wkjupyter.server.redact import redact_uri
from wkjupyter.server.rest import server_url
from wkjupyter.sources._fs import failed_upstream, serving

if TYPE_CHECKING:
    from wkjupyter.catalog.access import Grant
    from wkjupyter.server._keys import DataPath, Tree
    from wkjupyter.server.data import DataService

__all__ = [
    "DATA_ROUTE",
    "LANDING_ROUTE",
    "LINK_ROOT_ROUTE",
    "DataRoutes",
    "LandingRoutes",
    "LinkRootRoutes",
]

log = logging.getLogger("wkjupyter.server")

#: The data routes below ``{base_url}wkjupyter/`` (the group is the path parse_data_path takes).
# Everything below ``links/<token>/`` comes here, also a wrong tree name: tornado would log
# an unmatched path verbatim, token included.
DATA_ROUTE = r"((?:zarr|zarr3)/.*|links/[^/]+/.+)"
#: A link's root (``Link.url``): lists the two trees.
LINK_ROOT_ROUTE = r"links/([^/]+)/?"
#: ``{base_url}wkjupyter`` and its trees ``zarr``, ``zarr3``, with or without the final "/"
#: (the group: None, "/", "/zarr", "/zarr/", ...). Below ``{base_url}``, before DATA_ROUTE.
LANDING_ROUTE = r"wkjupyter(/(?:zarr3?/?)?)?"

NOT_FOUND = json.dumps(
    {
        "error": "not found",
        "message": "nothing is served at this path: check the dataset name or the link; "
        "a private dataset is readable only through a link or when logged in",
    }
).encode()

_SLASHES = re.compile(r"/{2,}")


class _Routes(web.RequestHandler):
    """What the data handlers share: CORS, errors, redaction, the service."""

    #: Methods the routes answer (also the preflight's Allow-Methods).
    METHODS: ClassVar[str] = "GET, HEAD, OPTIONS"

    def initialize(self) -> None:
        # tornado decodes "%2F" in the path arguments into "/"; no name contains one.
        self._encoded_slash = "%2f" in self.request.path.lower()
        # Routing has already taken the path; what is logged from here on is redacted.
        self.request.uri = redact_uri(self.request.uri)
        self.request.path = redact_uri(self.request.path)

    @property
    def service(self) -> DataService:
        service: DataService = self.settings["wkjupyter_data"]
        return service

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Every answer, errors included: browsers hide a CORS-less 404 as a network error.
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header(
            "Access-Control-Expose-Headers",
            "ETag, Content-Length, Content-Range, Content-Type, Accept-Ranges",
        )

    def check_xsrf_cookie(self) -> None:
        """Data routes are read-only and cookie-free for clients: no XSRF applies."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-cache")
        if status_code == 404:
            self.finish(NOT_FOUND)
            return
        if status_code == 416:  # send_error cleared the headers set before
            self.set_header("Content-Range", self._wkjupyter_content_range)
        retry_after = getattr(self, "_wkjupyter_retry_after", None)
        if retry_after is not None:
            self.set_header("Retry-After", str(retry_after))
        reason = getattr(self, "_wkjupyter_reason", None) or self._reason
        body = {"error": self._reason, "message": reason}
        self.finish(json.dumps(body).encode())

    def _fail(self, status: int, message: str) -> None:
        self._wkjupyter_reason = message
        self.send_error(status)

    def _user(self) -> str | None:
        """The logged-in user's catalog name, or None for anonymous requests."""
        return None

    def _count(self, grant: Grant) -> None:
        """Count a use of the link that granted this request, if any."""
        if grant.link_id is not None:
            self.service.count_use(grant.link_id)

    async def _options(self) -> None:
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", self.METHODS)
        requested = self.request.headers.get("Access-Control-Request-Headers")
        self.set_header(
            "Access-Control-Allow-Headers", requested or "Range, If-None-Match, Authorization"
        )
        self.set_header("Access-Control-Max-Age", "86400")
        self.finish()

    async def _send(self, reply: Reply, head: bool) -> None:
        """Answer with ``reply``: ETag/304, Range/206/416, HEAD without body."""
        body = reply.body
        if reply.entries is not None and _wants_json(self.request):
            body = json.dumps({"entries": list(reply.entries)}).encode()
            self.set_header("Content-Type", JSON_TYPE)
        else:
            self.set_header("Content-Type", reply.content_type)
        if reply.entries is not None:
            self.set_header("Vary", "Accept")
        etag = body_etag(body)
        self.set_header("ETag", etag)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Accept-Ranges", "bytes")
        if etag_matches(self.request.headers.get("If-None-Match"), etag):
            self.set_status(304)
            self.finish()
            return
        try:
            selected = parse_range(self.request.headers.get("Range"), len(body))
        except RangeNotSatisfiable as err:
            self._wkjupyter_content_range = err.content_range
            self._fail(416, str(err))
            return
        if selected is not None:
            start, end = selected
            self.set_status(206)
            self.set_header("Content-Range", content_range(start, end, len(body)))
            body = body[start:end]
        self.set_header("Content-Length", str(len(body)))
        if not head:
            self.write(body)
        self.finish()

    async def _answer(self, work: Any, head: bool, directory: str | None = None) -> None:
        """Await ``work`` (a Reply or None) and answer it, mapping failures to statuses.

        ``directory``: the request named an existing directory without its trailing "/";
        answer with a redirect to it (only once it is known to exist, so that absent names
        get their 404 at once).
        """
        failures = self.service.failures
        path = self.request.path
        try:
            with serving():  # storage requests wait for a slot within their timeout only
                reply = await work
        except ChunkKeyError as err:
            self._fail(400, str(err))
            return
        except (RemoteAccessError, RemoteNotFoundError) as err:
            failures.failed(failed_upstream(err), "upstream refused a read for", path, err)
            self._fail(502, _UPSTREAM_DENIED if isinstance(err, RemoteAccessError) else _GONE)
            return
        except UpstreamBusyError as err:
            failures.failed(failed_upstream(err), "upstream busy for", path, err)
            self._wkjupyter_retry_after = err.retry_after
            self._fail(503, _BUSY)
            return
        except RemoteUnavailableError as err:
            failures.failed(failed_upstream(err), "upstream unavailable for", path, err)
            timeout = "timed out" in str(err)
            self._fail(504 if timeout else 503, _TIMEOUT if timeout else _UNAVAILABLE)
            return
        except (MetadataError, UnsupportedFormatError) as err:
            failures.failed(failed_upstream(err), "unreadable upstream data for", path, err)
            self._fail(502, _CORRUPT)
            return
        except CatalogUnavailableError as err:
            failures.failed("the catalog", "catalog unavailable for", path, err)
            self._fail(503, err.reason)  # busy, catalog file missing, read-only: no path
            return
        if reply is None:
            self.send_error(404)
            return
        if directory is not None:
            # Relative, so it also works behind proxies that strip a prefix.
            last = directory.rstrip("/").rsplit("/", 1)[-1]
            query = self.request.query
            self.redirect(f"{last}/" + (f"?{query}" if query else ""), permanent=True)
            return
        await self._send(reply, head)


_UPSTREAM_DENIED = (
    "the dataset's storage refused access (credential missing, wrong or expired); "
    "the dataset's owner should check or rotate its stored credential"
)
_GONE = "the dataset's storage no longer has the data this dataset was imported from"
_TIMEOUT = "the dataset's storage did not answer in time; try again later"
_BUSY = (
    "the dataset's storage is slow and too many requests already wait for it; "
    "try again after Retry-After seconds"
)
_UNAVAILABLE = "the dataset's storage is unreachable or failing; try again later"
_CORRUPT = "the dataset's stored data or metadata is malformed and cannot be served"
_ENCODED_SLASH = (
    "invalid data path: '%2F' (an encoded '/') is not allowed; no name contains '/', "
    "so separate names with a plain '/'"
)


class DataRoutes(_Routes):
    """``zarr/...``, ``zarr3/...`` and ``links/<token>/zarr[3]/...``."""

    async def _get(self, path: str, head: bool) -> None:
        if self._encoded_slash:
            self._fail(400, _ENCODED_SLASH)
            return
        try:
            # zarr-python lists f"{url}/{prefix}", so a group URL ending in "/" (as
            # Dataset.zarr_url gives) asks for ".../ds//": merge repeated slashes as nginx
            # does; parse_data_path still rejects traversal and malformed names.
            parsed = parse_data_path(_SLASHES.sub("/", path))
        except AbsentKeyError:
            self.send_error(404)
            return
        except InvalidKeyError as err:
            self._fail(400, str(err))
            return
        directory = path if parsed.listing and not path.endswith("/") else None
        await self._answer(self._reply(parsed), head, directory)

    async def _reply(self, parsed: DataPath) -> Reply | None:
        grant = await self.service.grant(parsed, self._user())
        if grant is None:
            return None
        self._count(grant)
        return await self.service.reply(parsed, grant)


class LinkRootRoutes(_Routes):
    """``links/<token>/``: what a link is, and its two trees."""

    async def _get(self, token: str, head: bool) -> None:
        if self._encoded_slash:
            self.send_error(404)
            return
        try:
            parsed = parse_data_path(f"links/{token}/zarr/")
        except InvalidKeyError:
            self.send_error(404)
            return
        directory = None if self.request.path.endswith("/") else token
        await self._answer(self._root(parsed), head, directory)

    async def _root(self, parsed: DataPath) -> Reply | None:
        grant = await self.service.grant(parsed, None)
        if grant is None:
            return None
        self._count(grant)
        return listing_reply(["zarr/", "zarr3/"], grant.slug)


class LandingRoutes(_Routes):
    """``{base_url}wkjupyter/``, ``zarr/`` and ``zarr3/``: the datasets this caller may see
    (:mod:`wkjupyter.server.landing`), as HTML or JSON."""

    #: Tells an anonymous caller how to see private datasets (hosts say how to log in).
    LOGIN_HINT: ClassVar[str] = "Private datasets are listed for logged-in users only."

    async def _get(self, rest: str | None, head: bool) -> None:
        if rest is None or not rest.endswith("/"):
            # Relative, so it also works behind proxies that strip a prefix.
            last = "wkjupyter" if rest is None else rest.strip("/")
            query = self.request.query
            self.redirect(f"{last}/" + (f"?{query}" if query else ""), permanent=True)
            return
        tree = cast("Tree | None", rest.strip("/") or None)  # LANDING_ROUTE: zarr or zarr3
        await self._answer(self._page(tree), head)

    async def _page(self, tree: Tree | None) -> Reply:
        user = self._user()
        root = f"{server_url(self)}wkjupyter/"
        listed = await self.service.in_catalog(lambda s: landing.visible(s, user, root))
        self.set_header("Vary", "Accept")
        if _wants_json(self.request):
            return Reply(json.dumps(landing.as_json(listed, tree)).encode(), JSON_TYPE)
        self.set_header("Content-Security-Policy", landing.CSP)
        return Reply(landing.page(listed, tree, root, self.LOGIN_HINT).encode(), HTML_TYPE)


def _wants_json(request: Any) -> bool:
    if request.query_arguments.get("format") == [b"json"]:
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept
