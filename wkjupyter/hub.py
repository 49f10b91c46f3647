"""The notebook-facing facade: ``Hub``, ``Dataset``, ``Link``.

Widgets, the CLI and (later) the server add no logic of their own: they call these. Every
call runs as the hub's acting user and is checked against the catalog's permission rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, MutableSet
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar
from urllib.parse import quote

from wkjupyter.catalog import access
from wkjupyter.catalog import credentials as cred_service
from wkjupyter.catalog import datasets as ds_service
from wkjupyter.catalog import links as link_service
from wkjupyter.catalog import users as user_service
from wkjupyter.catalog.core import Catalog
from wkjupyter.catalog.crypto import secret_box
from wkjupyter.catalog.models import DatasetRecord
from wkjupyter.datasource import DataSource, Layer, MagLevel
from wkjupyter.errors import LayerNotFoundError, ServerNotFoundError, WkJupyterError
from wkjupyter.server.runtime import (
    discover_catalog_url,
    discover_data_dir,
    discover_public_url,
)
from wkjupyter.sources.explore import ExploreReport, explore, merge_layers
from wkjupyter.sources.neuroglancer import neuroglancer_state_url

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import LinkRecord, User
    from wkjupyter.sources._fs import AccessOptions, Credential

__all__ = ["NEUROGLANCER_DEMO", "Dataset", "Hub", "Link", "TagSet", "ZarrFormat"]

T = TypeVar("T")
ZarrFormat = Literal[2, 3]
NEUROGLANCER_DEMO: Final = "https://neuroglancer-demo.appspot.com"
_TREES: Final[dict[int, str]] = {2: "zarr", 3: "zarr3"}


class Hub:
    """The hub: a catalog of datasets, seen and changed as one user.

    Parameters
    ----------
    catalog_url
        A SQLAlchemy URL; default ``$WKJUPYTER_CATALOG_URL``, else the catalog of the
        wkjupyter server that started this kernel, else SQLite in the data dir.
    user
        The acting user; default ``$JUPYTERHUB_USER`` or the OS user. The first user of a
        new catalog becomes its admin.
    public_url
        The server's public base URL including its base_url, such as
        ``"https://hub.example.org/user/alice/"``; default: discovered on first use (see
        :attr:`public_url`).
    data_dir
        Where the default catalog and its secret key live; default ``$WKJUPYTER_DATA_DIR``,
        else the data dir of the wkjupyter server that started this kernel, else
        ``<jupyter data dir>/wkjupyter``.
    """

    def __init__(
        self,
        catalog_url: str | None = None,
        user: str | None = None,
        *,
        public_url: str | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.catalog = Catalog(
            discover_catalog_url(catalog_url), data_dir=discover_data_dir(data_dir)
        )
        self.user_name = user or user_service.default_user_name()
        self._public_url_arg = public_url
        self._public_url: str | None = None
        self._box = secret_box(self.catalog)
        self._run(lambda s, actor: None)  # registers the user (the first becomes admin)

    def __repr__(self) -> str:
        return f"Hub({self.catalog!r}, user={self.user_name!r})"

    @property
    def public_url(self) -> str | None:
        """The wkjupyter server's public base URL, ending in "/"; ``None`` while unknown.

        The ``public_url`` given, else ``$WKJUPYTER_PUBLIC_URL``, else what the wkjupyter
        server that started this kernel recorded, else JupyterHub's public URL of this
        server, else the running Jupyter server's URL
        (:func:`wkjupyter.server.runtime.discover_public_url`). Looked up on first use and
        kept once found; assign a URL to set it, ``None`` to look it up again.
        """
        if self._public_url is None:
            self._public_url = discover_public_url(self._public_url_arg)
        return self._public_url

    @public_url.setter
    def public_url(self, url: str | None) -> None:
        self._public_url_arg = url
        self._public_url = discover_public_url(url) if url else None

    def _require_public_url(self) -> str:
        url = self.public_url
        if url is None:
            msg = (
                "no public URL of the wkjupyter server is known (looked for "
                "$WKJUPYTER_PUBLIC_URL, the server info of this kernel's Jupyter server, "
                "$JUPYTERHUB_PUBLIC_URL and the running Jupyter servers): start JupyterLab or "
                "`jupyter server` with wkjupyter installed and run this notebook in it, or pass "
                "Hub(public_url='http://localhost:8888/') or set WKJUPYTER_PUBLIC_URL"
            )
            raise ServerNotFoundError(msg)
        return url

    # -- plumbing ---------------------------------------------------------------------------

    def _run(self, fn: Callable[[Session, User], T]) -> T:
        """Run ``fn(session, actor)`` in one transaction (retried on transient conflicts)."""

        def body(session: Session) -> T:
            actor = user_service.actor_for(session, self.user_name)
            return fn(session, actor)

        return self.catalog.run(body)

    # -- exploring and importing --------------------------------------------------------------

    def explore(
        self,
        url_or_urls: str | list[str],
        credential: Credential | None = None,
        *,
        options: AccessOptions | None = None,
    ) -> ExploreReport:
        """Find the layers at one or more URLs (see :func:`wkjupyter.explore`)."""
        return explore(url_or_urls, credential, options=options)

    def add_remote(
        self,
        report_or_url: ExploreReport | str | list[str],
        name: str | None = None,
        *,
        tags: Iterable[str] = (),
        public: bool = False,
        credential: Credential | None = None,
        description: str = "",
    ) -> Dataset:
        """Register a remote dataset: only its metadata and source URLs are stored.

        ``report_or_url`` is an :class:`ExploreReport` (reviewed, maybe edited) or URLs to
        explore now. A ``credential`` is stored encrypted and used whenever the data is read.
        """
        datasource = self._datasource_of(report_or_url, credential)

        def add(session: Session, actor: User) -> DatasetRecord:
            cred_id = self._store_credential(session, actor, credential)
            return ds_service.add_dataset(
                session,
                actor,
                datasource,
                name=name,
                tags=tuple(tags),
                public=public,
                description=description,
                credential_ids=cred_id,
            )

        record = self._run(add)
        return Dataset(self, record.slug)

    def _datasource_of(
        self, report_or_url: ExploreReport | str | list[str], credential: Credential | None
    ) -> DataSource:
        report = (
            report_or_url
            if isinstance(report_or_url, ExploreReport)
            else explore(report_or_url, credential)
        )
        if report.datasource is None:
            failures = "; ".join(s.message for s in report.errors) or "no format matched"
            msg = f"nothing to import: exploring found no dataset ({failures})"
            raise ValueError(msg)
        return report.datasource

    def _store_credential(
        self, session: Session, actor: User, credential: Credential | None
    ) -> str | None:
        """The id of the stored ``credential`` (stored now unless an equal one exists)."""
        return cred_service.store_or_reuse(session, self._box, actor, credential)

    # -- finding ------------------------------------------------------------------------------

    def datasets(
        self,
        search: str | None = None,
        tags: Iterable[str] | None = None,
        public: bool | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Dataset]:
        """The datasets you may see, optionally filtered by words, tags and visibility."""
        slugs = self._listing(lambda r: r.slug, search, tags, public, limit, offset)
        return [Dataset(self, slug) for slug in slugs]

    def summaries(
        self,
        search: str | None = None,
        tags: Iterable[str] | None = None,
        public: bool | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Like :meth:`datasets`, as :meth:`Dataset.summary` dicts read in one transaction."""
        return self._listing(ds_service.dataset_summary, search, tags, public, limit, offset)

    def _listing(
        self,
        convert: Callable[[DatasetRecord], T],
        search: str | None,
        tags: Iterable[str] | None,
        public: bool | None,
        limit: int | None,
        offset: int,
    ) -> list[T]:
        tag_list = list(tags) if tags else None
        return self._run(
            lambda s, a: [
                convert(r)
                for r in ds_service.list_datasets(
                    s, a, search=search, tags=tag_list, public=public, limit=limit, offset=offset
                )
            ]
        )

    def dataset(self, name: str) -> Dataset:
        """One dataset by name (an old name of a renamed dataset works too)."""
        record = self._run(lambda s, a: ds_service.get_dataset(s, a, name))
        return Dataset(self, record.slug)

    def link(self, link_id: int) -> Link:
        """A link you may manage, by its id."""
        token = self._run(lambda s, a: link_service.link_token(s, self._box, a, link_id))
        return Link(self, link_id, token)

    def resolve_token(self, token: str) -> Any:
        """What a link token grants, while the link is valid; else ``None``."""
        return self.catalog.run(lambda s: link_service.resolve_token(s, token))

    # -- users, teams, credentials ------------------------------------------------------------

    def users(self) -> list[tuple[str, str]]:
        """(name, role) of every user."""
        return self._run(lambda s, a: [(u.name, u.role) for u in user_service.list_users(s, a)])

    def add_user(self, name: str, role: str = "editor") -> None:
        self._run(lambda s, a: user_service.add_user(s, a, name, role))

    def set_role(self, name: str, role: str) -> None:
        self._run(lambda s, a: user_service.set_role(s, a, name, role))

    def remove_user(self, name: str) -> None:
        self._run(lambda s, a: user_service.remove_user(s, a, name))

    def teams(self) -> list[str]:
        return self._run(lambda s, a: [t.name for t in user_service.list_teams(s, a)])

    def add_team(self, name: str) -> None:
        self._run(lambda s, a: user_service.add_team(s, a, name))

    def remove_team(self, name: str) -> None:
        self._run(lambda s, a: user_service.remove_team(s, a, name))

    def add_member(self, team: str, user: str, role: str = "editor") -> None:
        self._run(lambda s, a: user_service.add_member(s, a, team, user, role))

    def remove_member(self, team: str, user: str) -> None:
        self._run(lambda s, a: user_service.remove_member(s, a, team, user))

    def set_member_role(self, team: str, user: str, role: str) -> None:
        self._run(lambda s, a: user_service.set_member_role(s, a, team, user, role))

    def members(self, team: str) -> list[tuple[str, str]]:
        """(user, role) of every member of ``team``."""
        return self._run(
            lambda s, a: [(m.user.name, m.role) for m in user_service.list_members(s, a, team)]
        )

    def credentials(self) -> list[Any]:
        """Stored credentials by name and kind (never their secrets)."""
        return self._run(lambda s, a: cred_service.list_credentials(s, a))

    def rotate_credential(self, name: str, credential: Credential) -> None:
        """Replace a stored credential's secret; datasets using it read with the new one."""
        self._run(lambda s, a: cred_service.rotate_credential(s, self._box, a, name, credential))


