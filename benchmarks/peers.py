"""ocrlib side by side with what a user would pick instead, on the same labelled folder.

Readers, each on every image of ``--data`` (a folder with ``labels.txt``), scored exactly as
``ocrlib eval`` scores (``ocrlib.metrics.scores``: corpus CER, case-insensitive CER, line
accuracy) with the reading speed in images/s (loading included, one process, the threads
given by ``--threads``):

- ``ocrlib`` (greedy, and beam-10): the checkpoint given (default ``make demo``'s);
- ``tesseract``: Tesseract 5 (Debian's ``tesseract-ocr``, ``tesseract-ocr-eng``), one line
  (``--psm 7``), LSTM engine, its alphabet limited to the model's charset with
  ``tessedit_char_whitelist`` (what a user reading such lines would set);
- ``pp-ocrv4``: PaddleOCR's PP-OCRv4 recogniser inside ``rapidocr-onnxruntime``
  (``pip install -e ".[peers]"``), recognition only (no detection, no angle classifier).

Peers' readings keep their characters (a character outside the charset counts as an error),
except whitespace, which no label holds. A peer that is not installed is skipped with a line
saying so.

    python benchmarks/peers.py --data data/test [--checkpoint checkpoints/best_mamba_ocr.pth]
                               [--limit N] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ocrlib.data import load_image, read_labels
from ocrlib.inference import Recognizer
from ocrlib.metrics import scores

Reader = Callable[[Sequence[Path]], list[str]]


def ocrlib_reader(checkpoint: str, decoder: str, once: bool = False) -> Reader:
    """ocrlib as ``ocrlib infer`` reads (several crops and widths, :mod:`ocrlib.recrop`), or
    with ``once`` each line once, as given (in its luminance only)."""
    kw = {"recrop": (), "stretch": (), "colour_view": False} if once else {}
    rec = Recognizer.from_checkpoint(checkpoint, decoder=decoder, beam_width=10, **kw)

    def read(paths: Sequence[Path]) -> list[str]:
        out = []
        for k in range(0, len(paths), 64):
            out += [d.text for d in rec.read([load_image(p) for p in paths[k:k + 64]])]
        return out

    return read


def tesseract_reader(charset: str) -> Reader | str:
    exe = shutil.which("tesseract")
    if exe is None:
        return "not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"

    def read(paths: Sequence[Path]) -> list[str]:
        out = []
        for p in paths:
            proc = subprocess.run(
                [exe, str(p), "stdout", "--psm", "7", "--oem", "1", "-l", "eng",
                 "-c", f"tessedit_char_whitelist={charset}"],
                capture_output=True, text=True, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
            out.append("".join(proc.stdout.split()))
        return out

    return read


def ppocr_reader() -> Reader | str:
    try:
        import numpy as np
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return 'not installed (pip install -e ".[peers]" installs rapidocr-onnxruntime)'
    engine = RapidOCR()

    def read(paths: Sequence[Path]) -> list[str]:
        out = []
        for p in paths:
            bgr = np.ascontiguousarray(np.asarray(load_image(p))[:, :, ::-1])
            result, _ = engine(bgr, use_det=False, use_cls=False, use_rec=True)
            text = result[0][0] if result else ""
            out.append("".join(text.split()))
        return out

    return read


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="labelled folder (labels.txt)")
    p.add_argument("--checkpoint", default="checkpoints/best_mamba_ocr.pth")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    items = read_labels(args.data)[: args.limit]
    paths, refs = [it.path for it in items], [it.text for it in items]
    rec = Recognizer.from_checkpoint(args.checkpoint)
    readers: dict[str, Reader | str] = {
        "ocrlib greedy, each line once as given": ocrlib_reader(args.checkpoint, "greedy", once=True),
        "ocrlib greedy": ocrlib_reader(args.checkpoint, "greedy"),
        "ocrlib beam-10": ocrlib_reader(args.checkpoint, "beam"),
        "tesseract 5 (psm 7)": tesseract_reader("".join(rec.model.charset.chars)),
        "PP-OCRv4 rec": ppocr_reader(),
    }
    print(f"{args.data}: {len(items)} lines")
    print("| reader | CER | CER (case-insensitive) | line accuracy | images/s |")
    print("|---|---|---|---|---|")
    for name, reader in readers.items():
        if isinstance(reader, str):
            print(f"| {name} | skipped: {reader} | | | |")
            continue
        t0 = time.perf_counter()
        hyps = reader(paths)
        rate = len(paths) / (time.perf_counter() - t0)
        s = scores(refs, hyps)
        print(f"| {name} | {s['cer']:.4f} | {s['cer_ci']:.4f} | {s['accuracy']:.4f} | {rate:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
