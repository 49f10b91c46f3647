"""The demo a newcomer runs first, and the command line around it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
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


def test_demo_says_where_to_look(
    demo: tuple[Path, list[str], list],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The demo's catalog is its own: it prints the command that lists it, and the address of
    its landing page."""
    root, lines, _ = demo
    (command,) = [line.strip() for line in lines if "wkjupyter ls --catalog-url" in line]
    args = shlex.split(command)
    assert args[:2] == ["wkjupyter", "ls"]
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", str(tmp_path))  # not the user's data dir
    monkeypatch.delenv("WKJUPYTER_CATALOG_URL", raising=False)
    assert main(args[1:]) == 0
    out = capsys.readouterr()
    assert str(root / "catalog.sqlite") in out.err
    listed = [line.split()[:2] for line in out.out.splitlines()]
    assert len(listed) == 3
    assert all(visibility == "public" for _, visibility in listed)


@pytest.mark.slow
def test_demo_serve_lands_on_a_page(tmp_path: Path) -> None:
    """``wkjupyter demo --serve`` as a user runs it: the address it prints opens a page that
    lists the demo datasets, until Ctrl-C."""
    env = {**os.environ, "WKJUPYTER_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "wkjupyter.cli", "demo", "--serve", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    try:
        lines = []
        while not lines or not lines[-1].startswith("serving until Ctrl-C"):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        (served,) = [line for line in lines if line.startswith("serving the demo catalog at")]
        address = served.split()[5]
        assert address.endswith("/wkjupyter/")
        with urllib.request.urlopen(address, timeout=30) as response:
            page = response.read().decode()
        assert page.count('class="dataset"') == 3
        assert "Open in Neuroglancer" in page
        assert any(line.startswith(f"open {address} in a browser") for line in lines)
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopped" in out
