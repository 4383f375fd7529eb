"""Reading at several crops and widths (`ocrlib.recrop`): CER of each choice, side by side.

For one checkpoint and one or more labelled folders, evaluates the model (greedy) reading each
line once as given, and beside it at crops to the line's ink rows with the given margins
(``recrop``), keeping the most confident reading; with ``--widths``, the default crops and
beside them the line as given also read at several widths (``stretch``). Prints one Markdown
table, one row per folder: CER (and images/s) for each choice, in one run.

    python benchmarks/recrop.py --checkpoint checkpoints/best_mamba_ocr.pth \
        --data data/test data/foreign data/foreign_ink [--widths]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ocrlib.inference import Recognizer

#: (recrop, stretch) pairs: the crops, each line at its own width
CHOICES: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = (
    ((), ()), ((0.15,), ()), ((0.3,), ()), ((0.15, 0.3), ()), ((0.15, 0.3, 0.5), ()))
#: with --widths: the default crops, and the line as given also read at these widths
WIDTHS: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = (
    ((), ()), ((0.15, 0.3), ()), ((0.15, 0.3), (1.25,)), ((0.15, 0.3), (1.5,)),
    ((0.15, 0.3), (0.8, 1.25)), ((0.15, 0.3), (0.8, 1.25, 1.5)))


def _name(recrop: tuple[float, ...], stretch: tuple[float, ...]) -> str:
    if not recrop and not stretch:
        return "as given"
    crops = "given + " + ", ".join(map(str, recrop)) if recrop else "given"
    return crops + ("; x " + ", ".join(map(str, stretch)) if stretch else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/best_mamba_ocr.pth")
    p.add_argument("--data", nargs="+", required=True, help="labelled folders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", action="store_true",
                   help="compare widths (stretch) beside the default crops instead of crops")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    choices = WIDTHS if args.widths else CHOICES
    names = [_name(*c) for c in choices]
    print(f"checkpoint {args.checkpoint}; greedy CER (images/s)")
    print("| set | n | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for folder in args.data:
        cells, n = [], 0
        for recrop, stretch in choices:
            r = Recognizer.from_checkpoint(args.checkpoint, recrop=recrop,
                                           stretch=stretch).evaluate(folder)
            n = r["n"]
            cells.append(f"{r['cer']:.4f} ({r['images_per_s']:.0f})")
        print(f"| {folder} | {n} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
