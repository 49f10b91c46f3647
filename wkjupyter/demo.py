"""The embedded demo: a synthetic cell volume written in every format we read, then explored.

The volume is a Voronoi tiling of cells: dark membranes between cells, a bright nucleus in
each, camera noise; the segmentation labels every cell. Each format is written by a real
third-party writer (zarr-python for OME-Zarr, tensorstore for N5 and Neuroglancer
precomputed), so the demo exercises exactly what users will point wkjupyter at.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wkjupyter.paths import data_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from wkjupyter.sources.explore import ExploreReport

__all__ = ["DemoServing", "DemoVolume", "make_volume", "run_demo", "write_demo"]

#: What the demo does after exploring: nothing, serve once to read the data back over HTTP,
#: or go on serving until Ctrl-C.
DemoServing = Literal["none", "check", "keep"]

VOXEL_SIZE_ZYX = (40.0, 8.0, 8.0)  # nanometers, a typical anisotropic EM stack
FACTORS = (1, 2, 4)  # mags "1", "2", "4"


@dataclass(frozen=True)
class DemoVolume:
    """The demo data at every mag: ``image[m]`` (uint8) and ``labels[m]`` (uint32), (z,y,x)."""

    image: dict[int, np.ndarray[Any, Any]]
    labels: dict[int, np.ndarray[Any, Any]]


def make_volume(shape: tuple[int, int, int] = (64, 160, 192), cells: int = 40) -> DemoVolume:
    """Generate the synthetic cell volume and its downsampled mags (deterministic)."""
    rng = np.random.default_rng(42)
    scale = np.array(VOXEL_SIZE_ZYX) / VOXEL_SIZE_ZYX[-1]  # distances in physical units
    seeds = rng.uniform((0, 0, 0), shape, size=(cells, 3))
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    nearest = np.full(shape, np.inf, dtype=np.float32)
    second = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint32)
    for i, (z, y, x) in enumerate(seeds):
        d = np.sqrt(((zz - z) * scale[0]) ** 2 + ((yy - y) * scale[1]) ** 2 + (xx - x) * (xx - x))
        closer = d < nearest
        second = np.where(closer, nearest, np.minimum(second, d))
        nearest = np.where(closer, d, nearest)
        labels[closer] = i + 1
    membrane = (second - nearest) < 2.5
    brightness = rng.uniform(110, 170, size=cells + 1)
    image = brightness[labels] + 60 * np.exp(-((nearest / 7.0) ** 2))  # cytoplasm + nucleus
    image[membrane] = 35
    image += rng.normal(0, 9, size=shape)
    labels[membrane] = 0  # membranes are background, as in a real segmentation
    img8 = np.clip(image, 0, 255).astype(np.uint8)
    images = {1: img8}
    segs = {1: labels}
    for f in FACTORS[1:]:
        # Image: mean over f^3 blocks; labels: strided (a valid label, never a mix).
        padded = np.pad(img8, [(0, -s % f) for s in shape], mode="edge").astype(np.float32)
        z, y, x = padded.shape
        images[f] = (
            padded.reshape(z // f, f, y // f, f, x // f, f).mean(axis=(1, 3, 5)).round()
        ).astype(np.uint8)
        segs[f] = labels[::f, ::f, ::f].copy()
    return DemoVolume(images, segs)


def _write_ome_zarr(root: Path, vol: DemoVolume) -> Path:
    """OME-NGFF 0.4 with a ``labels/`` segmentation, written with zarr-python."""
    import zarr

    path = root / "cells.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)

    def multiscale(g: zarr.Group, arrays: dict[int, np.ndarray[Any, Any]], name: str) -> None:
        datasets: list[Any] = []
        for f, data in arrays.items():
            g.create_array(
                str(FACTORS.index(f)),
                data=data,
                chunks=(32, 64, 64),
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            datasets.append(
                {
                    "path": str(FACTORS.index(f)),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [v * f for v in VOXEL_SIZE_ZYX]}
                    ],
                }
            )
        axes: list[Any] = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        g.attrs["multiscales"] = [
            {"version": "0.4", "name": name, "axes": axes, "datasets": datasets}
        ]

    multiscale(group, vol.image, "cells")
    group.attrs["omero"] = {
        "channels": [
            {
                "label": "membrane stain",
                "color": "FFFFFF",
                "active": True,
                "window": {"min": 0, "max": 255, "start": 20, "end": 240},
            }
        ]
    }
    labels = group.create_group("labels")
    labels.attrs["labels"] = ["segmentation"]
    seg = labels.create_group("segmentation")
    multiscale(seg, vol.labels, "segmentation")
    seg.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    return path


def _write_n5(root: Path, vol: DemoVolume) -> Path:
    """An n5-viewer multiscale group per layer, written with tensorstore."""
    import tensorstore as ts

    path = root / "cells.n5"
    resolution = list(VOXEL_SIZE_ZYX[::-1])
    (path).mkdir(parents=True)
    (path / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    for name, arrays, compression in (
        ("raw", vol.image, {"type": "gzip", "level": 6}),
        ("segmentation", vol.labels, {"type": "zstd", "level": 3}),
    ):
        for i, data in enumerate(arrays.values()):
            store = ts.open(
                {
                    "driver": "n5",
                    "kvstore": f"file://{path / name / f's{i}'}",
                    "metadata": {
                        "dimensions": list(data.shape[::-1]),
                        "blockSize": [64, 64, 32],
                        "dataType": data.dtype.name,
                        "compression": compression,
                    },
                },
                create=True,
                delete_existing=True,
            ).result()
            store[...] = data.T
        attrs = {
            "scales": [[f, f, f] for f in arrays],
            "pixelResolution": {"unit": "nm", "dimensions": resolution},
        }
        (path / name / "attributes.json").write_text(json.dumps(attrs))
    return path


def _write_precomputed(root: Path, vol: DemoVolume) -> Path:
    """Neuroglancer precomputed: raw image + compressed_segmentation labels (tensorstore)."""
    import tensorstore as ts

    path = root / "cells_precomputed"
    for name, arrays, layer_type, encoding in (
        ("image", vol.image, "image", "raw"),
        ("segmentation", vol.labels, "segmentation", "compressed_segmentation"),
    ):
        for f, data in arrays.items():
            scale: dict[str, Any] = {
                "resolution": [v * f for v in VOXEL_SIZE_ZYX[::-1]],
                "encoding": encoding,
                "chunk_size": [64, 64, 32],
                "size": list(data.shape[::-1]),
                "voxel_offset": [0, 0, 0],
            }
            if encoding == "compressed_segmentation":
                scale["compressed_segmentation_block_size"] = [8, 8, 8]
            store = ts.open(
                {
                    "driver": "neuroglancer_precomputed",
                    "kvstore": f"file://{path / name}/",
                    "multiscale_metadata": {
                        "type": layer_type,
                        "data_type": data.dtype.name,
                        "num_channels": 1,
                    },
                    "scale_metadata": scale,
                },
                create=True,
            ).result()
            store[...] = data.T[..., None]
    return path


def write_demo(root: Path, vol: DemoVolume | None = None) -> dict[str, Path]:
    """Write the demo volume in every format below ``root``; returns format -> path."""
    try:
        import tensorstore  # noqa: F401
    except ImportError as err:
        msg = 'the demo needs its writers: pip install "wkjupyter[demo]"'
        raise SystemExit(msg) from err
    vol = vol or make_volume()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return {
        "OME-Zarr 0.4": _write_ome_zarr(root, vol),
        "N5": _write_n5(root, vol),
        "Neuroglancer precomputed": _write_precomputed(root, vol),
    }


def run_demo(
    root: Path | None = None,
    echo: Callable[[str], None] = print,
    *,
    serve: DemoServing = "check",
    port: int = 0,
) -> list[ExploreReport]:
    """Write the demo datasets, explore each one and print the layers found.

    Then, unless ``serve`` is ``"none"``, register them in a demo catalog, serve them as
    OME-Zarr and read them back over HTTP (:func:`serve_demo`); ``"keep"`` goes on serving
    until Ctrl-C."""
    from wkjupyter.sources.explore import explore

    root = root or data_dir() / "demo"
    t0 = time.perf_counter()
    paths = write_demo(root)
    echo(
        f"wrote the demo volume as {len(paths)} formats to {root} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    reports = []
    for fmt, path in paths.items():
        t0 = time.perf_counter()
        report = explore(str(path))
        took = time.perf_counter() - t0
        reports.append(report)
        echo(f"\n{fmt}: {path}  (explored in {took * 1000:.0f} ms)")
        if not report:
            echo("  nothing found:")
            for step in report.steps:
                echo(f"    [{step.outcome}] {step.format} at {step.url} {step.message}")
            continue
        ds = report.datasource
        echo(f"  voxel size {ds.voxel_size}")
        for layer in ds.layers.values():
            mags = ", ".join(str(m) for m in layer.mags)
            box = layer.bbox
            echo(
                f"  - {layer.name}: {layer.category}, {layer.dtype.name}, "
                f"{layer.num_channels} channel(s), bbox offset {box.offset.as_tuple()} "
                f"shape {box.shape.as_tuple()} (z,y,x), mags [{mags}], {layer.data_format}"
            )
        first = next(iter(ds.layers.values()))
        sample = first.read(mag=first.mag("coarsest"))
        echo(
            f"    read {first.name} at its coarsest mag: "
            f"array {sample.shape}, mean {sample.mean():.1f}"
        )
    if serve != "none" and all(reports):
        served = serve_demo(root, paths, echo, port=port, keep_serving=serve == "keep")
        if not served:
            msg = "the served demo data differs from the source"
            raise RuntimeError(msg)
    return reports


def serve_demo(
    root: Path,
    paths: dict[str, Path],
    echo: Callable[[str], None] = print,
    *,
    port: int = 0,
    keep_serving: bool = False,
) -> bool:
    """Register the demo datasets in a catalog under ``root``, serve them as OME-Zarr, and
    read every layer back through both Zarr trees with zarr-python, as any client would.

    Returns True when every layer read back identical. With ``keep_serving`` it then serves
    until interrupted (Ctrl-C), printing a Neuroglancer URL to look at.
    """
    import zarr

    from wkjupyter.catalog.core import Catalog
    from wkjupyter.catalog.datasets import slugify
    from wkjupyter.hub import Hub
    from wkjupyter.server.standalone import BackgroundServer

    for stale in root.glob("catalog.sqlite*"):
        stale.unlink()
    url = f"sqlite:///{root / 'catalog.sqlite'}"
    hub = Hub(url, "demo", data_dir=root)
    datasets = [hub.add_remote(str(p), name=slugify(f), public=True) for f, p in paths.items()]
    # Not the user's catalog (`wkjupyter ls` lists that one): say how to see this one.
    echo(f"\nregistered {len(datasets)} public datasets in the demo's own catalog; list them with")
    echo(f"  wkjupyter ls --catalog-url {shlex.quote(url)} --user demo")
    identical = True
    with BackgroundServer(Catalog(url, data_dir=root), owner="demo", port=port) as server:
        hub.public_url = server.url.removesuffix("wkjupyter/")
        echo(f"\nserving the demo catalog at {server.url} (Zarr v2: zarr/, v3: zarr3/)")
        for ds in datasets:
            for name, layer in ds.layers.items():
                expected = layer.read(mag="1")
                for fmt in (2, 3):
                    array_url = f"{ds.zarr_url(name, zarr_format=fmt)}1/"
                    got = zarr.open_array(array_url, mode="r", zarr_format=fmt)[...]
                    same = bool(np.array_equal(got, expected))
                    identical &= same
                    echo(f"  {'ok ' if same else 'DIFFERENT'} zarr-python v{fmt} {array_url}")
        if not keep_serving:
            echo(
                "\nrun `wkjupyter demo --serve` to keep serving, and open its address in a "
                "browser: every dataset with its URLs, a Neuroglancer link and code to copy"
            )
        else:
            echo(f"\nopen {server.url} in a browser: the datasets, their URLs, code to copy")
            echo(f"open in Neuroglancer: {datasets[0].neuroglancer_url()}")
            echo("serving until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                echo("stopped")
    hub.catalog.dispose()
    return identical
