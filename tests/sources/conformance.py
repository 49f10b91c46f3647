"""The conformance suite every format reader passes (STYLE.md rule 11).

A format's test module subclasses :class:`SourceTests` and provides a ``case`` fixture
returning a :class:`Case`: the URL of data a third-party writer wrote, and what the writer
wrote (metadata and every mag's voxels). The suite explores the URL and checks metadata,
full reads of every mag, partial reads across chunk edges, fill outside the data and
missing chunks, all voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from wkjupyter.geometry import BoundingBox, Mag, Vec3
from wkjupyter.sources.explore import explore


@dataclass
class ExpectedMag:
    """What was written at one mag: ``data`` (c, z, y, x) placed at ``offset`` (mag voxels)."""

    data: np.ndarray[Any, Any]
    offset: tuple[int, int, int] = (0, 0, 0)


@dataclass
class ExpectedLayer:
    name: str
    category: str
    dtype: str
    voxel_size: tuple[float, float, float]  # (z, y, x) of mag 1
    mags: dict[str, ExpectedMag]  # mag name ("1", "2-2-1") -> data
    unit: str = "nanometer"
    fill_value: float = 0
    # Boxes (mag-1 voxels) the writer left unwritten: they must read as fill value.
    missing: list[BoundingBox] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return int(self.mags["1"].data.shape[-4]) if "1" in self.mags else 1

    @property
    def bbox(self) -> BoundingBox:
        first = self.mags[min(self.mags, key=lambda m: Mag(m))]
        m = Mag(min(self.mags, key=lambda m: Mag(m)))
        shape = first.data.shape[-3:]
        return BoundingBox(Vec3.of(first.offset) * m.vec, Vec3.of(shape) * m.vec)


@dataclass
class Case:
    url: str | list[str]
    layers: list[ExpectedLayer]
    credential: Any = None
    format: str = ""  # informational: the step format the explorer should report


def expected_region(exp: ExpectedMag, box: BoundingBox, fill: float, dtype: str) -> np.ndarray:
    """The voxels of ``box`` (in the mag's voxels) as written, fill value outside."""
    lead = exp.data.shape[:-3]
    out = np.full((*lead, *box.shape), fill, dtype=dtype)
    written = BoundingBox(Vec3.of(exp.offset), Vec3.of(exp.data.shape[-3:]))
    inter = box.intersection(written)
    if not inter.is_empty():
        src = tuple(
            slice(a - o, b - o) for a, b, o in zip(inter.offset, inter.end, exp.offset, strict=True)
        )
        dst = tuple(
            slice(a - o, b - o) for a, b, o in zip(inter.offset, inter.end, box.offset, strict=True)
        )
        out[(..., *dst)] = exp.data[(..., *src)]
    return out


class SourceTests:
    """Subclass and provide a ``case`` fixture; every test here must pass unchanged."""

    @pytest.fixture
    def explored(self, case: Case) -> Any:
        report = explore(case.url, credential=case.credential)
        assert report.datasource is not None, report
        return report

    def test_metadata(self, case: Case, explored: Any) -> None:
        ds = explored.datasource
        assert sorted(ds.layers) == sorted(e.name for e in case.layers), explored
        for exp in case.layers:
            layer = ds.layers[exp.name]
            assert layer.category == exp.category
            assert layer.dtype == np.dtype(exp.dtype)
            assert layer.num_channels == exp.num_channels
            assert layer.bbox == exp.bbox
            assert sorted(str(m) for m in layer.mags) == sorted(exp.mags)
            vs = layer.voxel_size.to_unit(exp.unit)
            assert vs.as_tuple() == pytest.approx(exp.voxel_size)

    def test_full_read_every_mag(self, case: Case, explored: Any) -> None:
        for exp in case.layers:
            layer = explored.datasource.layers[exp.name]
            for name, mag_exp in exp.mags.items():
                got = layer.read(mag=name)
                box = exp.bbox.in_mag(Mag(name))
                want = expected_region(mag_exp, box, exp.fill_value, exp.dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"{exp.name} mag {name}")

    def test_partial_reads(self, case: Case, explored: Any) -> None:
        rng = np.random.default_rng(0)
        for exp in case.layers:
            layer = explored.datasource.layers[exp.name]
            bbox = exp.bbox
            for _ in range(6):
                start = [
                    rng.integers(o, o + max(1, s))
                    for o, s in zip(bbox.offset, bbox.shape, strict=True)
                ]
                size = [rng.integers(1, max(2, s // 2 + 2)) for s in bbox.shape]
                box = BoundingBox.of(start, size)
                got = layer.read(box, mag="1")
                want = expected_region(exp.mags["1"], box, exp.fill_value, exp.dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"{exp.name} {box}")

    def test_fill_outside(self, case: Case, explored: Any) -> None:
        for exp in case.layers:
            layer = explored.datasource.layers[exp.name]
            bbox = exp.bbox
            # A box straddling the lower corner and one entirely beyond the upper corner.
            box = BoundingBox(bbox.offset - 5, Vec3(10, 10, 10))
            got = layer.read(box)
            want = expected_region(exp.mags["1"], box, exp.fill_value, exp.dtype)
            np.testing.assert_array_equal(got, want)
            beyond = layer.read(BoundingBox(bbox.end + 3, Vec3(4, 4, 4)))
            assert (beyond == exp.fill_value).all()

    def test_missing_chunks_read_as_fill(self, case: Case, explored: Any) -> None:
        for exp in case.layers:
            layer = explored.datasource.layers[exp.name]
            for box in exp.missing:
                got = layer.read(box)
                assert (got == exp.fill_value).all(), f"{exp.name}: {box} should be fill"
