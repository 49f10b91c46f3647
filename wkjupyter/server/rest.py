"""The REST API under ``{base_url}wkjupyter/api/``: datasets, explore, import, links.

It does what :class:`wkjupyter.Hub` does, through the same catalog services and so with the
same permission checks and error messages; errors come back as
``{"error": "<ErrorClass>", "message": "..."}`` with a fitting status. Every route needs a
login: the host decides who is logged in (Jupyter's identity provider and XSRF rules in the
extension, a bearer token in ``wkjupyter serve``).

=======================================  ==========================================
``GET api/datasets``                     list/search (``search``, ``tag``, ``public``,
                                         ``limit``, ``offset``)
``POST api/datasets``                    import: explore ``urls`` and register them
``GET|PATCH|DELETE api/datasets/<name>``  one dataset; PATCH ``tags``, ``add_tags``,
                                         ``remove_tags``, ``public``, ``description``,
                                         ``name`` (rename)
``POST api/explore``                     explore ``urls`` without importing
``GET|POST api/links``                   list (``dataset``) / create a link
``GET|PATCH|DELETE api/links/<id>``       one link; PATCH ``expires``, ``label``;
                                         DELETE revokes
=======================================  ==========================================

Explore and import need the import permission (editor or admin), checked before any URL is
fetched: exploring makes the server read what a URL names. Local paths are read only under
``local_roots``: the URLs given are checked before exploring (a clear 403 before any read),
and every local open while exploring is confined to the roots as well
(``AccessOptions.local_roots``), so metadata inside a root that names data elsewhere (a mag
path, a symlink) is refused, with the same 403 whether or not something is there. Bad
input is a 4xx with a message, never a 500: bodies nested deeper than 32 levels or text
holding NUL characters or lone surrogates are refused before anything else.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from tornado import web

from wkjupyter.catalog import credentials as cred_service
from wkjupyter.catalog import datasets as ds_service
from wkjupyter.catalog import links as link_service
from wkjupyter.catalog import permissions
from wkjupyter.catalog import users as user_service
from wkjupyter.catalog.models import Annotation, DatasetRecord
from wkjupyter.datasource import DataSource
from wkjupyter.errors import (
    CatalogUnavailableError,
    ConflictError,
    PermissionDeniedError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    WkJupyterError,
)
from wkjupyter.server import _api_input as parse
from wkjupyter.server._api_input import ApiError
from wkjupyter.server.data import JSON_TYPE
from wkjupyter.sources._fs import AccessOptions
from wkjupyter.sources._fs_local import OUTSIDE_LOCAL_ROOTS
from wkjupyter.sources._fs_urls import join_url, parse_url
from wkjupyter.sources.explore import ExploreReport, explore_async, storage_urls

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.crypto import SecretBox
    from wkjupyter.catalog.models import LinkRecord, User
    from wkjupyter.server.data import DataService
    from wkjupyter.sources._fs import Credential

__all__ = ["ApiRoutes", "ApiState", "api_handlers", "server_url"]

T = TypeVar("T")


@dataclass
class ApiState:
    """What the API handlers share, set up by the host.

    Attributes
    ----------
    data
        The data service (its catalog, thread pool and secret box are reused).
    owner
        The catalog user the API acts as when the host has no per-request user name.
    public_url
        The server's public base URL (ending in "/"), or None: taken from each request.
    local_roots
        Directories under which ``file://`` and plain-path imports are allowed; empty:
        none are.
    users_from_login
        Requests act as their logged-in user's name (JupyterHub) instead of ``owner``.
    """

    data: DataService
    owner: str
    public_url: str | None = None
    local_roots: list[Path] = field(default_factory=list)
    users_from_login: bool = False

    @property
    def box(self) -> SecretBox:
        return self.data.box


def server_url(handler: web.RequestHandler) -> str:
    """The server's public base URL (ending in "/") as seen by ``handler``'s request: the
    configured ``public_url``, else the request's scheme, host and the app's ``base_url``."""
    state: ApiState = handler.settings["wkjupyter_api"]
    if state.public_url:
        return state.public_url
    base = handler.settings.get("base_url", "/")
    return f"{handler.request.protocol}://{handler.request.host}{base}"


class ApiRoutes(web.RequestHandler):
    """JSON in, JSON out; catalog work in the data service's threads."""

    @property
    def api(self) -> ApiState:
        state: ApiState = self.settings["wkjupyter_api"]
        return state

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", JSON_TYPE)
        self.set_header("Cache-Control", "no-store")

    def actor_name(self) -> str:
        """The catalog user this request acts as (hosts refine this)."""
        return self.api.owner

    def check_xsrf_cookie(self) -> None:
        # Hosts that use cookies (Jupyter) keep their own check; see the extension.
        super().check_xsrf_cookie()

    # -- plumbing ------------------------------------------------------------------------------

    async def run(self, fn: Callable[[Session, User], T]) -> T:
        """Run ``fn(session, actor)`` in one catalog transaction, off the event loop."""
        name = self.actor_name()

        def body(session: Session) -> T:
            return fn(session, user_service.actor_for(session, name))

        return await self.api.data.in_catalog(body)

    def body(self) -> dict[str, Any]:
        return parse.body(self.request.body)

    def reply(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(doc, default=_json_default))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        err = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(err, ApiError | WkJupyterError | ValueError | KeyError):
            message = str(err)
            name = type(err).__name__
        elif isinstance(err, web.HTTPError):
            message = err.log_message or self._reason
            name = self._reason
        else:
            message, name = "internal server error; see the server log", "InternalError"
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps({"error": name, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if _status_of(value) is None:
            super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        status = _status_of(e)
        if status is not None and not self._finished:
            self.send_error(status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def server_url(self) -> str:
        return server_url(self)

    def urls_of(self, slug: str) -> dict[str, str]:
        root = f"{self.server_url()}wkjupyter"
        name = quote(slug)
        return {"zarr_url": f"{root}/zarr/{name}/", "zarr3_url": f"{root}/zarr3/{name}/"}

    async def explore(self, doc: dict[str, Any]) -> tuple[ExploreReport, Credential | None]:
        """Explore the request's ``urls`` with its ``credential``, once the actor may import,
        both are valid and no URL reads a local path outside the allowed roots."""
        await self.run(lambda s, a: permissions.require(s, a, "import"))
        urls = parse.urls(doc)
        credential = parse.credential(doc)
        self.check_local(u for given in urls for u in storage_urls(given))
        roots = tuple(str(root) for root in self.api.local_roots)
        options = AccessOptions(local_roots=roots)
        report = await explore_async(urls, credential, options=options)
        self.check_refused(report)
        return report, credential

    def check_refused(self, report: ExploreReport) -> None:
        """Answer 403 when exploring tried to open a local path outside the roots (metadata
        or a symlink inside a root naming data elsewhere): the read was refused, and the
        answer must not depend on what, if anything, is there."""
        for step in report.steps:
            if step.outcome == "failed" and OUTSIDE_LOCAL_ROOTS in step.message:
                msg = (
                    f"{step.url!r} names local data that is outside the directories this "
                    f"server may import from ({self._shown_roots()}): {step.message}; an "
                    "administrator can allow more with c.WkJupyter.allowed_local_roots (or "
                    "--allow-local-root)"
                )
                raise ApiError(403, msg)

    def _shown_roots(self) -> str:
        return ", ".join(str(r) for r in self.api.local_roots) or "none configured"

    def check_local(self, urls: Iterable[str]) -> None:
        """Refuse storage URLs that read local paths outside the allowed roots, before
        anything reads them: each path as the stores will open it (``parse_url``: ``~``,
        ``file://``, percent-decoding, relative to the working directory), with ``..`` and
        symlinks resolved."""
        roots = [root.expanduser().resolve() for root in self.api.local_roots]
        for url in urls:
            try:
                parsed = parse_url(url)
            except ValueError:  # no store opens it, so nothing is read
                continue
            if parsed.scheme != "file":
                continue
            resolved = Path(parsed.root).resolve(strict=False)
            if not any(resolved.is_relative_to(root) for root in roots):
                msg = (
                    f"local path {url!r} is outside the directories this server may "
                    f"import from ({self._shown_roots()}); an administrator can allow more with "
                    "c.WkJupyter.allowed_local_roots (or --allow-local-root)"
                )
                raise ApiError(403, msg)

    def link_json(self, record: LinkRecord, token: str, dataset: str) -> dict[str, Any]:
        url = f"{self.server_url()}wkjupyter/links/{token}/"
        return {
            "id": record.id,
            "dataset": dataset,
            "url": url,
            "zarr_url": f"{url}zarr/",
            "zarr3_url": f"{url}zarr3/",
            "label": record.label,
            "layers": link_service.link_layers(record),
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "revoked": record.revoked_at is not None,
            "status": link_service.link_status(record),
            "last_used_at": record.last_used_at,
            "use_count": record.use_count,
        }


def _status_of(err: BaseException) -> int | None:
    if isinstance(err, ApiError):
        return err.status
    if isinstance(err, PermissionDeniedError):
        return 403
    if isinstance(err, ConflictError):
        return 409
    if isinstance(err, CatalogUnavailableError):
        return 503
    if isinstance(err, RemoteAccessError | RemoteUnavailableError | RemoteNotFoundError):
        return 502
    if isinstance(err, KeyError):  # DatasetNotFoundError, LinkNotFoundError, ...
        return 404
    if isinstance(err, ValueError):  # invalid names, expiries, credentials, ...
        return 400
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    msg = f"{type(value).__name__} is not JSON serialisable"
    raise TypeError(msg)


# -- datasets ----------------------------------------------------------------------------------


class DatasetsApi(ApiRoutes):
    """``api/datasets``: list and search; POST imports."""

    async def get(self) -> None:
        search = self.get_query_argument("search", None)
        tags = self.get_query_arguments("tag") or None
        public = parse.optional_bool(self.get_query_argument("public", None), "public")
        limit = parse.optional_int(self.get_query_argument("limit", None), "limit")
        offset = parse.optional_int(self.get_query_argument("offset", None), "offset") or 0

        def listing(s: Session, a: User) -> tuple[list[dict[str, Any]], int]:
            records = ds_service.list_datasets(
                s, a, search=search, tags=tags, public=public, limit=limit, offset=offset
            )
            total = ds_service.count_datasets(s, a, search=search, tags=tags, public=public)
            return [ds_service.dataset_summary(r) for r in records], total

        summaries, total = await self.run(listing)
        for summary in summaries:
            summary.update(self.urls_of(summary["name"]))
        self.reply({"datasets": summaries, "total": total})

    async def post(self) -> None:
        doc = self.body()
        report, credential = await self.explore(doc)
        datasource = _found(report)
        self.check_local(_source_urls(datasource))
        name = parse.optional_str(doc, "name")
        tags = parse.str_list(doc, "tags") if doc.get("tags") is not None else []
        public = parse.boolean(doc, "public", default=False)
        description = parse.optional_str(doc, "description") or ""

        def add(s: Session, a: User) -> dict[str, Any]:
            cred_id = cred_service.store_or_reuse(s, self.api.box, a, credential)
            record = ds_service.add_dataset(
                s, a, datasource, name=name, tags=tags, public=public,
                description=description, credential_ids=cred_id,
            )  # fmt: skip
            return ds_service.dataset_summary(record)

        summary = await self.run(add)
        summary.update(self.urls_of(summary["name"]))
        summary["steps"] = _steps(report)
        self.reply(summary, 201)


class DatasetApi(ApiRoutes):
    """``api/datasets/<name>``: get, change, delete one dataset."""

    async def get(self, name: str) -> None:
        parse.check_text(name, "the dataset name")

        def get(s: Session, a: User) -> tuple[dict[str, Any], str]:
            record = ds_service.get_dataset(s, a, name)
            return ds_service.dataset_summary(record), record.datasource

        summary, text = await self.run(get)
        summary.update(self.urls_of(summary["name"]))
        summary["layers"] = _layers(text)
        self.reply(summary)

    async def patch(self, name: str) -> None:
        parse.check_text(name, "the dataset name")
        doc = self.body()
        known = {"tags", "add_tags", "remove_tags", "public", "description", "name", "teams"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ApiError(400, f"unknown fields {unknown}; a PATCH may set {sorted(known)}")

        def change(s: Session, a: User) -> dict[str, Any]:
            record = ds_service.get_dataset(s, a, name)
            if "tags" in doc:
                ds_service.set_tags(s, a, record, parse.str_list(doc, "tags"))
            if "add_tags" in doc:
                ds_service.add_tags(s, a, record, parse.str_list(doc, "add_tags"))
            if "remove_tags" in doc:
                ds_service.remove_tags(s, a, record, parse.str_list(doc, "remove_tags"))
            if "public" in doc:
                ds_service.set_public(s, a, record, parse.boolean(doc, "public"))
            if "description" in doc:
                ds_service.set_description(
                    s, a, record, parse.optional_str(doc, "description") or ""
                )
            if "teams" in doc:
                ds_service.set_allowed_teams(s, a, record, parse.str_list(doc, "teams"))
            if "name" in doc:
                record = ds_service.rename_dataset(
                    s, a, record, parse.optional_str(doc, "name") or ""
                )
            s.refresh(record)
            return ds_service.dataset_summary(record)

        summary = await self.run(change)
        summary.update(self.urls_of(summary["name"]))
        self.reply(summary)

    async def delete(self, name: str) -> None:
        parse.check_text(name, "the dataset name")
        await self.run(
            lambda s, a: ds_service.delete_dataset(s, a, ds_service.get_dataset(s, a, name))
        )
        self.set_status(204)
        self.finish()


class ExploreApi(ApiRoutes):
    """``api/explore``: what is at some URLs, without importing (the import permission is
    needed all the same: it makes the server fetch URLs)."""

    async def post(self) -> None:
        doc = self.body()
        try:
            report, _ = await self.explore(doc)
        except PermissionDeniedError as err:
            msg = f"{err} (exploring through the server is the first step of an import)"
            raise PermissionDeniedError(msg) from None
        datasource = report.datasource if report else None
        if datasource is not None:  # metadata inside a root may name data outside it
            self.check_local(_source_urls(datasource))
        self.reply(
            {
                "found": datasource is not None,
                "datasource": _public_properties(datasource) if datasource else None,
                "steps": _steps(report),
            }
        )


# -- links -------------------------------------------------------------------------------------


class LinksApi(ApiRoutes):
    """``api/links``: list a dataset's links (``?dataset=``), create one."""

    async def get(self) -> None:
        name = self.get_query_argument("dataset", None)

        def listing(s: Session, a: User) -> list[tuple[LinkRecord, str, str]]:
            record = ds_service.get_dataset(s, a, name) if name else None
            return [
                (r, link_service.link_token(s, self.api.box, a, r.id), _slug_of(s, r))
                for r in link_service.list_links(s, a, dataset=record)
            ]

        rows = await self.run(listing)
        self.reply({"links": [self.link_json(r, token, slug) for r, token, slug in rows]})

    async def post(self) -> None:
        doc = self.body()
        dataset = parse.optional_str(doc, "dataset")
        if not dataset:
            raise ApiError(400, "'dataset' (the name of the dataset to link) is required")
        expires = doc.get("expires", link_service.DEFAULT_EXPIRY)
        label = parse.optional_str(doc, "label") or ""
        layers = parse.str_list(doc, "layers") if doc.get("layers") is not None else None

        def create(s: Session, a: User) -> tuple[LinkRecord, str, str]:
            record = ds_service.get_dataset(s, a, dataset)
            link, token = link_service.create_link(
                s, self.api.box, a, dataset=record, expires=expires, label=label, layers=layers
            )
            return link, token, record.slug

        link, token, slug = await self.run(create)
        self.reply(self.link_json(link, token, slug), 201)


class NoRoute(ApiRoutes):
    """Any other path below ``api/``: a JSON 404 naming the routes."""

    async def get(self, *_: str) -> None:
        routes = "datasets, datasets/<name>, explore, links, links/<id>"
        raise ApiError(404, f"no API route {self.request.path!r}; the API has {routes}")

    post = patch = delete = get


class LinkApi(ApiRoutes):
    """``api/links/<id>``: get, change (``expires``, ``label``), revoke (DELETE)."""

    async def get(self, link_id: str) -> None:
        self.reply(await self._one(parse.link_id(link_id)))

    async def patch(self, link_id: str) -> None:
        parse.link_id(link_id)
        doc = self.body()
        unknown = sorted(set(doc) - {"expires", "label"})
        if unknown:
            raise ApiError(400, f"unknown fields {unknown}; a PATCH may set expires and label")
        kwargs: dict[str, Any] = {}
        if "expires" in doc:
            kwargs["expires"] = doc["expires"]
        if "label" in doc:
            kwargs["label"] = parse.optional_str(doc, "label") or ""
        ident = parse.link_id(link_id)
        await self.run(lambda s, a: link_service.update_link(s, a, ident, **kwargs))
        self.reply(await self._one(ident))

    async def delete(self, link_id: str) -> None:
        ident = parse.link_id(link_id)
        await self.run(lambda s, a: link_service.revoke_link(s, a, ident))
        self.set_status(204)
        self.finish()

    async def _one(self, ident: int) -> dict[str, Any]:
        def one(s: Session, a: User) -> tuple[LinkRecord, str, str]:
            record = link_service.get_link(s, a, ident)
            return record, link_service.link_token(s, self.api.box, a, ident), _slug_of(s, record)

        record, token, slug = await self.run(one)
        return self.link_json(record, token, slug)


def _slug_of(session: Session, record: LinkRecord) -> str:
    dataset_id = record.dataset_id
    if dataset_id is None and record.annotation_id is not None:
        dataset_id = session.get_one(Annotation, record.annotation_id).dataset_id
    found: DatasetRecord = session.get_one(DatasetRecord, dataset_id)
    return found.slug


def api_handlers(prefix: str, classes: dict[str, type[ApiRoutes]]) -> list[tuple[str, Any]]:
    """The API routes below ``prefix`` with the host's handler classes by role name."""
    return [
        (f"{prefix}api/datasets/?", classes["datasets"]),
        (f"{prefix}api/datasets/([^/]+)/?", classes["dataset"]),
        (f"{prefix}api/explore/?", classes["explore"]),
        (f"{prefix}api/links/?", classes["links"]),
        (f"{prefix}api/links/([^/]+)/?", classes["link"]),
        (f"{prefix}api/(.*)", classes["no route"]),
    ]


API_ROLES: dict[str, type[ApiRoutes]] = {
    "datasets": DatasetsApi,
    "dataset": DatasetApi,
    "explore": ExploreApi,
    "links": LinksApi,
    "link": LinkApi,
    "no route": NoRoute,
}


def _found(report: ExploreReport) -> DataSource:
    try:
        return report.require_datasource()
    except ValueError as err:
        raise ApiError(422, str(err)) from err


def _steps(report: ExploreReport) -> list[dict[str, str]]:
    return [
        {"url": s.url, "format": s.format, "outcome": s.outcome, "message": s.message}
        for s in report.steps
    ]


def _public_properties(datasource: DataSource) -> dict[str, Any]:
    doc = datasource.to_properties()
    for layer in doc["dataLayers"]:
        for mag in layer["mags"]:
            mag.pop("credentialId", None)
    return doc


def _layers(datasource_json: str) -> list[dict[str, Any]]:
    datasource = DataSource.from_json(datasource_json)
    return [
        {
            "name": layer.name,
            "category": layer.category,
            "dtype": layer.dtype.name,
            "num_channels": layer.num_channels,
            "bbox": {"offset": list(layer.bbox.offset), "shape": list(layer.bbox.shape)},
            "voxel_size": {"zyx": list(layer.voxel_size.as_tuple()), "unit": layer.voxel_size.unit},
            "mags": [str(m) for m in layer.mags],
            "format": layer.data_format,
        }
        for layer in datasource.layers.values()
    ]


def _source_urls(datasource: DataSource) -> list[str]:
    """Every storage URL the data source reads: its base URLs and each mag's path joined to
    its layer's base URL, as :func:`~wkjupyter.sources.open_mag` joins them."""
    urls = []
    for layer in datasource.layers.values():
        if layer.base_url:
            urls.append(layer.base_url)
        for level in layer.mags.values():
            try:
                urls.append(join_url(layer.base_url, level.path) if layer.base_url else level.path)
            except ValueError:  # climbs above the root: open_mag fails the same way
                continue
    return urls
