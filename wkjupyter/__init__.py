"""wkjupyter: a secure hub for huge volumetric images inside Jupyter.

Import remote Zarr/OME-Zarr, N5 and Neuroglancer precomputed datasets without copying them,
read them as arrays, and share them as OME-Zarr (served by the Jupyter server extension or
``wkjupyter serve``) with private, expiring links.
"""

from __future__ import annotations

from wkjupyter.datasource import AdditionalAxis, ChannelInfo, DataSource, Layer, MagLevel
from wkjupyter.errors import (
    CatalogNotFoundError,
    CatalogReadOnlyError,
    CatalogUnavailableError,
    DatasetNotFoundError,
    HostUnreachableError,
    InvalidKeyError,
    LayerNotFoundError,
    MetadataError,
    NothingFoundError,
    OutsideLocalRootsError,
    PermissionDeniedError,
    ReadTooLargeError,
    RemoteAccessError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    ServerNotFoundError,
    SourceGoneError,
    UnsupportedFormatError,
    UpstreamBusyError,
    WkJupyterError,
)
from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize
from wkjupyter.hub import Dataset, Hub, Link
from wkjupyter.sources import (
    AccessOptions,
    GcsCredential,
    HttpCredential,
    S3Credential,
)
from wkjupyter.sources.explore import ExploreReport, ExploreStep, explore, explore_async

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The Jupyter server extension (imported only when a Jupyter server asks for it)."""
    from wkjupyter.server.extension import WkJupyter

    return [{"module": "wkjupyter", "app": WkJupyter}]


__all__ = [
    "AccessOptions",
    "AdditionalAxis",
    "BoundingBox",
    "CatalogNotFoundError",
    "CatalogReadOnlyError",
    "CatalogUnavailableError",
    "ChannelInfo",
    "DataSource",
    "Dataset",
    "DatasetNotFoundError",
    "ExploreReport",
    "ExploreStep",
    "GcsCredential",
    "HostUnreachableError",
    "HttpCredential",
    "Hub",
    "InvalidKeyError",
    "Layer",
    "LayerNotFoundError",
    "Link",
    "Mag",
    "MagLevel",
    "MetadataError",
    "NothingFoundError",
    "OutsideLocalRootsError",
    "PermissionDeniedError",
    "ReadTooLargeError",
    "RemoteAccessError",
    "RemoteNotFoundError",
    "RemoteUnavailableError",
    "S3Credential",
    "ServerNotFoundError",
    "SourceGoneError",
    "UnsupportedFormatError",
    "UpstreamBusyError",
    "Vec3",
    "VoxelSize",
    "WkJupyterError",
    "__version__",
    "explore",
    "explore_async",
]
