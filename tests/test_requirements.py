"""requirements.txt pins exactly pyproject.toml's runtime dependencies (`dependencies` and
every extra but `test`), each at a version that pyproject.toml's range admits."""
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


def runtime_requirements(project: dict) -> list[Requirement]:
    extras = {name: reqs for name, reqs in project["optional-dependencies"].items() if name != "test"}
    return [Requirement(line) for line in project["dependencies"] + sum(extras.values(), [])]


def pins(text: str) -> dict[str, str]:
    """name -> pinned version of `name==version` lines; anything else is an error."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"requirements.txt:{number}: {line} is not pinned"
        name = canonicalize_name(req.name)
        assert name not in found, f"requirements.txt:{number}: {req.name} pinned twice"
        found[name] = specs[0].version
    return found


def test_requirements_pin_every_runtime_dependency_in_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = runtime_requirements(project)
    pinned = pins((ROOT / "requirements.txt").read_text())
    names = {canonicalize_name(r.name) for r in wanted}
    assert not names - set(pinned), f"requirements.txt lacks {sorted(names - set(pinned))}"
    assert not set(pinned) - names, f"requirements.txt pins {sorted(set(pinned) - names)}, not in pyproject.toml"
    for req in wanted:
        version = pinned[canonicalize_name(req.name)]
        assert req.specifier.contains(Version(version), prereleases=True), f"{req.name}=={version} not in {req}"

