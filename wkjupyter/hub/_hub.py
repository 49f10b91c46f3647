"""``Hub``: the catalog, seen and changed as one user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from wkjupyter.catalog import credentials as cred_service
from wkjupyter.catalog import datasets as ds_service
from wkjupyter.catalog import links as link_service
from wkjupyter.catalog import users as user_service
from wkjupyter.catalog.core import Catalog
from wkjupyter.catalog.crypto import secret_box
from wkjupyter.errors import ServerNotFoundError
from wkjupyter.hub._dataset import Dataset
from wkjupyter.hub._link import Link
from wkjupyter.server.runtime import (
    discover_catalog_url,
    discover_data_dir,
    discover_public_url,
)
from wkjupyter.sources.explore import ExploreReport, explore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import DatasetRecord, User
    from wkjupyter.datasource import DataSource
    from wkjupyter.sources._fs import AccessOptions, Credential


__all__ = ["Hub"]

T = TypeVar("T")


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
    create
        Whether a missing SQLite catalog file may be created. Default: yes for the
        ``catalog_url`` given and for the default catalog; no for a catalog found in
        ``$WKJUPYTER_CATALOG_URL`` or the server's settings, which must exist
        (:class:`~wkjupyter.errors.CatalogNotFoundError` says so, rather than an empty
        catalog appearing in its place).
    """

    def __init__(
        self,
        catalog_url: str | None = None,
        user: str | None = None,
        *,
        public_url: str | None = None,
        data_dir: Path | None = None,
        create: bool | None = None,
    ) -> None:
        url = discover_catalog_url(catalog_url)
        if create is None:
            create = bool(catalog_url) or url is None
        self.catalog = Catalog(url, data_dir=discover_data_dir(data_dir), create=create)
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

        Raises
        ------
        NothingFoundError
            Exploring found no dataset: the message says why and what to do, and
            ``err.report`` holds every attempt.
        """
        datasource = self._datasource_of(report_or_url, credential)

        def add(session: Session, actor: User) -> DatasetRecord:
            cred_id = cred_service.store_or_reuse(session, self._box, actor, credential)
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
        return report.require_datasource()

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
