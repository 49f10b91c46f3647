from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wkjupyter.errors import InvalidKeyError
from wkjupyter.server._keys import (
    ARRAY_METADATA,
    GROUP_METADATA,
    DataPath,
    chunk_in_grid,
    parse_data_path,
)

TOKEN = "Abc_def-0123456789xyz"


def dp(
    tree: str = "zarr",
    *,
    token: str | None = None,
    dataset: str | None = "ds",
    layer: str | None = None,
    mag: str | None = None,
    leaf: str | None = None,
    chunk: tuple[int, ...] | None = None,
) -> DataPath:
    return DataPath(tree, token, dataset, layer, mag, leaf, chunk)  # type: ignore[arg-type]


# --- accepted forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("zarr/ds", dp()),
        ("zarr/ds/", dp()),
        ("zarr3/ds/", dp("zarr3")),
        ("zarr/ds/color", dp(layer="color")),
        ("zarr/ds/color/", dp(layer="color")),
        ("zarr/ds/color/1", dp(layer="color", mag="1")),
        ("zarr/ds/color/2-2-1/", dp(layer="color", mag="2-2-1")),
        ("zarr3/ds/color/16-16-8/", dp("zarr3", layer="color", mag="16-16-8")),
        ("zarr/ds/color/1/.zarray", dp(layer="color", mag="1", leaf=".zarray")),
        ("zarr/ds/color/1/.zattrs", dp(layer="color", mag="1", leaf=".zattrs")),
        ("zarr3/ds/color/1/zarr.json", dp("zarr3", layer="color", mag="1", leaf="zarr.json")),
        ("zarr/ds/color/1/0/0/0/0", dp(layer="color", mag="1", chunk=(0, 0, 0, 0))),
        ("zarr/ds/color/1/2/0/10/0/7", dp(layer="color", mag="1", chunk=(2, 0, 10, 0, 7))),
        (
            "zarr3/ds/color/2-2-1/c/0/3/4/999999999999",
            dp("zarr3", layer="color", mag="2-2-1", chunk=(0, 3, 4, 999999999999)),
        ),
        ("zarr/My.Data_set-1/a", dp(dataset="My.Data_set-1", layer="a")),
        ("zarr/" + "d" * 255, dp(dataset="d" * 255)),
        (f"links/{TOKEN}/zarr/", dp(token=TOKEN, dataset=None)),
        (f"links/{TOKEN}/zarr3", dp("zarr3", token=TOKEN, dataset=None)),
        (f"links/{TOKEN}/zarr/.zattrs", dp(token=TOKEN, dataset=None, leaf=".zattrs")),
        (
            f"links/{TOKEN}/zarr3/seg/1/c/0/0/0/0",
            dp("zarr3", token=TOKEN, dataset=None, layer="seg", mag="1", chunk=(0, 0, 0, 0)),
        ),
        (f"links/{'a' * 16}/zarr/", dp(token="a" * 16, dataset=None)),
        (f"links/{'a' * 128}/zarr/", dp(token="a" * 128, dataset=None)),
    ],
)
def test_accepted_forms(path: str, expected: DataPath) -> None:
    assert parse_data_path(path) == expected


@pytest.mark.parametrize("tree", ["zarr", "zarr3"])
@pytest.mark.parametrize("name", sorted(GROUP_METADATA))
def test_group_metadata_at_root_and_layer(tree: str, name: str) -> None:
    assert parse_data_path(f"{tree}/ds/{name}") == dp(tree, leaf=name)
    assert parse_data_path(f"{tree}/ds/color/{name}") == dp(tree, layer="color", leaf=name)
    linked = parse_data_path(f"links/{TOKEN}/{tree}/color/{name}")
    assert linked == dp(tree, token=TOKEN, dataset=None, layer="color", leaf=name)


