"""Cluttered scenes behind the text: a stand-in for the photographs other generators use.

:func:`ocrlib.render.background` draws paper: flat, gradient, mottled, striped or blotched,
never with an edge as strong as ink. Other generators put text on photographs of walls,
windows and water; a model that learned "a strong edge is ink" reads their bricks as letters
(benchmarks/RESULTS.md, "Text from another generator"). :func:`scene` draws such clutter from
nothing, and :func:`readable` pulls it back where it would hide the ink.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from .images import LUMINANCE


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance (0..1) of RGB values in 0..255, over the last axis."""
    return (rgb[..., :3] @ np.array(LUMINANCE, dtype=np.float32)) / 255.0



def scene(shape: tuple[int, int], colour: np.ndarray, rng: np.random.Generator,
          amount: float) -> np.ndarray:
    """A ``(h, w, 3)`` cluttered background around ``colour``: a stand-in for the photographs
    (brick walls, windows, water) other generators put behind text, drawn from nothing.

    The other backgrounds vary by at most about 40 % of the smallest ink contrast, so a model
    trained on them learns that any strong edge is ink; on a photograph it then reads the
    bricks (benchmarks/RESULTS.md, "Text from another generator"). Here a smooth colour field
    carries one or two structures (bricks, blocks with hard edges, water ripples, grain) whose
    edges reach 40-80 % of the smallest ink contrast, then a slight blur.
    """
    h, w = shape
    spread = 15.0 + 25.0 * amount
    coarse = colour + rng.normal(0, spread, size=(int(rng.integers(2, 4)),
                                                  max(2, w // int(rng.integers(12, 48))), 3))
    base = np.stack([np.asarray(Image.fromarray(coarse[..., c].astype(np.float32)).resize(
        (w, h), Image.Resampling.BICUBIC)) for c in range(3)], axis=-1)
    edge = 35.0 + 35.0 * amount  # 0.14-0.27 in luminance; the smallest ink contrast is 0.35
    for kind in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        base = _SCENE_PARTS[int(kind)](base, rng, edge)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.0))))
    return np.asarray(img, dtype=np.float32)


def readable(bg: np.ndarray, colour: np.ndarray, fg: np.ndarray, alpha: np.ndarray,
              least: float = 0.2) -> np.ndarray:
    """A scene pulled toward its mean ``colour`` until nine in ten of the pixels under the
    ink differ from the ink by ``least`` in luminance: clutter, not camouflage."""
    under = alpha > 0.5
    if not under.any():
        return bg
    ink = float(luminance(fg))
    for k in (1.0, 0.7, 0.5, 0.3, 0.0):
        pulled = colour + (bg - colour) * k
        if np.quantile(np.abs(luminance(pulled[under]) - ink), 0.1) >= least:
            return pulled
    return pulled


def _bricks(base: np.ndarray, rng: np.random.Generator, edge: float) -> np.ndarray:
    """Courses of bricks, each its own shade, with mortar joints lighter or darker."""
    h, w, _ = base.shape
    course = rng.uniform(0.25, 0.7) * h
    length = course * rng.uniform(1.8, 3.5)
    joint = rng.choice([-1.0, 1.0]) * edge
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy = yy + rng.uniform(0, course)
    row = np.floor(yy / course)
    xs = xx + (row % 2) * length / 2 + rng.uniform(0, length)
    col = np.floor(xs / length)
    ids = (row * 7919 + col).astype(np.int64)
    shades = rng.normal(0, edge / 3, size=(int(ids.max() - ids.min()) + 1, 3))
    out = base + shades[ids - ids.min()]
    mortar = ((yy % course) < 1.5) | ((xs % length) < 1.5)
    return out + mortar[..., None] * joint


def _blocks(base: np.ndarray, rng: np.random.Generator, edge: float) -> np.ndarray:
    """Hard-edged rectangles, filled or outlined: windows, signs, a facade."""
    h, w, _ = base.shape
    out = base.copy()
    for _ in range(int(rng.integers(3, 12))):
        bw, bh = rng.uniform(0.2, 3.0) * h, rng.uniform(0.2, 1.2) * h
        x0, y0 = rng.uniform(-bw / 2, w), rng.uniform(-bh / 2, h)
        xa, xb = int(max(0, x0)), int(min(w, x0 + bw))
        ya, yb = int(max(0, y0)), int(min(h, y0 + bh))
        if xb <= xa or yb <= ya:
            continue
        shade = rng.normal(0, edge / 1.5, size=3) + rng.choice([-1.0, 1.0]) * edge / 2
        if rng.random() < 0.6:
            out[ya:yb, xa:xb] += shade
        else:
            t = int(rng.integers(1, 3))
            out[ya:ya + t, xa:xb] += shade
            out[max(ya, yb - t):yb, xa:xb] += shade
            out[ya:yb, xa:xa + t] += shade
            out[ya:yb, max(xa, xb - t):xb] += shade
    return out


def _ripples(base: np.ndarray, rng: np.random.Generator, edge: float) -> np.ndarray:
    """Bright wandering lines, as light on water: ridges of a sum of sine waves."""
    h, w, _ = base.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = np.zeros((h, w), dtype=np.float32)
    for _ in range(3):
        a, f = rng.uniform(0, np.pi), rng.uniform(0.03, 0.15)
        v += np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
    ridge = np.clip(1.0 - np.abs(v) / rng.uniform(0.3, 0.8), 0.0, 1.0)
    return base + ridge[..., None] * edge * rng.uniform(0.6, 1.0) * rng.choice([-1.0, 1.0])


def _grain(base: np.ndarray, rng: np.random.Generator, edge: float) -> np.ndarray:
    """Coarse-to-fine noise (gravel, foliage, concrete) in the background's own hue."""
    h, w, _ = base.shape
    total = np.zeros((h, w), dtype=np.float32)
    for cell in (8, 4, 2):
        small = rng.normal(0, 1, size=(max(2, h // cell), max(2, w // cell))).astype(np.float32)
        total += np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    return base + (total / 3.0 * edge * 0.8)[..., None]


_SCENE_PARTS = (_bricks, _blocks, _ripples, _grain)
