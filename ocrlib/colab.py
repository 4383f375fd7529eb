"""Getting a notebook ready on Google Colab (the first cell of every notebook calls this).

The cell clones the repository and puts the clone first on ``sys.path``, so ``ocrlib`` imports
at once (an editable install is only importable after the runtime restarts), then calls
:func:`prepare`: install the dependencies, change to ``notebooks/``, and on a GPU try to build
mamba-ssm's fused kernels. When they cannot be built, the reason is printed and the model runs
on ocrlib's PyTorch scans (``ocrlib.mixer``): slower, same results.

The kernels are compiled against the installed torch, so they are built from source without
build isolation (an isolated build compiles against a freshly downloaded torch and fails at
import with ``undefined symbol``), for this GPU's architecture only (minutes instead of half an
hour), and, for torch >= 2.13, with C++20 (mamba-ssm <= 2.3.2.post1 asks for C++17, which
torch 2.13's headers no longer compile with). mamba-ssm >= 2.3.0 is needed with transformers 5.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

#: The versions built: the newest of each that were checked against ocrlib's reference scan.
KERNELS = ("mamba-ssm==2.3.2.post1", "causal-conv1d==1.6.1")  # the scan first; the conv is optional
STAMP = ".colab-ready"

Runner = Callable[..., subprocess.CompletedProcess]


def prepare(root: str | os.PathLike[str], kernels: bool = True, run: Runner = subprocess.run,
            say: Callable[[str], None] = print) -> dict[str, str]:
    """Install the project from its clone at ``root``, go to ``root/notebooks``, and on a CUDA
    GPU try to build the kernels. Idempotent: a second call only changes the folder.

    Returns what was done: ``{"install": ..., "kernels": ...}``.
    """
    root = Path(root)
    done = {"install": "already installed", "kernels": "not tried"}
    stamp = root / STAMP
    if not stamp.exists():
        run([sys.executable, "-m", "pip", "install", "-q", str(root)], check=True)
        done["install"] = "installed"
    os.chdir(root / "notebooks")
    if kernels:
        done["kernels"] = ensure_kernels(run=run, say=say)
    stamp.write_text(f"{done}\n")
    return done


def cuda_arch() -> str | None:
    """This GPU's compute capability as ``TORCH_CUDA_ARCH_LIST`` wants it (``"8.0"``), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def needs_cxx20(torch_version: str) -> bool:
    """Whether extensions must compile as C++20 for this torch (2.13 and newer)."""
    major, minor = (int(x) for x in re.findall(r"\d+", torch_version)[:2])
    return (major, minor) >= (2, 13)


def ensure_kernels(run: Runner = subprocess.run, say: Callable[[str], None] = print,
                   arch: str | None = None, torch_version: str | None = None,
                   workdir: str | os.PathLike[str] | None = None) -> str:
    """Build and install the CUDA kernels unless they import already; returns what happened."""
    from .mixer import cuda_kernels, kernel_problem

    if cuda_kernels() is not None:
        return "already installed"
    if arch is None:
        arch = cuda_arch()
    if arch is None:
        return "no CUDA GPU: the PyTorch scan runs"
    if shutil.which("nvcc") is None and not Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc").exists():
        say("CUDA Mamba kernels: no nvcc to compile them; using ocrlib's PyTorch scan")
        return "no nvcc"
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    say(f"building the CUDA Mamba kernels for sm_{arch.replace('.', '')} (a few minutes)...")
    work = Path(workdir or tempfile.mkdtemp(prefix="mamba-kernels-"))
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": arch, "MAMBA_FORCE_BUILD": "TRUE",
           "CAUSAL_CONV1D_FORCE_BUILD": "TRUE", "MAX_JOBS": str(max(1, (os.cpu_count() or 2)))}
    for req in KERNELS:
        try:
            source = fetch_source(req, work, run)
            prepare_source(source, arch, torch_version)
            run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                 "--no-deps", str(source)], check=True, env=env)
        except (subprocess.CalledProcessError, OSError, ValueError) as err:
            if req != KERNELS[0]:  # causal-conv1d: the scan kernel runs without it
                say(f"causal-conv1d could not be built ({err}); mamba-ssm's scan runs with "
                    "PyTorch's convolution")
                break
            say(f"CUDA Mamba kernels could not be built ({req}: {err}); using ocrlib's PyTorch scan")
            return f"build failed: {req}"
    cuda_kernels.cache_clear()
    if cuda_kernels() is None:
        say(f"CUDA Mamba kernels built but do not import ({kernel_problem()}); using ocrlib's "
            "PyTorch scan")
        return "import failed"
    say("CUDA Mamba kernels: installed")
    return "built"


