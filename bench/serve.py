"""Serve benchmark: wkjupyter's chunk server against a static file server and xpublish-zarr.

The same local volumes are served by three servers, each a subprocess on 127.0.0.1:

- ``wkjupyter serve`` (standalone), the datasets registered as public in a fresh SQLite
  catalog; chunks of its Zarr v2 tree ``/wkjupyter/zarr/<dataset>/<layer>/<mag>/0/z/y/x``.
- nginx from Debian's packages (``worker_processes 1``, access log off) serving the OME-Zarr
  directory, or aiohttp's static handler when ``nginx`` is not on the PATH
  (``apt-get install -y nginx-light``). Only the pass-through source: the others are not Zarr.
- xpublish + xpublish-zarr on uvicorn (one worker), every source as an xarray Dataset backed by
  dask: ``dask.array.from_zarr`` for the OME-Zarr, tensorstore reads for N5 and precomputed.
  xpublish-zarr 0.1 serves Zarr v3 (``/datasets/<id>/zarr/<var>/c/z/y/x``) and re-encodes
  every chunk (bytes + zstd), so it transcodes even the pass-through source.

Sources (``--size``³, 64³ chunks): an OME-Zarr 0.4 image (Zarr v2, blosc lz4, uint8), whose
chunks wkjupyter passes through; an N5 gzip uint16 dataset and a Neuroglancer precomputed
compressed_segmentation uint64 volume, which it decodes or re-frames. One aiohttp client
session (``--concurrency`` connections) fetches every chunk once untimed, decoding each
against the written voxels, then ``--requests`` chunk requests cycling over the same keys,
timed. Targets on the pass-through source: wkjupyter's requests/s at least 0.5x the static
server's and at least 3x xpublish-zarr's.

Usage: ``python bench/serve.py [--size 256] [--requests 2000] [--concurrency 32] [--record]``
(``--record`` rewrites the serve section of ``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import record_section

SECTION = "## Serve (`bench/serve.py`)"
CHUNK = 64
TARGETS = {"static": 0.5, "xpublish-zarr": 3.0}  # wkjupyter req/s ÷ theirs, pass-through
VAR = "data"  # the xarray variable xpublish serves


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One written volume: ``key`` names its dataset everywhere, ``data`` is (z, y, x)."""

    key: str
    label: str
    path: Path
    data: np.ndarray[Any, Any]
    passthrough: bool


def make_image(n: int, dtype: str) -> np.ndarray[Any, Any]:
    """Smooth structures plus noise (as bench/read.py): compresses like real EM."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:n, :n, :n]
    base = 100 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0) + 30 * np.sin(z / 7.0)
    image = np.clip(base + rng.normal(0, 12, (n, n, n)), 0, 255)
    return (image if dtype == "uint8" else image * 256).astype(dtype)


def make_segmentation(n: int) -> np.ndarray[Any, Any]:
    z, y, x = np.ogrid[:n, :n, :n]
    return ((z // 24) * 10_000 + (y // 20) * 100 + (x // 28) + 2**40).astype(np.uint64)


def write_sources(root: Path, n: int) -> list[Source]:
    import numcodecs
    import tensorstore as ts
    import zarr

    img, img16, seg = make_image(n, "uint8"), make_image(n, "uint16"), make_segmentation(n)
    ome = root / "img.ome.zarr"
    group = zarr.open_group(str(ome), mode="w", zarr_format=2)
    group.create_array("0", shape=img.shape, chunks=(CHUNK,) * 3, dtype=img.dtype,
                       compressors=numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
                       chunk_key_encoding={"name": "v2", "separator": "/"})[...] = img  # fmt: skip
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "name": "img", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [8.0] * 3}]}]}]  # fmt: skip
    # N5 order is x,y,z: tensorstore's domain is the transpose.
    n5 = {"driver": "n5", "kvstore": f"file://{root}/img.n5/s0",
          "metadata": {"dimensions": [n] * 3, "blockSize": [CHUNK] * 3, "dataType": "uint16",
                       "compression": {"type": "gzip", "level": 6}}}  # fmt: skip
    ts.open(n5, create=True, delete_existing=True).result()[...] = img16.T
    pc = {"driver": "neuroglancer_precomputed", "kvstore": f"file://{root}/seg_pc/",
          "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
          "scale_metadata": {"resolution": [8, 8, 8], "encoding": "compressed_segmentation",
                             "compressed_segmentation_block_size": [8, 8, 8],
                             "chunk_size": [CHUNK] * 3, "size": [n] * 3}}  # fmt: skip
    ts.open(pc, create=True, delete_existing=True).result()[...] = seg.T[..., None]
    return [
        Source("ds-zarr", "OME-Zarr blosc uint8", ome, img, True),
        Source("ds-n5", "N5 gzip uint16", root / "img.n5" / "s0", img16, False),
        Source("ds-cseg", "precomputed cseg uint64", root / "seg_pc", seg, False),
    ]


# -- servers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: ``arrays`` maps a source key to the URL of its level-0 array."""

    name: str
    pid: int
    arrays: dict[str, str]
    zarr_format: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers or {}), timeout=30
    ) as r:
        body: bytes = r.read()
        return body


