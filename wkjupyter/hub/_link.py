"""``Link``: a private link as the notebook sees it, and the URL rules Dataset shares."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

from wkjupyter.catalog import links as link_service
from wkjupyter.catalog.models import DatasetRecord
from wkjupyter.datasource import DataSource
from wkjupyter.errors import LayerNotFoundError, WkJupyterError
from wkjupyter.sources.neuroglancer import NEUROGLANCER_DEMO, neuroglancer_state_url

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import LinkRecord, User
    from wkjupyter.hub._hub import Hub


__all__ = ["NEUROGLANCER_DEMO", "Link", "ZarrFormat", "check_layers", "url_segment", "zarr_tree"]

ZarrFormat = Literal[2, 3]
_TREES: Final[dict[int, str]] = {2: "zarr", 3: "zarr3"}


def zarr_tree(zarr_format: int) -> str:
    if zarr_format not in _TREES:
        msg = f"zarr_format must be 2 or 3, got {zarr_format!r}"
        raise ValueError(msg)
    return _TREES[zarr_format]


def url_segment(name: str) -> str:
    return quote(name, safe="")


def check_layers(wanted: list[str], available: list[str], owner: str, verb: str = "has") -> None:
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

        Raises
        ------
        ServerNotFoundError
            No public URL of the server is known (see :attr:`Hub.public_url`): a link
            without its server's address would not work for anyone it is sent to. The
            message says how to give one; :attr:`path` is the part that does not need it.
        """
        return f"{self._hub._require_public_url()}{self.path}"

    @property
    def path(self) -> str:
        """The link's root below the server's public URL: ``wkjupyter/links/<token>/``."""
        return f"wkjupyter/links/{self.token}/"

    def layer_url(self, layer: str, *, zarr_format: ZarrFormat = 2) -> str:
        """The OME-Zarr URL of one layer the link grants (``zarr/`` or ``zarr3/`` tree).

        Raises
        ------
        LayerNotFoundError
            The link does not grant that layer.
        """
        tree = zarr_tree(zarr_format)
        granted = self._granted()
        if granted is not None:
            check_layers([layer], granted[1], f"link {self.id}", "grants")
        return f"{self.url}{tree}/{url_segment(layer)}/"

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
        check_layers(chosen, names, f"link {self.id}", "grants")
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
        """The link as JSON; ``url`` is ``null`` while no server URL is known (``path`` is
        the part below it)."""
        r = self._record()
        url = f"{self._hub.public_url}{self.path}" if self._hub.public_url else None
        return json.dumps(
            {"id": self.id, "url": url, "path": self.path, "label": r.label,
             "expires_at": r.expires_at.isoformat() if r.expires_at else None,
             "revoked": r.revoked_at is not None, "use_count": r.use_count},
        )  # fmt: skip
