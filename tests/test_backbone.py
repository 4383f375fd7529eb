import logging
import urllib.error

import pytest
import torch
import torchvision

from ocrlib.backbone import BackboneConfig, ResNetBackbone, apply_freeze, freeze_table
from ocrlib.data import ctc_time_steps
from ocrlib.sizes import count_params, estimate_memory


def _backbone(seed=0, **kw):
    torch.manual_seed(seed)
    return ResNetBackbone(BackboneConfig(**kw))


@pytest.mark.parametrize("height,width", [(32, 320), (32, 321), (32, 100), (32, 64), (32, 640), (48, 160)])
def test_output_shape_follows_the_width_rule(height, width):
    b = _backbone(adaptation="none").eval()
    with torch.no_grad():
        out = b(torch.randn(2, 3, height, width))
        seq = b.sequence(torch.randn(2, 3, height, width))
    t = -(-width // 4)
    assert ctc_time_steps(width) == t
    assert out.shape == (2, 512, 1, t)
    assert seq.shape == (2, t, 512)


def test_stage_shapes_for_32x320():
    b = _backbone(adaptation="none").eval()
    with torch.no_grad():
        shapes = {name: tuple(x.shape[1:]) for name, x in b.stages(torch.randn(1, 3, 32, 320))}
    assert shapes == {
        "stem (conv1, maxpool)": (64, 8, 80), "layer1": (64, 8, 80), "layer2": (128, 4, 80),
        "layer3": (256, 2, 80), "layer4": (512, 1, 80), "last_conv": (512, 1, 80),
    }


def test_adapters_start_as_the_identity():
    # zero_init_residual off: with it, every residual branch starts at zero, adapters included
    plain = _backbone(adaptation="none", zero_init_residual=False).eval()
    adapted = _backbone(adaptation="adapter", zero_init_residual=False).eval()
    ranks = [blk.conv2.adapter.down.out_channels for blk in adapted.blocks()]
    assert ranks[0] == 16 and ranks[-1] == 128  # rank scales with the block's channels
    x = torch.randn(2, 3, 32, 128)
    with torch.no_grad():
        assert torch.equal(plain(x), adapted(x))
    # and they are not a no-op once trained: perturb one adapter
    with torch.no_grad():
        adapted.layer2[0].conv2.adapter.up.weight.normal_()
        assert not torch.allclose(plain(x), adapted(x))


def test_lora_attaches_through_peft_and_trains_only_its_parameters():
    b = _backbone(adaptation="lora", freeze="adaptation_only", zero_init_residual=False)
    names = [n for n, p in b.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("last_conv") for n in names)
    assert sum("lora_A" in n for n in names) == 32  # conv1 and conv2 of 16 blocks
    frozen_before = {n: p.detach().clone() for n, p in b.named_parameters() if not p.requires_grad}
    lora_b = b.layer1[0].conv1.lora_B["default"].weight
    assert torch.all(lora_b == 0)  # LoRA starts as the identity too
    opt = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        b(torch.randn(2, 3, 32, 64)).square().mean().backward()
        opt.step()
    assert not torch.all(lora_b == 0)
    for n, p in b.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n


def test_original_freeze_policy_matches_its_table():
    b = _backbone(adaptation="adapter")
    assert b.freeze_policy == "full"  # random weights: everything trains
    assert apply_freeze(b, "original") == "original"
    table = {g.group: g for g in freeze_table(b)}
    assert set(table) == {"stem", "layer1", "adapters", "layer2", "layer3", "layer4", "last_conv"}
    for group, row in table.items():
        if group in ("adapters", "layer4", "last_conv"):
            assert row.frozen == 0 and row.trainable > 0, group
        else:
            assert row.trainable == 0 and row.frozen > 0, group
    total, trainable = count_params(b), count_params(b, trainable_only=True)
    assert trainable == sum(r.trainable for r in table.values())
    assert total == trainable + sum(r.frozen for r in table.values())
    assert trainable == table["adapters"].trainable + table["layer4"].trainable + table["last_conv"].trainable


def test_frozen_batchnorm_statistics_do_not_move_during_training():
    b = _backbone(adaptation="adapter")
    apply_freeze(b, "original")
    b.train()
    assert b.training and not b.layer1[0].bn1.training and b.layer4[0].bn1.training
    frozen_bn = b.layer1[0].bn1
    mean0, var0 = frozen_bn.running_mean.clone(), frozen_bn.running_var.clone()
    live_mean0 = b.layer4[0].bn1.running_mean.clone()
    opt = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        b(torch.randn(4, 3, 32, 64) * 3 + 1).square().mean().backward()
        opt.step()
    assert torch.equal(frozen_bn.running_mean, mean0) and torch.equal(frozen_bn.running_var, var0)
    assert not torch.equal(b.layer4[0].bn1.running_mean, live_mean0)
    b.train()  # calling train() again keeps the rule
    assert not frozen_bn.training


def test_offline_pretrained_fallback_is_one_clear_message(monkeypatch, caplog, capsys):
    def offline(self, *a, **kw):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with caplog.at_level(logging.INFO, logger="ocrlib"):
        b = _backbone(pretrained=True)
    assert not b.pretrained and b.freeze_policy == "full"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "random initialisation" in warnings[0].getMessage()
    assert "Traceback" not in caplog.text
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError, match="unavailable"):
        _backbone(pretrained=True, offline_fallback=False)


def test_pretrained_weights_are_loaded_and_the_original_policy_applies(monkeypatch):
    torch.manual_seed(123)
    reference = torchvision.models.resnet34(weights=None).state_dict()
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict",
                        lambda self, *a, **kw: reference)
    b = _backbone(pretrained=True)
    assert b.pretrained and b.freeze_policy == "original"
    assert torch.equal(b.layer3[1].conv1.weight, reference["layer3.1.conv1.weight"])
    assert not b.layer3[1].conv1.weight.requires_grad and b.layer4[0].conv1.weight.requires_grad


def test_memory_estimate_counts_trainable_state_only():
    b = _backbone(adaptation="adapter")
    x = torch.randn(2, 3, 32, 320)
    full = estimate_memory(b, x)
    apply_freeze(b, "original")
    mean0 = b.layer4[0].bn1.running_mean.clone()
    frozen = estimate_memory(b, x)
    assert torch.equal(b.layer4[0].bn1.running_mean, mean0)  # the probe does not train BN
    assert full.total_params == frozen.total_params
    assert full.weights_mib == pytest.approx(full.total_params * 4 / 2**20)
    assert frozen.adam_mib == pytest.approx(2 * frozen.grads_mib)
    assert frozen.trainable_params < full.trainable_params and frozen.train_mib < full.train_mib
    assert full.activations_mib > 0


def test_residual_blocks_start_as_the_identity_from_random_weights():
    b = _backbone(adaptation="none").eval()
    assert all(float(blk.bn2.weight.detach().abs().max()) == 0 for blk in b.blocks())
    x = torch.randn(1, 64, 8, 20)
    with torch.no_grad():  # a block without downsampling passes its input through (after ReLU)
        torch.testing.assert_close(b.layer1[1](x), torch.relu(x))
    assert float(_backbone(adaptation="none", zero_init_residual=False).layer1[0].bn2.weight.detach().min()) == 1

