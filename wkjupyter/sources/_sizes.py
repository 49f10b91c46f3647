"""Byte sizes as people write them: ``"4GiB"``, ``"500 MB"``, ``"1000"`` (and back)."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["format_size", "parse_size"]

_UNITS: Final = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, name: str) -> int:
    """Bytes from ``"8GiB"``, ``"500MB"`` or ``"4096"``; ``name`` is what the message calls it.

    Raises
    ------
    ValueError
        For anything else, naming ``name`` and the accepted forms.
    """
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        msg = f"{name}={text!r} is not a size: write bytes (4096) or a unit (500MB, 8GiB)"
        raise ValueError(msg)
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: float) -> str:
    """``909.5 TiB``, ``4 GiB``, ``1000 B``: binary units, at most one decimal."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scaled = size / _UNITS[unit.lower()]
        if scaled >= 1:
            return f"{scaled:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size:g} B"
