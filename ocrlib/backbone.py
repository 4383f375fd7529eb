"""The visual backbone: ResNet34 as a feature-sequence extractor (notebook 02).

Stage by stage for a ``(B, 3, 32, 320)`` input (channels, height, width):

======================  ==================  =================
stage                   stride (h, w)       output
======================  ==================  =================
conv1 + bn + relu       (2, 2)              (B, 64, 16, 160)
maxpool                 (2, 2)              (B, 64, 8, 80)
layer1                  (1, 1)              (B, 64, 8, 80)
layer2                  (2, 1)  *patched*   (B, 128, 4, 80)
layer3                  (2, 1)  *patched*   (B, 256, 2, 80)
layer4                  (2, 1)  *patched*   (B, 512, 1, 80)
last_conv (1x1)         (1, 1)              (B, 512, 1, 80)
======================  ==================  =================

The stock ResNet halves the width in layer2, layer3 and layer4 too, leaving 10 steps for
320 pixels; the original MambaOCR patched only two of them and got 40 steps, too few for
CTC to emit doubled characters. Here the width is divided by 4 only (``T = ceil(W / 4)``,
:func:`ocrlib.data.ctc_time_steps`) while the height still shrinks to 1 (a remaining
height, for inputs taller than 32, is averaged away). One row high, layer4's 3x3 kernels meet
the input with their middle row only; :mod:`ocrlib.trimconv` leaves the other rows out of the
arithmetic (the same numbers and gradients, about a quarter fewer multiply-adds in all).

Adaptation of a (pretrained) backbone, chosen by ``BackboneConfig.adaptation``:

* ``"adapter"``: a zero-initialised residual bottleneck inside every BasicBlock, after
  conv1/bn1/relu; its rank is the block's channels divided by ``adapter_reduction``.
* ``"lora"``: peft LoRA on every 3x3 convolution of layer1-layer4.
* ``"none"``: the plain network.

The freeze policy (:func:`apply_freeze`) then decides what trains.
"""

from __future__ import annotations

import contextlib
import io
import logging
import urllib.error
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torchvision

from .trimconv import trim_convolutions

log = logging.getLogger(__name__)

Adaptation = Literal["adapter", "lora", "none"]
FreezePolicy = Literal["auto", "original", "full", "adaptation_only"]
LORA_TARGETS = r"layer\d\.\d+\.conv[12]"


@dataclass
class BackboneConfig:
    """How to build the backbone.

    Attributes:
        pretrained: load torchvision's ImageNet weights (from the torch hub cache, or
            downloaded). When they cannot be had and ``offline_fallback`` is true, one
            warning is logged and the weights stay random; otherwise it is an error.
        offline_fallback: see ``pretrained``.
        adaptation: ``"adapter"``, ``"lora"`` or ``"none"``.
        adapter_reduction: adapter rank = channels // reduction (16, 32, 64, 128 for 4).
        lora_r, lora_alpha, lora_dropout: LoRA settings (``adaptation="lora"``).
        freeze: ``"original"``: adaptation + layer4 + last_conv train, the rest is frozen;
            ``"full"``: everything trains; ``"adaptation_only"``: adapters/LoRA and
            last_conv train; ``"auto"``: ``"original"`` on pretrained weights, ``"full"``
            on random ones (freezing random layers only removes capacity).
        out_channels: channels of the feature sequence (the 1x1 ``last_conv``).
        width: channels of layer1; layer2-4 have 2, 4 and 8 times as many. 64 is ResNet34 as
            published (and its ImageNet weights); 32 keeps all 34 layers at half the width, a
            quarter of the multiply-adds, for training from random weights on a CPU.
        zero_init_residual: start the last BatchNorm of every residual block at zero, so
            that each block starts as the identity and a 34-layer network trains like a
            shallow one at first (Goyal et al., 2017). From random weights on the full
            charset this took the validation CER at step 600 from 0.79 to 0.60
            (benchmarks/RESULTS.md). Pretrained weights replace it.
    """

    pretrained: bool = False
    offline_fallback: bool = True
    adaptation: Adaptation = "adapter"
    adapter_reduction: int = 4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    freeze: FreezePolicy = "auto"
    out_channels: int = 512
    zero_init_residual: bool = True
    width: int = 64