def test_datapath_is_a_frozen_slotted_value() -> None:
    path = parse_data_path("zarr/ds/")
    assert not hasattr(path, "__dict__")
    with pytest.raises(AttributeError):
        path.dataset = "other"  # type: ignore[misc]
    assert hash(path) == hash(parse_data_path("zarr/ds"))


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "phrase"),
    [
        ("", "the path is empty"),
        ("zarr/" + "a" * 5000, "longer than 4096"),
        ("zarr/ds/../other/.zattrs", "'..' segments are not allowed"),
        ("zarr/ds/color/1/..", "'..' segments are not allowed"),
        ("..", "'..' segments are not allowed"),
        ("zarr/./ds", "'.' segments are not allowed"),
        ("zarr/ds/./", "'.' segments are not allowed"),
        ("zarr/ds//color", "empty segment"),
        ("zarr/ds/color//", "empty segment"),
        ("zarr//", "empty segment"),
        ("zarr/ds\\..\\x", "backslashes are not allowed"),
        ("zarr/ds\x00/.zattrs", "control characters"),
        ("zarr/ds/\n.zattrs", "control characters"),
        ("zarr/ds\x7f", "control characters"),
        ("zarr/ds\x85", "control characters"),
        ("zarr/ds%2F..%2Fother", "percent-encoded leftovers"),
        ("zarr/%2E%2E/x", "percent-encoded leftovers"),
        ("zarr/ds%252F", "percent-encoded leftovers"),
        ("/zarr/ds", "absolute paths are not allowed"),
        ("//etc/passwd", "absolute paths are not allowed"),
        ("files/ds", "starts with 'zarr/', 'zarr3/' or 'links/<token>/'"),
        ("api/datasets", "starts with 'zarr/', 'zarr3/' or 'links/<token>/'"),
        ("ZARR/ds", "starts with 'zarr/'"),
        ("zarr", "a dataset name is required after 'zarr/'"),
        ("zarr3/", "a dataset name is required after 'zarr3/'"),
        ("links", "expected links/<token>/zarr/"),
        (f"links/{TOKEN}", "expected 'zarr' or 'zarr3' after links/<token>/"),
        (f"links/{TOKEN}/n5/x", "expected 'zarr' or 'zarr3' after links/<token>/"),
        ("links/short/zarr/", "invalid link token"),
        (f"links/{'a' * 129}/zarr/", "invalid link token"),
        ("links/abcdefghijklmnop.q/zarr/", "invalid link token"),
        ("zarr/-ds/", "invalid dataset name '-ds'"),
        ("zarr/.hidden/", "invalid dataset name '.hidden'"),
        ("zarr/d s/", "invalid dataset name 'd s'"),
        ("zarr/dä/", "invalid dataset name"),
        ("zarr/" + "d" * 256, "invalid dataset name"),
        ("zarr/ds/_layer/", "invalid layer name '_layer'"),
        ("zarr/ds/la:yer/", "invalid layer name"),
        ("zarr/ds/color/0/", "invalid mag '0'"),
        ("zarr/ds/color/01/", "invalid mag '01'"),
        ("zarr/ds/color/2-2/", "invalid mag '2-2'"),
        ("zarr/ds/color/2-02-1/", "invalid mag '2-02-1'"),
        ("zarr/ds/color/2x2x1/", "invalid mag"),
        ("zarr/ds/color/\u0661/", "invalid mag"),  # ARABIC-INDIC DIGIT ONE
        ("zarr/ds/color/1/0/0/0/-1", "invalid chunk index '-1'"),
        ("zarr/ds/color/1/0/0/0/+1", "invalid chunk index '+1'"),
        ("zarr/ds/color/1/0/0/0/01", "invalid chunk index '01'"),
        ("zarr/ds/color/1/0/0/0/00", "invalid chunk index '00'"),
        ("zarr/ds/color/1/0/0/0/1e3", "invalid chunk index '1e3'"),
        ("zarr/ds/color/1/0/0/0/1234567890123", "at most 12 digits"),
        ("zarr3/ds/color/1/c/0/0/0/\u0661", "invalid chunk index"),
        ("zarr/ds/color/1/0/0/0", "got 3"),
        ("zarr/ds/color/1/" + "0/" * 32 + "0", "got 33"),
        ("zarr3/ds/color/1/c", "got 0"),
        ("zarr3/ds/color/1/c/0/0/0/0/", "a chunk key is a file, not a directory"),
        ("zarr/ds/color/1/0/0/0/0/", "a chunk key is a file, not a directory"),
        ("zarr/ds/.zattrs/", "'.zattrs' is a metadata file, not a directory"),
        ("zarr/ds/zarr.json/1/", "'zarr.json' is a metadata file, not a directory"),
        ("zarr/ds/color/.zmetadata/x", "'.zmetadata' is a metadata file, not a directory"),
        ("zarr/ds/color/1/.zarray/", "'.zarray' is a metadata file, not a directory"),
        ("zarr/ds/.zarray", "unknown metadata name '.zarray' at the dataset root level"),
        ("zarr/ds/.DS_Store", "unknown metadata name '.DS_Store' at the dataset root level"),
        ("zarr/ds/color/.zarray", "unknown metadata name '.zarray' at the layer level"),
        ("zarr/ds/color/attributes.json", "unknown metadata name 'attributes.json' at the layer"),
        ("zarr/ds/color/1/zarr.json", "unknown metadata name 'zarr.json' at the array level"),
        ("zarr/ds/color/1/.zgroup", "allowed: .zarray, .zattrs or a chunk key i/j/..."),
        ("zarr3/ds/color/1/.zarray", "allowed: zarr.json or a chunk key c/i/j/..."),
        ("zarr3/ds/color/1/.zattrs", "unknown metadata name '.zattrs' at the array level"),
        ("zarr3/ds/color/1/0/0/0/0", "Zarr v3 chunk keys start with 'c/'"),
        ("zarr/ds/color/1/c/0/0/0/0", "Zarr v2 chunk keys have no 'c/' prefix"),
    ],
)
def test_rejections(path: str, phrase: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_data_path(path)
    assert phrase in str(info.value)
    assert str(info.value).startswith("invalid data path ")


def test_rejection_is_a_key_error_with_a_readable_message() -> None:
    with pytest.raises(KeyError, match=r"^invalid data path 'zarr/\.\./x'"):
        parse_data_path("zarr/../x")


def test_rejection_names_the_allowed_forms() -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_data_path("zarr/ds/color/2-2/")
    assert "a positive integer like '1' or three joined by '-' like '2-2-1'" in str(info.value)
    with pytest.raises(InvalidKeyError) as info:
        parse_data_path("zarr/ds/.zarray")
    assert "allowed: .zattrs, .zgroup, .zmetadata, datasource-properties.json, zarr.json" in str(
        info.value
    )


def test_link_token_is_redacted_from_messages() -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_data_path(f"links/{TOKEN}/zarr/../../x")
    assert TOKEN not in str(info.value)
    assert "links/<token>/zarr/../../x" in str(info.value)


# --- chunk_in_grid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "grid", "inside"),
    [
        ((0, 0, 0, 0), (1, 1, 1, 1), True),
        ((0, 3, 4, 5), (1, 4, 5, 6), True),
        ((0, 4, 0, 0), (1, 4, 5, 6), False),
        ((0, 0, 0), (1, 1, 1, 1), False),
        ((0, 0, 0, 0, 0), (1, 1, 1, 1), False),
        ((-1, 0, 0, 0), (1, 1, 1, 1), False),
        ((0, 0, 0, 0), (1, 0, 1, 1), False),
        ((), (), True),
    ],
)
def test_chunk_in_grid(index: tuple[int, ...], grid: tuple[int, ...], inside: bool) -> None:
    assert chunk_in_grid(index, grid) is inside


