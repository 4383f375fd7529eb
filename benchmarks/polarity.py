"""One of the reader's options off and on: CER, for each labelled folder, in one run.

``--option flip_unsure`` (the default; ``Recognizer.flip_unsure``): lines whose ink polarity is
unsure also read the other way. ``--option colour_view`` (``Recognizer.colour_view``): coloured
lines also read in the grey that best tells their text rows from their margins. ``--option
combine`` (``Recognizer.combine``): the views' readings made one by the ``"surest"`` rule
("off") or by their mean probability (``"mean"``, "on"). For one
checkpoint and one or more labelled folders, evaluates the model as ``ocrlib eval`` reads
(greedy, at several crops and widths) with the option off and on, and prints one Markdown table:
CER, images a second, how many lines took their reading from the option (for ``combine``: how
many lines the two rules read differently), and the CER of each
background kind the folder's ``meta.jsonl`` records (ocrlib's and TRDG's sets record one;
matplotlib's do not).

    python benchmarks/polarity.py --checkpoint checkpoints/best_mamba_ocr.pth \\
        --data data/test data/foreign data/trdg [--option colour_view]
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

#: option -> its values off and on, and the key of ``Recognizer.evaluate``'s result that says
#: which lines it decided (None: count the lines read differently)
OPTIONS: dict[str, tuple[object, object, str | None]] = {
    "flip_unsure": (False, True, "flipped"), "colour_view": (False, True, "colour"),
    "combine": ("surest", "mean", None)}


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
    p.add_argument("--option", choices=sorted(OPTIONS), default="flip_unsure")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    *values, key = OPTIONS[args.option]
    print(f"checkpoint {args.checkpoint}; greedy CER, read as `ocrlib eval` reads, "
          f"{args.option} off / on")
    print("| set | n | off | on | images/s off / on | read by it | by background: off / on |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.data:
        kinds = backgrounds(Path(folder))
        off, on = (Recognizer.from_checkpoint(args.checkpoint, **{args.option: v}).evaluate(folder)
                   for v in values)
        decided = (sum(on[key]) if key else
                   sum(a != b for a, b in zip(off["predictions"], on["predictions"])))
        split = f"{by_background(off, kinds)} / {by_background(on, kinds)}" if kinds else "-"
        print(f"| {folder} | {on['n']} | {off['cer']:.4f} | {on['cer']:.4f} | "
              f"{off['images_per_s']:.0f} / {on['images_per_s']:.0f} | {decided} | {split} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
