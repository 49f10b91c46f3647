"""``MagArray.raw_or_decoded``: what the server sends for a chunk, fetched once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np
import zarr

from tests.sources.test_n5 import explore_direct, java_write, make_data
from wkjupyter.geometry import Mag
from wkjupyter.sources._base import RawChunk
from wkjupyter.sources.explore import explore

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import HTTPServerFactory


def _gets(server: object, suffix: str) -> int:
    return sum(1 for r in server.requests if r.method == "GET" and r.path.endswith(suffix))  # type: ignore[attr-defined]


def test_n5_blocks_are_fetched_once(tmp_path: Path, http_server: HTTPServerFactory) -> None:
    data = make_data("uint16")
    java_write(tmp_path / "a.n5", data, "gzip", skip=((1, 1, 1),))  # N5 order: x, y, z
    server = http_server(tmp_path)
    (layer,) = asyncio.run(explore_direct(server.url_for("a.n5")))
    array = layer._arrays[Mag(1)]
    assert array.passthrough_codec is not None
    server.reset_log()
    interior = asyncio.run(array.raw_or_decoded((0, 0, 0, 0)))
    corner = asyncio.run(array.raw_or_decoded((0, 2, 2, 3)))  # truncated edge block
    missing = asyncio.run(array.raw_or_decoded((0, 1, 1, 1)))
    assert [_gets(server, key) for key in ("/0/0/0", "/3/2/2", "/1/1/1")] == [1, 1, 1]
    assert isinstance(interior, RawChunk)
    assert isinstance(corner, np.ndarray)
    np.testing.assert_array_equal(corner, asyncio.run(array.read_chunk((0, 2, 2, 3))))
    assert missing is None


def test_zarr_missing_chunks_are_fetched_once(
    tmp_path: Path, http_server: HTTPServerFactory
) -> None:
    values = np.zeros((8, 32, 32), "uint8")
    values[:4, :16, :16] = 7  # only chunk (0, 0, 0) differs from the fill value: stored
    zarr.create_array(tmp_path / "s.zarr", data=values, chunks=(4, 16, 16), zarr_format=3)
    server = http_server(tmp_path)
    report = explore(server.url_for("s.zarr"))
    layer = next(iter(report.require_datasource().layers.values()))
    array = layer.open_array()
    server.reset_log()
    assert isinstance(asyncio.run(array.raw_or_decoded((0, 0, 0, 0))), RawChunk)
    assert asyncio.run(array.raw_or_decoded((0, 1, 1, 1))) is None
    assert [_gets(server, key) for key in ("c/0/0/0", "c/1/1/1")] == [1, 1]
