import subprocess
import sys

import pytest

from ocrlib.clean import OutsideProjectError, check_inside, default_targets, find_project_root


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    for d in ("data/train/images", "checkpoints", "ocrlib/__pycache__", ".git/objects", "notebooks"):
        (root / d).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "mambaocr"\n')
    (root / "data/.gitkeep").write_text("")
    (root / "checkpoints/.gitkeep").write_text("")
    (root / "checkpoints/best_mamba_ocr.pth").write_bytes(b"w")
    (root / "data/train/labels.txt").write_text("x\ty\n")
    (root / "notebooks/01.ipynb").write_text("{}")
    return root


def _run(root, *args, stdin=subprocess.DEVNULL):
    return subprocess.run([sys.executable, "-m", "ocrlib", "clean", "--root", str(root), *args],
                          capture_output=True, text=True, stdin=stdin)


def test_finds_the_project_root_from_a_subfolder(project):
    assert find_project_root(project / "data" / "train") == project.resolve()
    with pytest.raises(FileNotFoundError):
        find_project_root(project.parent)


def test_default_targets_are_generated_files_only(project):
    targets = {p.relative_to(project).as_posix() for p in default_targets(project)}
    assert targets == {"data/train", "checkpoints/best_mamba_ocr.pth", "ocrlib/__pycache__"}


@pytest.mark.parametrize("bad", ["..", ".", "../elsewhere", ".git", ".git/objects", "/etc"])
def test_refuses_paths_outside_the_project(project, bad):
    with pytest.raises(OutsideProjectError):
        check_inside([project / bad if not bad.startswith("/") else bad], project)


def test_refuses_a_link_that_leads_outside(project, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (project / "data" / "link").symlink_to(outside)
    with pytest.raises(OutsideProjectError):
        check_inside([project / "data" / "link"], project)
    proc = _run(project, "--yes", str(project / "data" / "link"))
    assert proc.returncode == 2 and "not inside the project" in proc.stderr
    assert outside.is_dir()


def test_cli_lists_asks_and_removes_only_with_yes(project):
    proc = _run(project)  # no terminal and no --yes: nothing happens
    assert proc.returncode == 1
    assert "data/train" in proc.stdout and (project / "data/train").is_dir()
    proc = _run(project, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert not (project / "data/train").exists()
    assert not (project / "checkpoints/best_mamba_ocr.pth").exists()
    assert (project / "data/.gitkeep").exists() and (project / "notebooks/01.ipynb").exists()
    assert (project / ".git/objects").is_dir()
    assert _run(project, "--yes").stdout.strip() == "nothing to remove"
