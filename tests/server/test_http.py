from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wkjupyter.errors import WkJupyterError
from wkjupyter.server._http import (
    RangeNotSatisfiable,
    content_range,
    etag_matches,
    parse_range,
    strong_etag,
)

# --- parse_range ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=0-9", 10, (0, 10)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=2-500", 10, (2, 10)),
        ("bytes=9-9", 10, (9, 10)),
        ("bytes=3-", 10, (3, 10)),
        ("bytes=0-", 10, (0, 10)),
        ("bytes=-1", 10, (9, 10)),
        ("bytes=-4", 10, (6, 10)),
        ("bytes=-10", 10, (0, 10)),
        ("bytes=-500", 10, (0, 10)),
        ("bytes=0-" + "9" * 30, 10, (0, 10)),
        ("bytes=-" + "9" * 5000, 10, (0, 10)),
        ("BYTES=1-2", 10, (1, 3)),
        ("  bytes=1-2  ", 10, (1, 3)),
    ],
)
def test_single_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-2,4-5",
        "bytes=0-0, -1",
        "bytes=5-2",
        "bytes = 1-2",
        "bytes=1 -2",
        "bytes=+1-2",
        "bytes=--1",
        "bytes=1-2-3",
        "items=0-5",
        "0-5",
        "bytes=\u0661-2",
    ],
)
def test_absent_malformed_or_multi_range_serves_everything(header: str | None) -> None:
    assert parse_range(header, 10) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=" + "9" * 30 + "-", 10),
        ("bytes=-0", 10),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable_ranges_raise(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size
    assert info.value.content_range == f"bytes */{size}"
    assert isinstance(info.value, WkJupyterError)
    assert "not satisfiable" in str(info.value)


def test_negative_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        parse_range("bytes=0-1", -1)


range_headers = st.one_of(
    st.text(max_size=40),
    st.builds(
        "bytes={}-{}".format,
        st.integers(0, 300) | st.just(""),
        st.integers(0, 300) | st.just(""),
    ),
    st.builds("bytes=-{}".format, st.integers(0, 300)),
    st.text(alphabet="bytes=-0123456789, ", max_size=20),
)


@given(range_headers, st.integers(0, 200))
@example("bytes=0-", 0)
@example("bytes=-0", 5)
def test_parse_range_is_within_bounds_none_or_416(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable as err:
        reported = err.size
        assert reported == size
        return
    if result is not None:
        start, end = result
        assert 0 <= start < end <= size
        assert content_range(start, end, size) == f"bytes {start}-{end - 1}/{size}"


@given(st.integers(1, 10_000), st.integers(1, 10_000))
def test_suffix_range_picks_the_last_n_bytes(n: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    start, end = parse_range(f"bytes=-{n}", size) or (0, 0)
    assert data[start:end] == data[-n:]


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 500))
def test_int_range_is_clamped_to_the_representation(first: int, last: int, size: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first:
        assert parse_range(header, size) is None
    elif first >= size:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == (first, min(last + 1, size))


# --- content_range ----------------------------------------------------------------------------


def test_content_range() -> None:
    assert content_range(0, 1, 1) == "bytes 0-0/1"
    assert content_range(2, 6, 10) == "bytes 2-5/10"


@pytest.mark.parametrize(
    ("start", "end", "size"), [(0, 0, 10), (5, 4, 10), (-1, 2, 10), (0, 11, 10)]
)
def test_content_range_rejects_empty_or_outside_ranges(start: int, end: int, size: int) -> None:
    with pytest.raises(ValueError, match="invalid byte range"):
        content_range(start, end, size)


# --- strong_etag ------------------------------------------------------------------------------


def test_strong_etag_is_quoted_stable_hex() -> None:
    tag = strong_etag("dataset-id", "color/1/0/0/0/0", 3)
    assert tag == strong_etag("dataset-id", "color/1/0/0/0/0", 3)
    assert tag[0] == tag[-1] == '"'
    assert len(tag) == 34
    int(tag[1:-1], 16)
    # Pinned so that a change of the scheme (which invalidates every client cache) is deliberate.
    assert strong_etag() == '"e3b0c44298fc1c149afbf4c8996fb924"'


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ab", "c"), ("a", "bc")),
        ((1,), ("1",)),
        ((b"x",), ("x",)),
        (("a",), ("a", "")),
        ((1, 2), (2, 1)),
    ],
)
def test_strong_etag_separates_parts_and_types(
    a: tuple[str | bytes | int, ...], b: tuple[str | bytes | int, ...]
) -> None:
    assert strong_etag(*a) != strong_etag(*b)


def test_strong_etag_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="float"):
        strong_etag(1.5)  # type: ignore[arg-type]


# --- etag_matches -----------------------------------------------------------------------------

TAG = '"abc123"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ("*", True),
        (" * ", True),
        ('"abc123"', True),
        ('W/"abc123"', True),
        ('"other", "abc123"', True),
        ('"other",W/"abc123"', True),
        ('"x,y" , "abc123"', True),
        ('"other"', False),
        ('"abc1234"', False),
        ("abc123", False),
        ('"abc123', False),
        ('"other" junk "abc123"', False),
        ('w/"abc123"', False),
    ],
)
def test_etag_matches(header: str | None, matches: bool) -> None:
    assert etag_matches(header, TAG) is matches


def test_weak_own_etag_compares_weakly() -> None:
    assert etag_matches('"abc123"', 'W/"abc123"')
    assert etag_matches('W/"abc123"', 'W/"abc123"')


etag_parts = st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers()))


@given(etag_parts, st.lists(st.text(alphabet="0123456789abcdef", max_size=32).map('"{}"'.format)))
def test_etag_matches_its_own_tag_and_star(
    parts: list[str | bytes | int], others: list[str]
) -> None:
    tag = strong_etag(*parts)
    assert etag_matches(tag, tag)
    assert etag_matches("*", tag)
    assert etag_matches(", ".join([*others, tag]), tag)
    assert etag_matches(f"W/{tag}", tag)
    assert etag_matches(", ".join(others), tag) == (tag in others)


@given(st.text(max_size=60))
def test_etag_matches_never_raises(header: str) -> None:
    assert etag_matches(header, TAG) in {True, False}
