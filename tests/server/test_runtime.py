"""The server-info contract between the server extension and kernels, on real runtime files."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_server.serverapp import ServerApp

from wkjupyter.errors import MetadataError
from wkjupyter.server.runtime import (
    ServerInfo,
    discover_catalog_url,
    discover_data_dir,
    discover_public_url,
    info_path,
    jupyterhub_url,
    read_server_info,
    remove_server_info,
    running_server_url,
    server_public_url,
    write_server_info,
)

ENV = (
    "WKJUPYTER_PUBLIC_URL",
    "WKJUPYTER_CATALOG_URL",
    "WKJUPYTER_DATA_DIR",
    "JPY_PARENT_PID",
    "JUPYTERHUB_PUBLIC_URL",
    "JUPYTERHUB_SERVICE_PREFIX",
)


@pytest.fixture(autouse=True)
def runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh Jupyter runtime dir (not yet created) and none of the discovery variables."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    return path


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_jpserver_file(runtime: Path, *, base_url: str = "/", port: int = 8899) -> ServerApp:
    """Write this process's ``jpserver-<pid>.json`` with jupyter_server's own writer."""
    runtime.mkdir(parents=True, exist_ok=True)
    app = ServerApp(ip="127.0.0.1", port=port, base_url=base_url, runtime_dir=str(runtime))
    app.init_configurables()  # the identity provider, which server_info() reads the token from
    app.write_server_info_file()
    return app


# --- the server info file ------------------------------------------------------------------


def test_write_read_remove(runtime: Path) -> None:
    info = ServerInfo(os.getpid(), "http://localhost:8888", "sqlite:////x/c.sqlite", "/x")
    assert info.url == "http://localhost:8888/"  # trailing "/" added

    path = write_server_info(info)
    assert path == info_path(os.getpid()) == runtime / f"wkjupyter-server-{os.getpid()}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(runtime) == [path.name]  # the temporary file was renamed, not left
    assert json.loads(path.read_text())["catalog_url"] == "sqlite:////x/c.sqlite"
    assert read_server_info(os.getpid()) == info

    write_server_info(ServerInfo(os.getpid(), "http://localhost:9999/"))  # replaces
    assert read_server_info(os.getpid()) == ServerInfo(os.getpid(), "http://localhost:9999/")

    remove_server_info(os.getpid())
    assert not path.exists()
    remove_server_info(os.getpid())  # already gone: fine
    assert read_server_info(os.getpid()) is None


def test_read_defaults_to_the_kernels_server(monkeypatch: pytest.MonkeyPatch) -> None:
    info = ServerInfo(os.getpid(), "https://hub.example.org/user/alice/")
    write_server_info(info)
    assert read_server_info() is None  # no $JPY_PARENT_PID: not in a kernel
    monkeypatch.setenv("JPY_PARENT_PID", "not-a-pid")  # e.g. a Windows handle
    assert read_server_info() is None
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert read_server_info() == info


def test_a_dead_servers_file_is_ignored(dead_pid: int) -> None:
    write_server_info(ServerInfo(dead_pid, "http://localhost:8888/"))
    assert read_server_info(dead_pid) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"url": "http://h/"}', "'pid' must be a positive integer"),
        ('{"pid": true, "url": "http://h/"}', "'pid' must be a positive integer"),
        ('{"pid": 12, "url": ""}', "'url' must be a non-empty string"),
        ('{"pid": 12, "url": "http://h/", "catalog_url": 5}', "'catalog_url' must be"),
        ('{"pid": 12, "url": "http://h/"}', "it names pid 12"),  # not this file's pid
    ],
)
def test_a_malformed_file_is_ignored_with_a_warning(
    runtime: Path, content: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = info_path(os.getpid())
    runtime.mkdir()
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="wkjupyter.server.runtime"):
        assert read_server_info(os.getpid()) is None
    (record,) = caplog.records
    assert str(path) in record.getMessage()
    assert reason in record.getMessage()


def test_server_info_json_round_trip() -> None:
    info = ServerInfo(42, "https://h/user/a/", None, "/data")
    assert ServerInfo.from_json(info.to_json()) == info
    assert ServerInfo.from_json('{"pid": 42, "url": "https://h", "extra": 1}').url == "https://h/"
    with pytest.raises(MetadataError, match="'data_dir' must be a string or null"):
        ServerInfo.from_json('{"pid": 42, "url": "https://h/", "data_dir": ["x"]}')


# --- JupyterHub and jupyter_server ---------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "prefix", "expected"),
    [
        (None, None, None),
        (None, "/user/alice/", None),  # a bare prefix: relative, so no URL
        ("", "/user/alice/", None),  # JupyterHub sets it empty without a public_url
        # JupyterHub >= 5 gives this server's public URL, prefix included.
        ("https://hub.example/user/alice/", "/user/alice/", "https://hub.example/user/alice/"),
        ("https://hub.example.org", "/user/alice/", "https://hub.example.org/user/alice/"),
        ("https://hub.example.org/", "user/alice", "https://hub.example.org/user/alice/"),
        ("https://hub.example.org/user/alice", None, "https://hub.example.org/user/alice/"),
        ("https://h/pre/user/a%40b/x/", "/pre/user/a%40b/x/", "https://h/pre/user/a%40b/x/"),
    ],
)
def test_jupyterhub_url(
    monkeypatch: pytest.MonkeyPatch, public: str | None, prefix: str | None, expected: str | None
) -> None:
    for name, value in (("JUPYTERHUB_PUBLIC_URL", public), ("JUPYTERHUB_SERVICE_PREFIX", prefix)):
        if value is not None:
            monkeypatch.setenv(name, value)
    assert jupyterhub_url() == expected


def test_running_server_url_reads_jupyter_servers_runtime_files(
    runtime: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    assert running_server_url(os.getpid()) is None  # no runtime dir yet
    write_jpserver_file(runtime, base_url="/user/alice/")
    assert (runtime / f"jpserver-{os.getpid()}.json").exists()
    assert running_server_url(os.getpid()) == "http://127.0.0.1:8899/user/alice/"
    assert running_server_url(dead_pid) is None
    assert running_server_url() is None  # no $JPY_PARENT_PID
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert running_server_url() == "http://127.0.0.1:8899/user/alice/"

    # A server on a Unix socket has no URL a viewer could use.
    info = json.loads((runtime / f"jpserver-{os.getpid()}.json").read_text())
    info |= {"sock": "/tmp/jp.sock", "url": "http+unix://%2Ftmp%2Fjp.sock/"}
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(info))
    assert running_server_url() is None


def test_server_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = "http://host.local:8888/base/"
    assert server_public_url("https://data.example.org/base", connection) == (
        "https://data.example.org/base/"
    )
    assert server_public_url(None, "http://host.local:8888") == "http://host.local:8888/"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    assert server_public_url("", connection) == connection  # a prefix alone is not a URL
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", "https://hub.example.org/user/alice/")
    assert server_public_url(None, connection) == "https://hub.example.org/user/alice/"
    assert server_public_url("https://other.org/x/", connection) == "https://other.org/x/"


# --- discovery -----------------------------------------------------------------------------


def test_discover_public_url_precedence(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover_public_url() is None  # nothing known, not in a kernel
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert discover_public_url() is None  # a kernel, but its server is not running

    write_jpserver_file(runtime, port=8899)
    assert discover_public_url() == "http://127.0.0.1:8899/"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    assert discover_public_url() == "http://127.0.0.1:8899/"  # the prefix alone is not used
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", "https://hub.example.org/")
    assert discover_public_url() == "https://hub.example.org/user/alice/"
    write_server_info(ServerInfo(os.getpid(), "https://data.example.org/alice"))
    assert discover_public_url() == "https://data.example.org/alice/"
    monkeypatch.setenv("WKJUPYTER_PUBLIC_URL", "http://env.example.org:8000")
    assert discover_public_url() == "http://env.example.org:8000/"
    assert discover_public_url("https://given.example.org/x") == "https://given.example.org/x/"
    assert discover_public_url("") == "http://env.example.org:8000/"  # empty means not given


def test_discover_catalog_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover_catalog_url() is None  # the default catalog
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    write_server_info(ServerInfo(os.getpid(), "http://localhost:8888/"))
    assert discover_catalog_url() is None  # the server uses the default catalog too
    write_server_info(ServerInfo(os.getpid(), "http://localhost:8888/", "postgresql://db/wk"))
    assert discover_catalog_url() == "postgresql://db/wk"
    monkeypatch.setenv("WKJUPYTER_CATALOG_URL", "sqlite:////env.sqlite")
    assert discover_catalog_url() == "sqlite:////env.sqlite"
    assert discover_catalog_url("sqlite:////given.sqlite") == "sqlite:////given.sqlite"


def test_discover_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert discover_data_dir() is None  # the default
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    write_server_info(ServerInfo(os.getpid(), "http://localhost:8888/"))
    assert discover_data_dir() is None
    write_server_info(ServerInfo(os.getpid(), "http://localhost:8888/", None, "/srv/wk"))
    assert discover_data_dir() == Path("/srv/wk")
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", "~/wk")
    assert discover_data_dir() == Path("~/wk").expanduser()
    assert discover_data_dir(tmp_path) == tmp_path
