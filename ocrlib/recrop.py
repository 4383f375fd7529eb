"""Reading a line at more than one crop: the rows that hold ink, found in the image.

A line image from somewhere else (a scanner, a detector, another generator) comes with
whatever margins its maker left above and below the text. The network is trained at one
height, so a line with wide margins reaches it with small letters (on the laptop model's
test set, lines whose margins reach 0.4-0.5 em were read at CER 0.18, lines cut to their
ink at 0.05). :func:`ink_rows` finds the rows the ink covers from the pixels alone;
:func:`crop_rows` cuts the line to them plus a margin. Cutting every line that way is not
a cure by itself: it also removes what tells a lower-case ``o`` from a capital ``O`` (their
height against the line), and read that way alone the laptop model did worse on its own
test set. Reading the line both as given and cut to its ink rows, and keeping the reading
the model is surer of (:class:`ocrlib.inference.Recognizer`'s ``recrop``), read every set
measured better where its lines had room above and below, and lines already cut to their ink
as before (benchmarks/RESULTS.md, "Reading at several crops").

Widths vary as margins do: a condensed face, tight spacing or a line squeezed by whoever cut
it gives the network fewer frames per letter than it learned from. :func:`stretch_width`
makes a line wider or narrower; reading the line as given also at 0.8 and 1.25 times its
width (``stretch``) and keeping the surest reading read every set measured as well or better
(benchmarks/RESULTS.md, "Reading at several widths").
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: the margins (fractions of the ink's height) of the crops read beside the line as given
DEFAULT_RECROP: tuple[float, ...] = (0.15, 0.3)
#: the widest margin a crop may take (a fraction of the ink's height)
MAX_RECROP = 2.0
#: the factors by which the line as given is also read wider or narrower
DEFAULT_STRETCH: tuple[float, ...] = (0.8, 1.25)
#: the range a stretch factor may take
STRETCH_RANGE = (0.25, 4.0)


def ink_rows(grey: np.ndarray, threshold: float = 0.5, min_contrast: float = 0.1
             ) -> tuple[int, int] | None:
    """The first and one-past-last rows of ``grey`` that hold ink, or None if none stand out.

    A row's ink score is the mean of its brightest few pixels (1 % of the width, at least 2)
    in ``|grey - median|`` after a 3-pixel horizontal blur, which takes the edge off pixel
    noise; a row holds ink when its score is above ``threshold`` of the way from the lowest
    row score to the highest. The maximum over a row, rather than a mean, keeps the rows that
    only the tops of ascenders or the tails of descenders cross. A flat image, or one whose
    rows differ by less than ``min_contrast``, has no ink rows.

    Args:
        grey: ``(H, W)`` intensities in 0..1.
    """
    if grey.ndim != 2:
        raise ValueError(f"expected a (H, W) grey image, got shape {grey.shape}")
    h, w = grey.shape
    if h < 2 or w < 1:
        return None
    b = grey.astype(np.float32)
    if w >= 3:
        b = b.copy()
        b[:, 1:-1] = (grey[:, :-2] + grey[:, 1:-1] + grey[:, 2:]) / 3
    d = np.abs(b - np.median(b))
    k = min(w, max(2, w // 100))
    score = np.partition(d, w - k, axis=1)[:, w - k:].mean(axis=1)
    lo, hi = float(score.min()), float(score.max())
    if hi - lo < min_contrast:
        return None
    rows = np.nonzero(score > lo + threshold * (hi - lo))[0]
    return int(rows[0]), int(rows[-1]) + 1


def crop_rows(img: Image.Image, pad: float, keep: float = 0.8, min_height: int = 8
              ) -> Image.Image | None:
    """``img`` cut to its ink rows (:func:`ink_rows`) plus ``pad`` times their height above
    and below, or None where that would not clearly change it: the line is lower than
    ``min_height`` pixels, no rows stand out, or the crop keeps more than ``keep`` of the
    height (a line already cut close to its text)."""
    if img.height < min_height:
        return None
    found = ink_rows(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)
    if found is None:
        return None
    top, bot = found
    margin = int(round(pad * (bot - top)))
    top, bot = max(0, top - margin), min(img.height, bot + margin)
    if bot - top > keep * img.height:
        return None
    return img.crop((0, top, img.width, bot))


def stretch_width(img: Image.Image, factor: float) -> Image.Image:
    """``img`` made ``factor`` times as wide (bicubic), its height kept: the letters get
    ``factor`` times as many of the network's frames."""
    lo, hi = STRETCH_RANGE
    if not lo <= factor <= hi:
        raise ValueError(f"a stretch factor must lie in {lo:g}..{hi:g}, got {factor}")
    return img.resize((max(1, round(img.width * factor)), img.height), Image.BICUBIC)
