from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wkjupyter.geometry import BoundingBox, Mag, Vec3, VoxelSize, normalize_unit

coord = st.integers(-1000, 1000)
size = st.integers(0, 500)
vecs = st.builds(Vec3, coord, coord, coord)
shapes = st.builds(Vec3, size, size, size)
boxes = st.builds(BoundingBox, vecs, shapes)
mags = st.builds(lambda z, y, x: Mag((z, y, x)), *(st.sampled_from([1, 2, 4, 8]),) * 3)


def voxels(box: BoundingBox) -> set[tuple[int, int, int]]:
    return {
        (z, y, x)
        for z in range(box.offset.z, box.end.z)
        for y in range(box.offset.y, box.end.y)
        for x in range(box.offset.x, box.end.x)
    }


small = st.builds(
    BoundingBox,
    st.builds(Vec3, *(st.integers(-5, 5),) * 3),
    st.builds(Vec3, *(st.integers(0, 5),) * 3),
)


@given(small, small)
def test_intersection_is_the_common_voxels(a: BoundingBox, b: BoundingBox) -> None:
    assert voxels(a.intersection(b)) == voxels(a) & voxels(b)


@given(small, small)
def test_union_covers_both_and_is_tight(a: BoundingBox, b: BoundingBox) -> None:
    u = a.union(b)
    assert voxels(a) | voxels(b) <= voxels(u)
    if not a.is_empty() and not b.is_empty():
        assert u.offset == a.offset.minimum(b.offset)
        assert u.end == a.end.maximum(b.end)


@given(boxes, mags)
def test_in_mag_covers_the_box(box: BoundingBox, mag: Mag) -> None:
    scaled = box.in_mag(mag).from_mag(mag)
    assert scaled.contains(box)
    # ... and by less than one mag voxel on each side.
    for lo, hi, lo2, hi2, f in zip(
        box.offset, box.end, scaled.offset, scaled.end, mag.vec, strict=True
    ):
        assert lo - lo2 < f
        assert hi2 - hi < f


@given(boxes)
def test_wk_round_trip(box: BoundingBox) -> None:
    assert BoundingBox.from_wk(box.to_wk()) == box


def test_negative_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        BoundingBox.of((0, 0, 0), (1, -1, 1))


@pytest.mark.parametrize(
    ("value", "zyx", "text"),
    [
        ("1", (1, 1, 1), "1"),
        (2, (2, 2, 2), "2"),
        ("2-2-1", (1, 2, 2), "2-2-1"),
        ((1, 2, 2), (1, 2, 2), "2-2-1"),
        ([4, 4, 4], (4, 4, 4), "4"),
        (Vec3(1, 2, 4), (1, 2, 4), "4-2-1"),
    ],
)
def test_mag_forms(value: object, zyx: tuple[int, int, int], text: str) -> None:
    mag = Mag(value)  # type: ignore[arg-type]
    assert (mag.z, mag.y, mag.x) == zyx
    assert str(mag) == text
    assert Mag(str(mag)) == mag
    assert Mag.from_xyz(mag.to_xyz()) == mag


@pytest.mark.parametrize("bad", ["0", "2-2", "a", "2-2-0", (1, 2), -1, True])
def test_bad_mags_explain(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="mag"):
        Mag(bad)  # type: ignore[arg-type]


def test_mags_sort_finest_first() -> None:
    assert sorted([Mag(4), Mag("2-2-1"), Mag(1), Mag(2)]) == [Mag(1), Mag("2-2-1"), Mag(2), Mag(4)]


def test_voxel_size_units() -> None:
    vs = VoxelSize(0.04, 0.008, 0.008, "um")
    assert vs.unit == "micrometer"
    assert vs.to_unit("nm").as_tuple() == pytest.approx((40, 8, 8))
    assert normalize_unit("nanometers") == "nanometer"
    assert normalize_unit("Å") == "angstrom"
    with pytest.raises(ValueError, match="UDUNITS"):
        normalize_unit("furlong")
    with pytest.raises(ValueError, match="positive"):
        VoxelSize(0, 1, 1)


# -- boxes as a read accepts them -----------------------------------------------------------

LAYER_BOX = BoundingBox.of((0, 10, 20), (40, 80, 100))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (BoundingBox.of((1, 2, 3), (4, 5, 6)), BoundingBox.of((1, 2, 3), (4, 5, 6))),
        (((1, 2, 3), (4, 5, 6)), BoundingBox.of((1, 2, 3), (4, 5, 6))),  # (offset, shape)
        ([Vec3(1, 2, 3), [4, 5, 6]], BoundingBox.of((1, 2, 3), (4, 5, 6))),
        ((slice(1, 5), slice(2, 7), slice(3, 9)), BoundingBox.of((1, 2, 3), (4, 5, 6))),
        (
            (slice(None), slice(None, 30), slice(50, None)),
            BoundingBox.of((0, 10, 50), (40, 20, 70)),
        ),
    ],
)
def test_box_forms(given: object, expected: BoundingBox) -> None:
    assert BoundingBox.coerce(given, LAYER_BOX) == expected  # type: ignore[arg-type]


def test_box_forms_take_numpy_integers() -> None:
    np = pytest.importorskip("numpy")
    assert BoundingBox.coerce(np.s_[0:10, 0:20, 0:30]) == BoundingBox.of((0, 0, 0), (10, 20, 30))
    offset, shape = np.array([1, 2, 3]), np.array([4, 5, 6], dtype=np.uint16)
    assert BoundingBox.coerce((offset, shape)) == BoundingBox.of((1, 2, 3), (4, 5, 6))


@pytest.mark.parametrize(
    ("bad", "kind", "phrase"),
    [
        ((0, 0, 0, 10, 20, 30), TypeError, "ambiguous"),
        ((0, 0, 0), TypeError, "(offset, shape)"),
        ("0,0,0", TypeError, "BoundingBox.of(offset, shape)"),
        (((0, 0), (1, 1)), ValueError, "three numbers"),
        (((0, 0, 0), (1, -1, 1)), ValueError, "negative"),
        ((slice(0, 10), slice(0, 10)), TypeError, "three slices"),
        ((slice(0, 10, 2), slice(0, 10), slice(0, 10)), ValueError, "step"),
        ((slice(-10, None), slice(0, 10), slice(0, 10)), ValueError, "negative"),
        ((slice(10, 0), slice(0, 10), slice(0, 10)), ValueError, "before its start"),
        ((slice(0, 1.5), slice(0, 10), slice(0, 10)), TypeError, "integer"),
    ],
)
def test_bad_boxes_explain(bad: object, kind: type[Exception], phrase: str) -> None:
    with pytest.raises(kind) as info:
        BoundingBox.coerce(bad, LAYER_BOX)  # type: ignore[arg-type]
    assert phrase in str(info.value)
    assert "(z, y, x)" in str(info.value) or kind is ValueError


def test_open_slices_need_bounds() -> None:
    with pytest.raises(ValueError, match="open slice"):
        BoundingBox.coerce((slice(None), slice(0, 1), slice(0, 1)))
