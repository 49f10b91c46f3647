"""The Hub facade end to end: real data, real catalog (SQLite and PostgreSQL), real HTTP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pytest

import wkjupyter as wkj
from wkjupyter.demo import make_volume, write_demo
from wkjupyter.errors import (
    DatasetNotFoundError,
    LayerNotFoundError,
    NothingFoundError,
    PermissionDeniedError,
    ServerNotFoundError,
)
from wkjupyter.hub import Hub
from wkjupyter.server.runtime import ServerInfo, remove_server_info, write_server_info
from wkjupyter.sources.neuroglancer import SourceSpec, parse_neuroglancer_url

if TYPE_CHECKING:
    from tests.servers import HTTPServerFactory

SHAPE = (24, 48, 56)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    vol = make_volume(SHAPE, cells=8)
    return write_demo(tmp_path_factory.mktemp("hub") / "demo", vol)


@pytest.fixture
def hub(catalog_url: str, tmp_path: Path) -> Hub:
    return Hub(
        catalog_url, "alice", data_dir=tmp_path, public_url="https://jupyter.example.org/user/alice"
    )


def as_user(hub: Hub, name: str) -> Hub:
    return Hub(hub.catalog.url, name, data_dir=hub.catalog.data_dir)


def test_import_find_read_tag_rename_delete(hub: Hub, demo: dict[str, Path]) -> None:
    report = hub.explore(str(demo["OME-Zarr 0.4"]))
    ds = hub.add_remote(report, name="Mouse-Cortex", tags=["EM", "demo"], description="cells")
    assert ds.name == "mouse-cortex"
    assert set(ds.tags) == {"em", "demo"}
    assert ds.owner == "alice"  # the first user, and admin
    assert hub.users() == [("alice", "admin")]
    # Nothing was copied: the stored layers read straight from the source.
    vol = make_volume(SHAPE, cells=8)
    np.testing.assert_array_equal(ds.layers["cells"].read(mag="2")[0], vol.image[2])
    assert ds["segmentation"].category == "segmentation"

    assert [d.name for d in hub.datasets(search="CELLS mouse")] == ["mouse-cortex"]
    assert [d.name for d in hub.datasets(search="segmentation")] == ["mouse-cortex"]  # layer
    assert hub.datasets(search="nothing-like-this") == []
    assert [d.name for d in hub.datasets(tags=["em"])] == ["mouse-cortex"]

    ds.tags.add("cortex")
    ds.tags.discard("demo")
    assert sorted(ds.tags) == ["cortex", "em"]
    ds.tags = ["x"]
    assert list(ds.tags) == ["x"]
    ds.description = "updated"
    assert hub.dataset("mouse-cortex").description == "updated"

    ds.rename("cortex-v2")
    assert hub.dataset("mouse-cortex").name == "cortex-v2"  # the old name still answers
    ds.delete()
    with pytest.raises(DatasetNotFoundError, match="cortex-v2"):
        hub.dataset("cortex-v2")


def test_add_layers_from_another_source(hub: Hub, demo: dict[str, Path]) -> None:
    ds = hub.add_remote(str(demo["N5"] / "raw"), name="mixed")
    ds.add_layers(f"precomputed://file://{demo['Neuroglancer precomputed']}/segmentation")
    assert sorted(ds.layers) == ["raw", "segmentation"]
    seg = ds.layers["segmentation"]
    assert seg.data_format == "neuroglancerPrecomputed"
    vol = make_volume(SHAPE, cells=8)
    np.testing.assert_array_equal(seg.read()[0], vol.labels[1])


def test_private_datasets_are_invisible_to_others(hub: Hub, demo: dict[str, Path]) -> None:
    hub.add_user("bob", "viewer")
    ds = hub.add_remote(str(demo["N5"]), name="private-one")
    bob = as_user(hub, "bob")
    assert bob.datasets() == []
    with pytest.raises(DatasetNotFoundError):
        bob.dataset("private-one")
    ds.public = True
    assert [d.name for d in bob.datasets()] == ["private-one"]
    with pytest.raises(PermissionDeniedError, match="bob"):
        bob.dataset("private-one").tags.add("mine")
    with pytest.raises(PermissionDeniedError):
        bob.add_remote(str(demo["N5"]), name="bobs")  # viewers cannot import


def test_team_members_share_private_datasets(hub: Hub, demo: dict[str, Path]) -> None:
    hub.add_user("carol", "editor")
    hub.add_team("lab")
    hub.add_member("lab", "carol", "editor")
    ds = hub.add_remote(str(demo["N5"]), name="team-data")
    carol = as_user(hub, "carol")
    assert carol.datasets() == []
    ds.allowed_teams = ["lab"]
    assert [d.name for d in carol.datasets()] == ["team-data"]
    carol.dataset("team-data").tags.add("reviewed")
    with pytest.raises(PermissionDeniedError):
        carol.dataset("team-data").public = True  # administering needs ownership
    hub.set_member_role("lab", "carol", "viewer")
    assert hub.members("lab") == [("carol", "viewer")]
    with pytest.raises(PermissionDeniedError):
        carol.dataset("team-data").tags.add("again")  # a team viewer only reads
    with pytest.raises(PermissionDeniedError):
        carol.add_team("mine")  # managing teams is for admins


def test_links(hub: Hub, demo: dict[str, Path]) -> None:
    ds = hub.add_remote(str(demo["OME-Zarr 0.4"]), name="shared")
    link = ds.create_link(expires="7d", label="reviewer", layers=["cells"])
    assert link.url.startswith("https://jupyter.example.org/user/alice/wkjupyter/links/")
    assert link.token in link.url
    assert link.layer_url("cells") == f"{link.url}zarr/cells/"
    assert link.layer_url("cells", zarr_format=3) == f"{link.url}zarr3/cells/"
    with pytest.raises(LayerNotFoundError, match="grants no layer 'segmentation'; it grants cells"):
        link.layer_url("segmentation")
    assert link.label == "reviewer"
    assert link.use_count == 0
    assert not link.revoked
    granted = hub.resolve_token(link.token)
    assert granted is not None
    assert granted.layers == ("cells",)
    assert [other.id for other in ds.links()] == [link.id]
    assert ds.links()[0].url == link.url  # the owner can copy it again
    link.update(expires="1d")
    assert link.expires_at is not None
    link.revoke()
    assert link.revoked
    assert hub.resolve_token(link.token) is None
    assert hub.resolve_token("not-a-token") is None


def test_zarr_urls(hub: Hub, demo: dict[str, Path]) -> None:
    ds = hub.add_remote(str(demo["OME-Zarr 0.4"]), name="Cortex")
    assert hub.public_url == "https://jupyter.example.org/user/alice/"  # "/" added
    base = "https://jupyter.example.org/user/alice/wkjupyter/"
    assert ds.zarr_url() == f"{base}zarr/cortex/"
    assert ds.zarr_url("cells") == f"{base}zarr/cortex/cells/"
    assert ds.zarr_url("segmentation", zarr_format=3) == f"{base}zarr3/cortex/segmentation/"
    with pytest.raises(LayerNotFoundError, match="'nuclei'; it has cells, segmentation"):
        ds.zarr_url("nuclei")
    with pytest.raises(ValueError, match="zarr_format must be 2 or 3"):
        ds.zarr_url(zarr_format=4)  # type: ignore[arg-type]
    ds.rename("cortex-v2")
    assert hub.dataset("cortex").zarr_url() == f"{base}zarr/cortex-v2/"  # always the current name


def ng_state(url: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(unquote(url.split("#!", 1)[1]))
    return state


def test_neuroglancer_urls(hub: Hub, demo: dict[str, Path]) -> None:
    report = hub.explore(str(demo["OME-Zarr 0.4"]))
    assert report.datasource is not None
    nm = report.datasource.voxel_size
    assert nm.unit == "nanometer"
    # Stored in micrometers: Neuroglancer still gets meters.
    report.datasource.voxel_size = nm.to_unit("um")
    ds = hub.add_remote(report, name="cortex")
    assert ds.datasource.voxel_size.unit == "micrometer"

    url = ds.neuroglancer_url()
    assert url.startswith("https://neuroglancer-demo.appspot.com/#!%7B%22dimensions%22:")
    layers, notes = parse_neuroglancer_url(url)
    assert notes == []
    assert [(layer.name, layer.category, layer.sources) for layer in layers] == [
        ("cells", "color", (SourceSpec(ds.zarr_url("cells"), "zarr2"),)),
        ("segmentation", "segmentation", (SourceSpec(ds.zarr_url("segmentation"), "zarr2"),)),
    ]
    state = ng_state(url)
    assert state["dimensions"] == {
        "x": [pytest.approx(nm.x * 1e-9), "m"],
        "y": [pytest.approx(nm.y * 1e-9), "m"],
        "z": [pytest.approx(nm.z * 1e-9), "m"],
    }
    z, y, x = SHAPE
    assert state["position"] == [x / 2, y / 2, z / 2]  # the centre, x, y, z in voxels
    assert state["layout"] == "4panel"

    url = ds.neuroglancer_url(["segmentation"], host="https://ng.example.org/")
    assert url.startswith("https://ng.example.org/#!")
    assert [layer.name for layer in parse_neuroglancer_url(url)[0]] == ["segmentation"]
    with pytest.raises(LayerNotFoundError, match="dataset 'cortex' has no layer 'nuclei'"):
        ds.neuroglancer_url(["cells", "nuclei"])

    # A link's Neuroglancer URL reads the link's tree, and only the layers it grants.
    link = ds.create_link(layers=["segmentation"])
    layers, notes = parse_neuroglancer_url(link.neuroglancer_url())
    assert notes == []
    assert [(layer.name, layer.sources[0].url) for layer in layers] == [
        ("segmentation", link.layer_url("segmentation"))
    ]
    assert link.layer_url("segmentation").startswith(link.url)
    with pytest.raises(LayerNotFoundError, match="grants no layer 'cells'"):
        link.neuroglancer_url(["cells"])
    everything = ds.create_link()
    state = ng_state(everything.neuroglancer_url())
    assert [layer["name"] for layer in state["layers"]] == ["cells", "segmentation"]
    assert state["dimensions"] == ng_state(ds.neuroglancer_url())["dimensions"]


@pytest.fixture
def in_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As in a kernel of a Jupyter server with this process's pid, known to nothing else."""
    for name in (
        "WKJUPYTER_PUBLIC_URL", "WKJUPYTER_CATALOG_URL", "WKJUPYTER_DATA_DIR",
        "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_SERVICE_PREFIX",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))


