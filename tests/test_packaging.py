"""The committed constraints pin every dependency the README's install commands ask for.

``pip install -e ".[test]" -c constraints-test.txt`` resolves without backtracking only if
every requirement (direct and transitive) has exactly one allowed version; a dependency added
to ``pyproject.toml`` without regenerating the file would be resolved freely again.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.+))?$")


def _pins() -> dict[str, Version]:
    """The pinned version of each package for this interpreter and platform."""
    env = default_environment()
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints-test.txt").read_text().splitlines():
        if not (m := _PIN.match(line.strip())):
            continue
        name, version, marker = m.groups()
        req = Requirement(f"{name}; {marker}" if marker else name)
        if req.marker is None or req.marker.evaluate(env):
            assert canonicalize_name(name) not in pins, f"{name} is pinned twice"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in ("demo", "test"):
        reqs += [Requirement(r) for r in extras[extra]]
    return [r for r in reqs if canonicalize_name(r.name) != "wkjupyter"]


def test_every_dependency_is_pinned_to_an_allowed_version() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints-test.txt: regenerate it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints-test.txt pins {req.name}=={pins[name]}, outside {req}: regenerate it"
        )


def test_the_readme_installs_with_the_constraints() -> None:
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[test]" -c constraints-test.txt && python -m pytest' in readme
    ci = (REPO / ".ci/run").read_text()
    assert 'pip install --quiet -e ".[test]" -c constraints-test.txt' in ci
