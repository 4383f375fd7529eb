"""How a line's pixels become network input: grey, standardised, and the ink made bright.

The network never sees colour or the ink's polarity (notebook 01): :func:`normalize_pixels`
turns a line grey, standardises it and negates it where :func:`ink_is_dark` says the ink is
dark. Where that guess is unsure (:func:`unsure_polarity`), a reader can try the other polarity
too (:class:`ocrlib.inference.Recognizer`). Where the ink differs from its background in
colour more than in luminance, :func:`colour_view` gives a reader the grey that tells them apart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image

from .images import LUMINANCE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: How pixels become network input: ``"grey"`` (luminance, standardised per image, ink made
#: bright) or ``"imagenet"`` (RGB with ImageNet statistics, as the original did).
Normalize = Literal["grey", "imagenet"]


def normalize_pixels(rgb: np.ndarray, how: Normalize = "grey") -> tuple[torch.Tensor, float]:
    """``(H, W, 3)`` RGB in 0..1 -> ``(3, H, W)`` network input and the value to pad it with.

    ``"grey"``: the luminance, standardised over the image (zero mean, unit variance) and
    negated when the ink is dark, so that ink is always bright on a darker background, then
    repeated on the three channels; padding takes the background level (the median). Colour
    carries nothing about the text: measured on the full charset from random weights, a
    network fed RGB lines in random colours stayed on CTC's all-blank plateau where the same
    lines in grey, standardised and ink-bright, were read (benchmarks/RESULTS.md). The ink is
    told from the paper by :func:`ink_is_dark`.
    Repeated on three channels with zero mean and unit variance, it is also what an ImageNet
    backbone expects of each channel.

    ``"imagenet"``: RGB normalised with ImageNet's mean and std; padding 0 (the mean colour).
    """
    if how == "imagenet":
        arr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (arr - mean) / std, 0.0
    if how != "grey":
        raise ValueError(f"normalize must be grey or imagenet, got {how!r}")
    g = rgb[..., :3].astype(np.float32) @ np.array(LUMINANCE, dtype=np.float32)
    g = g - g.mean()
    g = g / max(float(g.std()), 0.02)  # 0.02: a blank image stays flat instead of exploding
    if ink_is_dark(g):
        g = -g
    t = torch.from_numpy(np.ascontiguousarray(g))
    return t.expand(3, *t.shape).contiguous(), float(np.median(g))


#: Beyond this skewness of the standardised pixel values, its sign tells the ink's polarity.
SURE_SKEW = 0.5


def ink_is_dark(g: np.ndarray) -> bool:
    """Whether the ink of a standardised ``(H, W)`` grey line is darker than its background.

    On paper, plain or textured, the paper is the bulk of the pixels and the ink a tail, so the
    sign of the skewness says which side the ink is on (right on every line of ocrlib's own sets
    that are not scenes). On a photograph the background has tails of its own and the skewness
    is near zero: measured on TRDG's lines on photographs, its sign was right for 57 % of them.
    Where the skewness is within :data:`SURE_SKEW` of zero, the middle rows, where the text is,
    are compared with the two ends of the line (its first and last eighth of the height in
    columns), mostly background: the ink is on the side where more middle-row pixels lie beyond
    the ends' 5th or 95th percentile. Right for 73 % of the photographed lines, and for every
    line of matplotlib's ink-cropped set (the top and bottom rows, tried first, hold ink there:
    99 %); benchmarks/RESULTS.md.
    """
    skew = float(np.mean(g**3))
    if abs(skew) > SURE_SKEW:
        return skew < 0
    h, w = g.shape
    k = max(1, min(h // 8, w // 8))
    ends = np.concatenate([g[:, :k].ravel(), g[:, w - k:].ravel()])
    centre = g[h // 4: h - h // 4]
    lo, hi = np.quantile(ends, (0.05, 0.95))
    return float((centre < lo).mean()) > float((centre > hi).mean())


def unsure_polarity(images: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
    """Which lines of a batch of grey network input had their ink polarity guessed, not read.

    :func:`normalize_pixels` negates a line where :func:`ink_is_dark` says its ink is dark;
    the skewness that decides it is the same up to its sign after that, so it can be read back
    from the input. Where its size is at most :data:`SURE_SKEW` the polarity came from the
    fallback rule, right for about three photographed lines in four.

    Args:
        images: ``(B, C, H, W)`` input from ``normalize_pixels(..., "grey")``, padded.
        widths: ``(B,)`` each line's own width (default: all of ``W``).

    Returns:
        ``(B,)`` bool.
    """
    b, _, _, w = images.shape
    x = images[:, 0].float()
    if widths is None:
        widths = torch.full((b,), w, dtype=torch.long)
    cols = torch.arange(w, device=images.device) < widths.to(images.device)[:, None]  # (B, W)
    mask = cols[:, None, :].expand_as(x)
    skew = (x.pow(3) * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
    return skew.abs() <= SURE_SKEW


#: A :func:`colour_view` whose grey correlates with the luminance at least this much (in
#: size) adds nothing to reading the luminance, so none is given.
SAME_VIEW = 0.98


def colour_view(img: Image.Image, min_height: int = 8) -> Image.Image | None:
    """``img`` in the grey that best tells its text rows from its margins, or None where that
    grey is its luminance.

    :func:`normalize_pixels` reads the luminance, in which blue weighs 7 %: blue or purple ink
    on an orange wall, as other generators draw text on photographs, is nearly the wall's
    luminance and vanishes. The colours of the middle rows (30-70 % of the height, where a
    line's text is) are told from those of the top and bottom fifths (its margins, mostly
    background) by Fisher's discriminant: the direction ``S^-1 (m_mid - m_margin)`` in RGB,
    with ``S`` the margins' colour covariance, so the background's own texture (bricks,
    windows) is weighed down and the ink's difference from it brought out. Measured on TRDG's
    lines (benchmarks/RESULTS.md), read beside the luminance and the surer reading kept, it
    more than halved the errors on photographs.

    Args:
        img: an RGB line.
        min_height: lower lines have no margins to tell apart: None.

    Returns:
        The view as an RGB image with three equal channels, its grey stretched to 0..255;
        None for a low or grey line, or where the view correlates with the luminance by
        :data:`SAME_VIEW` or more (the same reading).
    """
    if img.height < min_height:
        return None
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    h = a.shape[0]
    k, c = max(1, h // 5), int(h * 0.3)
    margins = np.concatenate([a[:k].reshape(-1, 3), a[h - k:].reshape(-1, 3)]).astype(np.float64)
    middle = a[c: h - c].reshape(-1, 3).astype(np.float64)
    spread = np.cov(margins, rowvar=False) + 1e-4 * np.eye(3)
    d = np.linalg.solve(spread, middle.mean(0) - margins.mean(0))
    if not np.all(np.isfinite(d)) or np.abs(d).max() < 1e-8:
        return None
    g = a @ d.astype(np.float32)
    lum = a @ np.array(LUMINANCE, dtype=np.float32)
    gc, lc = g - g.mean(), lum - lum.mean()
    gg, ll = float((gc * gc).sum()), float((lc * lc).sum())
    if gg < 1e-12 or (ll > 1e-12 and abs(float((gc * lc).sum())) / np.sqrt(gg * ll) >= SAME_VIEW):
        return None  # flat, or the luminance again
    lo, hi = float(g.min()), float(g.max())
    grey = np.round((g - lo) / (hi - lo) * 255.0).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
