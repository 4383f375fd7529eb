"""Training throughput with 1 and with N processes (torchrun, gloo on the CPU), side by side.

Generates ``--n`` lines of the `laptop` profile, then times the profile's training (the real
:func:`ocrlib.train.loaders` and :class:`ocrlib.session.Session`: loading, forward, backward,
AdamW, at the profile's global batch of 32) in one process with every core and under
``torchrun --nproc_per_node N`` with the cores split between the processes, alternating the two
over ``--rounds`` rounds. Each run skips ``--warmup`` steps and times the next ``--steps``;
prints images/s per configuration (median over rounds) and the ratio.

    python benchmarks/ddp_speed.py [--nproc 2] [--n 3000] [--steps 40] [--rounds 2]

One process of a run (what the driver launches): ``python benchmarks/ddp_speed.py --worker DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(data: Path, warmup: int, steps: int) -> None:
    """Train ``warmup + steps`` steps; rank 0 prints one JSON line with images/s."""
    import torch

    from ocrlib.distributed import setup, teardown
    from ocrlib.profiles import profile_with
    from ocrlib.session import Session
    from ocrlib.train import loaders, resolve_device

    prof = profile_with("laptop", steps=warmup + steps)
    d, device = setup(resolve_device("cpu"))
    run = Session(prof.model, prof.train, d, device)
    train_loader, _, _ = loaders(prof.model, prof.train, data / "train", data / "val", 0, d=d)
    run.net.train()
    t0 = 0.0
    for k, batch in enumerate(train_loader):
        if k == warmup:
            t0 = time.perf_counter()
        run.step(batch)
    seconds = time.perf_counter() - t0
    if d.is_main:
        print(json.dumps({"world": d.world, "threads": torch.get_num_threads(), "steps": steps,
                          "images_per_s": steps * prof.train.batch_size / seconds}), flush=True)
    teardown(d)


def launch(data: Path, nproc: int, warmup: int, steps: int, cores: int,
           local_bn: bool = False) -> dict:
    """One timed run with ``nproc`` processes of ``cores // nproc`` threads each; with
    ``local_bn``, BatchNorm per rank (``OCRLIB_SYNC_BN=0``: what synchronising it costs)."""
    me = [str(Path(__file__).resolve()), "--worker", str(data), "--warmup", str(warmup),
          "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(max(1, cores // nproc)),
           "OCRLIB_SYNC_BN": "0" if local_bn else "1"}
    cmd = ([sys.executable, *me] if nproc == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *me])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"run with {nproc} process(es) failed:\n{proc.stderr[-3000:]}")
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--n", type=int, default=3000, help="training lines to generate")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.warmup, args.steps)
        return 0
    from ocrlib.profiles import profiles
    from ocrlib.synth import generate_splits

    data = Path(tempfile.mkdtemp())
    generate_splits(data, {"train": args.n, "val": 64}, seed=0, cfg=profiles()["laptop"].synth,
                    progress=False)
    cores = os.cpu_count() or 1
    configs = [(1, False), (args.nproc, False), (args.nproc, True)]
    rates: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for nproc, local_bn in configs:
            row = launch(data, nproc, args.warmup, args.steps, cores, local_bn)
            rates[nproc, local_bn].append(row["images_per_s"])
            print(f"round {r}: {nproc} process(es) x {row['threads']} thread(s)"
                  f"{', BatchNorm per rank' if local_bn else ''}: {row['images_per_s']:.1f} images/s",
                  flush=True)
    med = {c: statistics.median(v) for c, v in rates.items()}
    print(f"\n| processes | threads each | BatchNorm | images/s (median of {args.rounds}) |")
    print("|---|---|---|---|")
    for nproc, local_bn in configs:
        print(f"| {nproc} | {max(1, cores // nproc)} | "
              f"{'per rank' if local_bn else 'global batch' if nproc > 1 else '-'} | "
              f"{med[nproc, local_bn]:.1f} |")
    one = med[1, False]
    print(f"\nimages_per_s_ratio_{args.nproc}_procs_vs_1: {med[args.nproc, False] / one:.2f}")
    print(f"images_per_s_ratio_{args.nproc}_procs_local_bn_vs_1: {med[args.nproc, True] / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
