"""The read side: explore and read Zarr/OME-Zarr, N5 and Neuroglancer precomputed.

Each format module exposes the same two coroutines:

``explore(store) -> list[Layer] | None``
    ``None`` when the data at ``store`` is not in that format (a cheap check), the layers
    found otherwise. Broken metadata of the right format raises a ``WkJupyterError``.
``open_array(store, level) -> MagArray``
    The reader of one mag; ``store`` is rooted at the mag's path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wkjupyter.sources._fs import (
    AccessOptions,
    Credential,
    GcsCredential,
    HttpCredential,
    S3Credential,
    Store,
    join_url,
)

if TYPE_CHECKING:
    from wkjupyter.datasource import MagLevel
    from wkjupyter.sources._base import MagArray

__all__ = [
    "AccessOptions",
    "Credential",
    "GcsCredential",
    "HttpCredential",
    "S3Credential",
    "Store",
    "open_mag",
]


async def open_mag(
    level: MagLevel,
    base_url: str | None,
    credential: Credential | None = None,
    options: AccessOptions | None = None,
) -> MagArray:
    """Open the reader of one stored mag (``level.path`` is resolved against ``base_url``)."""
    from wkjupyter.sources import n5, precomputed, zarr

    path = level.path if base_url is None else join_url(base_url, level.path)
    store = Store(path, credential, options)
    if level.format in ("zarr", "zarr3"):
        return await zarr.open_array(store, level)
    if level.format == "n5":
        return await n5.open_array(store, level)
    return await precomputed.open_array(store, level)