@pytest.mark.usefixtures("in_kernel")
def test_the_servers_url_and_catalog_are_discovered(
    catalog_url: str, tmp_path: Path, demo: dict[str, Path]
) -> None:
    data_dir = tmp_path / "server-data"
    hub = Hub(catalog_url, "alice", data_dir=data_dir)
    ds = hub.add_remote(str(demo["N5"]), name="found")
    link = ds.create_link()
    assert hub.public_url is None
    assert link.path == f"wkjupyter/links/{link.token}/"  # below the server's base URL
    with pytest.raises(ServerNotFoundError, match="WKJUPYTER_PUBLIC_URL") as info:
        link.url  # noqa: B018 (a URL that works, or an error saying what is missing)
    assert "Hub(public_url=" in str(info.value)
    assert json.loads(link.to_json())["url"] is None
    with pytest.raises(ServerNotFoundError, match="WKJUPYTER_PUBLIC_URL") as info:
        ds.zarr_url()
    assert "Hub(public_url=" in str(info.value)
    with pytest.raises(ServerNotFoundError):
        link.neuroglancer_url()

    # The server extension starts (this process plays its part) and records where it is.
    public = "https://data.example.org/user/alice"
    write_server_info(ServerInfo(os.getpid(), public, catalog_url, str(data_dir)))
    assert ds.zarr_url() == f"{public}/wkjupyter/zarr/found/"
    assert link.url == f"{public}/wkjupyter/links/{link.token}/"
    fresh = Hub(user="alice")  # finds the server's catalog and its secret key
    assert fresh.catalog.url == hub.catalog.url
    assert fresh.catalog.data_dir == data_dir
    assert [other.url for other in fresh.dataset("found").links()] == [link.url]

    # Once found, the URL is kept; assigning replaces it, None looks it up again.
    remove_server_info(os.getpid())
    assert hub.public_url == f"{public}/"
    hub.public_url = "http://localhost:8888"
    assert ds.zarr_url("raw") == "http://localhost:8888/wkjupyter/zarr/found/raw/"
    hub.public_url = None
    assert hub.public_url is None


