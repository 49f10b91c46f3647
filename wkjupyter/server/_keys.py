"""Parse and validate the data-route paths of the Zarr trees (docs/architecture.md §6).

The path is the part after ``{base_url}wkjupyter/``, already percent-decoded once by the
caller and without the query string::

    zarr/<dataset>/...             Zarr v2 + NGFF 0.4
    zarr3/<dataset>/...            Zarr v3 + NGFF 0.5
    links/<token>/zarr/...         what a link grants (a dataset or an annotation root)
    links/<token>/zarr3/...

Below the root::

    ""  .zgroup  .zattrs  .zmetadata  zarr.json  datasource-properties.json
    <layer>/  + the same metadata names
    <layer>/<mag>/  + .zarray .zattrs (v2) | zarr.json (v3)
    <layer>/<mag>/<i>/<j>/...      v2 chunk, dimension_separator "/"
    <layer>/<mag>/c/<i>/<j>/...    v3 chunk, default chunk key encoding

A path naming a directory (the root, a layer or a mag) is a listing, with or without the
trailing "/". Everything else is rejected with :class:`~wkjupyter.errors.InvalidKeyError`
before any I/O: traversal, encoded leftovers, bad names, bad indices, unknown metadata names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NoReturn

from wkjupyter.errors import InvalidKeyError

__all__ = [
    "ARRAY_METADATA",
    "GROUP_METADATA",
    "MAX_CHUNK_DIMS",
    "MIN_CHUNK_DIMS",
    "AbsentKeyError",
    "DataPath",
    "chunk_in_grid",
    "parse_data_path",
]

Tree = Literal["zarr", "zarr3"]

#: Metadata names served at the dataset (or link) root and at every layer group.
GROUP_METADATA = frozenset(
    {".zgroup", ".zattrs", ".zmetadata", "zarr.json", "datasource-properties.json"}
)
#: Metadata names served at a mag (an array), per tree.
ARRAY_METADATA: dict[Tree, frozenset[str]] = {
    "zarr": frozenset({".zarray", ".zattrs"}),
    "zarr3": frozenset({"zarr.json"}),
}
#: Chunk keys carry one index per array dimension: c, z, y, x plus leading extra axes.
MIN_CHUNK_DIMS = 4
MAX_CHUNK_DIMS = 32
_MAX_PATH = 4096

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Explicit [0-9]: \d would also accept non-ASCII digits such as "١".
_MAG = re.compile(r"[1-9][0-9]{0,5}(?:-[1-9][0-9]{0,5}-[1-9][0-9]{0,5})?")
_INDEX = re.compile(r"0|[1-9][0-9]{0,11}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_NAME_RULE = "1-255 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
_TOKEN_RULE = "16-128 characters of A-Z a-z 0-9 _ -"
_MAG_RULE = "a positive integer like '1' or three joined by '-' like '2-2-1', no leading zeros"
_INDEX_RULE = "a non-negative decimal integer without sign or leading zeros, at most 12 digits"


class AbsentKeyError(InvalidKeyError):
    """The path is well-formed but names nothing that can exist (a metadata name the level
    does not have, a malformed link token): the server answers 404, as for any absent key,
    because clients probe such names (zarr-python asks for ``zarr.json`` before ``.zgroup``).
    """


@dataclass(frozen=True, slots=True)
class DataPath:
    """A validated data-route path.

    Attributes
    ----------
    tree
        ``"zarr"`` (v2 + NGFF 0.4) or ``"zarr3"`` (v3 + NGFF 0.5).
    token
        The link token for ``links/<token>/...`` paths, else None.
    dataset
        The dataset name; None under ``links/`` (the link decides).
    layer, mag
        The layer and mag names, or None above that level.
    leaf
        A metadata name (``.zattrs``, ``zarr.json`` ...), or None for a listing or a chunk.
    chunk
        The chunk grid index (c, z, y, x plus leading axes), or None.
    """

    tree: Tree
    token: str | None
    dataset: str | None
    layer: str | None
    mag: str | None
    leaf: str | None
    chunk: tuple[int, ...] | None

    @property
    def listing(self) -> bool:
        """True if the path names a directory (root, layer or mag)."""
        return self.leaf is None and self.chunk is None


def parse_data_path(path: str) -> DataPath:
    """Parse and validate a data-route path.

    Parameters
    ----------
    path
        The percent-decoded path after ``{base_url}wkjupyter/``, without the query string.

    Returns
    -------
    DataPath
        What the path addresses.

    Raises
    ------
    InvalidKeyError
        If the path is malformed, tries to leave its root or names something that cannot exist
        in the tree. The message says what is wrong and what is allowed; a link token in the
        path is redacted.
    """
    _check_characters(path)
    trailing = path.endswith("/")
    segments = path[:-1].split("/") if trailing else path.split("/")
    for seg in segments:
        if seg in {".", ".."}:
            _fail(path, f"{seg!r} segments are not allowed")
        if not seg:
            _fail(path, "empty segment ('//'); separate names with a single '/'")

    head, rest = segments[0], segments[1:]
    token: str | None = None
    dataset: str | None = None
    if head == "links":
        if not rest:
            _fail(path, "expected links/<token>/zarr/... or links/<token>/zarr3/...")
        token, rest = rest[0], rest[1:]
        if not _TOKEN.fullmatch(token):
            _fail(path, f"invalid link token: a token is {_TOKEN_RULE}", AbsentKeyError)
        if not rest or rest[0] not in {"zarr", "zarr3"}:
            _fail(path, "expected 'zarr' or 'zarr3' after links/<token>/")
        tree: Tree = "zarr" if rest[0] == "zarr" else "zarr3"
        rest = rest[1:]
    elif head in {"zarr", "zarr3"}:
        tree = "zarr" if head == "zarr" else "zarr3"
        if not rest:
            _fail(path, f"a dataset name is required after '{head}/'")
        dataset, rest = rest[0], rest[1:]
        if not _NAME.fullmatch(dataset):
            _fail(path, f"invalid dataset name {dataset!r}: a name is {_NAME_RULE}")
    else:
        _fail(path, "a data path starts with 'zarr/', 'zarr3/' or 'links/<token>/'")
    return _parse_below_root(path, tree, token, dataset, rest, trailing)


def chunk_in_grid(index: tuple[int, ...], grid: tuple[int, ...]) -> bool:
    """Whether ``index`` is a chunk of an array whose chunk grid has shape ``grid``.

    Parameters
    ----------
    index
        The chunk index, as :attr:`DataPath.chunk`.
    grid
        The number of chunks along each dimension.

    Returns
    -------
    bool
        True if both have the same length and ``0 <= i < g`` holds for every dimension.
    """
    return len(index) == len(grid) and all(0 <= i < g for i, g in zip(index, grid, strict=True))


def _parse_below_root(
    path: str, tree: Tree, token: str | None, dataset: str | None, rest: list[str], trailing: bool
) -> DataPath:
    def result(
        layer: str | None = None,
        mag: str | None = None,
        leaf: str | None = None,
        chunk: tuple[int, ...] | None = None,
    ) -> DataPath:
        return DataPath(tree, token, dataset, layer, mag, leaf, chunk)

    if not rest:
        return result()
    # The root and each layer are groups: a metadata name or a child.
    if rest[0] in GROUP_METADATA:
        return result(leaf=_leaf(path, rest, 0, trailing))
    layer = rest[0]
    if not _NAME.fullmatch(layer):
        if layer.startswith("."):
            _unknown_metadata(path, layer, "dataset root", GROUP_METADATA, "a layer name")
        _fail(path, f"invalid layer name {layer!r}: a name is {_NAME_RULE}")
    if len(rest) == 1:
        return result(layer)
    if rest[1] in GROUP_METADATA:
        return result(layer, leaf=_leaf(path, rest, 1, trailing))
    mag = rest[1]
    if not _MAG.fullmatch(mag):
        if mag.startswith(".") or mag.endswith(".json"):
            _unknown_metadata(path, mag, "layer", GROUP_METADATA, "a mag")
        # NGFF readers probe an image's optional ``labels/`` group (ome-zarr-py's Reader):
        # a well-formed name that is no mag names nothing that exists (404), not a bad key.
        absent = AbsentKeyError if _NAME.fullmatch(mag) else InvalidKeyError
        _fail(path, f"invalid mag {mag!r}: a mag is {_MAG_RULE}", absent)
    if len(rest) == 2:
        return result(layer, mag)
    # A mag is an array: a metadata name or a chunk key.
    keys = rest[2:]
    if keys[0] in ARRAY_METADATA[tree]:
        return result(layer, mag, leaf=_leaf(path, rest, 2, trailing))
    if tree == "zarr3":
        if keys[0] != "c":
            if not _INDEX.fullmatch(keys[0]):
                _unknown_metadata(
                    path, keys[0], "array", ARRAY_METADATA[tree], "a chunk key c/i/j/..."
                )
            _fail(path, "Zarr v3 chunk keys start with 'c/' (default chunk key encoding)")
        keys = keys[1:]
    elif keys[0] == "c":
        _fail(path, "Zarr v2 chunk keys have no 'c/' prefix (dimension_separator '/')")
    elif not _INDEX.fullmatch(keys[0]):
        _unknown_metadata(path, keys[0], "array", ARRAY_METADATA[tree], "a chunk key i/j/...")
    if trailing:
        _fail(path, "a chunk key is a file, not a directory; drop the trailing '/'")
    if not MIN_CHUNK_DIMS <= len(keys) <= MAX_CHUNK_DIMS:
        _fail(
            path,
            f"a chunk key has one index per array dimension, between {MIN_CHUNK_DIMS} "
            f"(c, z, y, x) and {MAX_CHUNK_DIMS}; got {len(keys)}",
        )
    for key in keys:
        if not _INDEX.fullmatch(key):
            _fail(path, f"invalid chunk index {key!r}: an index is {_INDEX_RULE}")
    return result(layer, mag, chunk=tuple(int(key) for key in keys))


def _leaf(path: str, rest: list[str], at: int, trailing: bool) -> str:
    if at != len(rest) - 1 or trailing:
        # Nothing lies below a file: absent (404), as zarr-python probes every listed name
        # (``datasource-properties.json/.zarray``) when it walks an unconsolidated group.
        _fail(path, f"{rest[at]!r} is a metadata file, not a directory", AbsentKeyError)
    return rest[at]


def _check_characters(path: str) -> None:
    if not path:
        _fail(path, "the path is empty; it starts with 'zarr/', 'zarr3/' or 'links/<token>/'")
    if len(path) > _MAX_PATH:
        _fail(path[:64] + "...", f"the path is longer than {_MAX_PATH} characters")
    if _CONTROL.search(path):
        _fail(path, "control characters (NUL, newline ...) are not allowed")
    if "\\" in path:
        _fail(path, "backslashes are not allowed; separate names with '/'")
    if "%" in path:
        # The caller decodes once; a '%' left over is double encoding (e.g. %2F, %2E%2E).
        _fail(path, "percent-encoded leftovers ('%') are not allowed; decode the path once")
    if path.startswith("/"):
        _fail(path, "absolute paths are not allowed; the path is relative to wkjupyter/")


def _unknown_metadata(
    path: str, name: str, level: str, allowed: frozenset[str], other: str
) -> NoReturn:
    names = ", ".join(sorted(allowed))
    reason = f"unknown metadata name {name!r} at the {level} level; allowed: {names} or {other}"
    _fail(path, reason, AbsentKeyError)


def _fail(path: str, reason: str, error: type[InvalidKeyError] = InvalidKeyError) -> NoReturn:
    msg = f"invalid data path {_redact(path)!r}: {reason}"
    raise error(msg)


def _redact(path: str) -> str:
    # A link token is a credential: keep it out of messages that may reach logs.
    if path.startswith("links/"):
        parts = path.split("/", 2)
        parts[1] = "<token>"
        return "/".join(parts)
    return path
