"""The demo a newcomer runs first, and the command line around it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wkjupyter.cli import main
from wkjupyter.demo import make_volume, run_demo
from wkjupyter.geometry import Mag


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list]:
    root = tmp_path_factory.mktemp("data") / "demo"
    lines: list[str] = []
    reports = run_demo(root, echo=lines.append)
    return root, lines, reports


def test_demo_finds_every_format(demo: tuple[Path, list[str], list]) -> None:
    _root, lines, reports = demo
    text = "\n".join(lines)
    for fmt in ("OME-Zarr 0.4", "N5", "Neuroglancer precomputed"):
        assert fmt in text
    for report in reports:
        ds = report.datasource
        assert ds is not None, report
        categories = sorted(layer.category for layer in ds.layers.values())
        assert categories == ["color", "segmentation"], report
        for layer in ds.layers.values():
            assert list(layer.mags) == [Mag(1), Mag(2), Mag(4)]
            assert ds.voxel_size.as_tuple() == (40.0, 8.0, 8.0)


def test_demo_data_reads_back_exactly(demo: tuple[Path, list[str], list]) -> None:
    vol = make_volume()
    for report in demo[2]:
        for layer in report.datasource.layers.values():
            arrays = vol.labels if layer.category == "segmentation" else vol.image
            for f in (1, 2, 4):
                got = layer.read(mag=str(f))
                np.testing.assert_array_equal(got[0], arrays[f], err_msg=f"{layer} mag {f}")


def test_cli_explore_json(
    demo: tuple[Path, list[str], list], capsys: pytest.CaptureFixture[str]
) -> None:
    root = demo[0]
    assert main(["explore", str(root / "cells.n5"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in out["datasource"]["dataLayers"]} == {"raw", "segmentation"}
    assert any(s["outcome"] == "ok" for s in out["steps"])


def test_cli_explore_nothing_found_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explore", str(tmp_path)]) == 1
    assert "found no dataset" in capsys.readouterr().out


def test_console_script_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wkjupyter.cli", "explore", "ftp://nowhere/x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "uses 'ftp://'" in out.stdout
    assert "http(s)://, gs://, s3://" in out.stdout
