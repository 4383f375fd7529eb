"""The fast selective scan against the reference semantics, outputs and every gradient."""

import functools

import pytest
import torch

from ocrlib import fused
from ocrlib.scan import (
    POOL, SelectiveScanFn, selective_scan, selective_scan_parallel, selective_scan_ref,
)


def parallel_batch_major(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """selective_scan_parallel (time-major) with the reference's (b, d, l) contract."""
    tm = lambda x: None if x is None else x.permute(2, 0, 1)  # noqa: E731
    y = selective_scan_parallel(tm(u), tm(delta), A, tm(B), tm(C), D, tm(z), delta_bias,
                                delta_softplus)
    return y.permute(1, 2, 0)


def _inputs(b, d, l, n, dtype, seed=0, with_optional=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    # without softplus a negative step would make exp(ΔA) grow: keep Δ positive then
    delta = r(b, d, l, scale=0.5) if with_optional else (
        torch.rand(b, d, l, generator=g, dtype=dtype) * 0.5).requires_grad_()
    args = {
        "u": r(b, d, l), "delta": delta,
        "A": (-torch.rand(d, n, generator=g, dtype=dtype) * 4 - 0.2).requires_grad_(),
        "B": r(b, n, l), "C": r(b, n, l),
    }
    if with_optional:
        args.update(D=r(d), z=r(b, d, l), delta_bias=r(d, scale=0.5))
    return args


def _run(fn, args, softplus, weight):
    for t in args.values():
        t.grad = None
    y = fn(**args, delta_softplus=softplus)
    (y * weight).sum().backward()
    # an input the output does not depend on has no gradient: that is a zero (A, for l = 1)
    return y.detach(), {k: t.grad.clone() if t.grad is not None else torch.zeros_like(t)
                        for k, t in args.items()}


SHAPES = [(1, 1, 1, 1), (2, 8, 13, 4), (3, 16, 40, 16), (2, 5, 80, 3)]
SCANS = {"fast": functools.partial(selective_scan, fused=False),
         "fused": functools.partial(selective_scan, fused=True),
         "parallel": parallel_batch_major}


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("optional", [True, False])
def test_fast_and_parallel_scans_match_reference_in_float32(scan, shape, optional):
    if scan == "fused" and not fused.available():
        pytest.skip("no C compiler here (the fallback is tested in test_fused.py)")
    args = _inputs(*shape, torch.float32, with_optional=optional)
    weight = torch.randn(shape[0], shape[1], shape[2])
    y_ref, g_ref = _run(selective_scan_ref, args, optional, weight)
    y, g = _run(SCANS[scan], args, optional, weight)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k}")


@pytest.mark.parametrize("scan", ["fast", "parallel"])  # the fused scan is float32 only
@pytest.mark.parametrize("shape", SHAPES[1:3])
def test_fast_and_parallel_scans_match_reference_in_float64_to_rounding(scan, shape):
    args = _inputs(*shape, torch.float64, seed=1)
    weight = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    y_ref, g_ref = _run(selective_scan_ref, args, True, weight)
    y, g = _run(SCANS[scan], args, True, weight)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-10, atol=1e-10, msg=f"gradient of {k}")


def test_core_passes_gradcheck():
    g = torch.Generator().manual_seed(3)
    l, b, d, n = 6, 2, 3, 4
    args = [torch.rand(l, b, d, generator=g, dtype=torch.float64),
            torch.randn(l, b, d, generator=g, dtype=torch.float64),
            -torch.rand(n, d, generator=g, dtype=torch.float64) - 0.5,
            torch.randn(l, b, n, generator=g, dtype=torch.float64),
            torch.randn(l, b, n, generator=g, dtype=torch.float64)]
    for a in args:
        a.requires_grad_()
    assert torch.autograd.gradcheck(lambda *x: SelectiveScanFn.apply(*x, True), args)


def test_no_grad_forward_keeps_nothing_and_matches():
    args = _inputs(2, 8, 13, 4, torch.float32, with_optional=True)
    with torch.no_grad():
        y = selective_scan(**args, delta_softplus=True)
    torch.testing.assert_close(y, selective_scan_ref(**args, delta_softplus=True).detach(),
                               rtol=1e-5, atol=1e-5)


def test_half_inputs_compute_in_float32_and_return_half():
    args = {k: v.detach().to(torch.bfloat16) for k, v in _inputs(2, 8, 13, 4, torch.float32).items()}
    y = selective_scan(**args, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = selective_scan_ref(**args, delta_softplus=True)
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_buffers_are_reused_between_steps_and_retain_graph_works():
    POOL.clear()
    args = _inputs(2, 8, 13, 4, torch.float32)
    selective_scan(**args, delta_softplus=True, fused=False).sum().backward()
    held = POOL._bytes
    assert held > 0  # returned once the graph was freed
    y = selective_scan(**args, delta_softplus=True, fused=False)
    assert POOL._bytes < held  # taken again by the next forward
    loss = y.sum()
    args["A"].grad = None
    loss.backward(retain_graph=True)
    first = args["A"].grad.clone()
    loss.backward()  # the saved states are still there
    torch.testing.assert_close(args["A"].grad, 2 * first)


def test_parallel_scan_passes_gradcheck_and_handles_lengths_that_are_not_powers_of_two():
    g = torch.Generator().manual_seed(4)
    for l in (1, 2, 3, 7, 9):
        args = [torch.randn(l, 2, 3, generator=g, dtype=torch.float64).requires_grad_(),
                torch.randn(l, 2, 3, generator=g, dtype=torch.float64).requires_grad_(),
                (-torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5).requires_grad_(),
                torch.randn(l, 2, 4, generator=g, dtype=torch.float64).requires_grad_(),
                torch.randn(l, 2, 4, generator=g, dtype=torch.float64).requires_grad_()]
        assert torch.autograd.gradcheck(
            lambda *x: selective_scan_parallel(*x, delta_softplus=True), args)

