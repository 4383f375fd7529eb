"""Where a CPU training step of the `laptop` model goes, and what each speed-up is worth.

Side by side in one run, on the same real batches (the laptop profile's data, generated here
when ``--data`` is not given): the time of one training step (forward, backward, AdamW) for the
choices the recipe made against the alternatives, each changed alone from the recipe:

- lines at their own width in width-bucketed batches vs every line padded to 320 px;
- channels-last convolutions vs the default layout;
- AdamW fused into one kernel vs the per-tensor loop;
- bf16 autocast vs float32 (on a CPU without native bf16, bf16 is emulated: slower);
- the half-width ResNet34 vs the full one;
- layer4's kernels cut to the rows that meet its one-row input (``ocrlib.trimconv``) vs every
  kernel row computed, two of three on zero padding (plain ``nn.Conv2d``);
- batches loaded in the training process vs in a DataLoader worker (wall time of 60 steps);
- whole steps of ``ocrlib.train.train`` (loading, guided term and all), each run in its own
  process: each line loaded every time it is read vs kept in memory after its first read
  (``TrainConfig.cache_mb``), and oneDNN keeping its default 1,024 compiled kernels vs the
  16,384 that importing ocrlib asks for (``ocrlib.ONEDNN_KERNELS``): ``--loop-steps`` steps
  over the lines, each line read about ``loop-steps * 32 / lines`` times.

Prints milliseconds per step, medians of interleaved rounds, and each alternative's ratio to
the recipe (> 1: the recipe is faster).

    python benchmarks/train_speed.py [--data data/train] [--rounds 3] [--threads 2] \
        [--only "kernel row" float32] [--loop-steps 0]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrlib import ONEDNN_KERNELS  # noqa: E402
from ocrlib.checkpoint import read_checkpoint  # noqa: E402
from ocrlib.data import OCRDataset, ctc_collate  # noqa: E402
from ocrlib.losses import ctc_loss  # noqa: E402
from ocrlib.model import MambaOCR  # noqa: E402
from ocrlib.precision import cpu_has_fast_bf16  # noqa: E402
from ocrlib.profiles import Profile, profiles  # noqa: E402
from ocrlib.sampler import StepSampler  # noqa: E402
from ocrlib.synth import generate  # noqa: E402
from ocrlib.train import train  # noqa: E402
from ocrlib.trimconv import TrimmedConv2d  # noqa: E402


def batches(ds: OCRDataset, bs: int, n: int, bucket: bool, fixed: int | None) -> list:
    order = StepSampler(len(ds), bs, 0, 0, n, ds.widths() if bucket else None, 32)
    return [ctc_collate([ds[i] for i in idx], fixed_width=fixed) for idx in order]


def step_ms(model: MambaOCR, opt: torch.optim.Optimizer, data: list, bf16: bool, cl: bool) -> float:
    times = []
    for b in data:
        x = b.images.contiguous(memory_format=torch.channels_last) if cl else b.images
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = ctc_loss(logits, b.targets, b.target_lengths, b.frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def build(width: int, cl: bool, fused: bool, trim: bool = True
          ) -> tuple[MambaOCR, torch.optim.Optimizer]:
    cfg = copy.deepcopy(profiles()["laptop"].model)
    cfg.backbone.width = width
    torch.manual_seed(0)
    model = MambaOCR(cfg)
    if not trim:  # every kernel row computed, as a plain nn.Conv2d does
        for m in model.modules():
            if isinstance(m, TrimmedConv2d):
                m.__class__ = torch.nn.Conv2d
    if cl:
        model.backbone.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), 1e-4, fused=fused)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a labelled folder (default: 2,000 laptop-profile lines)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="batches per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", metavar="WORDS",
                   help="measure only the variants whose names contain one of these (and the recipe)")
    p.add_argument("--loop-steps", type=int, default=200,
                   help="steps of each whole-loop run (0: skip that comparison)")
    p.add_argument("--loop-child", type=float, help=argparse.SUPPRESS)
    p.add_argument("--val", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.loop_child is not None:
        loop_child(args.loop_child, Path(args.data), Path(args.val), args.loop_steps)
        return 0
    prof = profiles()["laptop"]
    folder = Path(args.data) if args.data else Path(tempfile.mkdtemp()) / "train"
    if not args.data:
        generate(folder, 2000, seed=0, cfg=prof.synth, split="train", progress=False)
    ds = OCRDataset(folder, prof.model.charset, normalize=prof.model.normalize)
    bs, width, bf16 = prof.train.batch_size, prof.model.backbone.width, cpu_has_fast_bf16()
    bucketed = batches(ds, bs, args.steps, True, None)
    padded = batches(ds, bs, args.steps, False, prof.model.width)
    variants = {  # name: (width, channels_last, fused, bf16, data, trimmed kernels)
        "recipe": (width, True, True, bf16, bucketed, True),
        "every line padded to 320 px": (width, True, True, bf16, padded, True),
        "default memory layout": (width, False, True, bf16, bucketed, True),
        "per-tensor AdamW": (width, True, False, bf16, bucketed, True),
        ("float32" if bf16 else "bf16 (emulated)"): (width, True, True, not bf16, bucketed, True),
        "full-width ResNet34": (64, True, True, bf16, bucketed, True),
        "every kernel row computed": (width, True, True, bf16, bucketed, False),
    }
    if args.only:
        variants = {k: v for k, v in variants.items()
                    if k == "recipe" or any(w in k for w in args.only)}
    models = {k: build(v[0], v[1], v[2], v[5]) for k, v in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, (_, cl, _, half, data, _) in variants.items():
            times[k].append(step_ms(*models[k], data, half, cl))
    print(f"laptop model, batch {bs}, {args.threads} threads, native bf16: {bf16}; "
          f"recipe bf16={bf16}, width {width}")
    base = statistics.median(times["recipe"])
    print(f"{'variant':<30}{'ms/step':>10}{'x recipe':>10}")
    for k, ts in times.items():
        ms = statistics.median(ts)
        print(f"{k:<30}{ms:>10.0f}{ms / base:>10.2f}")
    # data loading in a worker: wall time of whole steps through a DataLoader
    for workers in (0, 1):
        model, opt = build(width, True, True)
        loader = DataLoader(ds, batch_sampler=StepSampler(len(ds), bs, 1, 0, 60, ds.widths(), 32),
                            collate_fn=ctc_collate, num_workers=workers)
        t0 = time.perf_counter()
        for b in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = ctc_loss(model(b.images), b.targets, b.target_lengths, b.frames)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"60 steps, loading in {'a worker' if workers else 'the training process'}: "
              f"{time.perf_counter() - t0:.1f} s")
    if args.loop_steps:
        loop_cache(prof, folder, len(ds), args.loop_steps, args.rounds)
    return 0


def loop_cache(prof: Profile, folder: Path, n: int, steps: int, rounds: int) -> None:
    """Milliseconds a step of ``train()`` takes (the budget's clock: loading and step, no
    validation): lines loaded each time or kept in memory, oneDNN keeping its default 1,024
    compiled kernels or ocrlib's :data:`ocrlib.ONEDNN_KERNELS`. Each run is its own process
    (oneDNN reads its setting once), in interleaved rounds; ``n``: the lines in ``folder``."""
    val = Path(tempfile.mkdtemp()) / "val"
    generate(val, 20, seed=1, cfg=prof.synth, split="val", progress=False)
    kept = prof.train.cache_mb
    kinds = {  # name: (cache_mb, oneDNN kernels)
        "loaded each time, 1,024 kernels": (0.0, 1024),
        "kept in memory, 1,024 kernels": (kept, 1024),
        "loaded each time, ocrlib's kernels": (0.0, ONEDNN_KERNELS),
        "kept in memory, ocrlib's kernels (recipe)": (kept, ONEDNN_KERNELS),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, (mb, kernels) in kinds.items():
            env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(kernels)}
            got = subprocess.run([sys.executable, __file__, "--loop-child", str(mb), "--data",
                                  str(folder), "--val", str(val), "--loop-steps", str(steps)],
                                 env=env, capture_output=True, text=True, check=True)
            times[name].append(float(got.stdout.split()[-1]))
    reads = steps * prof.train.batch_size / n
    print(f"train(), {steps} steps over {n} lines ({reads:.1f} reads a line), ms a step:")
    base = statistics.median(times["kept in memory, ocrlib's kernels (recipe)"])
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"  {name:<45}{ms:>6.0f}{ms / base:>7.2f}   rounds " + " / ".join(f"{t:.0f}" for t in ts))


def loop_child(mb: float, folder: Path, val: Path, steps: int) -> None:
    """One whole-loop run (:func:`loop_cache`): prints its milliseconds a step."""
    prof = profiles()["laptop"]
    cfg = dataclasses.replace(prof.train, steps=steps, budget=None, eval_every=10**6,
                              save_every=10**6, val_limit=20, guided_steps=steps, cache_mb=mb)
    res = train(prof.model, cfg, folder, val, Path(tempfile.mkdtemp()) / "b.pth", progress=False)
    print(1000 * read_checkpoint(res.last)["train_seconds"] / res.step)


if __name__ == "__main__":
    sys.exit(main())
