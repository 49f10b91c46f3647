"""The catalog commands: import, ls, tag, link — with clear errors and exit codes."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import make_url

from wkjupyter.cli import EXIT_DENIED, EXIT_NOT_FOUND, build_parser, main
from wkjupyter.demo import make_volume, write_demo

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demo(tmp_path_factory.mktemp("cli") / "demo", make_volume((16, 32, 40), cells=5))


@pytest.fixture
def run(
    catalog_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> object:
    monkeypatch.setenv("WKJUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WKJUPYTER_PUBLIC_URL", "https://hub.example.org/user/alice/")

    def cli(*args: str, user: str = "alice") -> tuple[int, str, str]:
        code = main([*args, "--catalog-url", catalog_url, "--user", user])
        out = capsys.readouterr()
        return code, out.out, out.err

    return cli


def test_import_ls_tag_link(run: object, demo: dict[str, Path]) -> None:
    cli = run  # type: ignore[assignment]
    code, out, _ = cli("import", str(demo["N5"]), "--name", "cells", "--tag", "em")
    assert code == 0, out
    assert "imported 'cells' (private): raw, segmentation" in out

    code, out, _ = cli("ls")
    assert code == 0
    (line,) = out.splitlines()
    assert line.split()[:2] == ["cells", "private"]
    assert "tags: em" in line
    code, out, _ = cli("ls", "--json", "--tag", "em")
    assert [d["name"] for d in json.loads(out)] == ["cells"]
    code, out, _ = cli("ls", "--search", "no-such-word")
    assert out.strip() == "no datasets match"

    code, out, _ = cli("tag", "cells", "--add", "cortex", "--remove", "em")
    assert (code, out.strip()) == (0, "cells: cortex")

    code, url, _ = cli("link", "create", "cells", "--expires", "7d", "--label", "review")
    assert code == 0
    assert url.startswith("https://hub.example.org/user/alice/wkjupyter/links/")
    code, out, _ = cli("link", "ls", "cells", "--json")
    (link,) = json.loads(out)
    assert link["url"] == url.strip()
    assert link["label"] == "review"
    code, out, _ = cli("link", "revoke", str(link["id"]))
    assert code == 0
    code, out, _ = cli("link", "ls", "cells", "--json")
    assert json.loads(out)[0]["revoked"] is True


def test_errors_have_exit_codes(run: object, demo: dict[str, Path], tmp_path: Path) -> None:
    cli = run  # type: ignore[assignment]
    assert cli("import", str(demo["N5"]), "--name", "cells")[0] == 0
    code, _, err = cli("tag", "nope", "--add", "x")
    assert code == EXIT_NOT_FOUND
    assert "no dataset 'nope'" in err

    # bob is a new user (editor by default) who cannot see alice's private dataset ...
    code, _, err = cli("link", "create", "cells", user="bob")
    assert code == EXIT_NOT_FOUND
    # ... and once it is public he may read it but not share it.
    assert cli("import", str(demo["N5"]), "--name", "open", "--public")[0] == 0
    code, _, err = cli("link", "create", "open", user="bob")
    assert code == EXIT_DENIED
    assert "bob" in err

    code, _, err = cli("import", str(tmp_path / "missing"))
    assert code == 1
    assert "nothing to import" in err
    code, _, err = cli("link", "create", "cells", "--expires", "yesterday-ish")
    assert code == 1
    assert "expir" in err.lower()


def test_links_without_a_server_url_print_their_path(
    run: object, demo: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = run  # type: ignore[assignment]
    monkeypatch.delenv("WKJUPYTER_PUBLIC_URL")
    assert cli("import", str(demo["N5"]), "--name", "cells")[0] == 0
    code, path, err = cli("link", "create", "cells")
    assert code == 0
    assert path.startswith("wkjupyter/links/")  # not a relative URL posing as one
    assert "no public URL of the wkjupyter server is known" in err
    assert "WKJUPYTER_PUBLIC_URL" in err
    code, out, _ = cli("link", "ls", "cells", "--json")
    (link,) = json.loads(out)
    assert (link["url"], link["path"]) == (None, path.strip())


def test_catalog_commands_say_which_catalog(run: object, catalog_url: str) -> None:
    cli = run  # type: ignore[assignment]
    shown = make_url(catalog_url).render_as_string(hide_password=True)
    code, out, err = cli("ls")
    assert code == 0
    assert err.splitlines()[0] == f"catalog: {shown} (as alice)"
    assert out.strip() == "no datasets in this catalog (`wkjupyter import URL` adds one)"
    for args in (("tag", "nope"), ("link", "ls", "nope")):
        assert cli(*args)[2].splitlines()[0] == f"catalog: {shown} (as alice)"


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every subcommand's name and parser, nested ones included ("link create")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from subcommands(sub, f"{prefix}{name} ")


def test_every_subcommand_describes_itself(capsys: pytest.CaptureFixture[str]) -> None:
    found = dict(subcommands(build_parser()))
    assert {"demo", "explore", "ls", "import", "tag", "link", "link create", "serve"} <= set(found)
    for command, parser in found.items():
        assert parser.description, command
        with pytest.raises(SystemExit) as done:
            main([*command.split(), "--help"])
        assert done.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert " ".join(parser.description.split()) in help_text, command


def test_demo_serve_options_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--serve", "--no-serve"], ["--no-serve", "--port", "8000"]):
        with pytest.raises(SystemExit) as done:
            main(["demo", "--data-dir", str(tmp_path), *args])
        assert done.value.code == 2, args
        err = capsys.readouterr().err
        assert "not allowed with" in err or "--port needs a server" in err
    assert not (tmp_path / "demo").exists()  # refused before writing anything
