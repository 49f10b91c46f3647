"""Where wkjupyter keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir"]


def data_dir() -> Path:
    """wkjupyter's data directory: ``$WKJUPYTER_DATA_DIR`` or ``<jupyter data dir>/wkjupyter``."""
    env = os.environ.get("WKJUPYTER_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "wkjupyter"
