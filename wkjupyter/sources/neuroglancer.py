"""Neuroglancer links: the layers and data sources in a ``#!`` state URL.

Pure functions, no I/O. A Neuroglancer URL is ``https://host/#!`` followed by the
percent-encoded JSON state (formats.md §4; neuroglancer ``src/ui/url_hash_binding.ts``).
:func:`parse_neuroglancer_url` returns the volume layers it names, each with its sources
split by :func:`split_source` into a storage URL and a format hint. Unlike webKnossos
(webknossos.md §2 "Neuroglancer URIs") it honours the layer ``type``, object and list
sources, and the ``|zarr3:``-style pipeline syntax.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import quote, unquote

from wkjupyter.errors import MetadataError, UnsupportedFormatError

if TYPE_CHECKING:
    from wkjupyter.datasource import DataSource

__all__ = [
    "NEUROGLANCER_DEMO",
    "FormatHint",
    "NeuroglancerLayer",
    "SourceSpec",
    "is_neuroglancer_url",
    "neuroglancer_state_url",
    "parse_neuroglancer_url",
    "split_source",
]

#: The public Neuroglancer client that links open in (it reads anonymously, over CORS).
NEUROGLANCER_DEMO = "https://neuroglancer-demo.appspot.com"

FormatHint = Literal["zarr", "zarr2", "zarr3", "n5", "precomputed"]
Category = Literal["color", "segmentation"]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One data source of a Neuroglancer layer.

    Attributes
    ----------
    url
        The storage URL with every format prefix and pipeline stage removed, e.g.
        ``"gs://b/p/"`` or ``"https://h/x.zarr"``; ``s3+https://`` is already rewritten.
    format
        The format Neuroglancer was told to use, or ``None`` to auto-detect.
    subpath
        The path after a pipeline driver (``|zarr2:sub/path``), relative to `url`; the
        caller joins it.
    """

    url: str
    format: FormatHint | None
    subpath: str = ""


@dataclass(frozen=True, slots=True)
class NeuroglancerLayer:
    """A volume layer of a Neuroglancer state.

    Attributes
    ----------
    name
        The layer name, exactly as in the state.
    category
        ``"color"`` for an ``image`` layer, ``"segmentation"`` for a ``segmentation``
        layer, ``None`` when the state omits the type (Neuroglancer then auto-detects).
    sources
        The usable sources of the layer, in state order; never empty.
    """

    name: str
    category: Category | None
    sources: tuple[SourceSpec, ...]


# Legacy datasource prefixes, "precomputed://gs://b/p" (formats.md §4 "Sources").
_LEGACY_FORMATS: Final[dict[str, FormatHint]] = {
    "precomputed": "precomputed",
    "zarr": "zarr",
    "zarr2": "zarr2",
    "zarr3": "zarr3",
    "n5": "n5",
}
# Pipeline drivers, "gs://b/p/|zarr2:sub" (neuroglancer src/datasource/zarr/index.rst).
_PIPELINE_FORMATS: Final[dict[str, FormatHint]] = {
    "zarr": "zarr",
    "zarr2": "zarr2",
    "zarr3": "zarr3",
    "n5": "n5",
    "neuroglancer-precomputed": "precomputed",
}
_KVSTORE_SCHEMES: Final = frozenset({"http", "https", "gs", "s3", "file"})
# S3-compatible servers reached by plain HTTP(S) GETs (neuroglancer src/kvstore/s3/register.ts
# maps "s3+https://host/path" to the endpoint "https://host/"), and Google Cloud Storage
# through its XML API, which serves the same objects as gs://.
_KVSTORE_REWRITES: Final = {"s3+https": "https", "s3+http": "http", "gs+xml": "gs"}
_SUPPORTED: Final = (
    "wkjupyter reads the legacy prefixes precomputed://, zarr://, zarr2://, zarr3://, n5://; "
    "the pipeline drivers |zarr:, |zarr2:, |zarr3:, |n5:, |neuroglancer-precomputed:; and "
    "storage at http(s)://, gs://, s3://, s3+http(s)://, file:// or a local path"
)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://")
_DRIVER = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):(.*)", re.DOTALL)
# "#dimension_separator=/" after a zarr v2 driver (neuroglancer src/datasource/zarr/index.rst).
_DIMENSION_SEPARATOR = re.compile(r"#dimension_separator=[./]\Z")


