"""A labelled set drawn by another renderer: matplotlib's text engine, not ocrlib's.

ocrlib's generator draws with Pillow/FreeType through its own pipeline (margins, effects,
colours). A model can learn that pipeline's habits; the honest check of what it reads is text
drawn some other way. This script typesets lines with matplotlib (Agg rasteriser, its own
layout and hinting), in the font families ocrlib holds out of training, at random sizes and
resolutions, in random colours, sometimes rotated, with a tight or loose crop, and saves them as
a labelled folder (:mod:`ocrlib.folder`): ``ocrlib eval --data DIR`` scores a model on it.

    python benchmarks/foreign_set.py --out data/foreign [--n 500] [--seed 0] [--crop ink]
    python benchmarks/foreign_set.py --out data/typed --words "Hello" "Mamba2026" ...

matplotlib's own crop (``--crop page``, the default) leaves the text at about 30-60 % of the
height; ``--crop ink`` then cuts the rows down to the ink plus 0-15 % of its height, the tight
box of a text detector (and of generators that crop to the text).

With ``--words``, the given words are typeset one per image in a serif and a sans held-out face
(what ``make demo`` feeds to ``ocrlib infer``).
"""

from __future__ import annotations

import argparse
import io
import string
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib import folder  # noqa: E402
from ocrlib.fonts import font_pool  # noqa: E402


def typeset(text: str, font_path: str, size: float, dpi: int, fg: str, bg: str, angle: float,
            pad: float) -> bytes:
    """PNG bytes of ``text`` typeset by matplotlib, cropped to the text plus ``pad`` inches."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt

    fig = plt.figure(figsize=(8, 2), dpi=dpi)
    fig.patch.set_facecolor(bg)
    fig.text(0.02, 0.4, text, fontproperties=font_manager.FontProperties(fname=font_path),
             fontsize=size, color=fg, rotation=angle, rotation_mode="anchor")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=bg, bbox_inches="tight", pad_inches=pad)
    plt.close(fig)
    return buf.getvalue()


def crop_to_ink(png: bytes, margin: float) -> bytes:
    """Cut a typeset line's rows down to those its ink covers, plus ``margin`` times the ink's
    height above and below (the ink told from the paper by the median: the paper is the bulk)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    grey = np.asarray(im.convert("L"), dtype=np.float32)
    rows = np.flatnonzero((np.abs(grey - np.median(grey)) > 40).any(axis=1))
    if rows.size:
        m = round(margin * (rows[-1] - rows[0] + 1))
        im = im.crop((0, max(0, int(rows[0]) - m), im.width, min(im.height, int(rows[-1]) + 1 + m)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def random_line(rng: np.random.Generator) -> str:
    """Words, capitalised words, codes and numbers: 1 to 12 characters of 0-9a-zA-Z."""
    n = int(rng.integers(1, 13))
    kind = rng.integers(4)
    pools = [string.ascii_lowercase, string.ascii_uppercase, string.digits,
             string.digits + string.ascii_letters]
    text = "".join(rng.choice(list(pools[kind if kind < 3 else 3]), size=n))
    return text[0].upper() + text[1:] if kind == 0 and rng.random() < 0.5 else text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--words", nargs="*", help="typeset these words instead of random lines")
    p.add_argument("--crop", choices=["page", "ink"], default="page",
                   help="matplotlib's crop, or the rows of the ink plus 0-15 %% of its height")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    out = folder.prepare(args.out, args.overwrite)
    faces = font_pool(which="held_out")
    rng = np.random.default_rng(args.seed)
    labels, metas = [], []
    if args.words:
        by_name = {f.name: f for f in faces}
        chosen = [by_name.get("Crimson Text Regular", faces[0]), by_name.get("PT Sans Regular", faces[-1])]
        jobs = [(w, f, 28.0, 100, "black", "white", 0.0, 0.05) for w in args.words for f in chosen]
    else:
        static = [f for f in faces if not f.variation]  # matplotlib cannot pick a named instance
        jobs = []
        for _ in range(args.n):
            face = static[int(rng.integers(len(static)))]
            dark = rng.random() < 0.8
            grey = int(rng.integers(0, 90)) if dark else int(rng.integers(170, 256))
            paper = int(rng.integers(180, 256)) if dark else int(rng.integers(0, 80))
            jobs.append((random_line(rng), face, float(rng.uniform(14, 40)), int(rng.choice([72, 100, 150])),
                         f"#{grey:02x}{grey:02x}{grey:02x}", f"#{paper:02x}{paper:02x}{paper:02x}",
                         float(rng.uniform(-3, 3)) if rng.random() < 0.3 else 0.0,
                         float(rng.uniform(0.02, 0.2))))
    for k, (text, face, size, dpi, fg, bg, angle, pad) in enumerate(jobs):
        rel = folder.image_name(k)
        png = typeset(text, face.path, size, dpi, fg, bg, angle, pad)
        if args.crop == "ink":
            png = crop_to_ink(png, float(rng.uniform(0.0, 0.15)))
        (out / rel).write_bytes(png)
        labels.append((rel, text))
        metas.append({"image": rel, "label": text, "font": face.name, "family": face.family,
                      "size": size, "dpi": dpi, "angle": angle, "renderer": "matplotlib",
                      "crop": args.crop})
    folder.finish(out, labels, metas, {"n": len(jobs), "seed": args.seed, "renderer": "matplotlib",
                                       "crop": args.crop,
                                       "fonts": sorted({f.name for _, f, *_ in jobs})})
    print(f"{len(jobs)} images typeset by matplotlib in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