@contextmanager
def running(argv: list[str], ready: str, log: Path, timeout: float = 60) -> Iterator[int]:
    """Run ``argv`` until the block ends (also on error); wait until ``ready`` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                msg = f"{argv[0]} exited with {proc.returncode}:\n{log.read_text()[-2000:]}"
                raise RuntimeError(msg)
            try:
                get(ready, {"Accept": "application/json"})
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if time.monotonic() > deadline:
                    msg = f"{ready} not ready after {timeout:.0f} s ({err}); log: {log}"
                    raise RuntimeError(msg) from err
                time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wkjupyter_argv() -> list[str]:
    return [sys.executable, "-m", "wkjupyter.cli"]


def wkjupyter_available() -> bool:
    done = subprocess.run([*wkjupyter_argv(), "serve", "--help"], capture_output=True)
    return done.returncode == 0


def start_wkjupyter(stack: ExitStack, tmp: Path, sources: list[Source]) -> Server:
    from wkjupyter import Hub

    catalog = f"sqlite:///{tmp}/catalog.sqlite"
    hub = Hub(catalog_url=catalog, user="bench", data_dir=tmp)
    layers = {}
    for source in sources:
        dataset = hub.add_remote(str(source.path), name=source.key, public=True)
        layer = next(iter(dataset.layers.values()))
        layers[source.key] = (layer.name, str(min(layer.mags, key=lambda m: m.z * m.y * m.x)))
    hub.catalog.dispose()
    port = free_port()
    root = f"http://127.0.0.1:{port}/wkjupyter/zarr"
    argv = [*wkjupyter_argv(), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--base-url", "/", "--catalog-url", catalog, "--data-dir", str(tmp), "--user", "bench"]  # fmt: skip
    pid = stack.enter_context(running(argv, f"{root}/{sources[0].key}/", tmp / "wkjupyter.log"))
    for key, (layer, _) in layers.items():
        listing = json.loads(get(f"{root}/{key}/", {"Accept": "application/json"}))
        assert f"{layer}/" in listing["entries"] or layer in listing["entries"], listing
    arrays = {key: f"{root}/{key}/{layer}/{mag}/" for key, (layer, mag) in layers.items()}
    return Server("wkjupyter", pid, arrays, 2)


def nginx_config(tmp: Path, root: Path, port: int) -> Path:
    prefix = tmp / "nginx"
    prefix.mkdir()
    # As root the workers would run as "nobody", who cannot read the 0700 temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"    {name}_temp_path {prefix}/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
{temps}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        add_header Access-Control-Allow-Origin *;
    }}
}}
""")
    return conf


