"""The catalog commands: import, ls, tag, link — with clear errors and exit codes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from wkjupyter.cli import EXIT_DENIED, EXIT_NOT_FOUND, main
from wkjupyter.demo import make_volume, write_demo

if TYPE_CHECKING:
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
    assert "/wkjupyter/links/" in url
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