def test_stored_credentials_serve_reads_and_rotate(
    hub: Hub, demo: dict[str, Path], http_server: HTTPServerFactory
) -> None:
    root = demo["N5"].parent
    server = http_server(root, basic_auth=("reader", "first-secret"))
    url = server.url_for("cells.n5")
    ds = hub.add_remote(url, name="remote", credential=wkj.HttpCredential("reader", "first-secret"))
    fresh = Hub(hub.catalog.url, "alice", data_dir=hub.catalog.data_dir)  # a new session
    layer = fresh.dataset("remote").layers["raw"]
    np.testing.assert_array_equal(layer.read()[0], make_volume(SHAPE, cells=8).image[1])

    (info,) = hub.credentials()
    assert info.kind == "http"
    assert "first-secret" not in repr(info)
    assert "first-secret" not in repr(ds.datasource.layers["raw"])

    server.basic_auth = ("reader", "second-secret")
    with pytest.raises(wkj.RemoteAccessError):
        fresh.dataset("remote").layers["raw"].read()
    hub.rotate_credential(info.name, wkj.HttpCredential("reader", "second-secret"))
    np.testing.assert_array_equal(
        fresh.dataset("remote").layers["raw"].read()[0], make_volume(SHAPE, cells=8).image[1]
    )


def test_nothing_to_import_says_why(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to import"):
        hub.add_remote(str(tmp_path / "missing"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_to_import_is_short_and_keeps_the_report(hub: Hub) -> None:
    url = f"https://127.0.0.1:{closed_port()}/x.zarr"
    with pytest.raises(NothingFoundError) as info:
        hub.add_remote(url, name="unreachable")
    cause, remedy = str(info.value).splitlines()
    assert cause.startswith("nothing to import: found no dataset: the host did not answer")
    assert f"cannot reach '{url}/" in cause
    assert (
        remedy == "check the host name and your network; print(err.report) lists every attempt (1)"
    )
    assert len(str(info.value)) < 400
    (step,) = info.value.report.steps
    assert step.url == url
    assert hub.datasets() == []


def test_unknown_layers_name_the_layers(hub: Hub, demo: dict[str, Path]) -> None:
    ds = hub.add_remote(str(demo["OME-Zarr 0.4"]), name="cortex")
    with pytest.raises(LayerNotFoundError) as info:
        ds["nope"]
    assert str(info.value) == "dataset 'cortex' has no layer 'nope'; it has cells, segmentation"
    with pytest.raises(LayerNotFoundError, match="dataset 'cortex' has no layer 'nope'"):
        ds.layers["nope"]


def _worker(url: str, data_dir: str, source: str, k: int, n: int) -> None:
    hub = Hub(url, "alice", data_dir=Path(data_dir))
    common = hub.dataset("common")
    for i in range(n):
        ds = hub.add_remote(source, name=f"w{k}-{i}", tags=[f"worker-{k}"])
        ds.tags.add("shared")
        ds.create_link(expires="1d", label=f"{k}-{i}")
        common.tags.add(f"w{k}-{i}")  # both processes change one dataset's tags


def test_two_processes_lose_nothing(hub: Hub, demo: dict[str, Path]) -> None:
    import multiprocessing

    source = str(demo["N5"] / "raw")
    hub.add_remote(source, name="common")
    n = 6
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(hub.catalog.url, str(hub.catalog.data_dir), source, k, n))
        for k in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]  # no "database is locked" surfaced

    names = {d.name for d in hub.datasets(tags=["shared"])}
    assert names == {f"w{k}-{i}" for k in range(2) for i in range(n)}
    assert set(hub.dataset("common").tags) == names
    labels = sorted(
        link.label for k in range(2) for i in range(n) for link in hub.dataset(f"w{k}-{i}").links()
    )
    assert labels == sorted(f"{k}-{i}" for k in range(2) for i in range(n))