def fetch_source(req: str, work: Path, run: Runner = subprocess.run) -> Path:
    """Download ``req``'s source archive into ``work`` and unpack it; returns its folder."""
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "-d", str(work), req], check=True)
    name = req.split("==")[0].replace("-", "_")
    archives = sorted(work.glob(f"{name}-*.tar.gz")) + sorted(work.glob(f"{req.split('==')[0]}-*.tar.gz"))
    if not archives:
        raise ValueError(f"no source archive of {req} in {work}")
    with tarfile.open(archives[0]) as tar:
        try:
            tar.extractall(work, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12)
            tar.extractall(work)
        top = tar.getnames()[0].split("/")[0]
    return work / top


def prepare_source(source: Path, arch: str, torch_version: str, reduced: bool = False) -> None:
    """Make an unpacked mamba-ssm or causal-conv1d source tree build fast and right here:
    for ``arch`` only (:func:`restrict_arch`), in C++20 where this torch needs it
    (:func:`patch_cxx20`), and with ``reduced`` only the scan variant ocrlib calls
    (:func:`reduce_scan_variants`; mamba-ssm only)."""
    restrict_arch(source, arch)
    if needs_cxx20(torch_version):
        patch_cxx20(source)
    if reduced and (source / "csrc" / "selective_scan").is_dir():
        reduce_scan_variants(source)


ARCH_ANCHOR = "    # HACK: The compiler flag"


def restrict_arch(source: Path, arch: str) -> None:
    """Compile for one GPU architecture (``"9.0"`` -> sm_90) instead of the dozen the packages
    list: their setup.py builds ``cc_flag`` with every ``-gencode``; a line inserted after that
    keeps the other flags and only this GPU's code.

    Raises:
        ValueError: when setup.py does not look as expected (another version of the package).
    """
    path = source / "setup.py"
    text = path.read_text()
    if ARCH_ANCHOR not in text:
        raise ValueError(f"{path}: no '{ARCH_ANCHOR.strip()}' line to insert the architecture before")
    cc = arch.replace(".", "")
    line = (f'    cc_flag = [f for f in cc_flag if f != "-gencode" and not f.startswith("arch=")]'
            f' + ["-gencode", "arch=compute_{cc},code=sm_{cc}"]  # ocrlib: this GPU only\n')
    path.write_text(text.replace(ARCH_ANCHOR, line + ARCH_ANCHOR, 1))


ALWAYS_TRUE = r"""
#include <stdexcept>
// ocrlib: a flag that ocrlib always sets is compiled for true only (a quarter of the variants)
#define ALWAYS_TRUE_SWITCH(COND, CONST_NAME, ...)                                           \
    [&] {                                                                                  \
        if (!(COND)) throw std::runtime_error(#CONST_NAME " is compiled for true only");   \
        constexpr bool CONST_NAME = true;                                                  \
        return __VA_ARGS__();                                                              \
    }()
"""
#: The selective-scan template flags ocrlib always sets: B and C depend on the input, a z
#: gate, softplus on Δ (the forward kernel has no softplus switch).
ALWAYS = ("params.is_variable_B, kIsVariableB", "params.is_variable_C, kIsVariableC",
          "params.delta_softplus, kDeltaSoftplus", "params.z_ptr != nullptr , kHasZ")


def reduce_scan_variants(source: Path) -> int:
    """Compile mamba-ssm's scan kernels only for the flags ocrlib always uses (:data:`ALWAYS`):
    the backward kernel has 2^5 variants per dtype, of which ocrlib calls 2. Returns how many
    switches were narrowed. A call with other flags then fails loudly, never silently."""
    base = source / "csrc" / "selective_scan"
    with open(base / "static_switch.h", "a") as f:
        f.write(ALWAYS_TRUE)
    n = 0
    for name in ("selective_scan_fwd_kernel.cuh", "selective_scan_bwd_kernel.cuh"):
        path = base / name
        text = path.read_text()
        for flag in ALWAYS:
            if "BOOL_SWITCH(" + flag in text:
                text = text.replace("BOOL_SWITCH(" + flag, "ALWAYS_TRUE_SWITCH(" + flag)
                n += 1
        path.write_text(text)
    return n


def patch_cxx20(source: Path, files: Sequence[str] = ("setup.py",)) -> bool:
    """Replace ``-std=c++17`` by ``-std=c++20`` in the build files; True if anything changed."""
    changed = False
    for name in files:
        path = source / name
        if path.is_file():
            text = path.read_text()
            new = text.replace("-std=c++17", "-std=c++20")
            if new != text:
                path.write_text(new)
                changed = True
    return changed
