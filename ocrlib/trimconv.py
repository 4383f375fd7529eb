"""Convolutions that skip the kernel rows which only ever meet padding (notebook 02).

A 32-pixel line leaves ResNet34's layer4 one pixel high (:mod:`ocrlib.backbone`). Its 3x3
convolutions pad that row with a zero row above and below, so two of every kernel's three rows
multiply nothing but zeros: two thirds of layer4's multiply-adds, forward and backward, add
zeros. The first convolution of layer4 (two rows in, one out, stride 2) wastes one row in three.
:class:`TrimmedConv2d` computes the same convolution with those rows cut from the kernel and
the padding cut to match: the same sums without the zero terms (equal to float rounding), the
same gradients (the cut rows' gradients were zeros and stay zeros), the same parameters and
state dict. On inputs where no row meets only padding it is an ordinary ``nn.Conv2d``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F


@functools.lru_cache(maxsize=256)
def live_rows(height: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int] | None:
    """The kernel rows ``[first, stop)`` that meet the input for an input ``height`` rows high,
    and the vertical padding that keeps every output row where it was with only those rows;
    None where every row meets the input somewhere (nothing to cut) or no cut fits.

    Output row ``o`` reads input row ``o * stride - padding + r`` with kernel row ``r``; a row
    ``r`` that reads padding for every ``o`` adds only zeros.

    >>> live_rows(1, 3, 1, 1)  # layer4's 3x3 convolutions: the middle row only, no padding
    (1, 2, 0)
    >>> live_rows(2, 3, 2, 1)  # layer4's first: two rows in, one out
    (1, 3, 0)
    >>> live_rows(8, 3, 1, 1) is None
    True
    """
    out = (height + 2 * padding - kernel) // stride + 1
    if out < 1:
        return None
    live = [r for r in range(kernel)
            if any(0 <= o * stride - padding + r < height for o in range(out))]
    if not live or (live[0], live[-1] + 1) == (0, kernel):
        return None
    first, stop = live[0], live[-1] + 1
    pad = padding - first  # output o still reads row o * stride - padding + first + r'
    if pad < 0 or (height + 2 * pad - (stop - first)) // stride + 1 != out:
        return None
    return first, stop, pad


class TrimmedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves out the kernel rows meeting only zero padding (:func:`live_rows`).

    Shape:
        as ``nn.Conv2d``: ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)``.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        cut = None
        if (self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and self.dilation[0] == 1):
            cut = live_rows(input.shape[-2], self.kernel_size[0], self.stride[0], self.padding[0])
        if cut is None:
            return super()._conv_forward(input, weight, bias)
        first, stop, pad = cut
        return F.conv2d(input, weight[:, :, first:stop], bias, self.stride,
                        (pad, self.padding[1]), self.dilation, self.groups)


def trim_convolutions(module: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` in ``module`` taller than one row a :class:`TrimmedConv2d`
    (in place: the same parameters, buffers and state dict); returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is nn.Conv2d and m.kernel_size[0] > 1:
            m.__class__ = TrimmedConv2d
            n += 1
    return n
