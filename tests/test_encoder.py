import logging
import os
import subprocess
import sys

import pytest
import torch

from ocrlib.encoder import (
    BiLSTMEncoder, EncoderConfig, MambaEncoder, TransformerEncoder, build_encoder,
    load_pretrained_mamba, lstm_hidden_for,
)
from ocrlib.mixer import cuda_kernels
from ocrlib.sizes import count_params

SMALL = dict(d_model=32, n_layers=2, d_state=8, dropout=0.0)


def _grads(enc, x, path):
    """Output and every parameter gradient of a fixed weighting of the output; every tensor
    made here lives on the input's device (the same helper serves the GPU test)."""
    enc.cfg.scan = path
    enc.zero_grad()
    y = enc(x)
    (y * torch.linspace(-1, 1, y.shape[-1], device=x.device)).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}


def _randomise_lora(enc):
    """peft starts lora_B at zero, so LoRA adds nothing: give it values, so paths must agree on it."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g).to(p.device) * 0.05)


def compare_paths(device, paths, rtol, atol, bidirectional=False):
    """Every path in ``paths`` against the first, outputs and gradients, LoRA non-zero."""
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL, lora_r=4, lora_dropout=0.0,
                                     bidirectional=bidirectional)).to(device)
    _randomise_lora(enc)
    x = torch.randn(2, 40, 512, device=device)
    y0, g0 = _grads(enc, x, paths[0])
    for path in paths[1:]:
        y, g = _grads(enc, x, path)
        torch.testing.assert_close(y, y0, rtol=rtol, atol=atol, msg=path)
        assert g.keys() == g0.keys()
        for name in g0:
            torch.testing.assert_close(g[name], g0[name], rtol=rtol, atol=atol, msg=f"{path}: {name}")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fast_path_matches_transformers_and_reference(bidirectional):
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL, bidirectional=bidirectional))
    x = torch.randn(3, 21, 512)
    y_tf, g_tf = _grads(enc, x, "transformers")
    for path in ("fast", "parallel", "reference"):
        y, g = _grads(enc, x, path)
        torch.testing.assert_close(y, y_tf, rtol=1e-4, atol=1e-4)
        assert g.keys() == g_tf.keys()
        for name in g:
            torch.testing.assert_close(g[name], g_tf[name], rtol=1e-4, atol=1e-4, msg=f"{path}: {name}")


@pytest.mark.parametrize("kind", ["mamba", "bilstm", "transformer"])
def test_every_encoder_has_the_same_interface(kind):
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(kind=kind, **SMALL))
    y = enc(torch.randn(2, 17, 512))
    assert y.shape == (2, 17, enc.out_dim)
    y.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


def test_bidirectional_mamba_sees_the_future():
    torch.manual_seed(0)
    x = torch.randn(1, 12, 512)
    x2 = x.clone()
    x2[:, -1] += 1.0  # change only the last step
    for bidirectional, sees in [(False, False), (True, True)]:
        enc = MambaEncoder(EncoderConfig(**SMALL, bidirectional=bidirectional)).eval()
        with torch.no_grad():
            changed = (enc(x)[:, 0] - enc(x2)[:, 0]).abs().max().item() > 1e-6
        assert changed == sees


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="encoder kind"):
        build_encoder(EncoderConfig(kind="gru"))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_parallel_path_matches_the_fast_path_with_lora(bidirectional):
    compare_paths(torch.device("cpu"), ["fast", "parallel"], 1e-4, 1e-4, bidirectional)


def test_dispatch_on_cpu_uses_the_fast_path_and_logs_it_once(caplog):
    from ocrlib import encoder as E

    E._log_path_once.cache_clear()
    enc = MambaEncoder(EncoderConfig(**SMALL))
    assert enc.scan_path(torch.device("cpu")) == "fast"
    with caplog.at_level(logging.INFO, logger="ocrlib"):
        enc(torch.randn(1, 5, 512))
        enc(torch.randn(1, 5, 512))
    assert [r.getMessage() for r in caplog.records].count("Mamba scan path: fast") == 1
    with pytest.raises(RuntimeError, match="CUDA"):
        E.resolve_scan("kernel", torch.device("cpu"))


def test_cuda_without_kernels_warns_once_and_takes_the_parallel_scan(caplog, monkeypatch):
    from ocrlib import mixer

    monkeypatch.setattr(mixer, "cuda_kernels", lambda: None)
    monkeypatch.setattr(mixer, "_PROBLEM", ["ImportError: No module named 'mamba_ssm'"])
    mixer._warn_no_kernels_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ocrlib"):
        paths = {mixer.resolve_scan("auto", torch.device("cuda")) for _ in range(3)}
    assert paths == {"parallel"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No module named 'mamba_ssm'" in warnings[0]
    assert "mamba-ssm>=2.3.0" in warnings[0]


def test_lora_trains_every_target_on_the_fast_path_and_nothing_else():
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL, lora_r=4))
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith(("in_proj.", "norm_f.")) or ".norm." in n for n in trainable)
    _, grads = _grads(enc, torch.randn(2, 9, 512), "fast")
    for layer in range(2):
        for target in ("in_proj", "x_proj", "dt_proj", "out_proj"):
            name = f"layers.{layer}.mixer.{target}.lora_B.default.weight"
            assert name in grads and grads[name].abs().sum() > 0, name
    assert not any(n.endswith("mixer.A_log") or "base_layer" in n for n in grads)


@pytest.mark.parametrize("path", ["fast", "parallel", "reference"])
def test_every_lora_target_gets_a_gradient_on_every_ocrlib_path(path):
    """ocrlib calls every projection as a module, so LoRA on each of them trains whatever the path
    (transformers' own mixer reads dt_proj.weight directly: its dt_proj LoRA would not)."""
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL, lora_r=4, lora_dropout=0.0))
    _, grads = _grads(enc, torch.randn(2, 9, 512), path)
    for target in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        assert grads[f"layers.1.mixer.{target}.lora_B.default.weight"].abs().sum() > 0, target