def start_static(stack: ExitStack, tmp: Path, source: Source) -> Server:
    port = free_port()
    root = source.path.parent
    nginx = shutil.which("nginx")
    if nginx:
        conf = nginx_config(tmp, root, port)
        argv = [nginx, "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)]
        name = "nginx"
    else:
        argv = [sys.executable, __file__, "--child", "static", "--what", str(root),
                "--port", str(port)]  # fmt: skip
        name = "aiohttp static"
    url = f"http://127.0.0.1:{port}/{source.path.name}/"
    pid = stack.enter_context(running(argv, url + ".zattrs", tmp / "static.log"))
    return Server(name, pid, {source.key: url + "0/"}, 2)


def start_xpublish(stack: ExitStack, tmp: Path, sources: list[Source]) -> Server:
    port = free_port()
    spec = json.dumps({s.key: str(s.path) for s in sources})
    argv = [sys.executable, __file__, "--child", "xpublish", "--what", spec, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    pid = stack.enter_context(running(argv, f"{url}/datasets", tmp / "xpublish.log"))
    arrays = {s.key: f"{url}/datasets/{s.key}/zarr/{VAR}/" for s in sources}
    return Server("xpublish-zarr", pid, arrays, 3)


class TensorStoreArray:
    """A tensorstore array as dask wants it: numpy dtype, and reads that return numpy."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.shape = tuple(store.shape)
        self.dtype = store.dtype.numpy_dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.store[key].read().result())


def xpublish_dataset(path: str) -> Any:
    """The volume at ``path`` as an xarray Dataset backed by dask, 64³ chunks, (z, y, x)."""
    import dask.array as da
    import tensorstore as ts
    import xarray as xr

    if path.endswith(".zarr"):
        array = da.from_zarr(path, component="0")
    else:
        driver = "n5" if "/img.n5/" in path else "neuroglancer_precomputed"
        store = ts.open({"driver": driver, "kvstore": f"file://{path}/"}).result()
        store = store.T if driver == "n5" else store[..., 0].T  # (x, y, z[, c]) → (z, y, x)
        array = da.from_array(TensorStoreArray(store), chunks=(CHUNK,) * 3, asarray=True)
    return xr.Dataset({VAR: (("z", "y", "x"), array)})


def serve_child(kind: str, what: str, port: int) -> None:
    """The server subprocesses: aiohttp's static handler on the directory ``what``, or
    xpublish on uvicorn serving ``what``, JSON ``{dataset id: path}``."""
    if kind == "static":
        from aiohttp import web

        app = web.Application()
        app.router.add_static("/", what)
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return
    import uvicorn
    import xpublish
    from xpublish_zarr import ZarrPlugin

    datasets = {key: xpublish_dataset(path) for key, path in json.loads(what).items()}
    rest = xpublish.Rest(datasets, plugins={"zarr": ZarrPlugin()})
    uvicorn.run(rest.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- decoding what a server says ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Served:
    """One array as a server describes it, decoded by zarr-python from its metadata alone.

    ``array`` reads from ``store``, an in-memory copy of the served metadata into which
    :meth:`decode` puts one fetched chunk at a time.
    """

    url: str
    array: Any
    store: dict[str, Any]
    encoding: str

    def index(self, zyx: tuple[int, ...]) -> tuple[int, ...]:
        """Chunk (z, y, x) of the spatial grid; leading axes (channel) at 0."""
        return (0,) * (self.array.ndim - 3) + zyx

    def chunk_url(self, zyx: tuple[int, ...]) -> str:
        return self.url + self.array.metadata.encode_chunk_key(self.index(zyx))

    def decode(self, zyx: tuple[int, ...], body: bytes) -> np.ndarray[Any, Any]:
        """The voxels of one chunk body (edge chunks cropped to the array), as (z, y, x)."""
        from zarr.core.buffer.cpu import Buffer

        index = self.index(zyx)
        key = self.array.metadata.encode_chunk_key(index)
        self.store[key] = Buffer.from_bytes(body)
        try:
            block = self.array.blocks[index]
        finally:
            del self.store[key]
        return np.asarray(block).reshape(block.shape[-3:])


def served(server: Server, key: str) -> Served:
    import zarr
    from zarr.core.buffer.cpu import Buffer
    from zarr.storage import MemoryStore

    url = server.arrays[key]
    name = ".zarray" if server.zarr_format == 2 else "zarr.json"
    meta = get(url + name)
    store = {name: Buffer.from_bytes(meta)}
    array = zarr.open_array(MemoryStore(store), mode="r", zarr_format=server.zarr_format)
    doc = json.loads(meta)
    if server.zarr_format == 2:
        codecs = (doc["compressor"] or {"id": "raw"})["id"]
        dtype = doc["dtype"]
    else:
        codecs = "+".join(c["name"] for c in doc["codecs"])
        bytes_codec = next(c for c in doc["codecs"] if c["name"] == "bytes")
        endian = (bytes_codec.get("configuration") or {}).get("endian", "little")
        dtype = np.dtype(doc["data_type"]).newbyteorder(endian).str
    return Served(url, array, store, f"v{server.zarr_format} {dtype.lstrip('|')} {codecs}")


def expected_chunk(data: np.ndarray[Any, Any], zyx: tuple[int, ...]) -> np.ndarray[Any, Any]:
    return data[tuple(slice(i * CHUNK, (i + 1) * CHUNK) for i in zyx)]


# -- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (nginx's worker)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


async def fetch_all(
    session: Any, urls: list[str], concurrency: int
) -> tuple[float, np.ndarray[Any, Any], list[bytes]]:
    """GET every URL with ``concurrency`` workers; wall time, latencies (s) and bodies."""
    latencies = np.zeros(len(urls))
    bodies: list[bytes] = [b""] * len(urls)
    todo = iter(enumerate(urls))

    async def worker() -> None:
        for i, url in todo:
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                body = await resp.read()
            latencies[i] = time.perf_counter() - t0
            if resp.status != 200:
                msg = f"GET {url}: {resp.status} {body[:300]!r}"
                raise RuntimeError(msg)
            bodies[i] = body

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, bodies


async def bench_one(
    server: Server, source: Source, requests: int, concurrency: int
) -> dict[str, Any]:
    import aiohttp

    array = served(server, source.key)
    grid = array.array.cdata_shape[-3:]
    keys = [tuple(map(int, i)) for i in np.ndindex(*grid)]
    urls = [array.chunk_url(k) for k in keys]
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # First pass: every chunk once, each decoded and checked against the voxels. Its
        # rate is the cold one (no chunk cached yet by the server; page cache warm).
        first, _, bodies = await fetch_all(session, urls, concurrency)
        for k, body in zip(keys, bodies, strict=True):
            got, want = array.decode(k, body), expected_chunk(source.data, k)
            np.testing.assert_array_equal(got, want, err_msg=f"{server.name} {source.key} {k}")
        sizes = {u: len(b) for u, b in zip(urls, bodies, strict=True)}
        timed = (urls * math.ceil(requests / len(urls)))[:requests]
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        wall, latencies, bodies = await fetch_all(session, timed, concurrency)
        server_cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
    changed = [u for u, b in zip(timed, bodies, strict=True) if len(b) != sizes[u]]
    assert not changed, f"{server.name}: body sizes changed between passes: {changed[:3]}"
    nbytes = sum(len(b) for b in bodies)
    row = {
        "source": source.label,
        "passthrough": source.passthrough,
        "server": server.name,
        "encoding": array.encoding,
        "kib": nbytes / requests / 1024,
        "cold_rps": len(urls) / first,
        "rps": requests / wall,
        "mb_s": nbytes / wall / 1e6,
        "p50_ms": float(np.percentile(latencies, 50)) * 1e3,
        "p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "server_cpu_ms": server_cpu / requests * 1e3,
        "client_cpu": client_cpu / wall,
    }
    print(
        f"{source.label:36s} {server.name:14s} {row['rps']:6.0f} req/s (cold {row['cold_rps']:4.0f})"
        f" {row['mb_s']:4.0f} MB/s  p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms"
        f"  server CPU {row['server_cpu_ms']:5.2f} ms/req  client CPU {row['client_cpu']:4.0%}"
        f"  [{array.encoding}]",
        flush=True,
    )
    return row


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """wkjupyter ÷ each other server, per source (rate: higher is better; latency: lower)."""
    out = []
    for source in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == source]
        ours = next((r for r in mine if r["server"] == "wkjupyter"), None)
        for theirs in (r for r in mine if r["server"] != "wkjupyter"):
            if ours is None:
                continue
            kind = "xpublish-zarr" if theirs["server"] == "xpublish-zarr" else "static"
            target = TARGETS[kind] if ours["passthrough"] else None
            rate = ours["rps"] / theirs["rps"]
            out.append({"source": source, "vs": theirs["server"], "rate": rate,
                        "p50": ours["p50_ms"] / theirs["p50_ms"],
                        "p99": ours["p99_ms"] / theirs["p99_ms"], "target": target,
                        "met": None if target is None else rate >= target})  # fmt: skip
    return out


# -- reporting ----------------------------------------------------------------------------


def tables(rows: list[dict[str, Any]], cmp: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| source | server | served as | req/s | cold req/s | MB/s | p50 (ms) | p99 (ms) | server CPU (ms/req) | client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['source']} | {r['server']} | {r['encoding']}, {r['kib']:.0f} KiB | {r['rps']:.0f} "
        f"| {r['cold_rps']:.0f} "
        f"| {r['mb_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_ms']:.2f} "
        f"| {r['client_cpu']:.0%} |"
        for r in rows
    ]
    lines += [
        "",
        "| source | wkjupyter ÷ | req/s | p50 | p99 | target (req/s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['source']} | {c['vs']} | **{c['rate']:.2f}** | {c['p50']:.2f} | {c['p99']:.2f} "
        f"| {verdict(c)} |"
        for c in cmp
    ]
    return lines


def verdict(c: dict[str, Any]) -> str:
    if c["target"] is None:
        return "–"
    return f"≥ {c['target']:g}: {'met' if c['met'] else 'MISSED'}"


def versions(static: str) -> str:
    nginx = ""
    if static == "nginx":
        done = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        nginx = done.stderr.strip().split("/")[-1]
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    parts = [f"wkjupyter {version('wkjupyter')} ({commit})", f"nginx {nginx}" if nginx else "",
             f"aiohttp {version('aiohttp')}", f"xpublish {version('xpublish')}",
             f"xpublish-zarr {version('xpublish-zarr')}",
             f"uvicorn {version('uvicorn')} ({loop}, {http})", f"dask {version('dask')}",
             f"Python {platform.python_version()}"]  # fmt: skip
    return ", ".join(p for p in parts if p)


def notes(rows: list[dict[str, Any]], static: str) -> list[str]:
    out = [
        f"Servers: wkjupyter `serve` (standalone, public datasets in a SQLite catalog); {static} "
        "(`worker_processes 1`, access log off, sendfile) on the OME-Zarr directory; xpublish + "
        "xpublish-zarr on uvicorn, one worker, each source an xarray Dataset backed by dask "
        "(`from_zarr`; tensorstore reads for N5 and precomputed). xpublish-zarr 0.1 serves "
        "Zarr v3 and encodes every chunk (bytes + zstd), the OME-Zarr chunks too. The N5 and "
        "precomputed sources are not Zarr: no static row. *Served as* is what each server "
        "sends: wkjupyter passes stored bytes through where Zarr can describe them (N5 gzip "
        "blocks: big-endian, header stripped) and re-encodes the rest (zstd level 1).",
        "",
        "The repeated pass re-fetches 64 chunks, so it measures the servers' chunk caches for "
        "re-encoded chunks: wkjupyter keeps them (a 256 MiB LRU by default), xpublish caches "
        "responses (cachey, 1 MB by default: it holds the small segmentation chunks, not the "
        "image ones). *cold req/s* is the first fetch of each chunk (64 requests, noisy).",
    ]
    for r in rows:
        ours = next((o for o in rows if o["server"] == "wkjupyter" and o["source"] == r["source"]),
                    None)  # fmt: skip
        if r["client_cpu"] >= 0.7 and ours is not None and r is not ours:
            out += ["", f"{r['server']} was limited by the client ({r['client_cpu']:.0%} client "
                    f"CPU), not by itself: its true rate is higher and the ratio to it lower. "
                    f"Server CPU per request does not depend on the client: wkjupyter "
                    f"{ours['server_cpu_ms']:.2f} ms, {r['server']} {r['server_cpu_ms']:.2f} ms."]  # fmt: skip
    return [*out, "", HISTORY]


HISTORY = (
    "Where the pass-through time went (py-spy, first version: 774 req/s, 0.23× nginx, 0.92 ms "
    "CPU per request) and what changed: a SHA-256 ETag of every 256 KiB body on the event loop "
    "(18 %; now XXH3-128, 30× faster); the grant lookup, an ORM query in a thread for every "
    "request (15 %; now plain SQL, and on SQLite cached until `PRAGMA data_version` says "
    "another connection committed, so revocations still apply on the next request); reading "
    "each chunk file in a thread (the hand-off cost ten times the read; now "
    "`preadv(RWF_NOWAIT)` on the loop when the page cache holds the file, a thread otherwise); "
    "an INFO access-log line per chunk (5 %; successes now log at DEBUG, as Jupyter does). What "
    "remains is mostly tornado's HTTP handling (about a third of the time)."
)


def record(rows: list[dict[str, Any]], cmp: list[dict[str, Any]], args: argparse.Namespace,
           static: str, load: float) -> None:  # fmt: skip
    lines = [
        SECTION,
        "",
        f"{dt.date.today():%Y-%m-%d}, {os.cpu_count()} cores ({platform.machine()}, load "
        f"average {load:.1f} at the start), "
        f"{versions(static)}. Sources {args.size}³ in 64³ chunks on local disk (page cache "
        f"warm); one aiohttp client session, {args.concurrency} connections, every chunk "
        f"fetched and decoded once untimed, then {args.requests} requests cycling over the "
        "same chunks, timed. Server CPU = user + system CPU of the server process tree per "
        "request; client CPU = the client's CPU time ÷ wall time (near 100 %: client-bound).",
        "",
        *tables(rows, cmp),
        "",
        "Targets on the pass-through (OME-Zarr) source: "
        + "; ".join(
            f"wkjupyter ≥ {c['target']:g}× {c['vs']} requests/s: "
            + ("met" if c["met"] else "**missed**")
            + f" ({c['rate']:.2f}×)"
            for c in cmp
            if c["target"] is not None
        )
        + ".",
        "",
        *notes(rows, static),
        "",
    ]
    record_section("## Serve", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child", choices=["static", "xpublish"], help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    if args.child:
        serve_child(args.child, args.what, args.port)
        return
    with_wkjupyter = wkjupyter_available()
    if not with_wkjupyter:
        print("`wkjupyter serve` is not available: measuring the other servers only")
        if args.record:
            raise SystemExit("not recording without wkjupyter")
    load = os.getloadavg()[0]
    if load > 1:
        print(f"warning: load average {load:.1f} before the run: other work skews the numbers")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_, ExitStack() as stack:
        tmp = Path(tmp_)
        t0 = time.perf_counter()
        sources = write_sources(tmp / "data", args.size)
        print(f"wrote {len(sources)} sources of {args.size}³ in {time.perf_counter() - t0:.1f} s")
        servers = [start_static(stack, tmp, sources[0]), start_xpublish(stack, tmp, sources)]
        if with_wkjupyter:
            servers.insert(0, start_wkjupyter(stack, tmp, sources))
        static = servers[-2].name
        for source in sources:
            for server in servers:
                if source.key in server.arrays:
                    rows.append(asyncio.run(bench_one(server, source, args.requests,
                                                      args.concurrency)))  # fmt: skip
    cmp = ratios(rows)
    print()
    print("\n".join(tables(rows, cmp)))
    if args.record:
        record(rows, cmp, args, static, load)


if __name__ == "__main__":
    main()
