"""Synthetic text-line images (notebook 01).

Every sample ``i`` draws its text and its style from its own random stream, keyed by
``(seed, stream, i)``, so a dataset is byte-identical whatever the number of worker
processes, and sets made with different seeds or streams never share a sample.

Steps for one image (:func:`render`):

1. draw the text in white on black at a random font size (a grey "ink" mask),
2. rotate the mask by up to ``max_angle`` degrees,
3. scale it to the target height, keeping the aspect ratio,
4. blur it (Gaussian, random radius),
5. colour it: background and ink colours with a guaranteed luminance contrast,
6. add Gaussian pixel noise.

Output of :func:`generate`: ``DIR/images/000000.png ...``, ``DIR/meta.jsonl`` (one JSON
object per sample: font, angle, blur, noise, colours), ``DIR/synth.json`` (how the set
was made) and, written last and atomically, ``DIR/labels.txt`` with lines
``images/000000.png<TAB>label``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .charset import DEFAULT_CHARS, Charset
from .fonts import FontFace, find_fonts
from .io import atomic_write_text

log = logging.getLogger(__name__)

LABELS_FILE = "labels.txt"
META_FILE = "meta.jsonl"
MANIFEST_FILE = "synth.json"
IMAGES_DIR = "images"

#: Random-stream keys: a split's samples come from its own stream, so splits never overlap.
STREAMS = {"custom": 0, "train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic samples look.

    Attributes:
        chars: the charset; random text uses these characters (a space, if present,
            separates words and never starts or ends a line).
        min_len, max_len: length range of random text.
        height: image height in pixels.
        font_size: range of the rendering size in points, before scaling to ``height``.
        max_angle: rotation is uniform in ``[-max_angle, max_angle]`` degrees.
        max_blur: Gaussian blur radius is uniform in ``[0, max_blur]`` pixels.
        max_noise: pixel noise standard deviation is uniform in ``[0, max_noise]`` (0..255 scale).
        min_contrast: smallest luminance difference (0..1) between ink and background.
        text_file: optional text file; sample ``i`` uses its ``i``-th non-empty line (cycling).
        fonts: optional font names (as in the pool, e.g. ``"DejaVu Sans Book"``); only those
            faces are used. Default: the whole pool.
        clean_fraction: this fraction of samples is drawn upright, sharp and noise-free
            (fonts and colours still vary): easy examples that shorten CTC's initial
            all-blank plateau when training from scratch.
    """

    chars: str = DEFAULT_CHARS
    min_len: int = 3
    max_len: int = 10
    height: int = 32
    font_size: tuple[int, int] = (24, 36)
    max_angle: float = 5.0
    max_blur: float = 0.8
    max_noise: float = 12.0
    min_contrast: float = 0.45
    text_file: str | None = None
    fonts: tuple[str, ...] | None = None
    clean_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        Charset(self.chars)  # validates the characters


@dataclass
class SynthResult:
    """What :func:`generate` made."""

    out: Path
    n: int
    fonts: list[FontFace] = field(default_factory=list)


# ---------------------------------------------------------------------------- text