@pytest.fixture
def tiny_pretrained(tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, state_size=8)
    model = MambaForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    return tmp_path, model


def test_pretrained_loads_truncated_without_embedding(tiny_pretrained):
    path, model = tiny_pretrained
    enc = MambaEncoder(EncoderConfig(pretrained=str(path), n_layers=2, dropout=0.0)).eval()
    assert enc.out_dim == 32 and len(enc.layers) == 2
    assert not any("embedding" in n for n, _ in enc.named_parameters())
    ref_layers = model.backbone.layers
    torch.testing.assert_close(enc.layers[1].mixer.A_log, ref_layers[1].mixer.A_log)
    # same output as transformers' own model cut to two layers, fed the same embeddings
    from transformers import MambaModel

    cfg, state = load_pretrained_mamba(str(path), 2)
    ref = MambaModel(cfg).eval()
    ref.load_state_dict(state, strict=False)
    x = torch.randn(2, 11, 512)
    with torch.no_grad():
        h = enc.in_proj(x)
        torch.testing.assert_close(enc(x), ref(inputs_embeds=h).last_hidden_state, rtol=1e-4, atol=1e-4)


def test_pretrained_with_lora_freezes_the_mamba_weights(tiny_pretrained):
    path, _ = tiny_pretrained
    enc = MambaEncoder(EncoderConfig(pretrained=str(path), n_layers=3, lora_r=4))
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert "layers.0.mixer.A_log" in frozen and "layers.2.mixer.conv1d.weight" in frozen
    assert count_params(enc, trainable_only=True) < count_params(enc) / 2
    with pytest.raises(ValueError, match="has 3 layers"):
        load_pretrained_mamba(str(path), 4)


