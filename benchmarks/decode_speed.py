"""How fast the CTC decoders read lines, on one CPU thread.

The issue's target: prefix beam search with beam 10 on T=80 frames of 63 classes at
>= 500 lines/s on one core. What a decoder costs depends on how peaked the scores are
(a trained model puts nearly all of each frame on blank or one character; an untrained
one spreads it), so three inputs are timed side by side in one run:

- ``trained-like``: synthetic scores shaped like a trained CTC model's: labels of 3-10
  characters, each on 1-3 frames, blank elsewhere, ~0.99 on the winning class, and one
  frame in ten uncertain between two classes;
- ``checkpoint``: a real model's scores on real images, when a checkpoint and a labelled
  folder are given (``--checkpoint checkpoints/best_mamba_ocr.pth --data data/test``);
- ``flat``: random scores (an untrained model), the worst case.

    python benchmarks/decode_speed.py [--lines 512] [--checkpoint PATH --data DIR]
"""

from __future__ import annotations

import argparse
import time

import torch

from ocrlib.charset import DEFAULT_CHARS, Charset
from ocrlib.decoding import beam_search_batch, greedy_decode


def trained_like(lines: int, frames: int, classes: int, seed: int = 0) -> torch.Tensor:
    """``(lines, frames, classes)`` log-probabilities shaped like a trained CTC model's."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(lines, frames, classes, generator=g)
    target = torch.zeros(lines, frames, dtype=torch.long)
    for b in range(lines):
        n = int(torch.randint(3, 11, (1,), generator=g))
        slots = torch.linspace(0, frames - 4, n + 2)[1:-1].long()
        for s in slots.tolist():
            width = int(torch.randint(1, 4, (1,), generator=g))
            target[b, s: s + width] = int(torch.randint(1, classes, (1,), generator=g))
    logits.scatter_add_(2, target[..., None], torch.full((lines, frames, 1), 9.0))
    unsure = torch.rand(lines, frames, generator=g) < 0.1
    rival = torch.randint(0, classes, (lines, frames), generator=g)
    logits.scatter_add_(2, rival[..., None], (unsure.float() * 8.0)[..., None])
    return logits.log_softmax(-1)


def from_checkpoint(checkpoint: str, data: str, lines: int) -> tuple[torch.Tensor, Charset]:
    from ocrlib.data import OCRDataset, ctc_collate
    from ocrlib.inference import Recognizer

    rec = Recognizer.from_checkpoint(checkpoint)
    cfg = rec.model.cfg
    ds = OCRDataset(data, rec.model.charset, cfg.height, cfg.width, targets=False)
    ds.items = ds.items[:lines]
    batch = ctc_collate([ds[i] for i in range(len(ds))])
    return rec.log_probs(batch.images), rec.model.charset


def rate(fn, log_probs: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, len(log_probs), 64):
            fn(log_probs[start:start + 64])
        best = min(best, time.perf_counter() - t0)
    return len(log_probs) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=512)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--beam-width", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint")
    ap.add_argument("--data")
    args = ap.parse_args()
    torch.set_num_threads(1)
    charset = Charset(DEFAULT_CHARS)
    V = charset.num_classes
    inputs = {"trained-like": (trained_like(args.lines, args.frames, V), charset)}
    if args.checkpoint and args.data:
        inputs["checkpoint"] = from_checkpoint(args.checkpoint, args.data, args.lines)
    g = torch.Generator().manual_seed(1)
    inputs["flat"] = (torch.randn(args.lines, args.frames, V, generator=g).log_softmax(-1), charset)

    print(f"one thread, batches of 64, best of {args.repeats}; lines/s")
    print(f"{'input':<14}{'B x T x V':>16}{'greedy':>10}{'beam-' + str(args.beam_width):>10}"
          f"{'beam agrees':>13}{'beam more probable':>20}")
    for name, (lp, cs) in inputs.items():
        g_rate = rate(lambda x: greedy_decode(x, cs), lp, args.repeats)
        b_rate = rate(lambda x: beam_search_batch(x, cs, args.beam_width), lp, args.repeats)
        greedy = greedy_decode(lp, cs)
        beam = beam_search_batch(lp, cs, args.beam_width)
        agree = sum(a.text == b.text for a, b in zip(greedy, beam)) / len(lp)
        better = sum(b.confidence > a.confidence * (1 + 1e-6) for a, b in zip(greedy, beam)) / len(lp)
        shape = "x".join(str(s) for s in lp.shape)
        print(f"{name:<14}{shape:>16}{g_rate:>10.0f}{b_rate:>10.0f}{agree:>13.3f}{better:>20.3f}")


if __name__ == "__main__":
    main()