class TagSet(MutableSet[str]):
    """A dataset's tags; changes are saved at once (``ds.tags.add("em")``)."""

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset

    def _names(self) -> list[str]:
        return [t.name for t in self._dataset._record().tags]

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and tag.lower() in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def add(self, tag: str) -> None:
        self._dataset._change(ds_service.add_tags, [tag])

    def discard(self, tag: str) -> None:
        self._dataset._change(ds_service.remove_tags, [tag])

    def update(self, tags: Iterable[str]) -> None:
        self._dataset._change(ds_service.add_tags, list(tags))

    def set(self, tags: Iterable[str]) -> None:
        self._dataset._change(ds_service.set_tags, list(tags))

    def __repr__(self) -> str:
        return f"TagSet({self._names()!r})"


class Dataset:
    """A dataset in the catalog, seen as the hub's user. Attributes read the catalog afresh."""

    def __init__(self, hub: Hub, slug: str) -> None:
        self._hub = hub
        self.name = slug

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"

    def _record(self) -> DatasetRecord:
        return self._hub._run(lambda s, a: ds_service.get_dataset(s, a, self.name))

    def _change(self, fn: Any, *args: Any) -> Any:
        def body(session: Session, actor: User) -> Any:
            record = ds_service.get_dataset(session, actor, self.name)
            return fn(session, actor, record, *args)

        return self._hub._run(body)

    # -- metadata ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Name, visibility, owner, tags, description and layer names, read at once."""
        return ds_service.dataset_summary(self._record())

    @property
    def description(self) -> str:
        return self._record().description

    @description.setter
    def description(self, text: str) -> None:
        self._change(ds_service.set_description, text)

    @property
    def public(self) -> bool:
        return self._record().public

    @public.setter
    def public(self, value: bool) -> None:
        self._change(ds_service.set_public, bool(value))

    @property
    def allowed_teams(self) -> list[str]:
        return [t.name for t in self._record().teams]

    @allowed_teams.setter
    def allowed_teams(self, teams: Iterable[str]) -> None:
        self._change(ds_service.set_allowed_teams, list(teams))

    @property
    def tags(self) -> TagSet:
        return TagSet(self)

    @tags.setter
    def tags(self, tags: Iterable[str]) -> None:
        self._change(ds_service.set_tags, list(tags))

    @property
    def owner(self) -> str:
        return self._record().owner.name

    @property
    def created_at(self) -> dt.datetime:
        return self._record().created_at

    @property
    def datasource(self) -> DataSource:
        """The stored data source, with stored credentials bound so its layers read."""

        def body(session: Session, actor: User) -> DataSource:
            record = ds_service.get_dataset(session, actor, self.name)
            return access.bound_datasource(session, self._hub._box, record.id)

        return self._hub._run(body)

    @property
    def layers(self) -> dict[str, Layer]:
        return self.datasource.layers

    def __getitem__(self, layer: str) -> Layer:
        return self.layers[layer]

    # -- changes -----------------------------------------------------------------------------

    def rename(self, new_name: str) -> None:
        """Rename; the old name keeps working."""
        record = self._change(ds_service.rename_dataset, new_name)
        self.name = record.slug

    def delete(self) -> None:
        self._change(ds_service.delete_dataset)

    def add_layers(
        self, report_or_url: ExploreReport | str | list[str], credential: Credential | None = None
    ) -> None:
        """Add the layers of another source (names made unique, voxel sizes reconciled)."""
        new = self._hub._datasource_of(report_or_url, credential)

        def body(session: Session, actor: User) -> None:
            record = ds_service.get_dataset(session, actor, self.name)
            current = DataSource.from_json(record.datasource)
            cred_id = self._hub._store_credential(session, actor, credential)
            if cred_id:
                for layer in new.layers.values():
                    layer.mags = {
                        m: _with_credential(level, cred_id) for m, level in layer.mags.items()
                    }
            steps: list[Any] = []
            merged = merge_layers(
                record.slug, [*current.layers.values(), *new.layers.values()], steps
            )
            if steps:
                raise ValueError("; ".join(s.message for s in steps))
            ds_service.update_datasource(session, actor, record, merged)

        self._hub._run(body)

    # -- URLs --------------------------------------------------------------------------------

    def zarr_url(self, layer: str | None = None, *, zarr_format: ZarrFormat = 2) -> str:
        """The OME-Zarr URL of this dataset, or of one of its layers, on the wkjupyter server.

        A private dataset's URL opens only for users logged in to this Jupyter server who
        may see it; create a link (:meth:`create_link`) to share it with anyone else.

        Parameters
        ----------
        layer
            A layer name; default: the dataset's root group.
        zarr_format
            2 for the Zarr v2 / NGFF 0.4 tree (``zarr/``), 3 for Zarr v3 / NGFF 0.5
            (``zarr3/``).

        Raises
        ------
        LayerNotFoundError
            The dataset has no such layer.
        ServerNotFoundError
            No public URL of the server is known (see :attr:`Hub.public_url`).
        """
        record = self._record()
        names = list(DataSource.from_json(record.datasource).layers)
        tree = _tree(zarr_format)
        if layer is not None:
            _check_layers([layer], names, f"dataset {record.slug!r}")
        url = f"{self._hub._require_public_url()}wkjupyter/{tree}/{_segment(record.slug)}/"
        return url if layer is None else f"{url}{_segment(layer)}/"

    def neuroglancer_url(
        self, layers: list[str] | None = None, *, host: str = NEUROGLANCER_DEMO
    ) -> str:
        """A Neuroglancer link showing this dataset from the wkjupyter server.

        Neuroglancer reads the Zarr v2 tree anonymously, so for a private dataset use a
        link's :meth:`Link.neuroglancer_url` instead.

        Parameters
        ----------
        layers
            The layers to show, in this order; default: all.
        host
            The Neuroglancer instance to open.

        Raises
        ------
        LayerNotFoundError
            The dataset has no such layer.
        ServerNotFoundError
            No public URL of the server is known (see :attr:`Hub.public_url`).
        """
        record = self._record()
        datasource = DataSource.from_json(record.datasource)
        names = layers if layers is not None else list(datasource.layers)
        _check_layers(names, list(datasource.layers), f"dataset {record.slug!r}")
        tree = f"{self._hub._require_public_url()}wkjupyter/zarr/{_segment(record.slug)}/"
        return neuroglancer_state_url(host, datasource, names, tree)

    # -- links -------------------------------------------------------------------------------

    def create_link(
        self,
        expires: str | dt.datetime | dt.timedelta | None = "30d",
        label: str = "",
        layers: list[str] | None = None,
    ) -> Link:
        """A private, expiring, revocable link granting read access to this dataset."""

        def body(session: Session, actor: User) -> tuple[LinkRecord, str]:
            record = ds_service.get_dataset(session, actor, self.name)
            return link_service.create_link(
                session, self._hub._box, actor, dataset=record, expires=expires, label=label,
                layers=layers,
            )  # fmt: skip

        link, token = self._hub._run(body)
        return Link(self._hub, link.id, token)

    def links(self) -> list[Link]:
        def body(session: Session, actor: User) -> list[Link]:
            record = ds_service.get_dataset(session, actor, self.name)
            return [
                Link(self._hub, r.id, link_service.link_token(session, self._hub._box, actor, r.id))
                for r in link_service.list_links(session, actor, dataset=record)
            ]

        return self._hub._run(body)


