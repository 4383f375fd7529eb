"""What holds CTC on its all-blank plateau, and what gets it off: a cumulative ablation.

The `laptop` model (random-weight ResNet34 + 2 Mamba layers, the full 62-character charset)
is trained for ``--steps`` steps on lines in every font and distortion, once per recipe, each
recipe adding one change to the one before:

1. ``original``: RGB normalised with ImageNet statistics, every line padded to 320 px (all 80
   frames count), torchvision's initialisation, dropout 0.1, plain CTC: the original project;
2. ``+ grey input``: luminance standardised per image, ink made bright;
3. ``+ own width``: each line at its own width, batches of similar widths;
4. ``+ identity start``: residual blocks start as the identity (zero-initialised last BN), no
   dropout;
5. ``+ guided start``: the renderer's character positions as frame targets beside CTC, fading.

Printed: greedy validation CER every ``--every`` steps and, at the end, the mean probability
of the blank over the validation frames. Written with ``--out``: a JSON
file with every curve (notebook 04 draws it).

    python benchmarks/plateau.py [--steps 600] [--every 100] [--seed 0] [--amp auto]
                                 [--out benchmarks/results/plateau.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ocrlib.checkpoint import load_model
from ocrlib.data import OCRDataset, ctc_collate
from ocrlib.synth import generate_splits
from ocrlib.train import profiles, train


def recipes(steps: int) -> list[tuple[str, dict, dict]]:
    """``(name, model changes, training changes)``, cumulative."""
    original = ({"normalize": "imagenet", "zero_init_residual": False, "dropout": 0.1},
                {"fixed_width": True, "bucket": 0, "guided_steps": 0})
    steps_ = [("original", *original)]
    changes = [("+ grey input", {"normalize": "grey"}, {}),
               ("+ own width", {}, {"fixed_width": False, "bucket": 32}),
               ("+ identity start", {"zero_init_residual": True, "dropout": 0.0}, {}),
               ("+ guided start", {}, {"guided_steps": steps})]
    model, training = dict(original[0]), dict(original[1])
    for name, m, t in changes:
        model, training = {**model, **m}, {**training, **t}
        steps_.append((name, dict(model), dict(training)))
    return steps_


@torch.no_grad()
def blank_probability(checkpoint: Path, val: Path) -> float:
    """Mean probability of the blank over the validation lines' own frames."""
    model, _ = load_model(checkpoint)
    ds = OCRDataset(val, model.charset, normalize=model.cfg.normalize, limit=200)
    batch = ctc_collate([ds[i] for i in range(len(ds))])
    probs = model(batch.images).float().softmax(-1)[..., 0]  # (B, T)
    mask = torch.arange(probs.shape[1])[None] < batch.frames[:, None]
    return float(probs[mask].mean())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", default="auto")
    p.add_argument("--train-size", type=int, default=12000)
    p.add_argument("--out", help="write the curves to this JSON file")
    args = p.parse_args(argv)

    prof = profiles()["laptop"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_splits(root, {"train": args.train_size, "val": 300}, seed=args.seed,
                        cfg=prof.synth, progress=False)
        for name, m, t in recipes(args.steps):
            mc = copy.deepcopy(prof.model)
            mc.normalize = m["normalize"]
            mc.backbone.zero_init_residual = m["zero_init_residual"]
            mc.encoder.dropout = m["dropout"]
            tc = copy.deepcopy(prof.train)
            tc.steps, tc.eval_every, tc.save_every = args.steps, args.every, args.steps
            tc.seed, tc.amp, tc.val_limit = args.seed, args.amp, 300
            for k, v in t.items():
                setattr(tc, k, v)
            t0 = time.perf_counter()
            res = train(mc, tc, root / "train", root / "val", root / name.replace(" ", "_")
                        / "best_m.pth", progress=False)
            blank = blank_probability(res.last, root / "val")
            row = {"recipe": name, "model": m, "train": t, "seconds": round(time.perf_counter() - t0),
                   "curve": [(h["step"], round(h["loss"], 4), round(h["val_cer"], 4)) for h in res.history],
                   "blank_probability": round(blank, 4)}
            results.append(row)
            print(f"{name:18} " + "  ".join(f"{s}:{c:.3f}" for s, _, c in row["curve"])
                  + f"  blank p {blank:.3f}  ({row['seconds']} s)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "torch": torch.__version__,
                                              "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
