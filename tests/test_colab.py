"""The Colab cell and ocrlib.colab, run offline with the Colab-specific calls replaced."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from ocrlib import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _colab_cell(nb: Path) -> str:
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    return "".join(cells[0]["source"])


def test_every_notebook_starts_with_the_same_colab_cell():
    cells = {_colab_cell(nb) for nb in NOTEBOOKS}
    assert len(cells) == 1 and "google.colab" in cells.pop()


def test_the_cell_does_nothing_outside_colab(tmp_path):
    code = _colab_cell(NOTEBOOKS[0])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "MAMBAOCR_DIR": str(tmp_path / "clone")})
    assert proc.returncode == 0 and proc.stdout == "" and not (tmp_path / "clone").exists()


DRIVER = r'''
import json, os, subprocess, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")   # "we are on Colab"
real_run, calls = subprocess.run, []
def fake_run(cmd, **kw):                                           # git runs; pip is recorded
    if cmd[0] == "git":
        return real_run(cmd, **kw)
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, 0)
subprocess.run = fake_run
for _ in range(2):                                                 # a second run changes nothing
    exec(open(sys.argv[1]).read(), {"__name__": "__main__"})
import ocrlib
print(json.dumps({"ocrlib": ocrlib.__file__, "cwd": os.getcwd(), "calls": calls}))
'''


def _repo_of_the_working_tree(dest: Path) -> Path:
    """A git repository holding this working tree as it is (committed or not), to clone from."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)
    return dest


def test_the_cell_clones_imports_installs_once_and_goes_to_the_notebooks(tmp_path):
    repo = _repo_of_the_working_tree(tmp_path / "repo")
    cell, driver = tmp_path / "cell.py", tmp_path / "driver.py"
    cell.write_text(_colab_cell(NOTEBOOKS[0]))
    driver.write_text(DRIVER)
    clone = tmp_path / "content" / "mambaocr"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MAMBAOCR_REPO=str(repo), MAMBAOCR_DIR=str(clone), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(driver), str(cell)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (clone / "ocrlib" / "__init__.py").is_file()
    assert Path(out["ocrlib"]).resolve().is_relative_to(clone.resolve())  # the clone's ocrlib, at once
    assert Path(out["cwd"]).resolve() == (clone / "notebooks").resolve()
    pip = [c for c in out["calls"] if "pip" in c and "install" in c]
    assert len(pip) == 1 and pip[0][-1] == str(clone)  # installed once, not in editable mode
    assert "-e" not in pip[0]


def test_kernels_are_built_from_source_for_this_gpu_with_cxx20_for_new_torch(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, check=False, env=None, **kw):
        calls.append((cmd, env))
        if "download" in cmd:  # write a small source archive like PyPI's
            name = cmd[-1].split("==")[0].replace("-", "_")
            src = tmp_path / "src" / f"{name}-9.9"
            src.mkdir(parents=True)
            (src / "setup.py").write_text(  # the shape of the real setup.py's flag section
                'cc_flag = ["-gencode", "arch=compute_80,code=sm_80"]\n'
                f'{colab.ARCH_ANCHOR} for the C++ standard\n'
                'extra = ["-O3", "-std=c++17"]\n')
            with tarfile.open(Path(cmd[cmd.index("-d") + 1]) / f"{name}-9.9.tar.gz", "w:gz") as tar:
                tar.add(src, arcname=src.name)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(colab.shutil, "which", lambda name: "/usr/bin/nvcc")
    said = []
    work = tmp_path / "work"
    work.mkdir()
    result = colab.ensure_kernels(run=fake_run, say=said.append, arch="9.0",
                                  torch_version="2.14.1+cu130", workdir=work)
    installs = [(c, env) for c, env in calls if "install" in c]
    assert [c[-1].rsplit("/", 1)[-1] for c, _ in installs] == ["mamba_ssm-9.9", "causal_conv1d-9.9"]
    for cmd, env in installs:
        assert "--no-build-isolation" in cmd and env["TORCH_CUDA_ARCH_LIST"] == "9.0"
        setup = (Path(cmd[-1]) / "setup.py").read_text()
        assert "-std=c++20" in setup and "arch=compute_90,code=sm_90" in setup
    # nothing really got installed here, so the import fails and says why
    assert result == "import failed" and "PyTorch scan" in said[-1]


def test_older_torch_keeps_cxx17_and_no_gpu_means_no_build(monkeypatch):
    assert colab.needs_cxx20("2.13.0") and colab.needs_cxx20("2.14.1+cu130")
    assert not colab.needs_cxx20("2.11.0") and not colab.needs_cxx20("2.9.1")
    monkeypatch.setattr(colab, "cuda_arch", lambda: None)
    calls = []
    result = colab.ensure_kernels(run=lambda *a, **k: calls.append(a), say=lambda s: None)
    assert result.startswith("no CUDA GPU") and calls == []


def test_a_causal_conv1d_build_failure_still_leaves_the_scan_kernel(tmp_path, monkeypatch):
    built = []

    def fake_run(cmd, check=False, env=None, **kw):
        if "download" in cmd:
            name = cmd[-1].split("==")[0].replace("-", "_")
            src = tmp_path / "src" / f"{name}-9.9"
            src.mkdir(parents=True)
            (src / "setup.py").write_text('cc_flag = ["-gencode", "arch=compute_80,code=sm_80"]\n'
                                          f'{colab.ARCH_ANCHOR} for the C++ standard\nextra = ["-O3", "-std=c++17"]\n')
            with tarfile.open(Path(cmd[cmd.index("-d") + 1]) / f"{name}-9.9.tar.gz", "w:gz") as tar:
                tar.add(src, arcname=src.name)
        elif "install" in cmd:
            if Path(cmd[-1]).name.startswith("causal_conv1d"):
                raise subprocess.CalledProcessError(1, cmd)
            built.append(cmd[-1].rsplit("/", 1)[-1])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(colab.shutil, "which", lambda name: "/usr/bin/nvcc")
    said = []
    (tmp_path / "work").mkdir()
    result = colab.ensure_kernels(run=fake_run, say=said.append, arch="9.0",
                                  torch_version="2.11.0", workdir=tmp_path / "work")
    assert built == ["mamba_ssm-9.9"], said
    assert any("causal-conv1d could not be built" in s for s in said)
    assert result == "import failed"  # nothing was really installed here
