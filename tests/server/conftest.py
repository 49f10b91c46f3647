"""Fixtures of the server tests: the demo datasets in a catalog, served by a live server.

``served`` (one per test module) is a SQLite catalog in a temp dir holding the three demo
datasets as public datasets (``ome-zarr``, ``n5``, ``precomputed``) and the OME-Zarr once
more as the private ``private-cells``, served by :class:`tests.server.live.LiveServer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import zarr

from tests.server.live import LiveServer
from wkjupyter.demo import write_demo
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Demo format name (write_demo's keys) -> served dataset name.
DATASETS = {"OME-Zarr 0.4": "ome-zarr", "N5": "n5", "Neuroglancer precomputed": "precomputed"}
PRIVATE = "private-cells"
OWNER = "owner"


@dataclass
class Served:
    """The demo catalog and its live server."""

    server: LiveServer
    hub: Hub  # acts as the owner (the catalog's admin)
    paths: dict[str, Path]  # served dataset name -> source path
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo datasets written once per test process: served name -> path."""
    written = write_demo(tmp_path_factory.mktemp("demo"))
    return {DATASETS[key]: Path(path) for key, path in written.items() if key in DATASETS}


@pytest.fixture(scope="module")
def served(
    demo_sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The demo datasets (public) and ``private-cells`` (private), served live."""
    data_dir = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    hub = Hub(url, OWNER, data_dir=data_dir, public_url="http://example.invalid/")
    for name, path in demo_sources.items():
        hub.add_remote(str(path), name=name, public=True)
    hub.add_remote(str(demo_sources["ome-zarr"]), name=PRIVATE, public=False)
    paths = {**demo_sources, PRIVATE: demo_sources["ome-zarr"]}
    with LiveServer(url, data_dir, owner=OWNER, local_roots=[data_dir]) as server:
        yield Served(server, hub, paths, data_dir)
    hub.catalog.dispose()


def write_sparse_ome_zarr(path: Path) -> Path:
    """A one-scale OME-Zarr 0.4 image (8, 32, 32) in 2x2x2 chunks; only chunk (0, 0, 0) is
    stored (zarr-python skips chunks that equal the fill value)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = np.zeros((8, 32, 32), "uint8")
    data[:4, :16, :16] = 7
    group.create_array(
        "0", data=data, chunks=(4, 16, 16), chunk_key_encoding={"name": "v2", "separator": "/"}
    )
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    group.attrs["multiscales"] = [
        {"version": "0.4", "name": "img", "axes": axes,
         "datasets": [{"path": "0", "coordinateTransformations": scale}]},
    ]  # fmt: skip
    return path
