"""``AccessOptions.local_roots``: a store opens only local paths that really lie below a root.

Checked on every open (not once per store or URL), on the file the kernel opened, so a
symlink made or swapped after any earlier check is refused too; and a refusal reads the same
whether or not something exists outside (no existence oracle).
"""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import TYPE_CHECKING, Any

import pytest

from wkjupyter.errors import OutsideLocalRootsError, RemoteAccessError
from wkjupyter.sources._fs import AccessOptions, Store
from wkjupyter.sources._fs_local import MISS, read_cached

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

SECRET = b"outside the root"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` (allowed) holding data and symlinks out; ``outside`` holding a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a").write_bytes(b"inside")
    (root / "data" / "sub").mkdir()
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "dir" / "secret").write_bytes(SECRET)
    (root / "data" / "link").symlink_to(outside / "secret")  # an existing file outside
    (root / "data" / "dangling").symlink_to(outside / "missing")  # a missing one
    (root / "data" / "linkdir").symlink_to(outside / "dir")
    (root / "data" / "inner").symlink_to(root / "data" / "a")  # stays inside: fine
    return root, outside


def confined(root: Path, url: Path | None = None) -> Store:
    return Store(str(url or root / "data"), options=AccessOptions(local_roots=(str(root),)))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(OutsideLocalRootsError) as info:
        call()
    assert isinstance(info.value, RemoteAccessError)  # what storage refusals are
    return str(info.value)


def test_reads_inside_the_root_work(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    store = confined(root)
    assert run(store.get("a")) == b"inside"
    assert run(store.get("a", (1, 3))) == b"ns"
    assert run(store.get("inner")) == b"inside"  # a symlink that stays inside
    assert run(store.get_suffix("a", 2)) == b"de"
    assert run(store.get_many(["a", "missing"])) == [b"inside", None]
    assert store.read_local_blocking(["a"]) == [b"inside"]
    assert run(store.exists("a")) is True
    assert run(store.exists("sub")) is False
    assert run(store.exists("missing")) is False
    assert run(store.get("missing")) is None
    assert run(store.get("sub")) is None  # a folder is no object
    assert run(store.get("a/below-a-file")) is None
    assert run(store.list_dir("missing")) == []


def test_a_listing_leaves_out_symlinks_that_lead_outside(tree: tuple[Path, Path]) -> None:
    """Whether they name a folder, a file or nothing there must not show."""
    root, _ = tree
    assert run(confined(root).list_dir()) == ["a", "inner", "sub/"]
    assert run(Store(str(root / "data")).list_dir()) == [
        "a", "dangling", "inner", "link", "linkdir/", "sub/"
    ]  # fmt: skip


def test_every_read_through_a_symlink_out_is_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    store = confined(root)
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: run(store.get("link")),
        "get-range": lambda: run(store.get("link", (0, 4))),
        "get_suffix": lambda: run(store.get_suffix("link", 4)),
        "get_many": lambda: run(store.get_many(["a", "link"])),
        "read_local_blocking": lambda: store.read_local_blocking(["link"]),
        "exists": lambda: run(store.exists("link")),
        "below-a-dir-link": lambda: run(store.get("linkdir/secret")),
        "list-dir-link": lambda: run(store.list_dir("linkdir")),
        "child-store": lambda: run(store.child("linkdir").get("secret")),
        "dot-dot": lambda: run(store.child("../..").get("outside/secret")),
        "page-cache-path": lambda: read_cached(str(root / "data" / "link"), None, (str(root),)),
    }
    for name, call in calls.items():
        assert SECRET.decode() not in refusal(call), name


def test_an_outside_miss_reads_as_an_outside_hit(tree: tuple[Path, Path]) -> None:
    """Whether a file exists outside must not show: same error class and message shape."""
    root, _ = tree
    store = confined(root)
    for read in (
        lambda key: run(store.get(key)),
        lambda key: run(store.exists(key)),
        lambda key: run(store.get_suffix(key, 4)),
        lambda key: store.read_local_blocking([key]),
    ):
        hit = refusal(lambda: read("link"))  # noqa: B023 (called at once)
        miss = refusal(lambda: read("dangling"))  # noqa: B023
        assert hit.replace("link", "X") == miss.replace("dangling", "X")
    hit = refusal(lambda: run(store.child("../..").get("outside/secret")))
    miss = refusal(lambda: run(store.child("../..").get("outside/missing")))
    assert hit.replace("secret", "X") == miss.replace("missing", "X")


def test_a_symlink_swapped_in_later_is_refused(tree: tuple[Path, Path]) -> None:
    """The check is made on each open, so a link re-pointed after a first read (the window
    a check-then-read leaves open) does not lead the next read outside."""
    root, outside = tree
    store = confined(root)
    swap = root / "data" / "swap"
    swap.symlink_to(root / "data" / "a")
    assert run(store.get("swap")) == b"inside"
    swap.unlink()
    swap.symlink_to(outside / "secret")
    refusal(lambda: run(store.get("swap")))
    refusal(lambda: store.read_local_blocking(["swap"]))


def test_a_root_reached_through_a_symlink_works(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    via_alias = Store(str(alias / "data"), options=AccessOptions(local_roots=(str(root),)))
    assert run(via_alias.get("a")) == b"inside"
    alias_root = Store(str(root / "data"), options=AccessOptions(local_roots=(str(alias),)))
    assert run(alias_root.get("a")) == b"inside"
    refusal(lambda: run(alias_root.get("link")))


def test_no_roots_reads_anything_and_empty_roots_nothing(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert AccessOptions().local_roots is None  # the Python API's default
    assert run(Store(str(root / "data")).get("link")) == SECRET
    nothing = Store(str(root / "data"), options=AccessOptions(local_roots=()))
    assert "(none)" in refusal(lambda: run(nothing.get("a")))


def test_options_normalise_and_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = AccessOptions(local_roots=("rel", "~/x"))
    assert options.local_roots == (str(tmp_path / "rel"), os.path.expanduser("~/x"))
    assert pickle.loads(pickle.dumps(options)) == options
    with pytest.raises(TypeError):
        AccessOptions(local_roots=str(tmp_path))  # type: ignore[arg-type]


def test_fast_path_still_misses_to_the_thread(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    roots = (str(root),)
    got = read_cached(str(root / "data" / "a"), None, roots)
    assert got in (b"inside", MISS)
    assert read_cached(str(root / "data" / "missing"), None, roots) is None