class Adapter(nn.Module):
    """Residual bottleneck ``x + up(relu(down(x)))``; ``up`` starts at zero, so it starts as the identity.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``
    """

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1, bias=False)
        self.up = nn.Conv2d(rank, channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


def load_imagenet_weights(model: nn.Module) -> bool:
    """Load torchvision's ImageNet ResNet34 weights into ``model``; False if they cannot be had."""
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    try:
        # torch.hub writes "Downloading: ..." to stderr before it tries; keep our one log line
        with contextlib.redirect_stderr(io.StringIO()):
            state = weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        log.warning(
            "ImageNet ResNet34 weights unavailable (%s: %s); using random initialisation",
            type(err).__name__, getattr(err, "reason", err),
        )
        return False
    model.load_state_dict(state)
    log.info("loaded ImageNet ResNet34 weights")
    return True


def resnet34(width: int = 64, zero_init_residual: bool = True) -> nn.Module:
    """torchvision's ResNet34 (random weights); with ``width != 64``, the same 34 layers with
    every stage's channels scaled (``width, 2 width, 4 width, 8 width``), built from
    torchvision's ``BasicBlock`` and initialised as torchvision initialises its own."""
    if width == 64:
        return torchvision.models.resnet34(weights=None, zero_init_residual=zero_init_residual)
    from torchvision.models.resnet import BasicBlock

    def stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        return nn.Sequential(BasicBlock(inplanes, planes, stride, down),
                             *(BasicBlock(planes, planes) for _ in range(blocks - 1)))

    net = nn.Module()
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1, net.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(3, 2, 1)
    w = [width, 2 * width, 4 * width, 8 * width]
    net.layer1 = stage(w[0], w[0], 3, 1)
    net.layer2, net.layer3, net.layer4 = (stage(w[k - 1], w[k], n, 2) for k, n in ((1, 4), (2, 6), (3, 3)))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
    return net


class ResNetBackbone(nn.Module):
    """ResNet34 without pooling and classifier, strides patched so that T = ceil(W / 4).

    Shape:
        ``(B, 3, H, W) -> (B, out_channels, 1, ceil(W / 4))``; :meth:`sequence` returns ``(B, T, C)``.

    Attributes:
        pretrained: whether ImageNet weights were loaded (not just asked for).
        freeze_policy: the policy applied (``"auto"`` resolved).
    """

    def __init__(self, cfg: BackboneConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or BackboneConfig()
        net = resnet34(cfg.width, cfg.zero_init_residual)
        self.pretrained = False
        if cfg.pretrained and cfg.width != 64:
            raise ValueError(f"ImageNet weights exist for width 64 only, not {cfg.width}")
        if cfg.pretrained:
            self.pretrained = load_imagenet_weights(net)
            if not self.pretrained and not cfg.offline_fallback:
                raise RuntimeError("ImageNet weights requested but unavailable (offline_fallback=False)")
        for layer in (net.layer2, net.layer3, net.layer4):
            block = layer[0]
            block.conv1.stride = (2, 1)
            block.downsample[0].stride = (2, 1)
        trim_convolutions(net)  # layer4 is one row high: its kernels' other rows add zeros
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.last_conv = nn.Conv2d(8 * cfg.width, cfg.out_channels, 1)
        if cfg.adaptation == "adapter":
            for block in self.blocks():
                c = block.conv2.in_channels
                block.conv2 = nn.Sequential(OrderedDict(
                    adapter=Adapter(c, max(1, c // cfg.adapter_reduction)), conv=block.conv2))
        elif cfg.adaptation == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                              lora_dropout=cfg.lora_dropout, target_modules=LORA_TARGETS)
            inject_adapter_in_model(lora, self)
        elif cfg.adaptation != "none":
            raise ValueError(f"adaptation must be adapter, lora or none, got {cfg.adaptation!r}")
        self.freeze_policy = apply_freeze(self, cfg.freeze)

    def blocks(self) -> Iterator[nn.Module]:
        """The 16 BasicBlocks of layer1-layer4."""
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            yield from layer

    def stages(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Run the network, yielding ``(stage name, output)`` after each stage.

        After ``backbone.to(memory_format=torch.channels_last)`` the input is converted to
        match: oneDNN's convolutions run 7-10 % faster on a CPU in that layout (measured,
        benchmarks/RESULTS.md), and so do cuDNN's under AMP.
        """
        if self.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        yield "stem (conv1, maxpool)", x
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            yield name, x
        x = self.last_conv(x)
        if x.shape[2] > 1:
            x = x.mean(dim=2, keepdim=True)
        yield "last_conv", x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, C, 1, T)`` features."""
        for _, x in self.stages(x):  # noqa: B007
            pass
        return x

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, T, C)`` feature sequence."""
        return self.forward(x).squeeze(2).transpose(1, 2)

    def train(self, mode: bool = True) -> ResNetBackbone:
        """Set train/eval mode, but keep frozen BatchNorm layers in eval mode.

        A frozen BN layer in train mode would still update its running statistics from
        every batch (they are buffers, not parameters), slowly detuning the frozen weights
        that were fitted to the old statistics.
        """
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
                m.eval()
        return self


# ---------------------------------------------------------------------------- freezing


def parameter_group(name: str) -> str:
    """The table group of a parameter name: adapters, lora, stem, layer1..layer4, last_conv."""
    if ".adapter." in name:
        return "adapters"
    if "lora_" in name:
        return "lora"
    top = name.split(".")[0]
    return "stem" if top in ("conv1", "bn1") else top


@dataclass
class GroupCount:
    """Parameter counts of one group."""

    group: str
    trainable: int
    frozen: int


def apply_freeze(backbone: ResNetBackbone, policy: FreezePolicy) -> str:
    """Set ``requires_grad`` by policy and return the policy applied (``"auto"`` resolved).

    * ``original``: adapters / LoRA, layer4 and last_conv train; stem and layer1-3 are frozen.
    * ``adaptation_only``: adapters / LoRA and last_conv train.
    * ``full``: everything trains (LoRA-wrapped base weights included).
    * ``auto``: ``original`` if ImageNet weights were loaded, else ``full`` (logged).
    """
    if policy == "auto":
        policy = "original" if backbone.pretrained else "full"
        if not backbone.pretrained:
            log.info("backbone has random weights: training all of it (freeze='full')")
    trainable_groups = {
        "original": {"adapters", "lora", "layer4", "last_conv"},
        "adaptation_only": {"adapters", "lora", "last_conv"},
        "full": None,
    }
    if policy not in trainable_groups:
        raise ValueError(f"unknown freeze policy {policy!r}")
    groups = trainable_groups[policy]
    for name, p in backbone.named_parameters():
        p.requires_grad_(groups is None or parameter_group(name) in groups)
    backbone.train(backbone.training)  # re-apply the frozen-BN rule
    return policy


def freeze_table(model: nn.Module) -> list[GroupCount]:
    """Trainable and frozen parameter counts per group, in network order."""
    table: dict[str, GroupCount] = {}
    for name, p in model.named_parameters():
        g = table.setdefault(parameter_group(name), GroupCount(parameter_group(name), 0, 0))
        if p.requires_grad:
            g.trainable += p.numel()
        else:
            g.frozen += p.numel()
    return list(table.values())
