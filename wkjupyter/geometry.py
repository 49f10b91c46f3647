"""Value objects for volumetric geometry: vectors, mags, bounding boxes, voxel sizes.

Everything Python-facing is ordered (z, y, x); only the webKnossos JSON uses x, y, z lists
(``to_wk`` / ``from_wk`` convert).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TypeAlias

__all__ = [
    "LENGTH_UNITS",
    "BoundingBox",
    "BoxLike",
    "Mag",
    "MagLike",
    "Vec3",
    "VoxelSize",
    "normalize_unit",
]


@dataclass(frozen=True, slots=True)
class Vec3:
    """An integer (z, y, x) vector: a position, a shape or a factor."""

    z: int
    y: int
    x: int

    @classmethod
    def of(cls, value: Iterable[int] | int) -> Vec3:
        """Build from a (z, y, x) iterable or one int for all three axes."""
        if isinstance(value, int):
            return cls(value, value, value)
        z, y, x = (int(v) for v in value)
        return cls(z, y, x)

    @classmethod
    def from_xyz(cls, xyz: Iterable[int]) -> Vec3:
        """Build from an x, y, z list (webKnossos, N5 and Neuroglancer order)."""
        x, y, z = (int(v) for v in xyz)
        return cls(z, y, x)

    def to_xyz(self) -> list[int]:
        return [self.x, self.y, self.z]

    def __iter__(self) -> Iterator[int]:
        return iter((self.z, self.y, self.x))

    def __len__(self) -> int:
        return 3

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.z, self.y, self.x)

    def __add__(self, other: Vec3 | int) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z + o.z, self.y + o.y, self.x + o.x)

    def __sub__(self, other: Vec3 | int) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z - o.z, self.y - o.y, self.x - o.x)

    def __mul__(self, other: Vec3 | int) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z * o.z, self.y * o.y, self.x * o.x)

    def __floordiv__(self, other: Vec3 | int) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z // o.z, self.y // o.y, self.x // o.x)

    def ceildiv(self, other: Vec3 | int) -> Vec3:
        o = Vec3.of(other)
        return Vec3(-(-self.z // o.z), -(-self.y // o.y), -(-self.x // o.x))

    def minimum(self, other: Vec3) -> Vec3:
        return Vec3(min(self.z, other.z), min(self.y, other.y), min(self.x, other.x))

    def maximum(self, other: Vec3) -> Vec3:
        return Vec3(max(self.z, other.z), max(self.y, other.y), max(self.x, other.x))

    def prod(self) -> int:
        return self.z * self.y * self.x


MagLike: TypeAlias = Union["Mag", int, str, tuple[int, int, int], list[int], Vec3]


@dataclass(frozen=True, slots=True, init=False)
class Mag:
    """A downsampling factor per axis relative to a layer's finest level.

    Accepts the webKnossos string form in x-y-z order (``"1"``, ``"2"``, ``"2-2-1"``), an int
    for all axes, or a (z, y, x) tuple: ``Mag("2-2-1") == Mag((1, 2, 2))``.
    """

    z: int
    y: int
    x: int

    def __init__(self, value: MagLike) -> None:
        zyx = _parse_mag(value)
        if any(f < 1 for f in zyx):
            msg = f"invalid mag {value!r}: every factor must be a positive integer"
            raise ValueError(msg)
        object.__setattr__(self, "z", zyx[0])
        object.__setattr__(self, "y", zyx[1])
        object.__setattr__(self, "x", zyx[2])

    @classmethod
    def from_xyz(cls, xyz: Iterable[int]) -> Mag:
        x, y, z = (int(v) for v in xyz)
        return cls((z, y, x))

    @property
    def vec(self) -> Vec3:
        return Vec3(self.z, self.y, self.x)

    def to_xyz(self) -> list[int]:
        return [self.x, self.y, self.z]

    def max_dim(self) -> int:
        return max(self.z, self.y, self.x)

    def __str__(self) -> str:
        if self.z == self.y == self.x:
            return str(self.x)
        return f"{self.x}-{self.y}-{self.z}"

    def __repr__(self) -> str:
        return f"Mag({str(self)!r})"

    def __lt__(self, other: Mag) -> bool:
        return (self.max_dim(), self.x * self.y * self.z, self.to_xyz()) < (
            other.max_dim(),
            other.x * other.y * other.z,
            other.to_xyz(),
        )


def _parse_mag(value: MagLike) -> tuple[int, int, int]:
    if isinstance(value, Mag):
        return (value.z, value.y, value.x)
    if isinstance(value, Vec3):
        return value.as_tuple()
    if isinstance(value, bool):
        msg = f"invalid mag {value!r}"
        raise TypeError(msg)
    if isinstance(value, int):
        return (value, value, value)
    if isinstance(value, str):
        parts = value.strip().split("-")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            msg = f"invalid mag {value!r}: expected '1', '2' or x-y-z like '2-2-1'"
            raise ValueError(msg) from None
        if len(nums) == 1:
            return (nums[0], nums[0], nums[0])
        if len(nums) == 3:
            return (nums[2], nums[1], nums[0])
        msg = f"invalid mag {value!r}: expected one factor or three (x-y-z)"
        raise ValueError(msg)
    nums = [int(v) for v in value]
    if len(nums) != 3:
        msg = f"invalid mag {value!r}: a tuple mag has three factors (z, y, x)"
        raise ValueError(msg)
    return (nums[0], nums[1], nums[2])


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """An axis-aligned box of voxels: ``offset`` (inclusive) and ``shape``, both (z, y, x)."""

    offset: Vec3
    shape: Vec3

    def __post_init__(self) -> None:
        if min(self.shape) < 0:
            msg = f"a bounding box cannot have a negative shape: {self.shape}"
            raise ValueError(msg)

    @classmethod
    def of(cls, offset: Iterable[int] | Vec3, shape: Iterable[int] | Vec3) -> BoundingBox:
        return cls(Vec3.of(offset), Vec3.of(shape))

    @classmethod
    def coerce(cls, box: BoxLike, within: BoundingBox | None = None) -> BoundingBox:
        """A box from any of the forms a read accepts, all (z, y, x) in mag-1 voxels.

        Parameters
        ----------
        box
            A :class:`BoundingBox`; an ``(offset, shape)`` pair, as :meth:`of` takes it
            (``((0, 0, 0), (64, 64, 64))``); or three ``start:stop`` slices
            (``np.s_[0:64, 0:64, 0:64]``). Slice bounds are absolute voxel coordinates, not
            positions counted from the end, so they must not be negative; an open end
            (``np.s_[:, :, 100:]``) stops at ``within``'s bound.
        within
            The box that open slice ends refer to (a layer's bounding box).

        Raises
        ------
        TypeError
            For anything else, such as a flat ``(z0, y0, x0, z1, y1, x1)`` tuple, which could
            mean bounds or offset and shape.
        ValueError
            For a form with bad values: not three numbers per vector, a negative shape, a
            slice step, a negative or reversed slice, an open slice without ``within``.
        """
        if isinstance(box, BoundingBox):
            return box
        items = list(box) if isinstance(box, tuple | list) else []
        if any(isinstance(s, slice) for s in items):
            if len(items) != 3 or not all(isinstance(s, slice) for s in items):
                msg = f"a box of slices takes three slices, got {box!r}; {_BOX_FORMS}"
                raise TypeError(msg)
            return cls._from_slices(items, within)
        numbers = [_index(v) is not None for v in items]
        if len(items) == 2 and not any(numbers):
            try:
                return cls(_vec(items[0], "offset"), _vec(items[1], "shape"))
            except TypeError as err:
                msg = f"cannot use {box!r} as a box ({err}); {_BOX_FORMS}"
                raise TypeError(msg) from None
        if len(items) == 6 and all(numbers):
            msg = (
                f"the flat box {tuple(items)!r} is ambiguous (bounds, or offset and shape?); "
                f"{_BOX_FORMS}"
            )
            raise TypeError(msg)
        msg = f"cannot use {box!r} as a box; {_BOX_FORMS}"
        raise TypeError(msg)

    @classmethod
    def _from_slices(cls, slices: Sequence[slice], within: BoundingBox | None) -> BoundingBox:
        bounds: list[tuple[int, int]] = []
        for name, s in zip("zyx", slices, strict=True):
            if s.step not in (None, 1):
                msg = f"the {name} slice {s!r} has a step; a box takes start:stop slices"
                raise ValueError(msg)
            lo, hi = (getattr(within.offset, name), getattr(within.end, name)) if within else (0, 0)
            if within is None and (s.start is None or s.stop is None):
                msg = f"the open slice {s!r} ({name}) needs a layer's bounds; give start and stop"
                raise ValueError(msg)
            start = lo if s.start is None else _index(s.start)
            stop = hi if s.stop is None else _index(s.stop)
            if start is None or stop is None:
                msg = f"the {name} slice {s!r} needs integer bounds; {_BOX_FORMS}"
                raise TypeError(msg)
            if (s.start is not None and start < 0) or (s.stop is not None and stop < 0):
                msg = (
                    f"the {name} slice {s!r} is negative: slice bounds are absolute voxel "
                    "coordinates, not counted from the end; for a box at negative "
                    "coordinates use BoundingBox.of(offset, shape)"
                )
                raise ValueError(msg)
            if stop < start:
                msg = f"the {name} slice {s!r} stops before its start"
                raise ValueError(msg)
            bounds.append((start, stop))
        return cls.from_bounds(Vec3.of(b[0] for b in bounds), Vec3.of(b[1] for b in bounds))

    @classmethod
    def from_bounds(cls, start: Vec3, end: Vec3) -> BoundingBox:
        """The box [start, end); empty (shape 0) where end <= start."""
        return cls(start, (end - start).maximum(Vec3(0, 0, 0)))

    @classmethod
    def from_wk(cls, d: dict[str, object]) -> BoundingBox:
        """Parse webKnossos ``{"topLeft": [x,y,z], "width", "height", "depth"}``."""
        top_left = d["topLeft"]
        assert isinstance(top_left, list)
        return cls(
            Vec3.from_xyz(top_left),
            Vec3(int(d["depth"]), int(d["height"]), int(d["width"])),  # type: ignore[call-overload]
        )

    def to_wk(self) -> dict[str, object]:
        return {
            "topLeft": self.offset.to_xyz(),
            "width": self.shape.x,
            "height": self.shape.y,
            "depth": self.shape.z,
        }

    @property
    def end(self) -> Vec3:
        return self.offset + self.shape

    def is_empty(self) -> bool:
        return self.shape.prod() == 0

    def intersection(self, other: BoundingBox) -> BoundingBox:
        return BoundingBox.from_bounds(
            self.offset.maximum(other.offset), self.end.minimum(other.end)
        )

    def union(self, other: BoundingBox) -> BoundingBox:
        """The smallest box containing both (an empty box contributes nothing)."""
        if self.is_empty():
            return other
        if other.is_empty():
            return self
        return BoundingBox.from_bounds(
            self.offset.minimum(other.offset), self.end.maximum(other.end)
        )

    def contains(self, other: BoundingBox) -> bool:
        return self.intersection(other) == other or other.is_empty()

    def in_mag(self, mag: Mag) -> BoundingBox:
        """This mag-1 box in voxels of ``mag``: the smallest box covering it (floor/ceil)."""
        return BoundingBox.from_bounds(self.offset // mag.vec, self.end.ceildiv(mag.vec))

    def from_mag(self, mag: Mag) -> BoundingBox:
        """A box given in voxels of ``mag`` as mag-1 voxels."""
        return BoundingBox(self.offset * mag.vec, self.shape * mag.vec)

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, e) for o, e in zip(self.offset, self.end, strict=True))  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"BoundingBox(offset={self.offset.as_tuple()}, shape={self.shape.as_tuple()})"


#: What a read takes as a box: see :meth:`BoundingBox.coerce`.
BoxLike: TypeAlias = BoundingBox | Sequence[Iterable[int]] | Sequence[slice]
_BOX_FORMS = (
    "give BoundingBox.of(offset, shape), an (offset, shape) pair such as "
    "((0, 0, 0), (64, 64, 64)) or three slices such as np.s_[0:64, 0:64, 0:64], "
    "all (z, y, x) in mag-1 voxels"
)


def _index(value: Any) -> int | None:
    """``value`` as an int if it is an integer (numpy's too), else None (bools and floats)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _vec(value: object, what: str) -> Vec3:
    if isinstance(value, Vec3):
        return value
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        msg = f"the {what} {value!r} is not three integers"
        raise TypeError(msg)
    items = [_index(v) for v in value]
    if len(items) != 3:
        msg = f"the {what} {value!r} takes three numbers (z, y, x), got {len(items)}"
        raise ValueError(msg)
    if None in items:
        msg = f"the {what} {value!r} is not three integers"
        raise TypeError(msg)
    return Vec3(*cast("list[int]", items))


# UDUNITS-2 length names as OME-NGFF allows them, with their size in nanometers.
_PREFIXES = {
    "yocto": 1e-15, "zepto": 1e-12, "atto": 1e-9, "femto": 1e-6, "pico": 1e-3, "nano": 1.0,
    "micro": 1e3, "milli": 1e6, "centi": 1e7, "deci": 1e8, "": 1e9, "hecto": 1e11,
    "kilo": 1e12, "mega": 1e15, "giga": 1e18, "tera": 1e21, "peta": 1e24, "exa": 1e27,
    "zetta": 1e30, "yotta": 1e33,
}  # fmt: skip
LENGTH_UNITS: dict[str, float] = {f"{p}meter": f for p, f in _PREFIXES.items()} | {
    "angstrom": 0.1,
    "foot": 304_800_000.0,
    "inch": 25_400_000.0,
    "mile": 1_609_344_000_000.0,
    "parsec": 3.085677581e25,
    "yard": 914_400_000.0,
}
_ABBREVIATIONS = {
    "nm": "nanometer", "um": "micrometer", "µm": "micrometer", "μm": "micrometer",
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "pm": "picometer",
    "a": "angstrom", "å": "angstrom", "km": "kilometer", "fm": "femtometer",
    "micron": "micrometer", "microns": "micrometer",
}  # fmt: skip


def normalize_unit(unit: str | None) -> str:
    """Map a length unit (``"nm"``, ``"um"``, ``"micrometer"`` ...) to its UDUNITS-2 name."""
    if unit is None or unit == "":
        return "nanometer"
    key = unit.strip().lower()
    name = _ABBREVIATIONS.get(key, key.removesuffix("s") if key.endswith("meters") else key)
    if name not in LENGTH_UNITS:
        msg = f"unknown length unit {unit!r}: use a UDUNITS-2 name such as 'nanometer'"
        raise ValueError(msg)
    return name


@dataclass(frozen=True, slots=True)
class VoxelSize:
    """The physical size of a mag-1 voxel along (z, y, x), with a length unit."""

    z: float
    y: float
    x: float
    unit: str = "nanometer"

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", normalize_unit(self.unit))
        if not all(math.isfinite(v) and v > 0 for v in (self.z, self.y, self.x)):
            msg = f"voxel sizes must be positive and finite, got {(self.z, self.y, self.x)}"
            raise ValueError(msg)

    @classmethod
    def of(cls, zyx: Iterable[float], unit: str = "nanometer") -> VoxelSize:
        z, y, x = (float(v) for v in zyx)
        return cls(z, y, x, unit)

    @classmethod
    def from_xyz(cls, xyz: Iterable[float], unit: str = "nanometer") -> VoxelSize:
        x, y, z = (float(v) for v in xyz)
        return cls(z, y, x, unit)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.z, self.y, self.x)

    def to_xyz(self) -> list[float]:
        return [self.x, self.y, self.z]

    def to_unit(self, unit: str) -> VoxelSize:
        """The same size expressed in another length unit."""
        target = normalize_unit(unit)
        f = LENGTH_UNITS[self.unit] / LENGTH_UNITS[target]
        return VoxelSize(self.z * f, self.y * f, self.x * f, target)

    def scaled(self, mag: Mag) -> tuple[float, float, float]:
        """The (z, y, x) size of a voxel of ``mag``."""
        return (self.z * mag.z, self.y * mag.y, self.x * mag.x)

    def __str__(self) -> str:
        return f"{self.x:g} x {self.y:g} x {self.z:g} {self.unit} (x, y, z)"