def split_source(source: str) -> SourceSpec:
    """Split a Neuroglancer data source string into a storage URL and a format hint.

    Parameters
    ----------
    source
        A layer source as written in a Neuroglancer state: a legacy form
        (``"precomputed://gs://b/p"``, ``"zarr3://https://h/p"``), a pipeline form
        (``"gs://b/p/|zarr2:"``, ``"s3://b/p|zarr3:sub/path"``) or a bare storage URL.

    Returns
    -------
    SourceSpec
        The storage URL, the format (``None`` when the source does not name one) and the
        pipeline subpath. ``s3+https://host/bucket/key`` becomes ``https://host/bucket/key``
        (an S3-compatible endpoint read path-style by plain HTTPS GETs), ``s3+http://``
        likewise ``http://``; a ``#dimension_separator=`` fragment on a zarr driver is
        dropped. Applying the function to the returned `url` gives it back unchanged.

    Raises
    ------
    UnsupportedFormatError
        For a datasource, kvstore or pipeline driver wkjupyter cannot read (``python://``,
        ``graphene://``, ``|zip:``, ``|ocdbt:`` ...).
    MetadataError
        For a malformed source: empty, no storage URL, or two disagreeing formats.
    """
    text = source.strip()
    if not text:
        msg = "The Neuroglancer layer source is empty; give a URL such as 'gs://bucket/path/'."
        raise MetadataError(msg)
    legacy: FormatHint | None = None
    match = _SCHEME.match(text)
    if match is not None and match.group(1).lower() in _LEGACY_FORMATS:
        legacy = _LEGACY_FORMATS[match.group(1).lower()]
        text = text[match.end() :]
        if not text:
            msg = f"The Neuroglancer source {source!r} names a format but no storage URL."
            raise MetadataError(msg)
        if "|" not in text:
            text = _drop_dimension_separator(text, legacy, source)
    spec = _split_pipeline(text, source)
    if legacy is None:
        return spec
    if spec.format not in (None, legacy):
        msg = (
            f"The Neuroglancer source {source!r} names two formats, {legacy!r} and "
            f"{spec.format!r}; keep one of them."
        )
        raise MetadataError(msg)
    return SourceSpec(spec.url, legacy, spec.subpath)


def _split_pipeline(text: str, source: str) -> SourceSpec:
    # "kvstore-url|driver:subpath" (neuroglancer src/kvstore/url.ts splitPipelineUrl).
    kvstore, *stages = text.split("|")
    if not kvstore.strip():
        msg = f"The Neuroglancer source {source!r} has no storage URL before '|'."
        raise MetadataError(msg)
    url = _kvstore_url(kvstore.strip(), source)
    if not stages:
        return SourceSpec(url, None)
    matches = [_DRIVER.fullmatch(stage.strip()) for stage in stages]
    for stage, found in zip(stages, matches, strict=True):
        if found is None:
            msg = f"The Neuroglancer source {source!r} has the stage {stage!r}, not 'driver:'."
            raise UnsupportedFormatError(f"{msg} {_SUPPORTED}.")
        if found.group(1).lower() not in _PIPELINE_FORMATS:  # zip:, ocdbt:, gzip: ...
            msg = f"The Neuroglancer source {source!r} uses the driver '|{found.group(1)}:'."
            raise UnsupportedFormatError(f"{msg} {_SUPPORTED}.")
    match = matches[-1]
    if len(stages) > 1 or match is None:
        msg = f"The Neuroglancer source {source!r} chains {len(stages)} format drivers."
        raise UnsupportedFormatError(f"{msg} {_SUPPORTED}.")
    driver = match.group(1).lower()
    hint = _PIPELINE_FORMATS[driver]
    return SourceSpec(url, hint, _drop_dimension_separator(match.group(2), hint, source))


