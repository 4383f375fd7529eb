"""The fused CPU scan (``ocrlib.fused``): used when compiled, never needed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ocrlib import fused
from ocrlib.scan import POOL, selective_scan, selective_scan_ref

ROOT = Path(__file__).resolve().parents[1]
compiled = pytest.mark.skipif(not fused.available(), reason=f"not compiled here: {fused.problem()}")


def _args(b=2, d=8, l=13, n=4, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    t = {"u": torch.randn(b, d, l, generator=g), "delta": torch.randn(b, d, l, generator=g) * 0.5,
         "A": -torch.rand(d, n, generator=g) * 4 - 0.2, "B": torch.randn(b, n, l, generator=g),
         "C": torch.randn(b, n, l, generator=g), "D": torch.randn(d, generator=g),
         "z": torch.randn(b, d, l, generator=g), "delta_bias": torch.randn(d, generator=g) * 0.5}
    return {k: v.requires_grad_(grad) for k, v in t.items()}


@compiled
def test_the_fast_path_runs_the_compiled_scan_and_keeps_no_states(monkeypatch):
    calls = []
    real = fused.FusedSSMFn.apply
    monkeypatch.setattr(fused.FusedSSMFn, "apply", lambda *a: calls.append(1) or real(*a))
    POOL.clear()
    args = _args()
    y = selective_scan(**args, delta_softplus=True)
    assert calls and POOL._bytes == 0  # nothing saved but the inputs: states are recomputed
    y.sum().backward()
    ref = selective_scan_ref(**{k: v.detach() for k, v in args.items()}, delta_softplus=True)
    torch.testing.assert_close(y.detach(), ref, rtol=1e-5, atol=1e-5)


@compiled
def test_compiled_scan_backward_twice_with_retain_graph_and_under_no_grad():
    args = _args()
    y = selective_scan(**args, delta_softplus=True, fused=True)
    loss = (y * y).sum()
    loss.backward(retain_graph=True)
    first = args["A"].grad.clone()
    loss.backward()
    torch.testing.assert_close(args["A"].grad, 2 * first)
    with torch.no_grad():
        y2 = selective_scan(**args, delta_softplus=True, fused=True)
    torch.testing.assert_close(y2, y.detach())


@compiled
def test_compiled_scan_takes_bf16_inputs_and_long_lines():
    args = {k: v.detach() for k, v in _args(b=3, d=16, l=300, n=16, seed=2).items()}
    ref = selective_scan(**args, delta_softplus=True, fused=False)
    torch.testing.assert_close(selective_scan(**args, delta_softplus=True, fused=True), ref,
                               rtol=1e-4, atol=1e-4)
    half = {k: v.to(torch.bfloat16) for k, v in args.items()}
    y = selective_scan(**half, delta_softplus=True)
    assert y.dtype == torch.bfloat16


@compiled
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_scan_agrees_over_thread_counts_channel_blocks_and_one_line(threads):
    # d = 40: two full blocks of 16 channels and a tail of 8; b = 1: the threads share one
    # line's channels and add up their dB, dC, dA and dD; steps large enough that some
    # decays underflow (exp(-120) is 0 in float32 either way)
    args = {k: v.detach() for k, v in _args(b=1, d=40, l=37, n=16, seed=3).items()}
    args["delta"] = args["delta"] * 30
    weight = torch.randn(1, 40, 37, generator=torch.Generator().manual_seed(4))
    grads = []
    before = torch.get_num_threads()
    try:
        for use_c in (False, True):
            torch.set_num_threads(threads if use_c else 1)
            inp = {k: v.clone().requires_grad_() for k, v in args.items()}
            y = selective_scan(**inp, delta_softplus=True, fused=use_c)
            (y * weight).sum().backward()
            grads.append([y.detach()] + [inp[k].grad for k in sorted(inp)])
    finally:
        torch.set_num_threads(before)
    for name, ref, got in zip(["y", *sorted(args)], *grads):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"{name}, {threads} threads")


@compiled
def test_compiled_softplus_matches_pytorch_at_the_extremes():
    # softplus is linear above 20 (its gradient 1, where exp(dt) overflows past 88) and
    # exp(dt) itself below -17 (where log(1 + e) would round to 0)
    args = {k: v.detach() for k, v in _args(b=1, d=6, l=5, n=4, seed=5).items()}
    args["delta"] = torch.tensor([100.0, 25.0, 19.0, -10.0, -30.0, 0.0]).repeat(5, 1).t()[None]
    args["delta_bias"] = torch.zeros(6)
    grads = []
    for use_c in (False, True):
        inp = {k: v.clone().requires_grad_() for k, v in args.items()}
        y = selective_scan(**inp, delta_softplus=True, fused=use_c)
        y.sum().backward()
        grads.append((y.detach(), inp["delta"].grad, inp["u"].grad))
    for ref, got in zip(*grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


@compiled
def test_the_recurrence_leaves_the_callers_denormals_alone():
    # the C loops count denormals as zero inside their own threads and restore the setting
    selective_scan(**_args(), delta_softplus=True, fused=True).sum().backward()
    assert (torch.tensor([1e-40]) * 1.0).item() > 0


def test_too_many_states_or_float64_take_the_pytorch_path():
    big = {k: v.detach() for k, v in _args(n=fused.MAX_STATE + 1).items()}
    y = selective_scan(**big, delta_softplus=True)  # picks the PyTorch scan, no error
    torch.testing.assert_close(y, selective_scan_ref(**big, delta_softplus=True), rtol=1e-4,
                               atol=1e-4)
    with pytest.raises(ValueError, match="at most 64 states"):
        fused.ssm(*(torch.zeros(1, 1, 1),) * 2, torch.zeros(1, 65), *(torch.zeros(1, 1, 65),) * 2)
    dbl = {k: v.detach().double() for k, v in _args().items()}
    assert selective_scan(**dbl, delta_softplus=True).dtype == torch.float64
    if fused.available():  # asked for explicitly, what the C code cannot take is refused
        with pytest.raises(ValueError, match="float32 CPU tensors, not torch.float64"):
            selective_scan(**dbl, delta_softplus=True, fused=True)


PROBE = """
import json, logging, sys, torch
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
from ocrlib import fused
from ocrlib.encoder import EncoderConfig, MambaEncoder
torch.manual_seed(0)
enc = MambaEncoder(EncoderConfig(input_dim=16, d_model=32, n_layers=1, dropout=0.0))
x = torch.randn(2, 20, 16)
y = enc(x)
y.sum().backward()
print(json.dumps({"available": fused.available(), "problem": fused.problem(),
                  "y": y.detach().sum().item(),
                  "denormal": (torch.tensor([1e-40]) * 1.0).item()}))
"""


def _probe(tmp_path, env):
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "OCRLIB_CACHE": str(tmp_path / "cache"), **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_machine_without_a_compiler_still_trains_on_the_pytorch_scan(tmp_path):
    # no compiler on PATH, $CC pointing nowhere, an empty cache: nothing to build with
    out, row = _probe(tmp_path, {"PATH": str(tmp_path / "empty"), "CC": "/nonexistent/cc"})
    assert not row["available"] and "no C compiler" in row["problem"]
    assert out.count("fused CPU scan unavailable (no C compiler found") == 1  # one log line
    if fused.available():  # and it computes what the compiled scan computes
        _, with_cc = _probe(tmp_path, {})
        assert with_cc["available"]
        assert with_cc["y"] == pytest.approx(row["y"], rel=1e-5, abs=1e-5)
        # loading the library leaves the process's float behaviour alone (fast math is for the
        # compile step only: linked in, it would flush denormals to zero everywhere)
        assert with_cc["denormal"] > 0


def test_the_compiled_scan_can_be_switched_off(tmp_path):
    _, row = _probe(tmp_path, {"OCRLIB_FUSED": "0"})
    assert not row["available"] and "OCRLIB_FUSED=0" in row["problem"]
