import pytest
import torch

from ocrlib import precision as P


def test_auto_picks_bf16_on_gpus_that_have_it_and_fp16_with_a_scaler_elsewhere(monkeypatch):
    monkeypatch.delenv(P.AMP_ENV, raising=False)
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_amp("auto", cuda) is torch.bfloat16  # Ampere and newer
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_amp("auto", cuda) is torch.float16  # a T4
    assert P.resolve_amp("off", cuda) is None and P.resolve_amp("fp16", cuda) is torch.float16


def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch):
    monkeypatch.delenv(P.AMP_ENV, raising=False)
    cpu = torch.device("cpu")
    for fast, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert P.resolve_amp("auto", cpu) is want
    with pytest.raises(ValueError, match="needs CUDA"):
        P.resolve_amp("fp16", cpu)


def test_the_environment_forces_the_precision_of_every_run(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv(P.AMP_ENV, "bf16")
    assert P.resolve_amp("off", cpu) is torch.bfloat16
    monkeypatch.setenv(P.AMP_ENV, "OFF")
    assert P.resolve_amp("bf16", cpu) is None
    monkeypatch.setenv(P.AMP_ENV, "half")
    with pytest.raises(ValueError, match="OCRLIB_AMP='half'"):
        P.resolve_amp("auto", cpu)


def test_numerics_record_precision_threads_and_torch():
    n = P.numerics(torch.bfloat16)
    assert n["amp"] == "bfloat16" and n["threads"] == torch.get_num_threads()
    assert P.numerics(None)["amp"] == "off" and "+" not in n["torch"]


_CONVS = """
import sys, torch
import ocrlib, os
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(8, 8, 3, padding=1))
out = []
for w in range(8, 200, 4):  # more shapes than a cache of 4 kernels holds
    x = torch.randn(2, 3, 16, w, generator=torch.Generator().manual_seed(w), requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.float().sum().backward()
    out.append(torch.cat([y.float().flatten(), x.grad.flatten(), net[0].weight.grad.flatten()]))
    net.zero_grad()
torch.save(torch.cat(out), sys.argv[1])
print(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"])
"""


def test_ocrlib_widens_onednns_kernel_cache_keeps_a_users_own_and_changes_no_number(tmp_path):
    """The kernel cache decides what is compiled again, never what is computed: the same
    convolutions, forward and backward in bf16 over many widths, agree to the bit between a
    process whose cache holds 4 kernels and one with ocrlib's."""
    import os
    import subprocess
    import sys

    import ocrlib

    def run(name, **env):
        e = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        got = subprocess.run([sys.executable, "-c", _CONVS, str(tmp_path / name)], env={**e, **env},
                             capture_output=True, text=True, check=True)
        return got.stdout.strip(), torch.load(tmp_path / name)

    ours, a = run("ours")
    small, b = run("small", ONEDNN_PRIMITIVE_CACHE_CAPACITY="4")
    assert ours == str(ocrlib.ONEDNN_KERNELS) and small == "4"
    assert torch.equal(a, b)
