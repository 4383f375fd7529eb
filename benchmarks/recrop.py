"""Reading at several crops (`ocrlib.recrop`): CER of each choice of ``recrop``, side by side.

For one checkpoint and one or more labelled folders, evaluates the model (greedy) reading each
line once as given, and beside it at crops to the line's ink rows with the given margins,
keeping the most confident reading; prints one Markdown table, one row per folder: CER (and
images/s) for each choice, in one run.

    python benchmarks/recrop.py --checkpoint checkpoints/best_mamba_ocr.pth \
        --data data/test data/foreign data/foreign_ink
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ocrlib.inference import Recognizer

CHOICES: tuple[tuple[float, ...], ...] = ((), (0.15,), (0.3,), (0.15, 0.3), (0.15, 0.3, 0.5))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/best_mamba_ocr.pth")
    p.add_argument("--data", nargs="+", required=True, help="labelled folders")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    names = ["as given" if not c else "given + " + ", ".join(map(str, c)) for c in CHOICES]
    print(f"checkpoint {args.checkpoint}; greedy CER (images/s)")
    print("| set | n | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for folder in args.data:
        cells, n = [], 0
        for choice in CHOICES:
            r = Recognizer.from_checkpoint(args.checkpoint, recrop=choice).evaluate(folder)
            n = r["n"]
            cells.append(f"{r['cer']:.4f} ({r['images_per_s']:.0f})")
        print(f"| {folder} | {n} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
