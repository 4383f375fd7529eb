"""Reading lines of unsure polarity both ways (``Recognizer.flip_unsure``): CER off and on.

For one checkpoint and one or more labelled folders, evaluates the model as ``ocrlib eval``
reads (greedy, at several crops) with the flip off and on, in one run, and prints one Markdown
table: CER, how many lines were read the other way, and the CER of each background kind the
folder's ``meta.jsonl`` records (ocrlib's and TRDG's sets record one; matplotlib's do not).

    python benchmarks/polarity.py --checkpoint checkpoints/best_mamba_ocr.pth \
        --data data/test data/foreign data/trdg
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from ocrlib.folder import read_meta
from ocrlib.inference import Recognizer
from ocrlib.metrics import scores


def backgrounds(folder: Path) -> dict[str, str]:
    """Image name -> background kind, from the folder's ``meta.jsonl`` (empty without one)."""
    return {Path(image).name: row["background"] for image, row in read_meta(folder).items()
            if row.get("background")}


def by_background(r: dict, kinds: dict[str, str]) -> str:
    """``kind cer (n)`` for each background kind of an ``evaluate`` result."""
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for path, ref, hyp in zip(r["paths"], r["references"], r["predictions"]):
        refs, hyps = groups[kinds.get(Path(path).name, "?")]
        refs.append(ref)
        hyps.append(hyp)
    return ", ".join(f"{k} {scores(a, b)['cer']:.3f} ({len(a)})" for k, (a, b) in sorted(groups.items()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/best_mamba_ocr.pth")
    p.add_argument("--data", nargs="+", required=True, help="labelled folders")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"checkpoint {args.checkpoint}; greedy CER, read as `ocrlib eval` reads")
    print("| set | n | flip off | flip on | read the other way | by background: off / on |")
    print("|---|---|---|---|---|---|")
    for folder in args.data:
        kinds = backgrounds(Path(folder))
        off, on = (Recognizer.from_checkpoint(args.checkpoint, flip_unsure=f).evaluate(folder)
                   for f in (False, True))
        split = f"{by_background(off, kinds)} / {by_background(on, kinds)}" if kinds else "-"
        print(f"| {folder} | {on['n']} | {off['cer']:.4f} | {on['cer']:.4f} | "
              f"{sum(on['flipped'])} | {split} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
