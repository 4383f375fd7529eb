"""One Mamba mixer, step by step, on every path (notebook 03).

A mixer is transformers' ``MambaMixer`` (its modules and weights, so ``MambaConfig`` and the
pretrained ``state-spaces/mamba-130m-hf`` load unchanged); :func:`mixer_steps` runs it:

1. ``in_proj``: ``(L, B, d_model) -> (L, B, 2 D)``, split into the input ``u`` and the gate ``z``;
2. causal depthwise convolution along time, then SiLU;
3. selection: ``x_proj`` gives Δ (rank R), B and C from ``u``; ``dt_proj`` lifts Δ to D channels;
4. the selective scan (discretisation and recurrence, D skip, z gate);
5. ``out_proj``.

Every step is the same on every path except where the work is heavy. Which path runs where
(:func:`resolve_scan`, ``EncoderConfig.scan="auto"``):

=================  ======================================================================
``"kernel"``       CUDA tensors with mamba-ssm and causal-conv1d importable: their fused
                   convolution and selective-scan kernels.
``"parallel"``     CUDA tensors without those packages: the convolution as shifted sums and
                   :func:`ocrlib.scan.selective_scan_parallel` (a prefix scan in log2(L)
                   rounds of large tensor operations; a GPU is slow at L small ones).
``"fast"``         everywhere else (the CPU): shifted sums and the fast CPU scan
                   :func:`ocrlib.scan.selective_scan_time_major`.
``"reference"``    on request: :func:`ocrlib.scan.selective_scan_ref`, the plain loop.
``"transformers"`` on request: transformers' own ``MambaMixer.forward`` (for comparisons; its
                   fused path reads ``x_proj``/``dt_proj``/``out_proj`` weights directly and its
                   CPU path reads ``dt_proj.weight``, so LoRA on those would not train there).
=================  ======================================================================

Every projection is called as a module here, so LoRA on ``in_proj``, ``x_proj``, ``dt_proj`` and
``out_proj`` trains the same on every path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scan import selective_scan_parallel, selective_scan_ref, selective_scan_time_major

log = logging.getLogger(__name__)

ScanPath = Literal["auto", "fast", "parallel", "reference", "transformers", "kernel"]
#: The versions whose kernels were checked against ocrlib's reference (see README, GPU section).
KERNEL_PACKAGES = "mamba-ssm>=2.3.0 (and, optionally, causal-conv1d>=1.4)"


@lru_cache(maxsize=1)
def cuda_kernels() -> tuple[Any, Any | None] | None:
    """``(selective_scan_fn, causal_conv1d_fn)`` when mamba-ssm imports, else None.

    causal-conv1d is optional (the slower of the two to build, and the smaller gain): without it
    the second item is None and the convolution runs as shifted multiply-adds. Imported lazily:
    both are CUDA-only compiled packages. Why they did not import is kept in
    :func:`kernel_problem` (and logged as a warning when a CUDA model wants them).
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # ImportError, or an ABI mismatch raising OSError/RuntimeError
        _PROBLEM[0] = f"{type(err).__name__}: {err}"
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as err:
        _PROBLEM[0] = f"causal-conv1d: {type(err).__name__}: {err}"
        log.info("mamba-ssm's scan without causal-conv1d (%s): the convolution runs in PyTorch",
                 _PROBLEM[0])
        causal_conv1d_fn = None
    return selective_scan_fn, causal_conv1d_fn


_PROBLEM = [""]


def kernel_problem() -> str:
    """Why the CUDA kernels are unavailable ("" when they imported, or were not tried)."""
    cuda_kernels()
    return _PROBLEM[0]


def resolve_scan(scan: ScanPath, device: torch.device) -> ScanPath:
    """The concrete path for ``scan`` on ``device`` (``"auto"`` resolved, see the table above).

    Raises:
        RuntimeError: for ``"kernel"`` without CUDA tensors or without the packages.
    """
    if scan == "auto":
        if device.type != "cuda":
            return "fast"
        if cuda_kernels() is not None:
            return "kernel"
        _warn_no_kernels_once(kernel_problem())
        return "parallel"
    if scan == "kernel" and (device.type != "cuda" or cuda_kernels() is None):
        raise RuntimeError("scan='kernel' needs CUDA tensors and the mamba-ssm/causal-conv1d "
                           f"packages ({kernel_problem() or 'not on a CUDA device'})")
    return scan


@lru_cache(maxsize=None)
def _warn_no_kernels_once(problem: str) -> None:
    log.warning("Mamba on CUDA without mamba-ssm's kernels (%s); using ocrlib's parallel scan. "
                "Install %s for the fused kernels (README, GPU section).", problem, KERNEL_PACKAGES)


