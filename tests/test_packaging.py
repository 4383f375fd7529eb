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


def _pip_section_of_environment() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = {}
    for line in lines[start + 1:]:
        item = line.strip()
        if not item.startswith("- "):
            continue
        item = item[2:].strip()
        if item.startswith("-e"):
            continue
        reqs[_name(item)] = item.replace(" ", "")
    return reqs


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = _pip_section_of_environment()
    assert {_name(r) for r in wanted} == set(env)
    # and with the same version ranges
    for r in wanted:
        assert env[_name(r)] == r.replace(" ", ""), r


def test_torch_range_admits_the_versions_this_machine_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        if _name(req) in ("torch", "torchvision"):
            assert "==" not in req and "<" not in req, f"{req}: ask for a range, not a pin or cap"


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
