"""End to end: the *installed* package in real server processes.

A wheel of this checkout is installed into a fresh virtual environment (its dependencies come
from the test environment through a ``.pth`` file), so these tests see what
``pip install wkjupyter`` gives a user: the package, its console script and the
``etc/jupyter/jupyter_server_config.d/wkjupyter.json`` that enables the extension; an editable
install may lack that file. ``jupyter server`` is started as ``<venv>/bin/python -m
jupyter_server`` (the same ServerApp): the ``jupyter`` launcher would find the test
environment's ``jupyter-server`` script on ``PATH`` and leave the venv. As in
jupyter-server-proxy's own tests, the server gets a token, a free port and its own config,
data and runtime directories, and is polled until it answers.

Building the wheel needs pip to fetch hatchling (build isolation) unless it is installed.
Without that the tests skip, except under CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import zarr

import wkjupyter
from wkjupyter.hub import Hub

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


@dataclass(frozen=True)
class Installed:
    """wkjupyter installed from a wheel into a virtual environment."""

    prefix: Path

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def wkjupyter(self) -> Path:
        return self.prefix / "bin" / "wkjupyter"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    wheels, venv = root / "wheels", root / "venv"
    isolation = ["--no-build-isolation"] if find_spec("hatchling") else []
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation]
    _setup_step([*build, "-w", str(wheels), str(REPO)], "build a wheel of the checkout")
    (wheel,) = wheels.glob("wkjupyter-*.whl")
    _setup_step([sys.executable, "-m", "venv", str(venv)], "make a venv")
    env = Installed(venv)
    _see_test_packages(env)
    install = [str(env.python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    _setup_step(install, "install the wheel")
    return env


def _see_test_packages(env: Installed) -> None:
    """Let ``env`` import the test environment's packages (its dependencies), behind its own.

    ``venv --system-site-packages`` would give it the *base* interpreter's packages, which are
    not the test environment's when the tests run in a virtual environment (as they do in CI).
    Plain paths in a ``.pth`` file are appended after the venv's own site-packages, and the
    ``.pth`` files inside them (the checkout's editable install) are not run, so the wheel's
    ``wkjupyter`` is the one imported.
    """
    (site_packages,) = env.prefix.glob("lib/python*/site-packages")
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (site_packages / "wkjupyter-test-deps.pth").write_text("".join(f"{p}\n" for p in paths))


def _setup_step(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode == 0:
        return
    msg = f"cannot {what} ({' '.join(cmd)}): {done.stderr.strip()[-2000:]}"
    if _in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's environment without anything Jupyter or wkjupyter would read from it, plus
    private config, data and runtime dirs (the installed env's config path stays in use)."""
    drop = ("JUPYTER", "JPY_", "WKJUPYTER", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for name in ("config", "data", "runtime"):
        (tmp / name).mkdir(exist_ok=True)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        **extra,
    )
    return env


@dataclass
class Catalog:
    url: str
    data_dir: Path
    hub: Hub
    source: Path


@pytest.fixture
def catalog(tmp_path: Path, demo_sources: dict[str, Path]) -> Iterator[Catalog]:
    """``cells`` (public) and ``secret`` (private): the demo OME-Zarr, in a SQLite catalog."""
    data_dir = tmp_path / "catalog"
    url = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    hub = Hub(url, "owner", data_dir=data_dir, public_url="http://example.invalid/")
    source = demo_sources["ome-zarr"]
    hub.add_remote(str(source), name="cells", public=True)
    hub.add_remote(str(source), name="secret", public=False)
    yield Catalog(url, data_dir, hub, source)
    hub.catalog.dispose()


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``cmd`` as a child process with its output in ``cwd/output.log``; killed if still
    running at the end (a failing test must not leave a server behind)."""
    log = (cwd / "output.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def output_of(cwd: Path) -> str:
    return _ANSI.sub("", (cwd / "output.log").read_text())


def wait_until(proc: subprocess.Popen[str], cwd: Path, ready: Any, what: str) -> Any:
    """Poll ``ready()`` every 0.2 s until it returns something truthy (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before {what}:\n{output_of(cwd)}")
        with contextlib.suppress(OSError):
            if result := ready():
                return result
        time.sleep(0.2)
    pytest.fail(f"not {what} after 60 s:\n{output_of(cwd)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(url: str, *, token: str | None = None, method: str = "GET", body: Any = None) -> Any:
    """(status, body bytes) of a request; no exception for error statuses."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def assert_served_equals_source(url: str, source: Path) -> None:
    served = zarr.open_array(f"{url}cells/4/", mode="r", zarr_format=2)[...]
    stored = zarr.open_array(source / "2", mode="r")[...]
    np.testing.assert_array_equal(served[0], stored.reshape(served.shape[1:]))


# -- jupyter server ------------------------------------------------------------------------------

KERNEL = """
from wkjupyter import Hub
hub = Hub()
print(hub.public_url, hub.dataset("cells").zarr_url())
"""


def test_jupyter_server_with_the_installed_extension(
    installed: Installed, catalog: Catalog, tmp_path: Path
) -> None:
    config = installed.prefix / "etc/jupyter/jupyter_server_config.d/wkjupyter.json"
    assert json.loads(config.read_text())["ServerApp"]["jpserver_extensions"]["wkjupyter"]
    token, port = secrets.token_hex(16), free_port()
    env = clean_env(
        tmp_path, JUPYTER_TOKEN=token, WKJUPYTER_CATALOG_URL=catalog.url,
        WKJUPYTER_DATA_DIR=str(catalog.data_dir),
    )  # fmt: skip
    where = subprocess.run(
        [installed.python, "-c", "import wkjupyter; print(wkjupyter.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed.prefix))  # the wheel, not the checkout

    listed = subprocess.run(
        [installed.python, "-m", "jupyter_server", "extension", "list"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text = _ANSI.sub("", listed.stdout + listed.stderr)
    assert re.search(
        rf"Config dir: {re.escape(str(config.parent.parent))}\n\s+wkjupyter enabled", text
    ), text
    assert f"wkjupyter {wkjupyter.__version__} OK" in text

    (root := tmp_path / "root").mkdir()
    server = [
        str(installed.python), "-m", "jupyter_server", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    with running(server, env, tmp_path) as proc:
        wait_until(proc, tmp_path, lambda: fetch(f"{base}api/status", token=token)[0] == 200,
                   "answering")  # fmt: skip
        status, body = fetch(f"{base}wkjupyter/zarr/cells/.zgroup")  # no token
        assert (status, json.loads(body)) == (200, {"zarr_format": 2})
        assert fetch(f"{base}wkjupyter/zarr/secret/.zgroup")[0] == 404
        assert_served_equals_source(f"{base}wkjupyter/zarr/cells/", catalog.source)

        info_file = tmp_path / "runtime" / f"wkjupyter-server-{proc.pid}.json"
        info = wait_until(proc, tmp_path, lambda: json.loads(info_file.read_text()), "ready")
        assert (info["pid"], info["url"]) == (proc.pid, base)
        # info["catalog_url"] is null: it records only a configured trait, and kernels inherit
        # $WKJUPYTER_CATALOG_URL. What a kernel of this server finds is what matters:
        kernel = subprocess.run(
            [installed.python, "-c", KERNEL], env={**env, "JPY_PARENT_PID": str(proc.pid)},
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert kernel.stdout.split() == [base, f"{base}wkjupyter/zarr/cells/"], kernel.stderr

        assert fetch(f"{base}api/shutdown", token=token, method="POST")[0] == 200
        assert proc.wait(30) == 0, output_of(tmp_path)
    assert not info_file.exists()  # removed when the extension stops
    assert "wkjupyter: data routes at" in output_of(tmp_path)


# -- wkjupyter serve -----------------------------------------------------------------------------


def test_wkjupyter_serve(installed: Installed, catalog: Catalog, tmp_path: Path) -> None:
    cmd = [
        str(installed.wkjupyter), "serve", "--port", "0", "--catalog-url", catalog.url,
        "--data-dir", str(catalog.data_dir), "--user", "owner",
    ]  # fmt: skip
    started = re.compile(r"serving .* at (http://127\.0\.0\.1:\d+/wkjupyter/)\n.*: (\S+)\n")
    with running(cmd, clean_env(tmp_path), tmp_path) as proc:
        url, token = wait_until(
            proc, tmp_path, lambda: started.search(output_of(tmp_path)), "listening"
        ).groups()
        assert fetch(f"{url}zarr/cells/.zgroup")[0] == 200
        assert fetch(f"{url}zarr/secret/.zgroup")[0] == 404
        assert fetch(f"{url}zarr/secret/.zgroup", token=token)[0] == 200
        assert_served_equals_source(f"{url}zarr/cells/", catalog.source)

        status, body = fetch(f"{url}api/datasets", token=token)
        assert [d["name"] for d in json.loads(body)["datasets"]] == ["cells", "secret"]
        assert fetch(f"{url}api/datasets")[0] == 403
        status, body = fetch(
            f"{url}api/links", token=token, method="POST", body={"dataset": "secret"}
        )
        assert status == 201
        link = json.loads(body)
        assert link["url"].startswith(f"{url}links/")
        for _ in range(3):
            assert fetch(f"{link['zarr_url']}cells/1/.zarray")[0] == 200

        proc.send_signal(signal.SIGTERM)  # before the uses are flushed (every 2 s)
        assert proc.wait(30) == 0, output_of(tmp_path)
    assert catalog.hub.link(link["id"]).use_count == 3
