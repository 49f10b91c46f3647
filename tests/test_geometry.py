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
