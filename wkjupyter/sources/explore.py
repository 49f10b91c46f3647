"""Explore URLs: find the layers stored there and merge them into one data source.

At each URL the explorers are tried in a fixed order (webKnossos datasource, OME-NGFF,
bare Zarr, N5, Neuroglancer precomputed; STYLE.md rule 4), the first match wins, and every
attempt is recorded as an :class:`ExploreStep`. When nothing matches, the folder's children
are explored (bounded depth and breadth). Exploration is latency-bound, so the metadata
documents every explorer looks for are fetched in one concurrent wave first, and any
document read twice is fetched once.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from wkjupyter.datasource import DataSource, Layer
from wkjupyter.errors import (
    HostUnreachableError,
    MetadataError,
    UnsupportedFormatError,
    WkJupyterError,
)
from wkjupyter.geometry import LENGTH_UNITS, BoundingBox, Mag, Vec3, VoxelSize
from wkjupyter.sources._base import sync
from wkjupyter.sources._fs import AccessOptions, Credential, Store
from wkjupyter.sources._fs_urls import redact_url
from wkjupyter.sources._report import ExploreReport, ExploreStep
from wkjupyter.sources.neuroglancer import (
    is_neuroglancer_url,
    parse_neuroglancer_url,
    split_source,
)

if TYPE_CHECKING:
    from wkjupyter.sources.neuroglancer import FormatHint, SourceSpec

__all__ = ["ExploreReport", "ExploreStep", "explore", "explore_async", "storage_urls"]

Explorer = Callable[[Store], Awaitable["list[Layer] | None"]]


def explorers() -> tuple[tuple[str, Explorer], ...]:
    """The explorers, tried in this order at every URL; the first that matches wins."""
    from wkjupyter.sources import n5, ngff, precomputed, webknossos, zarr

    return (
        ("webknossos", webknossos.explore),
        ("ome-ngff", ngff.explore),
        ("zarr", zarr.explore),
        ("n5", n5.explore),
        ("neuroglancer-precomputed", precomputed.explore),
    )


_BY_HINT: dict[str, tuple[str, ...]] = {
    "zarr": ("ome-ngff", "zarr"),
    "zarr2": ("ome-ngff", "zarr"),
    "zarr3": ("ome-ngff", "zarr"),
    "n5": ("n5",),
    "precomputed": ("neuroglancer-precomputed",),
}
# Documents the explorers look for first; fetched together in the first round trip.
PROBE_KEYS = (
    "datasource-properties.json",
    ".zattrs",
    ".zgroup",
    ".zarray",
    "zarr.json",
    "attributes.json",
    "info",
)
# Metadata file names tolerated at the end of a URL.
_METADATA_NAMES = (*PROBE_KEYS, ".zmetadata")
MAX_DEPTH = 3
MAX_CHILDREN = 16


class _ExploreStore(Store):
    """A store that fetches each key once per exploration (shared by all its children)."""

    def __init__(
        self,
        url: str,
        credential: Credential | None,
        options: AccessOptions | None,
        memo: dict[tuple[str, Any], asyncio.Future[bytes | None]] | None = None,
    ) -> None:
        super().__init__(url, credential, options)
        self._memo = memo if memo is not None else {}

    def child(self, key: str) -> Store:
        return _ExploreStore(self.join(key), self.credential, self.options, self._memo)

    async def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes | None:
        memo_key = (self.join(key), byte_range)
        future = self._memo.get(memo_key)
        if future is None:
            future = asyncio.ensure_future(super().get(key, byte_range))
            self._memo[memo_key] = future
        return await asyncio.shield(future)

    async def prefetch(self, keys: Sequence[str]) -> None:
        # Failures surface when an explorer reads the key; here we only start the requests.
        await asyncio.gather(*(self.get(k) for k in keys), return_exceptions=True)


@dataclass
class _Input:
    url: str
    hint: FormatHint | None = None
    name: str | None = None  # the Neuroglancer layer name
    category: Literal["color", "segmentation"] | None = None


def explore(
    url_or_urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    credential: Credential | Sequence[Credential | None] | None = None,
    *,
    options: AccessOptions | None = None,
    name: str | None = None,
) -> ExploreReport:
    """Find the layers at one or more URLs and merge them into one data source.

    Parameters
    ----------
    url_or_urls
        A URL (local path, ``file://``, ``http(s)://``, ``s3://``, ``gs://``), a Neuroglancer
        source (``zarr://…``, ``…|neuroglancer-precomputed:``) or a Neuroglancer state URL
        (``https://host/#!{…}``), or a non-empty list of them.
    credential
        One credential for all URLs, or one per URL (``None`` for anonymous).
    options
        Request concurrency and timeout.
    name
        The data source's name; default: derived from the first URL.

    Returns
    -------
    ExploreReport
        ``report.steps``, one per attempt, and ``report.datasource``. A report that found
        nothing is false (``report.ok``), and its ``datasource`` raises
        :class:`~wkjupyter.errors.NothingFoundError` saying why.

    Raises
    ------
    ValueError
        No URL was given, or an empty one.
    """
    return sync(explore_async(url_or_urls, credential, options=options, name=name))


async def explore_async(
    url_or_urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    credential: Credential | Sequence[Credential | None] | None = None,
    *,
    options: AccessOptions | None = None,
    name: str | None = None,
) -> ExploreReport:
    """Async form of :func:`explore`."""
    urls = _given_urls(url_or_urls)
    if isinstance(credential, list | tuple):
        credentials: list[Credential | None] = list(credential)
        if len(credentials) != len(urls):
            msg = f"got {len(credentials)} credentials for {len(urls)} URLs; give one per URL"
            raise ValueError(msg)
    else:
        credentials = [cast("Credential | None", credential)] * len(urls)
    steps: list[ExploreStep] = []
    inputs: list[tuple[_Input, Credential | None]] = []
    for url, cred in zip(urls, credentials, strict=True):
        for item in _inputs_of(url, steps):
            inputs.append((item, cred))
    results = await asyncio.gather(*(_explore_input(i, c, options) for i, c in inputs))
    layers: list[Layer] = []
    for found, input_steps in results:
        steps += input_steps
        layers += found
    if not layers:
        return ExploreReport(None, steps)
    ds_name = name or _dataset_name(inputs[0][0].url)
    datasource = merge_layers(ds_name, layers, steps)
    return ExploreReport(datasource, steps)


def _given_urls(
    url_or_urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str]:
    """The URLs as strings; ``ValueError`` for none at all or an empty one."""
    given = [url_or_urls] if isinstance(url_or_urls, str | os.PathLike) else list(url_or_urls)
    urls = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in given]
    if not any(u.strip() for u in urls):
        msg = (
            "no URL given: explore a dataset's URL (or a list of them), such as "
            "'https://host/data.ome.zarr', 's3://bucket/em.n5', a local path or a "
            "Neuroglancer link"
        )
        raise ValueError(msg)
    for i, url in enumerate(urls, 1):
        if not url.strip():
            msg = f"URL #{i} of {len(urls)} is empty; remove it or give the dataset's URL"
            raise ValueError(msg)
    return urls


def storage_urls(url: str) -> list[str]:
    """The storage URLs :func:`explore` opens for one user-given URL (a Neuroglancer state's
    sources, a source's storage URL with its pipeline subpath), so that a server can check
    them before anything is read; none when exploring it would fail before any read."""
    return [item.url for item in _inputs_of(url, [])]


def _inputs_of(url: str, steps: list[ExploreStep]) -> list[_Input]:
    """Turn a user-given URL (maybe a Neuroglancer state) into explore inputs."""
    try:
        if is_neuroglancer_url(url):
            return _state_inputs(url, steps)
        spec = split_source(url)
    except WkJupyterError as err:
        message = _unsupported_scheme(url) if isinstance(err, UnsupportedFormatError) else None
        steps.append(ExploreStep(_short(redact_url(url)), "url", "failed", message or str(err)))
        return []
    return [_input(spec)]


def _state_inputs(url: str, steps: list[ExploreStep]) -> list[_Input]:
    """The layer sources of a Neuroglancer state; one failed step if it names none."""
    ng_layers, notes = parse_neuroglancer_url(url)
    out = [
        _input(spec, layer.name, layer.category) for layer in ng_layers for spec in layer.sources
    ]
    if not out:
        why = "; ".join(notes) or "the state names no image or segmentation layer"
        message = (
            f"no volume layer to explore: {why}; add an image or segmentation layer in "
            "Neuroglancer and copy its URL again"
        )
        steps.append(ExploreStep(_short(url), "neuroglancer-state", "failed", message))
        return []
    steps += [ExploreStep(_short(url), "neuroglancer-state", "no match", n) for n in notes]
    steps.append(
        ExploreStep(_short(url), "neuroglancer-state", "ok", f"{len(out)} layer source(s)")
    )
    return out


_SCHEME = re.compile(r"\s*([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _unsupported_scheme(url: str) -> str | None:
    """What to say about a plain URL (no Neuroglancer syntax) whose scheme nothing reads.

    ``None`` for a Neuroglancer source (a ``format://`` prefix before the storage URL, or
    a ``|driver:`` pipeline): :func:`split_source`'s own message speaks of it.
    """
    match = _SCHEME.match(url)
    if match is None or "|" in url or url.count("://") > 1:
        return None
    return (
        f"{redact_url(url.strip())!r} uses '{match.group(1)}://', which wkjupyter cannot read; "
        "give a local path or a URL at http(s)://, gs://, s3://, s3+http(s):// or file:// "
        "(Neuroglancer sources such as precomputed://gs://bucket/path or "
        "gs://bucket/path|zarr3: work too)"
    )


def _input(
    spec: SourceSpec,
    name: str | None = None,
    category: Literal["color", "segmentation"] | None = None,
) -> _Input:
    target = spec.url if not spec.subpath else f"{spec.url.rstrip('/')}/{spec.subpath}"
    return _Input(_strip_metadata_name(target), spec.format, name, category)


def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"


def _strip_metadata_name(url: str) -> str:
    stripped = url.rstrip("/")
    for meta in _METADATA_NAMES:
        if stripped.endswith("/" + meta):
            return stripped[: -len(meta) - 1]
    return url


async def _explore_input(
    item: _Input, credential: Credential | None, options: AccessOptions | None
) -> tuple[list[Layer], list[ExploreStep]]:
    steps: list[ExploreStep] = []
    try:
        store = _ExploreStore(item.url, credential, options)
    except (ValueError, TypeError) as err:
        steps.append(ExploreStep(redact_url(item.url), "url", "failed", str(err)))
        return [], steps
    confined = options is not None and options.local_roots is not None
    # Under local roots the store's own reads decide (they refuse an outside path whether or
    # not it exists); a direct look here would tell a missing outside path from a present one.
    if store.parsed.scheme == "file" and not confined and not Path(store.parsed.root).exists():
        message = f"{store.url!r} does not exist on this machine; check the path"
        steps.append(ExploreStep(store.url, "url", "failed", message))
        return [], steps
    chosen = [(n, e) for n, e in explorers() if item.hint is None or n in _BY_HINT[item.hint]]
    layers = await _explore_at(store, chosen, steps, depth=0)
    if not layers and not any(s.outcome == "failed" for s in steps):
        steps.append(
            ExploreStep(
                store.url,
                "explore",
                "failed",
                f"no dataset found at {store.url!r} or in its sub-folders: no format "
                f"recognised what is there (the explorers look for {', '.join(PROBE_KEYS)}); "
                "point the URL at the dataset's root folder (a plain HTTP server cannot "
                "list folders, so sub-folders are only found on file, S3 and GCS storage or "
                "servers with directory listings)",
            )
        )
    for layer in layers:
        layer.credential = store.credential
        layer.options = options
    if item.category is not None:
        for layer in layers:
            layer.category = item.category
    if item.name is not None and layers:
        # A Neuroglancer layer names what it shows; extra layers (labels) keep a suffix.
        first = layers[0].name
        for layer in layers:
            layer.name = item.name if layer.name == first else f"{item.name}-{layer.name}"
    return layers, steps


async def _explore_at(
    store: _ExploreStore,
    explorers: Sequence[tuple[str, Explorer]],
    steps: list[ExploreStep],
    depth: int,
) -> list[Layer]:
    await store.prefetch(PROBE_KEYS)
    unreachable = False
    for fmt, explorer in explorers:
        try:
            found = await explorer(store)
        except HostUnreachableError as err:
            # Every other format would fail alike: say so once, and do not descend.
            message = f"the host did not answer, so no format was tried: {err}"
            steps.append(ExploreStep(store.url, "host", "failed", message))
            return []
        except WkJupyterError as err:
            steps.append(ExploreStep(store.url, fmt, "failed", str(err)))
            unreachable = unreachable or not isinstance(err, MetadataError | UnsupportedFormatError)
            continue
        except Exception as err:  # a reader bug must not hide the other formats
            steps.append(ExploreStep(store.url, fmt, "failed", f"{type(err).__name__}: {err}"))
            continue
        if found is None:
            steps.append(ExploreStep(store.url, fmt, "no match"))
            continue
        names = ", ".join(layer.name for layer in found)
        steps.append(ExploreStep(store.url, fmt, "ok", f"{len(found)} layer(s): {names}"))
        return found
    if unreachable or depth >= MAX_DEPTH:
        return []
    return await _descend(store, explorers, steps, depth)


async def _descend(
    store: _ExploreStore,
    explorers: Sequence[tuple[str, Explorer]],
    steps: list[ExploreStep],
    depth: int,
) -> list[Layer]:
    try:
        entries = await store.list_dir()
    except WkJupyterError as err:
        steps.append(ExploreStep(store.url, "listing", "failed", str(err)))
        return []
    children = [e.rstrip("/") for e in entries if e.endswith("/") and not e.startswith(".")]
    if not children:
        return []
    if len(children) > MAX_CHILDREN:
        steps.append(
            ExploreStep(
                store.url,
                "listing",
                "no match",
                f"{len(children)} sub-folders; exploring the first {MAX_CHILDREN} only: "
                "point the URL at the dataset itself",
            )
        )
        children = sorted(children)[:MAX_CHILDREN]
    child_steps: list[list[ExploreStep]] = [[] for _ in children]
    found = await asyncio.gather(
        *(
            _explore_at(store.child(c), explorers, s, depth + 1)  # type: ignore[arg-type]
            for c, s in zip(children, child_steps, strict=True)
        )
    )
    for s in child_steps:
        steps += s
    return [layer for layers in found for layer in layers]


def _dataset_name(url: str) -> str:
    last = url.rstrip("/").rsplit("/", 1)[-1] or "dataset"
    for suffix in (".ome.zarr", ".zarr", ".n5", ".ome"):
        if last.lower().endswith(suffix):
            last = last[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-") or "dataset"


def merge_layers(name: str, layers: list[Layer], steps: list[ExploreStep]) -> DataSource:
    """Merge layers into one data source with unique names, sharing voxel sizes where exact.

    Layers whose voxel sizes are all integer multiples of a common one (the finest along
    each axis, in the smallest unit present) share it: each becomes mags of it, e.g. a layer
    at twice the size starts at mag 2. A layer that fits no such group keeps a voxel size of
    its own (a 6 x 6 x 35 nm image beside an 8 x 8 x 40 nm segmentation), as Neuroglancer
    and OME-NGFF allow, and a step says so. The data source's voxel size is that of the
    first layer's group.
    """
    unit = min((layer.voxel_size.unit for layer in layers), key=LENGTH_UNITS.__getitem__)
    sizes = [layer.voxel_size.to_unit(unit) for layer in layers]
    bases = _common_voxel_sizes(sizes)
    merged: dict[str, Layer] = {}
    for layer, size, base in zip(layers, sizes, bases, strict=True):
        factor = Vec3.of(
            _integer_ratio(a, b) or 1 for a, b in zip(size.as_tuple(), base.as_tuple(), strict=True)
        )
        rescaled = _rescale(layer, factor, base) if factor != Vec3(1, 1, 1) else layer
        rescaled.voxel_size = base
        rescaled.name = _unique(rescaled.name, merged)
        merged[rescaled.name] = rescaled
        if base != bases[0]:
            as_mags = f" (as mag {next(iter(rescaled.mags))})" if factor != Vec3(1, 1, 1) else ""
            steps.append(
                ExploreStep(
                    layer.mags[next(iter(layer.mags))].path,
                    "merge",
                    "ok",
                    f"layer {rescaled.name!r} keeps its own voxel size, {base}{as_mags}: it is "
                    f"not an integer multiple of the dataset's, {bases[0]}. It is served "
                    "at its own scale; webKnossos places it by a coordinate transformation",
                )
            )
    return DataSource(name, bases[0], merged)


def _common_voxel_sizes(sizes: list[VoxelSize]) -> list[VoxelSize]:
    """For each size, the common voxel size of its group: groups of sizes that are all
    integer multiples of their finest size along each axis, as few groups as found."""
    groups: list[list[int]] = []
    for i in range(len(sizes)):
        for group in groups:
            if _common([sizes[j] for j in (*group, i)]) is not None:
                group.append(i)
                break
        else:
            groups.append([i])
    joined = True
    while joined:  # joining a finer size may have made two groups compatible (12, 8 | 4)
        joined = False
        for a, b in itertools.combinations(range(len(groups)), 2):
            if _common([sizes[j] for j in (*groups[a], *groups[b])]) is not None:
                groups[a] += groups.pop(b)
                joined = True
                break
    bases: dict[int, VoxelSize] = {}
    for group in groups:
        common = _common([sizes[j] for j in group])
        assert common is not None  # every group was checked
        bases.update(dict.fromkeys(group, common))
    return [bases[i] for i in range(len(sizes))]


def _common(sizes: Sequence[VoxelSize]) -> VoxelSize | None:
    """The finest size along each axis, if every size is an integer multiple of it."""
    common = VoxelSize.of((min(s.as_tuple()[i] for s in sizes) for i in range(3)), sizes[0].unit)
    for size in sizes:
        pairs = zip(size.as_tuple(), common.as_tuple(), strict=True)
        if any(_integer_ratio(a, b) is None for a, b in pairs):
            return None
    return common


def _integer_ratio(a: float, b: float) -> int | None:
    ratio = Fraction(a / b).limit_denominator(1000)
    if ratio.denominator != 1 or not math.isclose(float(ratio), a / b, rel_tol=1e-6):
        return None
    return int(ratio)


def _rescale(layer: Layer, factor: Vec3, voxel_size: VoxelSize) -> Layer:
    mags = {}
    for level in layer.mags.values():
        mag = Mag(level.mag.vec * factor)
        mags[mag] = replace(level, mag=mag)
    bbox = BoundingBox(layer.bbox.offset * factor, layer.bbox.shape * factor)
    return replace(layer, mags=mags, bbox=bbox, voxel_size=voxel_size, _arrays={})


def _unique(name: str, taken: dict[str, Any]) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"