def _with_credential(level: MagLevel, cred_id: str) -> MagLevel:
    return replace(level, credential_id=cred_id)


def _tree(zarr_format: int) -> str:
    if zarr_format not in _TREES:
        msg = f"zarr_format must be 2 or 3, got {zarr_format!r}"
        raise ValueError(msg)
    return _TREES[zarr_format]


def _segment(name: str) -> str:
    return quote(name, safe="")


def _check_layers(wanted: list[str], available: list[str], owner: str, verb: str = "has") -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        have = ", ".join(available) or "none"
        msg = f"{owner} {verb} no layer {missing[0]!r}; it {verb} {have}"
        raise LayerNotFoundError(msg)


@dataclass
class Link:
    """A private link. ``url`` is what you share; ``token`` is the secret inside it."""

    _hub: Hub = field(repr=False)
    id: int
    token: str = field(repr=False)

    def _record(self) -> LinkRecord:
        return self._hub._run(lambda s, a: link_service.get_link(s, a, self.id))

    @property
    def url(self) -> str:
        """The link's root: ``{public_url}wkjupyter/links/<token>/``.

        Relative (``/wkjupyter/links/<token>/``) while no public URL of the server is known
        (see :attr:`Hub.public_url`).
        """
        path = f"wkjupyter/links/{self.token}/"
        base = self._hub.public_url
        return f"{base}{path}" if base else f"/{path}"

    def layer_url(self, layer: str, *, zarr_format: ZarrFormat = 2) -> str:
        """The OME-Zarr URL of one layer the link grants (``zarr/`` or ``zarr3/`` tree).

        Raises
        ------
        LayerNotFoundError
            The link does not grant that layer.
        """
        tree = _tree(zarr_format)
        granted = self._granted()
        if granted is not None:
            _check_layers([layer], granted[1], f"link {self.id}", "grants")
        return f"{self.url}{tree}/{_segment(layer)}/"

    def neuroglancer_url(
        self, layers: list[str] | None = None, *, host: str = NEUROGLANCER_DEMO
    ) -> str:
        """A Neuroglancer link showing what this link grants; anyone holding it can open it.

        Parameters
        ----------
        layers
            The layers to show, in this order; default: every layer the link grants.
        host
            The Neuroglancer instance to open.

        Raises
        ------
        LayerNotFoundError
            The link does not grant such a layer.
        ServerNotFoundError
            No public URL of the server is known (see :attr:`Hub.public_url`).
        """
        granted = self._granted()
        if granted is None:
            msg = (
                f"link {self.id} shares an annotation, and annotations are not served yet: "
                "share the dataset instead"
            )
            raise WkJupyterError(msg)
        datasource, names = granted
        chosen = layers if layers is not None else names
        _check_layers(chosen, names, f"link {self.id}", "grants")
        self._hub._require_public_url()
        return neuroglancer_state_url(host, datasource, chosen, f"{self.url}zarr/")

    def _granted(self) -> tuple[DataSource, list[str]] | None:
        """The linked dataset and the names of the layers granted, in dataset order.

        ``None`` for a link to an annotation.
        """

        def body(session: Session, actor: User) -> tuple[DataSource, list[str]] | None:
            record = link_service.get_link(session, actor, self.id)
            if record.dataset_id is None:
                return None
            dataset = session.get_one(DatasetRecord, record.dataset_id)
            datasource = DataSource.from_json(dataset.datasource)
            only = link_service.link_layers(record)
            names = [n for n in datasource.layers if only is None or n in only]
            return datasource, names

        return self._hub._run(body)

    @property
    def expires_at(self) -> dt.datetime | None:
        return self._record().expires_at

    @property
    def revoked(self) -> bool:
        return self._record().revoked_at is not None

    @property
    def last_used_at(self) -> dt.datetime | None:
        return self._record().last_used_at

    @property
    def use_count(self) -> int:
        return self._record().use_count

    @property
    def label(self) -> str:
        return self._record().label

    def update(self, expires: Any = ..., label: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if expires is not ...:
            kwargs["expires"] = expires
        if label is not None:
            kwargs["label"] = label
        self._hub._run(lambda s, a: link_service.update_link(s, a, self.id, **kwargs))

    def revoke(self) -> None:
        self._hub._run(lambda s, a: link_service.revoke_link(s, a, self.id))

    def to_json(self) -> str:
        r = self._record()
        return json.dumps(
            {"id": self.id, "url": self.url, "label": r.label,
             "expires_at": r.expires_at.isoformat() if r.expires_at else None,
             "revoked": r.revoked_at is not None, "use_count": r.use_count},
        )  # fmt: skip
