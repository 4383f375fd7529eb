"""A labelled set drawn by TextRecognitionDataGenerator (TRDG), the common open synthetic-text
generator: its own fonts, backgrounds (Gaussian noise, plain white, quasicrystal, photographs of
bricks, buildings and water) and distortions, none of ocrlib's code.

ocrlib never trains on TRDG's output or assets; this is a check of text drawn by another
generator, like ``benchmarks/foreign_set.py`` (matplotlib). TRDG 1.8.0 is not a dependency:

    pip install trdg==1.8.0 --no-deps     # 100 MB: fonts, pictures, dictionaries
    pip install opencv-python-headless    # its one import beyond Pillow and numpy here
    python benchmarks/trdg_set.py --out data/trdg [--n 400] [--seed 0] [--plain]

Lines are TRDG's way: the text drawn, cropped to its ink, scaled to 22 px and set in 5 px margins
(32 px high). Texts: English dictionary words (lower, Capitalised or UPPER), words with a number
after them, random 0-9a-zA-Z codes and numbers. Faces whose lower case is drawn as capitals
(Amatic, Bebas, Capture it, Aller Display, Seaside Resort, Walkway) are left out: a
case-sensitive label cannot be read from them. ``--plain`` draws upright, sharp, undistorted
lines; by default a line may be skewed by up to 3 degrees, blurred (radius up to 1) and waved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib import folder  # noqa: E402

BACKGROUNDS = ("noise", "white", "quasicrystal", "picture")
CAPITALS_ONLY = ("Amatic", "BEBAS", "Capture_it", "AllerDisplay", "SEASRN", "Walkway")
COLOURS = ("#282828", "#000000", "#000000,#888888", "#101010,#5050ff")  # TRDG's: one or a range


def import_trdg():
    """TRDG's generator class and its package folder, or SystemExit saying how to install it."""
    try:
        import trdg
        from trdg import computer_text_generator, utils
        from trdg.data_generator import FakeTextDataGenerator
    except ImportError as err:
        raise SystemExit(f"trdg is not installed ({err}): pip install trdg==1.8.0 --no-deps "
                         "opencv-python-headless") from None
    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):  # TRDG 1.8.0 calls it; Pillow 10 removed it
        def text_height(font, text: str) -> int:
            return font.getbbox(text)[3]
        utils.get_text_height = computer_text_generator.get_text_height = text_height
    return FakeTextDataGenerator, Path(trdg.__file__).parent


def line_text(rnd: random.Random, words: list[str]) -> str:
    """A word (lower, Capitalised or UPPER), a word and a number, a code or a number."""
    r = rnd.random()
    if r < 0.4:
        w, c = rnd.choice(words), rnd.random()
        return w.upper() if c < 0.2 else w.capitalize() if c < 0.5 else w
    if r < 0.6:
        return "".join(rnd.choice(string.digits + string.ascii_letters)
                       for _ in range(rnd.randint(3, 10)))
    if r < 0.8:
        return "".join(rnd.choice(string.digits) for _ in range(rnd.randint(2, 8)))
    return rnd.choice(words).capitalize() + str(rnd.randint(0, 999))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="no skew, blur or wave")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    generator, home = import_trdg()
    out = folder.prepare(args.out, args.overwrite)
    random.seed(args.seed)  # TRDG draws its own choices (skew, blur, pictures) from `random`
    import cv2  # TRDG's noise backgrounds come from OpenCV's generator

    cv2.setRNGSeed(args.seed)
    rnd = random.Random(args.seed)
    fonts = sorted(str(f) for f in (home / "fonts" / "latin").glob("*.ttf")
                   if not f.name.startswith(CAPITALS_ONLY))
    words = [w for w in (home / "dicts" / "en.txt").read_text(encoding="utf-8").split()
             if w.isascii() and w.isalnum()]
    labels, metas, tries = [], [], 0
    while len(labels) < args.n:
        tries += 1
        if tries > 4 * args.n:
            raise SystemExit(f"TRDG refused {tries - len(labels)} of {tries} lines; stopping")
        text, font = line_text(rnd, words)[:16], rnd.choice(fonts)
        bg, spacing, colour = rnd.randrange(4), rnd.choice([0, 0, 1, 2]), rnd.choice(COLOURS)
        wave = 0 if args.plain else rnd.choice([0, 0, 1, 2])
        with contextlib.redirect_stdout(io.StringIO()):  # TRDG prints why it drops a line
            image = generator.generate(
                tries, text, font, None, 32, "png", 0 if args.plain else 3, True,
                0 if args.plain else 1, True, bg, wave, rnd.choice([0, 1, 2]), False, 0, -1, 0,
                colour, 0, 1, spacing, (5, 5, 5, 5), False, 0, False, str(home / "images"))
        if image is None:  # TRDG drops a line whose ink and background means are too close
            continue
        rel = folder.image_name(len(labels))
        image.convert("RGB").save(out / rel)
        labels.append((rel, text))
        metas.append({"image": rel, "label": text, "font": Path(font).stem,
                      "family": Path(font).stem.split("-")[0].split("_")[0],
                      "background": BACKGROUNDS[bg], "wave": wave, "spacing": spacing,
                      "colour": colour, "renderer": "trdg"})
    folder.finish(out, labels, metas, {"n": len(labels), "seed": args.seed, "renderer": "trdg 1.8.0",
                                       "plain": args.plain})
    print(f"{len(labels)} lines drawn by TRDG in {out} ({tries - len(labels)} refused by TRDG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
