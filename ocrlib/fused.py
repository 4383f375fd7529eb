"""The selective SSM in C: the fused CPU path of the Mamba layer (notebook 03).

In PyTorch operations the SSM step of a Mamba layer is softplus, ``Δu``, the recurrence
(:class:`ocrlib.scan.SelectiveScanFn`: ~4 operations per time step, every state kept for the
backward), the D skip and the z gate: ~10 passes over ``(l, b, d)`` tensors forward and ~20
backward. ``csrc/scan.c`` does it in one call each way: the element-wise parts fused into the
loop, the recurrence on blocks of 16 neighbouring channels (a vector lane per channel, the
``n`` state updates of a step independent of one another), and a backward that recomputes a
block's states into a few kilobytes instead of keeping ``l * b * n * d`` of them.

It is compiled on first use with the C compiler the machine has (``$CC``, else ``cc``/``gcc``/
``clang``; OpenMP when the compiler supports it) into ``$OCRLIB_CACHE`` (default
``~/.cache/ocrlib``), keyed by the source, the flags and the processor, and loaded with
ctypes: no build step at install, no PyTorch headers. Without a compiler (or with
``OCRLIB_FUSED=0``), :func:`ssm` is unavailable, :func:`problem` says why in one log line,
and the scan runs on the PyTorch path: same results, slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "scan.c"
MAX_STATE = 64  # the C loops keep n <= 64 states in registers
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_problem: str | None = None
_tried = False
_off = False  # set by disabled()


def _cpu_key() -> str:
    """What the compiled code may depend on: the machine and its instruction-set flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.system()}|{flags}"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(cache: Path) -> Path:
    """Compile ``csrc/scan.c`` into ``cache`` (once per source, flags and processor)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang)")
    # -ffast-math lets the compiler vectorise expf; it is given to the compile step only: linked
    # into a shared library (GCC < 13) it would switch the whole process to flush denormals
    # to zero
    base = ["-O3", "-ffast-math", "-fPIC", "-std=c99"]
    native = [] if platform.machine().lower() in ("arm64", "aarch64") else ["-march=native"]
    errors = []
    # OpenMP and native code where they work; without OpenMP, its simd pragmas still vectorise
    for extra in (["-fopenmp"] + native, ["-fopenmp-simd"] + native, native, []):
        flags = base + extra
        key = hashlib.sha256(SOURCE.read_bytes() + " ".join([cc, *flags, "2-step"]).encode()
                             + _cpu_key().encode()).hexdigest()[:16]
        target = cache / f"ocrlib_scan_{key}.so"
        if target.is_file():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache))
        link = [x for x in extra if x == "-fopenmp"]
        proc = subprocess.run([cc, *flags, "-c", str(SOURCE), "-o", str(work / "scan.o")],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            proc = subprocess.run([cc, "-shared", *link, str(work / "scan.o"), "-o",
                                   str(work / "scan.so"), "-lm"], capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(work / "scan.so", target)  # atomic: concurrent builders both end well
            shutil.rmtree(work, ignore_errors=True)
            log.info("fused CPU scan compiled with %s %s", cc, " ".join(extra) or "(plain)")
            return target
        shutil.rmtree(work, ignore_errors=True)
        errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
    raise RuntimeError(f"{cc} could not compile {SOURCE.name}: {errors[0][0]}")


def _load() -> ctypes.CDLL | None:
    global _lib, _problem, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("OCRLIB_FUSED", "1") == "0":
            _problem = "switched off (OCRLIB_FUSED=0)"
        else:
            try:
                cache = Path(os.environ.get("OCRLIB_CACHE", Path.home() / ".cache" / "ocrlib"))
                lib = ctypes.CDLL(str(_build(cache)))
                if lib.ocr_scan_abi() != 2:
                    raise RuntimeError("stale compiled scan")
                f, L, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
                lib.ocr_ssm_fwd.argtypes = [f] * 7 + [i, f] + [L] * 4 + [i]
                lib.ocr_ssm_fwd.restype = i
                lib.ocr_ssm_bwd.argtypes = [f] * 7 + [i] + [f] * 8 + [L] * 4 + [i]
                lib.ocr_ssm_bwd.restype = i
                _lib = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _problem = str(err)
        if _problem:
            log.info("fused CPU scan unavailable (%s): the scan runs on PyTorch operations", _problem)
        return _lib


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, the fast scan runs on PyTorch operations (comparisons, benchmarks)."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


def available() -> bool:
    """True when the compiled scan can run here (compiles it on the first call)."""
    return _load() is not None


def problem() -> str | None:
    """Why the compiled scan is unavailable (None when it is available)."""
    _load()
    return _problem


def usable(*tensors: torch.Tensor) -> bool:
    """True when :func:`ssm` takes these tensors: float32 on the CPU (and it compiled)."""
    return not _off and all(t.device.type == "cpu" and t.dtype == torch.float32
                            for t in tensors) and available()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(code: int, what: str) -> None:
    if code == 1:
        raise MemoryError(f"the fused scan's {what} could not allocate its work buffers")
    if code:
        raise ValueError(f"the fused scan's {what} refused its arguments (code {code})")


class FusedSSMFn(torch.autograd.Function):
    """The selective SSM (softplus, ``Δu``, recurrence, D skip, z gate), forward and backward in C.

    Shape:
        u, dt, z: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)``; D: ``(d,)``
        -> ``(l, b, d)``
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                softplus: bool) -> torch.Tensor:
        lib = _load()
        assert lib is not None
        u, dt, A, B, C = (x.contiguous() for x in (u, dt, A, B, C))
        D = None if D is None else D.contiguous()
        z = None if z is None else z.contiguous()
        l, b, d = u.shape
        out = torch.empty_like(u)
        _check(lib.ocr_ssm_fwd(_ptr(u), _ptr(dt), _ptr(z), _ptr(A), _ptr(B), _ptr(C), _ptr(D),
                               int(softplus), _ptr(out), l, b, d, A.shape[1],
                               torch.get_num_threads()), "forward")
        ctx.save_for_backward(u, dt, A, B, C, D, z)
        ctx.softplus = softplus
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lib = _load()
        assert lib is not None
        u, dt, A, B, C, D, z = ctx.saved_tensors
        l, b, d = u.shape
        dout = dout.contiguous().float()
        du, ddt = torch.empty_like(u), torch.empty_like(u)
        dz = None if z is None else torch.empty_like(z)
        dA, dB, dC = torch.empty_like(A), torch.empty_like(B), torch.empty_like(C)
        dD = None if D is None else torch.empty_like(D)
        _check(lib.ocr_ssm_bwd(_ptr(u), _ptr(dt), _ptr(z), _ptr(A), _ptr(B), _ptr(C), _ptr(D),
                               int(ctx.softplus), _ptr(dout), _ptr(du), _ptr(ddt), _ptr(dz),
                               _ptr(dA), _ptr(dB), _ptr(dC), _ptr(dD), l, b, d, A.shape[1],
                               torch.get_num_threads()), "backward")
        return du, ddt, dA, dB, dC, dD, dz, None


