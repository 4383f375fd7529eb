"""Drawing one text-line image from its spec (notebook 01, "each randomisation").

A *spec* (made by :func:`ocrlib.synth.sample_spec`) holds the text and every random choice;
:func:`render` turns it into an RGB image deterministically. The steps:

1. **ink**: the text drawn character by character in white on black at the font size, with
   extra letter spacing, bolder (stroke) or thinner (eroded) strokes, inside margins that range
   from tight to loose; optional underline or ruled lines in a second mask;
2. **geometry**: width stretch, shear (a slant), rotation, a perspective tilt, a sine warp
   of the baseline;
3. **resolution**: scaled to the target height, keeping the aspect ratio (sometimes through a
   much smaller height first: a low-resolution scan scaled back up); Gaussian blur;
4. **paper and ink**: a flat, gradient, mottled-paper, striped or blotched background (or a
   cluttered scene: bricks, blocks, ripples, grain), and
   ink colours whose luminance differs from the background's by at least the spec's contrast;
5. **sensor**: Gaussian pixel noise, JPEG compression.

Margins are taken around the font's ascent and descent (the crop ``"box"``): the height of a
letter relative to the line is what tells ``o`` from ``O`` and ``x`` from ``X``. A spec may
instead ask for the crop ``"ink"``: the rows the ink covers plus a margin, the tight box a text
detector or another generator gives, where the text fills the line whatever the font's
metrics.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .photos import photo
from .scenes import readable, scene

BACKGROUNDS = ("flat", "gradient", "paper", "stripes", "blotches")
#: Drawn by its own probability (:class:`ocrlib.synth.Effects` ``scene``), not among BACKGROUNDS:
#: a cluttered photo stand-in whose structure is as strong as the ink.
SCENE = "scene"
#: A strip of a real photograph (:mod:`ocrlib.photos`; the spec's ``photo`` names it), drawn
#: by its own probability too (:class:`ocrlib.synth.Effects` ``photo``).
PHOTO = "photo"
LINES = ("none", "underline", "ruled", "box", "strike")


@lru_cache(maxsize=512)
def load_font(path: str, size: int, variation: str | None = None) -> ImageFont.FreeTypeFont:
    """A FreeType font at ``size`` points, with a variable font's named instance selected."""
    font = ImageFont.truetype(path, size)
    if variation:
        font.set_variation_by_name(variation)
    return font


# ---------------------------------------------------------------------------- 1. ink


Points = np.ndarray  # (K, 2) x, y positions in a mask's pixel coordinates