@given(st.lists(st.tuples(st.integers(-3, 20), st.integers(0, 20)), max_size=6))
def test_chunk_in_grid_is_elementwise_bounds(pairs: list[tuple[int, int]]) -> None:
    index = tuple(i for i, _ in pairs)
    grid = tuple(g for _, g in pairs)
    assert chunk_in_grid(index, grid) == all(0 <= i < g for i, g in pairs)
    assert not chunk_in_grid((*index, 0), grid)


# --- properties -------------------------------------------------------------------------------

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
names = st.builds(
    str.__add__,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "._-", max_size=30),
).filter(lambda name: name not in GROUP_METADATA)
tokens = st.text(alphabet=_ALNUM + "_-", min_size=16, max_size=128)
factors = st.integers(1, 512).map(str)
mags = factors | st.tuples(factors, factors, factors).map("-".join)
chunks = st.lists(st.integers(0, 10**12 - 1), min_size=4, max_size=8).map(tuple)


@st.composite
def data_paths(draw: st.DrawFn) -> tuple[str, DataPath]:
    tree = draw(st.sampled_from(["zarr", "zarr3"]))
    token = draw(st.none() | tokens)
    dataset = None if token is not None else draw(names)
    prefix = f"links/{token}/{tree}" if token is not None else f"{tree}/{dataset}"
    depth = draw(st.sampled_from(["root", "layer", "mag"]))
    layer = mag = leaf = None
    chunk: tuple[int, ...] | None = None
    parts: list[str] = []
    if depth != "root":
        layer = draw(names)
        parts.append(layer)
    if depth == "mag":
        mag = draw(mags)
        parts.append(mag)
    kinds = ["listing", "leaf"] + (["chunk"] if depth == "mag" else [])
    kind = draw(st.sampled_from(kinds))
    trailing = ""
    if kind == "listing":
        trailing = draw(st.sampled_from(["", "/"]))
    elif kind == "leaf":
        allowed = ARRAY_METADATA[tree] if depth == "mag" else GROUP_METADATA  # type: ignore[index]
        leaf = draw(st.sampled_from(sorted(allowed)))
        parts.append(leaf)
    else:
        chunk = draw(chunks)
        parts += (["c"] if tree == "zarr3" else []) + [str(i) for i in chunk]
    path = "/".join([prefix, *parts]) + trailing
    return path, dp(
        tree, token=token, dataset=dataset, layer=layer, mag=mag, leaf=leaf, chunk=chunk
    )


