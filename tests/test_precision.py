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
