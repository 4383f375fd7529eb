"""Convolutions without the kernel rows that meet only padding: the same numbers, less work."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from ocrlib import trimconv
from ocrlib.backbone import BackboneConfig, ResNetBackbone
from ocrlib.trimconv import TrimmedConv2d, live_rows, trim_convolutions


def brute_live(height: int, kernel: int, stride: int, padding: int) -> set[int]:
    out = (height + 2 * padding - kernel) // stride + 1
    return {r for r in range(kernel) for o in range(out) if 0 <= o * stride - padding + r < height}


SHAPES = [(h, k, s, p) for h, k, s, p in itertools.product((1, 2, 3, 4, 8), (1, 2, 3, 5, 7), (1, 2),
                                                            (0, 1, 2, 3)) if h + 2 * p >= k]


@pytest.mark.parametrize("height,kernel,stride,padding", SHAPES)
def test_trimmed_convolution_equals_the_plain_one(height: int, kernel: int, stride: int,
                                                  padding: int) -> None:
    cut = live_rows(height, kernel, stride, padding)
    live = brute_live(height, kernel, stride, padding)
    if cut is not None:  # kept: from the first row that meets the input to the last
        assert (cut[0], cut[1]) == (min(live), max(live) + 1) != (0, kernel)
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 4, (kernel, 3), (stride, 1), (padding, 1)).double()
    trimmed = nn.Conv2d(3, 4, (kernel, 3), (stride, 1), (padding, 1)).double()
    trimmed.load_state_dict(plain.state_dict())
    assert trim_convolutions(trimmed) == (kernel > 1)
    x1 = torch.randn(2, 3, height, 9, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = plain(x1), trimmed(x2)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y2, y1)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(trimmed.weight.grad, plain.weight.grad)
    torch.testing.assert_close(trimmed.bias.grad, plain.bias.grad)


def test_layer4_of_a_32_pixel_line_reads_one_kernel_row(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = ResNetBackbone(BackboneConfig(width=8, adaptation="none"))
    assert isinstance(backbone.layer4[1].conv1, TrimmedConv2d)
    rows: list[int] = []
    conv2d = trimconv.F.conv2d

    def spy(x: torch.Tensor, w: torch.Tensor, *args: object) -> torch.Tensor:
        rows.append(w.shape[2])
        return conv2d(x, w, *args)

    monkeypatch.setattr(trimconv, "F", SimpleNamespace(conv2d=spy))  # the cut path only
    backbone(torch.randn(2, 3, 32, 40))
    # layer4: its first convolution (2 rows in) keeps two kernel rows, the other five one
    assert sorted(rows) == [1, 1, 1, 1, 1, 2]


def test_a_trimmed_backbone_learns_as_the_plain_one() -> None:
    torch.manual_seed(0)
    trimmed = ResNetBackbone(BackboneConfig(width=8, adaptation="adapter")).double()
    plain = ResNetBackbone(BackboneConfig(width=8, adaptation="adapter")).double()
    for m in plain.modules():
        if isinstance(m, TrimmedConv2d):
            m.__class__ = nn.Conv2d
    assert list(plain.state_dict()) == list(trimmed.state_dict())
    plain.load_state_dict(trimmed.state_dict())
    x = torch.randn(3, 3, 32, 48, dtype=torch.float64)
    outs = []
    for net in (plain, trimmed):
        y = net(x)
        (y * torch.linspace(-1, 1, y.shape[-1], dtype=torch.float64)).sum().backward()
        outs.append((y, {n: p.grad for n, p in net.named_parameters()}))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], grad, msg=name)
