"""Where and in what precision a model runs: device, autocast dtype, and the numerics record.

Numbers that come out of training depend on more than the code: bf16 runs through AMX on
recent Intel CPUs, AVX512-BF16 on recent AMD ones and is emulated elsewhere, oneDNN picks
kernels by processor, and the thread count changes summation order. :func:`numerics` records
what decides the rounding of a run (it goes into every checkpoint), and ``OCRLIB_AMP`` forces
the precision of every run from outside (:func:`forced_amp`), so that the notebooks can be
checked under other numerics on any one machine (``make test-portable``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

Amp = Literal["auto", "off", "bf16", "fp16"]
AMP_ENV = "OCRLIB_AMP"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix units (AMX or AVX512-BF16; Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA if available, else the CPU), ``"cpu"`` or ``"cuda[:n]"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def forced_amp() -> Amp | None:
    """The numeric setting forced from outside with ``OCRLIB_AMP=off|bf16|fp16|auto``, or None.

    It overrides every profile's and command's ``amp``, so that a whole test run (notebooks
    included) can be repeated under another numeric setting.

    Raises:
        ValueError: naming the variable, for any other value.
    """
    value = os.environ.get(AMP_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"{AMP_ENV}={value!r}: expected off, bf16, fp16 or auto")
    return value  # type: ignore[return-value]


def resolve_amp(amp: Amp, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision).

    ``"auto"`` is bf16 on CUDA devices that support it (Ampere and newer: same range as fp32,
    no loss scaling), fp16 with a grad scaler on older CUDA devices, bf16 on CPUs with native
    bf16 units, else full precision. ``OCRLIB_AMP``, when set, replaces ``amp``.

    Raises:
        ValueError: for fp16 on a CPU.
    """
    forced = forced_amp()
    if forced is not None and forced != amp:
        _log_forced_once(forced, amp)
        amp = forced
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use 'bf16' on a CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


@functools.lru_cache(maxsize=None)
def _log_forced_once(forced: str, asked: str) -> None:
    log.info("%s=%s replaces amp=%r", AMP_ENV, forced, asked)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def numerics(amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What decides the rounding of a run besides the code: precision, threads, torch version.

    Stored in checkpoints: a model trained under other numerics is another model.
    """
    return {"amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0]}