def _drop_dimension_separator(text: str, hint: FormatHint, source: str) -> str:
    # Neuroglancer needs "#dimension_separator=/" for zarr v2 arrays whose metadata does not
    # declare their "/" keys. SourceSpec does not carry it: the zarr reader detects the keys.
    stripped = _DIMENSION_SEPARATOR.sub("", text)
    if stripped != text and hint not in ("zarr", "zarr2"):
        msg = f"The Neuroglancer source {source!r}: dimension_separator applies to zarr v2 only."
        raise MetadataError(msg)
    return stripped


def _kvstore_url(url: str, source: str) -> str:
    match = _SCHEME.match(url)
    if match is None:
        return url  # a local path
    scheme = match.group(1).lower()
    if scheme in _KVSTORE_SCHEMES:
        return url
    if scheme in _KVSTORE_REWRITES:
        return f"{_KVSTORE_REWRITES[scheme]}://{url[match.end() :]}"
    msg = f"The Neuroglancer source {source!r} uses '{scheme}://'. {_SUPPORTED}."
    raise UnsupportedFormatError(msg)


# Neuroglancer loads "#!gs://b/state.json" from storage (src/ui/url_hash_binding.ts).
_REMOTE_STATE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_neuroglancer_url(url: str) -> bool:
    """Tell cheaply whether `url` is a Neuroglancer link with a ``#!`` state.

    Parameters
    ----------
    url
        Any string.

    Returns
    -------
    bool
        ``True`` for ``http(s)://<any host>/...#!`` followed by a JSON state (plain,
        percent-encoded once or twice, incremental ``+{...}``) or by a remote state URL
        (``#!gs://b/state.json``, which :func:`parse_neuroglancer_url` then rejects with
        advice). Only the first few characters of the state are looked at.
    """
    text = url.lstrip()
    if not text[:8].lower().startswith(("http://", "https://")):
        return False
    start = text.find("#!")
    if start < 0:
        return False
    head = text[start + 2 : start + 34]
    for _ in range(3):  # raw, decoded once, decoded twice
        body = head.lstrip().removeprefix("+")
        if body.startswith("{") or _REMOTE_STATE.match(body):
            return True
        head = unquote(head)
    return False


def parse_neuroglancer_url(url: str) -> tuple[list[NeuroglancerLayer], list[str]]:
    """Read the volume layers of a Neuroglancer link.

    Parameters
    ----------
    url
        A link such as ``https://neuroglancer-demo.appspot.com/#!%7B%22layers%22:...``.
        Everything after the first ``#!`` is the state, so a raw ``#`` inside it (a shader's
        ``#uicontrol``) is kept. The state may be percent-encoded once or twice, plain,
        incremental (``#!+{...}``) or in Neuroglancer's url-safe form (``_`` for ``,``
        and single-quoted strings).

    Returns
    -------
    layers : list of NeuroglancerLayer
        The ``image``, ``segmentation`` and untyped layers with at least one usable
        source, in state order.
    notes : list of str
        One sentence per thing left out: layers of other types (annotation, mesh ...),
        local annotations, sources wkjupyter cannot read, ignored transforms.

    Raises
    ------
    MetadataError
        When the URL has no ``#!`` state or the state is not a JSON object.
    UnsupportedFormatError
        When the link loads its state from a remote file (``#!gs://b/state.json``).
    """
    text = url.strip()
    start = text.find("#!")
    if start < 0:
        msg = (
            f"{_shorten(text)!r} holds no Neuroglancer state (nothing after '#!'); "
            "copy the URL again from Neuroglancer's address bar."
        )
        raise MetadataError(msg)
    state_text, incremental = _decode_fragment(text[start + 2 :])
    state = _load_state(state_text)
    notes: list[str] = []
    if incremental:
        notes.append("the link is an incremental '#!+' state; only the layers it names are read")
    layers = state.get("layers")
    if not layers:
        notes.append("the Neuroglancer state has no layers")
        return [], notes
    if isinstance(layers, dict):  # legacy {name: spec | source}
        entries = [
            (name, spec if isinstance(spec, dict) else {"source": spec})
            for name, spec in layers.items()
        ]
    elif isinstance(layers, list):
        entries = [(spec.get("name") if isinstance(spec, dict) else None, spec) for spec in layers]
    else:
        msg = (
            f"The Neuroglancer state's 'layers' is a {type(layers).__name__}, expected a list; "
            "copy the URL again from Neuroglancer's address bar."
        )
        raise MetadataError(msg)
    result: list[NeuroglancerLayer] = []
    for index, (name, spec) in enumerate(entries):
        if not isinstance(name, str) or not isinstance(spec, dict):
            notes.append(f"layer #{index} has no name; skipped")
        elif layer := _read_layer(name, spec, notes):
            result.append(layer)
    return result, notes


