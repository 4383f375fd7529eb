"""The selective scan: Mamba's recurrence, as a reference and as a fast CPU autograd op (notebook 03).

Glossary (the paper's symbols; shapes follow mamba-ssm's ``selective_scan_fn``):

======  =================  ==============================================================
name    shape              meaning
======  =================  ==============================================================
b, l    batch, length      ``l`` is the number of time steps T
d       channels           the expanded inner width (``expand * d_model``)
n       state size         size of the hidden state per channel (``d_state``, 16)
u       (b, d, l)          input sequence x(t)
delta   (b, d, l)          step size Δ(t), input-dependent (before softplus and bias)
A       (d, n)             continuous-time state matrix (diagonal, negative: a decay)
B, C    (b, n, l)          input and output matrices, input-dependent ("selective")
D       (d,)               skip connection ``y += D * u``
z       (b, d, l)          gate: ``y *= silu(z)``
======  =================  ==============================================================

Discretisation: ``Ā = exp(Δ A)`` (zero-order hold: exact for a constant input over the step,
and it keeps ``|Ā| < 1`` for any Δ, so the recurrence stays stable), ``B̄ u = Δ B u`` (Euler).
The exact ZOH input term ``(Ā - 1) A⁻¹ B`` differs from Euler's at first order: their ratio is
about ``1 - Δ|A| / 2``. Euler is still fine because B is learned: the network scales it to
whatever the discretisation needs, and Euler is cheaper. Then per channel and state dimension::

    h_t = Ā_t * h_{t-1} + Δ_t B_t u_t          y_t = C_t · h_t + D u_t

Three implementations, checked against each other (tests/test_scan.py):
:func:`selective_scan_ref` is the definition, step by step. :class:`SelectiveScanFn` is the
fast CPU scan: the reference loops in Python under autograd; autograd then stores a slice of the full
``(b, d, l, n)`` tensors per step and its backward is ~30 times slower than the forward.
:class:`SelectiveScanFn` runs the same loop in time-major layout with no graph, keeps only
the states, and walks back once in reverse for every gradient (the adjoint recurrence
``g_{t-1} = Ā_t * g_t + C_{t-1} dy_{t-1}``). :func:`selective_scan_parallel` computes the
same recurrence as a parallel prefix scan: ``log2(l)`` rounds of whole-tensor operations
instead of ``l`` small steps, which is what a GPU without the fused kernels needs.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F

from . import fused as _fused


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The selective scan written plainly, step by step (mamba-ssm's ``selective_scan_ref`` semantics).

    Shape:
        u, delta, z: ``(b, d, l)``; A: ``(d, n)``; B, C: ``(b, n, l)``; D, delta_bias: ``(d,)``
        -> ``(b, d, l)`` in the dtype of ``u``.
    """
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (x.to(work) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, l = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        dA = torch.exp(delta[:, :, t, None] * A)  # (b, d, n)  zero-order hold
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]  # (b, d, n)  Euler
        h = dA * h + dBu
        ys.append((h * C[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D[:, None].to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype)


class _BufferPool:
    """Reuses the large CPU buffers the scan saves for its backward pass.

    Each training step saves two ``(l, b, n, d)`` float tensors per Mamba layer (42 MB
    each for b=16, l=80, n=16, d=512). Freed, glibc returns memory that large to the
    kernel, and the next step page-faults it back in, one 4 KiB page at a time; measured
    here that doubled the cost of a whole encoder step. The buffers go back to the pool
    when the autograd graph that holds them is freed (see :class:`_Saved`). CUDA tensors need none of this: PyTorch's
    CUDA allocator caches already.
    """

    def __init__(self, max_bytes: int = 2**30) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (shape, like.dtype, like.device)
        with self._lock:
            stack = self._free.get(key)
            if stack:
                buf = stack.pop()
                self._bytes -= buf.nbytes
                return buf
        return like.new_empty(shape)

    def put(self, *bufs: torch.Tensor) -> None:
        with self._lock:
            for buf in bufs:
                if buf.device.type == "cpu" and self._bytes + buf.nbytes <= self.max_bytes:
                    self._free.setdefault((tuple(buf.shape), buf.dtype, buf.device), []).append(buf)
                    self._bytes += buf.nbytes

    def clear(self) -> None:
        """Drop every cached buffer."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = _BufferPool()


class _Saved:
    """The scan's saved buffers; they go back to :data:`POOL` when the autograd graph is freed
    (after ``backward()``, or when an output is dropped), so ``retain_graph=True`` works."""

    def __init__(self, *bufs: torch.Tensor) -> None:
        self.bufs = bufs

    def __del__(self) -> None:
        POOL.put(*self.bufs)


class SelectiveScanFn(torch.autograd.Function):
    """The bare recurrence ``h_t = exp(Δ_t A) h_{t-1} + (Δu)_t B_t``, ``y_t = C_t · h_t``.

    Time-major inputs so that every step reads contiguous memory, and the state laid out
    ``(b, n, d)`` so that the sums over ``n`` run down contiguous rows of ``d``. Work goes
    step by step on ``(b, n, d)`` slices, which stay in the CPU's L2 cache (batching steps
    into large ops was measured slower: those spill to main memory). The forward saves
    the decays Ā_t and states h_t (in buffers from :data:`POOL`); the backward walks back
    once and needs no autograd graph.

    Shape:
        delta, du: ``(l, b, d)``; At (A transposed): ``(n, d)``; B, C: ``(l, b, n)``
        -> y: ``(l, b, d)``
    """

    @staticmethod
    def forward(ctx: Any, delta: torch.Tensor, du: torch.Tensor, At: torch.Tensor,
                B: torch.Tensor, C: torch.Tensor, keep: bool) -> torch.Tensor:
        l, b, d = delta.shape
        n = At.shape[0]
        y = delta.new_empty(l, b, d)
        h = delta.new_zeros(b, n, d)
        if keep:  # saved for backward
            decays = POOL.get((l, b, n, d), delta)
            states = POOL.get((l, b, n, d), delta)
        for t in range(l):
            if keep:
                decay, h_new = decays[t], states[t]
            else:
                decay, h_new = torch.empty_like(h), torch.empty_like(h)
            torch.mul(delta[t, :, None, :], At, out=decay).exp_()  # Ā_t = exp(Δ_t A)
            torch.mul(decay, h, out=h_new).addcmul_(B[t, :, :, None], du[t, :, None, :])
            torch.bmm(C[t, :, None, :], h_new, out=y[t, :, None, :])  # y_t = C_t · h_t
            h = h_new
        if keep:
            ctx.save_for_backward(delta, du, At, B, C)
            ctx.saved = _Saved(decays, states)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        delta, du, At, B, C = ctx.saved_tensors
        decays, states = ctx.saved.bufs
        l, b, d = delta.shape
        dy = dy.contiguous()
        g = delta.new_zeros(b, At.shape[0], d)  # dLoss/dh_t, carried backwards in time
        d_delta = torch.empty_like(delta)
        d_du = torch.empty_like(du)
        dB = torch.empty_like(B)
        dC = torch.empty_like(C)
        dAt = torch.zeros_like(g)  # Σ_t q_t Δ_t, summed over b at the end
        for t in range(l - 1, -1, -1):
            h_t = states[t]
            g.addcmul_(C[t, :, :, None], dy[t, :, None, :])  # g_t = C_t dy_t + Ā_{t+1} g_{t+1}
            torch.sum(h_t * dy[t, :, None, :], dim=-1, out=dC[t])  # dC_t = Σ_d h_t dy_t
            torch.bmm(B[t, :, None, :], g, out=d_du[t, :, None, :])  # d(Δu)_t = Σ_n B_t g_t
            torch.sum(g * du[t, :, None, :], dim=-1, out=dB[t])  # dB_t = Σ_d g_t (Δu)_t
            if t == 0:
                d_delta[0].zero_()  # Ā_0 multiplies h_{-1} = 0: no gradient through it
                break
            g.mul_(decays[t])  # Ā_t g_t: the part of g_{t-1} that comes from h_t
            q = g * states[t - 1]  # dLoss/d(Δ_t A) = Ā_t g_t h_{t-1}
            torch.sum(q * At, dim=1, out=d_delta[t])  # dΔ_t = Σ_n q A
            dAt.addcmul_(q, delta[t, :, None, :])  # dA = Σ_{t,b} q Δ_t
        return d_delta, d_du, dAt.sum(0), dB, dC, None


def selective_scan_time_major(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    fused: bool | None = None,
) -> torch.Tensor:
    """:func:`selective_scan` on time-major tensors, the layout the fast encoder runs in.

    Runs in float32 (float64 stays float64) and casts the result back to the dtype of ``u``:
    in C (:mod:`ocrlib.fused`: softplus, ``Δu``, the recurrence, D skip and z gate in one
    call, forward and backward) where it was compiled and the tensors are float32 on the
    CPU, else as PyTorch operations around :class:`SelectiveScanFn`. ``fused``: True or
    False to insist (tests); None picks.

    Shape:
        u, delta, z: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)``; D, delta_bias: ``(d,)``
        -> ``(l, b, d)``
    """
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u_w, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)
    if fused is None:
        fused = work == torch.float32 and A.shape[1] <= _fused.MAX_STATE and _fused.usable(delta)
    A_w, B_w, C_w = A.to(work), B.to(work), C.to(work)
    D_w = None if D is None else D.to(work)
    z_w = None if z is None else z.to(work)
    if fused:  # softplus, Δu, the recurrence, D skip and z gate in one C call
        return _fused.ssm(u_w, delta, A_w, B_w, C_w, D_w, z_w, softplus=delta_softplus).to(dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    du = delta * u_w
    keep = torch.is_grad_enabled() and any(
        x.requires_grad for x in (u, delta, A, B, C) if x is not None)
    y = SelectiveScanFn.apply(delta.contiguous(), du.contiguous(), A_w.t().contiguous(),
                              B_w.contiguous(), C_w.contiguous(), keep)
    if D_w is not None:
        y = y + u_w * D_w
    if z_w is not None:
        y = y * F.silu(z_w)
    return y.to(dtype)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    fused: bool | None = None,
) -> torch.Tensor:
    """The fast selective scan, with the same contract (and layout) as :func:`selective_scan_ref`
    (``fused``: see :func:`selective_scan_time_major`).

    Shape:
        u, delta, z: ``(b, d, l)``; A: ``(d, n)``; B, C: ``(b, n, l)``; D, delta_bias: ``(d,)``
        -> ``(b, d, l)``
    """
    def tm(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.permute(2, 0, 1)

    y = selective_scan_time_major(tm(u), tm(delta), A, tm(B), tm(C), D, tm(z),
                                  delta_bias, delta_softplus, fused)
    return y.permute(1, 2, 0)


def selective_scan_parallel(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The selective scan as a parallel prefix scan (Hillis-Steele), time-major, plain autograd.

    Each step is an affine map of the state, ``h -> Ā_t h + x_t`` (``x_t = Δ_t B_t u_t``),
    and composing two maps gives another: ``(Ā_2, x_2) ∘ (Ā_1, x_1) = (Ā_2 Ā_1, Ā_2 x_1 + x_2)``.
    The composition is associative, so all prefixes ``h_t`` come out of ``⌈log2 l⌉`` rounds
    in which every step combines with the one ``1, 2, 4, ...`` steps before it: a few large
    tensor operations, where the sequential scan launches ``l`` rounds of small ones. That is
    what makes a GPU fast without mamba-ssm's fused kernel. It holds full ``(l, b, d, n)``
    tensors per round (memory, not speed, is its cost) and only multiplies decays
    ``0 < Ā <= 1``, so it is as stable as the sequential scan.

    Shape:
        u, delta, z: ``(l, b, d)``; A: ``(d, n)``; B, C: ``(l, b, n)``; D, delta_bias: ``(d,)``
        -> ``(l, b, d)`` in the dtype of ``u``
    """
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u_w, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    a = torch.exp(delta[..., None] * A.to(work))  # Ā_t               (l, b, d, n)
    x = (delta * u_w)[..., None] * B.to(work)[:, :, None, :]  # Δ_t B_t u_t  (l, b, d, n)
    span = 1
    while span < a.shape[0]:  # after this round, step t holds the composition of t-2 span+1 .. t
        x = torch.cat([x[:span], a[span:] * x[:-span] + x[span:]])
        a = torch.cat([a[:span], a[span:] * a[:-span]])
        span *= 2
    y = (x * C.to(work)[:, :, None, :]).sum(-1)  # C_t · h_t         (l, b, d)
    if D is not None:
        y = y + u_w * D.to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype)

