"""The conda environment and the pip install must ask for the same packages."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_the_project_with_its_dev_tools():
    """One list of dependencies (pyproject.toml): conda's pip step installs the project."""
    lines = [line.strip() for line in (ROOT / "environment.yml").read_text().splitlines()]
    pip_items = lines[lines.index("- pip:") + 1:]
    assert [x for x in pip_items if x.startswith("- ")] == ["- -e .[dev]"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dev" in project["optional-dependencies"]


def test_every_pinned_font_family_is_a_pinned_dependency():
    from ocrlib.fonts import FAMILIES

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(r): r for r in project["dependencies"]}
    for family, info in FAMILIES.items():
        if info.source == "fontpkg":
            pkg = "fontpkg-" + family.lower().replace(" ", "-")
            assert pkg in deps and "==" in deps[pkg], f"{family}: {pkg} is not pinned"


def test_torch_range_admits_the_versions_this_machine_installs():
    from packaging.requirements import Requirement

    # pip here is capped at these (LESSONS.md); Colab and laptops get whatever is newest
    capped = {"torch": "2.14.1", "torchvision": "0.29.1"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for req in map(Requirement, project["dependencies"]):
        if req.name in capped:
            found[req.name] = req
            assert not any(s.operator in ("==", "<", "<=", "~=") for s in req.specifier), \
                f"{req}: ask for a range with a floor only, not a pin or cap"
            assert req.specifier.contains(capped[req.name]), f"{req} refuses {capped[req.name]}"
    assert found.keys() == capped.keys()


def test_ci_calls_make_test():
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


@pytest.mark.parametrize("target,var,message", [
    ("test-py", "TESTS", "no tests in tests/"),
    ("test-nb", "NOTEBOOKS", "no notebooks in notebooks/"),
])
def test_make_test_fails_loudly_when_there_is_nothing_to_run(target, var, message):
    # -o: take the installed-venv stamp as up to date; nothing is installed or run
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", target, f"{var}="],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert message in proc.stderr


def test_the_fused_scan_source_ships_with_the_package():
    from ocrlib import fused

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["ocrlib"]
    rel = fused.SOURCE.relative_to(ROOT / "ocrlib").as_posix()
    assert fused.SOURCE.is_file() and any(Path(rel).match(p) for p in patterns)