def _decode_fragment(fragment: str) -> tuple[str, bool]:
    # Neuroglancer decodes once (decodeURIComponent); links pasted through other tools are
    # sometimes encoded twice, which shows as "%257B" after "#!".
    if _REMOTE_STATE.match(fragment) or _REMOTE_STATE.match(unquote(fragment)):
        msg = (
            f"The Neuroglancer link loads its state from {unquote(fragment)!r}; download that "
            "JSON file and use the link Neuroglancer shows after loading it, or pass the state."
        )
        raise UnsupportedFormatError(msg)
    text = unquote(fragment).strip()
    incremental = text.startswith("+")
    text = text.removeprefix("+")
    if not text.startswith("{"):
        again = unquote(text).strip()
        if again.removeprefix("+").startswith("{"):
            incremental = incremental or again.startswith("+")
            text = again.removeprefix("+")
    return text, incremental


# A JSON string in either quote style, and the url-safe comma "_" (or "&") outside strings
# (neuroglancer src/util/json.ts urlSafeToJSON).
_URL_SAFE_TOKEN = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[_&]""", re.DOTALL)
_SINGLE_QUOTED_PART = re.compile(r"""\\(.)|(")""", re.DOTALL)


def _url_safe_to_json(text: str) -> str:
    def token(match: re.Match[str]) -> str:
        value = match.group()
        if value[0] == '"':
            return value
        if value[0] == "'":
            return '"' + _SINGLE_QUOTED_PART.sub(_requote, value[1:-1]) + '"'
        return ","

    return _URL_SAFE_TOKEN.sub(token, text)


