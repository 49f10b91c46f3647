"""REST explore and import read local paths only under the allowed roots, whatever the form.

The check must look at the path each read really opens: ``~`` and ``~user`` expanded,
``file://`` URLs percent-decoded (any host), ``..`` and symlinks resolved, Neuroglancer
prefixes, pipelines (with their subpath) and states unwrapped, and, for imports, every mag
path joined to its layer's base URL. The server's working directory is inside the root, as
in Jupyter (whose root_dir is both), so a path read relative to it would pass a naive check.
"""

from __future__ import annotations

import getpass
import http.client
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pytest

from tests.catalog.fixtures import BACKENDS
from tests.server.live import LiveServer

if TYPE_CHECKING:
    from collections.abc import Iterator

OUTSIDE = "is outside the directories this server may import from"


@dataclass
class Roots:
    server: LiveServer
    root: Path  # the one allowed root, also the working directory
    outside: Path  # holds secret.zarr, a valid OME-Zarr
    home: Path  # $HOME, outside the root, holds secret.zarr too

    def post(self, route: str, body: dict[str, Any]) -> tuple[int, Any]:
        url = urlsplit(self.server.url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
        try:
            headers = {"Authorization": f"token {self.server.token}"}
            conn.request("POST", url.path + route, json.dumps(body).encode(), headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()


@pytest.fixture
def roots(
    catalog_url: str,
    tmp_path: Path,
    demo_sources: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Roots]:
    root, outside, home = tmp_path / "allowed", tmp_path / "outside", tmp_path / "home"
    for directory in (outside, home):
        shutil.copytree(demo_sources["ome-zarr"], directory / "secret.zarr")
    shutil.copytree(demo_sources["ome-zarr"], root / "cells.ome.zarr")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(root)
    with LiveServer(catalog_url, tmp_path, local_roots=[root]) as server:
        yield Roots(server, root, outside, home)


def _state(source: str) -> str:
    layers = [{"name": "x", "type": "image", "source": source}]
    return "https://neuroglancer-demo.appspot.com/#!" + quote(json.dumps({"layers": layers}))


def _forms(r: Roots) -> dict[str, str]:
    secret = r.outside / "secret.zarr"
    (r.root / "link.zarr").symlink_to(secret)
    (r.root / "linkdir").symlink_to(r.outside)
    encoded_up = f"file://{quote(str(r.root))}/%2E%2E/outside/secret.zarr"
    return {
        "tilde": "~/secret.zarr",
        "tilde-user": f"~{getpass.getuser()}/secret.zarr",  # that user's home, not the root
        "tilde-in-file-url": "zarr://file:///%7E/secret.zarr",  # reads "/~/secret.zarr"
        "symlink": str(r.root / "link.zarr"),
        "symlinked-dir": str(r.root / "linkdir" / "secret.zarr"),
        "dot-dot": f"{r.root}/../outside/secret.zarr",
        "file-url": secret.as_uri(),
        "file-localhost": f"file://localhost{secret}",
        "file-other-host": f"file://elsewhere{secret}",  # the host is ignored when reading
        "percent-encoded-dot-dot": encoded_up,
        "ng-prefix": "zarr://" + encoded_up,
        "ng-pipeline-subpath": r.root.as_uri() + "|zarr2:../outside/secret.zarr",
        "ng-state": _state("zarr://" + encoded_up),
        "ng-state-subpath": _state(r.root.as_uri() + "/|zarr:../outside/secret.zarr"),
        "ng-state-tilde": _state("zarr://~/secret.zarr"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_form_of_an_outside_path_is_refused_before_reading(roots: Roots) -> None:
    let_through = []
    for form, url in _forms(roots).items():
        for route in ("api/explore", "api/datasets"):
            status, doc = roots.post(route, {"urls": [url]})
            if status != 403:
                let_through.append((form, route, status))
                continue
            assert OUTSIDE in doc["message"], form
            assert str(roots.root) in doc["message"]
            assert "exist" not in doc["message"]  # nothing was read, nothing told
    assert let_through == []
    status, doc = roots.post("api/datasets", {"urls": [str(roots.root / "cells.ome.zarr")]})
    assert status == 201, doc  # the root itself works
    status, doc = roots.post("api/datasets", {"urls": ["cells.ome.zarr"], "name": "relative"})
    assert status == 201, doc  # and paths relative to the working directory inside it


def test_tilde_inside_the_root_is_allowed(roots: Roots, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(roots.root))
    status, doc = roots.post("api/explore", {"urls": ["~/cells.ome.zarr"]})
    assert (status, doc["found"]) == (200, True), doc


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_naming_data_outside_the_root_is_refused(roots: Roots) -> None:
    # A webKnossos datasource-properties.json inside the root whose mags lie outside it.
    wk = roots.root / "wk"
    wk.mkdir()
    status, doc = roots.post("api/explore", {"urls": [str(roots.root / "cells.ome.zarr")]})
    assert status == 200, doc
    properties = doc["datasource"]
    for layer in properties["dataLayers"]:
        for mag in layer["mags"]:
            inside = mag["path"].removeprefix(str(roots.root / "cells.ome.zarr"))
            mag["path"] = f"../../outside/secret.zarr{inside}"
    (wk / "datasource-properties.json").write_text(json.dumps(properties))
    for route in ("api/explore", "api/datasets"):
        status, doc = roots.post(route, {"urls": [str(wk)], "name": "escape"})
        assert status == 403, doc
        assert OUTSIDE in doc["message"]
    assert roots.post("api/datasets", {"urls": [str(roots.root / "cells.ome.zarr")]})[0] == 201


def _escape(r: Roots, kind: str, target: str) -> Path:
    """A dataset folder inside the root whose metadata leads to ``outside/<target>``: an OME-Zarr
    copy there (``secret.zarr``, uint8) or nothing (``missing.zarr``). Returns the folder."""
    cells = json.loads((r.root / "cells.ome.zarr" / ".zattrs").read_text())
    folder = r.root / f"{kind}-{target}"
    folder.mkdir()
    if kind.endswith("symlink"):  # a path through a symlink inside the dataset
        (folder / "escape").symlink_to(r.outside / target)
        path = "escape/0"
    else:  # climbing out (explore never reads it; the check after exploring refuses it)
        path = f"../../outside/{target}/0"
    if kind == "ngff-symlink":  # multiscales dataset paths
        for ds in cells["multiscales"][0]["datasets"]:
            ds["path"] = f"escape/{ds['path']}"
        (folder / ".zattrs").write_text(json.dumps(cells))
        (folder / ".zgroup").write_text('{"zarr_format": 2}')
        return folder
    properties = {  # says uint16: a read of the outside uint8 .zarray would tell its dtype
        "id": {"name": "escape", "team": ""},
        "scale": [1, 1, 1],
        "dataLayers": [
            {
                "name": "color",
                "category": "color",
                "elementClass": "uint16",
                "dataFormat": "zarr",
                "boundingBox": {"topLeft": [0, 0, 0], "width": 8, "height": 8, "depth": 8},
                "mags": [{"mag": [1, 1, 1], "path": path}],
            }
        ],
    }
    (folder / "datasource-properties.json").write_text(json.dumps(properties))
    return folder


@pytest.mark.parametrize("kind", ["wk-symlink", "ngff-symlink", "wk-dot-dot"])
def test_metadata_leading_outside_reads_nothing_there(roots: Roots, kind: str) -> None:
    """Metadata inside the root that names data outside it: refused while exploring, on the
    read itself, with one answer whether the outside data exists or not (no existence
    oracle) and nothing of it (dtype, shape) in the answer."""
    answers = {}
    for target in ("secret.zarr", "missing.zarr"):
        folder = _escape(roots, kind, target)
        for route in ("api/explore", "api/datasets"):
            status, doc = roots.post(route, {"urls": [str(folder)]})
            assert status == 403, (kind, target, route, doc)
            assert OUTSIDE in doc["message"]
            text = json.dumps(doc)
            for leak in ("uint8", "|u1", "does not exist", "stores", "64, 160, 192"):
                assert leak not in text, (kind, target, route, doc)
            answers[target, route] = text.replace(target, "T").replace(folder.name, "F")
    for route in ("api/explore", "api/datasets"):
        assert answers["secret.zarr", route] == answers["missing.zarr", route], route


def test_a_symlinked_folder_out_is_not_explored(roots: Roots) -> None:
    """Exploring a folder inside the root descends into its sub-folders: a symlink among
    them that leads outside is not one (whether its target exists or not)."""
    parent = roots.root / "parent"
    parent.mkdir()
    (parent / "out").symlink_to(roots.outside)
    (parent / "gone").symlink_to(roots.outside / "nothing-here")
    status, doc = roots.post("api/explore", {"urls": [str(parent)]})
    assert (status, doc["found"]) == (200, False), doc
    assert "secret" not in json.dumps(doc)
    assert not any("/out" in step["url"] or "/gone" in step["url"] for step in doc["steps"])