def read_text_lines(path: str | os.PathLike[str], charset: Charset) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file, every character checked.

    Raises:
        ValueError: naming the file, line number and character of the first unknown character.
        FileNotFoundError: when the file is missing.
    """
    lines = []
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            bad = charset.unknown(line)
            if bad:
                raise ValueError(
                    f"{path}:{no}: character {bad[0]!r} in {line!r} is not in the charset"
                )
            lines.append(line)
    if not lines:
        raise ValueError(f"{path}: no non-empty lines")
    return lines


def random_text(rng: np.random.Generator, cfg: SynthConfig) -> str:
    """A random string of ``min_len..max_len`` characters from ``cfg.chars``."""
    visible = [c for c in cfg.chars if c != " "]
    n = int(rng.integers(cfg.min_len, cfg.max_len + 1))
    chars = [visible[j] for j in rng.integers(0, len(visible), size=n)]
    if " " in cfg.chars and n >= 3:
        # a space between words with probability 0.15 per gap; never at an end or doubled
        for k in range(1, n - 1):
            if rng.random() < 0.15 and chars[k - 1] != " ":
                chars[k] = " "
    return "".join(chars)


# ---------------------------------------------------------------------------- style


def _luminance(rgb: Sequence[int]) -> float:
    r, g, b = (c / 255.0 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


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


def sample_spec(
    i: int, seed: int, cfg: SynthConfig, fonts: Sequence[FontFace], lines: Sequence[str] | None,
    stream: int = 0,
) -> dict[str, Any]:
    """Everything random about sample ``i``: the text and every style parameter."""
    text_rng = np.random.default_rng([seed, stream, i, 0])
    style_rng = np.random.default_rng([seed, stream, i, 1])
    text = lines[i % len(lines)] if lines else random_text(text_rng, cfg)
    font = fonts[int(style_rng.integers(len(fonts)))]
    bg, fg = sample_colours(style_rng, cfg.min_contrast)
    spec = {
        "text": text,
        "font": font.name,
        "font_path": font.path,
        "size": int(style_rng.integers(cfg.font_size[0], cfg.font_size[1] + 1)),
        "angle": round(float(style_rng.uniform(-cfg.max_angle, cfg.max_angle)), 3),
        "blur": round(float(style_rng.uniform(0, cfg.max_blur)), 3),
        "noise": round(float(style_rng.uniform(0, cfg.max_noise)), 3),
        "bg": bg,
        "fg": fg,
        "noise_seed": int(style_rng.integers(2**31)),
    }
    if cfg.clean_fraction and style_rng.random() < cfg.clean_fraction:
        spec.update(angle=0.0, blur=0.0, noise=0.0)
    return spec


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render(spec: dict[str, Any], height: int = 32) -> Image.Image:
    """Draw one sample from its :func:`sample_spec`. Returns an RGB image of the given height."""
    font = _font(spec["font_path"], spec["size"])
    text = spec["text"]
    x0, _, x1, _ = font.getbbox(text)
    ascent, descent = font.getmetrics()
    pad = max(2, spec["size"] // 5)
    # 1. the ink mask
    mask = Image.new("L", (x1 - x0 + 2 * pad, ascent + descent + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - x0, pad), text, font=font, fill=255)
    # 2. rotation (the canvas grows so that no ink is cut off)
    if spec["angle"]:
        mask = mask.rotate(spec["angle"], resample=Image.Resampling.BILINEAR, expand=True)
    # 3. scale to the target height
    width = max(1, round(mask.width * height / mask.height))
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    # 4. blur
    if spec["blur"] > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(spec["blur"]))
    # 5. colour: background + ink * mask
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    bg = np.asarray(spec["bg"], dtype=np.float32)
    fg = np.asarray(spec["fg"], dtype=np.float32)
    img = bg + (fg - bg) * alpha
    # 6. noise
    if spec["noise"] > 0:
        noise_rng = np.random.default_rng(spec["noise_seed"])
        img = img + noise_rng.normal(0.0, spec["noise"], size=img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------- writing


def _image_name(i: int) -> str:
    return f"{IMAGES_DIR}/{i:06d}.png"


# Worker state, set once per process by _init_worker (spawned processes start empty).
_W: dict[str, Any] = {}


def _init_worker(out: str, seed: int, stream: int, cfg: SynthConfig, fonts, lines) -> None:
    _W.update(out=Path(out), seed=seed, stream=stream, cfg=cfg, fonts=fonts, lines=lines)


def _make_range(bounds: tuple[int, int]) -> list[dict[str, Any]]:
    metas = []
    for i in range(*bounds):
        spec = sample_spec(i, _W["seed"], _W["cfg"], _W["fonts"], _W["lines"], _W["stream"])
        img = render(spec, _W["cfg"].height)
        name = _image_name(i)
        img.save(_W["out"] / name, format="PNG", compress_level=1)
        metas.append(
            {
                "image": name,
                "label": spec["text"],
                "font": spec["font"],
                "font_file": Path(spec["font_path"]).name,
                **{k: spec[k] for k in ("size", "angle", "blur", "noise", "bg", "fg")},
                "width": img.width,
            }
        )
    return metas


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; choose another folder or pass --overwrite to replace it"
            )
        # labels first: an interrupted overwrite must never leave labels for missing images
        for name in (LABELS_FILE, META_FILE, MANIFEST_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def select_fonts(pool: Sequence[FontFace], names: Sequence[str] | None) -> list[FontFace]:
    """The faces of ``pool`` named in ``names`` (all of them when ``names`` is None).

    Raises:
        ValueError: naming the fonts that are not in the pool.
    """
    if names is None:
        return list(pool)
    by_name = {f.name: f for f in pool}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"fonts not in the pool (or lacking glyphs for the charset): {missing}")
    return [by_name[n] for n in names]


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
    fonts = select_fonts(find_fonts(cfg.chars), cfg.fonts)
    out = Path(out)
    _prepare_out(out, overwrite)

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
    atomic_write_text(out / META_FILE, "".join(json.dumps(m) + "\n" for m in metas))
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(out / LABELS_FILE, "".join(f"{m['image']}\t{m['label']}\n" for m in metas))
    log.info("wrote %d samples to %s", n, out)
    return SynthResult(out=out, n=n, fonts=list(fonts))


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder/synth.json`` (how the set was made: n, seed, split, stream, config, fonts),
    or None for a folder this generator did not make."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


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
