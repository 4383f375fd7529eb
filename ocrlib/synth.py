"""Synthetic text-line images (notebook 01).

Every sample ``i`` draws its text and its style from its own random stream, keyed by
``(seed, stream, i)``, so a dataset is byte-identical whatever the number of worker
processes, and sets made with different seeds or streams never share a sample.

:func:`sample_spec` makes every random choice of a sample (its text, font, size, margins,
rotation, blur, noise, colours and the richer :class:`Effects`); :func:`ocrlib.render.render`
draws it. Fonts come from the pinned pool (:mod:`ocrlib.fonts`): a ``test`` split draws from
families never used for training.

Output of :func:`generate`: ``DIR/images/000000.png ...``, ``DIR/meta.jsonl`` (one JSON
object per sample: font, family, size, rotation, blur, noise, colours and effects),
``DIR/synth.json`` (how the set was made) and, written last and atomically, ``DIR/labels.txt`` with lines
``images/000000.png<TAB>label``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .charset import DEFAULT_CHARS, Charset
from .fonts import FontFace, family_of, find_fonts, font_pool, select_fonts
from .images import LUMINANCE
from .text import random_text, read_text_lines
from . import folder
from .photos import TEST_PHOTOS, TRAIN_PHOTOS
from .render import BACKGROUNDS, LINES, PHOTO, SCENE, render_with_centres

log = logging.getLogger(__name__)


#: What meta.jsonl keeps of a spec (besides image, label, font file and width).
META_KEYS = ("font", "family", "variation", "size", "angle", "blur", "noise", "bg", "fg", "margins",
             "crop", "background", "spacing", "stretch", "shear", "perspective", "warp", "stroke",
             "lines", "lowres", "jpeg", "photo")

#: Random-stream keys: a split's samples come from its own stream, so splits never overlap.
STREAMS = {"custom": 0, "train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class Effects:
    """How often each of the richer distortions is applied (probabilities, 0..1).

    Attributes:
        background: a gradient, mottled-paper, striped or blotched background (else flat).
        spacing: letter spacing from -0.05 to +0.35 em (else the font's own).
        stretch: the width stretched by 0.75..1.3.
        shear: a slant of up to 0.25 (x shifted by a quarter of the height at the top).
        perspective: one end of the line up to 20 % taller than the other.
        warp: a wavy baseline.
        stroke: one pixel bolder (the letters spaced to match) or thinner (eroded) strokes.
        lines: an underline, ruled lines, a box or a strike-through.
        lowres: drawn 16..24 pixels high, then scaled up (a low-resolution scan; blur is
            then at most 0.5 px).
        jpeg: JPEG compression at quality 30..80.
        scene: a cluttered scene behind the text instead (bricks, blocks, ripples, grain:
            :func:`ocrlib.scenes.scene`), a stand-in for the photographs other generators use.
        photo: a strip of a real photograph behind the text instead (:mod:`ocrlib.photos`;
            ``test`` splits use pictures training never saw). Drawn after ``scene``, so it
            takes some of the scenes' lines and some of the others.
    """

    background: float = 0.5
    spacing: float = 0.3
    stretch: float = 0.3
    shear: float = 0.2
    perspective: float = 0.15
    warp: float = 0.08
    stroke: float = 0.2
    lines: float = 0.1
    lowres: float = 0.1
    jpeg: float = 0.2
    scene: float = 0.2
    photo: float = 0.15

    @classmethod
    def none(cls) -> Effects:
        """No distortion beyond rotation, blur and noise (and random margins)."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic samples look.

    Attributes:
        chars: the charset; random text uses these characters (a space, if present,
            separates words and never starts or ends a line).
        min_len, max_len: length range of random text.
        text: ``"mixed"`` (a mix of kinds of strings: uniformly random characters, lowercase,
            uppercase and capitalised runs, digit runs, letters then digits) or ``"random"``
            (uniformly random characters only).
        height: image height in pixels.
        font_size: range of the rendering size in points, before scaling to ``height``.
        max_angle: rotation is uniform in ``[-max_angle, max_angle]`` degrees.
        max_blur: Gaussian blur radius is uniform in ``[0, max_blur]`` pixels.
        max_noise: pixel noise standard deviation is uniform in ``[0, max_noise]`` (0..255 scale).
        min_contrast: smallest luminance difference (0..1) between ink and background.
        text_file: optional text file; sample ``i`` uses its ``i``-th non-empty line (cycling).
        fonts: optional face names (e.g. ``"DejaVu Sans Book"``); only those faces are used,
            from the pinned pool or the machine's fonts.
        font_pool: which fonts (:func:`ocrlib.fonts.font_pool`): ``"auto"`` (the held-out
            families for the ``test`` split, the training families otherwise: a test set of
            unseen fonts), ``"train"``, ``"held_out"``, ``"all"`` or ``"system"``.
        decorative_weight: how often a display or handwriting family is drawn, relative to a
            text family (serif, sans, condensed, monospace): 0.5 draws each half as often.
        effects: how often each richer distortion is applied (:class:`Effects`).
        clean_fraction: this fraction of samples is drawn upright, sharp, noise-free and without
            effects (fonts, colours and margins still vary): easy examples beside the hard
            ones teach the glyphs faster. Not applied to a ``test`` split, which always
            measures the full distribution.
        vertical_margin: range of the top and bottom margins, in em, around the font's ascent
            and descent (the crop ``"box"``).
        tight_fraction: this fraction of samples is cropped instead to the rows the ink covers,
            plus 0..0.15 em (the crop ``"ink"``): the box a text detector, or another
            generator, draws. Text then fills the height whatever the font's metrics, where the
            ``"box"`` crop leaves it at a half or less of it; a model that has seen only one
            of the two misreads the other (benchmarks/RESULTS.md, "Text it never saw").
    """

    chars: str = DEFAULT_CHARS
    min_len: int = 3
    max_len: int = 10
    text: str = "mixed"
    height: int = 32
    font_size: tuple[int, int] = (24, 36)
    max_angle: float = 3.0
    max_blur: float = 0.8
    max_noise: float = 10.0
    min_contrast: float = 0.35
    text_file: str | None = None
    fonts: tuple[str, ...] | None = None
    font_pool: str = "auto"
    decorative_weight: float = 1.0
    effects: Effects = field(default_factory=Effects)
    clean_fraction: float = 0.0
    vertical_margin: tuple[float, float] = (-0.05, 0.3)
    tight_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self.text not in ("mixed", "random"):
            raise ValueError(f"text must be mixed or random, got {self.text!r}")
        if not 0.0 <= self.tight_fraction <= 1.0:
            raise ValueError(f"tight_fraction must be in [0, 1], got {self.tight_fraction}")
        object.__setattr__(self, "vertical_margin", tuple(self.vertical_margin))  # from JSON
        lo, hi = self.vertical_margin
        if not -0.2 <= lo <= hi <= 2.0:
            raise ValueError(f"vertical_margin must be (lo, hi) with -0.2 <= lo <= hi <= 2 em, "
                             f"got {self.vertical_margin}")
        if isinstance(self.effects, dict):  # read back from a manifest
            object.__setattr__(self, "effects", Effects(**self.effects))
        Charset(self.chars)  # validates the characters


@dataclass
class SynthResult:
    """What :func:`generate` made."""

    out: Path
    n: int
    fonts: list[FontFace] = field(default_factory=list)


# ---------------------------------------------------------------------------- style


def _luminance(rgb: Sequence[int]) -> float:
    r, g, b = (c / 255.0 for c in rgb)
    wr, wg, wb = LUMINANCE
    return wr * r + wg * g + wb * b


def sample_colours(rng: np.random.Generator, min_contrast: float) -> tuple[list[int], list[int]]:
    """Background and ink colours whose luminances differ by at least ``min_contrast``."""
    bg = [int(v) for v in rng.integers(0, 256, size=3)]
    for _ in range(32):
        fg = [int(v) for v in rng.integers(0, 256, size=3)]
        if abs(_luminance(fg) - _luminance(bg)) >= min_contrast:
            return bg, fg
    # rare: a mid-grey background; black or white ink always works then
    fg = [0, 0, 0] if _luminance(bg) > 0.5 else [255, 255, 255]
    if abs(_luminance(fg) - _luminance(bg)) < min_contrast:
        bg = [255, 255, 255] if fg == [0, 0, 0] else [0, 0, 0]
    return bg, fg


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 3)


def sample_effects(rng: np.random.Generator, fx: Effects) -> dict[str, Any]:
    """The richer distortions of one sample (see :mod:`ocrlib.render`); every draw is made
    whether or not the effect is applied, so changing one probability leaves the others' draws."""
    u = rng.random(10)
    spec: dict[str, Any] = {
        "background": str(rng.choice(BACKGROUNDS[1:])) if u[0] < fx.background else "flat",
        "texture": _uniform(rng, 0.2, 1.0),
        "paper_seed": int(rng.integers(2**31)),
        "spacing": _uniform(rng, -0.05, 0.35) if u[1] < fx.spacing else 0.0,
        "stretch": _uniform(rng, 0.75, 1.3) if u[2] < fx.stretch else 1.0,
        "shear": _uniform(rng, -0.25, 0.25) if u[3] < fx.shear else 0.0,
        "perspective": _uniform(rng, -0.2, 0.2) if u[4] < fx.perspective else 0.0,
        "stroke": int(rng.choice([-1, 1])) if u[6] < fx.stroke else 0,
        "lines": str(rng.choice(LINES[1:])) if u[7] < fx.lines else "none",
        "line_width": _uniform(rng, 0.03, 0.1),
        "lowres": int(rng.integers(16, 25)) if u[8] < fx.lowres else 0,
        "jpeg": int(rng.integers(30, 81)) if u[9] < fx.jpeg else 0,
    }
    warp = (_uniform(rng, 0.03, 0.12), _uniform(rng, 0.3, 1.5), _uniform(rng, 0, 6.283))
    spec["warp"] = list(warp) if u[5] < fx.warp else None
    return spec


_FAMILIES_MEMO: dict[tuple[int, float], tuple[Sequence[FontFace], list[list[FontFace]], np.ndarray]] = {}
DECORATIVE = ("display", "handwriting")


def _families(fonts: Sequence[FontFace], decorative_weight: float
              ) -> tuple[list[list[FontFace]], np.ndarray]:
    """``family_of(fonts)`` as a list and the cumulative drawing weights of the families,
    computed once per font list (every sample asks)."""
    key = (id(fonts), decorative_weight)
    hit = _FAMILIES_MEMO.get(key)
    if hit is None or hit[0] is not fonts:
        groups = list(family_of(fonts).values())
        w = np.array([decorative_weight if g[0].category in DECORATIVE else 1.0 for g in groups])
        hit = (fonts, groups, np.cumsum(w) / w.sum())
        _FAMILIES_MEMO.clear()
        _FAMILIES_MEMO[key] = hit
    return hit[1], hit[2]


def sample_spec(
    i: int, seed: int, cfg: SynthConfig, fonts: Sequence[FontFace], lines: Sequence[str] | None,
    stream: int = 0,
) -> dict[str, Any]:
    """Everything random about sample ``i``: the text and every style parameter.

    The font is drawn family first (display and handwriting families weighted
    ``cfg.decorative_weight``), then a face of that family, so that a family with 36 weights
    and widths is not drawn 36 times as often as a family with one.
    """
    text_rng = np.random.default_rng([seed, stream, i, 0])
    style_rng = np.random.default_rng([seed, stream, i, 1])
    text = lines[i % len(lines)] if lines else random_text(text_rng, cfg)
    families, cumulative = _families(fonts, cfg.decorative_weight)
    pick = min(len(families) - 1, int(np.searchsorted(cumulative, style_rng.random(), side="right")))
    faces = families[pick]
    font = faces[int(style_rng.integers(len(faces)))]
    bg, fg = sample_colours(style_rng, cfg.min_contrast)
    spec = {
        "text": text,
        "font": font.name,
        "family": font.family or font.name,
        "font_path": font.path,
        "variation": font.variation,
        "size": int(style_rng.integers(cfg.font_size[0], cfg.font_size[1] + 1)),
        "angle": _uniform(style_rng, -cfg.max_angle, cfg.max_angle),
        "blur": _uniform(style_rng, 0, cfg.max_blur),
        "noise": _uniform(style_rng, 0, cfg.max_noise),
        "bg": bg,
        "fg": fg,
        "noise_seed": int(style_rng.integers(2**31)),
        # left, top, right, bottom margins in em: from tight to loose
        "margins": [_uniform(style_rng, 0.0, 0.6), _uniform(style_rng, *cfg.vertical_margin),
                    _uniform(style_rng, 0.0, 0.6), _uniform(style_rng, *cfg.vertical_margin)],
        "line_colour": [int(v) for v in style_rng.integers(0, 256, size=3)],
    }
    spec.update(sample_effects(style_rng, cfg.effects))
    if spec["lowres"]:
        spec["blur"] = min(spec["blur"], 0.5)
    clean = style_rng.random() < cfg.clean_fraction
    if clean and stream != STREAMS["test"]:
        spec.update(angle=0.0, blur=0.0, noise=0.0, **sample_effects(style_rng, Effects.none()))
    if abs(_luminance(spec["line_colour"]) - _luminance(bg)) < cfg.min_contrast:
        spec["line_colour"] = fg
    # drawn last, so that sets made before these fields existed keep every other choice
    tight, ink_margin = style_rng.random() < cfg.tight_fraction, _uniform(style_rng, 0.0, 0.15)
    spec["crop"] = "ink" if tight else "box"
    if tight:
        spec["margins"] = [spec["margins"][0], ink_margin, spec["margins"][2], ink_margin]
    if style_rng.random() < cfg.effects.scene and not (clean and stream != STREAMS["test"]):
        spec["background"] = SCENE
    pool = TEST_PHOTOS if stream == STREAMS["test"] else TRAIN_PHOTOS
    pick = pool[int(style_rng.integers(len(pool)))]
    if style_rng.random() < cfg.effects.photo and not (clean and stream != STREAMS["test"]):
        spec.update(background=PHOTO, photo=pick)
    return spec


# ---------------------------------------------------------------------------- writing


# Worker state, set once per process by _init_worker (spawned processes start empty).
_W: dict[str, Any] = {}


def _init_worker(out: str, seed: int, stream: int, cfg: SynthConfig, fonts, lines) -> None:
    _W.update(out=Path(out), seed=seed, stream=stream, cfg=cfg, fonts=fonts, lines=lines)


def _make_range(bounds: tuple[int, int]) -> list[dict[str, Any]]:
    metas = []
    for i in range(*bounds):
        spec = sample_spec(i, _W["seed"], _W["cfg"], _W["fonts"], _W["lines"], _W["stream"])
        img, centres = render_with_centres(spec, _W["cfg"].height)
        name = folder.image_name(i)
        img.save(_W["out"] / name, format="PNG", compress_level=1)
        metas.append(
            {
                "image": name,
                "label": spec["text"],
                "font_file": Path(spec["font_path"]).name,
                **{k: v for k, v in spec.items() if k in META_KEYS},
                "width": img.width,
                "height": img.height,
                "centres": centres,
            }
        )
    return metas


def fonts_for(cfg: SynthConfig, split: str = "custom") -> list[FontFace]:
    """The faces a set of ``split`` draws from: ``cfg.fonts`` by name (from the pinned pool, or
    else the machine's fonts), or the pool ``cfg.font_pool`` names (``"auto"``: held-out
    families for the test split, training families otherwise)."""
    if cfg.fonts is not None:  # named faces: wherever they are, even with the pool incomplete
        pool = font_pool(cfg.chars, "all", strict=False)
        names = {f.name for f in pool}
        if not all(n in names for n in cfg.fonts):
            pool = pool + [f for f in find_fonts(cfg.chars) if f.name not in names]
        return select_fonts(pool, cfg.fonts)
    which = cfg.font_pool
    if which == "auto":
        which = "held_out" if split == "test" else "train"
    return font_pool(cfg.chars, which)  # type: ignore[arg-type]


def _pool_context() -> mp.context.BaseContext:
    """``fork`` where it exists: workers start at once and need no ``if __name__ ==
    "__main__"`` guard in the calling script (they use only PIL and NumPy, never torch
    threads); ``spawn`` elsewhere."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def generate(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    cfg: SynthConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    split: str = "custom",
    progress: bool = True,
    chunk: int = 256,
) -> SynthResult:
    """Generate ``n`` labelled images into ``out``.

    Args:
        out: output folder; must be empty or missing unless ``overwrite``.
        n: number of samples.
        seed: the dataset seed.
        cfg: style and text settings.
        workers: processes to use (default: all cores); the output does not depend on it.
        overwrite: replace the images, labels and metadata of a non-empty folder.
        split: ``custom``, ``train``, ``val`` or ``test``: selects the random stream.
        progress: show a tqdm progress bar.
        chunk: samples per work item.
    """
    from tqdm.auto import tqdm

    cfg = cfg or SynthConfig()
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if split not in STREAMS:
        raise ValueError(f"split must be one of {sorted(STREAMS)}, got {split!r}")
    charset = Charset(cfg.chars)
    lines = read_text_lines(cfg.text_file, charset) if cfg.text_file else None
    fonts = fonts_for(cfg, split)
    out = Path(out)
    folder.prepare(out, overwrite)

    workers = max(1, min(workers or os.cpu_count() or 1, -(-n // chunk)))
    ranges = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    init_args = (str(out), seed, STREAMS[split], cfg, fonts, lines)
    metas: list[dict[str, Any]] = []
    bar = tqdm(total=n, desc=f"synth {out.name}", unit="img", disable=not progress)
    if workers == 1:
        _init_worker(*init_args)
        for r in ranges:
            metas += _make_range(r)
            bar.update(r[1] - r[0])
    else:
        with _pool_context().Pool(workers, _init_worker, init_args) as pool:
            for part in pool.imap(_make_range, ranges):
                metas += part
                bar.update(len(part))
    bar.close()

    manifest = {"n": n, "seed": seed, "split": split, "stream": STREAMS[split],
                "config": asdict(cfg), "fonts": [f.name for f in fonts]}
    folder.finish(out, [(m["image"], m["label"]) for m in metas], metas, manifest)
    log.info("wrote %d samples to %s", n, out)
    return SynthResult(out=out, n=n, fonts=list(fonts))


def generate_splits(
    root: str | os.PathLike[str],
    sizes: dict[str, int],
    seed: int = 0,
    cfg: SynthConfig | None = None,
    **kwargs: Any,
) -> dict[str, SynthResult]:
    """Generate ``root/train``, ``root/val``, ``root/test`` (any subset of them).

    Each split draws from its own random stream, so no sample is ever in two splits.
    """
    return {
        split: generate(Path(root) / split, n, seed, cfg, split=split, **kwargs)
        for split, n in sizes.items()
    }
