"""The selective scan in C: the fused CPU path of the Mamba layer (notebook 03).

:class:`ocrlib.scan.SelectiveScanFn` runs the recurrence as ~4 PyTorch operations per time
step on ``(b, n, d)`` slices and keeps every state for the backward. ``csrc/scan.c`` runs one
channel at a time with its ``n`` states in registers (one fused loop: decay, update, read-out),
and its backward recomputes a channel's states into a few kilobytes instead of keeping
``l * b * n * d`` of them.

It is compiled on first use with the C compiler the machine has (``$CC``, else ``cc``/``gcc``/
``clang``; OpenMP when the compiler supports it) into ``$OCRLIB_CACHE`` (default
``~/.cache/ocrlib``), keyed by the source, the flags and the processor, and loaded with
ctypes: no build step at install, no PyTorch headers. Without a compiler (or with
``OCRLIB_FUSED=0``), :func:`scan` is unavailable, :func:`problem` says why in one log line,
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
    for extra in (["-fopenmp"] + native, native, []):  # OpenMP and native code where they work
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
                if lib.ocr_scan_abi() != 1:
                    raise RuntimeError("stale compiled scan")
                f, L, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
                lib.ocr_scan_fwd.argtypes = [f] * 6 + [L] * 4 + [i]
                lib.ocr_scan_fwd.restype = None
                lib.ocr_scan_bwd.argtypes = [f] * 11 + [L] * 4 + [i]
                lib.ocr_scan_bwd.restype = i
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
    """True when :func:`scan` takes these tensors: float32 on the CPU, state size <= 64."""
    return not _off and all(t.device.type == "cpu" and t.dtype == torch.float32
                            for t in tensors) and available()


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class FusedScanFn(torch.autograd.Function):
    """:class:`ocrlib.scan.SelectiveScanFn`'s recurrence, forward and backward in C.

    Shape:
        delta, du: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)`` -> y: ``(l, b, d)``
    """

    @staticmethod
    def forward(ctx: Any, delta: torch.Tensor, du: torch.Tensor, A: torch.Tensor,
                B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        lib = _load()
        assert lib is not None
        delta, du, A, B, C = (x.contiguous() for x in (delta, du, A, B, C))
        l, b, d = delta.shape
        n = A.shape[1]
        y = torch.empty_like(delta)
        lib.ocr_scan_fwd(_ptr(delta), _ptr(du), _ptr(A), _ptr(B), _ptr(C), _ptr(y), l, b, d, n,
                         torch.get_num_threads())
        ctx.save_for_backward(delta, du, A, B, C)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lib = _load()
        assert lib is not None
        delta, du, A, B, C = ctx.saved_tensors
        l, b, d = delta.shape
        n = A.shape[1]
        dy = dy.contiguous().float()
        d_delta, d_du = torch.empty_like(delta), torch.empty_like(du)
        dA = torch.zeros(b, d, n, dtype=torch.float32)
        dB, dC = torch.zeros_like(B), torch.zeros_like(C)
        if lib.ocr_scan_bwd(_ptr(delta), _ptr(du), _ptr(A), _ptr(B), _ptr(C), _ptr(dy),
                            _ptr(d_delta), _ptr(d_du), _ptr(dA), _ptr(dB), _ptr(dC), l, b, d, n,
                            torch.get_num_threads()):
            raise MemoryError("the fused scan's backward could not allocate its state buffer")
        return d_delta, d_du, dA.sum(0), dB, dC


def scan(delta: torch.Tensor, du: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor) -> torch.Tensor:
    """The recurrence ``h_t = exp(Δ_t A) h_{t-1} + (Δu)_t B_t``, ``y_t = C_t · h_t`` in C.

    Shape:
        delta, du: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)`` -> ``(l, b, d)``
    """
    if A.shape[1] > MAX_STATE:
        raise ValueError(f"the fused scan keeps at most {MAX_STATE} states, not {A.shape[1]}")
    if not available():
        raise RuntimeError(f"the fused scan is unavailable: {problem()}")
    bad = [f"{t.dtype} on {t.device}" for t in (delta, du, A, B, C)
           if t.device.type != "cpu" or t.dtype != torch.float32]
    if bad:
        raise ValueError(f"the fused scan takes float32 CPU tensors, not {bad[0]}")
    return FusedScanFn.apply(delta, du, A, B, C)