def _requote(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped is None:
        return '\\"'  # a bare " inside a single-quoted string
    return "'" if escaped == "'" else "\\" + escaped


def _load_state(text: str) -> dict[str, object]:
    converted = _url_safe_to_json(text)
    try:
        state = json.loads(converted)
    except json.JSONDecodeError as err:
        before, after = converted[max(err.pos - 30, 0) : err.pos], converted[err.pos :][:30]
        msg = (
            f"The Neuroglancer state is not valid JSON: {err.msg} at character {err.pos} "
            f"(…{before}>>>{after}…); copy the URL again from Neuroglancer's address bar, "
            "it may have been cut short or altered."
        )
        raise MetadataError(msg) from err
    if not isinstance(state, dict):
        msg = (
            f"The Neuroglancer state is a JSON {type(state).__name__}, expected an object; "
            "copy the URL again from Neuroglancer's address bar."
        )
        raise MetadataError(msg)
    return state


_CATEGORIES: Final[dict[str | None, Category | None]] = {
    "image": "color",
    "segmentation": "segmentation",
    None: None,  # no type: Neuroglancer auto-detects (formats.md §4)
}


def _read_layer(name: str, spec: dict[str, object], notes: list[str]) -> NeuroglancerLayer | None:
    kind = spec.get("type")
    if not (kind is None or isinstance(kind, str)) or kind not in _CATEGORIES:
        notes.append(f"layer {name!r} of type {kind!r} has no volume to import; skipped")
        return None
    raw = spec.get("source")
    if raw is None or raw in ("", []):
        notes.append(f"layer {name!r} has no source; skipped")
        return None
    if "transform" in spec:  # legacy layer-level transform
        notes.append(f"the coordinate transform of layer {name!r} is not imported")
    sources: list[SourceSpec] = []
    for item in raw if isinstance(raw, list) else [raw]:
        source = _read_source(name, item, notes)
        if source is not None:
            sources.append(source)
    if not sources:
        notes.append(f"layer {name!r} has no source wkjupyter can read; skipped")
        return None
    return NeuroglancerLayer(name, _CATEGORIES[kind], tuple(sources))


def _read_source(name: str, item: object, notes: list[str]) -> SourceSpec | None:
    # A source is "url" or {url, transform?, subsources?, enableDefaultSubsources?}
    # (neuroglancer src/layer/layer_data_source.ts).
    url = item.get("url") if isinstance(item, dict) else item
    if not isinstance(url, str):
        notes.append(f"a source of layer {name!r} has no URL; skipped")
        return None
    if url.strip().lower().startswith("local://"):
        notes.append(f"source {url!r} of layer {name!r} is local to Neuroglancer; skipped")
        return None
    if isinstance(item, dict) and item.get("transform") is not None:
        notes.append(f"the coordinate transform of source {url!r} (layer {name!r}) is not imported")
    try:
        return split_source(url)
    except (UnsupportedFormatError, MetadataError) as err:
        notes.append(f"layer {name!r}: {err}")
        return None


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- building ------------------------------------------------------------------------------

# Neuroglancer's python client percent-encodes the state with these left as they are
# (neuroglancer python/neuroglancer/url_state.py SAFE_URL_CHARS).
_NEUROGLANCER_SAFE: Final = "~@#$&()*!+=:;,.?/'"
_NEUROGLANCER_TYPES: Final = {"color": "image", "segmentation": "segmentation"}


def neuroglancer_state_url(host: str, datasource: DataSource, names: list[str], tree: str) -> str:
    """A Neuroglancer state URL showing layers ``names`` of ``datasource`` as served in the
    Zarr v2 tree at ``tree`` (a URL ending in "/"); the inverse of
    :func:`parse_neuroglancer_url` for served datasets.

    One layer per name (``zarr2://<tree><layer>/``); x, y, z in meters from the dataset's
    voxel size; the view centred on the bounding box of the layers shown. Each layer's NGFF
    scale places it, so a layer with its own voxel size is shown at its true physical size;
    its box counts in physical units too. Four panels.
    """
    if not names:
        msg = "choose at least one layer to show, or None for all"
        raise ValueError(msg)
    shown = [datasource.layers[name] for name in names]
    size = datasource.voxel_size.to_unit("meter")
    low, high = [math.inf] * 3, [-math.inf] * 3
    for layer in shown:
        # The layer's box in the dataset's voxels (ratio 1 for the dataset's voxel size).
        own = layer.voxel_size.to_unit("meter").to_xyz()
        ends = zip(layer.bbox.offset.to_xyz(), layer.bbox.end.to_xyz(), strict=True)
        for i, ((start, end), v, d) in enumerate(zip(ends, own, size.to_xyz(), strict=True)):
            low[i], high[i] = min(low[i], start * (v / d)), max(high[i], end * (v / d))
    centre = [(lo + hi) / 2 for lo, hi in zip(low, high, strict=True)]
    state = {
        "dimensions": {axis: [v, "m"] for axis, v in zip("xyz", size.to_xyz(), strict=True)},
        "position": centre,
        "layers": [
            {
                "type": _NEUROGLANCER_TYPES[layer.category],
                "source": f"zarr2://{tree}{quote(layer.name, safe='')}/",
                "name": layer.name,
            }
            for layer in shown
        ],
        "layout": "4panel",
    }
    text = json.dumps(state, separators=(",", ":"))
    return f"{host.rstrip('/')}/#!{quote(text, safe=_NEUROGLANCER_SAFE)}"
