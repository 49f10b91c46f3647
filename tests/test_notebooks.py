"""The user-facing notebooks run top to bottom (STYLE.md rule 12: living examples)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WKJUPYTER_NOTEBOOK_DATA", str(tmp_path / "demo"))
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", str(tmp_path / "data"))  # a fresh catalog
    monkeypatch.delenv("WKJUPYTER_CATALOG_URL", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Notebooks work in a catalog of their own: running one leaves the user's catalog alone.
    assert not (tmp_path / "data" / "catalog.sqlite").exists()