def ssm(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        D: torch.Tensor | None = None, z: torch.Tensor | None = None,
        softplus: bool = False) -> torch.Tensor:
    """The selective SSM in C: ``Δ = softplus(dt)`` (or ``dt``), the recurrence
    ``h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t``, ``y_t = C_t · h_t + D u_t``, times ``silu(z_t)``.

    Shape:
        u, dt, z: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)``; D: ``(d,)``
        -> ``(l, b, d)``
    """
    if A.shape[1] > MAX_STATE:
        raise ValueError(f"the fused scan keeps at most {MAX_STATE} states, not {A.shape[1]}")
    if not available():
        raise RuntimeError(f"the fused scan is unavailable: {problem()}")
    given = [t for t in (u, dt, A, B, C, D, z) if t is not None]
    bad = [f"{t.dtype} on {t.device}" for t in given
           if t.device.type != "cpu" or t.dtype != torch.float32]
    if bad:
        raise ValueError(f"the fused scan takes float32 CPU tensors, not {bad[0]}")
    l, b, d = u.shape
    n = A.shape[1]
    want = {"dt": (dt, (l, b, d)), "A": (A, (d, n)), "B": (B, (l, b, n)), "C": (C, (l, b, n)),
            "D": (D, (d,)), "z": (z, (l, b, d))}
    for name, (t, shape) in want.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"the fused scan wants {name} of shape {shape}, not {tuple(t.shape)}")
    return FusedSSMFn.apply(u, dt, A, B, C, D, z, softplus)
