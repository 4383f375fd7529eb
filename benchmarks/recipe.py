"""The `laptop` recipe end to end, for one seed and one precision: does it reach the target?

Generates the profile's data with ``--seed`` (train and validation in the training font
families, test in the 13 held-out families), trains the profile from random weights with the
same seed and ``--amp`` (``OCRLIB_AMP`` works too), evaluates the best checkpoint on the test
set (greedy; as ``ocrlib eval`` reads it, at several crops, and once as given: ``test_cer_once``),
and appends one JSON line to ``--out``: seed, precision, threads, the validation curve, the test
CER / case-insensitive CER / accuracy, and the seconds of each stage.

    python benchmarks/recipe.py --seed 1 --amp bf16 [--root /tmp/recipe] \
        [--out benchmarks/results/recipe.jsonl] [--set encoder.bidirectional=true ...]

``--set SECTION.KEY=VALUE`` tries a lever: the profile with that setting changed
(:func:`ocrlib.profiles.with_settings`; ``sizes.train=96000``, ``synth.clean_fraction=0.1``); the
settings are kept in the JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ocrlib.inference import Recognizer
from ocrlib.profiles import with_settings
from ocrlib.synth import generate_splits
from ocrlib.train import numerics, profile_with, resolve_amp, train


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    p.add_argument("--profile", default="laptop")
    p.add_argument("--root", default="/tmp/recipe", help="scratch folder for data and checkpoints")
    p.add_argument("--out", help="append the result as one JSON line to this file")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="change the profile (model, backbone, encoder, train, synth, effects, "
                        "sizes), e.g. encoder.bidirectional=true sizes.train=96000")
    args = p.parse_args(argv)

    try:
        prof = with_settings(profile_with(args.profile, seed=args.seed, amp=args.amp), args.set)
    except ValueError as err:
        p.error(str(err))
    root = Path(args.root) / f"seed{args.seed}_{args.amp}"
    t0 = time.perf_counter()
    generate_splits(root / "data", prof.sizes, seed=args.seed, cfg=prof.synth, progress=False,
                    overwrite=True)
    t_data = time.perf_counter() - t0
    res = train(prof.model, prof.train, root / "data" / "train", root / "data" / "val",
                root / "best_mamba_ocr.pth", progress=False)
    t_train = time.perf_counter() - t0 - t_data
    r = Recognizer.from_checkpoint(res.best).evaluate(root / "data" / "test")
    t_eval = time.perf_counter() - t0 - t_data - t_train
    once = Recognizer.from_checkpoint(res.best, recrop=(), stretch=(), colour_view=False
                                      ).evaluate(root / "data" / "test")
    row = {
        "profile": args.profile, "seed": args.seed, "amp": args.amp, "settings": args.set,
        "numerics": numerics(resolve_amp(prof.train.amp, torch.device("cpu"))),
        "curve": [(h["step"], round(h["loss"], 4), round(h["val_cer"], 4)) for h in res.history],
        "steps": res.step, "best_val_cer": round(res.best_cer, 4), "test_cer": round(r["cer"], 4),
        "test_cer_once": round(once["cer"], 4), "test_cer_ci": round(r["cer_ci"], 4),
        "test_accuracy": round(r["accuracy"], 4),
        "test_n": r["n"], "skipped_batches": res.skipped_batches,
        "seconds": {"data": round(t_data), "train": round(t_train), "eval": round(t_eval)},
    }
    print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