def causal_conv_time_major(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal convolution along time, as shifted multiply-adds.

    ``y_t = bias + Σ_k w[K-1-k] x_{t-k}`` (x before the start is 0): the same as
    ``nn.Conv1d(groups=D, padding=K-1)`` cut to the first L outputs, whose CPU backward
    for this shape was measured 4x slower than the whole forward of this version.

    Shape:
        x: ``(L, B, D)``; weight: ``(D, 1, K)``; bias: ``(D,)`` -> ``(L, B, D)``
    """
    w = weight.squeeze(1).t()  # (K, D)
    K = w.shape[0]
    y = torch.addcmul(bias, x, w[K - 1]) if bias is not None else x * w[K - 1]
    for k in range(1, min(K, x.shape[0])):
        y[k:].addcmul_(x[:-k], w[K - 1 - k])  # in place: y is not saved by the ops above
    return y


# The two heavy steps, per path: (conv + SiLU) and (scan with D skip and z gate), time-major.
Conv = Callable[[nn.Module, torch.Tensor], torch.Tensor]
Scan = Callable[..., torch.Tensor]


def _conv_shifted(mixer: nn.Module, u: torch.Tensor) -> torch.Tensor:
    return F.silu(causal_conv_time_major(u, mixer.conv1d.weight, mixer.conv1d.bias))


def _conv_kernel(mixer: nn.Module, u: torch.Tensor) -> torch.Tensor:
    conv = cuda_kernels()[1]  # type: ignore[index]
    if conv is None:  # mamba-ssm without causal-conv1d
        return _conv_shifted(mixer, u)
    y = conv(u.permute(1, 2, 0).contiguous(), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias,
             activation="silu")  # (B, D, L)
    return y.permute(2, 0, 1)


def _batch_major(scan: Scan) -> Scan:
    """A ``(b, d, l)`` scan called on time-major tensors."""
    def run(u, delta, A, B, C, D, z):  # noqa: ANN001, ANN202
        bm = [x.permute(1, 2, 0).contiguous() for x in (u, delta, B, C, z)]
        y = scan(bm[0], bm[1], A.contiguous(), bm[2], bm[3], D, bm[4], delta_softplus=True)
        return y.permute(2, 0, 1)
    return run


def _scan_kernel(u, delta, A, B, C, D, z):  # noqa: ANN001, ANN202
    # the kernel wants u, Δ, B, C and z in one dtype; Δ is float32 (bias included), so under
    # autocast the bf16/fp16 projections are widened (the kernel computes in float32 anyway)
    u, B, C, z = (t.to(delta.dtype) for t in (u, B, C, z))
    return _batch_major(cuda_kernels()[0])(u, delta, A, B, C, D, z)  # type: ignore[index]


def _time_major(scan: Scan) -> Scan:
    def run(u, delta, A, B, C, D, z):  # noqa: ANN001, ANN202
        return scan(u, delta, A, B, C, D=D, z=z, delta_softplus=True)
    return run


STEPS: dict[str, tuple[Conv, Scan]] = {
    "fast": (_conv_shifted, _time_major(selective_scan_time_major)),
    "parallel": (_conv_shifted, _time_major(selective_scan_parallel)),
    "reference": (_conv_shifted, _batch_major(selective_scan_ref)),
    "kernel": (_conv_kernel, _scan_kernel),
}


def mixer_steps(mixer: nn.Module, x: torch.Tensor, path: ScanPath = "fast",
                capture: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """One mixer (transformers' ``MambaMixer`` weights) on time-major ``x``.

    Args:
        path: a concrete path (:func:`resolve_scan`).
        capture: if given, filled with what the scan consumes: ``u``, ``z``, ``dt`` (Δ before
            softplus), ``B``, ``C`` (time-major) and ``A`` ``(D, N)``.

    Shape:
        ``(L, B, d_model) -> (L, B, d_model)``
    """
    if path == "transformers":
        return mixer(x.transpose(0, 1)).transpose(0, 1)
    conv, scan = STEPS[path]
    # 1. gated projection                                       (L, B, 2 D) -> 2 x (L, B, D)
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    # 2. causal depthwise convolution along time + SiLU         (L, B, D)
    u = conv(mixer, u)
    # 3. selection: Δ, B and C depend on the input              (L, B, R + 2 N)
    dt, Bm, Cm = torch.split(
        mixer.x_proj(u), [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    with torch.autocast(x.device.type, enabled=False):  # Δ in float32, bias included, as the
        dt = mixer.dt_proj(dt.float())  # kernels keep it: (L, B, D)
    A = -torch.exp(mixer.A_log.float())  # (D, N)
    if capture is not None:
        capture.update(u=u, z=z, dt=dt, B=Bm, C=Cm, A=A)
    # 4. discretisation and recurrence, D skip and z gate       (L, B, D)
    y = scan(u, dt, A, Bm, Cm, mixer.D.float(), z)
    # 5. output projection                                      (L, B, d_model)
    return mixer.out_proj(y.to(x.dtype))
