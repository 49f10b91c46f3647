"""``Dataset`` (and its ``TagSet``): one catalog dataset as the notebook sees it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wkjupyter.catalog import access
from wkjupyter.catalog import credentials as cred_service
from wkjupyter.catalog import datasets as ds_service
from wkjupyter.catalog import links as link_service
from wkjupyter.datasource import DataSource, Layer, LayerDict, MagLevel
from wkjupyter.hub._link import (
    NEUROGLANCER_DEMO,
    Link,
    ZarrFormat,
    check_layers,
    url_segment,
    zarr_tree,
)
from wkjupyter.sources.explore import ExploreReport, merge_layers
from wkjupyter.sources.neuroglancer import neuroglancer_state_url

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from wkjupyter.catalog.models import DatasetRecord, LinkRecord, User
    from wkjupyter.hub._hub import Hub
    from wkjupyter.sources._fs import Credential

__all__ = ["Dataset", "TagSet"]


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
    def layers(self) -> LayerDict:
        """The layers by name, reading with the stored credentials (an unknown name raises
        :class:`~wkjupyter.errors.LayerNotFoundError` naming the layers there are)."""
        return LayerDict(self.datasource.layers, f"dataset {self.name!r}")

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
        """Add the layers of another source: names made unique, voxel sizes that are integer
        multiples of the dataset's merged into mags, others kept as the layer's own."""
        new = self._hub._datasource_of(report_or_url, credential)

        def body(session: Session, actor: User) -> None:
            record = ds_service.get_dataset(session, actor, self.name)
            current = DataSource.from_json(record.datasource)
            cred_id = cred_service.store_or_reuse(session, self._hub._box, actor, credential)
            if cred_id:
                for layer in new.layers.values():
                    layer.mags = {
                        m: _with_credential(level, cred_id) for m, level in layer.mags.items()
                    }
            steps: list[Any] = []
            merged = merge_layers(
                record.slug, [*current.layers.values(), *new.layers.values()], steps
            )
            failed = [s for s in steps if not s.ok]
            if failed:
                raise ValueError("; ".join(s.message for s in failed))
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
        tree = zarr_tree(zarr_format)
        if layer is not None:
            check_layers([layer], names, f"dataset {record.slug!r}")
        url = self._root_url(record.slug, tree)
        return url if layer is None else f"{url}{url_segment(layer)}/"

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
        check_layers(names, list(datasource.layers), f"dataset {record.slug!r}")
        return neuroglancer_state_url(host, datasource, names, self._root_url(record.slug, "zarr"))

    def _root_url(self, slug: str, tree: str) -> str:
        """The dataset's root in one tree of the server (``ServerNotFoundError`` if unknown)."""
        return f"{self._hub._require_public_url()}wkjupyter/{tree}/{url_segment(slug)}/"

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