def draw_ink(spec: dict[str, Any]) -> tuple[Image.Image, Image.Image | None, Points]:
    """The text (and the line decoration, if any) as grey masks at the font size.

    Returns:
        ``(ink, lines, centres)``: "L" images of the same size, 255 = ink (``lines`` is None
        without decoration), and the centre of every character's box, ``(len(text), 2)``.
    """
    font = load_font(spec["font_path"], spec["size"], spec.get("variation"))
    text, size = spec["text"], spec["size"]
    ascent, descent = font.getmetrics()
    stroke = max(0, int(spec.get("stroke", 0)))
    # extra pixels between characters; a bolder stroke grows every glyph by ``stroke`` on each
    # side, so the advance grows too (else the letters of a tight font run into each other)
    spacing = spec.get("spacing", 0.0) * size + 2 * stroke
    xs = [font.getlength(text[:k]) + k * spacing for k in range(len(text))]
    ink_w = int(np.ceil(xs[-1] + font.getlength(text[-1]))) if text else 1
    left_bearing = min(0, font.getbbox(text[0])[0]) if text else 0
    m = spec.get("margins", (0.1, 0.1, 0.1, 0.1))  # left, top, right, bottom, in em
    ml, mt, mr, mb = (max(0, round(v * size)) + stroke + 1 for v in m)
    w, h = ml + ink_w - left_bearing + mr, mt + ascent + descent + mb
    ink = Image.new("L", (max(1, w), max(1, h)), 0)
    draw = ImageDraw.Draw(ink)
    centres = np.zeros((len(text), 2), dtype=np.float64)
    for k, (ch, x) in enumerate(zip(text, xs)):
        pos = (ml - left_bearing + x, mt)
        draw.text(pos, ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        x0, y0, x1, y1 = font.getbbox(ch)
        centres[k] = (pos[0] + (x0 + x1) / 2, mt + (ascent + descent) / 2)
    if spec.get("stroke", 0) < 0:  # thinner strokes: erode once, unless that erases the text
        thinner = ink.filter(ImageFilter.MinFilter(3))
        mass = np.asarray(ink, dtype=np.float32).sum()
        if np.asarray(thinner, dtype=np.float32).sum() >= 0.5 * mass:  # a light face: keep it
            ink = thinner
    lines = _decoration(spec, ink.size, mt, ascent, descent, size)
    if spec.get("crop", "box") == "ink":
        ink, lines, centres = _crop_to_ink(ink, lines, centres, mt - stroke - 1, mb - stroke - 1)
    return ink, lines, centres


def _crop_to_ink(ink: Image.Image, lines: Image.Image | None, centres: Points, top: int,
                 bottom: int) -> tuple[Image.Image, Image.Image | None, Points]:
    """Crop the masks to the rows any ink (or decoration) covers, plus ``top`` and ``bottom``
    pixels: the tight box of a text detector instead of the font's ascent and descent."""
    union = np.asarray(ink) > 0
    if lines is not None:
        union = union | (np.asarray(lines) > 0)
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return ink, lines, centres
    y0, y1 = max(0, int(rows[0]) - top), min(ink.height, int(rows[-1]) + 1 + bottom)
    box = (0, y0, ink.width, y1)
    moved = centres.copy()
    moved[:, 1] -= y0
    return ink.crop(box), None if lines is None else lines.crop(box), moved


def _decoration(spec: dict[str, Any], wh: tuple[int, int], top: int, ascent: int, descent: int,
                size: int) -> Image.Image | None:
    kind = spec.get("lines", "none")
    if kind == "none":
        return None
    w, h = wh
    mask = Image.new("L", wh, 0)
    draw = ImageDraw.Draw(mask)
    width = max(1, round(size * spec.get("line_width", 0.06)))
    base = top + ascent
    if kind == "underline":
        y = min(h - 1, base + max(2, descent // 2))
        draw.line([(0, y), (w, y)], fill=255, width=width)
    elif kind == "strike":
        y = base - round(0.3 * size)
        draw.line([(0, y), (w, y)], fill=255, width=width)
    elif kind == "ruled":  # notebook lines above and below
        for y in (max(0, top - width), min(h - 1, base + descent + width)):
            draw.line([(0, y), (w, y)], fill=255, width=width)
    elif kind == "box":
        draw.rectangle([0, 0, w - 1, h - 1], outline=255, width=width)
    return mask


# ---------------------------------------------------------------------------- 2. geometry


def _affine(img: Image.Image, pts: Points, stretch: float, shear: float
            ) -> tuple[Image.Image, Points]:
    """Stretch the width by ``stretch`` and slant by ``shear`` (x += shear * (h - y))."""
    w, h = img.size
    pad = int(np.ceil(abs(shear) * h))
    new_w = max(1, round(w * stretch) + pad)
    # output (x, y) reads input ((x - off - shear * (h - y)) / stretch, y)
    off = 0 if shear >= 0 else pad
    a, b = 1.0 / stretch, shear / stretch
    c = (-off - shear * h) / stretch
    out = img.transform((new_w, h), Image.Transform.AFFINE, (a, b, c, 0, 1, 0),
                        resample=Image.Resampling.BILINEAR)
    moved = pts.copy()
    moved[:, 0] = stretch * pts[:, 0] + off + shear * (h - pts[:, 1])
    return out, moved


def _rotate(img: Image.Image, pts: Points, angle: float) -> tuple[Image.Image, Points]:
    """Rotate by ``angle`` degrees counter-clockwise; the canvas grows so no ink is cut off."""
    w, h = img.size
    out = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    th = np.deg2rad(angle)
    dx, dy = pts[:, 0] - w / 2, pts[:, 1] - h / 2
    moved = np.stack([np.cos(th) * dx + np.sin(th) * dy + out.width / 2,
                      -np.sin(th) * dx + np.cos(th) * dy + out.height / 2], axis=1)
    return out, moved


def _perspective(img: Image.Image, tilt: float) -> Image.Image:
    """Make one end of the line taller than the other by the fraction ``tilt`` (signed)."""
    w, h = img.size
    d = abs(tilt) * h / 2
    # the source quad (upper-left, lower-left, lower-right, upper-right) mapped onto the output:
    # reading a taller span at one end draws the text smaller there
    if tilt > 0:
        quad = (0, -d, 0, h + d, w, h, w, 0)  # left edge sampled from a taller span
    else:
        quad = (0, 0, 0, h, w, h + d, w, -d)
    return img.transform((w, h), Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR)


def _warp(img: Image.Image, amplitude: float, periods: float, phase: float) -> Image.Image:
    """Shift every column vertically by ``amplitude * h * sin(...)``: a wavy baseline."""
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape
    amp = amplitude * h
    pad = int(np.ceil(amp)) + 1
    out = np.zeros((h + 2 * pad, w), dtype=np.float32)
    ys = np.arange(h + 2 * pad, dtype=np.float32) - pad
    for x in range(w):
        shift = amp * np.sin(2 * np.pi * periods * x / max(1, w) + phase)
        out[:, x] = np.interp(ys - shift, np.arange(h), arr[:, x], left=0.0, right=0.0)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def transform(mask: Image.Image, spec: dict[str, Any], pts: Points | None = None
              ) -> tuple[Image.Image, Points]:
    """Apply the spec's geometric distortions to a mask (step 2), and to points on it.

    The perspective tilt and the warp move pixels vertically only, so points keep their x;
    their y is left as before those two (only x is used: where each character is along the line).
    """
    pts = np.zeros((0, 2)) if pts is None else pts
    stretch, shear = spec.get("stretch", 1.0), spec.get("shear", 0.0)
    if stretch != 1.0 or shear:
        mask, pts = _affine(mask, pts, stretch, shear)
    if spec.get("angle"):
        mask, pts = _rotate(mask, pts, spec["angle"])
    if spec.get("perspective"):
        mask = _perspective(mask, spec["perspective"])
    if spec.get("warp"):
        mask = _warp(mask, *spec["warp"])
    return mask, pts


# ---------------------------------------------------------------------------- 4. paper and ink


def background(kind: str, shape: tuple[int, int], colour: np.ndarray, rng: np.random.Generator,
               amount: float) -> np.ndarray:
    """A ``(h, w, 3)`` float background around ``colour``; ``amount`` (0..1) scales its texture."""
    h, w = shape
    base = np.broadcast_to(colour.astype(np.float32), (h, w, 3)).copy()
    span = 35.0 * amount  # at most about 40 % of the smallest ink contrast (0.35 * 255)
    if kind == "gradient":
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (np.cos(angle) * xx / max(1, w) + np.sin(angle) * yy / max(1, h))
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min())) - 0.5
        tint = rng.normal(0, 1, size=3).astype(np.float32)
        base += t[..., None] * span * (0.6 + 0.4 * tint / max(1.0, float(np.abs(tint).max())))
    elif kind == "paper":  # low-frequency mottling plus fine grain
        coarse = rng.normal(0, 1, size=(max(2, h // 8), max(2, w // 8))).astype(np.float32)
        low = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
        base += (low * 0.5 * span)[..., None] + rng.normal(0, 0.1 * span, size=(h, w, 1))
    elif kind == "stripes":
        period = rng.uniform(3, 12)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
        base += (wave * 0.35 * span)[..., None]
    elif kind == "blotches":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.2, 1.0) * h
            blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
            base += blob[..., None] * rng.normal(0, 0.5 * span, size=3).astype(np.float32)
    elif kind == SCENE:
        base = scene(shape, colour, rng, amount)
    return base


def compose(alpha: np.ndarray, lines: np.ndarray | None, spec: dict[str, Any]) -> np.ndarray:
    """Paper and ink: ``(h, w)`` coverages (0..1) -> an ``(h, w, 3)`` float image (step 4)."""
    rng = np.random.default_rng(spec.get("paper_seed", 0))
    kind = spec.get("background", "flat")
    if kind == PHOTO:
        bg = photo(spec["photo"], alpha.shape, np.asarray(spec["bg"]), rng, spec.get("texture", 0.0))
    else:
        bg = background(kind, alpha.shape, np.asarray(spec["bg"]), rng, spec.get("texture", 0.0))
    fg = np.asarray(spec["fg"], dtype=np.float32)
    if kind in (SCENE, PHOTO):
        bg = readable(bg, np.asarray(spec["bg"], dtype=np.float32), fg, alpha)
    img = bg + (fg - bg) * alpha[..., None]
    if lines is not None:
        lc = np.asarray(spec.get("line_colour", spec["fg"]), dtype=np.float32)
        img = img + (lc - img) * lines[..., None]
    return img


# ---------------------------------------------------------------------------- the whole


def render(spec: dict[str, Any], height: int = 32) -> Image.Image:
    """Draw one sample from its spec. Returns an RGB image ``height`` pixels high."""
    return render_with_centres(spec, height)[0]


def render_with_centres(spec: dict[str, Any], height: int = 32) -> tuple[Image.Image, list[float]]:
    """:func:`render`, and where each character's centre ended up along the line (pixels
    from the left edge of the image): the renderer's alignment of text and image."""
    ink, lines, centres = draw_ink(spec)
    ink, centres = transform(ink, spec, centres)
    if lines is not None:
        lines, _ = transform(lines, spec)
    # 3. resolution: (through a low resolution) to the target height
    width = max(1, round(ink.width * height / ink.height))
    xs = [round(float(x) * width / ink.width, 1) for x in centres[:, 0]]
    lowres = spec.get("lowres", 0)
    masks = [m for m in (ink, lines) if m is not None]
    if lowres and lowres < height:
        small = (max(1, round(width * lowres / height)), lowres)
        masks = [m.resize(small, Image.Resampling.BOX) for m in masks]
    masks = [m.resize((width, height), Image.Resampling.BILINEAR) for m in masks]
    if spec.get("blur", 0) > 0:
        masks = [m.filter(ImageFilter.GaussianBlur(spec["blur"])) for m in masks]
    alpha = np.asarray(masks[0], dtype=np.float32) / 255.0
    line_alpha = np.asarray(masks[1], dtype=np.float32) / 255.0 if lines is not None else None
    img = compose(alpha, line_alpha, spec)
    # 5. sensor: noise, then JPEG
    if spec.get("noise", 0) > 0:
        noise_rng = np.random.default_rng(spec["noise_seed"])
        img = img + noise_rng.normal(0.0, spec["noise"], size=img.shape).astype(np.float32)
    out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    if spec.get("jpeg"):
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(spec["jpeg"]))
        buf.seek(0)
        out = Image.open(buf).convert("RGB")
    return out, xs