@given(data_paths())
def test_valid_parts_parse_back(case: tuple[str, DataPath]) -> None:
    path, expected = case
    assert parse_data_path(path) == expected


@given(data_paths(), st.sampled_from(["..", ".", "", "%2F", "a\\b", "\x00"]), st.data())
def test_inserting_a_bad_segment_is_rejected(
    case: tuple[str, DataPath], bad: str, data: st.DataObject
) -> None:
    segments = case[0].rstrip("/").split("/")
    at = data.draw(st.integers(1, len(segments) - 1))
    path = "/".join([*segments[:at], bad, *segments[at:]])
    with pytest.raises(InvalidKeyError):
        parse_data_path(path)


path_text = st.text(
    alphabet=st.sampled_from(list("zarr3links/c0129-._%\\ .\x00\nAé")) | st.characters(),
    max_size=80,
)


def assert_parses_or_rejects(path: str) -> None:
    try:
        result = parse_data_path(path)
    except InvalidKeyError:
        return
    assert isinstance(result, DataPath)
    assert (result.dataset is None) == (result.token is not None)
    assert result.listing == (result.leaf is None and result.chunk is None)


@given(path_text)
@example("zarr/ds/color/1/" + "9" * 5000)
@example("links/" + "a" * 20)
def test_random_text_raises_only_invalid_key_error(path: str) -> None:
    assert_parses_or_rejects(path)


@given(path_text.map(lambda text: "zarr/ds/" + text))
def test_random_suffixes_raise_only_invalid_key_error(path: str) -> None:
    assert_parses_or_rejects(path)