def test_offline_hub_id_is_a_clear_error():
    code = ("from ocrlib.encoder import load_pretrained_mamba\n"
            "load_pretrained_mamba('state-spaces/mamba-130m-hf', 2)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode != 0
    assert "cannot load Mamba config from 'state-spaces/mamba-130m-hf'" in proc.stderr


def test_bilstm_can_match_a_parameter_budget():
    cfg = EncoderConfig(kind="bilstm", d_model=64, n_layers=2)
    for budget in (100_000, 400_000):
        cfg.lstm_hidden = lstm_hidden_for(budget, cfg)
        n = count_params(BiLSTMEncoder(cfg))
        assert abs(n - budget) / budget < 0.02


def test_matched_bilstm_has_the_parameter_count_of_its_mamba():
    from ocrlib.encoder import matched_bilstm

    mamba = EncoderConfig(d_model=64, n_layers=4, dropout=0.0)
    budget = count_params(build_encoder(mamba))
    for layers in (None, 2):
        lstm = matched_bilstm(mamba, n_layers=layers)
        assert lstm.kind == "bilstm" and lstm.n_layers == (layers or 4) and lstm.d_model == 64
        assert abs(count_params(build_encoder(lstm)) - budget) / budget < 0.02


def test_transformer_positions_make_order_matter():
    torch.manual_seed(0)
    enc = TransformerEncoder(EncoderConfig(kind="transformer", **SMALL)).eval()
    x = torch.randn(1, 6, 512)
    with torch.no_grad():
        y, y_rev = enc(x), enc(x.flip(1)).flip(1)
    assert not torch.allclose(y, y_rev, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_paths_match_the_fast_path_on_gpu():
    paths = ["fast", "parallel"] + (["kernel"] if cuda_kernels() is not None else [])
    compare_paths(torch.device("cuda"), paths, 1e-3, 1e-3)


def test_selection_of_a_bidirectional_encoder_is_what_its_forward_pass_computes():
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL, bidirectional=True)).eval()
    x = torch.randn(1, 9, 512)
    before = enc.selection(x, layer=1, direction="forward")["delta"].clone()
    with torch.no_grad():  # the backward stack feeds layer 1's input too
        enc.layers_bwd[0].mixer.out_proj.weight.mul_(3)
    assert not torch.allclose(enc.selection(x, layer=1, direction="forward")["delta"], before)
    back = enc.selection(x, layer=0, direction="backward")
    assert back["delta"].shape == (1, 9, enc.mamba_config.intermediate_size)
    with pytest.raises(ValueError, match="unidirectional"):
        MambaEncoder(EncoderConfig(**SMALL)).selection(x, direction="backward")


def test_selection_exposes_positive_steps_and_decays_below_one():
    torch.manual_seed(0)
    enc = MambaEncoder(EncoderConfig(**SMALL)).eval()
    x = torch.randn(2, 9, 512)
    for layer in (0, 1):
        sel = enc.selection(x, layer=layer)
        d_inner = enc.mamba_config.intermediate_size
        assert sel["delta"].shape == (2, 9, d_inner) and sel["B"].shape == (2, 9, 8)
        assert bool((sel["delta"] > 0).all())
        assert bool(((sel["decay"] > 0) & (sel["decay"] < 1)).all())
    # layer 1's input depends on layer 0: a change to layer 0 changes it
    before = enc.selection(x, layer=1)["delta"].clone()
    with torch.no_grad():
        enc.layers[0].mixer.out_proj.weight.mul_(2)
    assert not torch.allclose(enc.selection(x, layer=1)["delta"], before)


def test_kernel_path_runs_mamba_ssm_scan_without_causal_conv1d(monkeypatch):
    """causal-conv1d is optional: with only mamba-ssm importable the kernel path still agrees.

    A stand-in ``mamba_ssm`` module whose ``selective_scan_fn`` is ocrlib's reference (same
    batch-major signature) checks the plumbing on the CPU; the GPU check runs the real kernel.
    """
    import types

    from ocrlib import mixer
    from ocrlib.scan import selective_scan_ref

    def kernel_like(u, delta, A, B, C, D, z, delta_softplus):  # noqa: ANN001, ANN202
        # the real kernel refuses mixed dtypes (u, delta, B, C, z must match), as under autocast
        assert len({t.dtype for t in (u, delta, B, C, z)}) == 1, [t.dtype for t in (u, delta, B, C, z)]
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_softplus=delta_softplus)

    iface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    iface.selective_scan_fn = kernel_like
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", iface)
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)  # import fails
    mixer.cuda_kernels.cache_clear()
    try:
        kernels = mixer.cuda_kernels()
        assert kernels is not None and kernels[0] is kernel_like and kernels[1] is None
        assert mixer.kernel_problem().startswith("causal-conv1d")
        torch.manual_seed(0)
        m = MambaEncoder(EncoderConfig(**SMALL)).layers[0].mixer
        x = torch.randn(7, 2, 32)
        torch.testing.assert_close(mixer.mixer_steps(m, x, "kernel"), mixer.mixer_steps(m, x, "fast"),
                                   rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 projections, float32 Δ
            y_kernel, y_fast = mixer.mixer_steps(m, x, "kernel"), mixer.mixer_steps(m, x, "fast")
        torch.testing.assert_close(y_kernel.float(), y_fast.float(), rtol=0.05, atol=0.05)
    finally:
        mixer.cuda_kernels.cache_clear()
